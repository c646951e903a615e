import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import TINY
from model.vqgan import VQGANConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CATS64 = SHARED / "data" / "cats64"
LAB_SAMPLE = SHARED / "data" / "lab5-format-sample"

needs_cats64 = pytest.mark.skipif(not CATS64.is_dir(), reason="../shared/data/cats64 not present")
needs_lab_sample = pytest.mark.skipif(not LAB_SAMPLE.is_dir(), reason="../shared/data/lab5-format-sample not present")


def tiny_vqgan_config(**changes) -> VQGANConfig:
    """Stage 1 at TINY's widths (tests/tiny.py), for tests that build the model directly."""
    return VQGANConfig(**{"enc_channels": [8, 8, 8, 8, 16, 16], "dec_channels": [8, 8, 8, 16, 16], "latent_dim": 16,
                          "num_codebook_vectors": 32, "norm_groups": 4, **changes})


class Project:
    """A scratch copy of the project's params in tmp_path, where stages run as `python -m stages.X`."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "params.yaml", root / "params.yaml")

    def run(self, stage: str, *overrides: str, args=(), check: bool = True, timeout: int = 900):
        cmd = [sys.executable, "-m", f"stages.{stage}"] + [a for o in overrides for a in ("-S", o)] + list(args)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def fails(self, stage: str, *overrides: str) -> str:
        proc = self.run(stage, *overrides, check=False)
        assert proc.returncode != 0, f"stage {stage} should have failed:\n{proc.stdout}"
        return proc.stderr

    def path(self, *parts) -> Path:
        return self.root.joinpath(*parts)


def logged_rows(folder: Path, prefix: str) -> list[dict]:
    """The rows a stage logged through dvclive under `folder`/plots/metrics/`prefix`/, one tsv per metric, merged
    by step (values as the tsv holds them, strings)."""
    rows = {}
    for tsv in sorted((folder / "plots" / "metrics" / prefix).glob("*.tsv")):
        with open(tsv) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                rows.setdefault(int(row["step"]), {"step": row["step"]})[tsv.stem] = row[tsv.stem]
    return [rows[step] for step in sorted(rows)]


@pytest.fixture
def graph_recorder():
    """A torch.compile backend that runs each graph as traced and records it, with dynamo's caches
    cleared before and after: (backend, the list of graphs compiled)."""
    import torch

    graphs = []

    def backend(gm, _):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    yield backend, graphs
    torch._dynamo.reset()


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Project:
    """prepare → vqgan → tokens → train, once per test session, at TINY sizes."""
    proj = Project(tmp_path_factory.mktemp("tiny"))
    for stage in ("prepare", "vqgan", "tokens", "train"):
        proj.run(stage, *TINY)
    return proj
