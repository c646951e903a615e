"""Time to inpaint one image from the command line, as a user waits for it: Python's start, the imports, the
models' loading, the decode and the files written, for each decoding order, in one run.

    python -m bench.inpaint_command [--models models] [--repeats 3] [--T 8]

Needs trained models (`dvc repro` first). The image is the first test image when the workspace has one, else a
random one: the time does not depend on what it shows.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import machine
from model.choices import ORDERS
from pipeline.paths import MODELS, TEST


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--T", type=int, default=8)
    a = parser.parse_args()
    gt = TEST / "gt.npy"
    image = np.load(gt)[0] if gt.exists() else np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    print(f"machine: {machine(torch.device('cpu'))}; one 64x64 image, a 32x32 box, cosine, T={a.T}")
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "one.png"
        Image.fromarray(image).save(path)
        for order in ORDERS:
            seconds = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "commands.inpaint", str(path), "--box", "16,16,32,32",
                                "--T", str(a.T), "--models", str(a.models), "--out", work, "-S",
                                f"inpaint.order={order}"], check=True, capture_output=True)
                seconds.append(time.perf_counter() - t0)
            print(f"order {order}: median {statistics.median(seconds):.2f} s, min {min(seconds):.2f}, "
                  f"max {max(seconds):.2f} ({a.repeats} runs, from the shell prompt to the files written)")


if __name__ == "__main__":
    main()
