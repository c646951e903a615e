from pathlib import Path

import pytest

from stages.config import ConfigError, parse_overrides, read_params, resolve

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
