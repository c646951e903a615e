"""Hand-written attention and the lab's transformer, against independent references."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.attention import MultiHeadAttention
from model.masking import brush_masks, hole_token_masks, mvtm_mask
from model.mvtm import mvtm_loss
from model.transformer import BidirectionalTransformer, TransformerConfig, codebook_embedding

REPO = Path(__file__).resolve().parents[1]
TSV = REPO.parent / "shared" / "lab5" / "transformer_fixed_state_dict.tsv"


def reference_attention(attn: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """Multi-head attention in float64 with an explicit loop over heads, from the module's weights."""
    x = x.double()
    w, b = attn.qkv.weight.double(), attn.qkv.bias.double()
    dim, h = x.shape[-1], attn.n_heads
    d = dim // h
    q, k, v = (x @ w[i * dim:(i + 1) * dim].t() + b[i * dim:(i + 1) * dim] for i in range(3))
    heads = []
    for j in range(h):
        s = slice(j * d, (j + 1) * d)
        scores = q[..., s] @ k[..., s].transpose(-1, -2) / d**0.5
        heads.append(torch.softmax(scores, -1) @ v[..., s])
    return torch.cat(heads, -1) @ attn.proj.weight.double().t() + attn.proj.bias.double()


def test_attention_matches_float64_reference_and_sdpa_oracle():
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=96, n_heads=16, attn_drop=0.0).eval()
    x = torch.randn(3, 20, 96, requires_grad=True)
    out = attn(x)
    torch.testing.assert_close(out.double(), reference_attention(attn, x), atol=1e-5, rtol=1e-5)
    # Oracle, used only here in the tests: PyTorch's fused kernel on the same projections.
    q, k, v = attn.qkv(x).view(3, 20, 3, 16, 6).permute(2, 0, 3, 1, 4)
    oracle = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 20, 96))
    torch.testing.assert_close(out, oracle, atol=1e-5, rtol=1e-5)
    # Gradients, input and weights, against the float64 reference.
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, attn.qkv.weight], g)
    ref = reference_attention(attn, x)
    ref_grads = torch.autograd.grad(ref, [x, attn.qkv.weight], g.double())
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a.double(), r.double(), atol=1e-5, rtol=1e-4)


def test_no_library_attention_in_model():
    banned = re.compile(r"MultiheadAttention|scaled_dot_product_attention|flash_attn|xformers"
                        r"|nn\.functional\.multi_head")
    offenders = [str(p) for p in (REPO / "model").rglob("*.py") if banned.search(p.read_text())]
    assert offenders == []


def test_fixed_state_dict_matches_lab_and_parameter_count():
    rows = [line.split("\t") for line in TSV.read_text().splitlines() if line.strip()] if TSV.exists() else []
    if not rows:
        pytest.skip("../shared/lab5/transformer_fixed_state_dict.tsv not present")
    with torch.device("meta"):
        model = BidirectionalTransformer(TransformerConfig())
    shapes = {k: "x".join(map(str, v.shape)) for k, v in model.state_dict().items()}
    for key, shape in rows:
        assert shapes.get(key) == shape, key
    free = [k for k in shapes if k not in dict(rows)]
    assert all(".attention." in k for k in free), free
    assert sum(p.numel() for p in model.parameters()) == 72_745_472


def test_lab_initialisation_and_layer_norm_eps():
    torch.manual_seed(0)
    model = BidirectionalTransformer(TransformerConfig(dim=128, n_layers=2, hidden_dim=256, n_heads=4))
    w = model.blocks[0].MLP[0].weight
    # trunc_normal_(std=0.02) as the lab calls it: bounds are ±2 absolute, so in effect N(0, 0.02²).
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert all(m.eps == 1e-12 for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert torch.all(model.bias == 0)


def test_sincos_positions_against_the_closed_form():
    dim, side = 32, 16
    cfg = TransformerConfig(dim=dim, n_layers=1, hidden_dim=64, n_heads=4, pos_init="sincos")
    model = BidirectionalTransformer(cfg)
    pos = model.pos_emb.detach().double()
    amp = 0.02 * 2**0.5
    for index in (0, 17, 100, 255):
        r, c = divmod(index, side)
        for j in range(dim // 4):
            w = 1.0 / 10000 ** (j / (dim // 4))
            expect = [amp * math.sin(r * w), amp * math.cos(r * w), amp * math.sin(c * w), amp * math.cos(c * w)]
            got = [pos[index, j], pos[index, dim // 4 + j], pos[index, dim // 2 + j], pos[index, 3 * dim // 4 + j]]
            assert [round(float(g), 6) for g in got] == [round(e, 6) for e in expect], (index, j)
    assert abs(pos.pow(2).mean().sqrt().item() - 0.02) < 1e-6  # the lab init's scale


def test_post_ln_block_and_tied_output_by_hand():
    torch.manual_seed(1)
    cfg = TransformerConfig(num_codebook_vectors=16, dim=32, n_layers=1, hidden_dim=64, n_heads=4, dropout=0.0)
    model = BidirectionalTransformer(cfg).eval()
    tokens = torch.randint(0, 17, (2, 256))
    x = model.LN(model.tok_emb(tokens) + model.pos_emb)
    blk = model.blocks[0]
    x = blk.LayerNorm1(x + blk.attention(x))
    x = blk.LayerNorm2(x + blk.MLP[2](F.gelu(blk.MLP[0](x))))
    h = model.Token_Prediction(x)
    expected = h @ model.tok_emb.weight.t() + model.bias
    torch.testing.assert_close(model(tokens), expected)


def test_mvtm_mask_counts_exactly():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mask = mvtm_mask(500, 256, "cosine", generator=gen)
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(500, generator=gen)
    expected = torch.ceil(torch.cos(r.double() * torch.pi / 2) * 256).long().clamp(1, 256)
    assert torch.equal(mask.sum(1), expected)


def test_hole_token_masks_are_the_lab_rule_applied_to_brush_masks():
    holes = hole_token_masks(32, seed=5)
    # a token is masked iff its 4x4 patch has a hole pixel
    pixels = brush_masks(32, seed=5) == 0
    assert torch.equal(holes, torch.from_numpy(pixels.reshape(32, 16, 4, 16, 4).any(axis=(2, 4)).reshape(32, 256)))
    assert holes.any(1).all() and not holes.all(1).any()


def test_overfits_one_tiny_batch():
    torch.manual_seed(0)
    cfg = TransformerConfig(num_codebook_vectors=32, dim=64, n_layers=2, hidden_dim=128, n_heads=4, dropout=0.0)
    model = BidirectionalTransformer(cfg)
    tokens = torch.randint(0, 32, (4, 256))
    mask = torch.zeros(4, 256, dtype=torch.bool)
    mask[:, ::3] = True
    inp = torch.where(mask, cfg.mask_token, tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(inp)[mask], tokens[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(inp)[mask].argmax(-1) == tokens[mask]).float().mean()
    assert loss.item() < 0.05 and acc == 1.0


def test_mvtm_loss_is_the_masked_token_cross_entropy():
    """Against a float64 re-computation over the masked positions only, label smoothing written out."""
    torch.manual_seed(0)
    k, eps = 16, 0.1
    logits = torch.randn(3, 256, k + 1, dtype=torch.float64)
    tokens = torch.randint(0, k, (3, 256))
    mask = torch.rand(3, 256) < 0.4
    loss, acc, n = mvtm_loss(lambda inputs: logits, tokens, mask, k, label_smoothing=eps)
    logp = torch.log_softmax(logits[mask], -1)
    target = tokens[mask]
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    expected = ((1 - eps) * nll - eps * logp.mean(-1)).mean()
    assert int(n) == int(mask.sum())
    assert torch.allclose(loss.double(), expected, atol=1e-5)
    assert torch.isclose(acc.double(), (logp.argmax(-1) == target).double().mean(), atol=1e-6)


def test_codebook_embedding_keeps_the_codebooks_geometry():
    torch.manual_seed(0)
    codebook = torch.randn(64, 16) * torch.linspace(3.0, 0.1, 16) + 5.0  # anisotropic, off-centre
    ref = codebook.double() - codebook.double().mean(0)

    wide = codebook_embedding(codebook, 48).double()          # dim > latent: every distance kept, scaled
    assert wide.shape == (64, 48)
    assert abs(wide.pow(2).mean().sqrt().item() - 0.02) < 1e-6 and wide.mean(0).abs().max() < 1e-6  # centred
    ratio = torch.cdist(wide, wide) / torch.cdist(ref, ref).fill_diagonal_(1.0)
    off = ~torch.eye(64, dtype=torch.bool)
    assert (ratio[off] / ratio[off].mean() - 1).abs().max() < 1e-6

    narrow = codebook_embedding(codebook, 4).double()         # dim < latent: the 4 principal directions
    _, evecs = np.linalg.eigh(ref.numpy().T @ ref.numpy())
    scores = torch.from_numpy(ref.numpy() @ evecs[:, -4:])
    ratio = torch.cdist(narrow, narrow) / torch.cdist(scores, scores).fill_diagonal_(1.0)
    assert (ratio[off] / ratio[off].mean() - 1).abs().max() < 1e-6

    assert torch.equal(codebook_embedding(codebook, 48, seed=0), codebook_embedding(codebook, 48, seed=0))
    assert not torch.allclose(codebook_embedding(codebook, 48, seed=1), codebook_embedding(codebook, 48, seed=0))
