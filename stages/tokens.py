"""Stage `tokens`: encode every image once through the frozen VQGAN into a token cache.

Outputs in data/tokens/: train.npy, val.npy, test_masked.npy (int16, N x 256), test_mask.npy (bool,
N x 256: the lab's pixel-to-token rule), test_gt.npy (tokens of the ground truth, when it exists).
Stage 2 trains on these and never runs the encoder again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.masking import token_mask_from_pixels
from model.vqgan import VQGAN, normalize
from stages.common import atomic_dir, pick_device, write_resolved
from stages.config import cli, run
from stages.training import load_array
from stages.vqgan import load_frozen

PREPARED = Path("data/prepared")
OUT = Path("data/tokens")


@torch.inference_mode()
def token_cache(model: VQGAN, images: np.ndarray, batch_size: int, device, desc: str) -> np.ndarray:
    """uint8 images (N, 64, 64, 3) → int16 token indices (N, 256), in batches."""
    out = np.empty((len(images), model.cfg.latent_resolution**2), np.int16)
    for i in tqdm(range(0, len(images), batch_size), desc=desc, mininterval=2.0):
        x = normalize(torch.from_numpy(images[i:i + batch_size]).to(device))
        out[i:i + batch_size] = model.encode(x)[1].cpu().numpy().astype(np.int16)
    return out


def main(argv: list[str] | None = None) -> None:
    cfg, _ = cli(__doc__, argv=argv)
    device = pick_device(cfg["device"])
    model = load_frozen(device)
    bs = cfg["tokens"]["batch_size"]
    arrays = {
        "train": load_array(PREPARED / "train.npy", "prepare"),
        "val": load_array(PREPARED / "val.npy", "prepare"),
        "test_masked": load_array(PREPARED / "test" / "masked.npy", "prepare"),
    }
    if (PREPARED / "test" / "gt.npy").exists():
        arrays["test_gt"] = np.load(PREPARED / "test" / "gt.npy")
    mask64 = load_array(PREPARED / "test" / "mask64.npy", "prepare")
    with atomic_dir(OUT) as out:
        for name, images in arrays.items():
            np.save(out / f"{name}.npy", token_cache(model, images, bs, device, name))
        np.save(out / "test_mask.npy", token_mask_from_pixels(torch.from_numpy(mask64)).numpy())
        write_resolved(cfg, out)
    print(f"tokens: {', '.join(f'{k}={len(v)}' for k, v in arrays.items())}, codebook={model.cfg.num_codebook_vectors}")


if __name__ == "__main__":
    run(main)
