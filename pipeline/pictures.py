"""The pictures a report shows: grids of images, and the decoding of one image step by step, as a strip and as
the frames of an animation."""
from __future__ import annotations

import numpy as np


def image_grid(rows: list[np.ndarray], pad: int = 2, fill: int = 255) -> np.ndarray:
    """rows: list of uint8 (N, H, W, 3) of equal N → one uint8 picture, a row each."""
    n, h, w, _ = rows[0].shape
    out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), fill, np.uint8)
    for r, row in enumerate(rows):
        for i, img in enumerate(row):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            out[y:y + h, x:x + w] = img
    return out


def upscale_mask(mask: np.ndarray, size: int = 64) -> np.ndarray:
    """A 16x16 token mask as a size x size picture: black = masked, light grey = known."""
    side = int(np.sqrt(mask.size))
    img = np.where(mask.reshape(side, side), 0, 210).astype(np.uint8)
    img = img.repeat(size // side, 0).repeat(size // side, 1)
    return np.repeat(img[..., None], 3, axis=2)


def decoding_picture(masked, gt, masks, step_images) -> np.ndarray:
    """Row 1: masked input, then the latent mask before step 1 … after the last step.
    Row 2: ground truth (or the input again), then the predicted image at every step, then blank."""
    top = [masked] + [upscale_mask(m) for m in masks]
    blank = np.full_like(masked, 255)
    bottom = [gt if gt is not None else masked] + list(step_images) + [blank]
    grid = image_grid([np.stack(top), np.stack(bottom)])
    return grid.repeat(2, 0).repeat(2, 1)  # 2x, nearest: readable at a glance


def decoding_frames(masked, masks, step_images, final=None) -> list[np.ndarray]:
    """The decoding as frames of [input | latent mask | image], at 2x: the mask before step 1 beside the input,
    then the mask after each step beside the image predicted at that step, then (`final`, e.g. the composite)
    beside the last mask."""
    images = [masked] + list(step_images) + ([] if final is None else [final])
    masks = list(masks) + ([masks[-1]] if final is not None else [])
    return [image_grid([np.stack([masked, upscale_mask(m), image])]).repeat(2, 0).repeat(2, 1)
            for m, image in zip(masks, images)]
