"""Split what a prefill does to the output in two: stage 2's predictions for the holes, and the known tokens
the decoder sees around them.

    python -m bench.context_swap RUN_A RUN_B [-S key=value ...]

RUN_A and RUN_B are two `inpaint` outputs of one configuration (results/inpaint/<name>/, copied aside)
whose test images were encoded under different `tokens.prefill`s, e.g. grey and ns, with the same stages 1
and 2. Each of the four ways to take the hole tokens from one run and the known tokens from the other is
decoded and scored raw and as the composite (FID, KID x 10³), each KID minus that of run A as it stands
(holes A, known A), with the paired error over the test images. "holes B, known A" is what B's context did
to stage 2's predictions alone; "holes A, known B", what B's known tokens do to the decoder alone.
Reads what `prepare`, `vqgan`, `tokens` (the token mask) and `fid_reference` wrote.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.common import machine
from model.blend import blender
from stages.common import content_key, pick_device
from stages.config import ConfigError, cli, run
from stages.evaluate import PREPARED, REFERENCE, InceptionScores, scaled_difference
from stages.training import require
from stages.vqgan import decode_images, load_frozen

TOKEN_MASK = Path("data/tokens/test_mask.npy")
SAME = ("data", "vqgan", "train", "schedule", "T", "sweet_spot", "inpaint")  # the settings both runs must share


def load_run(folder: Path) -> tuple[np.ndarray, dict]:
    """An inpaint output folder's tokens and the settings it ran with, or a clear error naming the folder."""
    paths = folder / "tokens.npy", folder / "config.yaml"
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: not found (expected an inpaint output folder, results/inpaint/<name>/)")
    return np.load(paths[0]).astype(np.int64), yaml.safe_load(paths[1].read_text())


def main() -> None:
    def args(parser):
        parser.add_argument("runs", type=Path, nargs=2, metavar="RUN",
                            help="two inpaint output folders of one configuration under two prefills")

    cfg, a = cli(__doc__, args)
    (tokens_a, run_a), (tokens_b, run_b) = (load_run(folder) for folder in a.runs)
    token_mask = np.load(require(TOKEN_MASK, "tokens"))
    for folder, tokens in zip(a.runs, (tokens_a, tokens_b)):
        if tokens.shape != token_mask.shape:
            raise ConfigError(f"{folder}/tokens.npy: shape {tokens.shape}, expected {token_mask.shape} "
                              f"as {TOKEN_MASK}: a run of another test set")
    differ = [k for k in SAME if run_a.get(k) != run_b.get(k)]
    if differ:
        raise ConfigError(f"{a.runs[0]} and {a.runs[1]}: their {', '.join(differ)} settings differ; expected one "
                          f"configuration with the same stages 1 and 2 under two prefills")
    gt = np.load(require(PREPARED / "gt.npy", "prepare"))
    masked, mask64 = np.load(PREPARED / "masked.npy"), np.load(PREPARED / "mask64.npy")
    device = pick_device(cfg["device"])
    scores = InceptionScores(device, cfg["evaluate"]["batch_size"], content_key(gt))
    if not scores.available:
        raise ConfigError(f"{REFERENCE} has no test statistics: run `fid_reference` on a test set with ground truth")
    vqgan, blend = load_frozen(device), blender(cfg["inpaint"]["blend"], mask64)

    runs, rows = {"A": tokens_a, "B": tokens_b}, {}
    for holes, known in itertools.product(runs, repeat=2):
        label = f"holes {holes}, known {known}"
        raw = decode_images(vqgan, torch.from_numpy(np.where(token_mask, runs[holes], runs[known])).to(device),
                            cfg["inpaint"]["batch_size"])
        rows[label] = {"raw": scores(raw, f"{label} raw"), "composite": scores(blend(raw, masked), f"{label} composite")}
    for label, row in rows.items():
        for output in ("raw", "composite"):
            row[output]["kid_minus_a"] = scaled_difference(scores.leave_one_out[f"{label} {output}"],
                                                           scores.leave_one_out[f"holes A, known A {output}"])
    same = tokens_a == tokens_b
    print(json.dumps({"machine": machine(device), "test_images": len(gt), "runs": {"A": str(a.runs[0]), "B": str(a.runs[1])},
                      "prefill": {"A": run_a["tokens"]["prefill"], "B": run_b["tokens"]["prefill"]},
                      "configuration": {k: run_a[k] for k in ("schedule", "T", "sweet_spot")},
                      "same_known_tokens": round(float(same[~token_mask].mean()), 4),
                      "same_hole_tokens": round(float(same[token_mask].mean()), 4), "swap": rows}, indent=1))


if __name__ == "__main__":
    run(main)
