"""Our VQGAN against the lab: the equivalence fixture and the full-size key layout."""
from pathlib import Path

import pytest
import torch

from conftest import tiny_vqgan_config
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


def test_cosine_codebook_picks_the_code_of_greatest_cosine_and_feeds_its_unit_vector():
    """Against a float64 reference: the index of the greatest cosine between vector and entry, and z_q the
    unit entry; the Euclidean codebook with the same weights picks other codes for many vectors."""
    model = VQGAN(tiny_vqgan_config(codebook_metric="cosine"))
    scattered_codebook(model)
    z = torch.randn(4, 16, 3, 3, generator=torch.Generator().manual_seed(1)) * 3
    z_q, indices, _ = model.codebook(model.codebook.project(z))
    v = z.double().permute(0, 2, 3, 1).reshape(-1, 16)
    w = model.codebook.embedding.weight.detach().double()
    cos = (v / v.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    assert torch.equal(indices, cos.argmax(dim=1))
    unit = (w / w.norm(dim=1, keepdim=True))[indices].float()
    torch.testing.assert_close(z_q.permute(0, 2, 3, 1).reshape(-1, 16), unit, atol=1e-6, rtol=0)
    euclidean = VQGAN(tiny_vqgan_config())
    euclidean.codebook.load_state_dict(model.codebook.state_dict())
    assert (euclidean.codebook.nearest(z) != indices).float().mean() > 0.3


def test_cosine_vqgan_exports_a_codebook_the_lab_lookup_reads_alike():
    """`lab_state_dict` of a cosine model, loaded into the lab's (Euclidean) model of the same widths,
    encodes to the same tokens and decodes them to the same images; its plain state_dict would not."""
    torch.manual_seed(0)
    model = VQGAN(tiny_vqgan_config(codebook_metric="cosine")).eval()
    scattered_codebook(model)
    for block in model.modules():  # off the identity start, so the decoder depends on its input
        if isinstance(block, torch.nn.Conv2d):
            torch.nn.init.normal_(block.weight, std=0.3)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    lab, unbaked = VQGAN(tiny_vqgan_config()).eval(), VQGAN(tiny_vqgan_config()).eval()
    lab.load_state_dict(model.lab_state_dict(), strict=True)
    unbaked.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        z_q, indices, _ = model.encode(x)
        lab_z_q, lab_indices, _ = lab.encode(x)
        assert torch.equal(indices, lab_indices)
        torch.testing.assert_close(lab_z_q, z_q, atol=1e-5, rtol=0)
        torch.testing.assert_close(lab.decode_indices(indices), model.decode_indices(indices), atol=1e-5, rtol=1e-5)
        assert not torch.equal(unbaked.encode(x)[1], indices)
    norms = model.lab_state_dict()["codebook.embedding.weight"].double().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(32, dtype=torch.float64), atol=1e-6, rtol=0)
