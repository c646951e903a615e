"""Timing helpers for the benchmarks."""
from __future__ import annotations

import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

H100_BF16_PEAK = 989e12  # dense bf16 tensor-core peak of an H100 SXM, FLOP/s


def counted_flops(fn) -> int:
    """FLOPs (matmuls and convolutions, as PyTorch's counter sees them) of one call of `fn`; run it on
    meta-device models to count without computing."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int = 1, repeat: int = 3) -> float:
    """Median seconds of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
