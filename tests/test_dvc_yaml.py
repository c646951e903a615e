"""dvc.yaml and dvc.lock against the code: a stage whose code changed must rerun, and only those stages, so
its deps name exactly the project modules its command runs; stages share code only through `pipeline/`
and `model/`."""
import ast
import hashlib

import pytest
import yaml

from conftest import REPO
from pipeline.config import read_params
from pipeline.schema import get_dotted

PACKAGES = ("model", "pipeline", "stages", "commands", "bench")


def module_file(name: str) -> str | None:
    path = name.replace(".", "/") + ".py"
    return path if (REPO / path).exists() else None


def imported_files(source: str) -> set[str]:
    """The project files a module's `source` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(source)):
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
            todo.extend(imported_files((REPO / current).read_text()))
    return seen


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    return module_file(stage["cmd"].split()[2])  # python -m stages.<name> ...


def test_imported_files_follow_imports_in_functions():
    source = "import os\nfrom pipeline import files\n\ndef f():\n    from model.vqgan import VQGAN\n    import numpy\n"
    assert imported_files(source) == {"pipeline/files.py", "model/vqgan.py"}


def test_every_stage_depends_on_exactly_the_code_it_runs():
    wrong = {}
    for name, stage in dvc_stages().items():
        declared = {d for d in stage["deps"] if d.endswith(".py")}
        runs = code_closure(stage_module(stage))
        if declared != runs:
            wrong[name] = {"missing": sorted(runs - declared), "not run": sorted(declared - runs)}
    assert not wrong, f"dvc.yaml: stages whose code deps are not the code they run: {wrong}"


def test_no_stage_imports_another_stage_and_bench_imports_no_stage():
    stages = sorted(p for p in (REPO / "stages").glob("*.py") if p.name != "__init__.py")
    for path in stages:
        others = {f for f in imported_files(path.read_text()) if f.startswith("stages/")}
        assert not others, f"{path.name} imports {others}: shared code belongs in pipeline/ or model/"
    for path in (REPO / "bench").glob("*.py"):
        found = imported_files(path.read_text())
        assert all(f.split("/")[0] in ("model", "pipeline", "bench") for f in found), (path.name, found)
    for path in (REPO / "model").glob("*.py"):  # the science reads no files and no parameters
        found = imported_files(path.read_text())
        assert all(f.startswith("model/") for f in found), (path.name, found)


def test_the_stages_folder_holds_exactly_the_stages_of_dvc_yaml():
    modules = {stage_module(stage) for stage in dvc_stages().values()}
    files = {f"stages/{p.name}" for p in (REPO / "stages").glob("*.py") if p.name != "__init__.py"}
    assert files == modules, f"not a dvc.yaml stage: {sorted(files - modules)}; no module: {sorted(modules - files)}"


def test_model_reads_no_file_and_no_environment():
    """The science takes its inputs as arguments: no file or environment access anywhere in model/."""
    io_modules = {"os", "pathlib", "io", "shutil", "json", "yaml", "importlib", "pickle", "csv", "sys"}
    io_names = {"open", "environ", "getenv", "load", "save", "read_text", "read_bytes", "loadtxt", "fromfile"}
    for path in sorted((REPO / "model").glob("*.py")):
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [a.name for a in node.names if a.name.split(".")[0] in io_modules]
            elif isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in io_modules:
                found.append(node.module)
            elif getattr(node, "id", None) in io_names or getattr(node, "attr", None) in io_names:
                found.append(getattr(node, "id", None) or node.attr)
        assert not found, f"model/{path.name} does file or environment I/O: {found}"


def file_md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not (REPO / "dvc.lock").exists(), reason="no dvc.lock")
def test_the_committed_dvc_lock_is_of_this_code_and_these_parameters():
    """What `dvc repro` last ran, as committed: each locked stage's code is the code as it stands (same files,
    same md5), and each parameter it recorded has the value params.yaml gives it."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    declared, params = dvc_stages(), read_params(REPO / "params.yaml")
    for name, entry in lock.items():
        stage = declared[name.split("@")[0]]
        code = {d["path"]: d["md5"] for d in entry["deps"] if d["path"].endswith(".py")}
        assert set(code) == {d for d in stage["deps"] if d.endswith(".py")}, name
        stale = [path for path, md5 in code.items() if file_md5(REPO / path) != md5]
        assert not stale, f"dvc.lock: {name} ran other versions of {stale}: run dvc repro and commit dvc.lock"
        for values in entry.get("params", {}).values():
            for key, value in values.items():
                assert get_dotted(params, key) == value, f"dvc.lock: {name} ran with {key}={value!r}"
