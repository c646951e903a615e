"""Judge a stage-1 recipe by its floor, without stage 2: the test images' true tokens decoded, scored raw
and as a composite (put into the masked input as the inpainting stage does) with FID and KID.

    python -m bench.floor [-S key=value ...] [--save floor_a.npz] [--against floor_b.npz ...]

Reads what `prepare`, `vqgan`, `tokens` and `fid_reference` wrote, so a recipe costs its stage-1
training and one decode of the test set. PSNR is no proxy for the floor (docs/cpu_studies.md), so recipes
are compared here. `--save` keeps this run's leave-one-out KID values (12 KB for 747 images) in the format
of evaluate's results/leave_one_out.npz; a run of another recipe, later or on another machine, then prints
its KID minus the saved one with the paired jackknife error over the same test images (checked by their
content). That error covers the test images' sampling, not the training's: judge recipes over several seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import machine
from stages.common import content_key, pick_device
from stages.config import ConfigError, cli, run
from stages.evaluate import (FLOOR_LABELS, PREPARED, REFERENCE, InceptionScores, floor_row,
                             kid_differences, load_leave_one_out, recon_floor, save_leave_one_out)
from stages.training import require

GT_TOKENS = Path("data/tokens/test_gt.npy")
STAGE1_METRICS = Path("reports/vqgan/metrics.json")


def main() -> None:
    def args(parser):
        parser.add_argument("--save", type=Path, help="keep this run's leave-one-out KID values here (.npz)")
        parser.add_argument("--against", type=Path, nargs="*", default=[],
                            help="earlier --save files or results/leave_one_out.npz of the same test images: "
                                 "print this run's KIDs minus theirs with paired errors")

    cfg, a = cli(__doc__, args)
    gt = np.load(require(PREPARED / "gt.npy", "prepare"))
    masked, mask64 = np.load(PREPARED / "masked.npy"), np.load(PREPARED / "mask64.npy")
    require(GT_TOKENS, "tokens")
    test_key = content_key(gt)
    against = {path: load_leave_one_out(path, test_key) for path in a.against}  # checked before the decode
    device = pick_device(cfg["device"])
    scores = InceptionScores(device, cfg["evaluate"]["batch_size"], test_key)
    if not scores.available:
        raise ConfigError(f"{REFERENCE} has no test statistics: run `fid_reference` on a test set with ground truth")

    recon = recon_floor(device, GT_TOKENS, cfg["inpaint"]["batch_size"])
    row = floor_row(scores, recon, masked, mask64, gt, cfg["inpaint"]["blend"])
    floor = {k: v for k, v in row.items() if k not in ("name", "kind")}
    loo = {label: scores.leave_one_out[label] for label in FLOOR_LABELS.values()}
    result = {"machine": machine(device), "test_images": len(gt), "test_key": test_key,
              "stage1": json.loads(STAGE1_METRICS.read_text()) if STAGE1_METRICS.exists() else None,
              "floor": floor, "against": [{"file": str(path), "kid_minus_theirs": kid_differences(loo, theirs)}
                                          for path, theirs in against.items()]}
    if a.save:
        save_leave_one_out(a.save, test_key, loo)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run(main)
