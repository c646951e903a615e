import shutil
from pathlib import Path

import pytest

from pipeline import config
from pipeline.config import SCHEMA, ConfigError, parse_overrides, read_params, resolve

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

    assert set(leaves(params)) == set(SCHEMA)


def test_the_schemas_choices_are_the_models():
    from model import blend, iterative_decode, mask_schedule, transformer, vqgan

    assert config.RESAMPLES == vqgan.RESAMPLES
    assert config.SCHEDULES == mask_schedule.SCHEDULES
    assert config.CONFIDENCES == iterative_decode.CONFIDENCES
    assert config.POS_INITS == transformer.POS_INITS
    assert config.BLEND_CHOICES == blend.BLEND_CHOICES
    for name in ("cosine", "pow3", "pow2.5", "pow", "zigzag", "Cosine"):  # the model's own check decides
        try:
            mask_schedule.check_schedule(name)
            valid = True
        except ValueError:
            valid = False
        assert config.Schedule().ok(name) == valid, name


@pytest.mark.parametrize("profile", ["quick", "lab"])
def test_both_profiles_pass_the_schema(profile):
    config.check(config.load([f"profile={profile}"], Path(__file__).resolve().parents[1] / "params.yaml"))


@pytest.mark.parametrize("spec, good, bad", [
    (config.Int(), [1, 7], [0, -1, 2.5, True, None, "3"]),
    (config.Int(0, 5, null=True), [0, 5, None], [6, -1]),
    (config.Real(0, above=True), [1e-9, 3], [0, -1, float("nan"), True]),
    (config.Real(0, 1, below=True), [0, 0.5], [1, 1.5]),
    (config.OneOf(True, False, "regional"), [True, False, "regional"], [1, 0, "yes", None]),
    (config.ListOf(config.Int()), [[1], [4, 8]], [4, [], [0], "[4]"]),
    (config.Sha256(), [None, "a" * 64, "0" * 64], ["a" * 63, "g" * 64]),
])
def test_each_kind_of_spec_takes_what_it_says(spec, good, bad):
    assert all(spec.ok(v) for v in good), good
    assert not any(spec.ok(v) for v in bad), [v for v in bad if spec.ok(v)]


def test_overrides_are_written_into_params_yaml_keeping_its_comments(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", path)
    config.write_overrides(["T=12", "sweep.T=[2, 3]", "data.sha256=" + "0" * 64, "vqgan.lr=1e-4"], path)
    text = path.read_text()
    assert "# decoding iterations" in text and "T: 12" in text
    got = read_params(path)  # read back as DVC reads it
    assert got["T"] == 12 and got["sweep"]["T"] == [2, 3] and got["data"]["sha256"] == "0" * 64
    assert got["vqgan"]["lr"] == 1e-4 and got["profiles"] == read_params(Path(__file__).resolve().parents[1] / "params.yaml")["profiles"]
