"""Run the whole pipeline in order without DVC (for GPU machines that lack it), then print the time
each stage took (and on a GPU its peak memory; also in reports/timings.json). Writes the same outputs as `dvc repro`. Every stage's settings are checked before
the first stage runs.

    python -m stages.run_all -S profile=lab -S data.source=.data/cats64

The stages run in this one process, each exactly as `python -m stages.<name>` would run it: torch is
imported and CUDA started once instead of once a stage (`bench.run_all` measures what that saves). No
stage draws from a random state it did not seed itself, and between stages the compiled graphs and the
GPU memory the last one left are released, so each stage's outputs are those of its own process
(tests/test_pipeline.py compares them).
"""
from __future__ import annotations

import gc
import importlib
import sys
import time

import torch

from stages.common import pick_device, save_json
from stages.config import ConfigError, StageFailed, cli, run


def plan(cfg: dict) -> list[tuple[str, list[str]]]:
    sweep = cfg["sweep"]
    steps = [("prepare", []), ("vqgan", []), ("tokens", []), ("train", [])]
    points = len(sweep["schedule"]) * len(sweep["T"]) * len(sweep["sweet_spot"])
    # The sweep and the headline in one call: the models load once.
    steps += [(f"inpaint sweep ({points} configurations) and headline", ["--sweep", "--headline"]),
              ("fid_reference", []), ("evaluate", [])]
    return steps


def release() -> None:
    """What a finished stage leaves behind: its compiled graphs (which hold on to its modules) and the
    GPU memory its tensors held."""
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    def args(parser):
        parser.add_argument("--skip", nargs="*", default=[], help="stages to skip (e.g. evaluate)")

    cfg, a = cli(__doc__, args)
    stages = [(name, importlib.import_module(f"stages.{name.split()[0]}"), extra)
              for name, extra in plan(cfg) if name.split()[0] not in a.skip]
    for _, module, _ in stages:  # every stage's settings, before the first one runs: a typo fails now, not after training
        check = getattr(module, "check_params", None)
        if check:
            check(cfg)
    overrides = [x for o in a.overrides for x in ("-S", o)]
    device = pick_device(cfg["device"])
    gpu = device.type == "cuda"  # then each stage's peak GPU memory too: what a smaller card must hold
    timings = []
    total = time.time()
    for name, module, extra in stages:
        t0 = time.time()
        print(f"\n=== {name}", flush=True)
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        try:
            module.main([*overrides, *extra])
        except (ConfigError, StageFailed) as e:
            raise type(e)(f"stage {name.split()[0]}: {e}") from None
        finally:
            release()
        timings.append({"stage": name, "seconds": round(time.time() - t0, 1)})
        if gpu:
            timings[-1]["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    timings.append({"stage": "total", "seconds": round(time.time() - total, 1)})
    if gpu:
        timings[-1]["peak_gpu_gib"] = max((t["peak_gpu_gib"] for t in timings[:-1]), default=0.0)
    save_json(timings, "reports/timings.json")
    print("\n| stage | seconds |" + (" peak GPU memory (GiB) |" if gpu else "") + "\n|---|---|" + ("---|" if gpu else ""))
    for t in timings:
        print(f"| {t['stage']} | {t['seconds']} |" + (f" {t['peak_gpu_gib']} |" if gpu else ""))


if __name__ == "__main__":
    run(main)
