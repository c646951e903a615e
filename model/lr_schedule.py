"""The learning-rate schedule both training stages use."""
from __future__ import annotations

import math


def warmup_cosine(warmup: int, total: int, floor: float = 0.1):
    """Learning-rate factor for LambdaLR: linear warm-up over `warmup` steps, then cosine decay to
    `floor` of the peak at step `total`. Both stages end a short budget at a low rate."""
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
