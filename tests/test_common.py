"""The atomic output helpers every stage writes through: all or nothing, and readable like any new file."""
import os
import stat

import pytest

from stages.common import atomic_dir, atomic_file


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
