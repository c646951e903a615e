"""What every output was made from, and the check that a stage reads only inputs made from what is there now.

Each stage's output folder holds `lineage.json`: the sha256 of every file the stage wrote there (`files`), of
every file it read (`inputs`), and the parameters that shaped them (`params`: the stage's `params` in
dvc.yaml, resolved). A stage or command opens its inputs through `Lineage.read`, which refuses, by name and
before any work:
- a file that is not what its stage wrote (changed, truncated or replaced since);
- an input whose stage, or any stage before it, read a file that has changed since, or ran with other
  parameters than those in force now: what `dvc status` calls changed, judged by content, so hand-run stages
  are held to it too.
Each error says which stage to rerun. Without parameters (`Lineage(None)`, for a folder of trained models
copied out of its workspace) only the first check is made, the file named by its place in its folder.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import yaml

from pipeline.config import ConfigError
from pipeline.schema import get_dotted
from pipeline.files import require

RECORD = "lineage.json"
DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@functools.cache
def declared_params(stage: str) -> tuple[str, ...]:
    """The parameters dvc.yaml declares for `stage`, less the profile keys (the resolved values are there)."""
    params = yaml.safe_load(DVC_YAML.read_text())["stages"][stage].get("params", [])
    return tuple(p for p in params if not p.startswith("profile"))


def leaves(prefix: str, value) -> dict:
    """A parameter as {dotted key: value} for each of its leaves, the values as JSON gives them back."""
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in leaves(f"{prefix}.{key}", sub).items()}
    return {prefix: json.loads(json.dumps(value))}


def params_of(cfg: dict, stage: str) -> dict:
    """{dotted key: value} of the parameters that shape `stage`'s outputs, resolved."""
    return {k: v for key in declared_params(stage) for k, v in leaves(key, get_dotted(cfg, key)).items()}


def record_of(path: Path) -> tuple[Path, dict | None] | None:
    """The output folder above `path` that holds a lineage record, and the record (None where it is not
    readable); None where no folder above has one."""
    for folder in path.parents:
        if (folder / RECORD).is_file():
            try:
                record = json.loads((folder / RECORD).read_text())
            except (ValueError, UnicodeDecodeError):
                record = None
            return folder, record if isinstance(record, dict) and "files" in record else None
        if folder == Path("."):
            return None
    return None


def rerun(stage: str) -> str:
    return f"rerun `{stage}` and the stages after it (`dvc repro` does)"


class Lineage:
    """The inputs a stage or command has read, each checked, and the record a stage writes beside its outputs."""

    def __init__(self, cfg: dict | None):
        """`cfg`: the parameters in force; None: check each file against its own folder's record only."""
        self.cfg = cfg
        self.inputs: dict[str, str] = {}  # path → sha256, of every file read
        self._digests: dict[str, str | None] = {}
        self._current: set[Path] = set()  # output folders found up to date

    def digest(self, path: str) -> str | None:
        if path not in self._digests:
            self._digests[path] = sha256(Path(path)) if Path(path).is_file() else None
        return self._digests[path]

    def read(self, path: Path, stage: str) -> Path:
        """`path`, an output of stage `stage`, once checked: there, as `stage` wrote it, and made by stages
        that are up to date with the files there now and the parameters in force."""
        found = record_of(require(path, stage))
        if found is None or found[1] is None:
            raise ConfigError(f"{path}: no readable {RECORD} in its folder, so what it was made from is unknown: "
                              f"rerun the `{stage}` stage")
        folder, record = found
        name = path.as_posix()
        if self.cfg is None:  # the folder may have moved: its record names the file by its old place
            inside = "/" + path.relative_to(folder).as_posix()
            wrote = min((k for k in record["files"] if k.endswith(inside)), key=len, default=None)
        else:
            wrote = name
        if record["files"].get(wrote) != self.digest(name):
            raise ConfigError(f"{path} is not the file the `{record.get('stage', stage)}` stage wrote (changed, "
                              f"truncated or replaced since): rerun `{record.get('stage', stage)}`")
        if self.cfg is not None:
            self._check_current(folder, record)
        self.inputs[name] = self.digest(name)
        return path

    def _check_current(self, folder: Path, record: dict) -> None:
        """That the stage which wrote `folder`, and each stage before it, would not rerun: its parameters are
        those in force, and every file it read is as it read it (where the file is still there)."""
        if folder in self._current:
            return
        stage = record.get("stage", "?")
        for key, value in record.get("params", {}).items():
            try:
                now = leaves(key, get_dotted(self.cfg, key))[key]
            except (KeyError, TypeError):
                now = "no such parameter"
            if now != value:
                raise ConfigError(f"{folder} was made with {key}={value!r}, the parameters in force say {now!r}: "
                                  f"{rerun(stage)}, or give this command the -S settings it was made with")
        for file, digest in record.get("inputs", {}).items():
            now = self.digest(file)
            if now is not None and now != digest:
                raise ConfigError(f"{folder} was made from another {file} than the one there now: {rerun(stage)}")
            upstream = record_of(Path(file))
            if now is not None and upstream is not None and upstream[1] is not None:
                self._check_current(*upstream)
        self._current.add(folder)

    def write(self, tmp: Path, folder: Path, stage: str) -> None:
        """Record in `tmp`, the temporary that becomes `folder`, the files dvc.yaml's `stage` wrote there, the
        files it read and the parameters that shaped them. Call it last, once every output is in place."""
        files = {(folder / p.relative_to(tmp)).as_posix(): sha256(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != RECORD}
        record = {"stage": stage, "files": files, "inputs": self.inputs, "params": params_of(self.cfg, stage)}
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
