"""Stage 1 as the later stages use it: the `vqgan` stage's model loaded from its folder, frozen, and images
encoded to tokens and tokens decoded to images, in batches."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.vqgan import VQGAN, VQGANConfig, denormalize, normalize
from pipeline.lineage import Lineage
from pipeline.paths import VQGAN as VQGAN_FOLDER


def load_vqgan(device, lineage: Lineage, folder: Path = VQGAN_FOLDER) -> VQGAN:
    """Stage 1 (the `vqgan` stage's output, or a copy of it in `folder`), its files read through `lineage`."""
    arch = json.loads(lineage.read(folder / "architecture.json", "vqgan").read_text())
    model = VQGAN(VQGANConfig(**arch))
    model.load_state_dict(torch.load(lineage.read(folder / "vqgan.pt", "vqgan"), map_location="cpu", weights_only=True))
    return model.to(device).eval().requires_grad_(False)


@torch.inference_mode()
def decode_images(vqgan: VQGAN, tokens: torch.Tensor, batch_size: int) -> np.ndarray:
    """Token indices (N, 256) → uint8 images (N, 64, 64, 3), decoded in batches."""
    return np.concatenate([denormalize(vqgan.decode_indices(chunk)).cpu().numpy()
                           for chunk in tokens.split(batch_size)])


@torch.inference_mode()
def encode_images(vqgan: VQGAN, images: np.ndarray, batch_size: int, progress: str | None = None) -> np.ndarray:
    """uint8 images (N, 64, 64, 3) → token indices (N, 256) int64, encoded in batches (a progress bar named
    `progress`, if given)."""
    device = next(vqgan.parameters()).device
    starts = range(0, len(images), batch_size)
    chunks = [vqgan.encode(normalize(torch.from_numpy(images[i:i + batch_size]).to(device)))[1].cpu().numpy()
              for i in (tqdm(starts, desc=progress, mininterval=2.0) if progress else starts)]
    if not chunks:
        return np.zeros((0, vqgan.cfg.latent_resolution**2), np.int64)
    return np.concatenate(chunks).astype(np.int64)
