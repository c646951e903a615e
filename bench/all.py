"""Every benchmark in one run, written to one JSON file (the GPU figures of the lab profile).

    python -m bench.all --out bench_results.json [--compile]
"""
from __future__ import annotations

import argparse
import json

import torch

from bench import inpaint, stage1, stage2


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench_results.json")
    parser.add_argument("--compile", action="store_true")
    a = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    results = {
        "stage1": stage1.run(device, 128 if gpu else 16, 10 if gpu else 2, a.compile),
        "stage2": stage2.run(device, 256 if gpu else 16, 10 if gpu else 2, a.compile, student_steps=3 if gpu else 1,
                             accumulation=10 if gpu else 1),
        "inpaint": inpaint.run(device, 747 if gpu else 32, 8, 16 if gpu else 2, batch=256 if gpu else 32),
    }
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
