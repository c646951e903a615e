"""Stage-1 training throughput (images/s, TFLOP/s) of the lab's VQGAN configuration.

    python -m bench.stage1 [--batch 128] [--steps 5] [--compile] [--width 1.0]

Both phases of the `vqgan` stage: reconstruction only, and generator + discriminator once the
discriminator is on; bf16 autocast and channels_last on CUDA, fp32 on the CPU. Beside them, the fp32
batch-16 step in the same run. FLOPs per image are counted once by PyTorch's FLOP counter on a
meta-device step (convolutions and matmuls, forward and backward). Each phase also reports its first
step's seconds: with --compile (each block, as `vqgan.compile: regional`), mostly compilation, and cold (Inductor's caches off, as in bench.stage2;
the second phase reuses the graphs the first compiled in this process where they match).
"""
from __future__ import annotations

import argparse
import contextlib
import json

import torch

from bench.common import (H100_BF16_PEAK, attention_rewrites, clear_compile_counters, cold_compile, counted_flops,
                          machine, timed)
from model.vqgan import VQGAN, Discriminator, NonLocalBlock, ResidualBlock, VQGANConfig
from model.vqgan_training import Stage1Losses, Stage1Step
from pipeline.runtime import autocast_for, compile_blocks

PHASES = {"reconstruction": 10**9, "with_discriminator": 0}  # disc_start: never, from the first step


def config(width: float) -> VQGANConfig:
    scale = lambda chs: [max(32, round(c * width / 32) * 32) for c in chs]  # noqa: E731  (GroupNorm(32))
    base = VQGANConfig()
    return VQGANConfig(enc_channels=scale(base.enc_channels), dec_channels=scale(base.dec_channels))


def make_step(device, cfg: VQGANConfig, disc_start: int, fast: bool = False, compiled: bool = False):
    model, disc = VQGAN(cfg).to(device), Discriminator().to(device)
    if fast:
        model, disc = model.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
    if compiled:
        compile_blocks(model, (ResidualBlock, NonLocalBlock))
    return Stage1Step(model, disc, opt_g, opt_d, Stage1Losses(disc_start=disc_start))


def flops_per_image(cfg: VQGANConfig, disc_start: int) -> int:
    step = make_step(torch.device("meta"), cfg, disc_start)
    return counted_flops(lambda: step(torch.empty(1, 3, 64, 64, device="meta"), 1, contextlib.nullcontext))


def images_per_s(device, cfg, disc_start: int, batch: int, steps: int, precision: str,
                 compiled: bool) -> tuple[float, float]:
    """(images/s of a step, seconds of the first step)."""
    torch.manual_seed(0)
    fast = precision == "bf16" and device.type == "cuda"
    step = make_step(device, cfg, disc_start, fast, compiled)
    x = torch.randn(batch, 3, 64, 64, device=device)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = autocast_for(device, "bf16") if fast else contextlib.nullcontext
    with cold_compile():
        first = timed(lambda: step(x, 1, autocast), device, warmup=0, repeat=1)
    return batch / timed(lambda: step(x, 1, autocast), device, warmup=1, repeat=steps), first


def run(device, batch: int | None = None, steps: int | None = None, compiled: bool = False,
        width: float = 1.0) -> dict:
    """None picks the device's default: batch 128 and 10 steps on a GPU, 16 and 2 on a CPU."""
    gpu = device.type == "cuda"
    batch, steps = batch or (128 if gpu else 16), steps or (10 if gpu else 2)
    precision, cfg = "bf16" if gpu else "fp32", config(width)
    ours = {"batch": batch, "precision": precision, "compiled": compiled}
    gflop = {phase: flops_per_image(cfg, disc_start) / 1e9 for phase, disc_start in PHASES.items()}
    clear_compile_counters()
    for phase, disc_start in PHASES.items():
        rate, first = images_per_s(device, cfg, disc_start, batch, steps, precision, compiled)
        flops = rate * gflop[phase] * 1e9
        ours[phase] = {"images_per_s": round(rate, 1), "seconds_per_12000": round(12000 / rate, 1),
                       "tflops": round(flops / 1e12, 2), "first_step_seconds": round(first, 1)}
        if gpu:
            ours[phase]["mfu"] = round(flops / H100_BF16_PEAK, 3)
    if compiled:
        ours["attention_rewrites"] = attention_rewrites()  # 0: the figures are of our attention blocks
    baseline, _ = images_per_s(device, cfg, 0, 16, max(2, steps // 2), "fp32", False)
    return {"benchmark": "stage-1 training step", "machine": machine(device), "width": width,
            "gflop_per_image": {phase: round(g, 1) for phase, g in gflop.items()},
            "ours": ours, "fp32_batch16_with_discriminator": {"images_per_s": round(baseline, 1)},
            "speedup": round(ours["with_discriminator"]["images_per_s"] / baseline, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--compile", action="store_true", help="torch.compile each block (`vqgan.compile: regional`)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the lab widths")
    a = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(run(device, a.batch, a.steps, a.compile, a.width), indent=2))


if __name__ == "__main__":
    main()
