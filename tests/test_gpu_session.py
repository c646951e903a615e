"""bench/gpu_session.sh, the script a lent GPU machine runs, run here on the CPU at TINY sizes: each phase in
the order a session calls them, in a scratch copy of the project, with its inputs laid out as the script's
header says they are carried. A broken phase found here costs no device minutes."""
import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tiny import TINY
from pipeline.inception import inception_weights
from model.synthetic import synthetic_faces
from pipeline.files import save_png
from conftest import REPO


def session(root, phase, out, *extra, **env):
    settings = [*TINY, "device=cpu", "vqgan.compile=false", "train.compile=false", "sweep.schedule=[cosine]",
                "sweep.T=[4]", "sweep.sweet_spot=[0]", *extra]  # one sweep point: the phases, not the grid
    overrides = " ".join("-S " + o.replace(" ", "") for o in settings)  # the script splits them on spaces
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "OUT": str(out),
           "OVERRIDES": overrides, "BENCH": "0", **env}
    env.pop("MASKGIT_FID_WEIGHTS", None)  # the script finds them in the carried parts, or not at all
    return subprocess.run(["bash", "bench/gpu_session.sh", phase], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)


def members(archive) -> set:
    with tarfile.open(archive) as tar:
        return set(tar.getnames())


def scratch_project(tmp_path):
    """The code, params and dvc.yaml in tmp_path/repo, as a call copies the checkout (without .data)."""
    root = tmp_path / "repo"
    for folder in ("bench", "commands", "model", "pipeline", "stages"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "dvc.yaml"):  # dvc.yaml: which parameters shape each stage's outputs (lineage)
        shutil.copy(REPO / name, root / name)
    return root


def carry_images(root):
    cats = root / ".data" / "cats64"
    cats.mkdir(parents=True)
    for i, face in enumerate(synthetic_faces(240, seed=3)):
        save_png(face, cats / f"cat_{i:03d}.png")


def carry_weights(root, part: int) -> bytes:
    """One of the Inception weights' two parts, each under a call's 64 MiB; the whole file's bytes."""
    weights = inception_weights().read_bytes()
    half = len(weights) // 2
    (root / ".data" / f"fid_part_0{part}").write_bytes(weights[:half] if part == 0 else weights[half:])
    return weights


@pytest.mark.slow
def test_gpu_session_phases_run_in_order_and_bring_back_what_they_promise(tmp_path):
    root, out = scratch_project(tmp_path), tmp_path / "out"
    proc = session(root, "stage1", out)
    assert proc.returncode == 2 and ".data/cats64 is missing" in proc.stderr
    carry_images(root)
    carry_weights(root, 0)

    proc = session(root, "stage1", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [t["stage"] for t in json.loads((out / "timings_stage1.json").read_text())] == [
        "prepare", "vqgan", "tokens", "total"]
    assert "reports/vqgan/plots/metrics/val/val_psnr.tsv" in members(out / "reports_vqgan.tar.gz")

    proc = session(root, "prefill", out)  # before rest: nothing to compare with, and only half the weights
    assert proc.returncode == 2 and "fid_part_00 and _01" in proc.stderr
    weights = carry_weights(root, 1)
    proc = session(root, "prefill", out)
    assert proc.returncode == 2 and "run rest first" in proc.stderr

    proc = session(root, "rest", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / ".data" / "default_1.pt").read_bytes() == weights
    stages = [t["stage"] for t in json.loads((out / "timings_rest.json").read_text())]
    assert stages[0] == "train" and stages[-2:] == ["evaluate", "total"]
    assert {"reports/comparison.csv", "results/leave_one_out.npz",
            "models/vqgan/architecture.json"} <= members(out / "reports.tar.gz")
    grey_tokens = np.load(root / "data" / "tokens" / "test_known.npy")
    grey_kid = dict(np.load(root / "results" / "leave_one_out.npz"))

    proc = session(root, "prefill", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "prefill_ns.log").read_text()
    paired = {line[:30].strip(): line[30:].split("±") for line in log.splitlines() if line.startswith("  ")}
    with tarfile.open(out / "reports_prefill_ns.tar.gz") as tar:
        kid = dict(np.load(tar.extractfile("results/leave_one_out.npz")))
    labels = list(grey_kid["labels"])
    for label in ("cosine-T4-s0 raw", "OpenCV Telea"):  # a decode of the ns tokens, and a baseline they leave alone
        i = labels.index(label)
        diff, _ = (float(x) for x in paired[label])
        assert diff == pytest.approx((kid["kid"][list(kid["labels"]).index(label)] - grey_kid["kid"][i]) * 1e3, abs=1e-3)
        assert (diff != 0) == (label != "OpenCV Telea")
    # rest's tokens and KIDs are back in place for any later phase, also after a prefill that failed
    assert np.array_equal(np.load(root / "data" / "tokens" / "test_known.npy"), grey_tokens)
    assert np.array_equal(np.load(root / "results" / "leave_one_out.npz")["kid"], grey_kid["kid"])
    # evaluate refuses its batch size after tokens and inpaint have run with the ns prefill
    proc = session(root, "prefill", out, "evaluate.batch_size=0")
    assert proc.returncode == 2 and "evaluate.batch_size" in proc.stdout, proc.stdout[-2000:]
    assert np.array_equal(np.load(root / "data" / "tokens" / "test_known.npy"), grey_tokens)

    proc = session(root, "bogus", out)
    assert proc.returncode == 2 and "unknown phase 'bogus'" in proc.stderr
