"""Putting generated pixels into the holes of the input: plain pasting or Poisson blending.

The VQGAN's decode is close to the input but not equal to it (stage 1 is lossy, and a fill predicted by
stage 2 may be off in colour), so pasting the decoded holes into the input leaves a seam wherever the two
disagree. Poisson blending (Pérez, Gangnet and Blake, "Poisson image editing", 2003) keeps the generated
image's gradients inside each hole and the input's values around it: it adds to the generated pixels the
smooth correction h with Δh = 0 on the hole pixels and h = input − generated on the known pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from model.choices import BLENDS

_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def paste(generated: np.ndarray, known: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Generated pixels in the holes (mask == 0), the input's own pixels everywhere else."""
    return np.where((mask == 0)[..., None], generated, known)


@dataclass
class HoleSystem:
    """Δh = 0 on one image's hole pixels with h given elsewhere, ready to solve for any h given."""
    ys: np.ndarray
    xs: np.ndarray
    laplacian: spla.SuperLU | None  # the hole's 5-point Laplacian, factorised; None when nothing is known
    border: sp.csr_matrix           # (hole pixels, H*W): adds up each hole pixel's known neighbours


def hole_system(hole: np.ndarray) -> HoleSystem:
    """The linear system of one hole mask (H, W) bool. A neighbour outside the image is left out (a
    zero-flux border), so every hole that touches a known pixel has one solution."""
    ys, xs = np.nonzero(hole)
    n, (height, width) = len(ys), hole.shape
    index = np.full(hole.shape, -1)
    index[ys, xs] = np.arange(n)
    degree = np.zeros(n)
    inner_rows, inner_cols, border_rows, border_cols = [], [], [], []
    for dy, dx in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        degree += inside
        ny, nx, k = ny[inside], nx[inside], np.nonzero(inside)[0]
        in_hole = hole[ny, nx]
        inner_rows.append(k[in_hole])
        inner_cols.append(index[ny[in_hole], nx[in_hole]])
        border_rows.append(k[~in_hole])
        border_cols.append(ny[~in_hole] * width + nx[~in_hole])
    border_rows, border_cols = np.concatenate(border_rows), np.concatenate(border_cols)
    border = sp.csr_matrix((np.ones(len(border_rows)), (border_rows, border_cols)), shape=(n, height * width))
    if n == 0 or n == hole.size:
        return HoleSystem(ys, xs, None, border)
    inner_rows, inner_cols = np.concatenate(inner_rows), np.concatenate(inner_cols)
    laplacian = sp.csc_matrix(
        (np.concatenate([degree, -np.ones(len(inner_rows))]),
         (np.concatenate([np.arange(n), inner_rows]), np.concatenate([np.arange(n), inner_cols]))), shape=(n, n))
    return HoleSystem(ys, xs, spla.splu(laplacian), border)


def harmonic_correction(offset: np.ndarray, hole: np.ndarray, system: HoleSystem | None = None) -> np.ndarray:
    """h (H, W, C), float64: harmonic on the hole pixels, equal to `offset` on every other pixel
    (zero everywhere when the whole image is a hole)."""
    system = system or hole_system(hole)
    h = np.where(hole[..., None], 0.0, offset)  # float64 whatever offset's dtype
    if system.laplacian is not None:
        rhs = system.border @ h.reshape(hole.size, -1)
        h[system.ys, system.xs] = system.laplacian.solve(rhs)
    return h


class PoissonBlend:
    """Poisson blending into fixed holes, mask (N, H, W) with 0 = hole. Each hole's Laplacian is
    factorised once, here, for every set of generated images blended into the same test set."""

    def __init__(self, mask: np.ndarray):
        self.holes = mask == 0
        self.systems = [hole_system(hole) for hole in self.holes]

    def __call__(self, generated: np.ndarray, known: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) images → the composites, known pixels untouched."""
        out = known.copy()
        for i, (gen, img, hole, system) in enumerate(zip(generated, known, self.holes, self.systems)):
            offset = img.astype(np.float64) - gen
            blended = gen + harmonic_correction(offset, hole, system)
            out[i][hole] = np.clip(np.rint(blended[hole]), 0, 255)
        return out


def blender(name: str, mask: np.ndarray):
    """`name` (model.choices.BLENDS) for the masks (N, H, W): a function (generated, known) → composites."""
    assert name in BLENDS, name
    if name == "poisson":
        return PoissonBlend(mask)
    return lambda generated, known: paste(generated, known, mask)
