"""Study: MaskGIT's confidence (log p + noise) against the lab's (p + noise), on trained models.

Run from the project root after the models, token cache and FID reference exist for SETTINGS (for example
`python -m commands.run_all $SETTINGS --skip inpaint evaluate`):

    python -m studies.confidence --runs 4.5:0 4.5:1 1.0:0 --out docs/records/confidence_cpu.json -- -S ...

For each run (a choice temperature and a decode seed) it decodes the sweep under both forms (`inpaint.confidence`),
scores each with `evaluate`, and pairs every maskgit set's KID with the lab set of the same configuration,
temperature and seed, over the test images. Prints a markdown table; writes every figure to --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.files import content_key
from pipeline.paths import LEAVE_ONE_OUT, REPORTS, TEST
from pipeline.scoring import load_leave_one_out, scaled_difference


def stage(name: str, settings: list[str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"stages.{name}", *settings, *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["4.5:0", "4.5:1", "1.0:0"],
                        help="choice temperature:decode seed pairs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("settings", nargs=argparse.REMAINDER, help="-- then the -S settings of the run")
    a = parser.parse_args()
    settings = [s for s in a.settings if s != "--"]
    test_key = content_key(np.load(TEST / "gt.npy"))
    kept = Path(".study_confidence")
    kept.mkdir(exist_ok=True)
    rows = []
    for temperature, seed in ((float(t), int(s)) for t, s in (run.split(":") for run in a.runs)):
        loo = {}
        for form in ("lab", "maskgit"):
            run = [*settings, "-S", f"inpaint.confidence={form}", "-S", f"inpaint.choice_temperature={temperature}",
                   "-S", f"inpaint.seed={seed}"]
            stage("inpaint", run, "--sweep", "--headline")
            stage("evaluate", run)
            shutil.copy(LEAVE_ONE_OUT, kept / f"{form}-{temperature}-{seed}.npz")
            loo[form] = load_leave_one_out(kept / f"{form}-{temperature}-{seed}.npz", test_key)
            with open(REPORTS / "comparison.csv") as f:
                for row in csv.DictReader(f):
                    if row["schedule"] and row["name"] != "headline":
                        rows.append({"temperature": temperature, "seed": seed, "confidence": form,
                                     "name": row["name"], "fid_raw": float(row["fid_raw"]),
                                     "fid_composite": float(row["fid_composite"]),
                                     "kid_composite": float(row["kid_composite"]),
                                     "hole_psnr": float(row["hole_psnr"])})
        for row in rows:
            if row["confidence"] == "maskgit" and row["temperature"] == temperature and row["seed"] == seed:
                label = f"{row['name']} composite"
                row["kid_composite_minus_lab"] = scaled_difference(loo["maskgit"][label], loo["lab"][label])
    result = {"study": "inpaint.confidence: maskgit (log p + noise) against lab (p + noise)",
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}", "settings": settings,
              "rows": rows}
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| temperature | seed | configuration | FID composite lab / maskgit | FID raw lab / maskgit | "
          "KID composite maskgit minus lab |\n|---|---|---|---|---|---|")
    lab = {(r["temperature"], r["seed"], r["name"]): r for r in rows if r["confidence"] == "lab"}
    for r in rows:
        if r["confidence"] == "maskgit":
            base = lab[r["temperature"], r["seed"], r["name"]]
            diff, se = r["kid_composite_minus_lab"]
            print(f"| {r['temperature']} | {r['seed']} | {r['name']} | {base['fid_composite']:.2f} / {r['fid_composite']:.2f} "
                  f"| {base['fid_raw']:.1f} / {r['fid_raw']:.1f} | {diff:+.3f} ± {se:.3f} |")


if __name__ == "__main__":
    main()
