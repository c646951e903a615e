"""The prepare stage: every kind of data.source, the lab layout, and every bad input."""
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CATS64, LAB_SAMPLE, needs_cats64, needs_lab_sample
from model.masking import generated_masks, token_mask_from_pixels
from pipeline import sources
from pipeline.files import load_png

PREPARED = ("data", "prepared")


def summary(project):
    return json.loads(project.path(*PREPARED, "summary.json").read_text())


def write_images(folder: Path, n: int, size=(80, 70), seed=0, fmt="JPEG"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i}.{fmt.lower()}", format=fmt)
    return folder


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the lab's rule and layout
@needs_lab_sample
def test_lab_sample_mask_gives_99_tokens():
    mask = load_png(LAB_SAMPLE / "mask64" / "mask_000.png", "L")
    assert int(token_mask_from_pixels(torch.tensor(mask)[None]).sum()) == 99


def test_token_rule_matches_any_hole_in_patch():
    rng = np.random.default_rng(0)
    masks = np.where(rng.random((8, 64, 64)) < 0.02, 0, 255).astype(np.uint8)
    ref = (masks.reshape(8, 16, 4, 16, 4) == 0).any(axis=(2, 4)).reshape(8, 256)
    assert np.array_equal(token_mask_from_pixels(torch.tensor(masks)).numpy(), ref)


def lab_copy(dst: Path, nest: bool = False) -> Path:
    inner = dst / "cat_face" if nest else dst
    for name in ("train", "val", "masked_image"):
        shutil.copytree(LAB_SAMPLE / name, inner / name)
    shutil.copytree(LAB_SAMPLE / "mask64", dst / "mask64")
    return dst


@needs_lab_sample
def test_lab_folder(project, tmp_path):
    src = lab_copy(tmp_path / "lab")
    project.run("prepare", f"data.source={src}")
    s = summary(project)
    assert (s["layout"], s["train"], s["val"], s["test"], s["has_ground_truth"]) == ("lab", 1, 1, 1, False)
    train = np.load(project.path(*PREPARED, "train.npy"))
    assert train.shape == (1, 64, 64, 3) and train.dtype == np.uint8
    ours = load_png(project.path(*PREPARED, "test", "masked_image", "image_000.png"))
    assert np.array_equal(ours, load_png(LAB_SAMPLE / "masked_image" / "image_000.png"))
    mask = load_png(project.path(*PREPARED, "test", "mask64", "mask_000.png"), "L")
    assert np.array_equal(mask, load_png(LAB_SAMPLE / "mask64" / "mask_000.png", "L"))
    assert not project.path(*PREPARED, "test", "test_gt.csv").exists()


@needs_lab_sample
def test_lab_zip_nested_with_ground_truth_csv(project, tmp_path):
    src = lab_copy(tmp_path / "lab", nest=True)
    archive = shutil.make_archive(str(tmp_path / "lab5_dataset"), "zip", tmp_path, "lab")
    gt = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    sources.write_test_gt_csv(gt, tmp_path / "test_gt.csv")
    project.run("prepare", f"data.source={archive}", f"data.test_gt={tmp_path / 'test_gt.csv'}")
    s = summary(project)
    assert s["layout"] == "lab" and s["has_ground_truth"] is True
    assert np.array_equal(np.load(project.path(*PREPARED, "test", "gt.npy")), gt)
    assert src.exists()


def test_test_gt_csv_round_trip_and_shape_check(tmp_path):
    gt = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    sources.write_test_gt_csv(gt, tmp_path / "gt.csv")
    lines = (tmp_path / "gt.csv").read_text().splitlines()
    assert len(lines) == 4 and len(lines[1].split(",")) == 12288
    assert lines[1].split(",")[:3] == [str(v) for v in gt[0, 0, 0]]  # HWC order
    assert np.array_equal(sources.read_test_gt_csv(tmp_path / "gt.csv", 3), gt)
    with pytest.raises(ValueError, match="expected \\(2, 12288\\)"):
        sources.read_test_gt_csv(tmp_path / "gt.csv", 2)


# ------------------------------------------------------------------ generic images, synthetic, URLs
def test_image_folder_crops_resizes_dedups_and_splits(project, tmp_path):
    folder = write_images(tmp_path / "imgs", 40, fmt="PNG")
    shutil.copy(folder / "3.png", folder / "copy_of_3.png")
    (folder / "notes.txt").write_text("not an image")
    project.run("prepare", f"data.source={folder}")
    s = summary(project)
    assert s["images_in"] == 41 and s["duplicates_dropped"] == 1
    assert (s["train"], s["val"], s["test"]) == (24, 6, 10)  # test: at least MIN_TEST, val: a fifth of the rest
    masked = np.load(project.path(*PREPARED, "test", "masked.npy"))
    masks = np.load(project.path(*PREPARED, "test", "mask64.npy"))
    gt = np.load(project.path(*PREPARED, "test", "gt.npy"))
    assert masked.shape == gt.shape == (10, 64, 64, 3)
    assert set(np.unique(masks)) <= {0, 255}
    assert (masked[masks == 0] == 128).all() and np.array_equal(masked[masks == 255], gt[masks == 255])
    frac = (masks == 0).mean(axis=(1, 2))
    assert ((frac >= 0.15) & (frac <= 0.36)).all()


def test_tar_gz_source(project, tmp_path):
    folder = write_images(tmp_path / "imgs", 30)
    with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as t:
        t.add(folder, arcname="imgs")
    project.run("prepare", f"data.source={tmp_path / 'imgs.tar.gz'}")
    assert summary(project)["images_in"] == 30


def test_synthetic_is_byte_identical_for_a_seed(project, tmp_path):
    project.run("prepare", "data.synthetic_count=200")
    first = tree_digest(project.path(*PREPARED))
    project.run("prepare", "data.synthetic_count=200")
    assert tree_digest(project.path(*PREPARED)) == first
    project.run("prepare", "data.synthetic_count=200", "data.seed=1")
    assert tree_digest(project.path(*PREPARED))["train.npy"] != first["train.npy"]


@needs_cats64
def test_cats64(project):
    project.run("prepare", f"data.source={CATS64}", "data.sizes.test=747")  # the lab's test size (quick: 64)
    s = summary(project)
    assert (s["images_in"], s["duplicates_dropped"], s["test"]) == (8303, 0, 747)
    assert 0.3 <= s["masked_token_fraction_mean"] <= 0.5  # the lab's sample mask: 99/256 = 0.39


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with support for `Range: bytes=N-`, as real servers do; while `drops` is above 0, a
    request gets the whole length announced but only half the body before the connection closes."""
    drops = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if RangeHandler.drops > 0:
            RangeHandler.drops -= 1
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_url_download_with_checksum_and_resume(project, tmp_path, server):
    root, base = server
    folder = write_images(tmp_path / "imgs", 30)
    archive = Path(shutil.make_archive(str(root / "cats"), "zip", folder))
    digest = sources.sha256_of(archive)
    # A half-finished earlier download must be resumed, not restarted.
    part = project.path("data", "downloads", sources.cache_name(f"{base}/cats.zip") + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(archive.read_bytes()[:1000])
    project.run("prepare", f"data.source={base}/cats.zip", f"data.sha256={digest}")
    assert summary(project)["images_in"] == 30
    cached = project.path("data", "downloads", sources.cache_name(f"{base}/cats.zip"))
    assert cached.read_bytes() == archive.read_bytes()
    assert not part.exists()


def test_url_wrong_checksum_and_unreachable(project, server):
    root, base = server
    (root / "x.zip").write_bytes(b"PK not really")
    err = project.fails("prepare", f"data.source={base}/x.zip", "data.sha256=" + "0" * 64)
    assert "data.sha256" in err and "x.zip" in err
    assert not project.path("data", "downloads", sources.cache_name(f"{base}/x.zip") + ".part").exists()
    err = project.fails("prepare", f"data.source={base}/missing.zip")
    assert "404" in err and "missing.zip" in err
    err = project.fails("prepare", "data.source=http://127.0.0.1:9/none.zip")
    assert "cannot reach" in err
    assert not project.path(*PREPARED).exists()


# ------------------------------------------------------------------ bad input
def test_bad_sources_fail_clearly_without_output(project, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    cases = {
        f"data.source={tmp_path / 'nope'}": "does not exist",
        f"data.source={tmp_path / 'empty'}": "no image files",
        f"data.source={tmp_path / 'texts'}": "no image files",
        "data.source=ftp://example.org/x.zip": "unsupported URL scheme",
        f"data.source={tmp_path / 'texts' / 'a.txt'}": "not a zip or tar",
        "profile=huge": "profile",
        "data.nonsense=1": "data.nonsense",
    }
    for override, message in cases.items():
        err = project.fails("prepare", override)
        assert message in err, (override, err)
        assert "Traceback" not in err
    assert not project.path(*PREPARED).exists()


def test_undecodable_file_is_named_or_skipped(project, tmp_path):
    folder = write_images(tmp_path / "imgs", 30)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    err = project.fails("prepare", f"data.source={folder}")
    assert "broken.jpg" in err and "data.skip_bad" in err
    assert not project.path(*PREPARED).exists()
    project.run("prepare", f"data.source={folder}", "data.skip_bad=true")
    assert summary(project)["skipped_bad"] == 1


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_archives_are_refused(project, tmp_path, kind):
    good = io.BytesIO()
    Image.new("RGB", (64, 64)).save(good, format="PNG")
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as t:
        info = tarfile.TarInfo("ok/fine.png")
        info.size = len(good.getvalue())
        t.addfile(info, io.BytesIO(good.getvalue()))
        bad = tarfile.TarInfo({"dotdot": "ok/../../evil.png", "absolute": "/tmp/evil.png", "symlink": "ok/link"}[kind])
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(bad)
        else:
            bad.size = len(good.getvalue())
            t.addfile(bad, io.BytesIO(good.getvalue()))
    err = project.fails("prepare", f"data.source={archive}")
    assert "refusing" in err and "nothing was extracted" in err


def test_unsafe_zip_refused_before_extraction(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("fine.png", b"x")
        z.writestr("../evil.png", b"x")
    with pytest.raises(ValueError, match="refusing"):
        sources.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "fine.png").exists() and not (tmp_path / "evil.png").exists()


@needs_lab_sample
def test_lab_layout_errors(project, tmp_path):
    src = lab_copy(tmp_path / "unpaired")
    shutil.copy(src / "masked_image" / "image_000.png", src / "masked_image" / "image_001.png")
    err = project.fails("prepare", f"data.source={src}")
    assert "do not pair up" in err and "image_001.png" in err

    src = lab_copy(tmp_path / "big")
    Image.new("RGB", (80, 80)).save(src / "train" / "image_00001.png", format="JPEG")
    err = project.fails("prepare", f"data.source={src}")
    assert "image_00001.png" in err and "64x64" in err
    assert not project.path(*PREPARED).exists()


# ------------------------------------------------------------------ hostile inputs (docs/reliability.md)
def test_a_dropped_download_stays_a_part_and_the_next_run_resumes_it(project, tmp_path, server):
    root, base = server
    archive = Path(shutil.make_archive(str(root / "big"), "zip", write_images(tmp_path / "imgs", 30)))
    cached = project.path("data", "downloads", sources.cache_name(f"{base}/big.zip"))
    RangeHandler.drops = 1
    err = project.fails("prepare", f"data.source={base}/big.zip")  # no sha256: only the length can tell
    half = (archive.stat().st_size) // 2
    assert f"stopped at {half} of {archive.stat().st_size} bytes" in err and "Traceback" not in err
    assert not cached.exists() and cached.with_name(cached.name + ".part").stat().st_size == half
    assert not project.path(*PREPARED).exists()
    project.run("prepare", f"data.source={base}/big.zip")
    assert cached.read_bytes() == archive.read_bytes() and summary(project)["images_in"] == 30


def test_the_download_cache_is_keyed_by_the_whole_url(project, tmp_path, server):
    root, base = server
    for host, n in (("a", 30), ("b", 25)):
        (root / host).mkdir()
        shutil.make_archive(str(root / host / "big"), "zip", write_images(tmp_path / host, n, seed=n))
    for host, n in (("a", 30), ("b", 25)):  # the same basename on two paths: two files, each its own
        project.run("prepare", f"data.source={base}/{host}/big.zip")
        assert summary(project)["images_in"] == n
    assert sources.cache_name("http://x.org/big.zip") != sources.cache_name("http://y.org/big.zip")


def test_corrupt_and_truncated_archives_are_called_corrupt(project, tmp_path):
    folder = write_images(tmp_path / "imgs", 12, fmt="PNG")
    zipped = Path(shutil.make_archive(str(tmp_path / "cats"), "zip", folder))
    data = bytearray(zipped.read_bytes())
    with zipfile.ZipFile(zipped) as z:
        first = z.infolist()[0]
    at = first.header_offset + 30 + len(first.filename) + 10  # inside the first entry's stored bytes
    data[at] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(data))
    (tmp_path / "cut.zip").write_bytes(zipped.read_bytes()[: zipped.stat().st_size // 2])
    tgz = Path(shutil.make_archive(str(tmp_path / "cats"), "gztar", folder))
    (tmp_path / "cut.tar.gz").write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    for name in ("crc.zip", "cut.zip", "cut.tar.gz"):
        err = project.fails("prepare", f"data.source={tmp_path / name}")
        assert "corrupt or truncated" in err and name in err and "Traceback" not in err, err
    assert not project.path(*PREPARED).exists()


def test_an_archive_may_not_extract_past_its_caps(project, tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.png", b"\0" * 1000)
        z.writestr("zeros.png", b"\0" * 30_000_000)  # 30 MB in about 30 KB
    err = project.fails("prepare", f"data.source={bomb}")
    assert "'zeros.png'" in err and "data.max_extract_ratio" in err and "Traceback" not in err
    err = project.fails("prepare", f"data.source={bomb}", "data.max_extract_ratio=1e6", "data.max_extract_gb=0.01")
    assert "'zeros.png'" in err and "past 10 MB" in err
    # raised past the bomb's size, the caps let it through to the next check: its files are no images
    err = project.fails("prepare", f"data.source={bomb}", "data.max_extract_ratio=1e6")
    assert "could not be used as images" in err


def test_images_decode_at_their_true_values_or_are_refused_by_name(tmp_path):
    grey16 = np.full((40, 40), 40000, np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    palette = Image.fromarray(np.tile(np.array([[[200, 30, 90]]], np.uint8), (40, 40, 1))).quantize(4)
    palette.save(tmp_path / "palette.png")
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[...] = (100, 150, 50, 64)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "tiny.png")

    got, alpha = sources.decode_image(tmp_path / "grey16.png")
    assert np.all(got == round(40000 * 255 / 65535)) and not alpha  # 156, not Pillow's clipped 255
    got, alpha = sources.decode_image(tmp_path / "palette.png")
    assert np.all(got == (200, 30, 90)) and not alpha
    got, alpha = sources.decode_image(tmp_path / "rgba.png")
    a = 64 / 255
    expected = np.round(np.array([100, 150, 50]) * a + 255 * (1 - a))  # over white, in float64
    assert np.abs(got.astype(float) - expected).max() <= 1 and alpha
    with pytest.raises(ValueError, match="1x1 pixels, below the 32x32 minimum"):
        sources.decode_image(tmp_path / "tiny.png")


def test_a_16_bit_folder_trains_on_its_grey_and_tiny_images_are_named_or_skipped(project, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(np.full((64, 64), 20000 + 1000 * i, np.uint16)).save(folder / f"{i}.png")
    project.run("prepare", f"data.source={folder}")
    train = np.load(project.path(*PREPARED, "train.npy"))
    assert set(np.unique(train)) <= {round((20000 + 1000 * i) * 255 / 65535) for i in range(30)}
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    err = project.fails("prepare", f"data.source={folder}")
    assert "dot.png: 1x1 pixels, below the 32x32 minimum" in err and "data.skip_bad" in err
    project.run("prepare", f"data.source={folder}", "data.skip_bad=true")
    assert summary(project)["skipped_files"] == [str(folder / "dot.png")]


@needs_lab_sample
def test_lab_masks_must_be_binary_and_masked_images_decodable(project, tmp_path):
    src = lab_copy(tmp_path / "grey_mask")
    mask = np.asarray(Image.open(src / "mask64" / "mask_000.png").convert("L")).copy()
    mask[0, :5] = 37
    Image.fromarray(mask).save(src / "mask64" / "mask_000.png")
    err = project.fails("prepare", f"data.source={src}")
    assert "mask_000.png" in err and "values other than 0 and 255 (e.g. 37)" in err and "Traceback" not in err
    src = lab_copy(tmp_path / "bad_masked")
    (src / "masked_image" / "image_000.png").write_bytes(b"\x89PNG broken")
    err = project.fails("prepare", f"data.source={src}", "data.skip_bad=true")
    assert "image_000.png" in err and "cannot be skipped" in err and "Traceback" not in err
    assert not project.path(*PREPARED).exists()


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr is -1; expected a number above 0"),
    ("vqgan.lr=-1", "vqgan.lr is -1; expected a number above 0"),
    ("device=cuda", "device is 'cuda'; expected auto or cpu: this machine has no CUDA GPU"),
    ("data.hole_min=2", "data.hole_min is 2; expected a number from 0 to 1"),
    ("data.hole_min=0.5", "data.hole_min is 0.5; expected a number from 0 to data.hole_max (0.35)"),
    ("sweep.T=4", "sweep.T is 4; expected a non-empty list"),
    ("inpaint.temperature=-1", "inpaint.temperature is -1; expected a number of at least 0"),
    ("data.sizes.test=0", "data.sizes.test is 0; expected a positive integer"),
    ("T=0", "T is 0; expected a positive integer"),
    ("vqgan.norm_groups=3", "vqgan.norm_groups is 3; expected a divisor of every channel count"),
    ("data.sha256=abc", "data.sha256 is 'abc'; expected null or 64 hexadecimal digits"),
])
def test_every_stage_checks_every_parameter_before_any_work(project, override, message):
    """prepare reads none of these but refuses each, so a bad value fails in the first stage DVC runs."""
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    err = project.fails("prepare", override)
    assert message in err and "Traceback" not in err, err
    assert not project.path("data").exists()


def bounding_box_area(region: np.ndarray) -> int:
    ys, xs = np.nonzero(region)
    return int((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))


def kinds_of(mask: np.ndarray) -> set:
    """What a generated test mask can be, read off its pixels: one hole rectangle (box), one known rectangle
    (outpaint; a strip along one side is both), or neither (brush strokes)."""
    hole = mask == 0
    kinds = {k for k, region in (("box", hole), ("outpaint", ~hole)) if region.sum() == bounding_box_area(region)}
    return kinds or {"brush"}


@pytest.mark.parametrize("kind", ["brush", "box", "outpaint", "mix"])
def test_each_kind_of_test_hole_is_what_it_says_within_the_hole_range(kind):
    masks = generated_masks(kind, 60, seed=3, hole_range=(0.2, 0.3))
    assert masks.dtype == np.uint8 and masks.shape == (60, 64, 64) and set(np.unique(masks)) <= {0, 255}
    fractions = (masks == 0).mean(axis=(1, 2))
    slack = 80 / 4096  # a brush stops after the disc that reaches its target; a rectangle's sides are rounded
    assert fractions.min() >= 0.2 - slack and fractions.max() <= 0.3 + slack
    found = [kinds_of(m) for m in masks]
    if kind == "mix":
        assert {"brush"} in found and {"box"} in found and {"outpaint"} in found
    else:
        assert all(kind in k for k in found)
    assert np.array_equal(generated_masks(kind, 60, seed=3, hole_range=(0.2, 0.3)), masks)
    assert not np.array_equal(generated_masks(kind, 60, seed=4, hole_range=(0.2, 0.3)), masks)
