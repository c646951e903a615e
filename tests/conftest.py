import os

# Under pytest-xdist each worker, and every stage it starts, runs torch on one thread: the workers share the
# cores instead of fighting over them (two processes of two threads on two cores run many times slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import contextlib  # noqa: E402
import csv
import importlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import TINY
from model.vqgan import VQGANConfig
from pipeline.config import run
from pipeline.runtime import usable_cores

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CATS64 = SHARED / "data" / "cats64"
LAB_SAMPLE = SHARED / "data" / "lab5-format-sample"

needs_cats64 = pytest.mark.skipif(not CATS64.is_dir(), reason="../shared/data/cats64 not present")
needs_lab_sample = pytest.mark.skipif(not LAB_SAMPLE.is_dir(), reason="../shared/data/lab5-format-sample not present")


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: a worker for each core this process may run on (not the host's count)."""
    return usable_cores()


def tiny_vqgan_config(**changes) -> VQGANConfig:
    """Stage 1 at TINY's widths (tests/tiny.py), for tests that build the model directly."""
    return VQGANConfig(**{"enc_channels": [8, 8, 8, 8, 16, 16], "dec_channels": [8, 8, 8, 16, 16], "latent_dim": 16,
                          "num_codebook_vectors": 32, "norm_groups": 4, **changes})


class Project:
    """A scratch copy of the project's params in tmp_path, where stages run as `python -m stages.X` and the
    other commands as `python -m commands.X`."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "params.yaml", root / "params.yaml")

    @staticmethod
    def module(name: str) -> str:
        """A stage by its name, a command by its name where no stage has it, or any module by its dotted name."""
        if "." in name:
            return name
        return f"{'stages' if (REPO / 'stages' / f'{name}.py').is_file() else 'commands'}.{name}"

    def run(self, stage: str, *overrides: str, args=(), check: bool = True, timeout: int = 900):
        cmd = [sys.executable, "-m", self.module(stage)] + [a for o in overrides for a in ("-S", o)] + list(args)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def fails(self, stage: str, *overrides: str, args=()) -> str:
        """Run a command that must refuse its input, in this process (a refusal comes before any work, so a fresh
        interpreter, two seconds of imports, buys nothing): its stderr, once its `run` has exited with status 2."""
        main = importlib.import_module(self.module(stage)).main
        err, cwd = io.StringIO(), os.getcwd()
        os.chdir(self.root)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                with pytest.raises(SystemExit) as stop:
                    run(lambda: main([a for o in overrides for a in ("-S", o)] + list(args)))
        finally:
            os.chdir(cwd)
        assert stop.value.code == 2, f"{stage} exited with {stop.value.code}:\n{err.getvalue()[-3000:]}"
        return err.getvalue()

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
    """prepare → vqgan → tokens → train, once per test session (per xdist worker), at TINY sizes, in one process
    (`run_all`, which writes what each stage writes alone: test_pipeline.py)."""
    proj = Project(tmp_path_factory.mktemp("tiny"))
    proj.run("run_all", *TINY, args=["--skip", "inpaint", "fid_reference", "evaluate"])
    return proj
