"""What a process per stage costs: the whole pipeline at tiny sizes (`bench.tiny`: about a second of work
a stage) with each of run_all's seven stages a fresh `python -m stages.<name>`, as DVC runs stages (DVC
also gives each sweep point its own), against `stages.run_all`, every stage in one process; alternating,
in a fresh folder each time, medians of --repeat.

    python -m bench.run_all [--repeat 3]

The difference is what each further process pays to start: the interpreter, torch and the stage's
imports, and on a GPU machine CUDA's start. Both ways run on this machine's default device; the FID
stages run only where the Inception weights are installed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import machine
from bench.tiny import TINY
from model.fid import inception_weights
from stages.common import pick_device
from stages.config import load
from stages.run_all import plan

REPO = Path(__file__).resolve().parents[1]


def fid_weights() -> dict:
    """The Inception weights' path as an absolute MASKGIT_FID_WEIGHTS (the stages run in another folder),
    or {} where they are not installed."""
    try:
        path = inception_weights()
    except FileNotFoundError:
        return {}
    return {"MASKGIT_FID_WEIGHTS": str(path.resolve())} if path.exists() else {}


def project_folder(path: Path) -> Path:
    """An empty project: the stages need only params.yaml (and the data source, built in at TINY)."""
    path.mkdir()
    shutil.copy(REPO / "params.yaml", path / "params.yaml")
    return path


def timed_run(folder: Path, module: str, args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, *args], cwd=folder, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(repeat: int = 3) -> dict:
    settings = [x for o in TINY for x in ("-S", o)]
    weights = fid_weights()
    env = {**os.environ, "PYTHONPATH": str(REPO), **weights}
    skipped = [] if weights else ["fid_reference", "evaluate"]
    stages = [(stage, extra) for stage, extra, _ in plan(load(TINY)) if stage not in skipped]
    times = {"separate": [], "one_process": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            folder = project_folder(Path(tmp) / "separate")
            times["separate"].append(sum(timed_run(folder, f"stages.{name}", [*settings, *extra], env)
                                         for name, extra in stages))
            folder = project_folder(Path(tmp) / "one_process")
            times["one_process"].append(timed_run(folder, "stages.run_all", [*settings, "--skip", *skipped], env))
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    saved = median["separate"] - median["one_process"]
    return {"benchmark": "the pipeline at tiny sizes: a process per stage against run_all's one process",
            "machine": machine(pick_device("auto")), "torch": torch.__version__,
            "stages": [name for name, _ in stages], "repeat": repeat,
            "separate_s": round(median["separate"], 2), "one_process_s": round(median["one_process"], 2),
            "saved_s": round(saved, 2), "saved_per_further_stage_s": round(saved / (len(stages) - 1), 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    a = parser.parse_args()
    print(json.dumps(run(a.repeat), indent=2))


if __name__ == "__main__":
    main()
