"""Our VQGAN against the lab: the equivalence fixture and the full-size key layout."""
from pathlib import Path

import pytest
import torch

from model.vqgan import VQGAN, VQGANConfig

LAB = Path(__file__).resolve().parents[2] / "shared" / "lab5"
FIXTURE = LAB / "vqgan_small_fixture.pt"


def lab_shapes():
    rows = [line.split("\t") for line in (LAB / "vqgan_state_dict.tsv").read_text().splitlines() if line.strip()]
    return {k: tuple(int(s) for s in shape.split("x")) for k, shape in rows}


@pytest.mark.skipif(not FIXTURE.exists(), reason="../shared/lab5/vqgan_small_fixture.pt not present")
def test_reproduces_lab_fixture():
    fx = torch.load(FIXTURE, weights_only=True)
    model = VQGAN(VQGANConfig(**fx["config"])).eval()
    model.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        z_e = model.quant_conv(model.encoder(fx["x"]))
        z_q, indices, q_loss = model.codebook(z_e)
        decoded = model.decode(z_q)
    torch.testing.assert_close(z_e, fx["z_e"], atol=1e-4, rtol=0)
    sure = fx["margin"] > 1e-3
    assert sure.sum() > 0.9 * len(sure)
    assert torch.equal(indices[sure], fx["indices"][sure])
    torch.testing.assert_close(z_q, fx["z_q"], atol=1e-4, rtol=0)
    torch.testing.assert_close(q_loss, fx["q_loss"], atol=1e-4, rtol=0)
    torch.testing.assert_close(decoded, fx["decoded"], atol=1e-4, rtol=0)


@pytest.mark.skipif(not LAB.exists(), reason="../shared/lab5 not present")
def test_lab_configuration_has_lab_keys_and_shapes():
    expected = lab_shapes()
    with torch.device("meta"):
        model = VQGAN(VQGANConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert sum(v.numel() for v in model.parameters()) == 70_775_299


def scattered_codebook(model: VQGAN, seed: int = 0) -> None:
    """Entries of very different lengths, so lookups by distance and by direction disagree."""
    k, d = model.codebook.embedding.weight.shape
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=gen) * torch.logspace(-1, 1, k)[torch.randperm(k, generator=gen), None]
    model.codebook.embedding.weight.data.copy_(w)


def test_the_codebook_picks_each_vectors_nearest_entry_by_euclidean_distance():
    cfg = VQGANConfig(enc_channels=[16], dec_channels=[16], latent_dim=8, num_codebook_vectors=512, norm_groups=4,
                      enc_blocks=1, dec_blocks=1, latent_attention=False, resample="patch")
    model = VQGAN(cfg)
    scattered_codebook(model)
    z = torch.randn(4, 8, 16, 16, generator=torch.Generator().manual_seed(1)) * 3
    got = model.codebook.nearest(z)
    # float64 brute force: every distance, then the smallest; near-ties (float32 rounding) left out
    d = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 8).double(), model.codebook.embedding.weight.double())
    two = d.topk(2, dim=1, largest=False).values
    sure = two[:, 1] - two[:, 0] > 1e-4
    assert sure.float().mean() > 0.99
    assert torch.equal(got[sure], d.argmin(dim=1)[sure])
