"""Judge a stage-1 recipe by its floor, without stage 2: the test images' true tokens decoded, scored raw
and as a composite (put into the masked input as the inpainting stage does) with FID and KID.

    python -m bench.floor [-S key=value ...] [--save floor_a.json] [--against floor_b.json ...]

Reads what `prepare`, `vqgan`, `tokens` and `fid_reference` wrote, so a recipe costs its stage-1
training and one decode of the test set. PSNR is no proxy for the floor (docs/cpu_studies.md), so recipes
are compared here. `--save` keeps this run's leave-one-out KID values (a few KB for 747 images); a run
of another recipe, later or on another machine, then prints its KID minus the saved one with the paired
jackknife error over the same test images (checked by their content). That error covers the test
images' sampling, not the training's: judge recipes over several seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import machine
from model.kid import KID_SCALE, paired_difference
from stages.common import atomic_file, content_key, pick_device
from stages.config import ConfigError, cli, run
from stages.evaluate import PREPARED, REFERENCE, InceptionScores, check_params, floor_row, recon_floor
from stages.training import require

GT_TOKENS = Path("data/tokens/test_gt.npy")
STAGE1_METRICS = Path("reports/vqgan/metrics.json")
OUTPUTS = {"raw": "floor", "composite": "floor composite"}  # output: the label InceptionScores keeps it under


def read_saved(path: Path, test_key: str) -> dict:
    """An earlier --save file, checked to be of these test images."""
    try:
        saved = json.loads(path.read_text())
        loo, key = saved["leave_one_out"], saved["test_key"]
    except FileNotFoundError:
        raise ConfigError(f"--against {path}: not found")
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"--against {path}: not a file written by `python -m bench.floor --save`")
    if key != test_key:
        raise ConfigError(f"--against {path}: scored other test images (content {key[:12]}, these are "
                          f"{test_key[:12]}): paired differences need the same test set")
    return loo


def differences(loo: dict, path: Path, saved: dict) -> dict:
    """This run's floor KIDs minus a saved run's, each with its paired error, x 10^3: [difference, error]."""
    out = {"file": str(path)}
    for output in OUTPUTS:
        diff = paired_difference(loo[output], (saved[output]["kid"], np.array(saved[output]["loo"])))
        out[f"kid_{output}_minus_saved"] = [round(x * KID_SCALE, 3) for x in diff]
    return out


def main() -> None:
    def args(parser):
        parser.add_argument("--save", type=Path, help="keep this run's scores and leave-one-out KID values here")
        parser.add_argument("--against", type=Path, nargs="*", default=[],
                            help="earlier --save files (same test images): print KID differences against them")

    cfg, a = cli(__doc__, args)
    check_params(cfg)
    gt = np.load(require(PREPARED / "gt.npy", "prepare"))
    masked, mask64 = np.load(PREPARED / "masked.npy"), np.load(PREPARED / "mask64.npy")
    require(GT_TOKENS, "tokens")
    test_key = content_key(gt)
    against = {path: read_saved(path, test_key) for path in a.against}  # every input checked before the decode
    device = pick_device(cfg["device"])
    scores = InceptionScores(device, cfg["evaluate"]["batch_size"], gt)
    if not scores.available:
        raise ConfigError(f"{REFERENCE} has no test statistics: run `fid_reference` on a test set with ground truth")

    recon = recon_floor(device, GT_TOKENS, cfg["inpaint"]["batch_size"])
    row = floor_row(scores, recon, masked, mask64, gt, cfg["inpaint"]["blend"])
    floor = {k: v for k, v in row.items() if k not in ("name", "kind")}
    loo = {output: scores.leave_one_out[label] for output, label in OUTPUTS.items()}
    result = {"machine": machine(device), "test_images": len(gt), "test_key": test_key,
              "stage1": json.loads(STAGE1_METRICS.read_text()) if STAGE1_METRICS.exists() else None,
              "floor": floor, "against": [differences(loo, path, saved) for path, saved in against.items()]}
    if a.save:
        kept = {**result, "leave_one_out": {output: {"kid": value, "loo": values.tolist()}
                                            for output, (value, values) in loo.items()}}
        with atomic_file(a.save) as tmp:
            tmp.write_text(json.dumps(kept))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run(main)
