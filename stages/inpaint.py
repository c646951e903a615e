"""Stage `inpaint`: iterative decoding of the whole test set for one configuration.

`python -m stages.inpaint` runs the headline configuration (top-level `schedule`, `T`, `sweet_spot`)
into results/inpaint/headline/; `--schedule S --T N --sweet-spot K` runs one point of the sweep into
results/inpaint/S-TN-sK/; `--sweep` runs every point of the `sweep` grid in one process (models loaded
once), `--sweep --headline` the headline too (what `run_all` uses). Each folder gets raw/image_000.png …
(the VQGAN decode), composite/image_000.png … (the decoded holes put into the input as `inpaint.blend`
says), raw.npy, composite.npy, tokens.npy, pictures/serial_NNN.png and .gif (the latent mask and the predicted
image at every iteration, as a strip and as an animation) and summary.json.
"""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import torch

from pipeline.config import check_point, cli, run
from pipeline.schema import config_name, headline_point, sweep_points
from pipeline.decoding import DecodeInputs, check_serials, decode, load_inputs
from pipeline.files import atomic_dir, check_writable, save_gif, save_json, save_numbered_pngs, save_png, write_resolved
from pipeline.paths import RESULTS
from pipeline.pictures import decoding_frames
from pipeline.runtime import resolve_precision
from pipeline.vqgan_loader import decode_images


def warm_up(inputs: DecodeInputs, batch_size: int) -> None:
    """Untimed passes at every batch shape on a GPU, so no configuration's time holds the warm-up."""
    n, model = len(inputs.masked_tokens), inputs.model
    for size in {min(batch_size, n), n % batch_size or batch_size}:
        with torch.inference_mode(), model.autocast():
            model.transformer(inputs.masked_tokens[:size])
        decode_images(model.vqgan, inputs.masked_tokens[:size], batch_size)


def stage_of(name: str) -> str:
    """The dvc.yaml stage that writes the folder `name`."""
    return "inpaint_headline" if name == "headline" else "inpaint"


def inpaint(cfg: dict, inputs: DecodeInputs, schedule: str, T: int, sweet_spot: int, name: str) -> dict:
    p, device, masked = cfg["inpaint"], inputs.model.device, inputs.masked
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    tokens, pictures = decode(inputs, schedule, T, sweet_spot, list(range(len(masked))), p["picture_serials"])
    raw = decode_images(inputs.model.vqgan, tokens, p["batch_size"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = {"decode": time.time() - t0}
    t0 = time.time()
    comp = inputs.blend(raw, masked)
    seconds["composite"], t0 = time.time() - t0, time.time()

    with atomic_dir(RESULTS / name) as out:
        for folder, images in (("raw", raw), ("composite", comp)):
            (out / folder).mkdir()
            save_numbered_pngs(images, out / folder, "image")
        np.save(out / "raw.npy", raw)
        np.save(out / "composite.npy", comp)
        np.save(out / "tokens.npy", tokens.cpu().numpy().astype(np.int16))
        (out / "pictures").mkdir()
        for s, (picture, masks, steps) in pictures.items():
            save_png(picture, out / "pictures" / f"serial_{s:03d}.png")
            save_gif(decoding_frames(masked[s], masks, steps, comp[s]), out / "pictures" / f"serial_{s:03d}.gif")
        seconds["write"] = time.time() - t0
        # decode_seconds times the decoding and its pictures; the other *_seconds say where the rest goes
        summary = {"name": name, "schedule": schedule, "T": T, "sweet_spot": sweet_spot,
                   "steps_run": sweet_spot or T, "images": len(raw), "decode_seconds": round(seconds["decode"], 3),
                   "images_per_s": round(len(raw) / seconds["decode"], 1), "device": str(device),
                   "precision": resolve_precision(device, cfg["precision"]),
                   "primary": "composite" if p["composite"] else "raw",
                   **{f"{k}_seconds": round(v, 3) for k, v in seconds.items() if k != "decode"}}
        save_json(summary, out / "summary.json")
        write_resolved({**cfg, "schedule": schedule, "T": T, "sweet_spot": sweet_spot}, out)
        inputs.lineage.write(out, RESULTS / name, stage_of(name))
    return summary


def copy_point(inputs: DecodeInputs, source: str, name: str) -> dict:
    """The headline when it is a sweep point already decoded in this process: the same decode (same
    seed and inputs), so its folder is copied instead of decoded twice."""
    with atomic_dir(RESULTS / name) as out:
        shutil.copytree(RESULTS / source, out, dirs_exist_ok=True)
        summary = {**json.loads((out / "summary.json").read_text()), "name": name}
        save_json(summary, out / "summary.json")
        inputs.lineage.write(out, RESULTS / name, stage_of(name))
    return summary


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("--schedule", help="a sweep point's schedule (default: the headline `schedule`)")
        parser.add_argument("--T", type=int, help="a sweep point's T (default: the headline `T`)")
        parser.add_argument("--sweet-spot", type=int, help="a sweep point's sweet spot (default: `sweet_spot`)")
        parser.add_argument("--sweep", action="store_true", help="every point of the `sweep` grid in one process")
        parser.add_argument("--headline", action="store_true",
                            help="with --sweep: the headline too, in the same process (what run_all uses)")

    cfg, a = cli(__doc__, args, argv)
    if a.sweep:
        points = sweep_points(cfg) + ([headline_point(cfg)] if a.headline else [])
    elif a.schedule is None and a.T is None and a.sweet_spot is None:
        points = [headline_point(cfg)]
    else:
        schedule = a.schedule or cfg["schedule"]
        T = a.T if a.T is not None else cfg["T"]
        sweet_spot = a.sweet_spot if a.sweet_spot is not None else cfg["sweet_spot"]
        check_point(schedule, T, sweet_spot)
        points = [(schedule, T, sweet_spot, config_name(schedule, T, sweet_spot))]
    check_writable(*(RESULTS / name for *_, name in points))
    t0 = time.time()
    inputs = load_inputs(cfg)
    check_serials(cfg["inpaint"]["picture_serials"], len(inputs.masked), "inpaint.picture_serials")
    if inputs.model.device.type == "cuda":
        warm_up(inputs, cfg["inpaint"]["batch_size"])
    print(f"inpaint: models and test inputs loaded in {time.time() - t0:.1f} s")
    done = {}
    for schedule, T, sweet_spot, name in points:
        if (schedule, T, sweet_spot) in done:
            summary = copy_point(inputs, done[schedule, T, sweet_spot], name)
        else:
            summary = inpaint(cfg, inputs, schedule, T, sweet_spot, name)
            done[schedule, T, sweet_spot] = name
        print("inpaint: " + ", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run(main)
