"""Stage `evaluate`: FID and KID of every inpainting configuration against the test set, into reports/.

Reads data/fid/reference/stats.npz (ground-truth features and statistics, the scores of held-out real images),
the folder under results/inpaint/ of each configuration the parameters name (the `sweep` grid and the headline;
any other folder there is left out, and named), the baselines a user has without a model (the grey-hole input, OpenCV Telea and
Navier-Stokes) plus the stage-1 floor (the VQGAN's reconstruction of the unmasked test images).
Writes reports/comparison.csv and .md, reports/fid_vs_T.png, reports/fid_vs_sweet_spot.png,
reports/plots/*.csv, reports/pictures/, reports/samples.png (the first test images through the best
configuration, beside Telea and the ground truth), reports/metrics.json (the headline configuration's
FID), reports/README.md and reports/lineage.json; all of them replace the last run's together
(`published_together`). results/leave_one_out.npz keeps every scored set's leave-one-out KID values, so
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
from pipeline.schema import headline_point, sweep_points
from pipeline.files import PUBLISHING, check_writable, content_key, published_together, save_png
from pipeline.lineage import Lineage
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


def configured_folders(cfg: dict, lineage: Lineage) -> list[Path]:
    """The results folder of every configuration the parameters name, each checked (`Lineage.read`); the other
    folders under results/inpaint/ are named, and left out."""
    points = sweep_points(cfg) + [headline_point(cfg)]
    folders = [RESULTS / name for *_, name in points]
    for folder in folders:
        for name in ("summary.json", "raw.npy", "composite.npy"):
            lineage.read(folder / name, "inpaint_headline" if folder.name == "headline" else "inpaint")
    named = {folder.name for folder in folders}
    others = sorted(p.name for p in RESULTS.iterdir() if p.is_dir() and p.name not in named
                    and not p.name.startswith("."))  # a hidden folder is a killed run's temporary
    if others:
        print(f"evaluate: not scored, as neither the `sweep` grid nor the headline names them: "
              f"{', '.join(others)} (under {RESULTS}/)")
    return folders


def configurations(scores: InceptionScores, folders: list[Path], mask64, gt) -> list[dict]:
    rows = []
    for out in folders:
        s = json.loads((out / "summary.json").read_text())
        raw, comp = np.load(out / "raw.npy"), np.load(out / "composite.npy")
        rows.append({"name": s["name"], "kind": "headline" if s["name"] == "headline" else "sweep",
                     "schedule": s["schedule"], "T": s["T"], "sweet_spot": s["sweet_spot"],
                     "steps_run": s["steps_run"], **scored(scores, raw, f"{s['name']} raw", "raw"),
                     **scored(scores, comp, f"{s['name']} composite", "composite"),
                     "hole_psnr": None if gt is None else round(hole_psnr(comp, gt, mask64), 3),
                     "decode_seconds": s["decode_seconds"], "images_per_s": s["images_per_s"],
                     "pictures": sorted(str(p) for p in (out / "pictures").glob("serial_*"))})
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


def recon_floor(device, lineage: Lineage, batch_size: int):
    """The test images' own tokens decoded, or None where the test set has no ground truth."""
    if not (TOKENS / "test_gt.npy").exists():
        return None
    tokens = torch.from_numpy(np.load(lineage.read(TOKENS / "test_gt.npy", "tokens")).astype(np.int64)).to(device)
    return decode_images(load_vqgan(device, lineage), tokens, batch_size)


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("--against", type=Path, nargs="*", default=[],
                            help="leave-one-out files of earlier runs on the same test images: print this run's "
                                 "KIDs minus theirs with paired errors")

    cfg, a = cli(__doc__, args, argv)
    device = pick_device(cfg["device"])
    t0 = time.time()
    check_writable(REPORTS / "README.md", LEAVE_ONE_OUT, PUBLISHING)
    lineage = Lineage(cfg)

    def test_array(name):
        return np.load(lineage.read(TEST / name, "prepare"))

    masked, mask64 = test_array("masked.npy"), test_array("mask64.npy")
    gt = test_array("gt.npy") if (TEST / "gt.npy").exists() else None
    test_key = None if gt is None else content_key(gt)
    if a.against and test_key is None:
        raise ConfigError("--against: this test set has no ground truth, so no KID to compare")
    against = {path: load_leave_one_out(path, test_key) for path in a.against}  # checked before scoring
    folders = configured_folders(cfg, lineage)
    scores = InceptionScores(device, cfg["evaluate"]["batch_size"], test_key, lineage)
    seconds, lap = {"setup": time.time() - t0}, time.time()
    rows = configurations(scores, folders, mask64, gt)
    seconds["configurations"], lap = time.time() - lap, time.time()
    recon = recon_floor(device, lineage, cfg["inpaint"]["batch_size"])
    telea = opencv_inpaint(masked, mask64, "telea")
    rows += baselines(scores, masked, mask64, gt, recon, telea, cfg["inpaint"]["blend"])
    seconds["baselines and floor"], lap = time.time() - lap, time.time()
    primary = "fid_composite" if cfg["inpaint"]["composite"] else "fid_raw"
    shown = report.shown_config(rows, primary, scores.available)
    if scores.available:
        compare_with_best(scores, rows, shown, primary)
    with published_together(REPORTS, LEAVE_ONE_OUT.parent) as staging:
        reports = staging / REPORTS
        (reports / "pictures").mkdir()
        save_png(samples_picture(shown["name"], masked, telea, gt), reports / "samples.png")
        for row in rows:
            copied = []
            for pic in row.pop("pictures", []):
                if pic.endswith(".gif") and row["name"] != shown["name"]:  # the report animates one configuration
                    continue
                (reports / "pictures" / row["name"]).mkdir(exist_ok=True)
                shutil.copy(pic, reports / "pictures" / row["name"] / Path(pic).name)
                copied.append(f"pictures/{row['name']}/{Path(pic).name}")
            if copied:
                row["pictures"] = copied
        report.write_all(reports, rows, primary, scores.available, round(time.time() - t0, 1), shown["name"],
                         cfg["inpaint"]["blend"])
        save_leave_one_out(staging / LEAVE_ONE_OUT, test_key or "", scores.leave_one_out)  # empty without KID
        lineage.write(reports, REPORTS, "evaluate")
    scores.prune()
    seconds["pictures and report"] = time.time() - lap
    print(f"evaluate: {len(rows)} rows in {time.time() - t0:.0f} s; see {REPORTS}/README.md")
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
