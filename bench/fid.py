"""FID's cost outside the network: the distance of one image set's features to the test set's statistics,
which `evaluate` pays for each of the ~30 sets it scores (features cached, it is most of a rerun's time).

`FrechetReference.distance` takes Tr((Σ Σ_r)^½) from the n x n matrix X Σ_r Xᵀ; beside it, measured in the
same run, the d x d form Σ_r^½ Σ Σ_r^½ that this project used until 2026-11-28, with Σ_r^½ taken once
(pytorch-fid takes a d x d matrix root too, scipy's sqrtm of Σ Σ_r). Random non-negative features stand
in for Inception's pooled ReLU outputs.

    python -m bench.fid [--images 747] [--features 2048]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.common import machine, timed
from model.fid import FrechetReference, sqrt_psd, gaussian_stats


def d_by_d_distance(root: np.ndarray, ref: FrechetReference, features: np.ndarray) -> float:
    mu, sigma = gaussian_stats(features)
    middle = root @ sigma @ root
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu - ref.mu
    return float(diff @ diff + np.trace(sigma) + np.trace(ref.sigma) - 2 * tr_covmean)


def run(images: int, features: int) -> dict:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(features, features)) / np.sqrt(features)
    reference, scored = (np.maximum(rng.normal(size=(images, features)) @ mixing + shift, 0) for shift in (0, 0.1))
    ref = FrechetReference(*gaussian_stats(reference))
    t0 = time.perf_counter()
    root = sqrt_psd(ref.sigma)
    root_seconds = time.perf_counter() - t0
    ours = timed(lambda: ref.distance(scored), torch.device("cpu"))
    theirs = timed(lambda: d_by_d_distance(root, ref, scored), torch.device("cpu"))
    return {"benchmark": "FID distance of one image set to the reference", "machine": machine(torch.device("cpu")),
            "images": images, "features": features,
            "n_by_n_seconds": round(ours, 4), "d_by_d_seconds": round(theirs, 4),
            "d_by_d_reference_root_seconds_once": round(root_seconds, 4), "speedup": round(theirs / ours, 2),
            "fid_n_by_n": ref.distance(scored), "fid_d_by_d": d_by_d_distance(root, ref, scored)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=747)
    parser.add_argument("--features", type=int, default=2048)
    a = parser.parse_args()
    print(json.dumps(run(a.images, a.features), indent=2))


if __name__ == "__main__":
    main()
