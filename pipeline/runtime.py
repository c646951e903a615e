"""Where and how a stage runs: the device, the cores, the seeds, the precision and regional compilation."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every stage runs fixed shapes: pick the fastest kernels once
    return device


def usable_cores() -> int:
    """The cores this process may run on: a container or `taskset` may allow fewer than the host has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower
    than fp32."""
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(device: torch.device, precision: str) -> str:
    """bf16 or fp32, from the `precision` parameter: auto takes bf16 on CUDA and on CPUs with native bf16,
    fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" or (device.type == "cpu" and native_bf16()) else "fp32"
    return precision


def autocast_for(device: torch.device, precision: str):
    """A context factory: bf16 autocast where `resolve_precision` says bf16, else full precision. Matmuls and
    convolutions run in bf16; norms, softmax statistics and losses stay fp32 (autocast's lists)."""
    if resolve_precision(device, precision) == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def compile_blocks(model: torch.nn.Module, block_types: tuple, backend="inductor") -> None:
    """Regional compilation: torch.compile each block of `block_types` in `model` in place (state_dict
    keys unchanged). Blocks of one shape share one compiled graph, so compilation takes a fraction of a
    whole-model compile, at the price of the fusions across blocks. Run the model under
    `torch.compiler.set_stance("force_eager")` where it should not compile (other shapes, evaluation)."""
    # Dynamo keeps 8 graphs per function by default; the lab's VQGAN has 9 residual-block shapes, and its
    # decoder-only phase (vqgan.decoder_only_from) adds a gradient-free graph for the encoder's 7.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    for block in model.modules():
        if isinstance(block, block_types):
            block.compile(backend=backend, dynamic=False)
