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
import torch

from model.baselines import hole_psnr, opencv_inpaint
from model.blend import blender
from pipeline import report
from pipeline.config import ConfigError, cli, run
from pipeline.files import atomic_dir, atomic_file, content_key, save_png
from pipeline.paths import LEAVE_ONE_OUT, REPORTS, RESULTS, TEST, TOKENS
from pipeline.pictures import image_grid
from pipeline.runtime import pick_device
from pipeline.scoring import InceptionScores, kid_differences, load_leave_one_out, save_leave_one_out
from pipeline.vqgan_loader import decode_images, load_vqgan

SAMPLES = 8  # the first test images: the same ones in every experiment
FLOOR = "stage-1 reconstruction (floor)"
FLOOR_LABELS = {"raw": "floor", "composite": "floor composite"}  # output: the label the floor's set is scored under


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
    tokens = torch.from_numpy(np.load(gt_tokens_path).astype(np.int64)).to(device)
    return decode_images(load_vqgan(device), tokens, batch_size)


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("--against", type=Path, nargs="*", default=[],
                            help="leave-one-out files of earlier runs on the same test images: print this run's "
                                 "KIDs minus theirs with paired errors")

    cfg, a = cli(__doc__, args, argv)
    device = pick_device(cfg["device"])
    t0 = time.time()
    masked, mask64 = np.load(TEST / "masked.npy"), np.load(TEST / "mask64.npy")
    gt = np.load(TEST / "gt.npy") if (TEST / "gt.npy").exists() else None
    test_key = None if gt is None else content_key(gt)
    if a.against and test_key is None:
        raise ConfigError("--against: this test set has no ground truth, so no KID to compare")
    against = {path: load_leave_one_out(path, test_key) for path in a.against}  # checked before scoring
    scores = InceptionScores(device, cfg["evaluate"]["batch_size"], test_key)
    seconds, lap = {"setup": time.time() - t0}, time.time()
    rows = configurations(scores, mask64, gt)
    seconds["configurations"], lap = time.time() - lap, time.time()
    recon = recon_floor(device, TOKENS / "test_gt.npy", cfg["inpaint"]["batch_size"])
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
