"""Parameters: read `params.yaml`, apply `-S key=value` overrides, resolve the profile, check the result.

`profile` selects a block of `profiles:` in params.yaml. A profile fills only the values that are
left `null` in the main sections, so an explicit parameter (in the file or given with `-S`, exactly
as `dvc exp run -S` writes it) always wins over the profile. Every stage checks every parameter against
pipeline/schema.py when it starts, so a bad value fails in seconds, named, whichever stage DVC runs first.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from pipeline.paths import PARAMS
from pipeline.schema import Params, Point, declared, first_error, get_dotted

PATH_KEYS = ("data.source", "data.test_gt", "vqgan.checkpoint")  # taken as written with -S, not read as YAML


def _plain(node):
    """ruamel's round-trip containers and scalars as plain dicts, lists, ints, floats and strings."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, ScalarBoolean):  # an anchored true/false: an int to isinstance
        return bool(node)
    for kind in (bool, int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _yaml(text: str):
    """YAML 1.2, as DVC reads params.yaml (`1e-4` a number, `on` a text); a duplicated key is an error."""
    return _plain(YAML(typ="rt", pure=True).load(text))


class ConfigError(ValueError):
    """A parameter or input is wrong; the message names it and says what was expected."""


class StageFailed(RuntimeError):
    """A stage cannot go on (e.g. a non-finite loss); the message says what was kept."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r}: expected KEY=VALUE, e.g. -S T=12")
        if key.strip() in PATH_KEYS:  # a path as written: `#`, `2024`, `on` and undecodable bytes included
            out[key.strip()] = None if value in ("", "null") else value
            continue
        try:
            parsed = _yaml(value) if value != "" else None
        except (YAMLError, UnicodeError) as e:
            raise ConfigError(f"-S {key}: {value!r} is not a YAML value ({str(e).splitlines()[0]})") from None
        # Keep digit strings such as checksums ("00ab…", "0000…") as written.
        if isinstance(parsed, int) and not isinstance(parsed, bool) and str(parsed) != value.strip():
            parsed = value.strip()
        out[key.strip()] = parsed
    return out


def set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"parameter {key!r}: {part!r} is not a parameter group in {PARAMS}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"parameter {key!r} does not exist in {PARAMS}")
    node[parts[-1]] = value


def _fill_nulls(tree: dict, defaults: dict, prefix: str = "") -> None:
    for key, value in defaults.items():
        name = f"{prefix}{key}"
        if key not in tree:
            raise ConfigError(f"profile sets {name!r}, which is not a parameter in {PARAMS}")
        if isinstance(value, dict) and isinstance(tree[key], dict):
            _fill_nulls(tree[key], value, name + ".")
        elif tree[key] is None:
            tree[key] = copy.deepcopy(value)


def overridden(params: dict, overrides: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """params.yaml with the overrides applied, the profile not yet filled in; and the profiles."""
    cfg = copy.deepcopy(params)
    profiles = cfg.pop("profiles", {}) or {}
    for key, value in (overrides or {}).items():
        if key == "profiles" or key.startswith("profiles."):
            set_dotted({"profiles": profiles}, key, value)
        else:
            set_dotted(cfg, key, value)
    return cfg, profiles


def resolve(params: dict, overrides: dict[str, Any] | None = None) -> dict:
    """Apply overrides, then fill the profile's values into what is still null."""
    cfg, profiles = overridden(params, overrides)
    name = cfg.get("profile")
    if name not in profiles:
        raise ConfigError(f"parameter 'profile' is {name!r}; expected one of {sorted(profiles)}")
    _fill_nulls(cfg, profiles[name])
    return cfg


def read_params(path: Path = PARAMS) -> dict:
    """params.yaml as written (profiles included), read as DVC reads it; its own mistakes (broken YAML, a
    duplicated key, an empty file) are one line naming the file and the line."""
    if not path.exists():
        raise ConfigError(f"{path} not found: run the stages from the project root")
    try:
        tree = YAML(typ="rt", pure=True).load(path.read_bytes().decode())
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: {problem}; expected YAML as in the project's params.yaml") from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{path}: empty or not a mapping of parameters; expected the project's params.yaml")
    unknown = _undeclared(tree)
    if unknown:
        key, line = unknown
        raise ConfigError(f"{path} line {line}: {key!r} is not a parameter (a typo?); the parameters are the "
                          "fields of pipeline/schema.py")
    return _plain(tree)


def _undeclared(tree, prefix: str = "") -> tuple[str, int] | None:
    """The first key of a params.yaml tree (ruamel's, with line numbers) that the schema does not declare, and
    its line; the `profiles` block is checked when a profile is resolved."""
    keys = declared()
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if name == "profiles":
            continue
        if name not in keys and not any(k.startswith(name + ".") for k in keys):
            return name, tree.lc.key(key)[0] + 1
        if isinstance(value, dict) and name not in keys:
            found = _undeclared(value, name + ".")
            if found:
                return found
    return None


def load(overrides: list[str] | None = None, path: Path = PARAMS) -> dict:
    return resolve(read_params(path), parse_overrides(overrides or []))


def write_overrides(overrides: list[str], path: Path = PARAMS) -> None:
    """Write `-S key=value` overrides into params.yaml, comments and layout kept, as `dvc exp run -S` does
    (ruamel.yaml, which DVC brings)."""
    from ruamel.yaml import YAML

    values = parse_overrides(overrides)
    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    tree = yaml_rt.load(path.read_text())
    for key, value in values.items():
        set_dotted(tree, key, value)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        yaml_rt.dump(tree, f)
    tmp.replace(path)


def dataclass_from(cls, section: dict, **given):
    """A `model/` config dataclass from a params.yaml section: each field the section holds, by the field's name
    (the names are the parameters'), and the others from `given` or the field's default."""
    return cls(**{**{f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section}, **given})


def _check_device(name: str) -> None:
    import torch

    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device is {name!r}; expected auto or cpu: this machine has no CUDA GPU (torch "
                              f"{torch.__version__})")
        if ":" in name and int(name.split(":")[1]) >= count:
            raise ConfigError(f"device is {name!r}; expected cuda:0 to cuda:{count - 1} ({count} GPU(s) here)")


def warn_lab_on_cpu(cfg: dict) -> None:
    """The lab profile is sized for one GPU: on a CPU say what it costs, and go on."""
    import sys

    import torch

    if cfg["profile"] == "lab" and (cfg["device"] == "cpu" or not torch.cuda.is_available()):
        v = cfg["vqgan"]
        what = ("" if v["checkpoint"] else f"its stage 1 alone, {v['steps']} steps of the lab's VQGAN at batch "
                f"{v['batch_size']}, takes over a minute a step on a 2-core CPU ({v['steps'] / 60:.0f} hours or more); ")
        print(f"warning: profile lab is sized for one GPU (about ten minutes there). On this CPU {what}stage 2 "
              f"trains a 768-wide transformer for {cfg['train']['epochs']} epochs. Going on: the progress bars show "
              "the time left. `profile: quick` runs the whole pipeline on a CPU in minutes.", file=sys.stderr)


def check(cfg: dict) -> None:
    """Every parameter of a resolved configuration against the schema, rules between parameters included: one
    ConfigError naming the first that is wrong and what was expected. Cheap, so every stage runs it first."""
    try:
        Params.model_validate(cfg)
    except ValidationError as e:
        raise ConfigError(first_error(e, cfg)) from None
    _check_device(cfg["device"])


def check_point(schedule, T, sweet_spot, where: str | None = None) -> None:
    """A decoding configuration, as the schema takes it; its error opens with `where` (default: the command
    line's --schedule, --T and --sweet-spot)."""
    point = {"schedule": schedule, "T": T, "sweet_spot": sweet_spot}
    try:
        Point.model_validate(point)
    except ValidationError as e:
        where = f"--schedule {schedule} --T {T} --sweet-spot {sweet_spot}: " if where is None else where
        raise ConfigError(f"{where}{first_error(e, point, Point)}") from None


def cli(description: str, extra_args=None, argv: list[str] | None = None) -> tuple[dict, argparse.Namespace]:
    """The common command line of every stage: `-S key=value` overrides plus stage options, from `argv`
    (default: the process's own arguments)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a parameter (dotted key, as dvc exp run -S)")
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    cfg = load(args.overrides)
    check(cfg)
    warn_lab_on_cpu(cfg)
    from pipeline.files import finish_publishing  # here: pipeline.files imports this module

    if finish_publishing():
        print("finished putting in place the outputs of a run that was killed while it moved them")
    return cfg, args


def run(main) -> None:
    """Run a stage's main(); a ConfigError or StageFailed becomes one clear line on stderr, exit status 2."""
    import sys

    try:
        main()
    except (ConfigError, StageFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
