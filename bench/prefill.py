"""Judge `tokens.prefill` without stage 2: how far each way of filling the holes before encoding leaves the
known tokens from the test images' own, and what that costs the output.

    python -m bench.prefill [-S key=value ...]

For each prefill (grey: the masked image as given, the lab's way; telea and ns: OpenCV's inpainting
first), the masked test images are encoded as the `tokens` stage encodes them, and compared with the tokens
of the unmasked images (data/tokens/test_gt.npy):
- `known_agree`: the share of known tokens (the lab's rule leaves them unmasked) equal to the image's own,
  overall and by their distance from the nearest masked token (1, 2, 3 or more tokens, Chebyshev);
- the oracle decode: the image's own tokens in the holes (what a perfect stage 2 would put there) and the
  prefill's known tokens around them, decoded, scored raw and as the composite with FID and KID (x 10³),
  each KID minus grey's with the paired error over the test images; beside the floor, the image's own
  tokens everywhere, which no prefill can beat.
Reads what `prepare`, `vqgan`, `tokens` and `fid_reference` wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import machine
from model.blend import blender
from stages.common import content_key, pick_device
from stages.config import PREFILLS, ConfigError, cli, run
from stages.evaluate import PREPARED, REFERENCE, InceptionScores, scaled_difference
from stages.tokens import prefilled, token_cache
from stages.training import require
from stages.vqgan import decode_images, load_frozen

TOKENS = Path("data/tokens")
RINGS = (1, 2, 3)  # the last: that distance or more


def distance_from_mask(token_mask: np.ndarray) -> np.ndarray:
    """(N, side²) bool → int: each token's Chebyshev distance, in tokens, from the nearest masked token of
    its image (0 for masked ones; side² where the image has none)."""
    n, side = len(token_mask), int(np.sqrt(token_mask.shape[1]))
    reach = torch.from_numpy(token_mask).view(n, 1, side, side).float()
    dist = np.where(token_mask, 0, side * side)
    for d in range(1, side):
        reach = F.max_pool2d(reach, 3, stride=1, padding=1)  # grown by one token in each direction
        dist = np.where((dist == side * side) & (reach.flatten(1).numpy() > 0), d, dist)
    return dist


def agreement(tokens: np.ndarray, truth: np.ndarray, dist: np.ndarray) -> dict:
    same = tokens == truth
    out = {"known_agree": round(float(same[dist > 0].mean()), 4)}
    for d in RINGS:
        ring = dist >= d if d == RINGS[-1] else dist == d
        out[f"agree_d{d}{'+' if d == RINGS[-1] else ''}"] = round(float(same[ring].mean()), 4)
    return out


def main() -> None:
    cfg, _ = cli(__doc__)
    gt = np.load(require(PREPARED / "gt.npy", "prepare"))
    masked, mask64 = np.load(PREPARED / "masked.npy"), np.load(PREPARED / "mask64.npy")
    truth = np.load(require(TOKENS / "test_gt.npy", "tokens")).astype(np.int64)
    token_mask = np.load(TOKENS / "test_mask.npy")
    device = pick_device(cfg["device"])
    scores = InceptionScores(device, cfg["evaluate"]["batch_size"], content_key(gt))
    if not scores.available:
        raise ConfigError(f"{REFERENCE} has no test statistics: run `fid_reference` on a test set with ground truth")
    vqgan, bs = load_frozen(device), cfg["tokens"]["batch_size"]
    blend = blender(cfg["inpaint"]["blend"], mask64)
    dist = distance_from_mask(token_mask)

    def scored(tokens: np.ndarray, label: str) -> dict:
        raw = decode_images(vqgan, torch.from_numpy(tokens).to(device), bs)
        return {"raw": scores(raw, f"{label} raw"), "composite": scores(blend(raw, masked), f"{label} composite")}

    rows = {}
    for prefill in PREFILLS:
        tokens = token_cache(vqgan, prefilled(masked, mask64, prefill), bs, device, prefill).astype(np.int64)
        rows[prefill] = {**agreement(tokens, truth, dist), **scored(np.where(token_mask, truth, tokens), prefill)}
    rows["floor"] = scored(truth, "floor")
    for label, row in rows.items():
        for output in ("raw", "composite"):
            row[output]["kid_minus_grey"] = scaled_difference(scores.leave_one_out[f"{label} {output}"],
                                                              scores.leave_one_out[f"grey {output}"])
    print(json.dumps({"machine": machine(device), "test_images": len(gt),
                      "masked_tokens": round(float(token_mask.mean()), 4), "prefill": rows}, indent=1))


if __name__ == "__main__":
    run(main)
