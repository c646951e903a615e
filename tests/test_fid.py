"""FID: the Fréchet distance against closed forms, the Inception features, the feature cache."""
import numpy as np
import pytest
import scipy.linalg
import torch

from model.fid import FrechetReference, gaussian_stats, inception_features
from pipeline.inception import load_inception
from model.synthetic import synthetic_faces
from pipeline.config import load
from pipeline.files import content_key
from pipeline.lineage import Lineage
from tiny import TINY


def features_with(rng, mu, cov, n):
    """n features whose sample mean and covariance (n − 1 denominator) are exactly mu and cov (needs n > d)."""
    d = len(mu)
    g = rng.normal(size=(n, d))
    q, _ = np.linalg.qr(g - g.mean(0))  # orthonormal columns, each orthogonal to the ones vector: centred
    root = scipy.linalg.cholesky(cov, lower=True)
    return mu + np.sqrt(n - 1) * q @ root.T


def test_many_images_match_closed_forms():
    """More images than features (the root form): against the diagonal closed form and scipy's sqrtm."""
    rng = np.random.default_rng(0)
    d, n = 64, 300
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Diagonal covariances: FID = |Δμ|² + Σ (σ1 − σ2)² with σ the standard deviations.
    v1, v2 = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    feats = features_with(rng, mu1, np.diag(v1), n)
    np.testing.assert_allclose(np.cov(feats, rowvar=False), np.diag(v1), atol=1e-12)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert FrechetReference(mu2, np.diag(v2)).distance(feats) == pytest.approx(expected, rel=1e-10)
    # General covariances: against scipy's sqrtm of Σ1 Σ2, in float64.
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T / d + 0.1 * np.eye(d), b @ b.T / d + 0.1 * np.eye(d)
    feats = features_with(rng, mu1, s1, n)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert FrechetReference(mu2, s2).distance(feats) == pytest.approx(expected, rel=1e-8)


def test_few_images_match_the_nuclear_norm():
    """Fewer images than features (the n x n form, as for a test set): singular covariances on both sides,
    against Tr((Σ₁Σ₂)^½) = ‖X₁X₂ᵀ‖_* with X the centred features over √(n − 1), an SVD and no eigenproblem."""
    rng = np.random.default_rng(1)
    d = 128
    reference = rng.normal(size=(50, d)) @ rng.normal(size=(d, d)) / 10
    ref = FrechetReference(*gaussian_stats(reference))
    assert abs(ref.distance(reference)) < 1e-8 * np.trace(ref.sigma)  # a set against its own statistics

    def centred(f):
        return (f - f.mean(0)) / np.sqrt(len(f) - 1)

    for n in (20, d):
        feats = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / 10 + 0.3
        x, y = centred(feats), centred(reference)
        expected = (np.sum((feats.mean(0) - reference.mean(0)) ** 2) + np.sum(x ** 2) + np.sum(y ** 2)
                    - 2 * np.linalg.norm(x @ y.T, "nuc"))
        # eigenvalues that are zero in exact arithmetic come out at rounding size, their roots at √ε of the
        # largest: a few parts in 10⁸, where the SVD's stay at ε
        assert ref.distance(feats) == pytest.approx(expected, rel=1e-7)


@pytest.fixture(scope="module")
def net():
    return load_inception("cpu")


def test_features_are_stable_across_batch_sizes(net):
    images = synthetic_faces(8, seed=3)
    whole = inception_features(net, images, batch_size=8)
    split = inception_features(net, images, batch_size=3)
    assert whole.shape == (8, 2048)
    np.testing.assert_allclose(whole, split, atol=1e-4)


@pytest.mark.slow
def test_fid_grows_with_noise(net):
    real = synthetic_faces(20, seed=4)
    ref = FrechetReference(*gaussian_stats(inception_features(net, real, 20)))
    rng = np.random.default_rng(0)
    fids = []
    for sigma in (0, 20, 50, 100):
        noisy = np.clip(real + rng.normal(0, sigma, real.shape), 0, 255).astype(np.uint8) if sigma else real
        fids.append(ref.distance(inception_features(net, noisy, 20)))
    assert abs(fids[0]) < 1e-3
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_feature_cache_is_reused(tiny_project, monkeypatch):
    """The evaluate stage's cache: a second score of the same images never runs the network."""
    monkeypatch.chdir(tiny_project.root)
    tiny_project.run("fid_reference", *TINY)
    from pipeline.scoring import InceptionScores

    gt = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))
    scores = InceptionScores(torch.device("cpu"), 12, content_key(gt), Lineage(load(TINY)))
    images = np.load(tiny_project.path("data", "prepared", "test", "masked.npy"))
    first = scores(images, "grey")
    assert set(first) == {"fid", "kid", "kid_se"} and first["kid_se"] > 0
    scores.net = None  # calling the network now would fail
    assert scores(images, "grey") == first
    cache = tiny_project.path("data", "fid", "cache")
    (cache / "stale.npy").write_bytes(b"")  # features of an image set this run did not evaluate
    scores.prune()
    assert [p.name for p in cache.iterdir()] == [scores.used.pop()]


def test_scores_refuse_a_reference_of_other_test_images(tiny_project, monkeypatch):
    """A reference left from another test set (same size, one pixel changed) is refused by name before
    any image is scored; the test set it was computed from is accepted."""
    monkeypatch.chdir(tiny_project.root)
    tiny_project.run("fid_reference", *TINY)
    from pipeline.config import ConfigError
    from pipeline.scoring import InceptionScores

    gt = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))
    lineage = Lineage(load(TINY))
    assert InceptionScores(torch.device("cpu"), 12, content_key(gt), lineage).available
    other = gt.copy()
    other[-1, 0, 0, 0] ^= 1
    for key in (content_key(other), None):
        with pytest.raises(ConfigError, match="reference is not of the test images"):
            InceptionScores(torch.device("cpu"), 12, key, lineage)


def test_reference_scores_held_out_real_images(tiny_project, net):
    """fid_reference's yardstick: the first validation images, as many as the test set, against the
    ground truth; recomputed here in float64 through the nuclear norm: with centred features X₁, X₂
    (n x d), Tr((Σ₁Σ₂)^½) = ‖X₁X₂ᵀ‖_* / (n − 1), which needs no matrix root of the singular d x d
    covariances."""
    tiny_project.run("fid_reference", *TINY)
    ref = np.load(tiny_project.path("data", "fid", "reference", "stats.npz"))
    gt = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))
    val = np.load(tiny_project.path("data", "prepared", "val.npy"))
    assert len(val) > len(gt)  # so the stage must pick len(gt) of them
    x1, x2 = (inception_features(net, images, 12).astype(np.float64) for images in (val[:len(gt)], gt))
    mu1, mu2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - mu1, x2 - mu2
    n = len(gt)
    expected = (np.sum((mu1 - mu2) ** 2) + (np.sum(c1 ** 2) + np.sum(c2 ** 2)) / (n - 1)
                - 2 * np.linalg.norm(c1 @ c2.T, "nuc") / (n - 1))
    assert float(ref["heldout_fid"]) == pytest.approx(expected, rel=1e-4)
    assert expected > 1  # different images: far from zero at this size
    # KID: the cubic kernel's off-diagonal means, written out here
    off = ~np.eye(n, dtype=bool)
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    expected_kid = k(x1, x1)[off].mean() + k(x2, x2)[off].mean() - 2 * k(x1, x2).mean()
    assert float(ref["heldout_kid"]) == pytest.approx(expected_kid, rel=1e-3, abs=1e-6)
    assert float(ref["heldout_kid_se"]) > 0  # as many held-out images as test images: paired
