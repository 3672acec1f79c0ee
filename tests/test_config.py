"""Run configuration (genlab.config and genlab.api.build_config): value parsing, dotted overrides, presets,
errors that name the valid choices, and the JSON round trip of ``config.json``."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Optional

import pytest

from genlab.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    build,
    build_config,
    parse_value,
    split_overrides,
)
from genlab.errors import ConfigError, GenlabError
from genlab.registry import MODELS

TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
VAE_KEYS = [f.name for f in dataclasses.fields(MODELS.get("vae").Config)]


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, f"not one line: {text!r}"
    return text


# --- parse_value ---

@pytest.mark.parametrize("text,tp,expected", [
    ("5", int, 5),
    ("-3", int, -3),
    (" 7 ", int, 7),
    ("0.5", float, 0.5),
    ("3e-4", float, 3e-4),
    ("2", float, 2.0),
    ("-1.5E2", float, -150.0),
    ("hello", str, "hello"),
    ("folder:/a=b", str, "folder:/a=b"),
    ("true", bool, True), ("True", bool, True), ("yes", bool, True), ("1", bool, True), ("on", bool, True),
    ("false", bool, False), ("FALSE", bool, False), ("no", bool, False), ("0", bool, False), ("off", bool, False),
    ("400", tuple[int, ...], (400,)),
    ("400,200", tuple[int, ...], (400, 200)),
    ("(32, 64)", tuple[int, ...], (32, 64)),
    ("32, 64,", tuple[int, ...], (32, 64)),
    ("0.9,0.99", tuple[float, ...], (0.9, 0.99)),
    ("1,0", tuple[float, ...], (1.0, 0.0)),
    ("none", Optional[int], None), ("None", int | None, None), ("null", float | None, None), ("", int | None, None),
    ("12", int | None, 12),
    ("0.25", Optional[float], 0.25),
])
def test_parse_value(text: str, tp: Any, expected: Any) -> None:
    value = parse_value(text, tp, "section.key")
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, tuple):
        assert [type(v) for v in value] == [type(v) for v in expected]


def test_parse_value_special_floats() -> None:
    assert math.isinf(parse_value("inf", float, "k"))
    assert math.isnan(parse_value("nan", float, "k"))


@pytest.mark.parametrize("text,tp", [
    ("five", int), ("1.5", int), ("1e3", int), ("", int), ("true", int),
    ("abc", float), ("", float), ("1,5", float),
    ("maybe", bool), ("2", bool), ("", bool),
    ("none", int), ("null", float),
    ("32,x", tuple[int, ...]), ("0.9,zz", tuple[float, ...]), ("1.5,2", tuple[int, ...]),
    ("seven", int | None),
])
def test_parse_value_rejects_with_the_key(text: str, tp: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_value(text, tp, "train.some_key")
    assert "train.some_key" in _one_line(info.value)
    assert isinstance(info.value, GenlabError)


def test_parse_value_unsupported_type() -> None:
    with pytest.raises(ConfigError, match="unsupported field type"):
        parse_value("1", list, "model.things")


# --- split_overrides ---

def test_split_overrides_routes_sections_and_normalizes_keys() -> None:
    out = split_overrides(["--model.latent-dim=2", "train.epochs=5", "--data.name=folder:/x=y",
                           "train.lr=1e-3", "model.hidden=64,32", "train.epochs=7"])
    assert out == {"model": {"latent_dim": "2", "hidden": "64,32"},
                   "data": {"name": "folder:/x=y"},  # only the first '=' splits
                   "train": {"epochs": "7", "lr": "1e-3"}}  # the last of repeated keys wins
    assert split_overrides([]) == {"model": {}, "data": {}, "train": {}}


@pytest.mark.parametrize("pair,expected", [
    ("train.epochs", "must look like section.key=value"),
    ("--epochs=5", "must start with model., data. or train."),
    ("optim.lr=1", "must start with model., data. or train."),
    ("model.=3", "must start with model., data. or train."),
])
def test_split_overrides_rejects_malformed_pairs(pair: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        split_overrides([pair])
    msg = _one_line(info.value)
    assert expected in msg and repr(pair) in msg


# --- apply_overrides and build ---

def test_apply_overrides_parses_each_field_to_its_type() -> None:
    base = TrainConfig()
    cfg = apply_overrides(base, {"epochs": "5", "lr": "3e-4", "betas": "0.5,0.9", "grad_clip": "1",
                                 "max_steps": "none", "tensorboard": "false", "optimizer": "adamw"}, "train")
    assert (cfg.epochs, cfg.lr, cfg.betas, cfg.grad_clip, cfg.max_steps, cfg.tensorboard, cfg.optimizer) == \
        (5, 3e-4, (0.5, 0.9), 1.0, None, False, "adamw")
    assert type(cfg.lr) is float and type(cfg.grad_clip) is float
    assert base == TrainConfig(), "apply_overrides must return a copy"
    assert apply_overrides(base, {}, "train") == base


def test_apply_overrides_accepts_python_values() -> None:
    cfg = apply_overrides(TrainConfig(), {"epochs": 3, "lr": 1, "betas": [0.8, 0.9], "grad_clip": None}, "train")
    assert (cfg.epochs, cfg.lr, cfg.betas, cfg.grad_clip) == (3, 1.0, (0.8, 0.9), None)
    assert type(cfg.lr) is float and isinstance(cfg.betas, tuple)


def test_model_overrides_through_split_and_apply() -> None:
    vae_config = MODELS.get("vae").Config
    changes = split_overrides(["--model.latent-dim=2", "--model.hidden=(64, 32)", "--model.learn_sigma=yes",
                               "--model.beta=4"])["model"]
    cfg = apply_overrides(vae_config(), changes, "model")
    assert cfg == dataclasses.replace(vae_config(), latent_dim=2, hidden=(64, 32), learn_sigma=True, beta=4.0)


@pytest.mark.parametrize("section,obj,key,close", [
    ("train", TrainConfig(), "epoch", "epochs"),
    ("train", TrainConfig(), "learning_rate", None),
    ("data", DataConfig(), "nmae", "name"),
    ("model", MODELS.get("vae").Config(), "latent", "latent_dim"),
])
def test_unknown_keys_name_the_valid_ones(section: str, obj: Any, key: str, close: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(obj, {key: "1"}, section)
    msg = _one_line(info.value)
    assert f"{section}.{key}" in msg
    for valid in (f.name for f in dataclasses.fields(obj)):
        assert valid in msg.split("valid:")[1], f"{valid} missing from {msg!r}"
    if close is not None:
        assert f"did you mean {section}.{close}?" in msg
    with pytest.raises(ConfigError) as info2:
        build(type(obj), {key: 1}, section)
    assert str(info2.value) == msg


@pytest.mark.parametrize("key,value", [
    ("epochs", "ten"), ("epochs", "2.5"), ("lr", "fast"), ("tensorboard", "maybe"), ("betas", "0.9,x"),
])
def test_wrong_type_from_text(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(TrainConfig(), {key: value}, "train")
    assert f"train.{key}" in _one_line(info.value) and "not a valid" in str(info.value)


@pytest.mark.parametrize("key,value,expected", [
    ("epochs", 2.5, "expected int"), ("epochs", True, "expected int"), ("lr", True, "expected float"),
    ("lr", [1], "expected float"), ("tensorboard", 1, "expected bool"), ("optimizer", 3, "expected str"),
    ("betas", 0.9, "expected tuple"), ("epochs", None, "may not be null"),
])
def test_wrong_type_from_values(key: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(TrainConfig, {key: value}, "train")
    msg = _one_line(info.value)
    assert f"train.{key}" in msg and expected in msg


def test_build_coerces_json_values() -> None:
    cfg = build(TrainConfig, {"epochs": 4, "lr": 1, "betas": [0, 0.5], "max_steps": None, "grad_clip": "0.5"},
                "train")
    assert cfg == dataclasses.replace(TrainConfig(), epochs=4, lr=1.0, betas=(0.0, 0.5), grad_clip=0.5)
    assert type(cfg.lr) is float and all(type(b) is float for b in cfg.betas)
    assert build(DataConfig, {}, "data") == DataConfig()


# --- build_config: options, overrides, presets ---

def test_build_config_routes_options_to_their_section() -> None:
    cfg = build_config("vae", "digits", epochs=3, latent_dim=2, binarize="static", lr="0.01", hidden=(16,))
    assert cfg.model == "vae" and cfg.data.name == "digits"
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.data.binarize == "static"
    assert cfg.model_config.latent_dim == 2 and cfg.model_config.hidden == (16,)
    default = build_config("vae", "digits")
    assert default.train == TrainConfig() and default.model_config == MODELS.get("vae").Config()


def test_build_config_dotted_overrides_win_over_options() -> None:
    cfg = build_config("vae", "digits", epochs=3, latent_dim=2,
                       overrides=["--train.epochs=9", "model.latent_dim=4", "--data.binarize=dynamic"])
    assert (cfg.train.epochs, cfg.model_config.latent_dim, cfg.data.binarize) == (9, 4, "dynamic")


def test_build_config_errors() -> None:
    with pytest.raises(ConfigError) as info:  # a field of both the model and the data config
        build_config("vae", "digits", channels=3)
    assert "ambiguous" in _one_line(info.value) and "channels" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_config("vae", "digits", latnt_dim=2)
    assert "latnt_dim" in _one_line(info.value)
    with pytest.raises(ConfigError) as info:
        build_config("vae", "digits", overrides=["model.latnt_dim=2"])
    assert "did you mean model.latent_dim?" in _one_line(info.value)
    with pytest.raises(ConfigError) as info:
        build_config("vae", "digits", epochs="many")
    assert "train.epochs" in _one_line(info.value)
    with pytest.raises(ConfigError) as info:
        build_config("vea", "digits")
    assert "did you mean 'vae'?" in _one_line(info.value) and "cvae" in str(info.value)


def _presets() -> list[Any]:
    return [pytest.param(family, name, id=f"{family}-{name}")
            for family in MODELS.names() for name in getattr(MODELS.get(family), "presets", {})]


@pytest.mark.parametrize("family,preset", _presets())
def test_presets_apply(family: str, preset: str) -> None:
    values = MODELS.get(family).presets[preset]
    cfg = build_config(family, "digits", preset=preset)  # an explicit dataset wins over the preset's
    train_defaults = apply_overrides(TrainConfig(), getattr(MODELS.get(family), "train_defaults", {}), "train")
    defaults = {"model": MODELS.get(family).Config(), "data": DataConfig(name="digits"), "train": train_defaults}
    got_sections = {"model": cfg.model_config, "data": cfg.data, "train": cfg.train}
    for dotted, value in values.items():
        section, _, key = dotted.rpartition(".")
        section = section or "model"
        if (section, key) == ("data", "name"):
            assert cfg.data.name == "digits"
            assert build_config(family, preset=preset).data.name == value  # without one, the preset's
            continue
        got = getattr(got_sections[section], key)
        assert got == (tuple(value) if isinstance(value, list) else value), dotted
        default_value = getattr(defaults[section], key)
        if default_value is not None:  # an Optional field's None says nothing about its type
            assert type(got) is type(default_value), f"preset {preset} sets {dotted} to the wrong type"
    for section, default in defaults.items():
        set_here = {d.rpartition(".")[2] for d in values if (d.rpartition(".")[0] or "model") == section}
        untouched = {f.name for f in dataclasses.fields(default)} - set_here - {"name"}
        assert all(getattr(got_sections[section], k) == getattr(default, k) for k in untouched), section


def test_preset_then_options_then_overrides() -> None:
    cfg = build_config("vae", "digits", preset="conv-small", latent_dim=5, overrides=["model.hidden=128"])
    assert (cfg.model_config.arch, cfg.model_config.channels) == ("conv", (32, 64))  # from the preset
    assert cfg.model_config.latent_dim == 5 and cfg.model_config.hidden == (128,)


def test_time_to_quality_presets_set_data_and_training_and_yield_to_the_user() -> None:
    cfg = build_config("vae", preset="mnist-10min")
    assert (cfg.data.name, cfg.data.binarize) == ("mnist", "dynamic")
    assert (cfg.train.time_limit, cfg.train.schedule, cfg.model_config.ar_hidden) == (600.0, "cosine", 500)
    cfg = build_config("vae", "fashion-mnist", preset="mnist-1h", batch_size=64,
                       overrides=["train.time_limit=30", "data.binarize=static"])
    assert (cfg.data.name, cfg.data.binarize) == ("fashion-mnist", "static")
    assert (cfg.train.time_limit, cfg.train.batch_size, cfg.model_config.hidden) == (30.0, 64, (512, 512))
    assert (cfg.train.optimizer, cfg.train.weight_decay, cfg.model_config.ar_hidden) == ("adamw", 0.05, 6000)
    assert cfg.train.precision == "auto"  # bf16 where the CPU computes it natively: more epochs in the hour
    assert build_config("vae", preset="mnist-1h", precision="fp32").train.precision == "fp32"


def test_unknown_preset_names_the_presets() -> None:
    with pytest.raises(ConfigError) as info:
        build_config("vae", "digits", preset="huge")
    msg = _one_line(info.value)
    assert "'huge'" in msg and all(name in msg for name in MODELS.get("vae").presets)


# --- RunConfig <-> JSON ---

def _round_trip_cases() -> list[Any]:
    cases = [pytest.param(f, None, {}, id=f"{f}-default") for f in MODELS.names()]
    cases += [pytest.param(f, p, {}, id=f"{f}-{p}") for f, p in
              [(param.values[0], param.values[1]) for param in _presets()]]
    cases.append(pytest.param("vae", None, {"epochs": 3, "lr": 2e-4, "betas": (0.5, 0.9), "grad_clip": 1.0,
                                            "max_steps": 40, "binarize": "dynamic", "data_dir": "/tmp/d",
                                            "hidden": (64, 32), "learn_sigma": True, "threads": 2},
                              id="vae-changed"))
    return cases


@pytest.mark.parametrize("family,preset,options", _round_trip_cases())
def test_run_config_round_trips_through_json(family: str, preset: str | None, options: dict[str, Any]) -> None:
    cfg = build_config(family, "digits", preset=preset, **options)
    text = cfg.to_json()
    back = RunConfig.from_dict(json.loads(text))
    assert back == cfg
    assert back.to_json() == text
    assert isinstance(back.train.betas, tuple)
    # tuple fields (hidden widths, channels, text forms...) come back as tuples, not JSON lists, in every family
    for section in (back.model_config, back.data):
        assert not any(isinstance(getattr(section, f.name), list) for f in dataclasses.fields(section))
    assert type(back.model_config) is MODELS.get(family).Config


def test_from_dict_fills_defaults_and_checks_keys() -> None:
    d = build_config("vae", "digits").to_dict()
    partial = {**d, "data": {"name": "digits"}, "train": {"epochs": 2}}
    cfg = RunConfig.from_dict(partial)
    assert cfg.data == DataConfig(name="digits") and cfg.train == TrainConfig(epochs=2)

    for missing in ("model", "model_config", "data", "train"):
        broken = {k: v for k, v in d.items() if k != missing}
        with pytest.raises(ConfigError) as info:
            RunConfig.from_dict(broken)
        assert repr(missing) in _one_line(info.value)

    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({**d, "train": {**d["train"], "epoch": 3}})
    msg = _one_line(info.value)
    assert "train.epoch" in msg and all(k in msg for k in TRAIN_KEYS)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({**d, "model_config": {**d["model_config"], "latent_dim": "two"}})
    assert "model.latent_dim" in _one_line(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({**d, "model_config": {**d["model_config"], "z_dim": 2}})
    assert all(k in _one_line(info.value) for k in VAE_KEYS)


# --- ranges: every field checked where the config is built ---

OUT_OF_RANGE = [  # (dotted key, value, what the message says)
    ("train.lr", "-1", "train.lr must be > 0"), ("train.lr", "nan", "train.lr must be a finite number"),
    ("train.lr", "0", "train.lr must be > 0"), ("train.weight_decay", "-0.1", "weight_decay must be >= 0"),
    ("train.betas", "0.9,1.0", "betas must be < 1"), ("train.betas", "-0.1,0.9", "betas must be >= 0"),
    ("train.betas", "0.9", "betas needs 2 values"), ("train.grad_clip", "-1", "grad_clip must be > 0"),
    ("train.grad_clip", "0", "grad_clip must be > 0"), ("train.lr_gamma", "-0.5", "lr_gamma must be > 0"),
    ("train.lr_gamma", "1.5", "lr_gamma must be <= 1"), ("train.threads", "-1", "threads must be >= 1"),
    ("train.seed", "-1", "seed must be >= 0"), ("train.seed", str(2**32), "seed must be <= 4294967295"),
    ("train.device", "gpu", "device must look like cpu, cuda"), ("train.device", "cuda:x", "device must look"),
    ("train.batch_size", "0", "batch_size must be >= 1"), ("train.epochs", "-1", "epochs must be >= 0"),
    ("train.max_steps", "-3", "max_steps must be >= 1"), ("train.max_steps", "0", "max_steps must be >= 1"),
    ("train.time_limit", "-5", "time_limit must be > 0"), ("train.eval_every", "-1", "eval_every must be >= 0"),
    ("train.optimizer", "sgd", "optimizer must be one of adam, adamw, rmsprop"),
    ("train.schedule", "step", "schedule must be one of constant, cosine, exponential"),
    ("data.image_size", "0", "image_size must be >= 1"), ("data.channels", "0", "data.channels must be >= 1"),
    ("data.palette", "-2", "palette must be >= 0"), ("data.binarize", "half", "binarize must be one of"),
    ("model.hidden", "0", "model.hidden must be >= 1"), ("model.hidden", "1000000,1000000", "must be <= 65536"),
    ("model.latent_dim", "0", "latent_dim must be >= 1"), ("model.beta", "-1", "beta must be >= 0"),
    ("model.free_bits", "-0.5", "free_bits must be >= 0"), ("model.iwae_k", "0", "iwae_k must be >= 1"),
    ("model.sigma", "0", "sigma must be > 0"), ("model.kl_warmup", "-10", "kl_warmup must be >= 0"),
    ("model.sigma", "inf", "sigma must be a finite number"),
]


OTHER_FAMILIES = [  # (family, dotted key, value, what the message says): every family has its fields checked
    ("gan", "model.n_critic", "0", "n_critic must be >= 1"), ("gan", "model.g_hidden", "32,0", "g_hidden must"),
    ("wgan-gp", "model.gp_weight", "-10", "gp_weight must be >= 0"),
    ("gan-qp", "model.qp_lambda", "0", "qp_lambda must be > 0"),
    ("pixelcnn", "model.layers", "0", "layers must be >= 1"), ("pixelcnn", "model.mixtures", "0", "mixtures must"),
    ("pixelcnn", "model.dropout", "1", "dropout must be < 1"),
    ("text-vae", "model.word_dropout", "1.5", "word_dropout must be < 1"),
    ("text-vae", "data.min_count", "0", "min_count must be >= 1"),
]


@pytest.mark.parametrize("family,key,value,expected", [("vae", *case) for case in OUT_OF_RANGE] + OTHER_FAMILIES)
def test_out_of_range_values_are_refused_with_the_field_name(family: str, key: str, value: str,
                                                             expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(family, overrides=[f"{key}={value}"])
    assert expected in _one_line(info.value) and "got" in str(info.value)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_defaults_and_presets_are_in_range(family: str) -> None:
    for preset in (None, *MODELS.get(family).presets):
        build_config(family, preset=preset)  # raises when a default or a preset is out of range


def test_a_hand_edited_config_json_is_checked_like_flags() -> None:
    d = build_config("vae").to_dict()
    d["train"]["grad_clip"] = -1.0
    with pytest.raises(ConfigError, match="train.grad_clip must be > 0"):
        RunConfig.from_dict(d)
    d = build_config("vae").to_dict()
    d["model_config"]["hidden"] = [1000000, 1000000]
    with pytest.raises(ConfigError, match="model.hidden must be <= 65536"):
        RunConfig.from_dict(d)


@pytest.mark.parametrize("saved", [
    "not an object", ["vae"], {"model": ["vae"], "model_config": {}, "data": {}, "train": {}},
    {"model": "vae", "model_config": "hidden=16", "data": {}, "train": {}},
    {"model": "vae", "model_config": {}, "data": [], "train": {}},
])
def test_a_saved_config_that_is_not_objects_is_a_config_error(saved: object) -> None:
    """config.json as a hostile file may hold any JSON (found by tests/test_fuzz.py: an AttributeError)."""
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(saved)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
