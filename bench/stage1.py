"""Stage-1 training throughput (images/s) of the lab's VQGAN configuration.

    python -m bench.stage1 [--batch 128] [--steps 5] [--compile] [--width 1.0]

Generator + discriminator step as the `vqgan` stage runs it once the discriminator is on: bf16
autocast and channels_last on CUDA, fp32 on the CPU; and the fp32 batch-16 baseline in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import json

import torch

from bench.common import machine, timed
from model.vqgan import VQGAN, Discriminator, VQGANConfig
from model.vqgan_training import Stage1Step
from stages.training import autocast_for, compile_generator

RECIPE = {"l1_weight": 1.0, "l2_weight": 1.0, "disc_start": 0, "disc_weight": 0.1, "feature_weight": 1.0}


def step_per_s(device, batch: int, steps: int, precision: str, compile_model: bool, width: float) -> float:
    torch.manual_seed(0)
    scale = lambda chs: [max(32, round(c * width / 32) * 32) for c in chs]  # noqa: E731  (GroupNorm(32))
    base = VQGANConfig()
    cfg = VQGANConfig(enc_channels=scale(base.enc_channels), dec_channels=scale(base.dec_channels))
    model, disc = VQGAN(cfg).to(device), Discriminator().to(device)
    fast = precision == "bf16" and device.type == "cuda"
    if fast:
        model, disc = model.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    fwd = compile_generator(model) if compile_model else model
    opt_g = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
    step = Stage1Step(fwd, disc, opt_g, opt_d, RECIPE)
    x = torch.randn(batch, 3, 64, 64, device=device)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = autocast_for(device) if fast else contextlib.nullcontext
    return batch / timed(lambda: step(x, 1, autocast), device, warmup=2 if compile_model else 1, repeat=steps)


def run(device, batch: int | None = None, steps: int | None = None, compile_model: bool = False,
        width: float = 1.0) -> dict:
    """None picks the device's default: batch 128 and 10 steps on a GPU, 16 and 2 on a CPU."""
    gpu = device.type == "cuda"
    batch, steps = batch or (128 if gpu else 16), steps or (10 if gpu else 2)
    ours = step_per_s(device, batch, steps, "bf16" if gpu else "fp32", compile_model, width)
    baseline = step_per_s(device, 16, max(2, steps // 2), "fp32", False, width)
    return {"benchmark": "stage-1 training step (generator + discriminator)", "machine": machine(device),
            "width": width, "ours": {"batch": batch, "precision": "bf16" if gpu else "fp32", "compiled": compile_model,
                                     "images_per_s": round(ours, 1), "seconds_per_12000": round(12000 / ours, 1)},
            "fp32_batch16": {"images_per_s": round(baseline, 1)}, "speedup": round(ours / baseline, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the lab widths")
    a = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(run(device, a.batch, a.steps, a.compile, a.width), indent=2))


if __name__ == "__main__":
    main()
