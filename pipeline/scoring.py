"""Scoring image sets against the test set's ground truth: FID, and KID with its jackknife error, with
Inception features cached by the content of each set, and the leave-one-out KID values that pair two
sets (or two runs on the same test images) image by image."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from model.fid import FrechetReference, inception_features
from pipeline.inception import load_inception
from model.kid import KID_SCALE, KernelReference, jackknife_se, paired_difference
from pipeline.config import ConfigError, StageFailed
from pipeline.files import atomic_file, content_key
from pipeline.lineage import Lineage
from pipeline.paths import FID_CACHE, FID_REFERENCE, TEST


class InceptionScores:
    """FID and KID against the test set's ground truth, with features cached by the content of the image
    set. KID comes with its jackknife standard error over the test images (model/kid.py); each scored set's
    leave-one-out values are kept by label, so a difference between two sets costs no second pass."""

    def __init__(self, device, batch_size: int, test_key: str | None, lineage: Lineage):
        """`test_key`: the content key of the test set's ground truth (None without one), which the reference
        must be of; `lineage`: through which the reference is read."""
        self.used, self.leave_one_out = set(), {}
        self.computed, self.feature_seconds = 0, 0.0  # image sets sent through Inception (not cached), and their time
        ref = np.load(lineage.read(FID_REFERENCE / "stats.npz", "fid_reference"))
        self.available = bool(ref["available"])
        if self.available and ("test_key" not in ref.files or str(ref["test_key"]) != test_key):
            raise ConfigError(f"{FID_REFERENCE} is not of the test images in {TEST}: run `fid_reference` again")
        # held-out real images against the reference (fid_reference): the yardstick at this test size
        self.heldout = {k: round(float(ref["heldout_" + k]) * (KID_SCALE if "kid" in k else 1), 3)
                        if "heldout_" + k in ref else None for k in ("fid", "kid", "kid_se")}
        if self.available:
            self.reference = FrechetReference(ref["mu"], ref["sigma"])
            self.kid_reference = KernelReference(ref["features"])
            self.net, self.device, self.batch_size = load_inception(device), device, batch_size

    def features(self, images: np.ndarray, label: str) -> np.ndarray:
        path = FID_CACHE / f"{content_key(images)}.npy"
        self.used.add(path.name)
        if path.exists():
            return np.load(path)
        t0 = time.time()
        feats = inception_features(self.net, images, self.batch_size, self.device, label)
        self.computed, self.feature_seconds = self.computed + 1, self.feature_seconds + time.time() - t0
        FID_CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, feats.astype(np.float32))
        return feats

    def __call__(self, images: np.ndarray, label: str) -> dict:
        """{"fid", "kid", "kid_se"} of the images (KID x 10^3); None each without ground truth, the error
        None below 3 images."""
        if not self.available:
            return {"fid": None, "kid": None, "kid_se": None}
        feats = self.features(images, label)
        value, loo = self.kid_reference.score(feats)
        fid = self.reference.distance(feats)
        if not (np.isfinite(fid) and np.isfinite(value)):
            raise StageFailed(f"the scores of {label} are not numbers (FID {fid}, KID {value}) on {len(images)} "
                              f"images: the test set is too small or degenerate; prepare a larger one")
        if loo is not None:
            self.leave_one_out[label] = value, loo
        return {"fid": round(fid, 3), "kid": round(value * KID_SCALE, 3),
                "kid_se": None if loo is None else round(jackknife_se(loo) * KID_SCALE, 3)}

    def kid_vs(self, label_a: str, label_b: str) -> tuple[float, float] | None:
        """KID(a) − KID(b) (x 10^3) of two sets scored above for the same test images, and its paired
        error; None where either has no leave-one-out values."""
        if label_a not in self.leave_one_out or label_b not in self.leave_one_out:
            return None
        return scaled_difference(self.leave_one_out[label_a], self.leave_one_out[label_b])

    def prune(self) -> None:
        """Drop the cached features this run did not use, so experiments do not pile them up (a lab-size
        image set's features are 6 MB)."""
        for path in FID_CACHE.glob("*.npy") if FID_CACHE.exists() else []:
            if path.name not in self.used:
                path.unlink()


def save_leave_one_out(path: Path, test_key: str, leave_one_out: dict) -> None:
    """Each scored set's KID and leave-one-out values ({label: (KID, values)}), with the test images' content
    key, in an npz that loads without pickle."""
    labels = sorted(leave_one_out)
    loo = np.stack([leave_one_out[label][1] for label in labels]) if labels else np.zeros((0, 0))
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, test_key=test_key, labels=np.array(labels, dtype=str),
                 kid=np.array([leave_one_out[label][0] for label in labels], dtype=float), loo=loo)


def load_leave_one_out(path: Path, test_key: str) -> dict:
    """A file of `save_leave_one_out`, checked to be of the test images with this content key."""
    try:
        with np.load(path) as f:
            key, labels, kid, loo = str(f["test_key"]), f["labels"], f["kid"], f["loo"]
    except FileNotFoundError:
        raise ConfigError(f"--against {path}: not found") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not a zip, or not of these arrays
        raise ConfigError(f"--against {path}: not a leave-one-out file (results/leave_one_out.npz)") from None
    if key != test_key:
        raise ConfigError(f"--against {path}: scored other test images (content {key[:12]}, these are "
                          f"{test_key[:12]}): paired differences need the same test set")
    return {str(label): (float(k), values) for label, k, values in zip(labels, kid, loo)}


def scaled_difference(a: tuple, b: tuple) -> tuple[float, float]:
    """KID(a) − KID(b) and its paired error, x 10^3 and rounded as the report shows them, from each set's
    (KID, leave-one-out values)."""
    diff, se = paired_difference(a, b)
    return round(diff * KID_SCALE, 3), round(se * KID_SCALE, 3)


def kid_differences(ours: dict, theirs: dict) -> dict:
    """`scaled_difference` for every set scored in both ({label: (KID, leave-one-out values)} each)."""
    return {label: scaled_difference(ours[label], theirs[label]) for label in ours if label in theirs}
