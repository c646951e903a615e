"""Inpainting throughput of the lab configuration: the whole test set batched, against the common
student loop (one image at a time, the VQGAN decoder run after every iteration), in one run.

    python -m bench.inpaint [--images 747] [--T 8] [--loop-images 8] [--compile]

Random weights: the timing does not depend on what the model has learned.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from bench.common import H100_BF16_PEAK, counted_flops, machine, sync
from model.iterative_decode import image_generators, iterative_decode
from model.transformer import BidirectionalTransformer, TransformerConfig
from model.vqgan import VQGAN, VQGANConfig
from pipeline.runtime import autocast_for


def flops_per_image(T: int) -> int:
    """VQGAN encode + T transformer passes + VQGAN decode, counted on meta-device models."""
    with torch.device("meta"):
        transformer, vqgan = BidirectionalTransformer(TransformerConfig()), VQGAN(VQGANConfig())
        x, tokens = torch.empty(1, 3, 64, 64), torch.zeros(1, 256, dtype=torch.long)
    with torch.no_grad():
        codec = counted_flops(lambda: (vqgan.encode(x), vqgan.decode_indices(tokens)))
        one_pass = counted_flops(lambda: transformer(tokens))
    return codec + T * one_pass


def run(device, images: int | None = None, T: int = 8, loop_images: int | None = None,
        compile_model: bool = False) -> dict:
    """None picks the device's default: the 747 test images and a 16-image loop on a GPU, 32 and 2 on a CPU.
    `compile_model` compiles the transformer for the batched decode (the T passes are most of its FLOPs)."""
    gpu = device.type == "cuda"
    images, loop_images, batch = images or (747 if gpu else 32), loop_images or (16 if gpu else 2), 256 if gpu else 32
    torch.manual_seed(0)
    transformer = BidirectionalTransformer(TransformerConfig()).to(device).eval()
    vqgan = VQGAN(VQGANConfig()).to(device).eval()
    net = torch.compile(transformer) if compile_model else transformer
    autocast = autocast_for(device, "auto")
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(images, 3, 64, 64, device=device)
    mask = torch.rand(images, 256, device=device, generator=gen) < 0.4

    def predict(tokens):
        with autocast():
            return net(tokens)

    @torch.inference_mode()
    def batched(n):
        for i in range(0, n, batch):
            with autocast():
                tokens = vqgan.encode(x[i:i + batch])[1]
            out = iterative_decode(predict, tokens, mask[i:i + batch], T=T, mask_token=1024, num_codes=1024,
                                   generators=image_generators(0, range(i, min(i + batch, n)), device))
            with autocast():
                vqgan.decode_indices(out.tokens)

    @torch.inference_mode()
    def per_image(n):
        for i in range(n):
            tokens = torch.where(mask[i:i + 1], 1024, vqgan.encode(x[i:i + 1])[1])
            for _ in range(T):  # fp32, batch 1, the picture decoded after every iteration
                predicted = transformer(tokens)[..., :1024].argmax(-1)
                vqgan.decode_indices(predicted)

    batched(images if compile_model else min(images, batch))  # warm-up (compiled: every batch shape)
    sync(device)
    t0 = time.perf_counter()
    batched(images)
    sync(device)
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_image(loop_images)
    sync(device)
    loop_rate = loop_images / (time.perf_counter() - t0)
    tflops = flops_per_image(T) * images / batched_s / 1e12
    batched_figures = {"images": images, "seconds": round(batched_s, 2), "images_per_s": round(images / batched_s, 1),
                       "tflops": round(tflops, 2), "includes": "VQGAN encode + T transformer passes + VQGAN decode",
                       "transformer_compiled": compile_model}
    if gpu:
        batched_figures["mfu"] = round(tflops * 1e12 / H100_BF16_PEAK, 3)
    return {"benchmark": f"inpainting, lab configuration, T={T}", "machine": machine(device),
            "batched": batched_figures,
            "per_image_loop": {"images": loop_images, "images_per_s": round(loop_rate, 2)},
            "speedup": round(images / batched_s / loop_rate, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int)
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--loop-images", type=int)
    parser.add_argument("--compile", action="store_true", help="compile the transformer for the batched decode")
    a = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(run(device, a.images, a.T, a.loop_images, a.compile), indent=2))


if __name__ == "__main__":
    main()
