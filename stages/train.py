"""Stage `train` (stage 2): masked visual token modelling on the cached tokens.

Outputs: models/transformer/ (transformer.pt: the best weights by validation loss, architecture.json,
config.yaml) and reports/train/ (metrics.json, train_log.csv, val_log.csv). Multi-GPU:
`torchrun --nproc_per_node N -m stages.train` (DDP; gloo on the CPU).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from model.masking import hole_token_masks, mvtm_mask, training_mask
from model.mvtm import mvtm_loss
from model.transformer import BidirectionalTransformer, Block, TransformerConfig, codebook_embedding
from stages import training
from stages.common import atomic_dir, pick_device, save_json, seed_everything, write_resolved
from stages.config import ConfigError, StageFailed, cli, run

TOKENS = Path("data/tokens")
OUT = Path("models/transformer")
REPORTS = Path("reports/train")
VQGAN_WEIGHTS = Path("models/vqgan/vqgan.pt")
ARCH_KEYS = ("dim", "n_layers", "hidden_dim", "n_heads", "dropout", "pos_init")


def new_transformer(arch: TransformerConfig, p: dict, vqgan_weights: Path = VQGAN_WEIGHTS) -> BidirectionalTransformer:
    """The untrained transformer; with `tok_init: codebook` its token embeddings start laid out like
    stage 1's codebook (the mask token's row stays random)."""
    model = BidirectionalTransformer(arch)
    if p["tok_init"] == "codebook":
        weights = torch.load(training.require(vqgan_weights, "vqgan"), map_location="cpu", weights_only=True)
        codebook = weights["codebook.embedding.weight"]
        with torch.no_grad():
            model.tok_emb.weight[: len(codebook)] = codebook_embedding(codebook, arch.dim, seed=p["seed"])
    return model


def make_optimizer(model, p):
    decay = [w for n, w in model.named_parameters() if w.ndim >= 2 and "emb" not in n]
    rest = [w for n, w in model.named_parameters() if not (w.ndim >= 2 and "emb" not in n)]
    groups = [{"params": decay, "weight_decay": p["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=p["lr"], betas=(0.9, 0.95), fused=torch.cuda.is_available())


def train_step(net, model, opt, sched, tokens, mask_token: int, p: dict, generator, autocast, holes=None):
    """One MVTM optimisation step. `net` runs the forward (compiled or DDP-wrapped); `model` owns the
    parameters that are clipped; `holes`: brush-hole token masks, taken by a `train.hole_fraction` of the
    samples. Returns (loss, masked-token accuracy) as tensors: no host sync."""
    mask = training_mask(*tokens.shape, p["gamma"], generator, tokens.device, holes, p["hole_fraction"])
    with autocast():
        loss, acc, _ = mvtm_loss(net, tokens, mask, mask_token, p["label_smoothing"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), p["grad_clip"])
    opt.step()
    sched.step()
    return loss, acc


@torch.no_grad()
def validate(model, val: torch.Tensor, mask_token: int, p: dict, autocast, holes=None) -> dict:
    """Validation loss and masked-token accuracy under a fixed mask draw, comparable across epochs; given
    `holes` (brush-hole token masks, one per image in turn), also the loss on those holes: the inpainting
    task itself, where a hole's neighbours are masked too."""
    model.eval()
    gen = torch.Generator(device=val.device).manual_seed(1234)

    def masked_means(mask_of) -> tuple[float, float]:
        losses, accs, counts = [], [], []
        for start in range(0, len(val), p["batch_size"]):
            chunk = val[start:start + p["batch_size"]]
            # blocks compiled in place (regional) would recompile for inference; a `with`, not a decorator, so
            # that importing this module (as inpaint does) does not import torch._dynamo (a second)
            with autocast(), torch.compiler.set_stance("force_eager"):
                loss, acc, n = mvtm_loss(model, chunk, mask_of(start, len(chunk)), mask_token)
            n = n.item()
            losses.append(loss.item() * n), accs.append(acc.item() * n), counts.append(n)
        return sum(losses) / sum(counts), sum(accs) / sum(counts)

    val_loss, val_accuracy = masked_means(lambda start, n: mvtm_mask(n, val.shape[1], p["gamma"], gen, val.device))
    out = {"val_loss": val_loss, "val_accuracy": val_accuracy}
    if holes is not None:
        out["val_hole_loss"] = masked_means(
            lambda start, n: holes[(torch.arange(start, start + n) % len(holes)).to(holes.device)])[0]
    model.train()
    return out


def steady_rate(epoch_ends: list[float], images_per_epoch: int) -> float | None:
    """Training images per second from the second epoch on (compilation and warm-up excluded)."""
    if len(epoch_ends) < 3:
        return None
    return round(images_per_epoch * (len(epoch_ends) - 2) / (epoch_ends[-1] - epoch_ends[1]), 1)


def setup_distributed(device_name: str):
    """Under torchrun: one process per GPU (NCCL) or per CPU worker (gloo)."""
    if "RANK" not in os.environ:
        return 0, 1, pick_device(device_name)
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        return rank, world, torch.device("cuda", torch.cuda.current_device())
    return rank, world, torch.device("cpu")


def train(cfg: dict) -> dict:
    p = cfg["train"]
    arch_vq = json.loads(training.require(Path("models/vqgan/architecture.json"), "vqgan").read_text())
    arch = TransformerConfig(num_codebook_vectors=arch_vq["num_codebook_vectors"], **{k: p[k] for k in ARCH_KEYS})
    rank, world, device = setup_distributed(cfg["device"])
    main_proc = rank == 0
    train_tok = torch.from_numpy(training.load_array(TOKENS / "train.npy", "tokens").astype(np.int64)).to(device)
    val_tok = torch.from_numpy(training.load_array(TOKENS / "val.npy", "tokens").astype(np.int64)).to(device)

    seed_everything(p["seed"] + rank)
    model = new_transformer(arch, p).to(device)
    opt = make_optimizer(model, p)
    steps_per_epoch = len(train_tok) // (p["batch_size"] * world)
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size {p['batch_size']} x {world} process(es) exceeds the "
                         f"{len(train_tok)} training images")
    total = steps_per_epoch * p["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, training.warmup_cosine(p["warmup_steps"], total))
    mask_gen = torch.Generator(device=device).manual_seed(p["seed"] * 1000 + rank)
    # Brush holes like the test set's (seeds apart from its): a bank to train on, a fixed set to validate on.
    hole_range = (cfg["data"]["hole_min"], cfg["data"]["hole_max"])
    holes = hole_token_masks(1024, 10_000 + p["seed"], hole_range).to(device) if p["hole_fraction"] else None
    val_holes = hole_token_masks(256, 20_000 + p["seed"], hole_range).to(device)

    ckpt_path = training.checkpoint_path("train", p, arch_vq, len(train_tok), world, hole_range)
    state = training.load_checkpoint(ckpt_path, device)
    step, best, log, val_log = 0, {"val_loss": float("inf")}, [], []
    best_state = None
    if state:
        for obj, key in ((model, "model"), (opt, "opt"), (sched, "sched")):
            obj.load_state_dict(state[key])
        mask_gen.set_state(state["mask_gen"].cpu())
        if rank > 0:  # only rank 0's generator is saved; the others restart from a seed of the step
            mask_gen.manual_seed(p["seed"] * 1000 + rank + 7919 * state["step"])
        step, best, best_state = state["step"], state["best"], state["best_state"]
        log, val_log = state["log"], state["val_log"]

    net = model
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if p["compile"] == "regional":
        training.compile_blocks(model, (Block,))
    fwd = torch.compile(net) if p["compile"] is True else net
    autocast = training.autocast_for(device)

    def save(at_step):
        training.save_checkpoint(ckpt_path, step=at_step, model=model.state_dict(), opt=opt.state_dict(),
                                 sched=sched.state_dict(), mask_gen=mask_gen.get_state(), best=best, log=log,
                                 val_log=val_log, best_state=best_state)

    clock = training.CheckpointClock(p["checkpoint_every"], p["checkpoint_minutes"], total)
    model.train()
    bar = tqdm(total=total, initial=step, desc="train", mininterval=2.0, disable=not main_proc)
    t0, seen = time.time(), 0
    epoch_ends = [t0]  # the first epoch includes compilation; the steady rate leaves it out
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        order = torch.randperm(len(train_tok), generator=torch.Generator().manual_seed(p["seed"] + epoch))
        shard = order[rank::world][: steps_per_epoch * p["batch_size"]].to(device)
        for batch_idx in shard.split(p["batch_size"])[pos:]:
            loss, acc = train_step(fwd, model, opt, sched, train_tok[batch_idx], arch.mask_token, p, mask_gen, autocast,
                                   holes)
            step, seen = step + 1, seen + len(batch_idx) * world
            checkpoint_now = clock.due(step) and main_proc
            if step % 10 == 0 or step == total or checkpoint_now:  # reading the loss syncs the GPU
                if not torch.isfinite(loss):
                    raise StageFailed(f"train: non-finite loss by step {step}; the last good checkpoint is {ckpt_path}")
            if step % 10 == 0 or step == total:  # the log's rows do not depend on when checkpoints fell
                log.append({"step": step, "loss": round(loss.item(), 5), "accuracy": round(acc.item(), 5),
                            "lr": sched.get_last_lr()[0]})
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.time() - t0):.0f}")
            bar.update(1)
            if step % steps_per_epoch == 0:
                v = validate(model, val_tok, arch.mask_token, p, autocast, val_holes)  # syncs: the epoch ends here
                epoch_ends.append(time.time())
                val_log.append({"step": step, "epoch": step // steps_per_epoch,
                                "epoch_seconds": round(epoch_ends[-1] - epoch_ends[-2], 3), **v})
                if v["val_loss"] < best["val_loss"]:
                    best = {**v, "epoch": step // steps_per_epoch}
                    best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
            if checkpoint_now:
                save(step)
    bar.close()
    elapsed = time.time() - t0
    if world > 1:
        dist.destroy_process_group()
    if not main_proc:
        return {}
    metrics = {"best_epoch": best["epoch"], "best_val_loss": round(best["val_loss"], 5),
               "best_val_accuracy": round(best["val_accuracy"], 5),
               "best_val_hole_loss": round(best["val_hole_loss"], 5), "epochs": p["epochs"], "steps": total,
               "processes": world, "images_per_s": round(seen / elapsed, 1) if seen else None,
               "steady_images_per_s": steady_rate(epoch_ends, steps_per_epoch * p["batch_size"] * world),
               "device": str(device), "parameters": sum(t.numel() for t in model.parameters())}
    with atomic_dir(OUT) as out:
        torch.save(best_state, out / "transformer.pt")
        torch.save(model.state_dict(), out / "last.pt")
        (out / "architecture.json").write_text(json.dumps(dataclasses.asdict(arch), indent=2))
        write_resolved(cfg, out)
    with atomic_dir(REPORTS) as rep:
        save_json(metrics, rep / "metrics.json")
        training.write_log_csv(log, rep / "train_log.csv")
        training.write_log_csv(val_log, rep / "val_log.csv")
    ckpt_path.unlink(missing_ok=True)
    return metrics


def load_transformer(device) -> BidirectionalTransformer:
    arch = json.loads((OUT / "architecture.json").read_text())
    model = BidirectionalTransformer(TransformerConfig(**arch))
    model.load_state_dict(torch.load(OUT / "transformer.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> None:
    cfg, _ = cli(__doc__, argv=argv)
    metrics = train(cfg)
    if metrics:
        print("train: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    run(main)
