"""The benchmarks' helpers: the plateau benchmark's reference line (the code entropy, shared with the
codebook perplexity) against closed forms and a tiny end-to-end run; the profile's kernel kinds; the
stage-1 floor tool's errors against a recomputation from its saved values; the prefill probe's distances
against a brute-force search; the context swap's mixes against evaluate's scores of the runs and the floor."""
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.common import gpu_kernel_times, kernel_kind, time_by_kind
from bench.plateau import escape_step
from bench.prefill import distance_from_mask
from bench.tiny import TINY
from conftest import REPO, Project
from model.vqgan_training import code_entropy, codebook_stats
from stages.evaluate import FLOOR


def test_code_entropy_and_perplexity_closed_forms():
    assert math.isclose(code_entropy(torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]]), 16), math.log(4), rel_tol=1e-12)
    assert code_entropy(torch.zeros(3, 5, dtype=torch.long), 8) == 0.0
    p = np.array([0.5, 0.25, 0.25])
    tokens = torch.tensor([0, 0, 1, 2])
    assert math.isclose(code_entropy(tokens, 3), float(-(p * np.log(p)).sum()), rel_tol=1e-12)
    assert codebook_stats(tokens, 8) == {"codebook_used": 3, "codebook_size": 8, "perplexity": round(2 * 2**0.5, 2)}


def test_escape_step_is_the_first_step_below_the_margin():
    curve = [[50, 5.84], [100, 5.80], [150, 5.77], [200, 5.60]]
    assert escape_step(curve, 5.83) == 150
    assert escape_step(curve[:2], 5.83) is None


def test_plateau_benchmark_runs_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train.npy", 40), ("val.npy", 8)):
        np.save(tmp_path / name, rng.integers(0, 16, (n, 256)).astype(np.int16))
    out = tmp_path / "curves.json"
    torch.save({"codebook.embedding.weight": torch.randn(16, 8)}, tmp_path / "vqgan.pt")
    cmd = [sys.executable, "-m", "bench.plateau", "--tokens", str(tmp_path), "--runs", "normal:1e-3",
           "sincos:1e-3:codebook", "--vqgan", str(tmp_path / "vqgan.pt"), "--dim", "32", "--hidden", "64",
           "--layers", "2", "--batch", "4", "--steps", "4", "--every", "2",
           "--warmup", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(r["pos_init"], r["tok_init"]) for r in result["runs"]] == [("normal", "normal"), ("sincos", "codebook")]
    assert all([s for s, _ in r["curve"]] == [2, 4] for r in result["runs"])
    assert all(math.isfinite(loss) for r in result["runs"] for _, loss in r["curve"])
    bad = subprocess.run([*cmd[:4], str(tmp_path / "missing")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "missing/train.npy not found" in bad.stderr
    bad = subprocess.run([*cmd[:6], "rope:1e-3"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'rope:1e-3'" in bad.stderr
    bad = subprocess.run([*cmd[:6], "sincos:1e-3:pca"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "token start" in bad.stderr


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


def test_distance_from_mask_is_the_chebyshev_distance_to_the_nearest_masked_token():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 256)) < np.array([0.02, 0.05, 0.1, 0.3, 0.0, 1.0])[:, None]
    masks[0] = False
    masks[0, 17] = True  # a single masked token: distances are rings around it
    got = distance_from_mask(masks)
    for i, mask in enumerate(masks):
        ys, xs = np.divmod(np.flatnonzero(mask), 16)
        for t in range(256):
            y, x = divmod(t, 16)
            want = np.maximum(abs(ys - y), abs(xs - x)).min() if len(ys) else 256
            assert got[i, t] == want, (i, t)
    assert got[0].max() == 14 and (got[0] == 1).sum() == 8


def test_prefill_probe_counts_the_known_tokens_each_fill_leaves_the_images_own(tiny_project, tmp_path):
    """bench.prefill's agreement for grey holes is the share of known tokens of the masked images' cache (the
    tokens stage's, default grey) equal to the unmasked images' cache, recounted here; its rings partition
    the known tokens; every fill and the floor are scored raw and composite, paired against grey."""
    shutil.copytree(tiny_project.root, tmp_path / "p")
    project = Project(tmp_path / "p")
    project.run("fid_reference", *TINY)
    cmd = [sys.executable, "-m", "bench.prefill", *[a for o in TINY for a in ("-S", o)]]
    proc = subprocess.run(cmd, cwd=project.root, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)["prefill"]
    assert set(rows) == {"grey", "telea", "ns", "floor"}
    tokens = {name: np.load(project.path("data", "tokens", f"{name}.npy")) for name in ("test_masked", "test_gt")}
    known = ~np.load(project.path("data", "tokens", "test_mask.npy"))
    same = tokens["test_masked"][known] == tokens["test_gt"][known]
    assert rows["grey"]["known_agree"] == pytest.approx(same.mean(), abs=1e-4)
    dist = distance_from_mask(~known)[known]
    shares = [(dist == 1).mean(), (dist == 2).mean(), (dist >= 3).mean()]
    rings = [rows["grey"][k] for k in ("agree_d1", "agree_d2", "agree_d3+")]
    weighted = sum(share * ring for share, ring in zip(shares, rings) if share > 0)
    assert weighted == pytest.approx(same.mean(), abs=1e-3)
    for row in rows.values():
        assert {"fid", "kid", "kid_se", "kid_minus_grey"} <= set(row["raw"])
        assert set(row["raw"]) == set(row["composite"])
    assert rows["grey"]["raw"]["kid_minus_grey"] == [0.0, 0.0]


def floor_tool(root, *args):
    cmd = [sys.executable, "-m", "bench.floor", *[a for o in TINY for a in ("-S", o)], *args]
    return subprocess.run(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)


def jackknife(loo) -> float:
    loo = np.asarray(loo, dtype=np.float64)
    return math.sqrt((len(loo) - 1) / len(loo) * ((loo - loo.mean()) ** 2).sum())


def test_floor_tool_scores_stage_one_alone_and_pairs_two_recipes_by_test_image(tiny_project, tmp_path):
    """bench.floor prints the floor's KID errors as the jackknife of the values it saves (recomputed here);
    a second stage 1 (another seed) prints its KID minus the saved one with the error of the paired
    per-image differences, recomputed here from both files; a file of other test images, or none, is
    refused by name before any decode, leaving no --save file behind."""
    shutil.copytree(tiny_project.root, tmp_path / "a")
    first = Project(tmp_path / "a")
    first.run("fid_reference", *TINY)
    proc = floor_tool(first.root, "--save", "a.npz")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out_a, saved_a = json.loads(proc.stdout), np.load(first.path("a.npz"))
    labels = list(saved_a["labels"])
    assert labels == ["floor", "floor composite"] and saved_a["loo"].shape == (2, out_a["test_images"]) == (2, 12)
    for output, label in (("raw", "floor"), ("composite", "floor composite")):
        loo = saved_a["loo"][labels.index(label)]
        assert out_a["floor"][f"kid_{output}_se"] == pytest.approx(jackknife(loo) * 1e3, abs=1e-3)

    shutil.copytree(first.root, tmp_path / "b")
    second = Project(tmp_path / "b")
    second.run("vqgan", *TINY, "vqgan.seed=1")
    second.run("tokens", *TINY)
    proc = floor_tool(second.root, "--against", str(first.path("a.npz")), "--save", "b.npz")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out_b, saved_b = json.loads(proc.stdout), np.load(second.path("b.npz"))
    (versus,) = out_b["against"]
    for i, label in enumerate(labels):
        diff, se = versus["kid_minus_theirs"][label]
        assert diff == pytest.approx((saved_b["kid"][i] - saved_a["kid"][i]) * 1e3, abs=1e-3) and diff != 0
        assert se == pytest.approx(jackknife(saved_b["loo"][i] - saved_a["loo"][i]) * 1e3, abs=1e-3)

    np.savez(second.path("other.npz"), **{**dict(saved_a), "test_key": "0" * 40})
    for name, message in (("other.npz", "scored other test images"), ("missing.npz", "not found")):
        proc = floor_tool(second.root, "--against", name, "--save", "c.npz")
        assert proc.returncode == 2 and name in proc.stderr and message in proc.stderr, proc.stderr[-2000:]
        assert not second.path("c.npz").exists()


def test_fid_benchmark_times_two_forms_of_one_distance():
    from bench.fid import run

    result = run(images=40, features=64)  # fewer images than features: the n x n form against the d x d
    assert result["fid_n_by_n"] == pytest.approx(result["fid_d_by_d"], rel=1e-7) and result["fid_n_by_n"] > 0
    assert result["n_by_n_seconds"] > 0 and result["d_by_d_seconds"] > 0


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


def test_run_all_benchmark_hands_the_stages_an_absolute_inception_path(tmp_path, monkeypatch):
    """Its stages run in a scratch folder: a relative MASKGIT_FID_WEIGHTS (as gpu_session.sh once set)
    would point nowhere there."""
    from bench.run_all import fid_weights

    (tmp_path / "weights.pt").write_bytes(b"0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MASKGIT_FID_WEIGHTS", "weights.pt")
    assert fid_weights() == {"MASKGIT_FID_WEIGHTS": str(tmp_path / "weights.pt")}
    monkeypatch.setenv("MASKGIT_FID_WEIGHTS", "missing.pt")
    assert fid_weights() == {}


def swap(root, *runs):
    cmd = [sys.executable, "-m", "bench.context_swap", *[a for o in TINY for a in ("-S", o)], *map(str, runs)]
    return subprocess.run(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)


def test_context_swap_mixes_two_runs_tokens_and_scores_them_as_evaluate_does(tiny_project, tmp_path):
    """bench.context_swap on a grey and an ns run of one configuration: each run's own tokens score what
    evaluate scores for that run; a run of the true tokens scores evaluate's floor; a mix scores what a run
    holding exactly those tokens does (so the mask takes the holes from the run it names). Runs of two
    configurations, or a folder that is no run, are refused by name."""
    shutil.copytree(tiny_project.root, tmp_path / "p")
    project = Project(tmp_path / "p")
    project.run("fid_reference", *TINY)
    point, name = ["--schedule", "cosine", "--T", "2", "--sweet-spot", "0"], "cosine-T2-s0"
    runs, evaluated = project.path("runs"), {}
    for prefill in ("grey", "ns"):
        project.run("tokens", *TINY, f"tokens.prefill={prefill}")
        project.run("inpaint", *TINY, f"tokens.prefill={prefill}", args=point)
        project.run("evaluate", *TINY)
        shutil.copytree(project.path("results", "inpaint", name), runs / prefill)
        rows = list(csv.DictReader(project.path("reports", "comparison.csv").open()))
        evaluated[prefill] = next(r for r in rows if r["name"] == name)
    floor = next(r for r in rows if r["name"] == FLOOR)

    proc = swap(project.root, runs / "grey", runs / "ns")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["prefill"] == {"A": "grey", "B": "ns"} and result["same_known_tokens"] < 1
    mixes = result["swap"]
    for label, prefill in (("holes A, known A", "grey"), ("holes B, known B", "ns")):
        for output in ("raw", "composite"):
            assert mixes[label][output]["fid"] == pytest.approx(float(evaluated[prefill][f"fid_{output}"]), abs=2e-3)
    assert mixes["holes A, known A"]["raw"]["kid_minus_a"] == [0.0, 0.0]

    mask = np.load(project.path("data", "tokens", "test_mask.npy"))
    grey, truth = np.load(runs / "grey" / "tokens.npy"), np.load(project.path("data", "tokens", "test_gt.npy"))
    for folder, held in (("truth", truth), ("mix", np.where(mask, truth, grey))):
        shutil.copytree(runs / "grey", runs / folder)
        np.save(runs / folder / "tokens.npy", held.astype(np.int16))
    oracle = json.loads(swap(project.root, runs / "grey", runs / "truth").stdout)["swap"]
    mix = json.loads(swap(project.root, runs / "mix", runs / "truth").stdout)["swap"]
    for output in ("raw", "composite"):
        assert oracle["holes B, known B"][output]["fid"] == pytest.approx(float(floor[f"fid_{output}"]), abs=2e-3)
        assert mix["holes A, known A"][output]["fid"] == oracle["holes B, known A"][output]["fid"]
        assert mix["holes A, known A"][output]["fid"] != oracle["holes A, known B"][output]["fid"]

    shutil.copytree(runs / "grey", runs / "other")
    config = project.path("runs", "other", "config.yaml")
    config.write_text(config.read_text().replace("schedule: cosine", "schedule: linear", 1))
    for pair, message in (((runs / "grey", runs / "other"), "schedule settings differ"),
                          ((runs / "grey", project.path("data")), "tokens.npy: not found")):
        proc = swap(project.root, *pair)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
