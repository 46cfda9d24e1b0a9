"""Config loading: YAML + overrides, every bad value named by field."""

from __future__ import annotations

import pytest

from aevision.config import (
    apply_override,
    build_config,
    load_yaml,
    parse_regularizer,
    parse_value,
    upgraded_config,
)
from aevision.errors import AevisionError, ConfigError


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "seed: 3\nmodel:\n  name: conv\n  channels: [8, 16]\n"
        "regularizers:\n  - {name: l1, weight: 0.01}\ntrain:\n  epochs: 4\n"
    )
    cfg = build_config(path, ["train.epochs=7", "model.code_dim=12", "regularizers.0.weight=0.5"])
    assert cfg.seed == 3 and cfg.train.epochs == 7
    assert cfg.model.options == {"channels": [8, 16], "code_dim": 12}
    assert cfg.regularizers[0].weight == 0.5
    round_trip = build_config(base=cfg.to_dict())
    assert round_trip == cfg


@pytest.mark.parametrize("override,field", [
    ("train.epochs=zero", "train.epochs"),
    ("train.epochs=0", "train.epochs"),
    ("train.lr=-1", "train.lr"),
    ("train.precision=8-bit", "train.precision"),
    ("train.epochz=3", "train.epochz"),
    ("trian.epochs=3", "trian"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("data.image_size=[3]", "data.image_size"),
    ("train.deterministic=maybe", "train.deterministic"),
    ("seed=-1", "seed"),
])
def test_bad_values_name_field_value_and_allowed(override, field):
    with pytest.raises(ConfigError) as e:
        build_config(overrides=[override])
    assert e.value.field == field
    assert str(e.value).startswith(f"{field}: got ")
    assert "expected" in str(e.value)


def test_builder_options_may_be_nested_under_options_or_flat_but_not_both():
    flat = build_config(overrides=["model.name=conv", "model.channels=[8,16]", "data.n_train=64"])
    nested = build_config(base={"model": {"name": "conv", "options": {"channels": [8, 16]}}},
                          overrides=["data.options.n_train=64"])
    assert nested == flat and nested.model.options == {"channels": [8, 16]}
    assert nested.data.options == {"n_train": 64}
    with pytest.raises(ConfigError, match=r"^model\.channels: got \[4\], expected one value"):
        build_config(base={"model": {"name": "conv", "channels": [8], "options": {"channels": [4]}}})


def test_a_stored_config_from_before_a_new_field_is_still_the_same_run(tmp_path):
    """The run lifecycle reads a stored key's config as this version writes it (upgraded_config):
    a new field whose default keeps the old behaviour does not make a finished run look different."""
    from aevision.engine.run import Run, run_key

    wanted = build_config(overrides=["model.name=conv", "train.epochs=3"]).to_dict()
    older = {**wanted, "train": {k: v for k, v in wanted["train"].items() if k != "skip_nonfinite"}}
    changed = {**wanted, "train": {**wanted["train"], "epochs": 4}}
    flipped = {**older, "train": {**older["train"], "skip_nonfinite": True}}

    def same(stored):
        Run(tmp_path, run_key(stored, data="d")).start(overwrite=True)
        return Run(tmp_path, run_key(wanted, data="d"), upgrade=upgraded_config).same_key(
            Run(tmp_path, {}).record())

    assert older != wanted and same(older)  # the new field takes its default
    assert not same(changed) and not same(flipped) and not same({"train": {"epochs": 0}})


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        build_config(overrides=["train.epochs=true"])


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(AevisionError, match=r"bad.yaml: not valid YAML at line"):
        build_config(bad)
    with pytest.raises(AevisionError, match="config file not found"):
        build_config(tmp_path / "nope.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(AevisionError, match="mapping"):
        build_config(top)


def test_override_syntax_errors():
    with pytest.raises(AevisionError, match="expected KEY=VALUE"):
        apply_override({}, "train.epochs")
    with pytest.raises(AevisionError, match="index 3 out of range"):
        apply_override({"regularizers": [{}]}, "regularizers.3.weight=1")


def test_exponent_floats_are_numbers_not_strings(tmp_path):
    # YAML 1.1 (PyYAML's default) reads 1e-3 as the string '1e-3'
    assert parse_value("1e-3") == 0.001 and parse_value("-2.5E4") == -25000.0 and parse_value("1.") == 1.0
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("e5") == "e5" and parse_value("1e") == "1e" and parse_value("v1e-3") == "v1e-3"
    path = tmp_path / "cfg.yaml"
    path.write_text("train: {lr: 1e-3}\nregularizers:\n  - {name: kl, weight: 5e-2, rho: 5e-2}\n")
    assert load_yaml(path) == {"train": {"lr": 0.001},
                               "regularizers": [{"name": "kl", "weight": 0.05, "rho": 0.05}]}
    assert parse_regularizer("kl:rho=5e-2") == {"name": "kl", "rho": 0.05}


def test_strict_override_needs_the_path_and_an_allowed_new_key():
    data = {"train": {"epochs": 3}, "regularizers": [{"name": "l1"}]}
    only_regularizer_options = {"new_key": lambda section, key: section[:1] == ["regularizers"]}
    apply_override(data, "train.epochs=5", **only_regularizer_options)
    apply_override(data, "regularizers.0.weight=1e-4", **only_regularizer_options)
    assert data == {"train": {"epochs": 5}, "regularizers": [{"name": "l1", "weight": 1e-4}]}
    for typo, problem in (("train.epoch=5", "no such key"), ("trian.epochs=5", "no such section"),
                          ("train.epochs.x=1", "not a section"), ("regularizers.1.weight=1", "out of range")):
        with pytest.raises(AevisionError, match=problem):
            apply_override(data, typo, **only_regularizer_options)
    assert data == {"train": {"epochs": 5}, "regularizers": [{"name": "l1", "weight": 1e-4}]}
    apply_override(data, "trian.epochs=5")  # the default mode creates what is missing
    assert data["trian"] == {"epochs": 5}


def test_reg_flag_parsing():
    assert parse_regularizer("denoising:noise=masking,p=0.4") == {
        "name": "denoising", "noise": "masking", "p": 0.4}
    assert parse_regularizer("l1") == {"name": "l1"}
    with pytest.raises(AevisionError):
        parse_regularizer(":weight=1")


def test_config_error_survives_pickling_for_worker_processes():
    import pickle

    err = pickle.loads(pickle.dumps(ConfigError("data.n_train", -1, "an integer >= 1")))
    assert isinstance(err, ConfigError) and str(err) == "data.n_train: got -1, expected an integer >= 1"
    assert (err.field, err.value, err.expected) == ("data.n_train", -1, "an integer >= 1")
