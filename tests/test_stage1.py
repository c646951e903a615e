"""The vqgan stage: adopting a user's checkpoint safely, training, resuming; the token cache."""
import contextlib
import copy
import csv
import json
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
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from bench.tiny import TINY
from conftest import REPO, Project, tiny_vqgan_config
from model.masking import token_mask_from_pixels
from model.vqgan import VQGAN, Discriminator, NonLocalBlock, ResidualBlock, VQGANConfig, normalize
from model.vqgan_training import Stage1Step, freeze_tokenizer, generator_forward, init_codebook, kmeans, rotate_onto
from stages import config
from stages import vqgan as vqgan_stage
from stages.training import compile_generator
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
                                "vqgan.compile is 'maybe'; expected one of true, false, regional"),
                               ("vqgan.quantize_start=12",
                                "vqgan.quantize_start is 12; expected an integer from 0 to 11"),
                               ("vqgan.decoder_only_from=3",
                                "vqgan.decoder_only_from is 3; expected an integer from 4 to 11"),
                               ("vqgan.quantizer_gradient=rotate",
                                "vqgan.quantizer_gradient is 'rotate'; expected one of straight_through, rotation"),
                               ("vqgan.codebook_init=k-means",
                                "vqgan.codebook_init is 'k-means'; expected one of samples, kmeans"),
                               ("vqgan.codebook_metric=l2",
                                "vqgan.codebook_metric is 'l2'; expected one of euclidean, cosine")):
        err = project.fails("vqgan", *TINY, override)
        assert expected in err and "Traceback" not in err
    assert not project.path("models", "vqgan").exists()


class Evil:
    def __reduce__(self):
        return (open, ("/tmp/pwned-by-checkpoint", "w"))


def log_rows(project, name="train_log.csv"):
    with open(project.path("reports", "vqgan", name)) as f:
        return list(csv.DictReader(f))


def test_training_lowers_reconstruction_error(project):
    over = [o for o in TINY if not o.startswith(("vqgan.steps", "vqgan.disc_start", "vqgan.quantize_start"))]
    project.run("prepare", *over)
    project.run("vqgan", *over, "vqgan.steps=1", "vqgan.disc_start=1000", "vqgan.quantize_start=0")
    psnr_before = json.loads(project.path("reports", "vqgan", "metrics.json").read_text())["val_psnr"]
    project.run("vqgan", *over, "vqgan.steps=200", "vqgan.disc_start=1000", "vqgan.lr=0.002", "vqgan.eval_every=50",
                "vqgan.quantize_start=40")
    rows = log_rows(project)
    first = np.mean([float(r["rec_loss"]) for r in rows[:3]])
    last = np.mean([float(r["rec_loss"]) for r in rows[-3:]])
    metrics = json.loads(project.path("reports", "vqgan", "metrics.json").read_text())
    assert last < 0.8 * first
    assert metrics["val_psnr"] > psnr_before + 2
    assert metrics["codebook_used"] > 8
    val_rows = log_rows(project, "val_log.csv")  # the PSNR curve: every eval_every steps, then the last
    assert [int(r["step"]) for r in val_rows] == [50, 100, 150, 200]
    assert float(val_rows[-1]["val_psnr"]) == metrics["val_psnr"]
    assert float(val_rows[-1]["val_psnr"]) > float(val_rows[0]["val_psnr"]) > psnr_before


def kill_after_checkpoint(project, stage, *overrides):
    """Start a stage, SIGKILL it once it has written a checkpoint, and return that checkpoint's step."""
    cmd = [sys.executable, "-m", f"stages.{stage}"] + [a for o in overrides for a in ("-S", o)]
    proc = subprocess.Popen(cmd, cwd=project.root, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
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


def test_vqgan_resumes_after_a_kill_and_matches(project):
    # The kill comes after the checkpoint at step 10 or 20: the resumed run crosses the discriminator's
    # start (15), and from 10 the codebook's (12) too.
    over = [*TINY, "vqgan.steps=30", "vqgan.checkpoint_every=10", "vqgan.disc_start=15", "vqgan.eval_every=10",
            "vqgan.quantize_start=12"]
    project.run("prepare", *over)
    project.run("vqgan", *over)
    uninterrupted = torch.load(project.path("models", "vqgan", "vqgan.pt"))
    psnr_curve = [(r["step"], r["val_psnr"]) for r in log_rows(project, "val_log.csv")]
    step = kill_after_checkpoint(project, "vqgan", *over)
    assert 0 < step < 30
    out = project.run("vqgan", *over)
    assert "resuming from" in out.stdout + out.stderr
    resumed = torch.load(project.path("models", "vqgan", "vqgan.pt"))
    for k in uninterrupted:
        assert torch.equal(uninterrupted[k], resumed[k]), k
    assert [(r["step"], r["val_psnr"]) for r in log_rows(project, "val_log.csv")] == psnr_curve
    assert [step for step, _ in psnr_curve] == ["10", "20", "30"]
    assert [r["quantized"] for r in log_rows(project, "val_log.csv")] == ["0", "1", "1"]  # warm-up: no codebook
    assert not list(project.path("checkpoints").glob("vqgan-*.pt"))


def test_a_killed_run_resumes_under_the_default_checkpoint_steps(project):
    """checkpoint_every (500) is past the run's 30 steps: the half-way checkpoint, then the clock's
    (every checkpoint_minutes), are what a killed run resumes from."""
    over = [*TINY, "vqgan.steps=30", "vqgan.disc_start=15", "vqgan.eval_every=10", "vqgan.quantize_start=12"]
    project.run("prepare", *over)
    project.run("vqgan", *over)
    uninterrupted = torch.load(project.path("models", "vqgan", "vqgan.pt"))
    for extra, steps in (([], {15}), (["vqgan.checkpoint_minutes=0.0002"], set(range(1, 30)))):
        step = kill_after_checkpoint(project, "vqgan", *over, *extra)
        assert step in steps, (extra, step)
        out = project.run("vqgan", *over, *extra)
        assert f"at step {step}" in out.stdout + out.stderr
        resumed = torch.load(project.path("models", "vqgan", "vqgan.pt"))
        assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted), extra


TOKENIZER = ("encoder.", "quant_conv.", "codebook.")


def test_decoder_only_phase_freezes_the_tokens_and_resumes(project):
    # Frozen from step 6; the kill comes after the checkpoint at step 10 or 20, so the encoder side of
    # that checkpoint must already be the final one while the decoder goes on learning, and the run
    # resumed there (past the freeze's step) must freeze again and match. Restarts every 2 steps would
    # move the codebook if they went on.
    over = [*TINY, "vqgan.steps=30", "vqgan.checkpoint_every=10", "vqgan.disc_start=15", "vqgan.eval_every=10",
            "vqgan.decoder_only_from=6", "vqgan.codebook_restart_every=2"]
    project.run("prepare", *over)
    project.run("vqgan", *over)
    final = torch.load(project.path("models", "vqgan", "vqgan.pt"))
    step = kill_after_checkpoint(project, "vqgan", *over)
    ckpt = torch.load(next(project.path("checkpoints").glob("vqgan-*.pt")), weights_only=False)["model"]
    assert step in (10, 20)
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
    model = vqgan_stage.load_frozen("cpu")

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


def nearest_sq_distance(vectors: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 reference: each vector's squared distance to its nearest centre, and that centre's index."""
    d = ((vectors.double()[:, None, :] - centres.double()[None, :, :]) ** 2).sum(-1)
    return d.min(1)


def test_kmeans_converges_to_the_means_of_its_own_clusters():
    """Lloyd's fixed point, checked in float64: on well-separated blobs every centre is the mean of the
    vectors nearest to it, and each of the k blobs gets one centre (so the error is the blobs' own spread)."""
    gen = torch.Generator().manual_seed(0)
    blob_centres = torch.tensor([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 20.0]])
    vectors = blob_centres.repeat_interleave(200, 0) + torch.randn(800, 3, generator=gen)
    blob = torch.arange(4).repeat_interleave(200)
    torch.manual_seed(3)
    centres = kmeans(vectors, 4, iters=20)
    _, nearest = nearest_sq_distance(vectors, centres)
    for j in range(4):
        members = vectors[nearest == j].double()
        assert len(members) == 200 and len(set(blob[nearest == j].tolist())) == 1
        torch.testing.assert_close(centres[j].double(), members.mean(0), atol=1e-5, rtol=1e-5)


def test_kmeans_codebook_quantises_encoder_outputs_with_less_error_than_samples():
    """init_codebook's two starts on the same vectors, measured by an independent float64 distance: the
    k-means centres quantise them with a lower mean squared error than random vectors do."""
    cfg = tiny_vqgan_config(latent_dim=4, num_codebook_vectors=16)
    vectors = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1))
    errors = {}
    for method in ("samples", "kmeans"):
        model = VQGAN(cfg)
        torch.manual_seed(0)
        init_codebook(model, vectors, method)
        errors[method] = float(nearest_sq_distance(vectors, model.codebook.embedding.weight.detach())[0].mean())
    assert errors["kmeans"] < 0.8 * errors["samples"]


def test_kmeans_of_fewer_distinct_vectors_than_centres_keeps_the_empty_centres_on_them():
    """Three distinct vectors, eight centres: five centres never get a vector, and they must stay where
    the seeding put them (on the vectors), not fall to the origin; the three used ones are the vectors."""
    points = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]])
    vectors = points.repeat(10, 1)
    torch.manual_seed(0)
    centres = kmeans(vectors, 8, iters=3)
    distance, _ = nearest_sq_distance(centres, points)
    assert float(distance.max()) == 0.0  # every centre sits on one of the three vectors
    assert {tuple(c.tolist()) for c in centres} == {tuple(p.tolist()) for p in points}


def test_vqgan_stage_starts_the_codebook_as_its_recipe_says(monkeypatch, tmp_path):
    """vqgan.codebook_init reaches init_codebook when the codebook comes on (at quantize_start)."""
    seen = []
    monkeypatch.setattr(vqgan_stage, "init_codebook", lambda model, vectors, method: seen.append(method))
    monkeypatch.chdir(tmp_path)
    cfg = config.load([*TINY, "vqgan.steps=3", "vqgan.quantize_start=1", "vqgan.codebook_init=kmeans"],
                      path=REPO / "params.yaml")
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    vqgan_stage.train(cfg["vqgan"], images, torch.from_numpy(images[:4]), torch.device("cpu"), cfg["data"])
    assert seen == ["kmeans"]


def test_cosine_stage1_saves_unit_codes_that_the_lab_lookup_turns_into_the_token_cache(project):
    """Trained with `codebook_metric: cosine`, the stage records the metric, saves unit-length codebook
    rows, and the lab's Euclidean lookup of those rows, in a model built without the metric, encodes
    the val images to the token cache the tokens stage wrote."""
    project.run("prepare", *TINY)
    project.run("vqgan", *TINY, "vqgan.codebook_metric=cosine")
    project.run("tokens", *TINY)
    arch = json.loads(project.path("models", "vqgan", "architecture.json").read_text())
    assert arch.pop("codebook_metric") == "cosine"
    weights = torch.load(project.path("models", "vqgan", "vqgan.pt"), weights_only=True)
    norms = weights["codebook.embedding.weight"].double().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-6, rtol=0)
    lab = VQGAN(VQGANConfig(**arch)).eval()
    lab.load_state_dict(weights, strict=True)
    val = torch.from_numpy(np.load(project.path("data", "prepared", "val.npy")))
    with torch.no_grad():
        tokens = torch.cat([lab.encode(normalize(chunk))[1] for chunk in val.split(64)])
    assert np.array_equal(tokens.numpy(), np.load(project.path("data", "tokens", "val.npy")))


def test_cosine_warm_up_feeds_the_decoder_unit_vectors():
    """In the plain-autoencoder warm-up the decoder gets what the codebook would compare: the encoder's
    output as unit vectors (a reference built from the modules and an explicit division by the norm)."""
    torch.manual_seed(0)
    model = VQGAN(tiny_vqgan_config(codebook_metric="cosine"))
    x = torch.randn(2, 3, 64, 64)
    decoded, _, _ = generator_forward(model, x, torch.tensor(0.0))
    z_e = model.quant_conv(model.encoder(x))
    plain = model.decoder(model.post_quant_conv(z_e / z_e.norm(dim=1, keepdim=True)))
    torch.testing.assert_close(decoded, plain, atol=1e-6, rtol=1e-6)


def test_rotation_trick_returns_the_code_and_rotates_the_gradient():
    """Against an explicit float64 reference: for each vector e and its code q, the rotation R that takes
    e/|e| to q/|q| in their plane, built from the angle between them (not the Householder form the code
    uses); the value must be q and the gradient reaching e must be (|q|/|e|) Rᵀ g."""
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(3, 5, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(3, 5, 2, 2, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 5, 2, 2, generator=gen, dtype=torch.float64)
    out = rotate_onto(e, q)
    torch.testing.assert_close(out, q, atol=1e-12, rtol=1e-12)
    out.backward(g)
    ev, qv, gv = (t.permute(0, 2, 3, 1).reshape(-1, 5) for t in (e.detach(), q, g))
    for i in range(len(ev)):
        a, b = ev[i] / ev[i].norm(), qv[i] / qv[i].norm()
        u = a
        w = b - (a @ b) * a
        w = w / w.norm()  # (u, w): an orthonormal basis of the plane of a and b
        theta = torch.atan2(b @ w, a @ b)
        rot = (torch.eye(5, dtype=torch.float64) + (torch.cos(theta) - 1) * (torch.outer(u, u) + torch.outer(w, w))
               + torch.sin(theta) * (torch.outer(w, u) - torch.outer(u, w)))
        torch.testing.assert_close(rot @ a, b)
        want = qv[i].norm() / ev[i].norm() * rot.T @ gv[i]
        torch.testing.assert_close(e.grad.permute(0, 2, 3, 1).reshape(-1, 5)[i], want, atol=1e-10, rtol=1e-8)
    straight = e.detach().clone().requires_grad_(True)
    model_like = straight + (q - straight).detach()
    model_like.backward(g)
    assert not torch.allclose(straight.grad, e.grad)  # the rotation is not the straight-through copy


def test_stage1_step_takes_the_quantizer_gradient_from_its_recipe():
    """vqgan.quantizer_gradient reaches the step: same losses, different encoder gradients."""
    cfg = tiny_vqgan_config()
    x, grads, losses = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), [], []
    for gradient in ("straight_through", "rotation"):
        torch.manual_seed(0)
        model, disc = VQGAN(cfg), Discriminator()
        recipe = {"l1_weight": 1.0, "l2_weight": 1.0, "disc_start": 10, "disc_weight": 0.1, "feature_weight": 1.0,
                  "quantize_start": 0, "quantizer_gradient": gradient}
        step = Stage1Step(model, disc, torch.optim.SGD(model.parameters(), lr=0.0),
                          torch.optim.SGD(disc.parameters(), lr=0.0), recipe)
        logs, _ = step(x, step=0, autocast=contextlib.nullcontext)
        losses.append(float(logs["loss"]))
        grads.append(model.encoder.model[0].weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert not torch.allclose(grads[0], grads[1])


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


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_compiled_generator_matches_eager_and_runs_one_backward_per_gan_step(metric):
    """The adaptive GAN weight takes gradients at the decoder's last conv; compile_generator leaves that
    conv outside the graph, so a step runs the compiled backward once (compiling the whole generator
    runs it three times: twice for the weight, once for the update). Under either codebook metric."""
    backwards = []

    def counting_backward(gm, _):
        run = make_boxed_func(gm.forward)

        def counted(args):
            backwards.append(1)
            return run(args)
        counted._boxed_call = True
        return counted

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = tiny_vqgan_config(codebook_metric=metric)
    model, disc = VQGAN(cfg), Discriminator()
    x = torch.randn(2, 3, 64, 64)
    forwards = []

    def counting_forward(gm, _):
        forwards.append(1)
        return make_boxed_func(gm.forward)

    forward = compile_generator(model, backend=aot_autograd(fw_compiler=counting_forward,
                                                              bw_compiler=counting_backward))
    for quantize in (0.0, 1.0):  # the warm-up and the quantised phase share one graph
        got, want = forward(x, torch.tensor(quantize)), generator_forward(model, x, torch.tensor(quantize))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    assert len(forwards) == 1 and not backwards
    recipe = {"l1_weight": 1.0, "l2_weight": 1.0, "disc_start": 0, "disc_weight": 0.1, "feature_weight": 1.0,
              "quantize_start": 0}
    step = Stage1Step(model, disc, torch.optim.Adam(model.parameters()), torch.optim.Adam(disc.parameters()),
                      recipe, forward)
    logs, _ = step(x, step=0, autocast=contextlib.nullcontext)
    assert len(backwards) == 1 and float(logs["adaptive_weight"]) > 0
    assert all(p.grad is not None for p in model.encoder.parameters())
    torch._dynamo.reset()


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
    forward = compile_generator(model, backend=counting, regional=True)
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
    forward = compile_generator(model, backend=counting, regional=True)
    x = torch.randn(1, 3, 64, 64)
    forward(x, torch.tensor(1.0))[0].mean().backward()
    before = len(graphs)
    freeze_tokenizer(model)
    model.zero_grad(set_to_none=True)
    forward(x, torch.tensor(1.0))[0].mean().backward()
    assert len(graphs) - before == len(encoder_shapes) > 0
    assert all(p.grad is None for p in model.encoder.parameters()) and model.decoder.model[0].weight.grad is not None
