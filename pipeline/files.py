"""Files the stages read and write: atomic outputs, JSON, PNGs, the resolved-config record, and a
clear error for an input that an earlier stage has not made yet."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from pipeline.config import ConfigError, StageFailed
from pipeline.runtime import usable_cores


def _as_if_created(path: Path) -> None:
    """mkstemp and mkdtemp make private entries (0600, 0700); give an output the mode a plain create
    would under the umask, so that whoever may read the project's other files can read it too."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


TEMPORARY = ".{name}.tmp-"  # the prefix of an output's temporary: hidden, so no glob of outputs sees it


def remove_stale_temporaries(path: Path) -> None:
    """The temporaries of `path` that a killed run left (a finished or failed one removes its own)."""
    for stale in path.parent.glob(TEMPORARY.format(name=path.name) + "*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def write_failure(path: Path, e: BaseException) -> StageFailed | None:
    """The one-line error for an OSError met while writing `path`'s temporary (a full disk, a read-only or
    unwritable folder), or None for any other error. numpy's writers raise theirs without an errno."""
    if isinstance(e, OSError) and (e.errno in WRITE_ERRORS or (e.errno is None and "writ" in str(e))):
        reason = e.strerror or str(e)
        return StageFailed(f"could not write {path}: {reason}; nothing was replaced (is the disk full or the "
                           "folder read-only?)")
    return None


def check_writable(*paths: Path) -> None:
    """That each output can be written (its folder made and a file created in it), before any work."""
    for path in map(Path, paths):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=TEMPORARY.format(name=path.name), dir=path.parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConfigError(f"{path}: cannot write there ({e.strerror or e}); make {path.parent} writable "
                              "before running this") from None


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=TEMPORARY.format(name=path.name), dir=path.parent))
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(path, e)
        if failure is None:
            raise
        raise failure from None
    _as_if_created(tmp)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary file path; it is renamed onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY.format(name=path.name), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _as_if_created(Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        failure = write_failure(path, e)
        if failure is None:
            raise
        raise failure from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


PUBLISHING = Path(".publishing")  # a committed set of outputs not yet all moved into place (`published_together`)


@contextlib.contextmanager
def published_together(*folders: Path):
    """Yield a staging folder; each file or folder written in staging/F, for F in `folders` (relative to the
    project root), replaces its namesake in F, all together: one rename of the staging folder to PUBLISHING
    commits the set, then each is moved into place. A kill between the two leaves PUBLISHING, which
    `finish_publishing` completes before the next command runs, so readers never keep a mix of two runs'
    outputs. On error nothing is replaced."""
    finish_publishing()
    remove_stale_temporaries(PUBLISHING)
    staging = Path(tempfile.mkdtemp(prefix=TEMPORARY.format(name=PUBLISHING.name), dir="."))
    for folder in folders:
        (staging / folder).mkdir(parents=True)
    try:
        yield staging
        written = [str(folder / entry.name) for folder in folders for entry in sorted((staging / folder).iterdir())]
        (staging / "paths.json").write_text(json.dumps(written))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, PUBLISHING)  # the commit
    finish_publishing()


def finish_publishing() -> bool:
    """Move a committed set of outputs (PUBLISHING) into place; whether there was one."""
    if not (PUBLISHING / "paths.json").is_file():
        return False
    for name in json.loads((PUBLISHING / "paths.json").read_text()):
        source, target = PUBLISHING / name, Path(name)
        if not source.exists():  # moved before a kill
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        _as_if_created(source)
        os.replace(source, target)
    shutil.rmtree(PUBLISHING)
    return True


def save_torch(obj, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def save_json(obj, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_resolved(cfg: dict, folder: str | Path, name: str = "config.yaml") -> None:
    """Record the fully resolved configuration a stage ran with next to its outputs."""
    with atomic_file(Path(folder) / name) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))




def content_key(images: np.ndarray) -> str:
    """A name for an image set by its content: the same images give the same key."""
    return hashlib.sha1(images.tobytes() + str(images.shape).encode()).hexdigest()


def save_png(array: np.ndarray, path: str | Path) -> None:
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


def save_gif(frames: list[np.ndarray], path: str | Path, frame_ms: int = 400, hold_ms: int = 1500) -> None:
    """An animated GIF that loops, each frame shown `frame_ms` and the first and last `hold_ms`, written whole
    or not at all."""
    pictures = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    durations = [hold_ms] + [frame_ms] * (len(frames) - 2) + [hold_ms] if len(frames) > 1 else [hold_ms]
    with atomic_file(path) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0)


def numbered_paths(count: int, folder: Path, prefix: str) -> list[Path]:
    """folder/{prefix}_{i}.png for i < count, i zero-padded to at least 3 digits (the lab's image_000.png)."""
    width = max(3, len(str(count - 1)))
    return [folder / f"{prefix}_{i:0{width}d}.png" for i in range(count)]




def save_numbered_pngs(images: np.ndarray, folder: Path, prefix: str) -> None:
    """images[i] → `numbered_paths`' i-th file, written by a thread per core: Pillow's encoder releases the
    GIL, and a sweep writes thousands."""
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        list(pool.map(save_png, images, numbered_paths(len(images), folder, prefix)))  # the first failure raises


def load_png(path: str | Path, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def require(path: Path, stage: str) -> Path:
    """`path`, or a clear error saying which stage makes it."""
    if not path.exists():
        raise ConfigError(f"{path} not found: run the `{stage}` stage first (dvc repro, or python -m stages.{stage})")
    return path

