"""Stage `vqgan` (stage 1): adopt the lab's VQGAN.pt frozen, or train our own on the train split.

Outputs: models/vqgan/ (vqgan.pt state_dict, architecture.json, config.yaml) and reports/vqgan/, logged
through dvclive: metrics.json (val PSNR and codebook usage), plots/metrics/train/ (the losses every 10 steps),
plots/metrics/val/ (val PSNR and codebook usage every `eval_every` steps; in the autoencoder warm-up,
`quantized` 0, the PSNR without the codebook) and plots/images/ (reconstructions of fixed val images at every
validation, recon.png the final ones).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.lr_schedule import warmup_cosine
from model.vqgan import VQGAN, Discriminator, NonLocalBlock, ResidualBlock, VQGANConfig, denormalize, normalize
from model.vqgan_training import (Stage1Losses, Stage1Step, codebook_stats, encoder_vectors,
                                  freeze_tokenizer, generator_forward, init_codebook, psnr, restart_dead_codes)
from pipeline import checkpoints
from pipeline.config import ConfigError, StageFailed, cli, dataclass_from, run
from pipeline.files import atomic_dir, check_writable, write_resolved
from pipeline.lineage import Lineage
from pipeline.live import log_rows, open_live, write_logs
from pipeline.paths import PREPARED, VQGAN as OUT, VQGAN_REPORTS as REPORTS
from pipeline.pictures import image_grid
from pipeline.runtime import autocast_for, compile_blocks, pick_device, resolve_precision, seed_everything

EVAL_IMAGES = 256
VAL_LOG_KEYS = ("val_psnr", "codebook_used", "perplexity")


def read_checkpoint(path: Path) -> dict:
    """Load a user's state_dict safely (weights_only) and return it, or fail naming what is wrong (that
    the file exists, the parameter schema has checked)."""
    if path.stat().st_size == 0:
        raise ConfigError(f"vqgan.checkpoint: {path} is empty (0 bytes); expected the lab's VQGAN.pt")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled code that weights_only refuses
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"vqgan.checkpoint: {path} could not be read as a PyTorch state_dict: "
                          f"{first[:200]}") from None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        inner = f" (keys: {list(sd)[:5]})" if isinstance(sd, dict) else ""
        raise ConfigError(f"vqgan.checkpoint: {path} is not a raw state_dict of tensors{inner}; "
                          "expected the lab's VQGAN.pt layout")
    return sd


def check_state_dict(sd: dict, model: torch.nn.Module, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
                 for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or misshaped:
        parts = [f"{name}: {', '.join(keys)}" for name, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", misshaped)) if keys]
        raise ConfigError(f"vqgan.checkpoint: {path} does not match the lab's VQGAN architecture; " + "; ".join(parts))


def adopt(path: Path) -> VQGAN:
    sd = read_checkpoint(path)
    model = VQGAN(VQGANConfig())  # the lab's architecture
    check_state_dict(sd, model, path)
    model.load_state_dict(sd, strict=True)
    return model


def architecture(p: dict) -> VQGANConfig:
    """The stage-1 layout the `vqgan` parameters ask for, or a ConfigError naming the one that does not fit."""
    try:
        return dataclass_from(VQGANConfig, p)
    except ValueError as e:
        raise ConfigError(f"vqgan.{e}") from None


def train(p: dict, arch: VQGANConfig, images: np.ndarray, val: torch.Tensor, device: torch.device,
          data_cfg: dict, precision: str) -> tuple[VQGAN, list[dict], list[dict], dict]:
    """`val`: the uint8 images measured every `eval_every` steps, on `device`; `precision`: the parameter
    (`autocast_for`). Returns the model, the train and val log rows, and the reconstruction pictures of each
    validation."""
    seed_everything(p["seed"])
    model, disc = VQGAN(arch).to(device), Discriminator().to(device)
    if device.type == "cuda":
        model, disc = model.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(model.parameters(), lr=p["lr"], betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=p["lr"], betas=(0.5, 0.9))
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, warmup_cosine(p["warmup_steps"], p["steps"]))
    if p["compile"] == "regional":
        compile_blocks(model, (ResidualBlock, NonLocalBlock))
    step_fn = Stage1Step(model, disc, opt_g, opt_d, dataclass_from(Stage1Losses, p))

    data = torch.from_numpy(images).to(device)
    gen = torch.Generator(device="cpu").manual_seed(p["seed"])
    usage = torch.zeros(arch.num_codebook_vectors, dtype=torch.long, device=device)
    ckpt_path = checkpoints.checkpoint_path("vqgan", p, data_cfg)
    state, log, val_log, pictures, start = checkpoints.load_checkpoint(ckpt_path, device), [], [], {}, 0
    if state:
        for obj, key in ((model, "model"), (disc, "disc"), (opt_g, "opt_g"), (opt_d, "opt_d"), (sched_g, "sched_g")):
            obj.load_state_dict(state[key])
        gen.set_state(state["gen"])
        usage.copy_(state["usage"])
        log, val_log, pictures, start = state["log"], state["val_log"], state["pictures"], state["step"]
    live = open_live(REPORTS, {"train": log, "val": val_log})

    def batch():
        idx = torch.randint(0, len(data), (p["batch_size"],), generator=gen)
        flip = torch.rand(p["batch_size"], generator=gen) < 0.5
        if device.type == "cuda":  # pinned, non-blocking: a plain host-to-GPU copy waits for the GPU every step
            idx, flip = (t.pin_memory().to(device, non_blocking=True) for t in (idx, flip))
        x = normalize(data[idx])
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x

    def start_codebook():  # on encoder outputs: at step 0, or where the autoencoder warm-up ends
        init_codebook(model, torch.cat([encoder_vectors(model, batch()) for _ in range(4)]))
        usage.zero_()

    # Restarts stop for the last fifth, so the decoder settles on the final codebook, or where it is frozen.
    restarts_end = min(0.8 * p["steps"], p["decoder_only_from"] or p["steps"])
    autocast = autocast_for(device, precision)
    model.train(), disc.train()
    clock = checkpoints.CheckpointClock(p["checkpoint_every"], p["checkpoint_minutes"], p["steps"])
    bar = tqdm(range(start, p["steps"]), desc="vqgan", initial=start, total=p["steps"], mininterval=2.0)
    t0 = time.time()
    for step in bar:
        if step == p["quantize_start"]:
            start_codebook()
        if p["decoder_only_from"] is not None and step == max(start, p["decoder_only_from"]):  # also on resume past it
            freeze_tokenizer(model)
        x = batch()
        logs, indices = step_fn(x, step, autocast)
        usage.index_add_(0, indices.flatten(), torch.ones_like(indices.flatten()))  # bincount would sync
        since_start = step + 1 - p["quantize_start"]
        if since_start > 0 and since_start % p["codebook_restart_every"] == 0 and step < restarts_end:
            logs["codes_restarted"] = restart_dead_codes(model, usage, encoder_vectors(model, x))
        sched_g.step()
        last = step == p["steps"] - 1
        checkpoint_now = clock.due(step + 1)
        if step % 10 == 0 or last or checkpoint_now:  # reading the losses syncs the GPU: not every step
            values = {k: round(float(v), 5) for k, v in logs.items()}
            if not np.isfinite(values["loss"]):
                raise StageFailed(f"vqgan: non-finite loss at step {step}; the last good checkpoint is {ckpt_path}")
        if step % 10 == 0 or last:  # the log's rows do not depend on when checkpoints fell
            log.append({"step": step, "seconds": round(time.time() - t0, 2), **values})
            log_rows(live, {"train": log[-1:]})
            rate = (step + 1 - start) * p["batch_size"] / (time.time() - t0)
            bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{rate:.0f}")
        if (step + 1) % p["eval_every"] == 0 and not last:  # the stage measures the last step itself
            quantized = step + 1 > p["quantize_start"]  # in the warm-up: the plain autoencoder's PSNR
            metrics, recon = reconstruction_metrics(model, val, quantized)
            val_log.append({"step": step + 1, "seconds": round(time.time() - t0, 2), "quantized": int(quantized),
                            **{k: metrics[k] for k in VAL_LOG_KEYS}})
            name = f"recon/step_{step + 1:05d}.png"
            pictures[name] = image_grid([val[:8].cpu().numpy(), recon[:8].cpu().numpy()])
            log_rows(live, {"val": val_log[-1:]})
            live.log_image(name, pictures[name])
            model.train()
        if checkpoint_now:
            checkpoints.save_checkpoint(ckpt_path, step=step + 1, model=model.state_dict(), disc=disc.state_dict(),
                                     opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(),
                                     sched_g=sched_g.state_dict(), gen=gen.get_state(), usage=usage, log=log,
                                     val_log=val_log, pictures=pictures)
    ckpt_path.unlink(missing_ok=True)
    return model, log, val_log, pictures


@torch.no_grad()
def reconstruction_metrics(model: VQGAN, images: torch.Tensor, quantize: bool = True) -> tuple[dict, torch.Tensor]:
    """PSNR and codebook usage of uint8 images (on the model's device) and their reconstructions, fp32;
    quantize=False: through the plain autoencoder (the codebook bypassed, as in the warm-up)."""
    model.eval()
    recon, indices = [], []
    gate = torch.tensor(float(quantize), device=images.device)
    for chunk in images.split(64):
        with torch.compiler.set_stance("force_eager"):  # blocks compiled in place (regional) stay eager here
            decoded, idx, _ = generator_forward(model, normalize(chunk), gate)
        recon.append(denormalize(decoded))
        indices.append(idx)
    recon = torch.cat(recon)
    metrics = {"val_psnr": round(psnr(recon, images), 3), "val_images": len(images),
               **codebook_stats(torch.cat(indices), model.cfg.num_codebook_vectors)}
    return metrics, recon


def main(argv: list[str] | None = None) -> None:
    cfg, _ = cli(__doc__, argv=argv)
    p, device = cfg["vqgan"], pick_device(cfg["device"])
    # Checked before any long work: the adopted file, or the layout to train.
    model, arch = (adopt(Path(p["checkpoint"])), None) if p["checkpoint"] else (None, architecture(p))
    check_writable(OUT, REPORTS, checkpoints.CHECKPOINTS / "probe")
    lineage = Lineage(cfg)
    val = torch.from_numpy(np.load(lineage.read(PREPARED / "val.npy", "prepare"))[:EVAL_IMAGES]).to(device)
    log, val_log, pictures, t0 = [], [], {}, time.time()
    if model is None:
        train_images = np.load(lineage.read(PREPARED / "train.npy", "prepare"))
        model, log, val_log, pictures = train(p, arch, train_images, val, device, cfg["data"], cfg["precision"])
    model = model.to(device)
    metrics, recon = reconstruction_metrics(model, val)
    grid = image_grid([val[:8].cpu().numpy(), recon[:8].cpu().numpy()])
    val_log.append({"step": p["steps"] if log else 0, "seconds": log[-1]["seconds"] if log else 0.0, "quantized": 1,
                    **{k: metrics[k] for k in VAL_LOG_KEYS}})  # seconds: of training, as the rows before
    metrics.update(source="adopted " + str(p["checkpoint"]) if p["checkpoint"] else "trained",
                   seconds=round(time.time() - t0, 1), device=str(device),
                   precision=resolve_precision(device, cfg["precision"]) if log else None)
    with atomic_dir(OUT) as out:
        torch.save(model.cpu().state_dict(), out / "vqgan.pt")
        (out / "architecture.json").write_text(json.dumps(dataclasses.asdict(model.cfg), indent=2))
        write_resolved(cfg, out)
        lineage.write(out, OUT, "vqgan")
    with atomic_dir(REPORTS) as rep:
        write_logs(rep, {"train": log, "val": val_log}, metrics, {**pictures, "recon.png": grid})
    print("vqgan: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    run(main)
