"""Writing one inpainting configuration's PNGs (raw/ and composite/, 747 images each at the lab's test
size): one image at a time against `save_numbered_pngs` (a thread per core), in one run.

    python -m bench.pngs [--images 747] [--repeat 3]

Synthetic faces stand in for the decodes: PNG's compression time depends on the content, and these
have smooth shading and edges like the real ones.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.common import machine
from model.synthetic import synthetic_faces
from stages.common import numbered_paths, save_numbered_pngs, save_png


def one_at_a_time(images, folder: Path, prefix: str) -> None:
    """What the stages did before: the same files, one write after another."""
    for img, path in zip(images, numbered_paths(len(images), folder, prefix)):
        save_png(img, path)


def run(images: int = 747, repeat: int = 3) -> dict:
    """Median seconds to write `images` images twice (raw and composite) each way, alternating."""
    faces = synthetic_faces(images, seed=0)
    times = {"one_at_a_time": [], "threads": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            for name, write in (("one_at_a_time", one_at_a_time), ("threads", save_numbered_pngs)):
                folder = Path(tmp) / f"{name}{r}"
                folder.mkdir()
                t0 = time.perf_counter()
                write(faces, folder, "raw")
                write(faces, folder, "composite")
                times[name].append(time.perf_counter() - t0)
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"benchmark": "PNG writes of one inpainting configuration (raw + composite)",
            "machine": machine(torch.device("cpu")), "images": 2 * images,
            "one_at_a_time_s": round(median["one_at_a_time"], 3), "threads_s": round(median["threads"], 3),
            "speedup": round(median["one_at_a_time"] / median["threads"], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=747)
    parser.add_argument("--repeat", type=int, default=3)
    a = parser.parse_args()
    print(json.dumps(run(a.images, a.repeat), indent=2))


if __name__ == "__main__":
    main()
