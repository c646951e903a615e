"""Masks: the lab's pixel-to-token rule, the holes of a generated test set (free-form brush strokes, a box,
an outpainting border, or a mix), and training masks for MVTM."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from model.choices import MASK_KINDS
from model.mask_schedule import mask_schedule

GREY = 128  # a hole pixel's value in a masked image, the lab's


def token_mask_from_pixels(mask64: torch.Tensor) -> torch.Tensor:
    """The lab rule. mask64: (B, 64, 64) with 1 = known, 0 = hole (or 0/255 uint8).

    Average-pool twice with 2x2 windows; a token is masked (True) where the pooled value is not
    exactly 1, i.e. any pixel of its 4x4 patch is a hole. Returns bool (B, 256), row-major.
    """
    m = mask64.float()
    if m.max() > 1:
        m = m / 255.0
    m = F.avg_pool2d(F.avg_pool2d(m[:, None], 2), 2)
    return (m != 1.0).flatten(1)


def brush_masks(n: int, seed: int, size: int = 64, hole_range=(0.15, 0.35)) -> np.ndarray:
    """Free-form random-walk brush holes, lab-style. uint8 (n, size, size): 0 = hole, 255 = known.

    Each mask draws a target hole fraction from `hole_range`, then paints random-walk strokes of
    round brushes until the target is reached.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.full((n, size, size), 255, np.uint8)
    for i in range(n):
        hole = np.zeros((size, size), bool)
        target = rng.uniform(*hole_range) * size * size
        while hole.sum() < target:
            y, x = rng.uniform(8, size - 8, 2)
            angle = rng.uniform(0, 2 * math.pi)
            radius = rng.uniform(2.0, 5.0)
            for _ in range(rng.integers(4, 16)):
                hole |= (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
                if hole.sum() >= target:
                    break
                angle += rng.normal(0, 0.6)
                step = rng.uniform(1.5, 4.0)
                y = float(np.clip(y + step * math.sin(angle), 0, size - 1))
                x = float(np.clip(x + step * math.cos(angle), 0, size - 1))
        out[i][hole] = 0
    return out


def box_hole(x: int, y: int, width: int, height: int, size: int = 64) -> np.ndarray:
    """bool (size, size), True on the rectangle of `width` x `height` pixels whose top-left pixel is (x, y)."""
    hole = np.zeros((size, size), bool)
    hole[y:y + height, x:x + width] = True
    return hole


def border_hole(pixels: int, size: int = 64) -> np.ndarray:
    """bool (size, size), True on the outermost `pixels` rows and columns: outpainting."""
    hole = np.ones((size, size), bool)
    hole[pixels:size - pixels, pixels:size - pixels] = False
    return hole


def _rectangle(rng: np.random.Generator, area: float, size: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a rectangle of about `area` pixels, aspect ratio from 1:2 to 2:1, placed
    uniformly inside the image."""
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    width = int(np.clip(round(np.sqrt(area * aspect)), 1, size))
    height = int(np.clip(round(area / width), 1, size))
    width = int(np.clip(round(area / height), 1, size))  # what the clipped height lost
    return int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1)), width, height


def generated_masks(kind: str, n: int, seed: int, size: int = 64, hole_range=(0.15, 0.35)) -> np.ndarray:
    """n test masks of `kind` (model.choices.MASK_KINDS), uint8 (n, size, size), 0 = hole, 255 = known; each
    draws its hole fraction from `hole_range`. brush: random-walk strokes (`brush_masks`); box: one rectangle
    hole; outpaint: one rectangle known and the rest a hole (a border, or one or two sides); mix: each mask
    one of the three, drawn uniformly."""
    assert kind in MASK_KINDS, kind
    if kind == "brush":
        return brush_masks(n, seed, size, hole_range)
    rng = np.random.default_rng([seed, MASK_KINDS.index(kind)])
    kinds = rng.choice(MASK_KINDS[:3], n) if kind == "mix" else [kind] * n
    out = np.full((n, size, size), 255, np.uint8)
    for i, k in enumerate(kinds):
        fraction = rng.uniform(*hole_range)
        if k == "brush":
            out[i] = brush_masks(1, int(rng.integers(2**31)), size, (fraction, fraction))[0]
        elif k == "box":
            out[i][box_hole(*_rectangle(rng, fraction * size * size, size), size)] = 0
        else:
            out[i][~box_hole(*_rectangle(rng, (1 - fraction) * size * size, size), size)] = 0
    return out


def mvtm_mask(batch: int, num_tokens: int, schedule: str = "cosine", generator=None, device="cpu"):
    """Training masks for masked visual token modelling. Returns bool (batch, num_tokens).

    Per sample r ~ U(0, 1); exactly ceil(γ(r)·num_tokens) tokens, chosen uniformly, are masked
    (at least one, so every sample carries a loss).
    """
    r = torch.rand(batch, generator=generator, device=device)
    n = torch.ceil(mask_schedule(r.double(), schedule) * num_tokens).long().clamp(1, num_tokens)
    scores = torch.rand(batch, num_tokens, generator=generator, device=device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < n[:, None].to(device)


def hole_token_masks(n: int, seed: int, hole_range=(0.15, 0.35)) -> torch.Tensor:
    """n token masks (bool (n, 256)) of lab-style brush holes, by the lab rule: the test set's kind."""
    return token_mask_from_pixels(torch.from_numpy(brush_masks(n, seed, hole_range=hole_range)))
