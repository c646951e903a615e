"""Multi-head self-attention, written by hand as the lab requires (no library attention)."""
from __future__ import annotations

import torch
import torch.nn as nn


class MultiHeadAttention(nn.Module):
    """softmax(Q Kᵀ / √d_k) V over all tokens (bidirectional), `n_heads` heads in parallel.

    One fused projection makes Q, K and V; heads are a tensor dimension, never a Python loop.
    """

    def __init__(self, dim: int = 768, n_heads: int = 16, attn_drop: float = 0.1):
        super().__init__()
        assert dim % n_heads == 0, (dim, n_heads)
        self.n_heads, self.d_k = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.d_k).permute(2, 0, 3, 1, 4)
        # Scaled before the product, softmax with a dtype: not a form torch.compile swaps for its fused
        # library kernel (scaling the product would be; tests/test_compiled_attention.py).
        scores = (q * self.d_k**-0.5) @ k.transpose(-2, -1)             # (b, heads, n, n)
        # dtype kept: CUDA autocast would hand back fp32 (B, heads, n, n) weights, twice the memory traffic
        # and the saved activation; the kernel still accumulates in fp32, and the next matmul wants bf16.
        weights = torch.softmax(scores, dim=-1, dtype=scores.dtype)
        out = self.attn_drop(weights) @ v                                 # (b, heads, n, d_k)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))
