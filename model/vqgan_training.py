"""How stage 1 learns: a plain-autoencoder warm-up, then reconstruction + codebook losses, a delayed
PatchGAN with the adaptive generator weight and feature matching, a codebook kept alive by
(re)initialising entries from encoder outputs, the gradient through the quantiser (straight through,
the lab's, or the rotation trick), and an optional last phase that trains the decoder alone on final
tokens (`freeze_tokenizer`).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from model.vqgan import VQGAN, Discriminator, nearest_entry


def adaptive_weight(rec_loss, g_loss, last_layer: torch.Tensor, scale: float) -> torch.Tensor:
    """λ = scale · ‖∇rec‖ / ‖∇gan‖ at the decoder's last layer (Esser et al.), so the GAN term
    never overwhelms reconstruction."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach() * scale


def hinge_d_loss(real_logits, fake_logits):
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


QUANTIZER_GRADIENTS = ("straight_through", "rotation")


def rotate_onto(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The rotation trick (Fifty et al., 2024): returns q, but the gradient reaches each encoder vector
    e (channels on dim 1) through the rotation and scaling that carry e onto its code q, held constant,
    instead of being copied to e unchanged (straight through)."""
    dtype = torch.promote_types(e.dtype, torch.float32)  # at least fp32 under autocast: the value must be q
    e, q = e.to(dtype), q.detach().to(dtype)
    e_norm = e.norm(dim=1, keepdim=True).clamp_min(1e-6)
    q_norm = q.norm(dim=1, keepdim=True).clamp_min(1e-6)
    e_hat, q_hat = (e / e_norm).detach(), q / q_norm
    r = e_hat + q_hat
    r = r / r.norm(dim=1, keepdim=True).clamp_min(1e-6)
    # R e with R = I - 2 r rᵀ + 2 q̂ êᵀ, the rotation in the plane of ê and q̂ that takes ê to q̂.
    rotated = e - 2 * (e * r).sum(1, keepdim=True) * r + 2 * (e * e_hat).sum(1, keepdim=True) * q_hat
    return (q_norm / e_norm).detach() * rotated


def generator_features(model: VQGAN, x: torch.Tensor, quantize: torch.Tensor, gradient: str = "straight_through"):
    """The generator's training forward up to the decoder's last conv: images → (features, token
    indices (B, H·W), codebook loss).

    `quantize` is a 0-dim tensor, 1 or 0. At 0 the decoder gets the encoder's output itself (as the
    codebook compares it) and the codebook loss is 0: a plain autoencoder, the warm-up that
    lets the codebook start on what the encoder has learned to emit. A tensor, not a bool, so one
    compiled graph serves both phases.
    `gradient`: how the reconstruction's gradient crosses the quantiser (`QUANTIZER_GRADIENTS`)."""
    z_e = model.encoder_output(x)
    z_q, indices, q_loss = model.codebook(z_e)
    if gradient == "rotation":
        z_q = rotate_onto(z_e, z_q).to(z_q.dtype)
    z = quantize * z_q + (1 - quantize) * z_e  # exactly z_q at 1, z_e at 0; the gradient reaches z_e either way
    return model.decode_features(z), indices.view(x.shape[0], -1), quantize * q_loss


def generator_forward(model: VQGAN, x: torch.Tensor, quantize: torch.Tensor, gradient: str = "straight_through"):
    """`generator_features` through the last conv: (decoded, indices, codebook loss). At quantize=1,
    the model's own forward."""
    h, indices, q_loss = generator_features(model, x, quantize, gradient)
    return model.last_layer(h), indices, q_loss


@torch.no_grad()
def encoder_vectors(model: VQGAN, x: torch.Tensor) -> torch.Tensor:
    with torch.compiler.set_stance("force_eager"):  # blocks compiled in place would recompile for no_grad
        z = model.encoder_output(x)
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()


CODEBOOK_INITS = ("samples", "kmeans")  # `vqgan.codebook_init`


def random_rows(vectors: torch.Tensor, n: int) -> torch.Tensor:
    """n rows of `vectors` drawn at random, with replacement."""
    return vectors[torch.randint(0, len(vectors), (n,), device=vectors.device)]


@torch.no_grad()
def kmeans(vectors: torch.Tensor, k: int, iters: int = 10) -> torch.Tensor:
    """Lloyd's k-means of `vectors` (N, D) into k centres (k, D), seeded by k-means++ (Arthur and
    Vassilvitskii, 2007: each next seed drawn with probability proportional to its squared distance from
    the seeds so far, so no cluster starts without a seed). A centre left with no vector stays put: the
    dead-code restarts during training take care of it."""
    centres = vectors.new_empty(k, vectors.shape[1])
    centres[0] = random_rows(vectors, 1)[0]
    d2 = (vectors - centres[0]).square().sum(1)
    for j in range(1, k):
        centres[j] = vectors[torch.multinomial(d2.clamp_min(1e-12), 1)[0]]
        d2 = torch.minimum(d2, (vectors - centres[j]).square().sum(1))
    for _ in range(iters):
        nearest = nearest_entry(vectors, centres)  # the codebook's own rule
        counts = torch.bincount(nearest, minlength=k)
        means = torch.zeros_like(centres).index_add_(0, nearest, vectors) / counts.clamp_min(1)[:, None]
        centres = torch.where((counts == 0)[:, None], centres, means)
    return centres


@torch.no_grad()
def init_codebook(model: VQGAN, vectors: torch.Tensor, method: str = "samples") -> None:
    """Start the codebook on actual encoder outputs, not on a tiny uniform cloud: on random ones
    (`samples`), or on their k-means centres (`kmeans`), which quantise them with less error, so the
    decoder's input moves less when the codebook comes on."""
    k = model.codebook.embedding.num_embeddings
    if method == "kmeans":
        model.codebook.embedding.weight.copy_(kmeans(vectors, k))
    elif method == "samples":
        model.codebook.embedding.weight.copy_(random_rows(vectors, k))
    else:
        raise ValueError(f"codebook init is {method!r}; expected one of {', '.join(CODEBOOK_INITS)}")


@torch.no_grad()
def restart_dead_codes(model: VQGAN, usage: torch.Tensor, vectors: torch.Tensor) -> int:
    """Move every entry unused since the last restart onto a random recent encoder output."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        weight = model.codebook.embedding.weight
        weight[dead] = random_rows(vectors, len(dead)).to(weight.dtype)
    usage.zero_()
    return len(dead)


def freeze_tokenizer(model: VQGAN) -> None:
    """Stop the encoder side (encoder, quant_conv, codebook) learning: an image's tokens are final from
    here on and only the decoder trains, so a late GAN phase can sharpen the decoding without moving the
    codes under it."""
    for part in (model.encoder, model.quant_conv, model.codebook):
        part.requires_grad_(False)


def code_entropy(indices: torch.Tensor, k: int) -> float:
    """Entropy (nats) of how often each of the k codes occurs: the loss of a token model that ignores
    the context (its unigram entropy); exp of it is the codebook's perplexity."""
    counts = torch.bincount(indices.flatten().long().cpu(), minlength=k).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def codebook_stats(indices: torch.Tensor, k: int) -> dict:
    used = int((torch.bincount(indices.flatten().long(), minlength=k) > 0).sum())
    return {"codebook_used": used, "codebook_size": k, "perplexity": round(math.exp(code_entropy(indices, k)), 2)}


def psnr(x_uint8: torch.Tensor, y_uint8: torch.Tensor) -> float:
    mse = ((x_uint8.double() - y_uint8.double()) ** 2).mean()
    return float(10 * torch.log10(255.0**2 / mse.clamp_min(1e-10)))


class Stage1Step:
    """One optimisation step of stage 1 (generator and, once switched on, discriminator).

    `forward(x, quantize)` runs the generator (default: `generator_forward`; a compiled version must keep
    the decoder's last conv outside its graph, where the adaptive weight takes its gradients). The
    codebook is bypassed before step `quantize_start`. Returns the losses as detached tensors: reading
    them (a host sync on a GPU) is left to the caller, which does it only when it logs."""

    def __init__(self, model: VQGAN, disc: Discriminator, opt_g, opt_d, p: dict, forward=None):
        self.model, self.disc, self.opt_g, self.opt_d, self.p = model, disc, opt_g, opt_d, p
        if forward is None:
            forward = functools.partial(generator_forward, model, gradient=p["quantizer_gradient"])
        self.forward = forward
        # The quantize flag (0, 1) kept on the device: making it each step would sync a GPU.
        device = model.last_layer.weight.device
        self.gates = (torch.zeros((), device=device), torch.ones((), device=device))

    def __call__(self, x: torch.Tensor, step: int, autocast) -> dict:
        p, model, disc = self.p, self.model, self.disc
        gan_on = step >= p["disc_start"]
        quantize = self.gates[int(step >= p["quantize_start"])]
        with autocast():
            decoded, indices, q_loss = self.forward(x, quantize)
            rec = p["l1_weight"] * (decoded - x).abs().mean() + p["l2_weight"] * ((decoded - x) ** 2).mean()
            loss = rec + q_loss
            logs = {"rec_loss": rec.detach(), "q_loss": q_loss.detach()}
            if gan_on:
                fake_logits, fake_feats = disc(decoded, return_features=True)
                g_loss = -fake_logits.mean()
                with torch.no_grad():
                    _, real_feats = disc(x, return_features=True)
                fm = sum((f - r).abs().mean() for f, r in zip(fake_feats, real_feats)) / len(fake_feats)
        if gan_on:
            lam = adaptive_weight(rec, g_loss.float(), model.last_layer.weight, p["disc_weight"])
            loss = loss + lam * g_loss + p["feature_weight"] * fm
            logs.update(g_loss=g_loss.detach(), fm_loss=fm.detach(), adaptive_weight=lam)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if gan_on:
            with autocast():
                d_loss = hinge_d_loss(disc(x), disc(decoded.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            logs["d_loss"] = d_loss.detach()
        logs["loss"] = loss.detach()
        return logs, indices
