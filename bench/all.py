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
    results = {"stage1": stage1.run(device, compiled=a.compile),
               "stage2": stage2.run(device, compiled=a.compile),
               "inpaint": inpaint.run(device, compile_model=a.compile)}
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
