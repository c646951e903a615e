"""What the two training stages share: resumable checkpoints, precision, batches, logs, grids."""
from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from model.vqgan import VQGAN, NonLocalBlock, ResidualBlock
from model.vqgan_training import generator_features, generator_forward
from stages.common import atomic_file, save_torch
from stages.config import ConfigError

CHECKPOINTS = Path("checkpoints")


def run_id(*parts) -> str:
    """A short hash of the settings a run depends on: a checkpoint only resumes the same run."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoint_path(stage: str, *parts) -> Path:
    return CHECKPOINTS / f"{stage}-{run_id(*parts)}.pt"


class CheckpointClock:
    """When a training loop saves its resumable checkpoint: every `every` steps, once at half-way, and
    whenever `minutes` have passed since the last one, so that a killed run loses little work whatever its
    step budget. Not after the last step: the stage's outputs follow it."""

    def __init__(self, every: int, minutes: float, total: int):
        self.every, self.seconds, self.total = every, minutes * 60, total
        self.last = time.monotonic()

    def due(self, done: int) -> bool:
        """Whether to save after `done` steps; call once a step."""
        now = time.monotonic()
        if done >= self.total or not (done % self.every == 0 or done == self.total // 2
                                      or now - self.last >= self.seconds):
            return False
        self.last = now
        return True


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state) -> None:
    save_torch({**state, "rng": rng_state()}, path)


def load_checkpoint(path: Path, device) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=False)  # our own file, with RNG states
    set_rng_state(state["rng"])
    print(f"resuming from {path} at step {state['step']}")
    return state


def warmup_cosine(warmup: int, total: int, floor: float = 0.1):
    """Learning-rate factor for LambdaLR: linear warm-up over `warmup` steps, then cosine decay to
    `floor` of the peak at step `total`. Both stages end a short budget at a low rate."""
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


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


def compile_generator(model: VQGAN, backend="inductor", regional: bool = False, gradient: str = "straight_through"):
    """torch.compile (with `backend`, a name or a backend callable) of the stage-1 generator, all but
    the decoder's last conv: a callable with `generator_forward`'s signature ((images, quantize) ->
    decoded, indices, loss).

    The adaptive GAN weight takes gradients at that conv's weight. Inside the compiled graph each of
    them would run the whole generator's backward (a compiled backward computes every gradient at
    once), three backwards a step; outside it, they cost one small conv.

    `regional` compiles each residual and attention block instead (`compile_blocks`; CPU, quarter width:
    38 s against 89 s)."""
    if regional:
        compile_blocks(model, (ResidualBlock, NonLocalBlock), backend)
        return functools.partial(generator_forward, model, gradient=gradient)

    @torch.compile(backend=backend)
    def body(x, quantize):
        return generator_features(model, x, quantize, gradient)

    def forward(x, quantize):
        h, indices, q_loss = body(x, quantize)
        return model.last_layer(h), indices, q_loss
    return forward


def require(path: Path, stage: str) -> Path:
    """`path`, or a clear error saying which stage makes it."""
    if not path.exists():
        raise ConfigError(f"{path} not found: run the `{stage}` stage first (dvc repro, or python -m stages.{stage})")
    return path


def load_array(path: Path, stage: str) -> np.ndarray:
    return np.load(require(path, stage))


def write_log_csv(rows: list[dict], path: Path) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def image_grid(rows: list[np.ndarray], pad: int = 2, fill: int = 255) -> np.ndarray:
    """rows: list of uint8 (N, H, W, 3) of equal N → one uint8 picture, a row each."""
    n, h, w, _ = rows[0].shape
    out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), fill, np.uint8)
    for r, row in enumerate(rows):
        for i, img in enumerate(row):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            out[y:y + h, x:x + w] = img
    return out
