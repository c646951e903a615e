"""dvc.yaml against the code: a stage whose code changed must rerun, so its deps name every project module
its command runs."""
import ast
from pathlib import Path

import yaml

from conftest import REPO

PACKAGES = ("model", "stages")


def module_file(name: str) -> str | None:
    path = name.replace(".", "/") + ".py"
    return path if (REPO / path).exists() else None


def imported_files(path: str) -> set[str]:
    """The project files `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in PACKAGES:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES]
        else:
            continue
        found |= {f for f in map(module_file, names) if f}
    return found


def code_closure(path: str) -> set[str]:
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(imported_files(current))
    return seen


def test_imported_files_follow_imports_in_functions():
    # evaluate imports stages.vqgan inside a function (recon_floor) only; the walk must see it
    assert "stages/vqgan.py" in imported_files("stages/evaluate.py")
    assert "model/fid.py" in imported_files("stages/evaluate.py")  # `from model.fid import ...`


def test_every_stage_depends_on_the_code_it_runs():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        module = stage["cmd"].split()[2]  # python -m stages.<name> ...
        lacking = code_closure(module_file(module)) - set(stage["deps"])
        if lacking:
            missing[name] = sorted(lacking)
    assert not missing, f"dvc.yaml: stages missing code deps (a change there would not rerun them): {missing}"

