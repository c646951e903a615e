"""Stage `evaluate`: FID and KID of every inpainting configuration against the test set, into reports/.

Reads data/fid/reference.npz (ground-truth features and statistics, the scores of held-out real images),
results/inpaint/*/ and the baselines a user has without a model (the grey-hole input, OpenCV Telea and
Navier-Stokes) plus the stage-1 floor (the VQGAN's reconstruction of the unmasked test images).
Writes reports/comparison.csv and .md, reports/fid_vs_T.png, reports/fid_vs_sweet_spot.png,
reports/plots/*.csv, reports/pictures/, reports/samples.png (the first test images through the best
configuration, beside Telea and the ground truth), reports/metrics.json (the headline configuration's
FID) and reports/README.md; results/leave_one_out.npz keeps every scored set's leave-one-out KID values, so
that a later run scored on the same test images can be paired with this one:

    python -m stages.evaluate --against OTHER.npz   # this run's KIDs minus OTHER's, with paired errors
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from model.baselines import hole_psnr, opencv_inpaint
from model.blend import blender
from model.fid import FrechetReference, inception_features, load_inception
from model.kid import KID_SCALE, KernelReference, jackknife_se, paired_difference
from stages import report
from stages.common import atomic_dir, atomic_file, content_key, pick_device, save_png
from stages.config import ConfigError, cli, run
from stages.training import image_grid, require

PREPARED = Path("data/prepared/test")
REFERENCE = Path("data/fid/reference.npz")
CACHE = Path("data/fid/cache")
RESULTS = Path("results/inpaint")
REPORTS = Path("reports")
LEAVE_ONE_OUT = Path("results/leave_one_out.npz")
SAMPLES = 8  # the first test images: the same ones in every experiment
FLOOR = "stage-1 reconstruction (floor)"
FLOOR_LABELS = {"raw": "floor", "composite": "floor composite"}  # output: the label the floor's set is scored under


class InceptionScores:
    """FID and KID against the test set's ground truth, with features cached by the content of the image
    set. KID comes with its jackknife standard error over the test images (model/kid.py); each scored set's
    leave-one-out values are kept by label, so a difference between two sets costs no second pass."""

    def __init__(self, device, batch_size: int, test_key: str | None):
        """`test_key`: the content key of the test set's ground truth (None without one), which the reference
        must be of."""
        self.used, self.leave_one_out = set(), {}
        self.computed, self.feature_seconds = 0, 0.0  # image sets sent through Inception (not cached), and their time
        ref = np.load(require(REFERENCE, "fid_reference"))
        self.available = bool(ref["available"])
        if self.available and ("test_key" not in ref.files or str(ref["test_key"]) != test_key):
            raise ConfigError(f"{REFERENCE} is not of the test images in {PREPARED}: run `fid_reference` again")
        # held-out real images against the reference (fid_reference): the yardstick at this test size
        self.heldout = {k: round(float(ref["heldout_" + k]) * (KID_SCALE if "kid" in k else 1), 3)
                        if "heldout_" + k in ref else None for k in ("fid", "kid", "kid_se")}
        if self.available:
            self.reference = FrechetReference(ref["mu"], ref["sigma"])
            self.kid_reference = KernelReference(ref["features"])
            self.net, self.device, self.batch_size = load_inception(device), device, batch_size

    def features(self, images: np.ndarray, label: str) -> np.ndarray:
        path = CACHE / f"{content_key(images)}.npy"
        self.used.add(path.name)
        if path.exists():
            return np.load(path)
        t0 = time.time()
        feats = inception_features(self.net, images, self.batch_size, self.device, label)
        self.computed, self.feature_seconds = self.computed + 1, self.feature_seconds + time.time() - t0
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, feats.astype(np.float32))
        return feats

    def __call__(self, images: np.ndarray, label: str) -> dict:
        """{"fid", "kid", "kid_se"} of the images (KID x 10^3); None each without ground truth, the error
        None below 3 images."""
        if not self.available:
            return {"fid": None, "kid": None, "kid_se": None}
        feats = self.features(images, label)
        value, loo = self.kid_reference.score(feats)
        if loo is not None:
            self.leave_one_out[label] = value, loo
        return {"fid": round(self.reference.distance(feats), 3), "kid": round(value * KID_SCALE, 3),
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
        for path in CACHE.glob("*.npy") if CACHE.exists() else []:
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
        raise ConfigError(f"--against {path}: not a leave-one-out file (results/leave_one_out.npz, "
                          "or bench.floor --save)") from None
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


def entries(s: dict, *outputs: str) -> dict:
    """Scores {"fid", "kid", "kid_se"} as a row's fid_<output>, kid_<output>, kid_<output>_se, for each
    output they stand for."""
    return {f"{metric}_{output}{suffix}": s[metric + suffix] for output in outputs
            for metric, suffix in (("fid", ""), ("kid", ""), ("kid", "_se"))}


def scored(scores: InceptionScores, images: np.ndarray, label: str, *outputs: str) -> dict:
    return entries(scores(images, label), *outputs)


def baselines(scores: InceptionScores, masked, mask64, gt, recon, telea, blend: str) -> list[dict]:
    rows = []
    for name, images in (("grey-hole input", masked),
                         ("OpenCV Telea", telea),
                         ("OpenCV Navier-Stokes", opencv_inpaint(masked, mask64, "ns"))):
        # the known pixels are the input's own: raw and composite coincide
        rows.append({"name": name, "kind": "baseline", **scored(scores, images, name, "raw", "composite"),
                     "hole_psnr": None if gt is None else round(hole_psnr(images, gt, mask64), 3)})
    if recon is not None:
        rows.append(floor_row(scores, recon, masked, mask64, gt, blend))
    if scores.heldout["fid"] is not None:  # real images other than the test set's: no holes, so no hole PSNR
        rows.append({"name": "held-out real images", "kind": "reference", **entries(scores.heldout, "raw", "composite"),
                     "hole_psnr": None})
    return rows


def floor_row(scores: InceptionScores, recon, masked, mask64, gt, blend: str) -> dict:
    """The stage-1 floor: the test images' true tokens decoded (what a perfect stage 2 would give with this
    stage 1), raw and put into the input as the composites are."""
    comp = blender(blend, mask64)(recon, masked)
    return {"name": FLOOR, "kind": "floor", **scored(scores, recon, FLOOR_LABELS["raw"], "raw"),
            **scored(scores, comp, FLOOR_LABELS["composite"], "composite"),
            "hole_psnr": None if gt is None else round(hole_psnr(comp, gt, mask64), 3)}


def configurations(scores: InceptionScores, mask64, gt) -> list[dict]:
    rows = []
    # a hidden folder is a run's temporary (killed before it was complete): never a result
    for folder in sorted(p for p in RESULTS.glob("*/summary.json") if not p.parent.name.startswith(".")):
        s = json.loads(folder.read_text())
        out = folder.parent
        raw, comp = np.load(out / "raw.npy"), np.load(out / "composite.npy")
        rows.append({"name": s["name"], "kind": "headline" if s["name"] == "headline" else "sweep",
                     "schedule": s["schedule"], "T": s["T"], "sweet_spot": s["sweet_spot"],
                     "steps_run": s["steps_run"], **scored(scores, raw, f"{s['name']} raw", "raw"),
                     **scored(scores, comp, f"{s['name']} composite", "composite"),
                     "hole_psnr": None if gt is None else round(hole_psnr(comp, gt, mask64), 3),
                     "decode_seconds": s["decode_seconds"], "images_per_s": s["images_per_s"],
                     "pictures": sorted(str(p) for p in (out / "pictures").glob("*.png"))})
    if not rows:
        raise ConfigError(f"no inpainting results under {RESULTS}: run the `inpaint` stages first")
    return rows


def compare_with_best(scores: InceptionScores, rows: list[dict], best: dict, primary: str) -> None:
    """Each configuration's KID minus the best one's (by the primary FID), on the primary output, with the
    paired error: whether the best's lead holds on this test set."""
    output = primary.split("_")[1]
    for row in rows:
        diff = scores.kid_vs(f"{row['name']} {output}", f"{best['name']} {output}") if row.get("schedule") else None
        if diff is not None:
            row["kid_vs_best"], row["kid_vs_best_se"] = diff


def samples_picture(name: str, masked, telea, gt) -> np.ndarray:
    """The report's figure: a column per test image; rows: the masked input, OpenCV Telea, configuration
    `name`'s raw decode and composite, and the ground truth when there is one."""
    n = min(SAMPLES, len(masked))
    out = RESULTS / name
    rows = [masked[:n], telea[:n], np.load(out / "raw.npy")[:n], np.load(out / "composite.npy")[:n]]
    if gt is not None:
        rows.append(gt[:n])
    return image_grid(rows).repeat(2, 0).repeat(2, 1)  # 2x, nearest: readable at a glance


def recon_floor(device, gt_tokens_path: Path, batch_size: int):
    if not gt_tokens_path.exists():
        return None
    import torch

    from stages.vqgan import decode_images, load_frozen

    tokens = torch.from_numpy(np.load(gt_tokens_path).astype(np.int64)).to(device)
    return decode_images(load_frozen(device), tokens, batch_size)


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("--against", type=Path, nargs="*", default=[],
                            help="leave-one-out files of earlier runs on the same test images: print this run's "
                                 "KIDs minus theirs with paired errors")

    cfg, a = cli(__doc__, args, argv)
    device = pick_device(cfg["device"])
    t0 = time.time()
    masked, mask64 = np.load(PREPARED / "masked.npy"), np.load(PREPARED / "mask64.npy")
    gt = np.load(PREPARED / "gt.npy") if (PREPARED / "gt.npy").exists() else None
    test_key = None if gt is None else content_key(gt)
    if a.against and test_key is None:
        raise ConfigError("--against: this test set has no ground truth, so no KID to compare")
    against = {path: load_leave_one_out(path, test_key) for path in a.against}  # checked before scoring
    scores = InceptionScores(device, cfg["evaluate"]["batch_size"], test_key)
    seconds, lap = {"setup": time.time() - t0}, time.time()
    rows = configurations(scores, mask64, gt)
    seconds["configurations"], lap = time.time() - lap, time.time()
    recon = recon_floor(device, Path("data/tokens/test_gt.npy"), cfg["inpaint"]["batch_size"])
    telea = opencv_inpaint(masked, mask64, "telea")
    rows += baselines(scores, masked, mask64, gt, recon, telea, cfg["inpaint"]["blend"])
    seconds["baselines and floor"], lap = time.time() - lap, time.time()
    primary = "fid_composite" if cfg["inpaint"]["composite"] else "fid_raw"
    shown = report.shown_config(rows, primary, scores.available)
    if scores.available:
        compare_with_best(scores, rows, shown, primary)
    with atomic_file(REPORTS / "samples.png") as tmp:
        save_png(samples_picture(shown["name"], masked, telea, gt), tmp)
    with atomic_dir(REPORTS / "pictures") as pics:
        for row in rows:
            copied = []
            for pic in row.pop("pictures", []):
                (pics / row["name"]).mkdir(exist_ok=True)
                shutil.copy(pic, pics / row["name"] / Path(pic).name)
                copied.append(f"pictures/{row['name']}/{Path(pic).name}")
            if copied:
                row["pictures"] = copied
    report.write_all(REPORTS, rows, primary, scores.available, round(time.time() - t0, 1), shown["name"],
                     cfg["inpaint"]["blend"])
    scores.prune()
    save_leave_one_out(LEAVE_ONE_OUT, test_key or "", scores.leave_one_out)  # empty without KID
    seconds["pictures and report"] = time.time() - lap
    print(f"evaluate: {len(rows)} rows in {time.time() - t0:.0f} s; see reports/README.md")
    # where the time went (the two middle phases hold the Inception passes)
    print("evaluate: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
          + f"; Inception features of {scores.computed} image sets {scores.feature_seconds:.1f} s,"
          f" {len(scores.used) - scores.computed} from the cache")
    for path, theirs in against.items():
        print(f"evaluate: KID x 10^3 minus {path}'s, ± the paired error over the test images:")
        for label, (diff, se) in kid_differences(scores.leave_one_out, theirs).items():
            print(f"  {label:<28} {diff:+8.3f} ± {se:.3f}")


if __name__ == "__main__":
    run(main)
