"""The mask schedule γ(r): the fraction of tokens still masked at progress r in [0, 1].

γ(0) = 1 (everything masked) and γ(1) = 0. The lab uses `cosine`, `linear` and `square`; the MaskGIT
paper's code adds `pow<k>` (1 − r^k), `log` and `exp`.
"""
from __future__ import annotations

import math

import torch

from model.choices import POWER_SCHEDULE, is_schedule


def mask_schedule(r, name: str = "cosine"):
    """γ(r) for a float or a tensor r in [0, 1]; `name` one of model.choices' schedules."""
    assert is_schedule(name), name
    t = torch.as_tensor(r, dtype=torch.float64)
    if name == "cosine":
        g = torch.cos(t * math.pi / 2)
    elif name == "linear":
        g = 1 - t
    elif name == "square":
        g = 1 - t**2
    elif name == "cubic":
        g = 1 - t**3
    elif name == "sqrt":
        g = 1 - torch.sqrt(t)
    elif name == "log":
        g = -torch.log2(t + 1) + 1
    elif name == "exp":
        g = 1 - (torch.exp(t) - 1) / (math.e - 1)
    else:
        g = 1 - t ** float(POWER_SCHEDULE.fullmatch(name).group(1))
    g = g.clamp(0.0, 1.0)
    return g.item() if g.ndim == 0 and not isinstance(r, torch.Tensor) else g
