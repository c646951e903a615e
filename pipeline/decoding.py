"""Decoding the test set as the `inpaint` stage and the `show` command do it: the models and the test set's
token caches loaded once, then any subset of the test images decoded (`Inpainter.fill`, each image's noise keyed
by its serial), so an image's decoding and its pictures are the same whichever subset and batch it is in."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from model.blend import blender
from pipeline.config import ConfigError
from pipeline.inpainter import Inpainter
from pipeline.lineage import Lineage
from pipeline.paths import TEST, TOKENS
from pipeline.pictures import decoding_picture


@dataclass
class DecodeInputs:
    """Everything decoding the test set needs, loaded once for all configurations of a process."""
    model: Inpainter
    masked_tokens: torch.Tensor  # (N, 256) long, on the models' device: stage 2's context
    known_tokens: torch.Tensor   # (N, 256) long: what the final decode keeps outside the holes
    token_mask: torch.Tensor     # (N, 256) bool
    masked: np.ndarray           # (N, 64, 64, 3) uint8, holes grey
    mask64: np.ndarray           # (N, 64, 64) uint8, 0 = hole
    gt: np.ndarray | None
    blend: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (generated, known) → composites, as `inpaint.blend` says
    lineage: Lineage    # the files these were read from, checked


def load_inputs(cfg: dict) -> DecodeInputs:
    """The test set, its tokens and both models, each file checked (`Lineage.read`) before any is used."""
    lineage = Lineage(cfg)
    model = Inpainter.load(cfg=cfg, lineage=lineage)

    def token_array(name):
        return torch.from_numpy(np.load(lineage.read(TOKENS / name, "tokens"))).to(model.device)

    def test_array(name):
        return np.load(lineage.read(TEST / name, "prepare"))

    return DecodeInputs(
        model=model, masked_tokens=token_array("test_masked.npy").long(),
        known_tokens=token_array("test_known.npy").long(),
        token_mask=token_array("test_mask.npy"),
        masked=test_array("masked.npy"), mask64=test_array("mask64.npy"),
        gt=test_array("gt.npy") if (TEST / "gt.npy").exists() else None,
        blend=blender(cfg["inpaint"]["blend"], test_array("mask64.npy")), lineage=lineage)


def check_serials(serials, count: int, what: str) -> None:
    """Test image serials, each within the test set of `count` images; `what` names where they came from."""
    wrong = [s for s in serials if not 0 <= s < count]
    if wrong:
        raise ConfigError(f"{what}: serial {wrong[0]} is out of range: the test set has {count} images "
                          f"(serials 0 to {count - 1})")


def decode(inputs: DecodeInputs, schedule: str, T: int, sweet_spot: int, serials: list[int],
           picture_serials=()) -> tuple[torch.Tensor, dict]:
    """Decode the test images `serials`. Returns their final tokens (N, 256) and, for each of `picture_serials`
    among them, (its decoding picture: the latent mask and the predicted image at every iteration, the token
    masks (steps + 1, 256), the predicted images (steps, 64, 64, 3))."""
    rows = torch.as_tensor(serials, dtype=torch.long, device=inputs.model.device)
    tokens, masks, drawings = inputs.model.fill(
        inputs.masked_tokens[rows], inputs.known_tokens[rows], inputs.token_mask[rows], schedule, T, sweet_spot,
        list(serials), drawn=set(picture_serials))
    pictures = {}
    for i, s in enumerate(serials):
        if s in drawings:
            gt = None if inputs.gt is None else inputs.gt[s]
            step_masks = masks[:, i].cpu().numpy()
            pictures[s] = (decoding_picture(inputs.masked[s], gt, step_masks, drawings[s]), step_masks, drawings[s])
    return tokens, pictures
