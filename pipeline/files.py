"""Files the stages read and write: atomic outputs, JSON, PNGs, the resolved-config record, and a
clear error for an input that an earlier stage has not made yet."""
from __future__ import annotations

import contextlib
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

from pipeline.config import ConfigError
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


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=TEMPORARY.format(name=path.name), dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def load_array(path: Path, stage: str) -> np.ndarray:
    return np.load(require(path, stage))
