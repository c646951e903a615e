"""Stage `inpaint`: iterative decoding of the whole test set for one configuration.

`python -m stages.inpaint` runs the headline configuration (top-level `schedule`, `T`, `sweet_spot`)
into results/inpaint/headline/; `--schedule S --T N --sweet-spot K` runs one point of the sweep into
results/inpaint/S-TN-sK/; `--sweep` runs every point of the `sweep` grid in one process (models loaded
once), `--sweep --headline` the headline too (what `run_all` uses). Each folder gets raw/image_000.png …
(the VQGAN decode), composite/image_000.png … (the decoded holes put into the input as `inpaint.blend`
says), raw.npy, composite.npy, tokens.npy, pictures/serial_NNN.png (the latent mask and the predicted
image at every iteration) and summary.json.
"""
from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.blend import blender
from model.iterative_decode import check_decode_args, iterative_decode
from model.vqgan import VQGAN
from stages import training
from stages.common import atomic_dir, pick_device, save_json, save_numbered_pngs, save_png, write_resolved
from stages.config import ConfigError, cli, run
from stages.train import load_transformer
from stages.vqgan import decode_images, load_frozen

PREPARED = Path("data/prepared")
TOKENS = Path("data/tokens")
RESULTS = Path("results/inpaint")


def config_name(schedule: str, T: int, sweet_spot: int) -> str:
    return f"{schedule}-T{T}-s{sweet_spot}"


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
    grid = training.image_grid([np.stack(top), np.stack(bottom)])
    return grid.repeat(2, 0).repeat(2, 1)  # 2x, nearest: readable at a glance


@dataclass
class DecodeInputs:
    """Everything decoding needs, loaded once for all configurations of a process."""
    device: torch.device
    masked_tokens: torch.Tensor  # (N, 256) long, on `device`: stage 2's context
    known_tokens: torch.Tensor   # (N, 256) long, on `device`: what the final decode keeps outside the holes
    token_mask: torch.Tensor     # (N, 256) bool, on `device`
    masked: np.ndarray           # (N, 64, 64, 3) uint8, holes grey
    gt: np.ndarray | None
    blend: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (generated, known) → composites, as `inpaint.blend` says
    transformer: torch.nn.Module
    vqgan: VQGAN


def load_inputs(cfg: dict) -> DecodeInputs:
    device = pick_device(cfg["device"])
    gt_path = PREPARED / "test" / "gt.npy"

    def token_array(name):
        return torch.from_numpy(training.load_array(TOKENS / name, "tokens")).to(device)

    inputs = DecodeInputs(
        device=device, masked_tokens=token_array("test_masked.npy").long(), known_tokens=token_array("test_known.npy").long(),
        token_mask=token_array("test_mask.npy"),
        masked=np.load(PREPARED / "test" / "masked.npy"), gt=np.load(gt_path) if gt_path.exists() else None,
        blend=blender(cfg["inpaint"]["blend"], np.load(PREPARED / "test" / "mask64.npy")),
        transformer=load_transformer(device), vqgan=load_frozen(device))
    if device.type == "cuda":  # untimed passes at every batch shape, so no configuration's time holds warm-up
        bs, n = cfg["inpaint"]["batch_size"], len(inputs.masked_tokens)
        for size in {min(bs, n), n % bs or bs}:
            with torch.inference_mode(), training.autocast_for(device)():
                inputs.transformer(inputs.masked_tokens[:size])
            decode_images(inputs.vqgan, inputs.masked_tokens[:size], bs)
    return inputs


def inpaint(cfg: dict, inputs: DecodeInputs, schedule: str, T: int, sweet_spot: int, name: str) -> dict:
    p, device = cfg["inpaint"], inputs.device
    masked, gt, transformer, vqgan = inputs.masked, inputs.gt, inputs.transformer, inputs.vqgan
    autocast = training.autocast_for(device)

    def predict(tokens):
        with autocast():
            return transformer(tokens)

    serials = [s for s in p["picture_serials"] if 0 <= s < len(masked)]
    gen = torch.Generator(device=device).manual_seed(p["seed"])
    tokens, steps_of_serials = [], {}
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    for start in range(0, len(masked), p["batch_size"]):
        result = iterative_decode(
            predict, inputs.masked_tokens[start:start + p["batch_size"]],
            inputs.token_mask[start:start + p["batch_size"]], T=T, schedule=schedule, sweet_spot=sweet_spot,
            mask_token=transformer.cfg.mask_token, num_codes=transformer.cfg.num_codebook_vectors,
            choice_temperature=p["choice_temperature"], temperature=p["temperature"], generator=gen)
        tokens.append(result.tokens)
        for s in serials:
            if start <= s < start + p["batch_size"]:
                steps_of_serials[s] = (result.masks[:, s - start].cpu().numpy(), result.predictions[:, s - start])
    tokens = torch.where(inputs.token_mask, torch.cat(tokens), inputs.known_tokens)  # as tokens.decode_prefill says
    raw = decode_images(vqgan, tokens, p["batch_size"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = {"decode": time.time() - t0}
    t0 = time.time()
    comp = inputs.blend(raw, masked)
    seconds["composite"], t0 = time.time() - t0, time.time()
    pictures = {}
    for s, (masks, preds) in steps_of_serials.items():
        step_images = decode_images(vqgan, preds, p["batch_size"])
        pictures[s] = decoding_picture(masked[s], None if gt is None else gt[s], masks, step_images)
    seconds["pictures"], t0 = time.time() - t0, time.time()

    with atomic_dir(RESULTS / name) as out:
        for folder, images in (("raw", raw), ("composite", comp)):
            (out / folder).mkdir()
            save_numbered_pngs(images, out / folder, "image")
        np.save(out / "raw.npy", raw)
        np.save(out / "composite.npy", comp)
        np.save(out / "tokens.npy", tokens.cpu().numpy().astype(np.int16))
        (out / "pictures").mkdir()
        for s, picture in pictures.items():
            save_png(picture, out / "pictures" / f"serial_{s:03d}.png")
        seconds["write"] = time.time() - t0
        # decode_seconds times the decoding alone; the other *_seconds say where the rest of a configuration's time goes
        summary = {"name": name, "schedule": schedule, "T": T, "sweet_spot": sweet_spot,
                   "steps_run": sweet_spot or T, "images": len(raw), "decode_seconds": round(seconds["decode"], 3),
                   "images_per_s": round(len(raw) / seconds["decode"], 1), "device": str(device),
                   "primary": "composite" if p["composite"] else "raw",
                   **{f"{k}_seconds": round(v, 3) for k, v in seconds.items() if k != "decode"}}
        save_json(summary, out / "summary.json")
        write_resolved({**cfg, "schedule": schedule, "T": T, "sweet_spot": sweet_spot}, out)
    return summary


def copy_point(source: str, name: str) -> dict:
    """The headline when it is a sweep point already decoded in this process: the same decode (same
    seed and inputs), so its folder is copied instead of decoded twice."""
    with atomic_dir(RESULTS / name) as out:
        shutil.copytree(RESULTS / source, out, dirs_exist_ok=True)
        summary = {**json.loads((out / "summary.json").read_text()), "name": name}
        save_json(summary, out / "summary.json")
    return summary


def sweep_points(cfg: dict) -> list[tuple]:
    """(schedule, T, sweet_spot, folder name) of every point of the `sweep` grid."""
    return [(sc, T, sw, config_name(sc, T, sw))
            for sc, T, sw in itertools.product(cfg["sweep"]["schedule"], cfg["sweep"]["T"], cfg["sweep"]["sweet_spot"])]


def headline_point(cfg: dict) -> tuple:
    return cfg["schedule"], cfg["T"], cfg["sweet_spot"], "headline"


def check_points(points: list[tuple]) -> None:
    """The points given on the command line (the parameters' own, the schema has checked)."""
    for schedule, T, sweet_spot, name in points:
        try:
            check_decode_args(T, sweet_spot, schedule)
        except ValueError as e:
            raise ConfigError(f"--schedule {schedule} --T {T} --sweet-spot {sweet_spot}: {e}") from None


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
        points = [(schedule, T, sweet_spot, config_name(schedule, T, sweet_spot))]
    check_points(points)
    t0 = time.time()
    inputs = load_inputs(cfg)
    print(f"inpaint: models and test inputs loaded in {time.time() - t0:.1f} s")
    done = {}
    for schedule, T, sweet_spot, name in points:
        if (schedule, T, sweet_spot) in done:
            summary = copy_point(done[schedule, T, sweet_spot], name)
        else:
            summary = inpaint(cfg, inputs, schedule, T, sweet_spot, name)
            done[schedule, T, sweet_spot] = name
        print("inpaint: " + ", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run(main)
