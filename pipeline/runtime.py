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


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision on the CPU."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
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
