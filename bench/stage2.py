"""Stage-2 training throughput of the lab configuration, next to the "student-style" loop.

    python -m bench.stage2 [--batch 256] [--steps 5] [--compile] [--profile]

Ours: tokens cached, bf16 autocast on CUDA and on CPUs with native bf16, large batch, fused AdamW.
Student-style: fp32, batch 16, gradient accumulation 10, and the VQGAN encoder run on every batch. FLOPs per
image: PyTorch's counter on one training step of a meta-device model, as the other benchmarks count theirs:
the weights' matmuls (6 x 72.2 M x 256) and the attention's own (the scores and their weighting of the values,
12 x layers x 256² x width), 119.9 GFLOP at lab size, where 6 x parameters x 256 gives 111.7.
Ours also reports its first step's seconds: with --compile, mostly compilation, and cold (Inductor's caches
off, so a `train` run before on the machine does not shorten it); --profile adds where its step's time
goes (matmuls, softmax, dropout, layer norm, ...; `bench.common.time_by_kind`).
"""
from __future__ import annotations

import argparse
import json

import torch

from bench.common import (H100_BF16_PEAK, attention_rewrites, clear_compile_counters, cold_compile, counted_flops,
                          machine, time_by_kind, timed)
from model.masking import mvtm_mask
from model.mvtm import mvtm_loss
from model.transformer import BidirectionalTransformer, Block, TransformerConfig
from model.vqgan import VQGAN, VQGANConfig
from pipeline.runtime import autocast_for, compile_blocks, resolve_precision


def step_fn(model, opt, tokens, autocast):
    def step():
        with autocast():
            loss, _, _ = mvtm_loss(model, tokens, mvtm_mask(*tokens.shape, device=tokens.device), model.cfg.mask_token)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def flops_per_image(cfg: TransformerConfig) -> int:
    """FLOPs of one image's training step (forward and backward), counted without computing."""
    with torch.device("meta"):
        model = BidirectionalTransformer(cfg)
    tokens = torch.zeros(1, cfg.num_image_tokens, dtype=torch.long, device="meta")
    return counted_flops(lambda: mvtm_loss(model, tokens, mvtm_mask(*tokens.shape, device="meta"),
                                           cfg.mask_token)[0].backward())


def run(device: torch.device, batch: int | None = None, steps: int | None = None, compiled: bool = False,
        accumulation: int | None = None, profile: bool = False) -> dict:
    """None picks the device's default: on a GPU batch 256, 10 steps, the student loop 3 steps of 10
    accumulated batches; on a CPU batch 16, 2 steps, 1 step of 1 batch."""
    gpu = device.type == "cuda"
    batch, steps = batch or (256 if gpu else 16), steps or (10 if gpu else 2)
    accumulation, student_steps = accumulation or (10 if gpu else 1), 3 if gpu else 1
    torch.manual_seed(0)
    cfg = TransformerConfig()
    model = BidirectionalTransformer(cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    flops = flops_per_image(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    clear_compile_counters()
    if compiled:
        compile_blocks(model, (Block,))
    tokens = torch.randint(0, cfg.num_codebook_vectors, (batch, cfg.num_image_tokens), device=device)
    step = step_fn(model, opt, tokens, autocast_for(device, "auto"))
    with cold_compile():
        first = timed(step, device, warmup=0, repeat=1)
    sec = timed(step, device, warmup=1, repeat=steps)
    del opt  # the student loop below gets its own optimizer
    ours = {"batch": batch, "images_per_s": round(batch / sec, 1),
            "tflops": round(flops * batch / sec / 1e12, 2),
            "epoch_12000_s": round(12000 / (batch / sec), 1), "compiled": compiled,
            "first_step_seconds": round(first, 1),
            "precision": resolve_precision(device, "auto")}
    if compiled:
        ours["attention_rewrites"] = attention_rewrites()  # 0: the figures are of our attention
    if device.type == "cuda":
        ours["mfu"] = round(flops * batch / sec / H100_BF16_PEAK, 3)
    if profile:
        try:  # the throughput above must come back even if the profiler fails on a device
            ours["profile"] = time_by_kind(step, device)
        except Exception as e:  # noqa: BLE001
            ours["profile"] = {"error": f"{type(e).__name__}: {e}"[:300]}

    # The student loop: fp32, batch 16, accumulate 10, the (lab-size) VQGAN encoder on every batch.
    vqgan = VQGAN(VQGANConfig()).to(device).eval()
    images = torch.randn(16, 3, 64, 64, device=device)
    student_opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def student_step():
        for _ in range(accumulation):
            with torch.no_grad():
                tok = vqgan.encode(images)[1]
            loss, _, _ = mvtm_loss(model, tok, mvtm_mask(*tok.shape, device=tok.device), cfg.mask_token)
            (loss / accumulation).backward()
        student_opt.step()
        student_opt.zero_grad(set_to_none=True)

    sec = timed(student_step, device, warmup=1, repeat=student_steps)
    rate = 16 * accumulation / sec
    student = {"batch": 16, "accumulation": accumulation, "images_per_s": round(rate, 1),
               "epoch_12000_s": round(12000 / rate, 1), "precision": "fp32"}
    return {"benchmark": "stage-2 training, lab configuration", "machine": machine(device),
            "parameters": params, "gflop_per_image": round(flops / 1e9, 1), "ours": ours, "student_style": student,
            "speedup": round(ours["images_per_s"] / student["images_per_s"], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile each block (`train.compile: regional`)")
    parser.add_argument("--accumulation", type=int, help="the student loop's accumulation (10; 1 on a CPU)")
    parser.add_argument("--profile", action="store_true", help="where our step's time goes, by kind of kernel")
    a = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(run(device, a.batch, a.steps, a.compile, a.accumulation, a.profile), indent=2))


if __name__ == "__main__":
    main()
