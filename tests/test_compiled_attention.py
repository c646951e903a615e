"""The compiled stages keep our hand-written attention.

torch.compile's Inductor rewrites some hand-written attention forms into PyTorch's fused library kernel
(its `fuse_attention` patterns), silently: the lab's requirement would then hold in the source and not in
what runs, and the GPU's throughput figures would be of flash attention. These compile each attention the
way the stages do (block by block, training with dropout; in fp32, and in bf16 autocast, the stages'
precision on CUDA, here on the CPU) with Inductor's caches off, so that its pattern passes really run,
and count the rewrites. A GPU run's own count is in bench.stage1/stage2's `attention_rewrites`.
"""
import pytest
import torch

from bench.common import attention_rewrites, clear_compile_counters, cold_compile
from model.attention import MultiHeadAttention
from model.transformer import Block, TransformerConfig
from model.vqgan import NonLocalBlock
from pipeline.runtime import compile_blocks


class RewritableAttention(MultiHeadAttention):
    """The same maths in a form Inductor does rewrite (scale after the score matmul, F.dropout): the
    control that shows the count below can see a rewrite at all."""

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.d_k).permute(2, 0, 3, 1, 4)
        weights = torch.matmul(q, k.transpose(-2, -1)).mul(self.d_k**-0.5).softmax(dim=-1)
        out = torch.nn.functional.dropout(weights, p=0.1, training=self.training) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def rewrites(module: torch.nn.Module, x: torch.Tensor, block_type: type, autocast: bool) -> int | None:
    """`bench.common.attention_rewrites` while `module`'s blocks of `block_type` compile and run one
    training step."""
    torch._dynamo.reset()
    clear_compile_counters()
    compile_blocks(module, (block_type,))
    with cold_compile(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        module(x).float().square().mean().backward()
    torch._dynamo.reset()
    return attention_rewrites()


def transformer_block(attention: type) -> Block:
    block = Block(TransformerConfig(dim=64, n_layers=1, hidden_dim=128, n_heads=4, dropout=0.1))
    block.attention = attention(64, 4, 0.1)
    return block.train()


@pytest.mark.slow
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_compiled_transformer_block_keeps_our_attention(autocast):
    torch.manual_seed(0)
    assert rewrites(transformer_block(MultiHeadAttention), torch.randn(2, 16, 64), Block, autocast) == 0


def test_compiled_vqgan_attention_keeps_ours():
    torch.manual_seed(0)
    block = NonLocalBlock(32, groups=4).train()
    assert rewrites(block, torch.randn(2, 32, 8, 8, requires_grad=True), NonLocalBlock, autocast=True) == 0


def test_the_count_sees_a_rewrite():
    torch.manual_seed(0)
    assert rewrites(transformer_block(RewritableAttention), torch.randn(2, 16, 64), Block, autocast=False) > 0
