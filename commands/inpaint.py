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

from pipeline import holes
from pipeline.config import ConfigError, check_point, cli, run
from pipeline.files import atomic_file, check_writable, save_gif, save_png
from pipeline.pictures import decoding_frames, decoding_picture


def box_from(text: str) -> np.ndarray:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--box {text}: expected four integers X,Y,W,H, e.g. --box 16,16,32,32") from None
    return holes.box(x, y, w, h, f"--box {text}")


def hole_from(a) -> np.ndarray:
    """The one hole the command line gives, bool 64x64."""
    if a.mask:
        hole, warning = holes.mask_file_hole(a.mask, f"--mask {a.mask}")
        if warning:
            print(f"warning: {warning}")
        return hole
    if a.box:
        return box_from(a.box)
    if a.outpaint is not None:
        return holes.border(a.outpaint, f"--outpaint {a.outpaint}")
    return np.ones((holes.SIZE, holes.SIZE), bool)


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
    images = []
    for path in a.images:
        image, note = holes.read_image(path)
        images.append(image)
        if note:
            print(f"inpaint: {note}")
    images = np.stack(images)
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
