"""Getting images in: URLs (resumable, checksummed), archives (extracted safely), folders, the lab layout."""
from __future__ import annotations

import hashlib
import http.client
import io
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.config import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_name(url: str) -> str:
    """The cache file of a URL: a hash of the whole URL (two hosts' `big.zip` are two files), then its
    readable basename."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1]) or "download"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}"


def download(url: str, cache_dir: Path, sha256: str | None = None, timeout: float = 30) -> Path:
    """Stream `url` into `cache_dir`, resuming a partial `.part` file; the body must have the length the
    server announced (a short one stays a `.part`, for the next run to resume) and, given one, the sha256."""
    final = cache_dir / cache_name(url)
    if final.exists() and (sha256 is None or sha256_of(final) == sha256):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # our partial file is already complete (or bigger): restart
            part.unlink()
            return download(url, cache_dir, sha256, timeout)
        raise ConfigError(f"data.source: download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ConfigError(f"data.source: cannot reach {url}: {getattr(e, 'reason', e)}") from None
    with response:
        resumed = start and response.status == 206
        total = response.headers.get("Content-Length")
        total = int(total) + (start if resumed else 0) if total else None
        try:
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=start if resumed else 0, unit="B", unit_scale=True,
                desc=f"download {final.name}",
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException):
            pass  # a dropped connection: the length check below says so
    got = part.stat().st_size
    if total is not None and got != total:
        raise ConfigError(f"data.source: the download of {url} stopped at {got} of {total} bytes; {part} is kept "
                          "and the next run resumes it")
    if sha256 is not None:
        digest = sha256_of(part)
        if digest != sha256.lower():
            part.unlink()
            raise ConfigError(f"data.sha256: {url} has sha256 {digest}, expected {sha256}; the download was removed")
    part.replace(final)
    return final


ARCHIVE_MAGIC = {b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x1f\x8b": "gzip", b"BZh": "bzip2",
                 b"\xfd7zXZ\x00": "xz"}


def is_archive(path: Path) -> bool:
    return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


def archive_kind(path: Path) -> str | None:
    """What a file's first bytes say it is ("zip", "gzip", "tar", …), whether or not it then reads whole."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[257:262] == b"ustar":
        return "tar"
    return next((kind for magic, kind in ARCHIVE_MAGIC.items() if head.startswith(magic)), None)


def _check_member(archive: Path, name: str, is_link: bool) -> None:
    parts = Path(name).parts
    if is_link:
        raise ConfigError(f"{archive}: refusing to extract the link {name!r}; nothing was extracted")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise ConfigError(f"{archive}: refusing unsafe entry {name!r} (absolute or '..'); nothing was extracted")


class _Budget:
    """What an archive may extract: `max_bytes` in all, and at most `max_ratio` times the archive's size.
    Counted on the bytes actually written, so an entry that lies about its size is caught too."""

    def __init__(self, archive: Path, max_bytes: float, max_ratio: float):
        self.archive, self.written = archive, 0
        self.limit = min(max_bytes, max_ratio * max(archive.stat().st_size, 1))

    def check(self, name: str, more: int) -> None:
        self.written += more
        if self.written > self.limit:
            raise ConfigError(
                f"{self.archive}: refusing to extract past {self.limit / 1e6:.0f} MB (at entry {name!r}): more than "
                "data.max_extract_gb, or data.max_extract_ratio times the archive's size; raise them if the "
                "archive is what you meant")


def _copy(src, dest: Path, name: str, budget: _Budget) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            budget.check(name, len(chunk))
            out.write(chunk)


def extract(archive: Path, dest: Path, max_bytes: float = 20e9, max_ratio: float = 100) -> Path:
    """Extract a zip or tar(.gz) after checking every entry (one bad entry refuses the whole archive), no
    more than `_Budget` allows; a corrupt archive is reported as corrupt."""
    budget = _Budget(archive, max_bytes, max_ratio)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                infos = z.infolist()
                for info in infos:
                    _check_member(archive, info.filename, (info.external_attr >> 16) & 0o170000 == 0o120000)
                for info in infos:
                    if info.is_dir():
                        (dest / info.filename).mkdir(parents=True, exist_ok=True)
                    else:
                        with z.open(info) as src:  # reading it whole checks its CRC
                            _copy(src, dest / info.filename, info.filename, budget)
        else:
            with tarfile.open(archive) as t:
                members = t.getmembers()
                for m in members:
                    _check_member(archive, m.name, m.issym() or m.islnk() or not (m.isfile() or m.isdir()))
                for m in members:
                    if m.isdir():
                        (dest / m.name).mkdir(parents=True, exist_ok=True)
                    else:
                        _copy(t.extractfile(m), dest / m.name, m.name, budget)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # the disk, not the archive (a bad gzip stream is an OSError without an errno)
        raise ConfigError(f"data.source: {archive} is corrupt or truncated ({e}); download or copy it again") from None
    return dest


def single_root(folder: Path) -> Path:
    """Descend through wrapper folders that hold nothing but one folder."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            return folder


def looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(8)
    return head.startswith(IMAGE_MAGIC)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and looks_like_image(p))


MIN_SIDE = 32  # smaller images would be blown up into blur; they are refused (or skipped, data.skip_bad)
BACKGROUND = (255, 255, 255)  # what a transparent pixel shows: white


def _to_8bit(im: Image.Image) -> Image.Image:
    """16- and 32-bit greyscale scaled to 8 bits (Pillow's own convert clips them, mostly to white)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        top = 65535 if im.mode.startswith("I;16") or a.max() > 255 else 255
        return Image.fromarray(((np.clip(a, 0, top) * 255 + top // 2) // top).astype(np.uint8), "L")
    if im.mode == "F":
        raise ValueError("32-bit floating-point pixels: expected 8- or 16-bit images")
    return im


def decode_image(path: Path) -> tuple[np.ndarray, bool]:
    """Decode by content (the lab stores JPEG bytes under .png names) into uint8 RGB: 16-bit images scaled
    to 8 bits, palettes expanded, transparency composited on BACKGROUND. Returns (pixels, had_alpha); a
    ValueError says why the file is refused (undecodable, or below MIN_SIDE)."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = _to_8bit(im)
            alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
            if alpha:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # what Pillow raises for a bad file
        raise ValueError(f"not a decodable image ({str(e)[:120] or type(e).__name__})") from None
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{w}x{h} pixels, below the {MIN_SIDE}x{MIN_SIDE} minimum")
    return rgb, alpha


def decode_rgb(path: Path) -> np.ndarray:
    return decode_image(path)[0]


def decode_grey(path: Path) -> np.ndarray:
    """A mask image as uint8 greyscale (H, W), or a ConfigError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(_to_8bit(im).convert("L"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: mask file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ConfigError(f"{path}: not a decodable mask image ({str(e)[:120] or type(e).__name__})") from None


def decode_mask(path: Path) -> np.ndarray:
    """A lab mask: 64x64 greyscale, 0 = hole, 255 = known, nothing else."""
    m = decode_grey(path)
    if m.shape != (64, 64):
        raise ConfigError(f"{path}: mask is {m.shape[1]}x{m.shape[0]}, expected 64x64")
    odd = np.setdiff1d(np.unique(m), (0, 255))
    if odd.size:
        raise ConfigError(f"{path}: mask holds values other than 0 and 255 (e.g. {int(odd[0])}); expected a binary "
                          "mask, 0 = hole, 255 = known")
    return m


def to_64(img: np.ndarray, size: int = 64) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[top:top + s, left:left + s]
    if s != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0))
    return img


# ---------------------------------------------------------------- the lab layout
@dataclass
class LabLayout:
    train: list[Path]
    val: list[Path]
    masked: list[Path]
    masks: list[Path]


def _find(root: Path, name: str) -> Path | None:
    for base in (root, root / "cat_face"):
        if (base / name).is_dir():
            return base / name
    return None


def find_lab_layout(root: Path) -> LabLayout | None:
    """The lab zip's layout (`train/ val/ masked_image/ mask64/`, maybe under `cat_face/`), or None."""
    masked, masks = _find(root, "masked_image"), _find(root, "mask64")
    if masked is None and masks is None:
        return None
    if masked is None or masks is None:
        missing = "masked_image/" if masked is None else "mask64/"
        raise ConfigError(f"{root}: lab layout without {missing}; expected both masked_image/ and mask64/")
    listing = {}
    for name in ("train", "val"):
        folder = _find(root, name)
        listing[name] = sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg")) if folder else []
    masked_files = {_serial(p): p for p in masked.glob("image_*.png")}
    mask_files = {_serial(p): p for p in masks.glob("mask_*.png")}
    unpaired = sorted(set(masked_files) ^ set(mask_files))
    if unpaired or not masked_files:
        names = [str(masked_files.get(s) or mask_files.get(s)) for s in unpaired[:10]]
        raise ConfigError(f"{root}: masked images and masks do not pair up by serial number "
                          f"({len(masked_files)} images, {len(mask_files)} masks); unpaired: {names}")
    order = sorted(masked_files)
    return LabLayout(listing["train"], listing["val"], [masked_files[s] for s in order],
                     [mask_files[s] for s in order])


def _serial(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    if not m:
        raise ConfigError(f"{path}: expected a serial number in the name (image_000.png / mask_000.png)")
    return int(m.group(1))


def read_test_gt_csv(path: Path, expected_rows: int) -> np.ndarray:
    """The lab's ground-truth CSV: a header row, then one row of 12288 uint8 (HWC) per test image."""
    if not path.is_file():
        raise ConfigError(f"data.test_gt: {path} not found")
    try:
        rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise ConfigError(f"data.test_gt: {path} is not a CSV of integers: {e}") from None
    if rows.shape != (expected_rows, 64 * 64 * 3) or rows.min() < 0 or rows.max() > 255:
        raise ConfigError(f"data.test_gt: {path} has shape {rows.shape}, expected ({expected_rows}, 12288) "
                          "uint8 values (one row per masked image, HWC order, after a header row)")
    return rows.astype(np.uint8).reshape(-1, 64, 64, 3)


def write_test_gt_csv(images: np.ndarray, path: Path) -> None:
    flat = images.reshape(len(images), -1)
    with open(path, "w") as f:
        f.write(",".join(str(i) for i in range(flat.shape[1])) + "\n")
        for row in flat:
            f.write(",".join(map(str, row.tolist())) + "\n")

