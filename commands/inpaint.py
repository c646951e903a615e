"""Inpaint your own images with the trained models: any image Pillow reads, any hole.

    python -m commands.inpaint cat.jpg other.png --box 16,16,32,32 --out inpainted/
    python -m commands.inpaint cat.jpg --mask hole.png | --outpaint 8 | --all [--schedule square --T 12
        --sweet-spot 0] [--models models] [-S inpaint.order=halton]

Each image is centre-cropped to a square and resized to 64x64, as `prepare` does for a folder of images. The
hole is a mask image (black = hole, white = known, as the lab's mask64; centre-cropped and resized by nearest
neighbour; grey thresholded at 128), a box X,Y,W,H in the 64x64 image's pixels, a border of that many pixels
(outpainting), or the whole image (--all: generation from nothing). A token is generated where any pixel of
its 4x4 patch is a hole (the lab's rule). For each image NAME it writes, in --out: NAME_input.png (the
64x64 input, its hole grey), NAME_composite.png (the decoded hole blended into the input), NAME_raw.png (the
VQGAN's decode of every token), NAME_decoding.png (the latent mask and the predicted image at every
iteration) and NAME_decoding.gif (the same, animated).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from model.masking import border_hole, box_hole
from pipeline import sources
from pipeline.config import ConfigError, check_point, cli, run
from pipeline.files import atomic_file, check_writable, save_gif, save_png
from pipeline.pictures import decoding_frames, decoding_picture

SIZE = 64


def centre_square(array: np.ndarray) -> np.ndarray:
    h, w = array.shape[:2]
    s = min(h, w)
    return array[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def read_image(path: Path) -> np.ndarray:
    """An image file as 64x64 RGB (`prepare`'s centre crop and resize), or a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{path}: image file not found")
    try:
        image, _ = sources.decode_image(path)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}; expected an image Pillow reads (PNG, JPEG, …), at least "
                          f"{sources.MIN_SIDE}x{sources.MIN_SIDE}") from None
    h, w = image.shape[:2]
    if (h, w) != (SIZE, SIZE):
        print(f"inpaint: {path} is {w}x{h}: centre-cropped to {min(h, w)}x{min(h, w)} and resized to 64x64")
    return sources.to_64(image)


def mask_file_hole(path: Path) -> np.ndarray:
    """The hole of a mask image: black (below 128) = hole, centre-cropped and resized by nearest neighbour."""
    grey = sources.decode_grey(path)
    odd = int(((grey != 0) & (grey != 255)).sum())
    if odd:
        print(f"warning: --mask {path}: {odd} of {grey.size} pixels were neither black nor white; thresholded "
              "at 128 (below: hole)")
    known = Image.fromarray(np.where(centre_square(grey) < 128, 0, 255).astype(np.uint8))
    hole = np.asarray(known.resize((SIZE, SIZE), Image.Resampling.NEAREST)) == 0
    if not hole.any():
        raise ConfigError(f"--mask {path}: no hole (no pixel below 128 once resized to 64x64); expected black "
                          "where the image is to be generated and white where it is kept")
    return hole


def box_from(text: str) -> np.ndarray:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--box {text}: expected four integers X,Y,W,H, e.g. --box 16,16,32,32") from None
    if min(w, h) < 1 or min(x, y) < 0 or x + w > SIZE or y + h > SIZE:
        raise ConfigError(f"--box {text}: outside the 64x64 image; expected X, Y from 0, W, H from 1, and X+W, "
                          "Y+H at most 64")
    return box_hole(x, y, w, h, SIZE)


def hole_from(a) -> np.ndarray:
    """The one hole the command line gives, bool 64x64."""
    if a.mask:
        return mask_file_hole(a.mask)
    if a.box:
        return box_from(a.box)
    if a.outpaint is not None:
        if not 1 <= a.outpaint <= SIZE // 2 - 1:
            raise ConfigError(f"--outpaint {a.outpaint}: expected a border of 1 to {SIZE // 2 - 1} pixels")
        return border_hole(a.outpaint, SIZE)
    return np.ones((SIZE, SIZE), bool)


def names_of(paths: list[Path]) -> list[str]:
    """Each image's output name, its file's stem, numbered where two stems are the same."""
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}-{i}" for i, s in enumerate(stems)]


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("images", type=Path, nargs="+", help="image files")
        hole = parser.add_mutually_exclusive_group(required=True)
        hole.add_argument("--mask", type=Path, help="a mask image: black = hole, white = known")
        hole.add_argument("--box", metavar="X,Y,W,H", help="a rectangular hole, in the 64x64 image's pixels")
        hole.add_argument("--outpaint", type=int, metavar="PIXELS", help="a border of this many pixels")
        hole.add_argument("--all", action="store_true", help="every token: generation from nothing")
        parser.add_argument("--out", type=Path, required=True, help="folder for the results")
        parser.add_argument("--models", type=Path, default=Path("models"),
                            help="folder of the trained vqgan/ and transformer/ (default: models)")
        parser.add_argument("--schedule", help="mask schedule (default: the headline `schedule`)")
        parser.add_argument("--T", type=int, help="decoding iterations (default: the headline `T`)")
        parser.add_argument("--sweet-spot", type=int, help="stop after this many iterations (default: `sweet_spot`)")

    t0 = time.time()
    cfg, a = cli(__doc__, args, argv)
    schedule = a.schedule or cfg["schedule"]
    T = a.T if a.T is not None else cfg["T"]
    sweet_spot = a.sweet_spot if a.sweet_spot is not None else cfg["sweet_spot"]
    check_point(schedule, T, sweet_spot)
    hole = hole_from(a)
    images = np.stack([read_image(p) for p in a.images])
    names = names_of(a.images)
    check_writable(*(a.out / f"{n}_input.png" for n in names))

    from pipeline.inpainter import Inpainter  # here: torch and the models load only once the input is good

    model = Inpainter.load(a.models, cfg=cfg)
    loaded = time.time()
    out = model.inpaint(images, np.repeat(hole[None], len(images), axis=0), schedule, T, sweet_spot)
    for i, name in enumerate(names):
        strip = decoding_picture(out.masked[i], None, out.token_masks[:, i], out.steps[:, i])
        for suffix, picture in (("input", out.masked[i]), ("composite", out.composite[i]), ("raw", out.raw[i]),
                                ("decoding", strip)):
            with atomic_file(a.out / f"{name}_{suffix}.png") as tmp:
                save_png(picture, tmp)
        save_gif(decoding_frames(out.masked[i], out.token_masks[:, i], out.steps[:, i], out.composite[i]),
                 a.out / f"{name}_decoding.gif")
        print(f"{a.out / name}_composite.png  (and _input, _raw, _decoding .png, _decoding.gif)")
    masked_tokens = int(out.token_masks[0, 0].sum())
    print(f"inpaint: {len(names)} image(s), {masked_tokens} of 256 tokens masked, {schedule}, T={T}, sweet spot "
          f"{sweet_spot}: {loaded - t0:.1f} s to read the input and load the models, {time.time() - loaded:.1f} s to decode "
          "and write (`python -m bench.inpaint_command` times it all, Python's start included)")


if __name__ == "__main__":
    run(main)
