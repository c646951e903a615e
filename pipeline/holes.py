"""A user's image and hole, as the `inpaint` command and the page take them: any image file made 64x64 as
`prepare` makes a folder's images, and a hole from a mask image, a box, a border or the whole image. Each check
raises a ConfigError whose message starts with `what` (a flag, or the page's field)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from model.masking import border_hole, box_hole
from pipeline import sources
from pipeline.config import ConfigError

SIZE = 64


def centre_square(array: np.ndarray) -> np.ndarray:
    h, w = array.shape[:2]
    s = min(h, w)
    return array[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """An image file as 64x64 RGB (`prepare`'s decoding, centre crop and resize), and a note of the crop when one
    was made; or a ConfigError naming the file."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: image file not found")
    try:
        image, _ = sources.decode_image(Path(path))
    except ValueError as e:
        raise ConfigError(f"{path}: {e}; expected an image Pillow reads (PNG, JPEG, …), at least "
                          f"{sources.MIN_SIDE}x{sources.MIN_SIDE}") from None
    h, w = image.shape[:2]
    note = None if (h, w) == (SIZE, SIZE) else (f"{path} is {w}x{h}: centre-cropped to {min(h, w)}x{min(h, w)} and "
                                                 "resized to 64x64")
    return sources.to_64(image), note


def painted_hole(known: np.ndarray, what: str) -> np.ndarray:
    """bool 64x64 from a square picture of any size, False (0) = hole: centre-cropped, resized by nearest
    neighbour, and refused without a hole."""
    picture = Image.fromarray(np.where(centre_square(known), 255, 0).astype(np.uint8))
    hole = np.asarray(picture.resize((SIZE, SIZE), Image.Resampling.NEAREST)) == 0
    if not hole.any():
        raise ConfigError(f"{what}: no hole (no pixel below 128 once resized to 64x64); expected black where the "
                          "image is to be generated and white where it is kept")
    return hole


def mask_file_hole(path: Path, what: str) -> tuple[np.ndarray, str | None]:
    """The hole of a mask image, black (below 128) = hole, and a warning where some pixels were grey."""
    grey = sources.decode_grey(Path(path))
    odd = int(((grey != 0) & (grey != 255)).sum())
    warning = None if not odd else (f"{what}: {odd} of {grey.size} pixels were neither black nor white; "
                                    "thresholded at 128 (below: hole)")
    return painted_hole(grey >= 128, what), warning


def box(x: int, y: int, w: int, h: int, what: str) -> np.ndarray:
    if min(w, h) < 1 or min(x, y) < 0 or x + w > SIZE or y + h > SIZE:
        raise ConfigError(f"{what}: outside the 64x64 image; expected X, Y from 0, W, H from 1, and X+W, Y+H at "
                          "most 64")
    return box_hole(x, y, w, h, SIZE)


def border(pixels: int, what: str) -> np.ndarray:
    if not 1 <= pixels <= SIZE // 2 - 1:
        raise ConfigError(f"{what}: expected a border of 1 to {SIZE // 2 - 1} pixels")
    return border_hole(pixels, SIZE)
