"""Inpainting, evaluation and the whole pipeline, at tiny sizes."""
import csv
import json
import math
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import TINY
from conftest import Project
from stages.evaluate import samples_picture
from pipeline.report import fid_figure, readme, shown_config
from pipeline.config import load
from pipeline.lineage import Lineage
from pipeline.vqgan_loader import decode_images, load_vqgan
from test_blend import jacobi_correction


def test_inpaint_rejects_bad_parameters_before_work(tiny_project):
    for override, word in (("T=0", "T is 0; expected a positive integer"), ("sweet_spot=9", "sweet_spot"),
                           ("schedule=zigzag", "zigzag"), ("inpaint.blend=feather", "inpaint.blend")):
        err = tiny_project.fails("inpaint", *TINY, override)
        assert word in err and "Traceback" not in err
    assert not tiny_project.path("results", "inpaint", "headline").exists()
    err = tiny_project.fails("evaluate", *TINY, "inpaint.blend=feather")  # named before any FID
    assert "inpaint.blend" in err and "paste, poisson" in err and "Traceback" not in err


def test_run_all_checks_every_stage_before_the_first_runs(project):
    """A bad setting of a late stage fails the runner at once, named, not after stage 1 and 2 have trained."""
    for override, message in (("sweep.T=[4, 0]", "sweep.T is [4, 0]; expected a non-empty list, each item a positive"),
                              ("train.n_heads=5", "train.dim 32 is not divisible by train.n_heads 5"),
                              ("evaluate.batch_size=0", "evaluate.batch_size is 0; expected a positive integer"),
                              ("train.lr=-1", "train.lr is -1; expected a number above 0")):
        err = project.fails("run_all", *TINY, override)
        assert message in err and "Traceback" not in err, err
        assert not project.path("data").exists()
    everything = ["prepare", "vqgan", "tokens", "train", "inpaint", "fid_reference", "evaluate"]
    err = project.fails("run_all", *TINY, "inpaint.blend=feather", args=["--skip", *everything])
    assert "inpaint.blend is 'feather'" in err  # one schema, whatever runs


@pytest.mark.slow
def test_run_all_in_one_process_writes_what_each_stage_writes_alone(tmp_path):
    """run_all runs every stage in one process, DVC each in a fresh one: the outputs must agree, tensor
    for tensor (a stage drawing from a random state it did not seed, or one left by the stage before, would
    not). Both stages compiled block by block, as the lab profile trains them, with the first stage's
    compiled graphs released before the second compiles its own."""
    settings = [*TINY, "sweep.schedule=[cosine, square]", "sweep.T=[2]", "sweep.sweet_spot=[0]", "T=3",
                "vqgan.compile=regional", "train.compile=regional"]
    alone, together = (Project(tmp_path / name) for name in ("alone", "together"))
    for stage in ("prepare", "vqgan", "tokens", "train"):
        alone.run(stage, *settings)
    alone.run("inpaint", *settings, args=["--sweep", "--headline"])
    proc = together.run("run_all", *settings, args=["--skip", "fid_reference", "evaluate"])
    assert "| inpaint sweep (2 configurations) and headline |" in proc.stdout
    for folder in ("data/prepared", "data/tokens", "results/inpaint"):
        arrays = sorted(p.relative_to(alone.root) for p in alone.path(folder).rglob("*.npy"))
        assert len(arrays) >= 4 and arrays == sorted(p.relative_to(together.root)
                                                     for p in together.path(folder).rglob("*.npy"))
        for name in arrays:
            assert np.array_equal(np.load(alone.path(name)), np.load(together.path(name))), name
    for weights in ("models/vqgan/vqgan.pt", "models/transformer/transformer.pt"):
        ours, theirs = (torch.load(p.path(weights), weights_only=True) for p in (alone, together))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), weights


def test_run_all_names_the_stage_that_failed(project):
    err = project.fails("run_all", *TINY, args=["--skip", "prepare"])
    assert "Traceback" not in err
    assert "error: stage vqgan: data/prepared/val.npy not found: run the `prepare` stage first" in err
    assert not project.path("data", "tokens").exists()


def test_inpaint_outputs_keep_known_pixels_and_reproduce(tiny_project):
    tiny_project.run("inpaint", *TINY, "T=4")
    out = tiny_project.path("results", "inpaint", "headline")
    first = (out / "tokens.npy").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    masked = np.load(tiny_project.path("data", "prepared", "test", "masked.npy"))
    mask64 = np.load(tiny_project.path("data", "prepared", "test", "mask64.npy"))
    comp, raw = np.load(out / "composite.npy"), np.load(out / "raw.npy")
    assert comp.shape == raw.shape == masked.shape and summary["images"] == len(masked)
    assert np.array_equal(comp[mask64 == 255], masked[mask64 == 255])
    for i in (0, 5):  # the default Poisson blend: the decode plus the harmonic correction, rounded
        hole = mask64[i] == 0
        expected = raw[i] + jacobi_correction(masked[i].astype(float) - raw[i], hole)
        assert np.abs(comp[i][hole].astype(float) - np.clip(expected[hole], 0, 255)).max() <= 0.5 + 1e-6
    names = sorted(p.name for p in (out / "composite").glob("*.png"))
    assert names[0] == "image_000.png" and len(names) == len(masked)
    assert np.array_equal(np.asarray(Image.open(out / "composite" / "image_003.png")), comp[3])
    tokens = np.load(out / "tokens.npy")
    known = ~np.load(tiny_project.path("data", "tokens", "test_mask.npy"))
    assert np.array_equal(tokens[known], np.load(tiny_project.path("data", "tokens", "test_masked.npy"))[known])
    picture = Image.open(out / "pictures" / "serial_000.png")
    assert picture.size == (2 * (2 + 6 * 66), 2 * (2 + 2 * 66))  # input + 5 masks; 2x
    tiny_project.run("inpaint", *TINY, "T=4", "inpaint.blend=paste")
    assert (out / "tokens.npy").read_bytes() == first
    comp = np.load(out / "composite.npy")
    assert np.array_equal(comp[mask64 == 255], masked[mask64 == 255])
    assert np.array_equal(comp[mask64 == 0], raw[mask64 == 0])


def test_show_draws_any_serial_as_the_pipeline_does_and_changes_no_output(tiny_project, tmp_path):
    """The demo command: each image draws its own decoding noise, so the pipeline's pictures of serials 0 and 1
    (decoded in batches of 8 among the whole test set) are byte for byte the command's (the two alone, or one
    at a time), a serial's fill is the same at any batch size, and no pipeline output changes."""
    project = Project(tmp_path / "p")
    for sub in ("data/prepared", "data/tokens", "models"):
        shutil.copytree(tiny_project.path(sub), project.path(sub))
    settings = [*TINY, "schedule=square", "T=5", "sweet_spot=4"]
    project.run("inpaint", *settings)
    headline = project.path("results", "inpaint", "headline")
    before = {p: p.read_bytes() for p in headline.rglob("*") if p.is_file()}
    out = project.run("show", *settings, args=["1", "0", "7"]).stdout
    shown = project.path("results", "show", "square-T5-s4")
    assert "results/show/square-T5-s4/serial_007.png" in out.splitlines()
    for s in (0, 1):
        assert (shown / f"serial_{s:03d}.png").read_bytes() == (headline / "pictures" / f"serial_{s:03d}.png").read_bytes()
    among = {s: (shown / f"serial_{s:03d}.png").read_bytes() for s in (0, 7)}
    project.run("show", *settings, "inpaint.batch_size=1", args=["7", "0"])
    assert {s: (shown / f"serial_{s:03d}.png").read_bytes() for s in (0, 7)} == among
    assert {p: p.read_bytes() for p in headline.rglob("*") if p.is_file()} == before
    tokens = np.load(headline / "tokens.npy")
    project.run("inpaint", *settings, "inpaint.batch_size=5")
    assert np.array_equal(np.load(headline / "tokens.npy"), tokens)  # the same fills in batches of 5
    err = project.fails("show", *settings, args=["10"])
    assert "serial 10 is out of range: the test set has 10 images (serials 0 to 9)" in err and "Traceback" not in err


def test_inpaint_decodes_stage_twos_holes_among_the_decode_prefills_known_tokens(tiny_project, tmp_path, monkeypatch):
    """`tokens.decode_prefill=ns` with grey holes: stage 2 sees what it saw before, so the hole tokens are the
    grey run's; the final decode keeps the ns cache's known tokens around them (test_known.npy, checked
    against cv2 in test_stage1), and the raw output is that token grid decoded."""
    shutil.copytree(tiny_project.root, tmp_path / "p")
    project = Project(tmp_path / "p")
    point, out = ["--schedule", "cosine", "--T", "2", "--sweet-spot", "0"], project.path("results", "inpaint", "cosine-T2-s0")
    mask = np.load(project.path("data", "tokens", "test_mask.npy"))
    project.run("inpaint", *TINY, args=point)
    grey = np.load(out / "tokens.npy")
    project.run("tokens", *TINY, "tokens.decode_prefill=ns")
    project.run("inpaint", *TINY, "tokens.decode_prefill=ns", args=point)
    mixed, ns = np.load(out / "tokens.npy"), np.load(project.path("data", "tokens", "test_known.npy"))
    assert np.array_equal(mixed[mask], grey[mask]) and np.array_equal(mixed[~mask], ns[~mask])
    assert not np.array_equal(mixed, grey)
    monkeypatch.chdir(project.root)
    decoded = decode_images(load_vqgan("cpu", Lineage(load(TINY))), torch.from_numpy(mixed.astype(np.int64)), 8)
    assert np.array_equal(np.load(out / "raw.npy"), decoded)


def tile(picture: np.ndarray, row: int, col: int, pad: int = 2, size: int = 64) -> np.ndarray:
    """One 64x64 image back out of a report grid drawn at 2x."""
    y, x = 2 * (pad + row * (size + pad)), 2 * (pad + col * (size + pad))
    return picture[y:y + 2 * size:2, x:x + 2 * size:2]


@pytest.mark.slow
def test_run_all_produces_the_report(tiny_project, monkeypatch):
    sweep = ["sweep.schedule=[cosine]", "sweep.T=[2, 4]", "sweep.sweet_spot=[0, 1]"]
    inpainted = tiny_project.path("results", "inpaint")
    for stale in (".headline.tmp-killed", ".cosine-T9-s0.tmp-killed"):  # what killed inpaint runs leave
        (inpainted / stale).mkdir(parents=True, exist_ok=True)
        (inpainted / stale / "summary.json").write_text('{"name": "killed"}')
    proc = tiny_project.run("run_all", *TINY, *sweep, "T=4", args=["--skip", "prepare", "vqgan", "tokens", "train"])
    assert re.search(r"^\| evaluate +\| +[0-9.]+ \|$", proc.stdout, re.M), proc.stdout[-2000:]
    assert not (inpainted / ".headline.tmp-killed").exists()  # the next run of that output removes it
    assert "killed" not in tiny_project.path("reports", "comparison.csv").read_text()  # never scored
    # The headline is the sweep point cosine-T4-s0: decoded once, its folder copied (same timing).
    point, headline = (json.loads((inpainted / n / "summary.json").read_text()) for n in ("cosine-T4-s0", "headline"))
    assert headline["name"] == "headline" and headline["decode_seconds"] == point["decode_seconds"]
    assert all(point[f"{part}_seconds"] >= 0 for part in ("composite", "write"))  # where the rest goes
    tokens = [(inpainted / n / "tokens.npy").read_bytes() for n in ("cosine-T4-s0", "headline")]
    assert tokens[0] == tokens[1]
    reports = tiny_project.path("reports")
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["fid_available"] and metrics["fid"] > 0
    assert set(metrics["baselines"]) == {"grey-hole input", "OpenCV Telea", "OpenCV Navier-Stokes",
                                         "stage-1 reconstruction (floor)", "held-out real images"}
    reference = np.load(tiny_project.path("data", "fid", "reference", "stats.npz"))
    assert metrics["baselines"]["held-out real images"] == pytest.approx(float(reference["heldout_fid"]), abs=5e-4)
    rows = (reports / "comparison.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 + 1 + 5
    floor = next(csv.DictReader(rows[:1] + [r for r in rows if r.startswith("stage-1 reconstruction")]))
    assert float(floor["fid_composite"]) > 0 and float(floor["fid_raw"]) > 0  # the floor's composite is scored too
    assert "Poisson-blends" in (reports / "README.md").read_text()
    for name in ("fid_vs_T.png", "fid_vs_sweet_spot.png", "README.md", "comparison.md"):
        assert (reports / name).stat().st_size > 0
    assert len(list((reports / "pictures").glob("*/serial_*.png"))) == 5 * 2
    assert "Best configuration" in (reports / "README.md").read_text()
    # KID beside FID: each configuration's difference to the best is the difference of their KIDs
    table = {r["name"]: r for r in csv.DictReader(rows)}
    best_row = table[metrics["best"]["name"]]
    assert float(best_row["kid_vs_best"]) == 0 and float(best_row["kid_vs_best_se"]) == 0
    best_composite = np.load(inpainted / best_row["name"] / "composite.npy")
    for name in ("cosine-T2-s0", "cosine-T2-s1", "cosine-T4-s0", "cosine-T4-s1"):
        r = table[name]
        assert float(r["kid_vs_best"]) == pytest.approx(float(r["kid_composite"]) - float(best_row["kid_composite"]),
                                                       abs=2e-3)
        # one step decodes alike at any T (the rest is filled from the first prediction): no error between twins
        same = np.array_equal(np.load(inpainted / name / "composite.npy"), best_composite)
        assert (float(r["kid_vs_best_se"]) > 0) != same, name
    assert table["OpenCV Telea"]["kid_vs_best"] == ""  # baselines are not configurations
    assert float(table["held-out real images"]["kid_raw"]) == pytest.approx(1e3 * float(reference["heldout_kid"]),
                                                                            abs=1e-3)
    assert "±" in (reports / "comparison.md").read_text()
    # The samples figure: the first 8 test images through the best configuration, beside the inputs.
    best = metrics["best"]["name"]
    assert f"![samples of {best}](samples.png)" in (reports / "README.md").read_text()
    # the report animates the decoding of the configuration it shows, and only that one
    assert sorted(p.parent.name for p in (reports / "pictures").glob("*/serial_*.gif")) == [best, best]
    assert f"](pictures/{best}/serial_000.gif)" in (reports / "README.md").read_text()
    animation = Image.open(reports / "pictures" / best / "serial_000.gif")
    assert animation.n_frames >= 2 and animation.info["loop"] == 0
    picture = np.asarray(Image.open(reports / "samples.png").convert("RGB"))
    assert picture.shape == (2 * (5 * 66 + 2), 2 * (8 * 66 + 2), 3)
    test = tiny_project.path("data", "prepared", "test")
    masked, gt = np.load(test / "masked.npy"), np.load(test / "gt.npy")
    raw, composite = (np.load(inpainted / best / f"{k}.npy") for k in ("raw", "composite"))
    for col in (0, 7):
        for row, images in ((0, masked), (2, raw), (3, composite), (4, gt)):
            assert np.array_equal(tile(picture, row, col), images[col]), (row, col)
    monkeypatch.chdir(tiny_project.root)  # without ground truth: four rows
    assert samples_picture(best, masked, masked, None).shape[0] == 2 * (4 * 66 + 2)


@pytest.mark.slow
def test_evaluate_pairs_its_kids_with_an_earlier_run(tiny_project, tmp_path):
    """evaluate keeps every scored set's leave-one-out KID values; rerun after one configuration changed,
    `--against` the earlier file prints each KID difference with the jackknife error of the per-image
    differences (recomputed here from both files): non-zero for the changed configuration, exactly zero
    for a baseline that did not change. A file of other test images, or none, is refused by name before
    anything is scored."""
    shutil.copytree(tiny_project.root, tmp_path / "p")
    project = Project(tmp_path / "p")
    one = [*TINY, "sweep.schedule=[cosine]", "sweep.T=[2]", "sweep.sweet_spot=[0]", "T=2"]  # headline: that point
    project.run("inpaint", *one, args=["--sweep", "--headline"])
    project.run("fid_reference", *one)
    project.run("evaluate", *one)
    saved = project.path("results", "leave_one_out.npz")
    shutil.copy(saved, project.path("before.npz"))
    tokens_path = project.path("results", "inpaint", "cosine-T2-s0", "tokens.npy")
    tokens = np.load(tokens_path)
    one.append("inpaint.temperature=1.0")  # tokens sampled: others
    project.run("inpaint", *one, args=["--sweep", "--headline"])
    out = project.run("evaluate", *one, args=["--against", "before.npz"]).stdout
    printed = {line[:30].strip(): line[30:].split("±") for line in out.splitlines() if "±" in line}
    before, after = (np.load(path) for path in (project.path("before.npz"), saved))
    for label in ("cosine-T2-s0 composite", "cosine-T2-s0 raw", "OpenCV Telea"):
        i, j = list(before["labels"]).index(label), list(after["labels"]).index(label)
        diff, se = (float(x) for x in printed[label])
        assert diff == pytest.approx((after["kid"][j] - before["kid"][i]) * 1e3, abs=1e-3)
        d = after["loo"][j] - before["loo"][i]
        assert se == pytest.approx(math.sqrt((len(d) - 1) / len(d) * ((d - d.mean()) ** 2).sum()) * 1e3, abs=1e-3)
        assert (se > 0) == (label != "OpenCV Telea")
    assert not np.array_equal(tokens, np.load(tokens_path))
    other = dict(np.load(saved))
    np.savez(project.path("other.npz"), **{**other, "test_key": "0" * 40})
    stamp = saved.stat().st_mtime_ns
    for name, message in (("other.npz", "scored other test images"), ("missing.npz", "not found"),
                          ("params.yaml", "not a leave-one-out file")):
        err = project.fails("evaluate", *TINY, args=["--against", name])
        assert name in err and message in err, err[-2000:]
    assert saved.stat().st_mtime_ns == stamp


def test_report_shows_the_best_configuration_or_else_the_headline():
    rows = [{"name": "cosine-T4-s0", "schedule": "cosine", "fid_composite": 50.0},
            {"name": "headline", "schedule": "cosine", "fid_composite": 60.0},
            {"name": "OpenCV Telea", "fid_composite": 30.0}]
    assert shown_config(rows, "fid_composite", True)["name"] == "cosine-T4-s0"  # baselines never count
    assert shown_config(rows, "fid_composite", False)["name"] == "headline"
    assert shown_config(rows[:1], "fid_raw", False)["name"] == "cosine-T4-s0"


def test_report_says_which_configurations_kid_does_not_tell_from_the_best():
    def row(name, diff, se):
        return {"name": name, "kind": "sweep", "schedule": "cosine", "T": 8, "sweet_spot": 0, "steps_run": 8,
                "fid_raw": 9.0, "fid_composite": 5.0, "kid_vs_best": diff, "kid_vs_best_se": se}
    best = row("best", 0.0, 0.0)
    close, far, edge = row("close", 0.3, 0.2), row("far", 1.0, 0.2), row("edge", 0.4, 0.2)  # 1.5, 5, 2 errors
    text = readme([best, close, far, edge], None, best, "fid_composite", True, 1.0, None, "poisson")
    assert "KID does not tell it apart (less than two standard errors above it) from: `close`." in text
    assert re.search(r"\| +\+0\.30 ± 0\.20 \|", text) and re.search(r"\| +\+1\.00 ± 0\.20 \|", text)
    text = readme([best, far], None, best, "fid_composite", True, 1.0, None, "poisson")
    assert "Its lead holds by KID" in text


def test_report_names_a_one_pass_best_as_one_pass():
    """A decode that runs one step (sweet spot 1, or T=1) fills every hole from the first prediction, the same
    tokens at every schedule, so a one-pass best is not a schedule's win."""
    def best_line(T, sweet_spot):
        best = {"name": f"square-T{T}-s{sweet_spot}", "kind": "sweep", "schedule": "square", "T": T,
                "sweet_spot": sweet_spot, "steps_run": sweet_spot or T, "fid_raw": 9.0, "fid_composite": 5.0,
                "hole_psnr": 20.0}
        text = readme([best], None, best, "fid_composite", True, 1.0, None, "poisson")
        return next(line for line in text.splitlines() if line.startswith("**Best configuration**"))

    assert "one forward pass" in best_line(8, 1) and "`square-T8-s1`" in best_line(8, 1)
    assert "one forward pass" in best_line(1, 0)
    assert "one forward pass" not in best_line(8, 3) and "`square`, T=8, sweet spot=3" in best_line(8, 3)


def test_fid_plot_draws_each_output_and_names_every_baseline():
    """A panel per output, primary first, each line at its rows' own values; every baseline in the legend
    (labels drawn in the plot overlapped where two baselines score alike, as Telea and Navier-Stokes do)."""
    import matplotlib.pyplot as plt

    sweep = [{"name": f"{sc}-T{T}-s{s}", "schedule": sc, "T": T, "sweet_spot": s, "steps_run": s or T,
              "fid_raw": 100.0 + 10 * T + s, "fid_composite": 20.0 + T - s} for sc in ("cosine", "square")
             for T in (4, 8) for s in (0, 3)]
    baselines = [{"name": "OpenCV Telea", "fid_raw": 37.6, "fid_composite": 37.6},
                 {"name": "OpenCV Navier-Stokes", "fid_raw": 37.3, "fid_composite": 37.3},
                 {"name": "stage-1 reconstruction (floor)", "fid_raw": 51.0, "fid_composite": 11.2},
                 {"name": "held-out real images", "fid_raw": None, "fid_composite": 16.3}]
    fig = fid_figure(sweep, "steps_run", ("schedule", "T"), baselines, "fid_composite", "title")
    try:
        (composite, raw), legend = fig.axes, fig.legends[0]
        assert "composite" in composite.get_title() and "raw" in raw.get_title()
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == ["cosine, T=4", "cosine, T=8", "square, T=4", "square, T=8"] + [b["name"] for b in baselines]
        for ax, key in ((composite, "fid_composite"), (raw, "fid_raw")):
            lines = {line.get_label(): line for line in ax.get_lines()}
            square8 = sorted((r for r in sweep if r["name"].startswith("square-T8")), key=lambda r: r["steps_run"])
            assert list(lines["square, T=8"].get_xdata()) == [3, 8]
            assert list(lines["square, T=8"].get_ydata()) == [r[key] for r in square8]
            assert lines["stage-1 reconstruction (floor)"].get_ydata()[0] == baselines[2][key]
        assert "held-out real images" not in {line.get_label() for line in raw.get_lines()}  # no raw score
    finally:
        plt.close(fig)


def test_fid_plot_shows_kid_against_the_best_with_two_error_bars():
    """With KID differences in the rows, a third panel draws each one with a bar of +-2 paired errors, so a
    bar across zero reads as "not told apart"; rows without them keep the two FID panels."""
    import matplotlib.pyplot as plt

    sweep = [{"name": f"{sc}-T{T}-s0", "schedule": sc, "T": T, "sweet_spot": 0, "steps_run": T,
              "fid_raw": 90.0 + T, "fid_composite": 18.0 + T / 4, "kid_vs_best": 0.1 * T + (sc == "linear"),
              "kid_vs_best_se": 0.01 * T} for sc in ("cosine", "linear") for T in (4, 8)]
    fig = fid_figure(sweep, "T", ("schedule",), [], "fid_composite", "title")
    try:
        kid = fig.axes[2]
        assert "KID" in kid.get_title() and "2 standard errors" in kid.get_title()
        bars = {}
        for container in kid.containers:
            (segments,) = [c.get_segments() for c in container.lines[2]]
            for (x, low), (_, high) in segments:
                bars[round(x)] = bars.get(round(x), []) + [(low, high)]
        for T in (4, 8):
            expected = sorted((r["kid_vs_best"] - 2 * r["kid_vs_best_se"], r["kid_vs_best"] + 2 * r["kid_vs_best_se"])
                              for r in sweep if r["T"] == T)
            assert sorted(bars[T]) == pytest.approx(expected)
        assert any(list(line.get_ydata()) == [0, 0] for line in kid.get_lines())  # the zero line
    finally:
        plt.close(fig)
    fig = fid_figure([{k: v for k, v in r.items() if not k.startswith("kid")} for r in sweep], "T", ("schedule",), [],
                     "fid_composite", "title")
    try:
        assert len(fig.axes) == 2
    finally:
        plt.close(fig)


def test_report_explains_only_the_rows_it_has():
    """The floor's and the held-out row's explanations follow their rows: an old reference.npz has no
    held-out FID, a run without ground-truth tokens no floor."""
    sweep = {"name": "cosine-T8-s0", "kind": "sweep", "schedule": "cosine", "T": 8, "sweet_spot": 0,
             "fid_raw": 9.0, "fid_composite": 5.0, "hole_psnr": 20.0}
    floor = {"name": "stage-1 reconstruction (floor)", "kind": "floor", "fid_raw": 3.0, "fid_composite": 2.0,
             "hole_psnr": 25.0}
    heldout = {"name": "held-out real images", "kind": "reference", "fid_raw": 4.0, "fid_composite": 4.0,
               "hole_psnr": None}

    def text(rows):
        return readme(rows, None, None, "fid_composite", True, 1.0, None, "poisson")

    bare, full = text([sweep]), text([sweep, floor, heldout])
    assert "stage-1 reconstruction row" not in bare and "held-out real images row" not in bare
    assert "stage-1 reconstruction row" in full and "held-out real images row" in full
    assert "held-out real images row" not in text([sweep, floor])


def test_run_all_reports_each_stages_peak_gpu_memory_on_a_gpu(project, monkeypatch, capsys):
    """Each stage's peak, read after it with the counter reset before it, and the run's highest (a fake
    CUDA: this machine has none; prepare runs for real, vqgan is a stand-in)."""
    import commands.run_all
    import stages.vqgan

    peaks, resets = iter([3 * 2**30, 5.04 * 2**30]), []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: resets.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(peaks))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    monkeypatch.setattr(commands.run_all, "plan", lambda cfg: [("prepare", [], "prepare"), ("vqgan", [], "vqgan")])
    monkeypatch.setattr(stages.vqgan, "main", lambda argv: None)
    monkeypatch.setattr(sys, "argv", ["run_all", *(x for o in TINY for x in ("-S", o))])
    monkeypatch.chdir(project.root)
    commands.run_all.main()
    timings = json.loads(project.path("reports", "timings.json").read_text())
    assert [t["peak_gpu_gib"] for t in timings] == [3.0, 5.0, 5.0] and len(resets) == 2
    assert project.path("data", "prepared", "train.npy").exists()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()
            if line.startswith("|")]
    assert rows[0] == ["stage", "seconds", "peak GPU memory (GiB)"]
    assert [r[0] for r in rows[2:]] == ["prepare", "vqgan", "total"] and rows[-1][2] == "5"
