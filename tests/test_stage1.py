"""The vqgan stage: adopting a user's checkpoint safely, training, resuming; the token cache."""
import copy
import functools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import TINY
from conftest import REPO, Project, logged_rows, tiny_vqgan_config
from model.masking import token_mask_from_pixels
from model.vqgan import VQGAN, NonLocalBlock, ResidualBlock, VQGANConfig, normalize
from model.vqgan_training import freeze_tokenizer, generator_forward
from pipeline import config
from pipeline.lineage import Lineage
from pipeline.runtime import compile_blocks
from pipeline.vqgan_loader import load_vqgan
from stages import vqgan as vqgan_stage
from stages.vqgan import adopt, reconstruction_metrics

TSV = REPO.parent / "shared" / "lab5" / "vqgan_state_dict.tsv"


@pytest.fixture(scope="module")
def lab_state_dict():
    if not TSV.exists():
        pytest.skip("../shared/lab5/vqgan_state_dict.tsv not present")
    gen = torch.Generator().manual_seed(0)
    rows = [line.split("\t") for line in TSV.read_text().splitlines() if line.strip()]
    return {k: torch.randn(*[int(s) for s in shape.split("x")], generator=gen) * 0.02 for k, shape in rows}


def test_lab_sized_checkpoint_is_adopted_strictly(lab_state_dict, tmp_path):
    torch.save(lab_state_dict, tmp_path / "VQGAN.pt")
    model = adopt(tmp_path / "VQGAN.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, lab_state_dict[k]), k


def test_bad_checkpoints_are_rejected_naming_the_problem(lab_state_dict, project, tmp_path):
    key = "decoder.model.5.q.weight"
    bad = {
        "missing": ({k: v for k, v in lab_state_dict.items() if k != key}, ["missing keys", key]),
        "extra": ({**lab_state_dict, "encoder.extra.weight": torch.zeros(1)},
                  ["unexpected keys", "encoder.extra.weight"]),
        "shape": ({**lab_state_dict, key: torch.zeros(3, 3)}, ["wrong shapes", key, "(512, 512, 1, 1)"]),
        "wrapped": ({"state_dict": lab_state_dict}, ["not a raw state_dict"]),
    }
    for name, (sd, words) in bad.items():
        path = tmp_path / f"{name}.pt"
        torch.save(sd, path)
        err = project.fails("vqgan", f"vqgan.checkpoint={path}")
        assert all(w in err for w in words), (name, err)
    full = tmp_path / "full.pt"
    torch.save({"a": torch.zeros(1000)}, full)
    (tmp_path / "truncated.pt").write_bytes(full.read_bytes()[:500])
    err = project.fails("vqgan", f"vqgan.checkpoint={tmp_path / 'truncated.pt'}")
    assert "could not be read" in err and "truncated.pt" in err
    (tmp_path / "code.pt").write_bytes(pickle.dumps(Evil()))
    err = project.fails("vqgan", f"vqgan.checkpoint={tmp_path / 'code.pt'}")
    assert "could not be read" in err and not Path("/tmp/pwned-by-checkpoint").exists()
    (tmp_path / "empty.pt").write_bytes(b"")
    err = project.fails("vqgan", f"vqgan.checkpoint={tmp_path / 'empty.pt'}")
    assert "empty.pt is empty (0 bytes)" in err and "Traceback" not in err
    err = project.fails("vqgan", f"vqgan.checkpoint={tmp_path / 'absent.pt'}")
    assert "vqgan.checkpoint is" in err and "expected null or the path of an existing file" in err
    assert not project.path("models", "vqgan").exists()


def test_bad_training_knobs_are_rejected_before_work(project):
    for override, expected in (("vqgan.eval_every=0", "vqgan.eval_every is 0; expected a positive integer"),
                               ("vqgan.steps=2.5", "vqgan.steps is 2.5; expected a positive integer"),
                               ("vqgan.compile=maybe",
                                "vqgan.compile is 'maybe'; expected one of false, regional"),
                               ("vqgan.compile=true", "vqgan.compile is True; expected one of false, regional"),
                               ("vqgan.quantize_start=12",
                                "vqgan.quantize_start is 12; expected an integer from 0 to 11"),
                               ("vqgan.decoder_only_from=3",
                                "vqgan.decoder_only_from is 3; expected an integer from 4 to 11"),
                               ("vqgan.resample=pixel", "vqgan.resample is 'pixel'; expected one of conv, patch"),
                               (("vqgan.resample=conv", "vqgan.enc_channels=[8, 8]"),
                                "vqgan.enc_channels: [8, 8] gives 1 channel groups; 2 resolution changes (one "
                                "every other group) need at least 3")):
        err = project.fails("vqgan", *TINY, *([override] if isinstance(override, str) else override))
        assert expected in err and "Traceback" not in err
    assert not project.path("models", "vqgan").exists()


class Evil:
    def __reduce__(self):
        return (open, ("/tmp/pwned-by-checkpoint", "w"))


def log_rows(project, prefix="train"):
    return logged_rows(project.path("reports", "vqgan"), prefix)


@pytest.mark.slow
def test_training_lowers_reconstruction_error(project):
    over = [o for o in TINY if not o.startswith(("vqgan.steps", "vqgan.disc_start", "vqgan.quantize_start"))]
    project.run("prepare", *over)
    project.run("vqgan", *over, "vqgan.steps=1", "vqgan.disc_start=1000", "vqgan.quantize_start=0")
    psnr_before = json.loads(project.path("reports", "vqgan", "metrics.json").read_text())["val_psnr"]
    project.run("vqgan", *over, "vqgan.steps=60", "vqgan.disc_start=1000", "vqgan.lr=0.002", "vqgan.eval_every=15",
                "vqgan.quantize_start=12")
    rows = log_rows(project)
    first = np.mean([float(r["rec_loss"]) for r in rows[:3]])
    last = np.mean([float(r["rec_loss"]) for r in rows[-3:]])
    metrics = json.loads(project.path("reports", "vqgan", "metrics.json").read_text())
    assert last < 0.8 * first
    assert metrics["val_psnr"] > psnr_before + 2
    assert metrics["codebook_used"] > 8
    val_rows = log_rows(project, "val")  # the PSNR curve: every eval_every steps, then the last
    assert [int(r["step"]) for r in val_rows] == [15, 30, 45, 60]
    assert float(val_rows[-1]["val_psnr"]) == metrics["val_psnr"]
    assert float(val_rows[-1]["val_psnr"]) > float(val_rows[0]["val_psnr"]) > psnr_before


@pytest.mark.slow
def test_the_quick_stage_1_reconstructs_the_synthetic_faces_past_20_db_in_300_steps(project):
    """The quick profile's layout and recipe on the default data, its run cut to 300 steps. The lab-layout
    recipe it replaced ended at 18.9 dB after its 240 steps, and no setting tried lifted that past 19.0 dB
    (docs/studies.md); this one reaches about 20.9 dB."""
    project.run("prepare")
    project.run("vqgan", "vqgan.steps=300", "vqgan.eval_every=300")
    metrics = json.loads(project.path("reports", "vqgan", "metrics.json").read_text())
    assert metrics["val_psnr"] > 20.0, metrics["val_psnr"]
    assert metrics["codebook_used"] > 256  # more codes than the old recipe's whole codebook


def kill_after_checkpoint(project, stage, *overrides):
    """Start a stage, SIGKILL it once it has written a checkpoint, and return that checkpoint's step."""
    cmd = [sys.executable, "-m", f"stages.{stage}"] + [a for o in overrides for a in ("-S", o)]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if "OMP_NUM_THREADS" in os.environ:  # the thread count of the runs it is compared with (tests/conftest.py)
        env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    proc = subprocess.Popen(cmd, cwd=project.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(project.path("checkpoints").glob(f"{stage}-*.pt")) if project.path("checkpoints").exists() else []
        if ckpts:
            time.sleep(0.3)  # let the atomic rename finish
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return torch.load(ckpts[0], weights_only=False)["step"]
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"{stage} finished or hung before writing a checkpoint")


@pytest.mark.slow
def test_vqgan_resumes_after_a_kill_and_matches(project):
    """A run killed after a checkpoint and run again ends with the uninterrupted run's weights and curve. The
    checkpoints: every `checkpoint_every` steps (5: the kill comes after step 5, 10 or 15, so the resumed run
    crosses the discriminator's start, 12, and from 5 the codebook's, 8, too), and the clock's
    (checkpoint_minutes); when each is due, half-way included, is test_the_checkpoint_clock's."""
    over = [*TINY, "vqgan.steps=20", "vqgan.disc_start=12", "vqgan.eval_every=5", "vqgan.quantize_start=8"]
    project.run("prepare", *over)
    project.run("vqgan", *over)
    uninterrupted = torch.load(project.path("models", "vqgan", "vqgan.pt"))
    psnr_curve = [(r["step"], r["val_psnr"]) for r in log_rows(project, "val")]
    assert [step for step, _ in psnr_curve] == ["5", "10", "15", "20"]
    assert [r["quantized"] for r in log_rows(project, "val")] == ["0", "1", "1", "1"]  # warm-up: no codebook
    for extra, steps in ((["vqgan.checkpoint_every=5"], {5, 10, 15}),
                         (["vqgan.checkpoint_minutes=0.0002"], set(range(1, 20)))):
        step = kill_after_checkpoint(project, "vqgan", *over, *extra)
        assert step in steps, (extra, step)
        out = project.run("vqgan", *over, *extra)
        assert "resuming from" in out.stdout + out.stderr and f"at step {step}" in out.stdout + out.stderr
        resumed = torch.load(project.path("models", "vqgan", "vqgan.pt"))
        assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted), extra
        assert [(r["step"], r["val_psnr"]) for r in log_rows(project, "val")] == psnr_curve
        assert not list(project.path("checkpoints").glob("vqgan-*.pt"))


def test_the_checkpoint_clock(monkeypatch):
    """Due every `every` steps, at half-way, and once `minutes` have passed since the last save; never after the
    last step (the outputs follow it)."""
    from pipeline import checkpoints

    now = [0.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: now[0])
    clock = checkpoints.CheckpointClock(every=4, minutes=1, total=14)
    assert [step for step in range(1, 15) if clock.due(step)] == [4, 7, 8, 12]
    clock = checkpoints.CheckpointClock(every=500, minutes=1, total=30)
    due = []
    for step in range(1, 31):
        now[0] += 25.0  # 25 s a step: a minute has passed every third step since the last save
        due += [step] if clock.due(step) else []
    assert due == [3, 6, 9, 12, 15, 18, 21, 24, 27]


TOKENIZER = ("encoder.", "quant_conv.", "codebook.")


@pytest.mark.slow
def test_decoder_only_phase_freezes_the_tokens_and_resumes(project):
    # Frozen from step 6; the kill comes after the checkpoint at step 10, so the encoder side of that
    # checkpoint must already be the final one while the decoder goes on learning, and the run resumed
    # there (past the freeze's step) must freeze again and match. Restarts every 2 steps would move the
    # codebook if they went on.
    over = [*TINY, "vqgan.steps=20", "vqgan.checkpoint_every=10", "vqgan.disc_start=12", "vqgan.eval_every=10",
            "vqgan.decoder_only_from=6", "vqgan.codebook_restart_every=2"]
    project.run("prepare", *over)
    project.run("vqgan", *over)
    final = torch.load(project.path("models", "vqgan", "vqgan.pt"))
    step = kill_after_checkpoint(project, "vqgan", *over)
    ckpt = torch.load(next(project.path("checkpoints").glob("vqgan-*.pt")), weights_only=False)["model"]
    assert step == 10
    tokenizer = [k for k in final if k.startswith(TOKENIZER)]
    decoder = [k for k in final if not k.startswith(TOKENIZER)]
    assert "codebook.embedding.weight" in tokenizer and len(decoder) > len(tokenizer)
    for k in tokenizer:
        assert torch.equal(ckpt[k], final[k]), k
    assert not all(torch.equal(ckpt[k], final[k]) for k in decoder)
    project.run("vqgan", *over)
    resumed = torch.load(project.path("models", "vqgan", "vqgan.pt"))
    for k in final:
        assert torch.equal(final[k], resumed[k]), k


def test_token_cache_is_deterministic_and_typed(tiny_project):
    first = {p.name: p.read_bytes() for p in tiny_project.path("data", "tokens").glob("*.npy")}
    tiny_project.run("tokens", *TINY)
    second = {p.name: p.read_bytes() for p in tiny_project.path("data", "tokens").glob("*.npy")}
    assert first == second and set(first) == {"train.npy", "val.npy", "test_masked.npy", "test_known.npy", "test_mask.npy",
                                              "test_gt.npy"}
    for name in ("train", "test_known"):
        cache = np.load(tiny_project.path("data", "tokens", f"{name}.npy"))
        assert cache.dtype == np.int16 and cache.shape[1] == 256 and 0 <= cache.min() and cache.max() < 32
    mask = np.load(tiny_project.path("data", "tokens", "test_mask.npy"))
    mask64 = np.load(tiny_project.path("data", "prepared", "test", "mask64.npy"))
    assert mask.dtype == bool and np.array_equal(mask, token_mask_from_pixels(torch.from_numpy(mask64)).numpy())


def test_tokens_prefill_encodes_the_test_images_with_their_holes_filled(tiny_project, tmp_path, monkeypatch):
    """`tokens.prefill`: the masked test images are encoded as given (grey) or with OpenCV's inpainting of the
    holes first (telea, ns: cv2 called here directly), every other cache unchanged; the default is grey.
    `tokens.decode_prefill` encodes the decode's known tokens with its own fill (null: the same cache). A bad
    value of either is refused by name before any encoding."""
    import cv2

    shutil.copytree(tiny_project.root, tmp_path / "p")
    project = Project(tmp_path / "p")
    masked = np.load(project.path("data", "prepared", "test", "masked.npy"))
    holes = (np.load(project.path("data", "prepared", "test", "mask64.npy")) == 0).astype(np.uint8) * 255
    monkeypatch.chdir(project.root)
    model = load_vqgan("cpu", Lineage(config.load(TINY)))

    def encoded(images):
        with torch.no_grad():
            return model.encode(normalize(torch.from_numpy(images)))[1].numpy()

    def caches():
        return {p.name: np.load(p) for p in project.path("data", "tokens").glob("*.npy")}

    default = caches()
    expected = {"grey": encoded(masked)}
    for name, flag in (("telea", cv2.INPAINT_TELEA), ("ns", cv2.INPAINT_NS)):
        expected[name] = encoded(np.stack([cv2.inpaint(m, h, 3, flag) for m, h in zip(masked, holes)]))
    assert not np.array_equal(expected["grey"], expected["ns"])  # the fill reaches the tokens at these sizes
    assert np.array_equal(default["test_masked.npy"], expected["grey"])
    assert np.array_equal(default["test_known.npy"], expected["grey"])  # decode_prefill null: the same cache
    for prefill, decode_prefill in (("ns", "null"), ("telea", "null"), ("grey", "ns")):
        project.run("tokens", *TINY, f"tokens.prefill={prefill}", f"tokens.decode_prefill={decode_prefill}")
        got = caches()
        assert np.array_equal(got.pop("test_masked.npy"), expected[prefill]), prefill
        known = expected[prefill if decode_prefill == "null" else decode_prefill]
        assert np.array_equal(got.pop("test_known.npy"), known), decode_prefill
        assert set(got) | {"test_masked.npy", "test_known.npy"} == set(default)
        assert all(np.array_equal(v, default[k]) for k, v in got.items())
    before = project.path("data", "tokens", "test_masked.npy").stat().st_mtime_ns
    for key in ("prefill", "decode_prefill"):
        err = project.fails("tokens", *TINY, f"tokens.{key}=white")
        assert f"tokens.{key} is 'white'; expected one of " in err and "Traceback" not in err
    assert "expected one of null, grey, telea, ns" in err
    assert project.path("data", "tokens", "test_masked.npy").stat().st_mtime_ns == before


def test_vqgan_stage_starts_the_codebook_on_encoder_outputs_when_it_comes_on(monkeypatch, tmp_path):
    """The codebook starts once, where the autoencoder warm-up ends (quantize_start), on the encoder's
    outputs of four batches: batch_size x 256 vectors each, of latent_dim."""
    seen = []
    monkeypatch.setattr(vqgan_stage, "init_codebook", lambda model, vectors: seen.append(tuple(vectors.shape)))
    monkeypatch.chdir(tmp_path)
    cfg = config.load([*TINY, "vqgan.steps=3", "vqgan.quantize_start=1"], path=REPO / "params.yaml")
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    vqgan_stage.train(cfg["vqgan"], vqgan_stage.architecture(cfg["vqgan"]), images, torch.from_numpy(images[:4]),
                      torch.device("cpu"), cfg["data"], cfg["precision"])
    assert seen == [(4 * cfg["vqgan"]["batch_size"] * 256, cfg["vqgan"]["latent_dim"])]


def test_generator_forward_bypasses_the_codebook_only_in_the_warm_up():
    """quantize=1 is the model's own forward; quantize=0 is encoder → decoder with no codebook in between
    (a reference built from the modules themselves), no codebook loss, and no gradient to the codebook."""
    torch.manual_seed(0)
    cfg = tiny_vqgan_config()
    model, x = VQGAN(cfg), torch.randn(2, 3, 64, 64)
    for got, want in zip(generator_forward(model, x, torch.tensor(1.0)), model(x)):
        assert torch.equal(got, want)
    decoded, _, q_loss = generator_forward(model, x, torch.tensor(0.0))
    plain = model.decoder(model.post_quant_conv(model.quant_conv(model.encoder(x))))
    torch.testing.assert_close(decoded, plain, atol=1e-6, rtol=1e-6)
    assert float(q_loss.detach()) == 0.0 and not torch.allclose(decoded, model(x)[0], atol=1e-3)
    (decoded.square().mean() + q_loss).backward()
    grad = model.codebook.embedding.weight.grad
    assert (grad is None or not grad.any()) and model.encoder.model[0].weight.grad.abs().sum() > 0


def test_regional_compile_matches_eager_with_one_graph_per_block_shape(graph_recorder):
    """compile: regional compiles each residual and attention block in place; blocks of one shape share
    a graph (so compilation is short), every block runs compiled, and evaluation stays eager."""
    counting, graphs = graph_recorder
    torch.manual_seed(0)
    cfg = VQGANConfig(enc_channels=[8, 8, 8, 16, 16, 32], dec_channels=[8, 8, 16, 16, 32], latent_dim=16,
                      num_codebook_vectors=32, norm_groups=4)
    model = VQGAN(cfg)
    reference = copy.deepcopy(model)
    shapes = set()
    for block in reference.modules():
        if isinstance(block, (ResidualBlock, NonLocalBlock)):
            block.register_forward_hook(lambda m, i, o: shapes.add((type(m), i[0].shape, o.shape)))
    x = torch.randn(2, 3, 64, 64)
    compile_blocks(model, (ResidualBlock, NonLocalBlock), backend=counting)
    forward = functools.partial(generator_forward, model)
    got, want = forward(x, torch.tensor(1.0)), reference(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    (got[0].square().mean() + got[2]).backward()
    (want[0].square().mean() + want[2]).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert len(graphs) == len(shapes) and len(shapes) < sum(1 for _ in reference.modules()
                                                            if isinstance(_, (ResidualBlock, NonLocalBlock)))
    assert list(model.state_dict()) == list(reference.state_dict())
    reconstruction_metrics(model, torch.zeros(3, 64, 64, 3, dtype=torch.uint8))  # another batch size
    assert len(graphs) == len(shapes)


def test_regional_compile_keeps_every_block_compiled_through_the_decoder_only_phase(graph_recorder, monkeypatch):
    """At the lab's architecture: freezing the encoder side gives each of its block shapes one gradient-free
    graph, and no block falls back to eager at dynamo's recompile limit (which would raise here)."""
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    counting, graphs = graph_recorder
    model = VQGAN(VQGANConfig())
    encoder_shapes = set()
    for block in model.encoder.modules():
        if isinstance(block, (ResidualBlock, NonLocalBlock)):
            block.register_forward_hook(lambda m, i, o: encoder_shapes.add((type(m), i[0].shape, o.shape)))
    compile_blocks(model, (ResidualBlock, NonLocalBlock), backend=counting)
    forward = functools.partial(generator_forward, model)
    x = torch.randn(1, 3, 64, 64)
    forward(x, torch.tensor(1.0))[0].mean().backward()
    before = len(graphs)
    freeze_tokenizer(model)
    model.zero_grad(set_to_none=True)
    forward(x, torch.tensor(1.0))[0].mean().backward()
    assert len(graphs) - before == len(encoder_shapes) > 0
    assert all(p.grad is None for p in model.encoder.parameters()) and model.decoder.model[0].weight.grad is not None
