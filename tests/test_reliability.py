"""The hostile cases of docs/reliability.md that give stale, shrunk, NaN or half-written results, or a traceback,
run through the commands a user types, each against a scratch copy of the tiny trained project."""
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from conftest import REPO, Project
from tiny import TINY

ONE = [*TINY, "sweep.schedule=[cosine]", "sweep.T=[2, 3]", "sweep.sweet_spot=[0]", "T=2"]


@pytest.fixture(scope="module")
def evaluated(tiny_project, tmp_path_factory) -> Project:
    """The tiny trained project with its sweep (cosine at T=2 and 3) decoded and evaluated, made once."""
    root = tmp_path_factory.mktemp("evaluated") / "p"
    shutil.copytree(tiny_project.root, root, ignore=shutil.ignore_patterns("results", "reports"))
    project = Project(root)
    project.run("inpaint", *ONE, args=["--sweep", "--headline"])
    project.run("fid_reference", *ONE)
    project.run("evaluate", *ONE)
    return project


@pytest.fixture
def trained(evaluated, tmp_path) -> Project:
    """A scratch copy of `evaluated`, for a test to break."""
    shutil.copytree(evaluated.root, tmp_path / "p", symlinks=True)
    return Project(tmp_path / "p")


def one_line(err: str) -> bool:
    """Whether stderr ends in one `error: …` line, with no traceback (progress bars may come before it)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    return "Traceback" not in err and len(errors) == 1 and err.strip().endswith(errors[0])


def test_a_stage_refuses_inputs_made_from_other_data(trained):
    """Case 1: new test images from prepare, tokens not rerun: inpaint and show refuse, naming what to rerun."""
    before = trained.path("results", "inpaint", "headline", "composite.npy").read_bytes()
    trained.run("prepare", *ONE, "data.seed=1")
    for command, args in (("inpaint", []), ("show", ["1"])):
        err = trained.fails(command, *ONE, "data.seed=1", args=args)
        assert one_line(err) and "was made with data.seed=0" in err and "rerun `vqgan`" in err, err
        err = trained.fails(command, *ONE, args=args)  # the parameters the models were made with
        assert one_line(err) and "was made from another data/prepared/" in err, err
    assert trained.path("results", "inpaint", "headline", "composite.npy").read_bytes() == before


def test_evaluate_scores_exactly_the_configurations_the_parameters_name(trained):
    """Case 2: a shrunk sweep and a hand-run point are not scored, and are named."""
    trained.run("inpaint", *ONE, args=["--schedule", "square", "--T", "4"])
    out = trained.run("evaluate", *ONE[:-3], "sweep.T=[3]", "sweep.sweet_spot=[0]", "T=2").stdout
    assert "not scored" in out and "cosine-T2-s0" in out and "square-T4-s0" in out
    with open(trained.path("reports", "comparison.csv")) as f:
        names = [row["name"] for row in csv.DictReader(f) if row["schedule"]]
    assert sorted(names) == ["cosine-T3-s0", "headline"]
    err = trained.fails("evaluate", *ONE[:-3], "sweep.T=[5]", "sweep.sweet_spot=[0]", "T=2")
    assert one_line(err) and "results/inpaint/cosine-T5-s0/summary.json not found" in err


def test_tiny_sources_are_refused_before_any_work(project, tmp_path):
    """Case 3: a 3-image archive and a 15-image folder; the rule asks for 10 test images and a training batch."""
    from model.synthetic import synthetic_faces
    from pipeline.files import save_png

    folder = tmp_path / "few"
    folder.mkdir()
    for i, face in enumerate(synthetic_faces(15, seed=1)):
        save_png(face, folder / f"{i}.png")
    err = project.fails("prepare", f"data.source={folder}")
    assert one_line(err) and "15 distinct images" in err and "at least 19 images" in err, err
    with tarfile.open(tmp_path / "three.tar.gz", "w:gz") as t:
        for i in range(3):
            t.add(folder / f"{i}.png", arcname=f"{i}.png")
    err = project.fails("prepare", f"data.source={tmp_path / 'three.tar.gz'}")
    assert one_line(err) and "3 distinct images" in err
    assert not project.path("data", "prepared").exists()


def test_a_score_that_is_not_a_number_is_an_error(tiny_project, monkeypatch):
    """Case 3: one image has no covariance: its FID is an error naming the set, never NaN."""
    from pipeline.config import StageFailed, load
    from pipeline.files import content_key
    from pipeline.lineage import Lineage
    from pipeline.scoring import InceptionScores

    monkeypatch.chdir(tiny_project.root)
    tiny_project.run("fid_reference", *TINY)
    gt = np.load("data/prepared/test/gt.npy")
    scores = InceptionScores(torch.device("cpu"), 12, content_key(gt), Lineage(load(TINY)))
    with pytest.raises(StageFailed, match="the scores of lonely are not numbers"):
        scores(gt[:1], "lonely")


@pytest.mark.parametrize("change, message, line", [
    (("  temperature: 0.0", "  tempreature: 0.0"), "'inpaint.tempreature' is not a parameter", "  tempreature"),
    (("", "T: 12\n"), 'duplicate key "T"', "T: 12"),
    (("", "oops: [1\n"), "expected ',' or ']'", None),
    (("", "\tT: 3\n"), "found character '\\t'", "\tT: 3"),
])
def test_params_yaml_mistakes_are_named_by_line(project, change, message, line):
    """Cases 4 and 7: an unknown key, a duplicated one, broken YAML, each one line naming params.yaml and the
    line; an empty params.yaml too."""
    params = project.path("params.yaml")
    old, new = change
    text = params.read_text().replace(old, new, 1) if old else params.read_text() + new
    params.write_text(text)
    lines = text.splitlines()
    expected = len(lines) + 1 if line is None else next(i for i, t in enumerate(lines, 1) if t.startswith(line))
    err = project.fails("prepare")
    assert one_line(err) and message in err and f"params.yaml line {expected}:" in err, err
    params.write_text("")
    err = project.fails("prepare")
    assert one_line(err) and "params.yaml: empty" in err


KILL_IN_THE_WINDOW = """
import os, runpy, signal, sys
from pathlib import Path
moved, replace = [], os.replace
def killing_replace(src, dst):
    replace(src, dst)
    if str(src).startswith(".publishing/"):
        moved.append(dst)
        if len(moved) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = killing_replace
sys.argv = ["evaluate"] + sys.argv[1:]
runpy.run_module("stages.evaluate", run_name="__main__")
"""


def test_evaluate_killed_while_moving_its_outputs_leaves_them_whole(trained):
    """Case 5: evaluate killed after two of its outputs are in place: the next command completes the set, so
    the table, the metrics and the report name the same headline."""
    settings = [*ONE[:-1], "T=3"]
    trained.run("inpaint", *settings)
    cmd = [sys.executable, "-c", KILL_IN_THE_WINDOW] + [a for o in settings for a in ("-S", o)]
    proc = subprocess.run(cmd, cwd=trained.root, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL and trained.path(".publishing").is_dir(), proc.stderr[-2000:]
    out = trained.run("fid_reference", *settings).stdout
    assert "killed while it moved them" in out and not trained.path(".publishing").exists()
    metrics = json.loads(trained.path("reports", "metrics.json").read_text())
    with open(trained.path("reports", "comparison.csv")) as f:
        headline = next(row for row in csv.DictReader(f) if row["name"] == "headline")
    assert metrics["headline"]["T"] == int(headline["T"]) == 3
    assert "`T`=3" in trained.path("reports", "README.md").read_text()


def test_picture_serials_past_the_test_set_are_refused(trained):
    """Case 6."""
    err = trained.fails("inpaint", *ONE, "inpaint.picture_serials=[999]")
    assert one_line(err) and "inpaint.picture_serials: serial 999 is out of range" in err


def test_corrupt_or_missing_outputs_are_named_with_the_stage_that_remakes_them(trained):
    """Case 8: a truncated token cache, transformer or architecture.json, an empty or deleted checkpoint."""
    cases = [("data/tokens/train.npy", "train", "rerun `tokens`"),
             ("models/transformer/transformer.pt", "inpaint", "rerun `train`"),
             ("models/vqgan/architecture.json", "tokens", "rerun `vqgan`")]
    for path, stage, remedy in cases:
        file = trained.path(path)
        saved = file.read_bytes()
        file.write_bytes(saved[:len(saved) // 2])
        err = trained.fails(stage, *ONE)
        assert one_line(err) and f"{path} is not the file" in err and remedy in err, err
        file.write_bytes(b"")
        assert f"{path} is not the file" in trained.fails(stage, *ONE)
        file.unlink()
        err = trained.fails(stage, *ONE)
        assert one_line(err) and f"{path} not found" in err, err
        file.write_bytes(saved)


def test_outputs_that_cannot_be_written_fail_before_the_work_or_name_the_file(trained):
    """Case 9: a file where the results folder should be fails before decoding; a write cut short (a file
    size limit, as a full disk cuts it) names the output and replaces nothing."""
    before = trained.path("results", "inpaint", "headline", "raw.npy").read_bytes()
    shutil.move(trained.path("results"), trained.path("results.bak"))
    trained.path("results").write_text("a file in the way")
    err = trained.fails("inpaint", *ONE)
    assert one_line(err) and "results/inpaint/headline: cannot write there" in err, err
    trained.path("results").unlink()
    shutil.move(trained.path("results.bak"), trained.path("results"))

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    cmd = [sys.executable, "-m", "stages.inpaint"] + [a for o in ONE for a in ("-S", o)]
    proc = subprocess.run(cmd, cwd=trained.root, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600, preexec_fn=small_files)
    assert proc.returncode == 2 and one_line(proc.stderr), proc.stderr[-2000:]
    assert "could not write results/inpaint/headline: " in proc.stderr and "nothing was replaced" in proc.stderr
    assert trained.path("results", "inpaint", "headline", "raw.npy").read_bytes() == before


def test_paths_given_with_S_are_taken_as_written(project, tmp_path):
    """Cases 10 and 11: a non-UTF-8 path, one with ' #', one that YAML would read as a number or a boolean."""
    for source in ("/x/src #2", "2024", "on", "/x/\udcff"):
        cmd = [sys.executable, "-m", "stages.prepare", "-S", f"data.source={source}"]
        proc = subprocess.run(cmd, cwd=project.root, env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, timeout=120)
        err = proc.stderr.decode(errors="replace")
        assert proc.returncode == 2 and one_line(err) and "does not exist" in err, err
        assert source.split("\udcff")[0] in err


def test_the_lab_profile_on_a_cpu_warns_and_goes_on(project):
    """Case 12."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = project.run("prepare", "profile=lab", "data.synthetic_count=300")
    assert "warning: profile lab is sized for one GPU" in proc.stderr and "hours or more" in proc.stderr
    assert json.loads(project.path("data", "prepared", "summary.json").read_text())["test"] == 30


def test_a_schedule_that_commits_tokens_before_the_first_step_is_refused(project):
    """Case 13: pow0 is γ ≡ 0."""
    from model.mask_schedule import mask_schedule

    assert mask_schedule(0.0, "pow0.5") == 1.0
    for value in ("schedule=pow0", "sweep.schedule=[cosine, pow0.0]", "train.gamma=pow0"):
        err = project.fails("prepare", value)
        assert one_line(err) and "k > 0, so that γ(0) = 1" in err, err
