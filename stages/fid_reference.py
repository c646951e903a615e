"""Stage `fid_reference`: Inception statistics of the test set's ground truth, computed once.

Output: data/fid/reference.npz (features, mu, sigma), keyed by DVC on the prepared test set.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model.fid import gaussian_stats, inception_features, load_inception
from stages.common import atomic_file, pick_device
from stages.config import cli, run

GT = Path("data/prepared/test/gt.npy")
OUT = Path("data/fid/reference.npz")


def main() -> None:
    cfg, _ = cli(__doc__)
    if GT.exists():
        device = pick_device(cfg["device"])
        feats = inception_features(load_inception(device), np.load(GT), cfg["evaluate"]["batch_size"], device,
                                   "fid reference")
        mu, sigma = gaussian_stats(feats)
        stats = {"available": True, "features": feats.astype(np.float32), "mu": mu, "sigma": sigma}
    else:
        print("fid_reference: the test set has no ground truth (lab layout without data.test_gt): FID disabled")
        stats = {"available": False}
    with atomic_file(OUT) as tmp, open(tmp, "wb") as f:
        np.savez(f, **stats)
    print(f"fid_reference: wrote {OUT}")


if __name__ == "__main__":
    run(main)
