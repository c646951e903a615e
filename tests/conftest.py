import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CATS64 = SHARED / "data" / "cats64"
LAB_SAMPLE = SHARED / "data" / "lab5-format-sample"

needs_cats64 = pytest.mark.skipif(not CATS64.is_dir(), reason="../shared/data/cats64 not present")
needs_lab_sample = pytest.mark.skipif(not LAB_SAMPLE.is_dir(), reason="../shared/data/lab5-format-sample not present")


class Project:
    """A scratch copy of the project's params in tmp_path, where stages run as `python -m stages.X`."""

    def __init__(self, root: Path):
        self.root = root
        shutil.copy(REPO / "params.yaml", root / "params.yaml")

    def run(self, stage: str, *overrides: str, check: bool = True, timeout: int = 900):
        cmd = [sys.executable, "-m", f"stages.{stage}"] + [a for o in overrides for a in ("-S", o)]
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


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)
