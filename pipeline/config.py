"""Parameters: read `params.yaml`, apply `-S key=value` overrides, resolve the profile, check the result.

`profile` selects a block of `profiles:` in params.yaml. A profile fills only the values that are
left `null` in the main sections, so an explicit parameter (in the file or given with `-S`, exactly
as `dvc exp run -S` writes it) always wins over the profile. Every stage checks every parameter against
SCHEMA when it starts, so a bad value fails in seconds, named, whichever stage DVC runs first.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from pipeline.paths import PARAMS

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
                          "keys of SCHEMA in pipeline/config.py")
    return _plain(tree)


def _undeclared(tree, prefix: str = "") -> tuple[str, int] | None:
    """The first key of a params.yaml tree (ruamel's, with line numbers) that SCHEMA does not declare, and its
    line; the `profiles` block is checked when a profile is resolved."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if name == "profiles":
            continue
        if name not in SCHEMA and not any(k.startswith(name + ".") for k in SCHEMA):
            return name, tree.lc.key(key)[0] + 1
        if isinstance(value, dict) and name not in SCHEMA:
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


# ---------------------------------------------------------------- the schema: every parameter's type and range
# The choices of the parameters that pick a method. The model's modules, which implement them, hold the same
# lists (tests/test_config.py checks); the schema spells them out so that importing it imports no model code,
# and a change of stage-2 code reruns no stage that only checks parameters.
SCHEDULES = ("cosine", "linear", "square", "cubic", "sqrt", "log", "exp", "pow<k>")  # model.mask_schedule
POS_INITS = ("normal", "sincos")  # model.transformer
BLEND_CHOICES = ("paste", "poisson")  # model.blend
CONFIDENCES = ("lab", "maskgit")  # model.iterative_decode
RESAMPLES = ("conv", "patch")  # model.vqgan


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # NaN is no setting


class Spec:
    """What one parameter may hold: `ok(value)`, and `expected`, the words of its error."""
    expected = ""

    def ok(self, value) -> bool:
        raise NotImplementedError


class Int(Spec):
    def __init__(self, low: int = 1, high: int | None = None, null: bool = False):
        self.low, self.high, self.null = low, high, null
        words = ("a positive integer" if (low, high) == (1, None) else f"an integer of at least {low}"
                 if high is None else f"an integer from {low} to {high}")
        self.expected = words + (" or null" if null else "")

    def ok(self, value) -> bool:
        if value is None:
            return self.null
        return _is_int(value) and value >= self.low and (self.high is None or value <= self.high)


class Real(Spec):
    """A number in [low, high]; `above`: strictly above `low`; `below`: strictly below `high`."""

    def __init__(self, low: float = 0, high: float | None = None, above: bool = False, below: bool = False):
        self.low, self.high, self.above, self.below = low, high, above, below
        if high is None:
            self.expected = f"a number {'above' if above else 'of at least'} {low}"
        else:
            self.expected = f"a number from {low} to {high}" + (f", below {high}" if below else "") + (
                f", above {low}" if above else "")

    def ok(self, value) -> bool:
        if not _is_number(value) or value < self.low or (self.above and value == self.low):
            return False
        return self.high is None or value < self.high or (value == self.high and not self.below)


class OneOf(Spec):
    def __init__(self, *choices):
        self.choices = choices
        self.expected = "one of " + ", ".join("null" if c is None else str(c).lower() if isinstance(c, bool)
                                              else str(c) for c in choices)

    def ok(self, value) -> bool:  # by type as well, so that 1 is not True
        return any(type(value) is type(c) and value == c for c in self.choices)


class Schedule(Spec):
    expected = (f"a mask schedule: one of {', '.join(SCHEDULES)} (e.g. pow3; k > 0, so that γ(0) = 1: every token "
                "masked before the first step)")

    def ok(self, value) -> bool:
        if not isinstance(value, str):
            return False
        return value in SCHEDULES[:-1] or re.fullmatch(r"pow\d+(\.\d+)?", value) is not None and float(value[3:]) > 0


class ListOf(Spec):
    def __init__(self, item: Spec, empty: bool = False):
        self.item, self.empty = item, empty
        self.expected = f"a{' ' if empty else ' non-empty '}list, each item {item.expected}, e.g. [1, 2]"

    def ok(self, value) -> bool:
        return isinstance(value, list) and (self.empty or bool(value)) and all(self.item.ok(v) for v in value)


class Text(Spec):
    expected = "a non-empty text"

    def ok(self, value) -> bool:
        return isinstance(value, str) and value.strip() != ""


class Sha256(Spec):
    expected = "null or 64 hexadecimal digits"

    def ok(self, value) -> bool:  # 64 decimal digits read as YAML are an integer
        return value is None or re.fullmatch(r"[0-9a-fA-F]{64}", str(value)) is not None


class File(Spec):
    """null, or the path of a file that exists."""
    expected = "null or the path of an existing file"

    def ok(self, value) -> bool:
        return value is None or isinstance(value, str) and Path(value).expanduser().is_file()


PRECISIONS = ("auto", "bf16", "fp32")  # `precision`: see pipeline/runtime.py's resolve_precision


class Device(Spec):
    expected = "auto, cpu, cuda or cuda:N"

    def ok(self, value) -> bool:
        return isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None


COMPILE = OneOf(False, "regional")
PREFILLS = ("grey", "telea", "ns")  # `tokens.prefill`: how the encoder sees the test images' holes
TOK_INITS = ("normal", "codebook")  # `train.tok_init`

SCHEMA: dict[str, Spec] = {
    "profile": Text(),  # its choices: the profiles in params.yaml (checked by `resolve`)
    "device": Device(), "precision": OneOf(*PRECISIONS),
    "schedule": Schedule(), "T": Int(), "sweet_spot": Int(0),
    "sweep.schedule": ListOf(Schedule()), "sweep.T": ListOf(Int()), "sweep.sweet_spot": ListOf(Int(0)),
    "data.source": Text(), "data.sha256": Sha256(), "data.test_gt": File(), "data.seed": Int(0),
    "data.skip_bad": OneOf(True, False), "data.dedup": OneOf(True, False), "data.synthetic_count": Int(3),
    "data.sizes.train": Int(), "data.sizes.val": Int(), "data.sizes.test": Int(),
    "data.hole_min": Real(0, 1), "data.hole_max": Real(0, 1, above=True),
    "data.max_extract_gb": Real(0, above=True), "data.max_extract_ratio": Real(1),
    "vqgan.checkpoint": File(), "vqgan.enc_channels": ListOf(Int()), "vqgan.dec_channels": ListOf(Int()),
    "vqgan.latent_dim": Int(), "vqgan.num_codebook_vectors": Int(2, 32767),  # tokens are stored as int16
    "vqgan.norm_groups": Int(), "vqgan.enc_blocks": Int(), "vqgan.dec_blocks": Int(),
    "vqgan.latent_attention": OneOf(True, False), "vqgan.resample": OneOf(*RESAMPLES), "vqgan.beta": Real(0),
    "vqgan.steps": Int(), "vqgan.batch_size": Int(),
    "vqgan.lr": Real(0, above=True), "vqgan.warmup_steps": Int(0), "vqgan.l1_weight": Real(0),
    "vqgan.l2_weight": Real(0), "vqgan.disc_start": Int(0), "vqgan.disc_weight": Real(0),
    "vqgan.feature_weight": Real(0), "vqgan.quantize_start": Int(0),
    "vqgan.codebook_restart_every": Int(),
    "vqgan.decoder_only_from": Int(0, null=True), "vqgan.checkpoint_every": Int(),
    "vqgan.checkpoint_minutes": Real(0, above=True), "vqgan.eval_every": Int(), "vqgan.compile": COMPILE,
    "vqgan.seed": Int(0),
    "tokens.batch_size": Int(), "tokens.prefill": OneOf(*PREFILLS), "tokens.decode_prefill": OneOf(None, *PREFILLS),
    "train.dim": Int(), "train.n_layers": Int(), "train.hidden_dim": Int(), "train.n_heads": Int(),
    "train.dropout": Real(0, 1, below=True), "train.pos_init": OneOf(*POS_INITS), "train.tok_init": OneOf(*TOK_INITS),
    "train.epochs": Int(), "train.batch_size": Int(), "train.lr": Real(0, above=True), "train.weight_decay": Real(0),
    "train.warmup_steps": Int(0), "train.grad_clip": Real(0, above=True), "train.gamma": Schedule(),
    "train.label_smoothing": Real(0, 1, below=True),
    "train.checkpoint_every": Int(), "train.checkpoint_minutes": Real(0, above=True), "train.compile": COMPILE,
    "train.seed": Int(0),
    "inpaint.choice_temperature": Real(0), "inpaint.confidence": OneOf(*CONFIDENCES), "inpaint.temperature": Real(0),
    "inpaint.composite": OneOf(True, False),
    "inpaint.blend": OneOf(*BLEND_CHOICES), "inpaint.picture_serials": ListOf(Int(0), empty=True),
    "inpaint.batch_size": Int(), "inpaint.seed": Int(0),
    "evaluate.batch_size": Int(),
}


def get_dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def _fail(key: str, value, expected: str):
    raise ConfigError(f"{key} is {value!r}; expected {expected}")


def config_name(schedule: str, T: int, sweet_spot: int) -> str:
    """The folder name of a decoding configuration under results/inpaint/."""
    return f"{schedule}-T{T}-s{sweet_spot}"


def sweep_points(cfg: dict) -> list[tuple]:
    """(schedule, T, sweet_spot, folder name) of every point of the `sweep` grid."""
    return [(sc, T, sw, config_name(sc, T, sw))
            for sc, T, sw in itertools.product(cfg["sweep"]["schedule"], cfg["sweep"]["T"], cfg["sweep"]["sweet_spot"])]


def headline_point(cfg: dict) -> tuple:
    return cfg["schedule"], cfg["T"], cfg["sweet_spot"], "headline"


def _check_relations(cfg: dict) -> None:
    """The rules that tie one parameter to another."""
    v, d, t = cfg["vqgan"], cfg["data"], cfg["train"]
    if d["hole_min"] > d["hole_max"]:
        _fail("data.hole_min", d["hole_min"], f"a number from 0 to data.hole_max ({d['hole_max']})")
    if not v["checkpoint"]:  # an adopted checkpoint has the lab's architecture and trains nothing
        if v["quantize_start"] > v["steps"] - 1:
            _fail("vqgan.quantize_start", v["quantize_start"], f"an integer from 0 to {v['steps'] - 1}")
        if v["decoder_only_from"] is not None and not v["quantize_start"] < v["decoder_only_from"] < v["steps"]:
            # the codebook must have started before it is frozen
            _fail("vqgan.decoder_only_from", v["decoder_only_from"],
                  f"an integer from {v['quantize_start'] + 1} to {v['steps'] - 1}")
        odd = [c for c in v["enc_channels"] + v["dec_channels"] if c % v["norm_groups"]]
        if odd:
            _fail("vqgan.norm_groups", v["norm_groups"], f"a divisor of every channel count (not of {odd[0]})")
    if t["dim"] % t["n_heads"]:
        raise ConfigError(f"train.dim {t['dim']} is not divisible by train.n_heads {t['n_heads']}")
    for schedule, T, sweet_spot, name in [headline_point(cfg)] + sweep_points(cfg):  # alone, each is SCHEMA's
        where = "the headline (schedule, T, sweet_spot)" if name == "headline" else "sweep point"
        if sweet_spot > T:
            raise ConfigError(f"{where} {schedule}, T={T}, sweet spot={sweet_spot}: expected a sweet spot from 0 "
                              f"to T={T} (0 = run all T steps)")


def _check_device(name: str) -> None:
    import torch

    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            _fail("device", name, f"auto or cpu: this machine has no CUDA GPU (torch {torch.__version__})")
        if ":" in name and int(name.split(":")[1]) >= count:
            _fail("device", name, f"cuda:0 to cuda:{count - 1} ({count} GPU(s) here)")


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
    """Every parameter of a resolved configuration against SCHEMA, then the rules between parameters: one
    ConfigError naming the first that is wrong and what was expected. Cheap, so every stage runs it first."""
    for key, spec in SCHEMA.items():
        try:
            value = get_dotted(cfg, key)
        except (KeyError, TypeError):
            raise ConfigError(f"parameter {key!r} is missing from {PARAMS}") from None
        if not spec.ok(value):
            _fail(key, value, spec.expected)
    _check_relations(cfg)
    _check_device(cfg["device"])


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
