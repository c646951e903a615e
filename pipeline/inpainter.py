"""Inpaint any 64x64 images with a trained pair of models. The one decoding path: the `inpaint` stage, the
`show` and `inpaint` commands and any script of a user's decode through `Inpainter.fill`. The README's
"Inpaint your own images" shows `Inpainter.load(...).inpaint(images, holes, ...)` at work (and a test runs it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from model.baselines import prefilled
from model.blend import blender
from model.iterative_decode import image_generators, iterative_decode
from model.masking import GREY, token_mask_from_pixels
from model.transformer import BidirectionalTransformer
from model.vqgan import VQGAN
from pipeline.config import ConfigError, check, check_point, load
from pipeline.lineage import RECORD, Lineage, sha256
from pipeline.paths import MODELS
from pipeline.runtime import autocast_for, pick_device
from pipeline.schema import Inpaint, first_error
from pipeline.transformer_loader import load_transformer
from pipeline.vqgan_loader import decode_images, encode_images, load_vqgan


@dataclass
class Inpainting:
    """What `Inpainter.inpaint` gives back for N images decoded in `steps` iterations."""
    composite: np.ndarray      # (N, 64, 64, 3) uint8: the decoded holes put into the input (`inpaint.blend`)
    raw: np.ndarray            # (N, 64, 64, 3) uint8: the VQGAN's decode of the final tokens
    masked: np.ndarray         # (N, 64, 64, 3) uint8: the input as decoded, its holes grey
    tokens: np.ndarray         # (N, 256) int64: the final tokens, stage 2's in the holes
    token_masks: np.ndarray    # (steps + 1, N, 256) bool: the tokens still masked before step 1 … after the last
    steps: np.ndarray | None   # (steps, N, 64, 64, 3) uint8: the predicted image at every step; None if not asked


def check_pair(vqgan: Path, transformer: Path) -> None:
    """That the transformer in `transformer` was trained on the tokens of the stage 1 in `vqgan` (where its
    record names the stage 1 it read)."""
    inputs = json.loads((transformer / RECORD).read_text()).get("inputs", {})
    trained_on = next((digest for name, digest in inputs.items() if name.endswith("/vqgan.pt")), None)
    if trained_on is not None and trained_on != sha256(vqgan / "vqgan.pt"):
        raise ConfigError(f"{transformer} was trained on the tokens of another stage 1 than {vqgan}/vqgan.pt: "
                          "use the two models one run trained together")


class Inpainter:
    """A trained pair of models, frozen, with the decoding settings of params.yaml's `inpaint` section."""

    def __init__(self, vqgan: VQGAN, transformer: BidirectionalTransformer, cfg: dict):
        self.vqgan, self.transformer, self.cfg = vqgan, transformer, cfg
        self.device = next(transformer.parameters()).device
        self.autocast = autocast_for(self.device, cfg["precision"])

    @classmethod
    def load(cls, folder: str | Path = MODELS, *settings: str, cfg: dict | None = None,
             lineage: Lineage | None = None) -> Inpainter:
        """The models in `folder`/vqgan and `folder`/transformer (a workspace's models/, or a copy of them).

        Args:
          settings: `KEY=VALUE` changes to params.yaml, as `-S` takes them (e.g. "inpaint.order=halton").
          cfg: instead, a stage's resolved parameters; then `lineage` (that stage's) also checks that the models
            are up to date with the workspace. Without it each file is checked as its stage wrote it, and the
            transformer as trained on this stage 1.
        """
        if cfg is None:
            cfg = load(list(settings))
            check(cfg)
        folder = Path(folder)
        if lineage is None:  # a stage's lineage names the stage that makes a missing file instead
            for name in ("vqgan", "transformer"):
                for file in ("architecture.json", f"{name}.pt", RECORD):
                    if not (folder / name / file).is_file():
                        raise ConfigError(f"{folder / name / file} not found: expected the trained models in "
                                          f"{folder}/ (train them with `dvc repro` or `python -m commands.run_all`, "
                                          "or get them with `dvc artifacts get`), or name their folder")
        device, files = pick_device(cfg["device"]), lineage or Lineage(None)
        vqgan = load_vqgan(device, files, folder / "vqgan")
        transformer = load_transformer(device, files, folder / "transformer")
        if lineage is None:
            check_pair(folder / "vqgan", folder / "transformer")
        return cls(vqgan, transformer, cfg)

    def settings(self, changes: dict) -> dict:
        """The `inpaint` section with `changes` (its keys) applied, checked by the schema."""
        p = {**self.cfg["inpaint"], **changes}
        try:
            Inpaint.model_validate(p)
        except ValidationError as e:
            raise ConfigError(first_error(e, p, Inpaint)) from None
        return p

    def fill(self, context: torch.Tensor, known: torch.Tensor, token_mask: torch.Tensor, schedule: str, T: int,
             sweet_spot: int, keys: list[int], drawn=(), settings: dict | None = None):
        """Decode the masked tokens of N images, in batches of `inpaint.batch_size`.

        Args:
          context: (N, 256) long, on the models' device: the encoded masked images stage 2 sees.
          known: (N, 256) long: the tokens kept outside the holes (`tokens.decode_prefill`'s).
          token_mask: (N, 256) bool: True where a token is generated.
          keys: one integer per image naming its decoding noise (with `inpaint.seed`): an image decodes the same
            in any batch and any subset. The pipeline's key is the test serial.
          drawn: the keys whose predicted image is decoded at every step.
          settings: the `inpaint` section (default: this model's).
        Returns the final tokens (N, 256), the token masks (steps + 1, N, 256) and {key: uint8 (steps, 64, 64,
        3)} for `drawn`.
        """
        p = settings or self.cfg["inpaint"]

        def predict(tokens):
            with self.autocast():
                return self.transformer(tokens)

        tokens, masks, drawings = [], [], {}
        for start in range(0, len(keys), p["batch_size"]):
            rows = slice(start, start + p["batch_size"])
            batch = keys[rows]
            result = iterative_decode(
                predict, context[rows], token_mask[rows], T=T, schedule=schedule, sweet_spot=sweet_spot,
                mask_token=self.transformer.cfg.mask_token, num_codes=self.transformer.cfg.num_codebook_vectors,
                choice_temperature=p["choice_temperature"], temperature=p["temperature"],
                confidence_form=p["confidence"], order=p["order"],
                generators=image_generators(p["seed"], batch, self.device))
            tokens.append(torch.where(token_mask[rows], result.tokens, known[rows]))
            masks.append(result.masks)
            for i, key in enumerate(batch):
                if key in drawn:
                    drawings[key] = decode_images(self.vqgan, result.predictions[:, i], p["batch_size"])
        return torch.cat(tokens), torch.cat(masks, dim=1), drawings

    def inpaint(self, images: np.ndarray, holes: np.ndarray, schedule: str | None = None, T: int | None = None,
                sweet_spot: int | None = None, *, steps: bool = True, keys=None, **settings) -> Inpainting:
        """Fill the holes of `images`.

        Args:
          images: uint8 (N, 64, 64, 3) RGB.
          holes: bool (N, 64, 64), True where the image is to be generated; a token is generated where any pixel
            of its 4x4 patch is a hole (the lab's rule).
          schedule, T, sweet_spot: the decoding configuration (default: params.yaml's headline).
          steps: whether to decode the predicted image at every step (`Inpainting.steps`).
          keys: N integers naming each image's decoding noise (default 0 … N-1: a test set's serials).
          settings: changes to the `inpaint` parameters, e.g. order="halton", confidence="maskgit".
        """
        images, holes = np.asarray(images), np.asarray(holes)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (64, 64, 3):
            raise ConfigError(f"images: expected uint8 RGB of shape (N, 64, 64, 3), got {images.dtype} {images.shape}")
        if holes.dtype != bool or holes.shape != images.shape[:3]:
            raise ConfigError(f"holes: expected bool of shape {images.shape[:3]}, got {holes.dtype} {holes.shape}")
        schedule = schedule or self.cfg["schedule"]
        T = self.cfg["T"] if T is None else T
        sweet_spot = self.cfg["sweet_spot"] if sweet_spot is None else sweet_spot
        check_point(schedule, T, sweet_spot)
        p = self.settings(settings)
        keys = list(range(len(images))) if keys is None else [int(k) for k in keys]
        masked = np.where(holes[..., None], np.uint8(GREY), images)
        mask64 = np.where(holes, 0, 255).astype(np.uint8)
        fills = self.cfg["tokens"]
        decode_fill = fills["decode_prefill"] or fills["prefill"]

        def encoded(fill):
            codes = encode_images(self.vqgan, prefilled(masked, mask64, fill), fills["batch_size"])
            return torch.from_numpy(codes).to(self.device)

        context = encoded(fills["prefill"])
        known = context if decode_fill == fills["prefill"] else encoded(decode_fill)
        token_mask = token_mask_from_pixels(torch.from_numpy(mask64)).to(self.device)
        tokens, masks, drawings = self.fill(context, known, token_mask, schedule, T, sweet_spot, keys,
                                            drawn=set(keys) if steps else (), settings=p)
        raw = decode_images(self.vqgan, tokens, p["batch_size"])
        return Inpainting(
            composite=blender(p["blend"], mask64)(raw, masked), raw=raw, masked=masked, tokens=tokens.cpu().numpy(),
            token_masks=masks.cpu().numpy(),
            steps=np.stack([drawings[k] for k in keys], axis=1) if steps else None)
