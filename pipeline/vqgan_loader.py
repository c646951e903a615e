"""Stage 1 as the later stages use it: the `vqgan` stage's model loaded from its folder, frozen, and token
decoding in batches."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from model.vqgan import VQGAN, VQGANConfig, denormalize
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
