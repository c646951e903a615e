"""The train stage: exact resume, DDP on two gloo processes, non-finite loss and bad parameter handling."""
import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tiny import TINY
from conftest import REPO, Project, logged_rows
from model.transformer import BidirectionalTransformer, Block, TransformerConfig
from model.mvtm import new_transformer, validate
from model.lr_schedule import warmup_cosine
from pipeline.config import load
from pipeline.lineage import Lineage
from pipeline.runtime import compile_blocks
from stages.train import stage1_codebook
from test_stage1 import kill_after_checkpoint


def stage2_project(tiny_project, tmp_path) -> Project:
    """A copy of the tiny project's prepared data, stage 1 and tokens, to train in."""
    proj = Project(tmp_path)
    for sub in ("data/prepared", "data/tokens", "models/vqgan"):
        shutil.copytree(tiny_project.path(sub), proj.path(sub))
    return proj


@pytest.mark.slow
def test_train_resumes_after_a_kill_and_matches(tiny_project, tmp_path):
    proj = stage2_project(tiny_project, tmp_path)
    over = [*TINY, "train.epochs=4", "train.checkpoint_every=7"]
    proj.run("train", *over)
    uninterrupted = torch.load(proj.path("models", "transformer", "last.pt"))
    best = json.loads(proj.path("reports", "train", "metrics.json").read_text())
    step = kill_after_checkpoint(proj, "train", *over)
    assert 0 < step < best["steps"]
    out = proj.run("train", *over)
    assert "resuming from" in out.stdout + out.stderr
    resumed = torch.load(proj.path("models", "transformer", "last.pt"))
    for k in uninterrupted:
        assert torch.equal(uninterrupted[k], resumed[k]), k
    resumed_metrics = json.loads(proj.path("reports", "train", "metrics.json").read_text())
    assert resumed_metrics["best_val_loss"] == best["best_val_loss"]


def test_training_learns_and_keeps_the_best_checkpoint(tiny_project):
    metrics = json.loads(tiny_project.path("reports", "train", "metrics.json").read_text())
    val_log = logged_rows(tiny_project.path("reports", "train"), "val")
    assert len(val_log) == 2  # one row per epoch
    assert all(float(row["epoch_seconds"]) > 0 for row in val_log)
    losses = [float(row["val_loss"]) for row in val_log]
    assert metrics["best_val_loss"] == round(min(losses), 5)
    assert losses[-1] < 3.5  # ln(33) ≈ 3.50: better than uniform over the codebook + mask token
    hole_losses = [float(row["val_hole_loss"]) for row in val_log]  # the brush-hole (inpainting) loss
    assert metrics["best_val_hole_loss"] == round(hole_losses[losses.index(min(losses))], 5)
    assert all(0 < h < 3.5 for h in hole_losses)


def test_ddp_on_two_gloo_processes(tiny_project, tmp_path):
    proj = stage2_project(tiny_project, tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    cmd = torchrun + ["-m", "stages.train"] + [a for o in [*TINY, "train.batch_size=8"] for a in ("-S", o)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=proj.root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proj.path("reports", "train", "metrics.json").read_text())
    n_train = len(np.load(proj.path("data", "tokens", "train.npy")))
    assert metrics["processes"] == 2 and metrics["steps"] == 2 * (n_train // 16)  # 2 epochs, 2 x 8 a step


def test_non_finite_loss_stops_with_a_clear_error(tiny_project, tmp_path):
    proj = stage2_project(tiny_project, tmp_path)
    err = proj.fails("train", *TINY, "train.lr=1e30", "train.grad_clip=1e30", "train.warmup_steps=1")
    assert "non-finite loss" in err
    assert not proj.path("models", "transformer").exists()


def test_unknown_position_init_is_named_before_any_work(tiny_project, tmp_path):
    proj = stage2_project(tiny_project, tmp_path)
    err = proj.fails("train", *TINY, "train.pos_init=rope")
    assert "train.pos_init" in err and "sincos" in err
    err = proj.fails("train", *TINY, "train.tok_init=pca")
    assert "train.tok_init is 'pca'; expected one of normal, codebook" in err and "Traceback" not in err
    err = proj.fails("train", *TINY, "train.compile=blocks")
    assert "train.compile is 'blocks'; expected one of false, regional" in err and "Traceback" not in err
    err = proj.fails("train", *TINY, "train.epochs=0")
    assert "train.epochs is 0; expected a positive integer" in err and "Traceback" not in err
    assert not proj.path("models", "transformer").exists()


def test_codebook_token_start_reads_stage_ones_codebook(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project.root)
    codebook = torch.load("models/vqgan/vqgan.pt", weights_only=True)["codebook.embedding.weight"].double()
    lineage = Lineage(load(TINY))
    assert stage1_codebook({"tok_init": "normal"}, lineage) is None
    read = stage1_codebook({"tok_init": "codebook"}, lineage)
    assert torch.equal(read.double(), codebook)
    arch = TransformerConfig(num_codebook_vectors=len(codebook), dim=32, n_layers=1, hidden_dim=64, n_heads=4)
    torch.manual_seed(0)
    normal = new_transformer(arch, None, seed=0).tok_emb.weight.detach().double()
    torch.manual_seed(0)
    started = new_transformer(arch, read, seed=0).tok_emb.weight.detach().double()
    codes = len(codebook)
    assert torch.equal(started[codes], normal[codes])  # the mask token keeps its random start
    ratio = torch.cdist(started[:codes], started[:codes]) / torch.cdist(codebook, codebook).fill_diagonal_(1.0)
    off = ~torch.eye(codes, dtype=torch.bool)
    assert (ratio[off] / ratio[off].mean() - 1).abs().max() < 1e-5  # the codebook's distances, scaled
    assert abs(started[:codes].pow(2).mean().sqrt().item() - 0.02) < 1e-6


def test_warmup_cosine_closed_form():
    f = warmup_cosine(warmup=10, total=110, floor=0.1)
    assert [f(0), f(4), f(9)] == [0.1, 0.5, 1.0]                   # linear warm-up to the peak
    assert f(10) == 1.0 and abs(f(60) - 0.55) < 1e-12               # cosine: halfway is the mean of peak and floor
    assert abs(f(110) - 0.1) < 1e-12 and abs(f(500) - 0.1) < 1e-12  # ends on the floor and stays there
    assert abs(f(35) - (0.1 + 0.9 * (1 + 2**-0.5) / 2)) < 1e-12     # a quarter of the way: cos(π/4)


def test_regional_compile_shares_one_graph_across_the_blocks(graph_recorder):
    """train.compile: regional compiles each Block in place; all layers share one graph (so compilation
    does not grow with depth), gradients match eager, keys are unchanged, and validation stays eager."""
    counting, graphs = graph_recorder
    torch.manual_seed(0)
    cfg = TransformerConfig(num_codebook_vectors=32, dim=32, n_layers=3, hidden_dim=64, n_heads=4, dropout=0.0)
    model = BidirectionalTransformer(cfg)
    reference = copy.deepcopy(model)
    compile_blocks(model, (Block,), backend=counting)
    tokens = torch.randint(0, cfg.num_codebook_vectors + 1, (2, 256))
    got, want = model(tokens), reference(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    got.square().mean().backward()
    want.square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)
    assert len(graphs) == 1
    assert list(model.state_dict()) == list(reference.state_dict())
    validate(model, tokens[:1], cfg.mask_token, "cosine", 1, contextlib.nullcontext)
    assert len(graphs) == 1  # another batch size, eval mode and no_grad: eager, no recompile


def test_importing_the_stages_does_not_import_torch_dynamo():
    """torch._dynamo, a second to import (13 inpaint processes a sweep), loads only where something
    compiles or changes the compile stance, not at import."""
    code = "import sys, stages.train, stages.inpaint; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
