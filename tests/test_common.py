"""The helpers every stage shares: output written all or nothing, readable like any new file, the numbered
PNGs of the lab layout; the cores and the precision a stage runs with."""
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.files import atomic_dir, atomic_file, save_numbered_pngs
from pipeline.runtime import autocast_for, resolve_precision, usable_cores


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_mode_a_plain_create_gives(tmp_path, umask):
    """A file or folder from the helpers has the mode open() or mkdir() gives under the same umask (the
    temporary names they start as are private), so a teammate who can read the project can read them."""
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        (tmp_path / "plain_dir").mkdir()
        with atomic_file(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "out_dir") as tmp:
            (tmp / "inner.txt").write_text("x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "out.txt") == mode(tmp_path / "plain.txt")
    assert mode(tmp_path / "out_dir") == mode(tmp_path / "plain_dir")


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_failed_block_leaves_the_old_output_and_no_temporary(tmp_path):
    (tmp_path / "out.txt").write_text("old")
    (tmp_path / "out_dir").mkdir()
    (tmp_path / "out_dir" / "kept.txt").write_text("old")
    for helper, name in ((atomic_file, "out.txt"), (atomic_dir, "out_dir")):
        with pytest.raises(RuntimeError):
            with helper(tmp_path / name) as tmp:
                (tmp / "new.txt" if helper is atomic_dir else tmp).write_text("half")
                raise RuntimeError("interrupted")
    assert (tmp_path / "out.txt").read_text() == "old"
    assert sorted(p.name for p in (tmp_path / "out_dir").iterdir()) == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "out_dir"]


def test_a_killed_runs_temporaries_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".out_dir.tmp-killed").mkdir()
    (tmp_path / ".out_dir.tmp-killed" / "summary.json").write_text("{}")
    (tmp_path / ".out.txt.tmp-killed").write_text("half")
    (tmp_path / ".other.tmp-killed").mkdir()  # another output's: not this one's to remove
    with atomic_dir(tmp_path / "out_dir") as tmp:
        (tmp / "new.txt").write_text("new")
    with atomic_file(tmp_path / "out.txt") as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-killed", "out.txt", "out_dir"]


@pytest.mark.parametrize("count, width", [(5, 3), (1001, 4)])
def test_numbered_pngs_hold_each_image_under_its_own_padded_number(tmp_path, count, width):
    """Written by many threads at once, every file still holds its own image (read back by Pillow), named
    image_000.png … as the lab's folders are, the number as wide as the largest needs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    save_numbered_pngs(images, tmp_path / "images", "image")
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == [f"image_{i:0{width}d}.png" for i in range(count)]
    for i in (0, count // 2, count - 1):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / names[i])), images[i])
    masks = (rng.random((3, 8, 8)) < 0.5).astype(np.uint8) * 255  # one channel, as mask64/ is
    save_numbered_pngs(masks, tmp_path / "masks", "mask")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "mask_002.png")), masks[2])


def test_a_failed_png_write_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        save_numbered_pngs(np.zeros((4, 8, 8, 3), np.uint8), tmp_path / "missing", "image")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_usable_cores_follow_the_affinity_not_the_host():
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # as `taskset -c N` or a one-CPU container would
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cores() == len(allowed)


def cpuinfo_has_native_bf16() -> bool:
    """The kernel's own list of CPU flags, read apart from torch."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux's /proc/cpuinfo")
def test_auto_precision_takes_bf16_exactly_where_the_cpu_has_bf16_instructions():
    assert resolve_precision(torch.device("cpu"), "auto") == ("bf16" if cpuinfo_has_native_bf16() else "fp32")


@pytest.mark.parametrize("caps, expected", [({}, "fp32"), ({"avx512_bf16": False, "amx_bf16": False}, "fp32"),
                                            ({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16")])
def test_auto_precision_follows_the_cpu_and_is_always_bf16_on_cuda(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto") == expected
    assert resolve_precision(torch.device("cuda"), "auto") == "bf16"
    assert resolve_precision(cpu, "fp32") == "fp32" and resolve_precision(cpu, "bf16") == "bf16"


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_autocast_runs_matmuls_in_the_precision_asked_for(precision):
    a, b = torch.randn(64, 96, dtype=torch.float64), torch.randn(96, 32, dtype=torch.float64)
    with autocast_for(torch.device("cpu"), precision)():
        out = a.float() @ b.float()
    if precision == "fp32":
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), a.float().double() @ b.float().double(), rtol=1e-5, atol=1e-5)
    else:  # the inputs rounded to bf16, multiplied with fp32 accumulation, the product rounded to bf16
        assert out.dtype == torch.bfloat16
        reference = a.to(torch.bfloat16).double() @ b.to(torch.bfloat16).double()
        torch.testing.assert_close(out.double(), reference, rtol=2 ** -7, atol=1e-2)
        assert not torch.equal(out.double(), (a.float() @ b.float()).double())
