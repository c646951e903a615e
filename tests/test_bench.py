"""The benchmarks' helpers: the codebook perplexity against closed forms, the profile's kernel kinds and
times, and the stage-2 FLOP count against its closed form."""
import math

import numpy as np
import torch

from bench.common import gpu_kernel_times, kernel_kind, time_by_kind
from model.vqgan_training import code_entropy, codebook_stats


def test_code_entropy_and_perplexity_closed_forms():
    assert math.isclose(code_entropy(torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]]), 16), math.log(4), rel_tol=1e-12)
    assert code_entropy(torch.zeros(3, 5, dtype=torch.long), 8) == 0.0
    p = np.array([0.5, 0.25, 0.25])
    tokens = torch.tensor([0, 0, 1, 2])
    assert math.isclose(code_entropy(tokens, 3), float(-(p * np.log(p)).sum()), rel_tol=1e-12)
    assert codebook_stats(tokens, 8) == {"codebook_used": 3, "codebook_size": 8, "perplexity": round(2 * 2**0.5, 2)}


def test_kernel_kinds_from_cuda_and_cpu_names():
    names = {"sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1": "matmul",
             "nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT": "matmul",
             "cutlass3x_sm90_tensorop_s64x128x16gemm_bf16_bf16_f32": "matmul",
             "aten::addmm": "matmul",
             "triton_per_fused__softmax_native_dropout_3": "softmax",
             "triton_red_fused__log_softmax_nll_loss_forward_7": "loss",
             "triton_per_fused_native_layer_norm_12": "layer norm",
             "aten::bernoulli_": "dropout",
             "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>": "optimizer",
             "triton_poi_fused_gelu_5": "other"}
    assert {name: kernel_kind(name) for name in names} == names


def test_time_by_kind_attributes_a_call_to_what_it_runs():
    a, b = torch.randn(384, 384), torch.randn(384, 384)
    x = torch.randn(64, 4096)
    matmul = time_by_kind(lambda: a @ b @ b, torch.device("cpu"), steps=2)
    softmax = time_by_kind(lambda: torch.softmax(x, -1), torch.device("cpu"), steps=2)
    assert matmul["by_kind"]["matmul"]["share"] > 0.9 and softmax["by_kind"]["softmax"]["share"] > 0.9
    for result in (matmul, softmax):
        assert math.isclose(sum(k["share"] for k in result["by_kind"].values()), 1.0, abs_tol=0.01)
        assert math.isclose(sum(k["ms_per_call"] for k in result["by_kind"].values()), result["ms_per_call"],
                            rel_tol=0.01, abs_tol=0.005)
        assert result["wall_ms_per_call"] >= result["ms_per_call"]  # the operators ran inside the calls
        shares = [k["share"] for k in result["top"]]
        assert shares == sorted(shares, reverse=True)


def test_gpu_kernel_times_count_each_kernel_once():
    """On a GPU an operator's device time repeats its kernels': only the GPU's own events are summed."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    def event(name, start, end, device_type):
        return FunctionEvent(id=0, name=name, thread=0, start_us=start, end_us=end, device_type=device_type)

    events = [event("aten::mm", 0, 50, DeviceType.CPU), event("sm90_xmma_gemm_bf16", 10, 40, DeviceType.CUDA),
              event("aten::_softmax", 50, 60, DeviceType.CPU), event("triton_per_fused__softmax_0", 52, 57, DeviceType.CUDA),
              event("sm90_xmma_gemm_bf16", 60, 75, DeviceType.CUDA)]
    assert gpu_kernel_times(events) == {"sm90_xmma_gemm_bf16": 45, "triton_per_fused__softmax_0": 5}


def test_stage2_flops_are_the_weights_and_the_attentions_matmuls():
    """bench.stage2's count against the closed form: per token, 2 FLOPs per weight of every matmul
    (the blocks' projections and MLP, the head, the tied logits), and per layer 2 x 256 x width for
    the scores and as many for their weighting of the values; backward twice the forward."""
    from bench.stage2 import flops_per_image
    from model.transformer import TransformerConfig

    cfg = TransformerConfig(num_codebook_vectors=100, dim=32, n_layers=3, hidden_dim=48, n_heads=4)
    n, d, layers = cfg.num_image_tokens, cfg.dim, cfg.n_layers
    weights = layers * (4 * d * d + 2 * d * cfg.hidden_dim) + d * d + d * (cfg.num_codebook_vectors + 1)
    forward = 2 * n * weights + layers * 4 * n * n * d
    assert flops_per_image(cfg) == 3 * forward
