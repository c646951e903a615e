import shutil
from pathlib import Path

import pytest

from pipeline import config
from model.choices import is_schedule
from pipeline.config import ConfigError, parse_overrides, read_params, resolve
from pipeline.schema import declared

PARAMS = {
    "profile": "quick",
    "T": 8,
    "train": {"epochs": None, "lr": None, "seed": 0},
    "profiles": {"quick": {"train": {"epochs": 2, "lr": 0.1}}, "lab": {"train": {"epochs": 60, "lr": 0.01}}},
}


def test_profile_fills_only_nulls_and_explicit_values_win():
    cfg = resolve(PARAMS)
    assert cfg["train"] == {"epochs": 2, "lr": 0.1, "seed": 0} and "profiles" not in cfg
    cfg = resolve(PARAMS, {"profile": "lab", "train.epochs": 5})
    assert cfg["train"]["epochs"] == 5 and cfg["train"]["lr"] == 0.01


def test_overrides_parse_as_yaml_but_keep_digit_strings():
    got = parse_overrides(["T=12", "x=1.0e-3", "y=1e-4", "z=2E5", "flag=true", "l=[1, 2]", "sha=0012ab",
                           "zeros=000", "none=", "name=cosine", "ver=1.2.3"])
    assert got == {"T": 12, "x": 0.001, "y": 1e-4, "z": 2e5, "flag": True, "l": [1, 2], "sha": "0012ab",
                   "zeros": "000", "none": None, "name": "cosine", "ver": "1.2.3"}
    assert all(type(got[k]) is float for k in "xyz")


@pytest.mark.parametrize("override, message", [
    ({"profile": "huge"}, "'profile' is 'huge'"),
    ({"train.nope": 1}, "'train.nope' does not exist"),
    ({"T.x": 1}, "'T' is not a parameter group"),
])
def test_bad_parameters_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(PARAMS, override)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["T12"])


@pytest.mark.parametrize("profile", ["quick", "lab"])
def test_no_value_in_params_yaml_shadows_its_profile(profile):
    """A profile only fills nulls, so a main-section value it also sets would silently win over it."""
    params = read_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = resolve(params, {"profile": profile})

    def leaves(tree, prefix=()):
        for key, value in tree.items():
            yield from leaves(value, prefix + (key,)) if isinstance(value, dict) else [(prefix + (key,), value)]

    for path, value in leaves(params["profiles"][profile]):
        resolved = cfg
        for key in path:
            resolved = resolved[key]
        assert resolved == value, f"params.yaml sets {'.'.join(path)}, shadowing the {profile} profile's {value}"


def test_the_schema_covers_every_parameter_and_nothing_else():
    params = read_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params.pop("profiles")

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    assert set(leaves(params)) == set(declared())


def test_a_schedule_is_a_name_of_the_model_or_a_power_above_zero():
    from model.mask_schedule import mask_schedule

    valid, invalid = ("cosine", "exp", "pow3", "pow2.5", "pow0.5"), ("pow", "pow0", "pow0.0", "zigzag", "Cosine", 3)
    assert all(is_schedule(name) for name in valid) and not any(is_schedule(name) for name in invalid)
    for name in valid:  # each is a schedule: everything masked before the first step, nothing after the last
        assert mask_schedule(0.0, name) == 1.0 and mask_schedule(1.0, name) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("profile", ["quick", "lab"])
def test_both_profiles_pass_the_schema(profile):
    config.check(config.load([f"profile={profile}"], Path(__file__).resolve().parents[1] / "params.yaml"))


@pytest.mark.parametrize("key, good, bad", [
    ("T", [1, 7], [0, -1, 2.5, True, None, "3"]),
    ("vqgan.decoder_only_from", [None, 5], [-1, 1.5, 1200]),
    ("train.lr", [1e-9, 3], [0, -1, float("nan"), float("inf"), True]),
    ("train.dropout", [0, 0.5], [1, 1.5]),
    ("vqgan.compile", [False, "regional"], [True, 1, 0, "yes", None]),
    ("sweep.T", [[3], [4, 8]], [4, [], [0], "[4]"]),
    ("data.sha256", [None, "a" * 64, "0" * 64], ["a" * 63, "g" * 64, 0]),
    ("inpaint.picture_serials", [[], [0, 3]], [[-1], None]),
])
def test_each_parameter_takes_what_its_declaration_says(key, good, bad):
    """Through the whole check, as a stage runs it; each refusal names the key, the value and what was expected."""
    cfg = config.load([], Path(__file__).resolve().parents[1] / "params.yaml")
    for value in good:
        config.set_dotted(cfg, key, value)
        config.check(cfg)
    for value in bad:
        config.set_dotted(cfg, key, value)
        with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')} is .*; expected ") as e:
            config.check(cfg)
        assert repr(value)[:20] in str(e.value)


@pytest.mark.parametrize("point, message", [
    (("cosine", 0, 0), "T is 0; expected a positive integer"), (("cosine", 2.5, 0), "T is 2.5"),
    (("cosine", 4, 5), "sweet spot=5: expected a sweet spot from 0 to T=4"), (("cosine", 4, -1), "sweet_spot is -1"),
    (("bogus", 4, 0), "schedule is 'bogus'; expected a mask schedule: one of cosine, linear, square"),
])
def test_a_decoding_configuration_on_the_command_line_is_checked_as_the_schema_says(point, message):
    with pytest.raises(ConfigError, match=message):
        config.check_point(*point)


def test_overrides_are_written_into_params_yaml_keeping_its_comments(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", path)
    config.write_overrides(["T=12", "sweep.T=[2, 3]", "data.sha256=" + "0" * 64, "vqgan.lr=1e-4"], path)
    text = path.read_text()
    assert "commands.params" in text and "T: 12" in text
    got = read_params(path)  # read back as DVC reads it
    assert got["T"] == 12 and got["sweep"]["T"] == [2, 3] and got["data"]["sha256"] == "0" * 64
    assert got["vqgan"]["lr"] == 1e-4 and got["profiles"] == read_params(Path(__file__).resolve().parents[1] / "params.yaml")["profiles"]


def test_the_params_command_shows_the_values_in_force_and_where_each_came_from():
    import re
    import subprocess
    import sys

    from ruamel.yaml import YAML

    repo = Path(__file__).resolve().parents[1]
    written = YAML(typ="safe", pure=True).load((repo / "params.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "commands.params", "-S", "profile=lab", "-S", "train.epochs=3",
                          "--only", "train"], cwd=repo, capture_output=True, text=True, check=True).stdout
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[2:])}
    assert set(rows) == {f"train.{key}" for key in written["train"]}
    assert rows["train.dim"][:2] == [str(written["profiles"]["lab"]["train"]["dim"]), "profile lab"]
    assert rows["train.epochs"][:2] == ["3", "-S"]
    assert rows["train.dropout"][:2] == [str(written["train"]["dropout"]), "params.yaml"]
    assert all(len(cells) == 3 and cells[2] for cells in rows.values())  # every parameter says what it means
