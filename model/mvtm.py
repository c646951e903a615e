"""Masked visual token modelling, stage 2's training: the objective, the optimiser, one step and validation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.masking import mvtm_mask
from model.transformer import BidirectionalTransformer, TransformerConfig, codebook_embedding


def mvtm_loss(model, tokens: torch.Tensor, mask: torch.Tensor, mask_token: int, label_smoothing: float = 0.0):
    """Replace the masked tokens (`mask`, bool like `tokens`; `model.masking.mvtm_mask` draws MVTM's)
    with the mask token and predict them; cross-entropy on the masked tokens only.

    Returns (loss, masked-token accuracy, number of masked tokens), all tensors. The loss is a masked
    mean over every position rather than a gather of the masked ones, so no shape depends on the
    mask and the GPU never waits for the host.
    """
    inputs = torch.where(mask, mask_token, tokens)
    logits = model(inputs).float()
    per_token = F.cross_entropy(logits.transpose(1, 2), tokens, label_smoothing=label_smoothing, reduction="none")
    weight = mask.float()
    count = weight.sum()
    loss = (per_token * weight).sum() / count
    accuracy = ((logits.argmax(-1) == tokens).float() * weight).sum() / count
    return loss, accuracy, count


def new_transformer(arch: TransformerConfig, codebook: torch.Tensor | None = None, seed: int = 0) -> BidirectionalTransformer:
    """The untrained transformer; given stage 1's `codebook` (K, D) (`train.tok_init: codebook`), its token
    embeddings start laid out like it (the mask token's row stays random)."""
    model = BidirectionalTransformer(arch)
    if codebook is not None:
        with torch.no_grad():
            model.tok_emb.weight[: len(codebook)] = codebook_embedding(codebook, arch.dim, seed=seed)
    return model


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, with weight decay on the weight matrices only (not on embeddings, norms and biases)."""
    decay = [w for n, w in model.named_parameters() if w.ndim >= 2 and "emb" not in n]
    rest = [w for n, w in model.named_parameters() if not (w.ndim >= 2 and "emb" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=torch.cuda.is_available())


def train_step(net, model, opt, sched, tokens, mask_token: int, generator, autocast, *, gamma: str,
               label_smoothing: float, grad_clip: float):
    """One MVTM optimisation step. `net` runs the forward (compiled or DDP-wrapped); `model` owns the
    parameters that are clipped to norm `grad_clip`; `gamma`: the mask-ratio schedule. Returns (loss,
    masked-token accuracy) as tensors: no host sync."""
    mask = mvtm_mask(*tokens.shape, gamma, generator, tokens.device)
    with autocast():
        loss, acc, _ = mvtm_loss(net, tokens, mask, mask_token, label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss, acc


@torch.no_grad()
def validate(model, val: torch.Tensor, mask_token: int, gamma: str, batch_size: int, autocast, holes=None) -> dict:
    """Validation loss and masked-token accuracy under a fixed mask draw, comparable across epochs; given
    `holes` (brush-hole token masks, one per image in turn), also the loss on those holes: the inpainting
    task itself, where a hole's neighbours are masked too."""
    model.eval()
    gen = torch.Generator(device=val.device).manual_seed(1234)

    def masked_means(mask_of) -> tuple[float, float]:
        losses, accs, counts = [], [], []
        for start in range(0, len(val), batch_size):
            chunk = val[start:start + batch_size]
            # blocks compiled in place (regional) would recompile for inference; a `with`, not a decorator, so
            # that importing this module does not import torch._dynamo (a second)
            with autocast(), torch.compiler.set_stance("force_eager"):
                loss, acc, n = mvtm_loss(model, chunk, mask_of(start, len(chunk)), mask_token)
            n = n.item()
            losses.append(loss.item() * n), accs.append(acc.item() * n), counts.append(n)
        return sum(losses) / sum(counts), sum(accs) / sum(counts)

    val_loss, val_accuracy = masked_means(lambda start, n: mvtm_mask(n, val.shape[1], gamma, gen, val.device))
    out = {"val_loss": val_loss, "val_accuracy": val_accuracy}
    if holes is not None:
        out["val_hole_loss"] = masked_means(
            lambda start, n: holes[(torch.arange(start, start + n) % len(holes)).to(holes.device)])[0]
    model.train()
    return out
