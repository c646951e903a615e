"""Procedural 64x64 "cat faces": the built-in dataset, so the pipeline runs with no data at all.

Each face is symmetric (ears, eyes, whisker pads mirror each other) with random colours, sizes and
backgrounds, so a hole over one eye can be filled by looking at the other: inpainting is learnable
and a wrong fill is visible at a glance.
"""
from __future__ import annotations

import numpy as np


# Cat-like fur and iris colours (RGB in [0, 1]); each face jitters one of them.
FUR = np.array([[0.92, 0.90, 0.86], [0.16, 0.15, 0.15], [0.88, 0.56, 0.25], [0.56, 0.50, 0.44],
                [0.62, 0.62, 0.64], [0.45, 0.31, 0.20], [0.80, 0.72, 0.58]], np.float32)
IRIS = np.array([[0.55, 0.75, 0.25], [0.85, 0.75, 0.20], [0.35, 0.60, 0.85], [0.80, 0.55, 0.15]], np.float32)


def _uniform(rng, lo, hi, n):
    return rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)


def _paint(img, region, colour):
    """img (B,H,W,3); region (B,H,W) in [0,1]; colour (B,1,1,3)."""
    img += region[..., None] * (colour - img)
    return img


def _soft(d):
    """Anti-aliased inside test: d is a signed distance-like value, inside where d < 0."""
    return np.clip(0.5 - d * 1.5, 0.0, 1.0)


def synthetic_faces(n: int, seed: int, size: int = 64) -> np.ndarray:
    """`n` faces as uint8 (n, size, size, 3), identical for the same seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) * (64.0 / size)
    yy, xx = yy[None], xx[None]

    def colour(lo=0.0, hi=1.0):
        return rng.uniform(lo, hi, size=(n, 1, 1, 3)).astype(np.float32)

    def palette(table, jitter):
        pick = table[rng.integers(0, len(table), n)][:, None, None, :]
        return np.clip(pick + rng.uniform(-jitter, jitter, size=(n, 1, 1, 3)).astype(np.float32), 0, 1)

    # Background: a vertical gradient between two muted random colours.
    grey = rng.uniform(0.3, 0.8, size=(n, 1, 1, 1)).astype(np.float32)
    top, bottom = 0.5 * colour() + 0.5 * grey, 0.5 * colour() + 0.5 * grey
    t = (yy / 63.0)[..., None]
    img = top * (1 - t) + bottom * t

    cx, cy = _uniform(rng, 29, 35, n), _uniform(rng, 33, 39, n)
    rx, ry = _uniform(rng, 17, 24, n), _uniform(rng, 14, 20, n)
    fur = palette(FUR, 0.08)
    inner_ear = np.clip(fur * 0.6 + np.array([0.5, 0.3, 0.35], np.float32) * 0.4, 0, 1)

    # Ears: two mirrored triangles above the head.
    ear_dx, ear_w, ear_h = _uniform(rng, 8, 14, n), _uniform(rng, 6, 10, n), _uniform(rng, 10, 17, n)
    for side in (-1, 1):
        ex = cx + side * ear_dx
        base = cy - ry * 0.55
        height = np.clip((base - yy) / ear_h, 0, None)
        inside = (yy <= base) & (yy >= base - ear_h) & (np.abs(xx - ex) <= ear_w * (1 - height))
        img = _paint(img, inside.astype(np.float32), fur)
        inner = (yy <= base) & (yy >= base - ear_h * 0.7) & (np.abs(xx - ex) <= ear_w * 0.5 * (1 - height))
        img = _paint(img, inner.astype(np.float32), inner_ear)

    head = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 - 1
    img = _paint(img, _soft(head * 8), fur)

    # Optional stripe pattern on the forehead, mirrored by construction.
    stripes = rng.random((n, 1, 1)) < 0.5
    stripe = (np.abs(np.sin((xx - cx) * 0.6)) < 0.25) & (yy < cy - ry * 0.3) & (head < 0)
    img = _paint(img, (stripe & stripes).astype(np.float32) * 0.6, fur * 0.5)

    # Eyes: mirrored ellipses with an iris colour and a vertical pupil.
    eye_dx, eye_y = _uniform(rng, 6, 10, n), cy - _uniform(rng, 1, 6, n)
    eye_r = _uniform(rng, 2.5, 4.5, n)
    iris = palette(IRIS, 0.1)
    pupil_w = _uniform(rng, 0.3, 0.9, n)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        eye = ((xx - ex) / eye_r) ** 2 + ((yy - eye_y) / (eye_r * 0.8)) ** 2 - 1
        img = _paint(img, _soft(eye * 3), iris)
        pupil = ((xx - ex) / (eye_r * pupil_w * 0.5)) ** 2 + ((yy - eye_y) / (eye_r * 0.75)) ** 2 - 1
        img = _paint(img, _soft(pupil * 2), np.zeros((n, 1, 1, 3), np.float32))

    # Muzzle: two mirrored pads, a nose and a mouth line.
    pad = np.clip(fur * 0.4 + 0.6, 0, 1)
    pad_y = cy + ry * 0.35
    for side in (-1, 1):
        m = ((xx - (cx + side * 3)) / 3.8) ** 2 + ((yy - pad_y) / 3.0) ** 2 - 1
        img = _paint(img, _soft(m * 3) * 0.8, pad)
    nose_y = pad_y - 3.0
    nose = (np.abs(xx - cx) <= (yy - (nose_y - 2.0)) * 0.9) & (yy <= nose_y + 0.5)
    img = _paint(img, nose.astype(np.float32), colour(0.7, 1.0) * np.array([0.9, 0.5, 0.55], np.float32))
    mouth = (np.abs(yy - (pad_y + 2.5) - 0.08 * (xx - cx) ** 2) < 0.6) & (np.abs(xx - cx) < 4)
    img = _paint(img, mouth.astype(np.float32), fur * 0.3)

    img += 0.015 * rng.standard_normal(size=img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
