"""Draw the iterative decoding of any test images, for a demo: the latent mask and the predicted image at every
iteration, under any schedule, T and sweet spot, from the trained models. Changes no DVC output.

    python -m commands.show 17 42 --schedule square --T 10 [--sweet-spot 3] [-S inpaint.confidence=maskgit]

Writes results/show/<schedule>-T<T>-s<sweet spot>/serial_NNN.png (the strip) and serial_NNN.gif (the animation)
and prints the paths. Each image draws its own
decoding noise (seeded by `inpaint.seed` and its serial), so its pictures are byte for byte those the `inpaint`
stage draws for the serials in `inpaint.picture_serials`.
"""
from __future__ import annotations

import time

import numpy as np

from model.blend import blender

from pipeline.config import check_point, cli, run
from pipeline.decoding import check_serials, decode, load_inputs
from pipeline.files import atomic_file, require, save_gif, save_png
from pipeline.paths import RESULTS, TEST
from pipeline.pictures import decoding_frames
from pipeline.schema import config_name
from pipeline.vqgan_loader import decode_images

SHOWN = RESULTS.parent / "show"


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("serials", type=int, nargs="+", help="test image serial numbers (image_NNN.png)")
        parser.add_argument("--schedule", help="mask schedule (default: the headline `schedule`)")
        parser.add_argument("--T", type=int, help="decoding iterations (default: the headline `T`)")
        parser.add_argument("--sweet-spot", type=int, help="stop after this many iterations (default: `sweet_spot`)")

    cfg, a = cli(__doc__, args, argv)
    schedule = a.schedule or cfg["schedule"]
    T = a.T if a.T is not None else cfg["T"]
    sweet_spot = a.sweet_spot if a.sweet_spot is not None else cfg["sweet_spot"]
    check_point(schedule, T, sweet_spot)
    count = len(np.load(require(TEST / "masked.npy", "prepare"), mmap_mode="r"))  # the header only
    check_serials(a.serials, count, "show")
    serials = list(dict.fromkeys(a.serials))
    t0 = time.time()
    inputs = load_inputs(cfg)
    tokens, pictures = decode(inputs, schedule, T, sweet_spot, serials, serials)
    raw = decode_images(inputs.model.vqgan, tokens, cfg["inpaint"]["batch_size"])
    composite = blender(cfg["inpaint"]["blend"], inputs.mask64[serials])(raw, inputs.masked[serials])
    folder = SHOWN / config_name(schedule, T, sweet_spot)
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(serials):
        picture, masks, steps = pictures[s]
        with atomic_file(folder / f"serial_{s:03d}.png") as tmp:
            save_png(picture, tmp)
        save_gif(decoding_frames(inputs.masked[s], masks, steps, composite[i]), folder / f"serial_{s:03d}.gif")
        print(folder / f"serial_{s:03d}.png")
        print(folder / f"serial_{s:03d}.gif")
    print(f"show: {len(serials)} serial(s) decoded with {schedule}, T={T}, sweet spot {sweet_spot} "
          f"in {time.time() - t0:.1f} s (top row: the latent mask at every iteration; bottom: the predicted image)")


if __name__ == "__main__":
    run(main)
