"""Run the whole pipeline in order without DVC (for GPU machines that lack it), then print the time
each stage took (on a GPU also its peak memory; both in reports/timings.json). Writes the same outputs
as `dvc repro`. Every parameter is checked before the first stage runs (`cli` checks them all).

    python -m commands.run_all -S profile=lab -S data.source=.data/cats64

The stages run in this one process, each exactly as `python -m stages.<name>` would run it: torch is
imported and CUDA started once instead of once a stage. No
stage draws from a random state it did not seed itself, and between stages the compiled graphs and the
GPU memory the last one left are released, so each stage's outputs are those of its own process
(tests/test_pipeline.py compares them). In a DVC project the run ends recorded in DVC (`record_in_dvc`),
so that `dvc exp run` and `dvc status` take its outputs as the pipeline's.
"""
from __future__ import annotations

import gc
import importlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from pipeline.config import ConfigError, StageFailed, cli, run, write_overrides
from pipeline.files import save_json
from pipeline.paths import REPORTS
from pipeline.runtime import pick_device
from pipeline.schema import sweep_points

HEADINGS = {"stage": "stage", "seconds": "seconds", "peak_gpu_gib": "peak GPU memory (GiB)"}  # timings.json → table

def plan(cfg: dict) -> list[tuple[str, list[str], str]]:
    """(stage, its extra arguments, its label in the timing table) in pipeline order."""
    points = len(sweep_points(cfg))
    return [(name, [], name) for name in ("prepare", "vqgan", "tokens", "train")] + [
        # the sweep and the headline in one call: the models load once
        ("inpaint", ["--sweep", "--headline"], f"inpaint sweep ({points} configurations) and headline"),
        ("fid_reference", [], "fid_reference"), ("evaluate", [], "evaluate")]


def peak_gpu_memory(device: torch.device) -> dict:
    """{"peak_gpu_gib": the most memory tensors held on `device` since the last reset}, {} off a GPU."""
    if device.type != "cuda":
        return {}
    return {"peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1)}


def release() -> None:
    """What a finished stage leaves behind: its compiled graphs (which hold on to its modules) and the
    GPU memory its tensors held."""
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def record_in_dvc(overrides: list[str], skipped: bool) -> None:
    """In a DVC project, record what this run made as the pipeline's outputs (`dvc commit`), with the -S
    overrides written into params.yaml first, as `dvc exp run -S` writes them. Unrecorded, the outputs are
    unknown to DVC, and a later `dvc exp run` removes them as stale before it fails."""
    if not (Path(".dvc").is_dir() and Path("dvc.yaml").is_file()):
        return
    dvc = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    if dvc is None or skipped:
        why = "dvc is not installed here" if dvc is None else "stages were skipped"
        print(f"\nrun_all: {why}, so DVC does not know these outputs: before `dvc exp run` or `dvc repro` in this "
              "folder, put the -S values into params.yaml and run `dvc commit -f`, or the outputs are replaced")
        return
    if overrides:
        write_overrides(overrides)
    proc = subprocess.run([dvc, "commit", "--force", "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise StageFailed(f"dvc commit failed, so DVC does not know these outputs: {proc.stderr.strip()[-500:]}")
    print("\nrun_all: recorded in DVC (dvc commit)" + (", the -S values written into params.yaml" if overrides else ""))


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("--skip", nargs="*", default=[], help="stages to skip (e.g. evaluate)")

    cfg, a = cli(__doc__, args, argv)
    stages = [(stage, importlib.import_module(f"stages.{stage}"), extra, label)
              for stage, extra, label in plan(cfg) if stage not in a.skip]
    overrides = [x for o in a.overrides for x in ("-S", o)]
    device = pick_device(cfg["device"])  # on a GPU each stage's peak memory too: what a smaller card must hold
    timings = []
    total = time.time()
    for stage, module, extra, label in stages:
        t0 = time.time()
        print(f"\n=== {label}", flush=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            module.main([*overrides, *extra])
        except (ConfigError, StageFailed) as e:
            raise type(e)(f"stage {stage}: {e}") from None
        finally:
            release()
        timings.append({"stage": label, "seconds": round(time.time() - t0, 1), **peak_gpu_memory(device)})
    timings.append({"stage": "total", "seconds": round(time.time() - total, 1)})
    if device.type == "cuda":
        timings[-1]["peak_gpu_gib"] = max((t["peak_gpu_gib"] for t in timings[:-1]), default=0.0)
    save_json(timings, REPORTS / "timings.json")
    record_in_dvc(a.overrides, skipped=bool(a.skip))
    print("\n" + pd.DataFrame(timings).rename(columns=HEADINGS).to_markdown(index=False))


if __name__ == "__main__":
    run(main)
