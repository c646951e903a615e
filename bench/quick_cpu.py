"""What the quick profile's steps cost on this CPU (its sizes from params.yaml), in two comparisons:

- bf16 autocast against fp32: a stage-1 training step, a stage-2 training step, one stage-2 forward over a
  decoding batch, and Inception's features of 64 images, with how far its bf16 features lie from the fp32 ones
  (the largest difference over the largest feature): why FID stays fp32;
- Inception's fp32 features of 64 images at several batch sizes, and whether they equal batch 64's;
- stage 1's codebook lookup (`nearest_entry`) for one training batch against the full distance expansion
  ‖v‖² + ‖e‖² − 2 v·e, at the profile's codebook size and four times it, and how often their indices agree.

    python -m bench.quick_cpu [--rounds 5] [--out quick_cpu.json]

Random weights and inputs. The variants of a comparison alternate within every round, so all see the same load
on a shared CPU; the figures are each one's median over the rounds, and their ratio.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.common import machine
from bench.stage2 import step_fn
from model.fid import preprocess
from pipeline.inception import load_inception
from model.mvtm import make_optimizer
from model.transformer import BidirectionalTransformer, TransformerConfig
from model.vqgan import VQGAN, Discriminator, VQGANConfig, nearest_entry
from model.vqgan_training import Stage1Losses, Stage1Step
from pipeline.config import dataclass_from, load
from pipeline.runtime import autocast_for, native_bf16

PRECISIONS = ("fp32", "bf16")


def stage1_step(v: dict, device):
    """A generator step of the quick profile's stage 1 (no discriminator: the quick profile never turns it on)."""
    model, disc = VQGAN(dataclass_from(VQGANConfig, v)).to(device), Discriminator().to(device)
    step = Stage1Step(model, disc, torch.optim.Adam(model.parameters()), torch.optim.Adam(disc.parameters()),
                      dataclass_from(Stage1Losses, v, disc_start=10**9, quantize_start=0))
    x = torch.rand(v["batch_size"], 3, 64, 64, device=device) * 2 - 1
    return lambda precision: step(x, 1, autocast_for(device, precision)), v["batch_size"]


def transformer(t: dict, device) -> BidirectionalTransformer:
    return BidirectionalTransformer(dataclass_from(TransformerConfig, t)).to(device)


def stage2_step(t: dict, device):
    model = transformer(t, device)
    opt = make_optimizer(model, 1e-3, 0.01)
    tokens = torch.randint(0, model.cfg.num_codebook_vectors, (t["batch_size"], 256), device=device)
    steps = {p: step_fn(model, opt, tokens, autocast_for(device, p)) for p in PRECISIONS}  # one model, both precisions
    return lambda precision: steps[precision](), t["batch_size"]


def stage2_forward(t: dict, batch: int, device):
    model = transformer(t, device).eval()
    tokens = torch.randint(0, model.cfg.num_codebook_vectors + 1, (batch, 256), device=device)

    @torch.inference_mode()
    def forward(precision):
        with autocast_for(device, precision)():
            model(tokens)
    return forward, batch


def inception(net, x: torch.Tensor, batch: int, precision: str, device) -> torch.Tensor:
    """Features of `x` (preprocessed) in batches of `batch`."""
    with torch.inference_mode(), torch.jit.optimized_execution(False), autocast_for(device, precision)():
        return torch.cat([net(x[i:i + batch]).float() for i in range(0, len(x), batch)])


def full_expansion(vectors: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """The textbook nearest entry, every squared distance formed: what `nearest_entry` is timed against."""
    return ((vectors**2).sum(1, keepdim=True) + (entries**2).sum(1) - 2 * vectors @ entries.t()).argmin(dim=1)


def medians(seconds: dict) -> dict:
    return {k: float(np.median(v)) for k, v in seconds.items()}


def interleaved(fns: dict, rounds: int) -> dict:
    """{name: [seconds of each round]}, every fn called once a round in turn, after one untimed call each."""
    for fn in fns.values():
        fn()
    seconds = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    a = parser.parse_args()
    device, cfg = torch.device("cpu"), load()
    torch.manual_seed(0)
    net = load_inception(device)
    x = preprocess(torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8))
    cases = {"stage-1 step": stage1_step(cfg["vqgan"], device), "stage-2 step": stage2_step(cfg["train"], device),
             "stage-2 forward": stage2_forward(cfg["train"], min(cfg["inpaint"]["batch_size"], 64), device),
             "Inception": (lambda precision: inception(net, x, 64, precision, device), len(x))}
    results = {"machine": machine(device), "native_bf16": native_bf16(), "rounds": a.rounds, "precision": {}}
    for name, (fn, images) in cases.items():
        med = medians(interleaved({p: (lambda p=p: fn(p)) for p in PRECISIONS}, a.rounds))
        results["precision"][name] = {"images": images,
                                      **{f"{p}_images_per_s": round(images / med[p], 1) for p in PRECISIONS},
                                      "bf16_over_fp32_seconds": round(med["bf16"] / med["fp32"], 3)}
    fp32, bf16 = (inception(net, x, 64, p, device) for p in PRECISIONS)
    results["inception_bf16_feature_error"] = round(float((bf16 - fp32).abs().max() / fp32.abs().max()), 4)
    batches = (1, 2, 4, 8, 16, 32, 64)
    med = medians(interleaved({b: (lambda b=b: inception(net, x, b, "fp32", device)) for b in batches}, a.rounds))
    results["inception_fp32_batch"] = {
        str(b): {"seconds_per_64": round(med[b], 2), "over_batch_64": round(med[b] / med[64], 3),
                 "features_equal_batch_64": bool(torch.equal(inception(net, x, b, "fp32", device), fp32))}
        for b in batches}
    v = cfg["vqgan"]
    vectors = torch.randn(v["batch_size"] * 256, v["latent_dim"])  # one batch's encoder outputs at 16x16
    results["codebook_lookup"] = {}
    for codes in (v["num_codebook_vectors"], 4 * v["num_codebook_vectors"]):
        entries = torch.randn(codes, v["latent_dim"])
        lookups = {"full_expansion": lambda: full_expansion(vectors, entries),
                   "nearest_entry": lambda: nearest_entry(vectors, entries)}
        med = medians(interleaved(lookups, 10 * a.rounds))
        results["codebook_lookup"][str(codes)] = {
            "vectors": len(vectors), **{f"{k}_ms": round(1e3 * t, 2) for k, t in med.items()},
            "ratio": round(med["nearest_entry"] / med["full_expansion"], 3),
            "indices_agree": round(float((full_expansion(vectors, entries) == nearest_entry(vectors, entries))
                                         .float().mean()), 5)}
    print(json.dumps(results, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
