"""Run the whole pipeline in order without DVC (for GPU machines that lack it), then print the time
each stage took. Writes the same outputs as `dvc repro`. Every stage's settings are checked before
the first stage runs.

    python -m stages.run_all -S profile=lab -S data.source=.data/cats64
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import time

from stages.common import save_json
from stages.config import cli, run


def plan(cfg: dict) -> list[tuple[str, list[str]]]:
    sweep = cfg["sweep"]
    steps = [("prepare", []), ("vqgan", []), ("tokens", []), ("train", [])]
    points = len(sweep["schedule"]) * len(sweep["T"]) * len(sweep["sweet_spot"])
    # One process for the sweep and the headline: the models load (and CUDA starts) once.
    steps += [(f"inpaint sweep ({points} configurations) and headline", ["--sweep", "--headline"]),
              ("fid_reference", []), ("evaluate", [])]
    return steps


def main() -> None:
    def args(parser):
        parser.add_argument("--skip", nargs="*", default=[], help="stages to skip (e.g. evaluate)")

    cfg, a = cli(__doc__, args)
    stages = [(name, extra) for name, extra in plan(cfg) if name.split()[0] not in a.skip]
    for name, _ in stages:  # every stage's settings, before the first one runs: a typo fails now, not after training
        check = getattr(importlib.import_module(f"stages.{name.split()[0]}"), "check_params", None)
        if check:
            check(cfg)
    overrides = [x for o in a.overrides for x in ("-S", o)]
    timings = []
    total = time.time()
    for name, extra in stages:
        t0 = time.time()
        print(f"\n=== {name}", flush=True)
        proc = subprocess.run([sys.executable, "-m", f"stages.{name.split()[0]}", *overrides, *extra])
        timings.append({"stage": name, "seconds": round(time.time() - t0, 1)})
        if proc.returncode != 0:
            print(f"run_all: stage {name} failed (exit {proc.returncode})", file=sys.stderr)
            sys.exit(proc.returncode)
    timings.append({"stage": "total", "seconds": round(time.time() - total, 1)})
    save_json(timings, "reports/timings.json")
    print("\n| stage | seconds |\n|---|---|")
    for t in timings:
        print(f"| {t['stage']} | {t['seconds']} |")


if __name__ == "__main__":
    run(main)
