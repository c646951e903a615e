"""Resumable training: a checkpoint of a run's whole state, its random generators included, keyed by the
settings the run depends on, and when to save it."""
from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.files import save_torch
from pipeline.paths import CHECKPOINTS


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
