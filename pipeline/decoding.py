"""Decoding the test set as the `inpaint` stage and the `show` command do it: the inputs loaded once, then
any subset of the test images decoded in batches, each image with its own noise (`image_generators`), so
an image's decoding and its pictures are the same whichever subset and batch it is decoded in."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from model.blend import blender
from model.iterative_decode import image_generators, iterative_decode
from model.vqgan import VQGAN
from pipeline.config import ConfigError
from pipeline.lineage import Lineage
from pipeline.paths import TEST, TOKENS
from pipeline.pictures import decoding_picture
from pipeline.runtime import autocast_for
from pipeline.transformer_loader import load_transformer
from pipeline.vqgan_loader import decode_images, load_vqgan


@dataclass
class DecodeInputs:
    """Everything decoding needs, loaded once for all configurations of a process."""
    device: torch.device
    masked_tokens: torch.Tensor  # (N, 256) long, on `device`: stage 2's context
    known_tokens: torch.Tensor   # (N, 256) long, on `device`: what the final decode keeps outside the holes
    token_mask: torch.Tensor     # (N, 256) bool, on `device`
    masked: np.ndarray           # (N, 64, 64, 3) uint8, holes grey
    gt: np.ndarray | None
    blend: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (generated, known) → composites, as `inpaint.blend` says
    transformer: torch.nn.Module
    vqgan: VQGAN
    autocast: Callable  # stage 2's precision (`autocast_for`)
    lineage: Lineage    # the files these were read from, checked


def load_inputs(cfg: dict, device: torch.device) -> DecodeInputs:
    """The test set, its tokens and both models, each file checked (`Lineage.read`) before any is used."""
    lineage = Lineage(cfg)

    def token_array(name):
        return torch.from_numpy(np.load(lineage.read(TOKENS / name, "tokens"))).to(device)

    def test_array(name):
        return np.load(lineage.read(TEST / name, "prepare"))

    return DecodeInputs(
        device=device, masked_tokens=token_array("test_masked.npy").long(), known_tokens=token_array("test_known.npy").long(),
        token_mask=token_array("test_mask.npy"),
        masked=test_array("masked.npy"), gt=test_array("gt.npy") if (TEST / "gt.npy").exists() else None,
        blend=blender(cfg["inpaint"]["blend"], test_array("mask64.npy")),
        transformer=load_transformer(device, lineage), vqgan=load_vqgan(device, lineage),
        autocast=autocast_for(device, cfg["precision"]), lineage=lineage)


def check_serials(serials, count: int, what: str) -> None:
    """Test image serials, each within the test set of `count` images; `what` names where they came from."""
    wrong = [s for s in serials if not 0 <= s < count]
    if wrong:
        raise ConfigError(f"{what}: serial {wrong[0]} is out of range: the test set has {count} images "
                          f"(serials 0 to {count - 1})")


def decode(inputs: DecodeInputs, p: dict, schedule: str, T: int, sweet_spot: int, serials: list[int],
           picture_serials=()) -> tuple[torch.Tensor, dict]:
    """Decode the test images `serials` (`p`: the `inpaint` parameters) in batches of `p["batch_size"]`.
    Returns their final tokens (N, 256) (stage 2's in the holes, the known tokens around them) and, for each
    of `picture_serials` among them, its decoding picture: the latent mask and the predicted image at every
    iteration."""
    transformer, device = inputs.transformer, inputs.device

    def predict(tokens):
        with inputs.autocast():
            return transformer(tokens)

    index = torch.as_tensor(serials, dtype=torch.long, device=device)
    tokens, pictures = [], {}
    for start in range(0, len(serials), p["batch_size"]):
        batch = serials[start:start + p["batch_size"]]
        rows = index[start:start + p["batch_size"]]
        result = iterative_decode(
            predict, inputs.masked_tokens[rows], inputs.token_mask[rows], T=T, schedule=schedule,
            sweet_spot=sweet_spot, mask_token=transformer.cfg.mask_token, num_codes=transformer.cfg.num_codebook_vectors,
            choice_temperature=p["choice_temperature"], temperature=p["temperature"], confidence_form=p["confidence"],
            generators=image_generators(p["seed"], batch, device))
        tokens.append(torch.where(inputs.token_mask[rows], result.tokens, inputs.known_tokens[rows]))
        for i, s in enumerate(batch):
            if s in picture_serials:
                steps = decode_images(inputs.vqgan, result.predictions[:, i], p["batch_size"])
                gt = None if inputs.gt is None else inputs.gt[s]
                pictures[s] = decoding_picture(inputs.masked[s], gt, result.masks[:, i].cpu().numpy(), steps)
    return torch.cat(tokens), pictures
