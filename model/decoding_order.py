"""The Halton decoding order (Besnier et al., "Halton Scheduler for Masked Generative Image Transformer",
ICLR 2025): instead of committing the most confident tokens, each step commits the masked positions that a
2-D Halton sequence reaches first, so the tokens a step reveals are spread evenly over the grid and no two
neighbours are committed together early on."""
from __future__ import annotations

import torch


def radical_inverse(i: int, base: int) -> float:
    """i's digits in `base` mirrored about the radix point: 1 → 1/2, 2 → 1/4, 3 → 3/4 … in base 2."""
    value, scale = 0.0, 1.0
    while i:
        i, digit = divmod(i, base)
        scale /= base
        value += digit * scale
    return value


def halton_order(side: int) -> torch.Tensor:
    """Every position of a side x side grid (row-major index), in the order the Halton points i = 1, 2, …
    (x in base 2, y in base 3) first fall in its cell."""
    order, seen, i = [], set(), 0
    while len(order) < side * side:
        i += 1
        cell = int(radical_inverse(i, 3) * side) * side + int(radical_inverse(i, 2) * side)
        if cell not in seen:
            seen.add(cell)
            order.append(cell)
    return torch.tensor(order)


def halton_priority(num_tokens: int) -> torch.Tensor:
    """(num_tokens,) float: higher for a position the Halton order reaches earlier, as decoding ranks its
    confidences (the highest is committed first)."""
    side = int(round(num_tokens ** 0.5))
    priority = torch.empty(num_tokens)
    priority[halton_order(side)] = -torch.arange(num_tokens, dtype=torch.float)
    return priority
