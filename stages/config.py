"""Parameters: read `params.yaml`, apply `-S key=value` overrides, resolve the profile.

`profile` selects a block of `profiles:` in params.yaml. A profile fills only the values that are
left `null` in the main sections, so an explicit parameter (in the file or given with `-S`, exactly
as `dvc exp run -S` writes it) always wins over the profile.
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats, as DVC reads params.yaml: `1e-4` is a number, not the string '1e-4'."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*$"
               r"|^[-+]?\.[0-9_]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


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
        parsed = _yaml(value) if value != "" else None
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
            raise ConfigError(f"parameter {key!r}: {part!r} is not a parameter group in {PARAMS_FILE}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"parameter {key!r} does not exist in {PARAMS_FILE}")
    node[parts[-1]] = value


def _fill_nulls(tree: dict, defaults: dict, prefix: str = "") -> None:
    for key, value in defaults.items():
        name = f"{prefix}{key}"
        if key not in tree:
            raise ConfigError(f"profile sets {name!r}, which is not a parameter in {PARAMS_FILE}")
        if isinstance(value, dict) and isinstance(tree[key], dict):
            _fill_nulls(tree[key], value, name + ".")
        elif tree[key] is None:
            tree[key] = copy.deepcopy(value)


def resolve(params: dict, overrides: dict[str, Any] | None = None) -> dict:
    """Apply overrides, then fill the profile's values into what is still null."""
    cfg = copy.deepcopy(params)
    profiles = cfg.pop("profiles", {}) or {}
    for key, value in (overrides or {}).items():
        if key == "profiles" or key.startswith("profiles."):
            set_dotted({"profiles": profiles}, key, value)
        else:
            set_dotted(cfg, key, value)
    name = cfg.get("profile")
    if name not in profiles:
        raise ConfigError(f"parameter 'profile' is {name!r}; expected one of {sorted(profiles)}")
    _fill_nulls(cfg, profiles[name])
    return cfg


def read_params(path: Path = PARAMS_FILE) -> dict:
    """params.yaml as written (profiles included), read as DVC reads it."""
    if not path.exists():
        raise ConfigError(f"{path} not found: run the stages from the project root")
    return _yaml(path.read_text())


def load(overrides: list[str] | None = None, path: Path = PARAMS_FILE) -> dict:
    return resolve(read_params(path), parse_overrides(overrides or []))


def require_ints(cfg: dict, section: str, keys: tuple[str, ...], low: int = 1, high: int | None = None) -> None:
    """Fail, naming the parameter, unless each `cfg[section][key]` is an integer in [low, high]."""
    expected = "a positive integer" if (low, high) == (1, None) else f"an integer from {low} to {high}"
    for key in keys:
        value = cfg[section][key]
        if (not isinstance(value, int) or isinstance(value, bool) or value < low
                or (high is not None and value > high)):
            raise ConfigError(f"{section}.{key} is {value!r}; expected {expected}")


def require_fraction(cfg: dict, section: str, key: str) -> None:
    """Fail, naming the parameter, unless `cfg[section][key]` is a number in [0, 1]."""
    value = cfg[section][key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ConfigError(f"{section}.{key} is {value!r}; expected a number from 0 to 1")


def require_choice(cfg: dict, section: str, key: str, choices: tuple) -> None:
    """Fail, naming the parameter, unless `cfg[section][key]` is one of `choices` (as YAML spells them)."""
    value = cfg[section][key]
    if value not in choices:
        spelled = ", ".join("null" if c is None else str(c).lower() if isinstance(c, bool) else str(c)
                            for c in choices)
        raise ConfigError(f"{section}.{key} is {value!r}; expected one of {spelled}")


def cli(description: str, extra_args=None, argv: list[str] | None = None) -> tuple[dict, argparse.Namespace]:
    """The common command line of every stage: `-S key=value` overrides plus stage options, from `argv`
    (default: the process's own arguments)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a parameter (dotted key, as dvc exp run -S)")
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    return load(args.overrides), args


def run(main) -> None:
    """Run a stage's main(); a ConfigError or StageFailed becomes one clear line on stderr, exit status 2."""
    import sys

    try:
        main()
    except (ConfigError, StageFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
