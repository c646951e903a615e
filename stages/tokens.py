"""Stage `tokens`: encode every image once through the frozen VQGAN into a token cache.

Outputs in data/tokens/: train.npy, val.npy, test_masked.npy (int16, N x 256), test_mask.npy (bool,
N x 256: the lab's pixel-to-token rule), test_known.npy (int16, N x 256), test_gt.npy (tokens of the ground
truth, when it exists). Stage 2 trains on these and never runs the encoder again. The masked test images
are encoded with their holes filled as `tokens.prefill` says (grey: as given, the lab's way) into
test_masked.npy, stage 2's context; test_known.npy holds the known tokens the final decode puts around stage
2's hole tokens, encoded as `tokens.decode_prefill` says (null: the same cache).
"""
from __future__ import annotations

import shutil

import numpy as np
import torch

from model.baselines import prefilled
from model.masking import token_mask_from_pixels
from pipeline.config import cli, run
from pipeline.files import atomic_dir, check_writable, write_resolved
from pipeline.lineage import Lineage
from pipeline.vqgan_loader import encode_images, load_vqgan
from pipeline.paths import PREPARED, TOKENS as OUT
from pipeline.runtime import pick_device


def main(argv: list[str] | None = None) -> None:
    cfg, _ = cli(__doc__, argv=argv)
    device = pick_device(cfg["device"])
    check_writable(OUT)
    lineage = Lineage(cfg)

    def prepared(name):
        return np.load(lineage.read(PREPARED / name, "prepare"))

    model = load_vqgan(device, lineage)
    bs = cfg["tokens"]["batch_size"]
    mask64, masked = prepared("test/mask64.npy"), prepared("test/masked.npy")
    prefill, decode_prefill = cfg["tokens"]["prefill"], cfg["tokens"]["decode_prefill"] or cfg["tokens"]["prefill"]
    arrays = {"train": prepared("train.npy"), "val": prepared("val.npy"),
              "test_masked": prefilled(masked, mask64, prefill)}
    if decode_prefill != prefill:
        arrays["test_known"] = prefilled(masked, mask64, decode_prefill)
    if (PREPARED / "test" / "gt.npy").exists():
        arrays["test_gt"] = prepared("test/gt.npy")
    with atomic_dir(OUT) as out:
        for name, images in arrays.items():
            np.save(out / f"{name}.npy", encode_images(model, images, bs, progress=name).astype(np.int16))
        if decode_prefill == prefill:
            shutil.copy(out / "test_masked.npy", out / "test_known.npy")
        np.save(out / "test_mask.npy", token_mask_from_pixels(torch.from_numpy(mask64)).numpy())
        write_resolved(cfg, out)
        lineage.write(out, OUT, "tokens")
    print(f"tokens: {', '.join(f'{k}={len(v)}' for k, v in arrays.items())}, codebook={model.cfg.num_codebook_vectors}")


if __name__ == "__main__":
    run(main)
