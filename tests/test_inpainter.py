"""Inpainting anything: the Python API over a trained pair of models and the command for image files."""
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from tiny import TINY
from model.masking import border_hole, box_hole, token_mask_from_pixels
from pipeline.config import ConfigError
from pipeline.inpainter import Inpainter


@pytest.fixture
def inpainter(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project.root)
    return Inpainter.load("models", *TINY)


def hand_token_set(cells) -> set:
    """Token indices of (row, column) cells of the 16x16 grid."""
    return {row * 16 + col for row, col in cells}


def test_the_apis_composite_is_the_inpaint_stages_byte_for_byte(tiny_project, inpainter):
    tiny_project.run("inpaint", *TINY, args=["--schedule", "square", "--T", "3", "--sweet-spot", "0"])
    stage = tiny_project.path("results", "inpaint", "square-T3-s0")
    gt = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))
    mask64 = np.load(tiny_project.path("data", "prepared", "test", "mask64.npy"))
    out = inpainter.inpaint(gt, mask64 == 0, "square", 3, 0)
    assert np.array_equal(out.masked, np.load(tiny_project.path("data", "prepared", "test", "masked.npy")))
    assert out.composite.tobytes() == np.load(stage / "composite.npy").tobytes()
    assert out.raw.tobytes() == np.load(stage / "raw.npy").tobytes()
    assert np.array_equal(out.tokens, np.load(stage / "tokens.npy"))
    assert out.token_masks.shape == (4, len(gt), 256) and out.steps.shape == (3, len(gt), 64, 64, 3)
    assert np.array_equal(out.token_masks[0], np.load(tiny_project.path("data", "tokens", "test_mask.npy")))
    assert not out.token_masks[-1].any()
    # one image alone, keyed by its serial, decodes as it did among the test set
    one = inpainter.inpaint(gt[4:5], mask64[4:5] == 0, "square", 3, 0, keys=[4], steps=False)
    assert np.array_equal(one.composite[0], out.composite[4]) and one.steps is None


def test_the_known_pixels_of_a_composite_are_the_inputs(tiny_project, inpainter):
    images = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))[:3]
    holes = np.stack([box_hole(10, 20, 30, 17), border_hole(6), box_hole(0, 0, 64, 5)])
    for blend in ("poisson", "paste"):
        out = inpainter.inpaint(images, holes, "cosine", 4, 0, blend=blend)
        assert np.array_equal(out.composite[~holes], images[~holes])
        assert np.array_equal(out.masked[holes], np.full((holes.sum(), 3), 128, np.uint8))
    assert np.array_equal(out.composite[holes], out.raw[holes])  # pasted


def test_box_and_outpaint_holes_become_token_masks_by_the_lab_rule():
    # pixels x 5..10, y 9..11: columns 5//4=1 to 10//4=2 of token row 9//4=11//4=2
    box = token_mask_from_pixels(torch.from_numpy(np.where(box_hole(5, 9, 6, 3), 0, 255)[None]))[0]
    assert set(box.nonzero().flatten().tolist()) == hand_token_set([(2, 1), (2, 2)])
    # a 5-pixel border: pixels 0..4 and 59..63 touch token rows and columns 0, 1 and 14, 15
    ring = token_mask_from_pixels(torch.from_numpy(np.where(border_hole(5), 0, 255)[None]))[0]
    inner = {(r, c) for r in range(2, 14) for c in range(2, 14)}
    assert set(ring.nonzero().flatten().tolist()) == hand_token_set(
        {(r, c) for r in range(16) for c in range(16)} - inner)
    assert int(ring.sum()) == 256 - 144


def test_the_api_refuses_bad_arrays_and_settings_by_name(inpainter):
    images = np.zeros((2, 64, 64, 3), np.uint8)
    holes = np.ones((2, 64, 64), bool)
    with pytest.raises(ConfigError, match=r"images: expected uint8 RGB of shape \(N, 64, 64, 3\)"):
        inpainter.inpaint(images.astype(np.float32), holes)
    with pytest.raises(ConfigError, match=r"holes: expected bool of shape \(2, 64, 64\)"):
        inpainter.inpaint(images, holes[:1])
    with pytest.raises(ConfigError, match="order is 'random'; expected one of confidence, halton"):
        inpainter.inpaint(images, holes, order="random")
    with pytest.raises(ConfigError, match="sweet spot from 0 to T=4"):
        inpainter.inpaint(images, holes, "cosine", 4, 5)


def test_models_copied_out_of_the_workspace_load_and_a_mismatched_pair_is_refused(tiny_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_project.root)
    shutil.copytree(tiny_project.path("models"), tmp_path / "got")
    images = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))[:2]
    holes = np.stack([border_hole(8)] * 2)
    here = Inpainter.load("models", *TINY).inpaint(images, holes, "linear", 3, 0)
    copied = Inpainter.load(tmp_path / "got", *TINY).inpaint(images, holes, "linear", 3, 0)
    assert np.array_equal(here.composite, copied.composite)
    weights = tmp_path / "got" / "vqgan" / "vqgan.pt"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="vqgan.pt is not the file the `vqgan` stage wrote"):
        Inpainter.load(tmp_path / "got", *TINY)
    # another run's stage 1, whole and as its stage wrote it, beside this transformer
    other = tmp_path / "other"
    shutil.copytree(tiny_project.path("models"), other)
    record = (other / "transformer" / "lineage.json")
    record.write_text(re.sub(r'("models/vqgan/vqgan.pt": ")[0-9a-f]+', r"\g<1>" + "0" * 64, record.read_text()))
    with pytest.raises(ConfigError, match="was trained on the tokens of another stage 1"):
        Inpainter.load(other, *TINY)


def test_the_readme_example_runs_as_written(tiny_project, monkeypatch):
    """The README's API example, run in a trained workspace: its doctest output is what it prints."""
    import doctest

    text = (REPO / "README.md").read_text()
    block = text.split("```pycon\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tiny_project.root)
    test = doctest.DocTestParser().get_doctest(block, {}, "README", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and len(test.examples) >= 5


# ---------------------------------------------------------------- the command
def write_image(path, size=(120, 90), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_the_command_inpaints_files_of_any_size_with_a_mask_file(tiny_project, tmp_path):
    a, b = write_image(tmp_path / "cat.jpg"), write_image(tmp_path / "other.png", (64, 64), seed=1)
    mask = np.full((90, 120), 255, np.uint8)
    mask[30:60, 40:80] = 0
    mask[0, :7] = 100  # grey: thresholded to a hole, with a warning
    Image.fromarray(mask).save(tmp_path / "hole.png")
    out = tiny_project.run("commands.inpaint", *TINY, args=[str(a), str(b), "--mask", str(tmp_path / "hole.png"),
                                                             "--T", "3", "--out", str(tmp_path / "out")]).stdout
    assert f"{a} is 120x90: centre-cropped to 90x90 and resized to 64x64" in out
    assert "7 of 10800 pixels were neither black nor white; thresholded at 128" in out
    for name in ("cat", "other"):
        for suffix in ("input.png", "composite.png", "raw.png", "decoding.png", "decoding.gif"):
            assert (tmp_path / "out" / f"{name}_{suffix}").is_file()
        gif = Image.open(tmp_path / "out" / f"{name}_decoding.gif")
        assert gif.n_frames >= 2 and gif.size == (2 * (2 + 3 * 66), 2 * 68)
    # the hole, cropped as the image is (columns 15..104 of 120) and resized by nearest neighbour
    cropped = mask[:, 15:105] < 128
    hole = np.asarray(Image.fromarray(np.where(cropped, 0, 255).astype(np.uint8)).resize((64, 64), Image.NEAREST)) == 0
    given = np.asarray(Image.open(tmp_path / "out" / "other_input.png"))
    composite = np.asarray(Image.open(tmp_path / "out" / "other_composite.png"))
    original = np.asarray(Image.open(b))
    assert np.array_equal(given[hole], np.full((hole.sum(), 3), 128, np.uint8))
    assert np.array_equal(composite[~hole], original[~hole])


def test_the_command_with_all_masks_every_token(tiny_project, tmp_path):
    a = write_image(tmp_path / "x.png", (64, 64))
    out = tiny_project.run("commands.inpaint", *TINY, args=[str(a), "--all", "--T", "2",
                                                             "--out", str(tmp_path / "o")]).stdout
    assert "256 of 256 tokens masked" in out
    strip = np.asarray(Image.open(tmp_path / "o" / "x_decoding.png"))
    first_mask = strip[2 * 2:2 * 66, 2 * 68:2 * 132]  # the latent mask before step 1, drawn at 2x
    assert (first_mask == 0).all()


@pytest.mark.parametrize("args, says", [
    (["missing.png", "--all"], "missing.png: image file not found"),
    (["notes.txt", "--all"], "notes.txt: not a decodable image"),
    (["x.png", "--mask", "nohole.png"], "--mask nohole.png: no hole (no pixel below 128 once resized to 64x64)"),
    (["x.png", "--mask", "gone.png"], "gone.png: mask file not found"),
    (["x.png", "--mask", "notes.txt"], "notes.txt: not a decodable mask image"),
    (["x.png", "--box", "60,60,10,10"], "--box 60,60,10,10: outside the 64x64 image"),
    (["x.png", "--box", "1,2,3"], "--box 1,2,3: expected four integers X,Y,W,H"),
    (["x.png", "--outpaint", "40"], "--outpaint 40: expected a border of 1 to 31 pixels"),
    (["x.png", "--all", "--T", "0"], "--T 0"),
    (["x.png", "--all", "--models", "nowhere"], "nowhere/vqgan/architecture.json not found: expected the trained "
                                                "models in nowhere/"),
])
def test_each_bad_input_gets_its_line_before_any_model_loads(project, args, says):
    """In a project with no models at all: an input's own error comes first, and nothing is written."""
    write_image(project.path("x.png"), (64, 64))
    project.path("notes.txt").write_text("not an image")
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(project.path("nohole.png"))
    err = project.fails("commands.inpaint", args=args + ["--out", "out"])
    assert says in err and "Traceback" not in err, err
    assert not project.path("out").exists() or not any(project.path("out").iterdir())
