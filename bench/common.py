"""Timing helpers for the benchmarks."""
from __future__ import annotations

import contextlib
import platform
import time

import torch
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config
from torch.utils.flop_counter import FlopCounterMode

from pipeline.runtime import usable_cores

H100_BF16_PEAK = 989e12  # dense bf16 tensor-core peak of an H100 SXM, FLOP/s


def counted_flops(fn) -> int:
    """FLOPs (matmuls and convolutions, as PyTorch's counter sees them) of one call of `fn`; run it on
    meta-device models to count without computing."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@contextlib.contextmanager
def cold_compile():
    """Inductor's on-disk caches off: compilation runs in full, so a first step's seconds are a cold
    compile whatever ran on the machine before (the `train` stage compiles the same blocks), and its
    pattern passes run, so `attention_rewrites` counts."""
    with inductor_config.patch(fx_graph_cache=False, autotune_local_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        yield


def clear_compile_counters() -> None:
    """Start counting `attention_rewrites` (and the compiler's other counters) from zero."""
    counters.clear()


def attention_rewrites() -> int | None:
    """How many attention forms Inductor has rewritten into PyTorch's fused library kernel since
    `clear_compile_counters` (our attention must stay ours: tests/test_compiled_attention.py); None where
    its pattern passes never ran, because the graphs came from its cache."""
    inductor = counters["inductor"]
    return inductor["fuse_attention"] if inductor["pattern_matcher_count"] else None


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
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {usable_cores()} cores, {torch.get_num_threads()} threads"


# What a kernel or operator does, from its name: the first kind whose patterns it contains. cuBLAS and
# CUTLASS name their matmuls gemm/xmma/nvjet; the compiler names a fused kernel after the ops it holds
# (`triton_per_fused__softmax_native_dropout_3`), so a fused softmax counts as softmax.
KERNEL_KINDS = (
    ("optimizer", ("adam", "multi_tensor_apply")),
    ("matmul", ("gemm", "xmma", "nvjet", "cutlass", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")),
    ("loss", ("log_softmax", "nll_loss", "cross_entropy")),
    ("softmax", ("softmax",)),
    ("dropout", ("dropout", "bernoulli", "philox")),
    ("layer norm", ("layer_norm", "layernorm")),
)


def kernel_kind(name: str) -> str:
    lower = name.lower()
    return next((kind for kind, patterns in KERNEL_KINDS if any(p in lower for p in patterns)), "other")


def gpu_kernel_times(events) -> dict[str, float]:
    """Microseconds per kernel name, from the profiler's GPU events only: the operators' own device
    times would count the same kernels again."""
    from torch.autograd import DeviceType

    times: dict[str, float] = {}
    for e in events:
        if e.device_type == DeviceType.CUDA:
            times[e.name] = times.get(e.name, 0.0) + e.time_range.elapsed_us()
    return times


def time_by_kind(fn, device: torch.device, steps: int = 3, top: int = 12) -> dict:
    """Where `fn`'s time goes, from torch.profiler over `steps` calls (after one untimed call): on a GPU
    the kernels' device time, on a CPU the ATen operators' own time. Per kind (`KERNEL_KINDS`) the
    milliseconds a call and the share; the `top` kernels by name. `wall_ms_per_call` beside the
    attributed `ms_per_call` shows the rest: on a GPU the time it sat idle (launches, host work), on a
    CPU also the fused kernels of a compiled step, which the profiler does not see there."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        wall = time.perf_counter() - t0
    if device.type == "cuda":
        times = gpu_kernel_times(prof.events())
    else:
        times = {e.key: e.self_cpu_time_total for e in prof.key_averages()
                 if e.self_cpu_time_total > 0 and e.key.startswith("aten::")}
    total = sum(times.values())
    kinds: dict[str, float] = {}
    for name, us in times.items():
        kind = kernel_kind(name)
        kinds[kind] = kinds.get(kind, 0.0) + us

    def entry(us):
        return {"ms_per_call": round(us / steps / 1e3, 3), "share": round(us / total, 3)}
    return {"measured": "kernel time on the GPU" if device.type == "cuda" else "operator self time on the CPU",
            "calls": steps, "ms_per_call": round(total / steps / 1e3, 3),
            "wall_ms_per_call": round(wall / steps * 1e3, 3),
            "by_kind": {k: entry(v) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top": [{"name": n[:100], "kind": kernel_kind(n), **entry(v)}
                    for n, v in sorted(times.items(), key=lambda kv: -kv[1])[:top]]}
