"""Stage 2: the lab's bidirectional transformer for masked visual token modelling (MaskGIT).

Post-LN blocks, learned positions, logits tied to the token embedding plus a per-position bias.
Fixed-part parameter names follow the lab (`tok_emb`, `pos_emb`, `LN`, `blocks.N.LayerNorm1`, …).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from model.attention import MultiHeadAttention
from model.choices import POS_INITS


@dataclass
class TransformerConfig:
    num_image_tokens: int = 256
    num_codebook_vectors: int = 1024   # the mask token is one more: id num_codebook_vectors
    dim: int = 768
    n_layers: int = 15
    hidden_dim: int = 1536
    n_heads: int = 16
    dropout: float = 0.1
    pos_init: str = "normal"           # learned positions start as: normal (the lab) | sincos (a 2-D grid)

    def __post_init__(self):
        assert self.pos_init in POS_INITS and self.dim % self.n_heads == 0, self

    @property
    def mask_token(self) -> int:
        return self.num_codebook_vectors


def sincos_2d(side: int, dim: int, rms: float = 0.02) -> torch.Tensor:
    """A 2-D sine-cosine table for a side x side grid, row-major: (side², dim); a start for `pos_emb`.

    The first half of the channels encodes the row, the second the column, each as sin and cos at
    dim/4 geometric frequencies. Scaled to the RMS of the lab's random init, so tokens and positions
    enter the first LayerNorm at the same scale.
    """
    assert dim % 4 == 0, dim
    omega = 10000.0 ** -(torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                                indexing="ij")

    def encode(coord):
        angles = coord.flatten()[:, None] * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return (torch.cat([encode(rows), encode(cols)], dim=1) * rms * math.sqrt(2)).float()


def codebook_embedding(codebook: torch.Tensor, dim: int, rms: float = 0.02, seed: int = 0) -> torch.Tensor:
    """Token embeddings laid out like stage 1's codebook: (codes, latent) → (codes, dim); a start for
    `tok_emb`.

    Codes the decoder draws alike start close, so what the model learns about one code (as input, and
    through the tied logits as output) carries to its neighbours. The codebook is centred, cut to its
    `dim` principal directions when the latent is wider, turned into `dim` channels by a seeded random
    orthogonal map (distances kept), and scaled to the RMS of the lab's random init.
    """
    c = codebook.double() - codebook.double().mean(0)
    if c.shape[1] > dim:
        c = c @ torch.linalg.svd(c, full_matrices=False).Vh[:dim].T
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, c.shape[1], generator=gen, dtype=torch.float64))  # orthonormal columns
    e = c @ q.T
    return (e * rms / e.pow(2).mean().sqrt().clamp_min(1e-12)).float()


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attention = MultiHeadAttention(cfg.dim, cfg.n_heads, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.LayerNorm1 = nn.LayerNorm(cfg.dim, eps=1e-12)
        self.MLP = nn.Sequential(
            nn.Linear(cfg.dim, cfg.hidden_dim), nn.GELU(), nn.Linear(cfg.hidden_dim, cfg.dim), nn.Dropout(cfg.dropout),
        )
        self.LayerNorm2 = nn.LayerNorm(cfg.dim, eps=1e-12)

    def forward(self, x):
        x = self.LayerNorm1(x + self.dropout(self.attention(x)))
        return self.LayerNorm2(x + self.MLP(x))


class BidirectionalTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        vocab = cfg.num_codebook_vectors + 1
        self.tok_emb = nn.Embedding(vocab, cfg.dim)
        self.pos_emb = nn.Parameter(nn.init.trunc_normal_(torch.zeros(cfg.num_image_tokens, cfg.dim), 0.0, 0.02))
        if cfg.pos_init == "sincos":  # the attention finds neighbours from the start: a shorter loss plateau
            side = math.isqrt(cfg.num_image_tokens)
            with torch.no_grad():
                self.pos_emb.copy_(sincos_2d(side, cfg.dim))
        self.LN = nn.LayerNorm(cfg.dim, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layers)])
        self.Token_Prediction = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.LayerNorm(cfg.dim, eps=1e-12))
        self.bias = nn.Parameter(torch.zeros(cfg.num_image_tokens, vocab))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 256) with masked positions set to the mask token → logits (B, 256, codebook + 1)."""
        x = self.drop(self.LN(self.tok_emb(tokens) + self.pos_emb))
        x = self.blocks(x)
        h = self.Token_Prediction(x)
        return h @ self.tok_emb.weight.t() + self.bias
