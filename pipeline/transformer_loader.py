"""Stage 2 as the decoding stages use it: the `train` stage's transformer loaded from its folder, frozen."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from model.transformer import BidirectionalTransformer, TransformerConfig
from pipeline.lineage import Lineage
from pipeline.paths import TRANSFORMER


def load_transformer(device, lineage: Lineage, folder: Path = TRANSFORMER) -> BidirectionalTransformer:
    """Stage 2 (the `train` stage's best weights by validation loss), its files read through `lineage`."""
    arch = json.loads(lineage.read(folder / "architecture.json", "train").read_text())
    model = BidirectionalTransformer(TransformerConfig(**arch))
    model.load_state_dict(torch.load(lineage.read(folder / "transformer.pt", "train"), map_location="cpu",
                                     weights_only=True))
    return model.to(device).eval().requires_grad_(False)
