"""Stage `prepare`: any data source → train/val arrays and a lab-layout test set with ground truth.

Outputs in data/prepared/: train.npy, val.npy (uint8 N x 64 x 64 x 3), test/masked_image/image_000.png …,
test/mask64/mask_000.png …, test/masked.npy, test/mask64.npy, test/gt.npy and test/test_gt.csv (when
ground truth exists), summary.json and the resolved config.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.masking import GREY, generated_masks, token_mask_from_pixels
from model.synthetic import synthetic_faces
from pipeline import sources
from pipeline.config import ConfigError, cli, run
from pipeline.files import atomic_dir, check_writable, save_json, save_numbered_pngs, write_resolved
from pipeline.lineage import Lineage
from pipeline.paths import DOWNLOADS, PREPARED as OUT
LAB_SIZES = {"train": 12000, "val": 3000, "test": 747}


MIN_TEST = 10  # the fewest test images scored: FID and KID need a covariance and a jackknife over them


def split_sizes(n: int, sizes: dict, batch: int) -> dict:
    """Test first (the lab's 747, a tenth of the images, at least MIN_TEST), then train:val in the lab's 4:1.
    The smallest usable source gives MIN_TEST test images, one validation image and one training batch of
    `batch` images; a smaller one is refused."""
    test = min(sizes["test"], max(MIN_TEST, n // 10))
    val = max(1, min(sizes["val"], round((n - test) * LAB_SIZES["val"] / (LAB_SIZES["train"] + LAB_SIZES["val"]))))
    train = min(sizes["train"], n - test - val)
    if test < MIN_TEST or train < batch:
        raise ConfigError(f"data.source: {n} distinct images give {test} test and {max(train, 0)} training images; "
                          f"expected at least {MIN_TEST} test images (data.sizes.test) and a training batch of "
                          f"{batch} (train.batch_size): at least {MIN_TEST + 1 + batch} images")
    return {"train": train, "val": val, "test": test}


def decode_all(files: list[Path], skip_bad: bool, summary: dict, split: str = "") -> tuple[list, list[Path]]:
    """Every file decoded (sources.decode_image), or a ConfigError naming the refused ones and why; with
    `skip_bad`, those are skipped and listed in `summary`."""
    images, bad, alpha = [], [], 0
    for path in tqdm(files, desc="decode", unit="img", mininterval=1.0):
        try:
            image, had_alpha = sources.decode_image(path)
        except ValueError as e:
            bad.append((path, str(e)))
            continue
        images.append(image)
        alpha += had_alpha
    shown = "; ".join(f"{p}: {why}" for p, why in bad[:10]) + (" …" if len(bad) > 10 else "")
    if bad and not skip_bad:
        raise ConfigError(f"{len(bad)} file(s) could not be used as images: {shown}; "
                          "fix or remove them, or set data.skip_bad: true to skip them")
    if bad:
        print(f"prepare: skipped {len(bad)} file(s) (data.skip_bad): {shown}")
        summary[f"{split}skipped_files"] = [str(p) for p, _ in bad]
    if alpha:
        print(f"prepare: {alpha} image(s) had transparency: composited on white")
        summary[f"{split}alpha_on_white"] = alpha
    return images, [p for p, _ in bad]


def dedup(images: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    seen, kept = set(), []
    for img in images:
        key = hashlib.sha1(img.tobytes() + str(img.shape).encode()).digest()
        if key not in seen:
            seen.add(key)
            kept.append(img)
    return kept, len(images) - len(kept)


def test_set_from_images(gt: np.ndarray, data: dict) -> dict:
    masks = generated_masks(data["masks"], len(gt), seed=data["seed"] + 1,
                            hole_range=(data["hole_min"], data["hole_max"]))
    masked = gt.copy()
    masked[masks == 0] = GREY
    return {"masked": masked, "mask64": masks, "gt": gt}


def from_images(images: list[np.ndarray], data: dict, summary: dict, batch: int) -> tuple[dict, dict]:
    if data["dedup"]:
        images, dropped = dedup(images)
        summary["duplicates_dropped"] = dropped
    sizes = split_sizes(len(images), data["sizes"], batch)
    images = np.stack([sources.to_64(im) for im in images])
    order = np.random.default_rng(data["seed"]).permutation(len(images))
    test_idx = order[:sizes["test"]]
    val_idx = order[sizes["test"]:sizes["test"] + sizes["val"]]
    train_idx = order[sizes["test"] + sizes["val"]:][:sizes["train"]]
    test = test_set_from_images(images[test_idx], data)
    summary["test_masks"] = data["masks"]
    return {"train": images[train_idx], "val": images[val_idx]}, test


def from_lab(layout: sources.LabLayout, data: dict, summary: dict) -> tuple[dict, dict]:
    arrays = {}
    for split in ("train", "val"):
        files = getattr(layout, split)
        images, bad = decode_all(files, data["skip_bad"], summary, f"{split}_")
        summary[f"{split}_skipped_bad"] = len(bad)
        arrays[split] = _stack_64(images, [f for f in files if f not in set(bad)])
        summary[f"{split}_count"] = len(arrays[split])
    masked = _stack_64([_read_masked(p) for p in layout.masked], layout.masked)
    masks = np.stack([sources.decode_mask(p) for p in layout.masks])
    if data["masks"] != "brush":
        print(f"prepare: data.masks={data['masks']} is for generated test sets; the lab layout keeps its own masks")
    test = {"masked": masked, "mask64": masks, "gt": None}
    if data["test_gt"]:
        test["gt"] = sources.read_test_gt_csv(Path(data["test_gt"]), len(masked))
    else:
        print("prepare: no data.test_gt given for the lab test set: FID will be disabled "
              "(set data.test_gt to the lab's test_gt.csv to enable it)")
    return arrays, test


def _stack_64(images: list[np.ndarray], files: list[Path]) -> np.ndarray:
    for img, path in zip(images, files):
        if img.shape != (64, 64, 3):
            raise ConfigError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, the lab layout needs 64x64")
    if not images:
        return np.zeros((0, 64, 64, 3), np.uint8)
    return np.stack(images)


def _read_masked(path: Path) -> np.ndarray:
    """A lab test image: never skipped, since its serial pairs it with its mask and its test_gt.csv row."""
    try:
        return sources.decode_rgb(path)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}; a masked test image cannot be skipped (its serial pairs it with its "
                          "mask and the test_gt.csv row)") from None


def load_source(data: dict, workdir: Path, batch: int) -> tuple[dict, dict, dict]:
    """Resolve `data.source` to (train/val arrays, test set, summary), checking inputs first; `batch`: the
    training batch a generated split must hold."""
    source = data["source"]
    sha256 = str(data["sha256"]).lower() if data["sha256"] else None
    summary = {"source": str(source)}
    if source is None or str(source).strip() == "":
        raise ConfigError("data.source is empty; expected 'synthetic', a path, or an http(s) URL")
    source = str(source)
    if source == "synthetic":
        images = synthetic_faces(data["synthetic_count"], seed=data["seed"])
        summary["images_in"] = len(images)
        return (*from_images(list(images), {**data, "dedup": False}, summary, batch), summary)
    if source.startswith(("http://", "https://")):
        path = sources.download(source, DOWNLOADS, sha256)
    elif "://" in source:
        raise ConfigError(f"data.source {source!r}: unsupported URL scheme; expected http(s)://")
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"data.source: {path} does not exist; expected 'synthetic', a folder, "
                              "an archive (zip, tar, tar.gz) or an http(s) URL")
        if sha256 and path.is_file() and sources.sha256_of(path) != sha256:
            raise ConfigError(f"data.sha256: {path} does not match the expected checksum")
    if path.is_file():
        if not sources.is_archive(path):
            kind = sources.archive_kind(path)
            if kind:
                raise ConfigError(f"data.source: {path} starts as a {kind} archive but is corrupt or truncated; "
                                  "download or copy it again")
            raise ConfigError(f"data.source: {path} is a file but not a zip or tar archive")
        path = sources.extract(path, workdir / "extracted", data["max_extract_gb"] * 1e9, data["max_extract_ratio"])
    root = sources.single_root(path)
    layout = sources.find_lab_layout(root)
    if layout is not None:
        summary["layout"] = "lab"
        return (*from_lab(layout, data, summary), summary)
    files = sources.image_files(root)
    if not files:
        raise ConfigError(f"data.source: no image files found in {path}")
    images, bad = decode_all(files, data["skip_bad"], summary)
    if not images:
        raise ConfigError(f"data.source: none of the {len(files)} files in {path} could be decoded")
    summary.update(layout="images", images_in=len(images), skipped_bad=len(bad))
    return (*from_images(images, data, summary, batch), summary)


def write_outputs(out: Path, arrays: dict, test: dict, summary: dict, cfg: dict) -> None:
    for split, arr in arrays.items():
        np.save(out / f"{split}.npy", arr)
    tdir = out / "test"
    (tdir / "masked_image").mkdir(parents=True)
    (tdir / "mask64").mkdir()
    save_numbered_pngs(test["masked"], tdir / "masked_image", "image")
    save_numbered_pngs(test["mask64"], tdir / "mask64", "mask")
    np.save(tdir / "masked.npy", test["masked"])
    np.save(tdir / "mask64.npy", test["mask64"])
    if test["gt"] is not None:
        np.save(tdir / "gt.npy", test["gt"])
        sources.write_test_gt_csv(test["gt"], tdir / "test_gt.csv")
    token_masks = token_mask_from_pixels(torch.from_numpy(test["mask64"]))
    summary.update(
        train=len(arrays["train"]), val=len(arrays["val"]), test=len(test["masked"]),
        has_ground_truth=test["gt"] is not None,
        hole_fraction_mean=round(float((test["mask64"] == 0).mean()), 4),
        masked_token_fraction_mean=round(float(token_masks.float().mean()), 4),
    )
    save_json(summary, out / "summary.json")
    write_resolved(cfg, out)
    Lineage(cfg).write(out, OUT, "prepare")


def main(argv: list[str] | None = None) -> None:
    cfg, _ = cli(__doc__, argv=argv)
    check_writable(OUT)
    data = cfg["data"]
    with tempfile.TemporaryDirectory(prefix="prepare-") as work:
        arrays, test, summary = load_source(data, Path(work), cfg["train"]["batch_size"])
        with atomic_dir(OUT) as out:
            write_outputs(out, arrays, test, summary, cfg)
    print("prepare: " + ", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run(main)
