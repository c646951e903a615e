"""bf16 autocast against fp32 on this machine, at the quick profile's sizes (params.yaml): a stage-1 training
step, a stage-2 training step, one stage-2 forward over a decoding batch, and one Inception batch of FID.

    python -m bench.precision [--rounds 5] [--out precision.json]

Random weights and inputs. The two precisions alternate within every round, so both see the same load on a
shared CPU; the figures are each one's median over the rounds and their ratio. Inception also reports how far
its bf16 features lie from the fp32 ones (the largest difference over the largest feature), which is why FID
stays fp32.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.common import machine, sync
from model.fid import load_inception, preprocess
from model.mvtm import make_optimizer, mvtm_loss
from model.masking import mvtm_mask
from model.transformer import BidirectionalTransformer, TransformerConfig
from model.vqgan import VQGAN, Discriminator, VQGANConfig
from model.vqgan_training import Stage1Step
from pipeline.config import load
from pipeline.runtime import autocast_for, native_bf16

PRECISIONS = ("fp32", "bf16")


def stage1_step(v: dict, device):
    """A generator step of the quick profile's stage 1 (no discriminator: the quick profile never turns it on)."""
    arch = VQGANConfig(**{k: v[k] for k in ("enc_channels", "dec_channels", "latent_dim", "num_codebook_vectors",
                                           "norm_groups", "enc_blocks", "dec_blocks", "latent_attention",
                                           "resample")})
    model, disc = VQGAN(arch).to(device), Discriminator().to(device)
    step = Stage1Step(model, disc, torch.optim.Adam(model.parameters()), torch.optim.Adam(disc.parameters()),
                      {**v, "disc_start": 10**9, "quantize_start": 0})
    x = torch.rand(v["batch_size"], 3, 64, 64, device=device) * 2 - 1
    return lambda precision: step(x, 1, autocast_for(device, precision)), v["batch_size"]


def transformer(t: dict, device) -> BidirectionalTransformer:
    cfg = TransformerConfig(dim=t["dim"], n_layers=t["n_layers"], hidden_dim=t["hidden_dim"], n_heads=t["n_heads"])
    return BidirectionalTransformer(cfg).to(device)


def stage2_step(t: dict, device):
    model = transformer(t, device)
    opt = make_optimizer(model, 1e-3, 0.01)
    tokens = torch.randint(0, model.cfg.num_codebook_vectors, (t["batch_size"], 256), device=device)

    def step(precision):
        mask = mvtm_mask(*tokens.shape, device=device)
        with autocast_for(device, precision)():
            loss = mvtm_loss(model, tokens, mask, model.cfg.mask_token)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, t["batch_size"]


def stage2_forward(t: dict, batch: int, device):
    model = transformer(t, device).eval()
    tokens = torch.randint(0, model.cfg.num_codebook_vectors + 1, (batch, 256), device=device)

    @torch.inference_mode()
    def forward(precision):
        with autocast_for(device, precision)():
            model(tokens)
    return forward, batch


def inception(batch: int, device):
    net = load_inception(device)
    x = preprocess(torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8, device=device))
    features = {}

    @torch.inference_mode()
    def forward(precision):
        with torch.jit.optimized_execution(False), autocast_for(device, precision)():
            features[precision] = net(x).float()
    return forward, batch, features


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    a = parser.parse_args()
    device = torch.device("cpu")
    cfg = load()
    torch.manual_seed(0)
    eval_batch = cfg["evaluate"]["batch_size"]
    fid, fid_batch, fid_features = inception(eval_batch, device)
    cases = {"stage-1 step": stage1_step(cfg["vqgan"], device), "stage-2 step": stage2_step(cfg["train"], device),
             "stage-2 forward": stage2_forward(cfg["train"], min(cfg["inpaint"]["batch_size"], 64), device),
             "Inception": (fid, fid_batch)}
    for fn, _ in cases.values():  # warm-up: the first call of each kind allocates and picks kernels
        for p in PRECISIONS:
            fn(p)
    seconds = {name: {p: [] for p in PRECISIONS} for name in cases}
    for _ in range(a.rounds):
        for name, (fn, _) in cases.items():
            for p in PRECISIONS:
                sync(device)
                t0 = time.perf_counter()
                fn(p)
                sync(device)
                seconds[name][p].append(time.perf_counter() - t0)
    fp32, bf16 = fid_features["fp32"], fid_features["bf16"]
    results = {"machine": machine(device), "native_bf16": native_bf16(), "rounds": a.rounds, "cases": {}}
    for name, (_, images) in cases.items():
        med = {p: float(np.median(seconds[name][p])) for p in PRECISIONS}
        results["cases"][name] = {"images": images, **{f"{p}_images_per_s": round(images / med[p], 1) for p in PRECISIONS},
                                  "bf16_over_fp32_seconds": round(med["bf16"] / med["fp32"], 3)}
    results["inception_bf16_feature_error"] = round(float((bf16 - fp32).abs().max() / fp32.abs().max()), 4)
    print(json.dumps(results, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
