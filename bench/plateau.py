"""How long stage 2 sits on the unigram plateau: validation loss against steps, per (pos_init, lr, tok_init).

    python -m bench.plateau --runs normal:3e-4 sincos:3e-4 sincos:3e-4:codebook [--dim 128 --hidden 256
                            --heads 4] [--dropout 0.1] [--tokens data/tokens] [--vqgan models/vqgan/vqgan.pt]
                            [--steps 300] [--out plateau.json]

A masked-token model first learns the token frequencies (validation loss at the unigram entropy of
the tokens) and only later learns to use the context. This trains the lab's depth (15 post-LN
layers) at a chosen width on a token cache with the train stage's step and params.yaml's `train`
recipe, every run from the same seed on the same batches and masks, and prints the validation loss
every `--every` steps beside the unigram entropy, and the first step at which each run is 0.05 nats
below it. On a 2-core CPU, width 128 at batch 16 costs about 2 s a step; `--dim 768 --hidden 1536
--heads 16` is the lab's width, for a GPU.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import machine
from model.transformer import POS_INITS, TransformerConfig
from model.vqgan_training import code_entropy
from stages.config import TOK_INITS, load
from stages.train import make_optimizer, new_transformer, train_step, validate
from stages.training import autocast_for, warmup_cosine

ESCAPE_MARGIN = 0.05  # nats below the unigram entropy that count as "uses the context"


def train_curve(cfg: TransformerConfig, lr: float, tok_init: str, train: torch.Tensor, val: torch.Tensor, a,
                p: dict) -> list[list]:
    """[step, validation loss] every `a.every` steps of one run, with the train stage's start and step and
    params.yaml's `train` recipe (weight decay, label smoothing, clipping, mask schedule) at rate `lr`."""
    device = train.device
    torch.manual_seed(a.seed)
    model = new_transformer(cfg, {**p, "tok_init": tok_init, "seed": a.seed}, a.vqgan).to(device).train()
    opt = make_optimizer(model, {**p, "lr": lr})
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(a.warmup, a.steps))
    gen = torch.Generator(device=device).manual_seed(a.seed)
    autocast = autocast_for(device)
    curve = []
    for step in range(1, a.steps + 1):
        idx = torch.randint(len(train), (a.batch,), generator=gen, device=device)
        train_step(model, model, opt, sched, train[idx], cfg.mask_token, p, gen, autocast)
        if step % a.every == 0:
            v = validate(model, val, cfg.mask_token, {**p, "batch_size": 64}, autocast)
            curve.append([step, round(v["val_loss"], 4)])
            print(f"  {cfg.pos_init}:{lr:g}:{tok_init} step {step}: {curve[-1][1]:.4f}", flush=True)
    return curve


def escape_step(curve: list[list], entropy: float) -> int | None:
    return next((step for step, loss in curve if loss < entropy - ESCAPE_MARGIN), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["normal:3e-4", "sincos:3e-4"],
                        metavar="POS_INIT:LR[:TOK_INIT]", help="TOK_INIT: normal (default) | codebook")
    parser.add_argument("--tokens", type=Path, default=Path("data/tokens"), help="folder with train.npy, val.npy")
    parser.add_argument("--codes", type=int, help="codebook size (default: the largest token + 1)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=15)
    parser.add_argument("--dropout", type=float,
                        help="every dropout of the model (default: params.yaml's train.dropout)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--val-images", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the curves as JSON")
    parser.add_argument("--vqgan", type=Path, default=Path("models/vqgan/vqgan.pt"),
                        help="the stage 1 whose codebook a codebook token start uses")
    a = parser.parse_args()
    runs = []
    for run in a.runs:
        pos_init, _, rest = run.partition(":")
        lr, _, tok_init = rest.partition(":")
        try:
            runs.append((pos_init, float(lr), tok_init or "normal"))
        except ValueError:
            parser.error(f"--runs {run!r}: expected POS_INIT:LR[:TOK_INIT], e.g. sincos:3e-4 or sincos:3e-4:codebook")
        if pos_init not in POS_INITS:
            parser.error(f"--runs {run!r}: the position start must be one of {POS_INITS}")
        if runs[-1][2] not in TOK_INITS:
            parser.error(f"--runs {run!r}: the token start must be one of {TOK_INITS}")
    for name in ("train.npy", "val.npy"):
        if not (a.tokens / name).is_file():
            parser.error(f"--tokens: {a.tokens / name} not found (run the tokens stage, or point at a token cache)")

    p = load()["train"]  # the stage's recipe: weight decay, label smoothing, clipping, mask schedule
    if a.dropout is None:
        a.dropout = p["dropout"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train = torch.from_numpy(np.load(a.tokens / "train.npy").astype(np.int64)).to(device)
    val = torch.from_numpy(np.load(a.tokens / "val.npy").astype(np.int64))[: a.val_images].to(device)
    codes = a.codes or int(max(train.max(), val.max())) + 1
    entropy = code_entropy(val, codes)
    print(f"{machine(device)}; {len(train)} training sequences, {codes} codes; "
          f"unigram entropy of the validation tokens {entropy:.4f} nats")
    results = {"machine": machine(device), "unigram_entropy": round(entropy, 4), "codes": codes,
               "settings": {k: v for k, v in vars(a).items() if k not in ("tokens", "out", "runs", "vqgan")},
               "runs": []}
    for pos_init, lr, tok_init in runs:
        cfg = TransformerConfig(num_codebook_vectors=codes, dim=a.dim, n_layers=a.layers, hidden_dim=a.hidden,
                                n_heads=a.heads, dropout=a.dropout, pos_init=pos_init)
        curve = train_curve(cfg, lr, tok_init, train, val, a, p)
        results["runs"].append({"pos_init": pos_init, "lr": lr, "tok_init": tok_init, "curve": curve,
                                "escape_step": escape_step(curve, entropy)})

    print(f"\nvalidation loss (unigram entropy {entropy:.3f}; escape = {ESCAPE_MARGIN} below it)")
    print("step    " + "".join(f"{p}:{lr:g}:{t}".rjust(24) for p, lr, t in runs))
    for i, (step, _) in enumerate(results["runs"][0]["curve"]):
        print(f"{step:<8d}" + "".join(f"{r['curve'][i][1]:24.4f}" for r in results["runs"]))
    print("escape  " + "".join(str(r["escape_step"] or "-").rjust(24) for r in results["runs"]))
    if a.out:
        a.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
