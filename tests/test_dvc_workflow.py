"""The DVC workflow from a fresh clone: repro, experiments on the headline and on the test holes' prefill (each
running only the stages it changes), metrics diff, plots."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tiny import TINY
from conftest import REPO
from pipeline.config import parse_overrides, set_dotted

DVC = Path(sys.executable).parent / "dvc"
pytestmark = pytest.mark.skipif(not DVC.exists() or not (REPO / ".git").exists(), reason="needs dvc and a git checkout")


def sh(cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(cwd),
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def metrics_files(tree, name):
    """Every `name` metrics file's data in `dvc exp show --json`'s output, wherever it nests them."""
    if isinstance(tree, dict):
        if name in tree and isinstance(tree[name], dict) and "data" in tree[name]:
            yield tree[name]["data"]
        for value in tree.values():
            yield from metrics_files(value, name)
    elif isinstance(tree, list):
        for value in tree:
            yield from metrics_files(value, name)


def tiny_clone(tmp_path, schedules=("cosine", "square")) -> Path:
    """A git clone of the project with the working tree's code and TINY sizes in its params.yaml, committed."""
    clone = tmp_path / "clone"
    sh(f"git clone -q {REPO} {clone}", tmp_path)
    # Working-tree versions of the code, so the test checks what is being changed, not the last commit.
    for sub in ("stages", "commands", "pipeline", "model", "dvc.yaml", "params.yaml"):
        src = REPO / sub
        shutil.copytree(src, clone / sub, dirs_exist_ok=True) if src.is_dir() else shutil.copy(src, clone / sub)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny = {**parse_overrides(TINY), "sweep.schedule": list(schedules), "sweep.T": [2], "sweep.sweet_spot": [0],
            "T": 2}  # the headline is the sweep's cosine point: evaluate finds its features cached
    for key, value in tiny.items():
        set_dotted(params, key, value)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git add -A && git commit -qm tiny", clone)
    return clone


@pytest.mark.slow
def test_repro_then_experiment_on_the_headline(tmp_path):
    clone = tiny_clone(tmp_path)
    # a bad parameter fails in the first stage DVC runs, in seconds, not after training
    out = sh("dvc exp run -S T=0; echo exit=$?", clone, check=False)
    assert "exit=0" not in out and "T is 0; expected a positive integer" in out, out
    assert ran_stages(out) == {"prepare"} and not (clone / "data" / "prepared").exists()
    sh("git checkout -q params.yaml", clone)

    out = sh("dvc repro", clone)
    assert {"prepare", "vqgan", "tokens", "train", "inpaint@cosine-2-0", "inpaint@square-2-0", "inpaint_headline",
            "fid_reference", "evaluate"} <= ran_stages(out)
    assert (clone / "reports" / "metrics.json").exists() and (clone / "reports" / "README.md").exists()
    sh("git add -A && git commit -qm baseline", clone)
    # another kind of test hole makes another test set only: prepare and tokens rerun and write the same train and
    # val outputs, so neither training stage (nor the FID reference of the same images) is out of date
    params = clone / "params.yaml"
    params.write_text(params.read_text().replace("masks: brush", "masks: outpaint"))
    sh("dvc repro -s prepare && dvc repro -s tokens && dvc status --json > status.json", clone)
    status = json.loads((clone / "status.json").read_text())
    assert not {"vqgan", "train", "fid_reference"} & set(status), status
    assert {"inpaint_headline", "inpaint@cosine-2-0", "evaluate"} <= set(status), status
    known = np.load(clone / "data" / "prepared" / "test" / "mask64.npy") == 255
    for region in known:  # outpaint: the known part of every test image is one rectangle
        ys, xs = np.nonzero(region)
        assert region.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) < region.size
    sh("git checkout -q params.yaml dvc.lock && dvc checkout --force -q", clone)
    # an edit of stage 2's training loop reruns stage 2 and what reads its model, but no decode stage is out of
    # date before that: their own code and inputs did not change
    for path in ("stages/train.py", "model/mvtm.py"):
        with open(clone / path, "a") as f:
            f.write("\n# edited\n")
    sh("dvc status --json > status.json", clone)
    status = json.loads((clone / "status.json").read_text())
    assert "train" in status and not [name for name in status if name.startswith("inpaint")], status
    sh("git checkout -q stages/train.py model/mvtm.py", clone)

    out = sh("dvc exp run -S schedule=linear -S T=3", clone)
    assert ran_stages(out) == {"inpaint_headline", "evaluate"}
    diff = sh("dvc metrics diff --all", clone)
    assert "headline.schedule" in diff and "linear" in diff and "headline.fid_composite" in diff
    # the training curves and metrics are dvclive's: dvc exp show reads stage 2's validation loss back
    sh("dvc exp show --json > exps.json", clone)
    assert "linear" in (clone / "exps.json").read_text()  # the experiment, with its parameters
    found = list(metrics_files(json.loads((clone / "exps.json").read_text()), "reports/train/metrics.json"))
    assert found and all(math.isfinite(m["val"]["val_loss"]) and "best_val_loss" in m for m in found), found
    assert any(m["val"]["val_loss"] > 0 for m in found)
    # the test images' prefill changes their tokens only: stage 2, which reads the train and val caches, stays
    out = sh("dvc exp run -S tokens.prefill=ns", clone)
    assert ran_stages(out) == {"tokens", "inpaint@cosine-2-0", "inpaint@square-2-0", "inpaint_headline", "evaluate"}
    sh("dvc plots show -o plots_html", clone)
    assert (clone / "plots_html" / "index.html").stat().st_size > 1000
    # a shrunk sweep: no decode is out of date, evaluate reruns and no longer scores the removed point
    out = sh("dvc exp run -S 'sweep.schedule=[cosine]'", clone)
    assert ran_stages(out) == {"evaluate"}, out
    table = (clone / "reports" / "comparison.csv").read_text()
    assert "cosine-T2-s0" in table and "square-T2-s0" not in table


@pytest.mark.slow
def test_an_experiment_after_run_all_keeps_what_run_all_trained(tmp_path):
    """The GPU path (run_all, no DVC stage runs), then `dvc exp run`: run_all recorded its outputs in DVC, so the
    experiment reruns only what the change touches instead of removing the models it did not know."""
    clone = tiny_clone(tmp_path, schedules=("cosine",))
    out = sh(f"{sys.executable} -m commands.run_all -S inpaint.seed=1", clone)
    assert "recorded in DVC" in out
    text = (clone / "params.yaml").read_text()
    assert "seed: 1" in text.split("inpaint:")[1].split("evaluate:")[0]  # the -S value, as dvc exp run -S writes it
    assert "changed" not in sh("dvc status", clone)
    weights = (clone / "models" / "vqgan" / "vqgan.pt").read_bytes()
    out = sh("dvc exp run -S T=3 -s inpaint_headline", clone)
    assert ran_stages(out) == {"inpaint_headline"}
    assert (clone / "models" / "vqgan" / "vqgan.pt").read_bytes() == weights
    assert (clone / "models" / "transformer" / "transformer.pt").exists() and (clone / "data" / "tokens").is_dir()
    out = sh("dvc exp run -S T=4", clone)
    assert ran_stages(out) == {"inpaint_headline", "evaluate"}
    assert (clone / "models" / "vqgan" / "vqgan.pt").read_bytes() == weights
