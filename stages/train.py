"""Stage `train` (stage 2): masked visual token modelling on the cached tokens.

Outputs: models/transformer/ (transformer.pt: the best weights by validation loss, architecture.json,
config.yaml) and reports/train/, logged through dvclive: metrics.json, plots/metrics/train/ (loss, masked-token
accuracy and learning rate every 10 steps) and plots/metrics/val/ (every epoch: the validation loss on random
masks and on brush holes like the test set's, `val_hole_loss`, and the masked-token accuracy). Multi-GPU:
`torchrun --nproc_per_node N -m stages.train` (DDP; gloo on the CPU).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from model.lr_schedule import warmup_cosine
from model.masking import hole_token_masks
from model.mvtm import make_optimizer, new_transformer, train_step, validate
from model.transformer import Block, TransformerConfig
from pipeline import checkpoints
from pipeline.config import ConfigError, StageFailed, cli, dataclass_from, run
from pipeline.files import atomic_dir, check_writable, write_resolved
from pipeline.lineage import Lineage
from pipeline.live import log_rows, open_live, write_logs
from pipeline.paths import TOKENS, TRAIN_REPORTS as REPORTS, TRANSFORMER as OUT, VQGAN
from pipeline.runtime import autocast_for, compile_blocks, pick_device, resolve_precision, seed_everything



def stage1_codebook(p: dict, lineage: Lineage) -> torch.Tensor | None:
    """Stage 1's codebook, where the token embeddings start from it (`train.tok_init: codebook`). Its weights
    are read (recorded) either way: they name the stage 1 this transformer's tokens belong to."""
    weights = lineage.read(VQGAN / "vqgan.pt", "vqgan")
    if p["tok_init"] != "codebook":
        return None
    weights = torch.load(weights, map_location="cpu", weights_only=True)
    return weights["codebook.embedding.weight"]


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
    check_writable(OUT, REPORTS, checkpoints.CHECKPOINTS / "probe")
    lineage = Lineage(cfg)
    arch_vq = json.loads(lineage.read(VQGAN / "architecture.json", "vqgan").read_text())
    arch = dataclass_from(TransformerConfig, p, num_codebook_vectors=arch_vq["num_codebook_vectors"])
    rank, world, device = setup_distributed(cfg["device"])
    main_proc = rank == 0

    def tokens(name):
        return torch.from_numpy(np.load(lineage.read(TOKENS / name, "tokens")).astype(np.int64)).to(device)

    train_tok, val_tok = tokens("train.npy"), tokens("val.npy")
    codebook = stage1_codebook(p, lineage)

    seed_everything(p["seed"] + rank)
    model = new_transformer(arch, codebook, p["seed"]).to(device)
    opt = make_optimizer(model, p["lr"], p["weight_decay"])
    steps_per_epoch = len(train_tok) // (p["batch_size"] * world)
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size {p['batch_size']} x {world} process(es) exceeds the "
                         f"{len(train_tok)} training images")
    total = steps_per_epoch * p["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(p["warmup_steps"], total))
    mask_gen = torch.Generator(device=device).manual_seed(p["seed"] * 1000 + rank)
    # Brush holes like the test set's (a seed apart from its), to validate on.
    hole_range = (cfg["data"]["hole_min"], cfg["data"]["hole_max"])
    val_holes = hole_token_masks(256, 20_000 + p["seed"], hole_range).to(device)

    ckpt_path = checkpoints.checkpoint_path("train", p, arch_vq, len(train_tok), world, hole_range)
    state = checkpoints.load_checkpoint(ckpt_path, device)
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
        compile_blocks(model, (Block,))
    autocast = autocast_for(device, cfg["precision"])

    def save(at_step):
        checkpoints.save_checkpoint(ckpt_path, step=at_step, model=model.state_dict(), opt=opt.state_dict(),
                                 sched=sched.state_dict(), mask_gen=mask_gen.get_state(), best=best, log=log,
                                 val_log=val_log, best_state=best_state)

    live = open_live(REPORTS, {"train": log, "val": val_log}) if main_proc else None
    clock = checkpoints.CheckpointClock(p["checkpoint_every"], p["checkpoint_minutes"], total)
    model.train()
    bar = tqdm(total=total, initial=step, desc="train", mininterval=2.0, disable=not main_proc)
    t0, seen = time.time(), 0
    epoch_ends = [t0]  # the first epoch includes compilation; the steady rate leaves it out
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        order = torch.randperm(len(train_tok), generator=torch.Generator().manual_seed(p["seed"] + epoch))
        shard = order[rank::world][: steps_per_epoch * p["batch_size"]].to(device)
        for batch_idx in shard.split(p["batch_size"])[pos:]:
            loss, acc = train_step(net, model, opt, sched, train_tok[batch_idx], arch.mask_token, mask_gen, autocast,
                                   gamma=p["gamma"], label_smoothing=p["label_smoothing"], grad_clip=p["grad_clip"])
            step, seen = step + 1, seen + len(batch_idx) * world
            checkpoint_now = clock.due(step) and main_proc
            if step % 10 == 0 or step == total or checkpoint_now:  # reading the loss syncs the GPU
                if not torch.isfinite(loss):
                    raise StageFailed(f"train: non-finite loss by step {step}; the last good checkpoint is {ckpt_path}")
            if step % 10 == 0 or step == total:  # the log's rows do not depend on when checkpoints fell
                log.append({"step": step, "loss": round(loss.item(), 5), "accuracy": round(acc.item(), 5),
                            "lr": sched.get_last_lr()[0]})
                if live:
                    log_rows(live, {"train": log[-1:]})
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.time() - t0):.0f}")
            bar.update(1)
            if step % steps_per_epoch == 0:
                v = validate(model, val_tok, arch.mask_token, p["gamma"], p["batch_size"], autocast, val_holes)  # syncs: the epoch ends here
                epoch_ends.append(time.time())
                val_log.append({"step": step, "epoch": step // steps_per_epoch,
                                "epoch_seconds": round(epoch_ends[-1] - epoch_ends[-2], 3), **v})
                if live:
                    log_rows(live, {"val": val_log[-1:]})
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
               "device": str(device), "precision": resolve_precision(device, cfg["precision"]),
               "parameters": sum(t.numel() for t in model.parameters())}
    with atomic_dir(OUT) as out:
        torch.save(best_state, out / "transformer.pt")
        torch.save(model.state_dict(), out / "last.pt")
        (out / "architecture.json").write_text(json.dumps(dataclasses.asdict(arch), indent=2))
        write_resolved(cfg, out)
        lineage.write(out, OUT, "train")
    with atomic_dir(REPORTS) as rep:
        write_logs(rep, {"train": log, "val": val_log}, metrics)
    ckpt_path.unlink(missing_ok=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg, _ = cli(__doc__, argv=argv)
    metrics = train(cfg)
    if metrics:
        print("train: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    run(main)
