"""Typed run configuration: a model config (the family's dataclass), ``DataConfig`` (``genlab.data.spec``) and
``TrainConfig``, and how they are resolved: the family's defaults, then a preset, then options, then dotted
overrides (``build_config``).

Overrides use dotted keys, ``model.latent_dim=20`` or ``train.epochs=5``; unknown keys and values of the wrong
type raise ``ConfigError`` with the valid choices. The resolved config is saved as ``config.json`` in every run.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import genlab.models  # noqa: F401  (fills MODELS: a config names its family)
from genlab.data.spec import DataConfig
from genlab.errors import ConfigError
from genlab.registry import MODELS

__all__ = ["DataConfig", "TrainConfig", "RunConfig", "build_config", "apply_overrides", "build", "parse_value",
           "split_overrides", "validate", "check_value", "resumed_config", "Range", "FIELD_RANGES"]


OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential")  # the exponential one decays by lr_gamma per epoch


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training split
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when reached first)
    # seconds of training (evaluation excluded): the run stops at the last epoch boundary that fits, and the
    # cosine schedule follows the elapsed fraction of this budget instead of the epoch count
    time_limit: float | None = None
    batch_size: int = 128
    optimizer: str = "adam"  # one of OPTIMIZERS
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)  # Adam/AdamW momentum coefficients
    schedule: str = "constant"  # constant | cosine | exponential (per epoch, gamma = lr_gamma)
    lr_gamma: float = 0.95  # decay per epoch of the exponential schedule
    grad_clip: float | None = None  # clip the global gradient norm to this value
    seed: int = 0  # seeds the weights, the data order, the noise: a run is reproducible from it
    device: str = "cpu"  # cpu | cuda | auto
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    # store conv weights and 4-D batches channels-last (NHWC) while training, so oneDNN's convolutions need no
    # layout reorders (bench/vae_conv_epoch.py measures it); dense-only models gain nothing. The same steps up to
    # float rounding; checkpoints keep the usual layout, evaluation and samples give the same numbers
    channels_last: bool = False
    eval_every: int = 1  # evaluate on the test split every N epochs (0: never)
    progress: bool = True  # show progress bars


# --- the ranges of values ---

@dataclass(frozen=True)
class Range:
    """The values a numeric field (or each element of a tuple field) may take: ``lo``/``hi`` bounds, each inclusive
    unless ``open_lo``/``open_hi``; every float must also be finite. ``choices`` lists a string field's values."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # a regular expression a string field must match in full
    hint: str = ""  # the pattern in words, for the message
    length: int | None = None  # a tuple field's number of elements

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range, or None."""
        if isinstance(value, str):
            if self.choices and value not in self.choices:
                return f"must be one of {', '.join(self.choices)}"
            if self.pattern and not re.fullmatch(self.pattern, value):
                return f"must look like {self.hint or self.pattern}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
            return f"must be {'>' if self.open_lo else '>='} {_number(self.lo)}"
        if self.hi is not None and (value > self.hi or (self.open_hi and value == self.hi)):
            return f"must be {'<' if self.open_hi else '<='} {_number(self.hi)}"
        return None


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


WIDTH = Range(1, 65536)  # layer widths, channels, latent sizes: past this a model does not fit a laptop
COUNT = Range(0, 10**9)  # counts where 0 means none (steps of warm-up, epochs)
WEIGHT = Range(0, 1e6)  # loss weights and penalties
POSITIVE = Range(0, 1e6, open_lo=True)

# One table for every config dataclass, by field name: a name means the same thing in every family; "section.name"
# entries refine it for one section. Ints not named here must be >= 0; every float must be finite.
FIELD_RANGES: dict[str, Range] = {
    # train
    "epochs": COUNT, "max_steps": Range(1, 10**12), "time_limit": Range(0, 1e9, open_lo=True),
    "batch_size": Range(1, 2**20), "lr": Range(0, open_lo=True), "weight_decay": Range(0, 10),
    "betas": Range(0, 1, open_hi=True, length=2), "lr_gamma": Range(0, 1, open_lo=True), "grad_clip": POSITIVE,
    "seed": Range(0, 2**32 - 1), "threads": Range(1, 4096), "eval_every": COUNT,
    "optimizer": Range(choices=OPTIMIZERS), "schedule": Range(choices=SCHEDULES),
    "device": Range(pattern=r"cpu|auto|mps|cuda(:\d{1,3})?", hint="cpu, cuda, cuda:N, mps or auto"),
    # data
    "image_size": Range(1, 4096), "channels": WIDTH, "data.channels": Range(1, 4), "palette": Range(0, 4096),
    "min_count": Range(1, 10**9),
    "binarize": Range(choices=("none", "static", "dynamic", "threshold")),
    # models: sizes
    "latent_dim": WIDTH, "hidden": WIDTH, "d_hidden": WIDTH, "g_hidden": WIDTH, "features": WIDTH,
    "out_hidden": WIDTH, "embed_dim": WIDTH, "gru_hidden": WIDTH, "ar_hidden": Range(0, 65536),
    "layers": Range(1, 1024), "encoder_layers": Range(0, 64), "decoder_layers": Range(0, 64),
    "kernel": Range(1, 63), "first_kernel": Range(1, 63), "mixtures": Range(1, 1024), "n_critic": Range(1, 1000),
    "iwae_k": Range(1, 100000), "prior_components": Range(1, 100000), "kl_warmup": COUNT,
    # models: weights and scales
    "beta": WEIGHT, "free_bits": Range(0, 1000), "sigma": Range(0, 1e3, open_lo=True), "gp_weight": WEIGHT,
    "qp_lambda": POSITIVE, "recon_x_weight": WEIGHT, "recon_z_weight": WEIGHT, "critic_limit": POSITIVE,
    "temperature": Range(0, 100), "word_dropout": Range(0, 1, open_hi=True),
}
DEFAULT_INT = Range(0, 2**63 - 1)  # an int field the table does not name
ANY = Range()  # any other field: floats must still be finite


def check_value(name: str, value: Any, rule: Range | str) -> Any:
    """Check one argument (``-n``, ``--hide``; not a config field) against ``rule`` or the range of the config
    field named ``rule``; raise ``ConfigError`` saying what it must be. Returns ``value``."""
    rule = FIELD_RANGES[rule] if isinstance(rule, str) else rule
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    why = rule.problem(value)
    if why:
        raise ConfigError(f"{name} {why}, got {value}")
    return value


def validate(obj: Any, section: str) -> Any:
    """Check every field of config dataclass ``obj`` against its range (``FIELD_RANGES``: the "section.name" entry,
    else the name's); raise ``ConfigError`` naming the first field out of range. Returns ``obj``."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        rule = FIELD_RANGES.get(f"{section}.{f.name}") or FIELD_RANGES.get(f.name)
        if rule and rule.length is not None and isinstance(value, tuple) and len(value) != rule.length:
            raise ConfigError(f"{section}.{f.name} needs {rule.length} values, got {len(value)}")
        for item in value if isinstance(value, tuple) else (value,):
            is_int = isinstance(item, int) and not isinstance(item, bool)
            why = None if item is None else (rule or (DEFAULT_INT if is_int else ANY)).problem(item)
            if why:
                shown = value if not isinstance(value, tuple) else ",".join(map(str, value))
                raise ConfigError(f"{section}.{f.name} {why}, got {shown}")
    return obj


# --- parsing values ---

def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse ``text`` as a value of the annotated type ``tp`` (str, int, float, bool, tuple[...], Optional)."""
    base, optional = _strip_optional(tp)
    if optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is str:
            return text
        if typing.get_origin(base) is tuple:
            (elem,) = typing.get_args(base)[:1]
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            return tuple(parse_value(p.strip(), elem, key) for p in parts)
    except ValueError:
        pass
    else:
        raise ConfigError(f"{key}: unsupported field type {tp}")
    raise ConfigError(f"{key}={text!r} is not a valid {getattr(base, '__name__', base)}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check a JSON/Python value against the annotated type, converting lists to tuples."""
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} may not be null")
    if isinstance(value, str) and base is not str:
        return parse_value(value, tp, key)
    if base is bool and isinstance(value, bool):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if typing.get_origin(base) is tuple and isinstance(value, (list, tuple)):
        (elem,) = typing.get_args(base)[:1]
        return tuple(_coerce(v, elem, key) for v in value)
    raise ConfigError(f"{key}={value!r} has the wrong type; expected {getattr(base, '__name__', base)}")


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, section: str, known: typing.Iterable[str]) -> ConfigError:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {section}.{close[0]}?)" if close else ""
    return ConfigError(f"unknown option {section}.{key}{hint}; valid: {', '.join(known)}")


def build(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build dataclass ``cls`` from a dict, checking keys and types."""
    fields = _fields(cls)
    if not isinstance(values, dict):
        raise ConfigError(f"the {section} section is a {type(values).__name__}, not an object of options")
    for key in values:
        if key not in fields:
            raise _unknown(key, section, fields)
    return validate(cls(**{k: _coerce(v, fields[k], f"{section}.{k}") for k, v in values.items()}), section)


def apply_overrides(obj: Any, overrides: dict[str, str], section: str) -> Any:
    """Return a copy of dataclass ``obj`` with string overrides parsed to each field's type."""
    fields = _fields(type(obj))
    changes = {}
    for key, text in overrides.items():
        if key not in fields:
            raise _unknown(key, section, fields)
        changes[key] = parse_value(text, fields[key], f"{section}.{key}") if isinstance(text, str) else _coerce(
            text, fields[key], f"{section}.{key}")
    return validate(dataclasses.replace(obj, **changes), section)


# --- the run config ---

@dataclass
class RunConfig:
    model: str  # registered family name
    model_config: Any  # the family's Config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_config": dataclasses.asdict(self.model_config),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"config is a {type(d).__name__}, not an object; it was not written by genlab")
        if not isinstance(d.get("model", ""), str):
            raise ConfigError(f"config names the model family {d['model']!r}, not a name; it was not written by genlab")
        for key in ("model", "model_config", "data", "train"):
            if key not in d:
                raise ConfigError(f"config is missing {key!r}; it was not written by genlab")
        family = MODELS.get(d["model"])
        return cls(
            model=d["model"],
            model_config=build(family.Config, d["model_config"], "model"),
            data=build(DataConfig, d["data"], "data"),
            train=build(TrainConfig, d["train"], "train"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def split_overrides(pairs: typing.Iterable[str]) -> dict[str, dict[str, str]]:
    """``["train.epochs=5", "model.latent_dim=2"]`` -> ``{"train": {"epochs": "5"}, "model": {...}}``."""
    out: dict[str, dict[str, str]] = {"model": {}, "data": {}, "train": {}}
    for pair in pairs:
        text = pair[2:] if pair.startswith("--") else pair
        if "=" not in text:
            raise ConfigError(f"override {pair!r} must look like section.key=value, e.g. train.epochs=5")
        key, value = text.split("=", 1)
        section, _, name = key.partition(".")
        if section not in out or not name:
            raise ConfigError(f"override {pair!r}: the key must start with model., data. or train.")
        out[section][name.replace("-", "_")] = value
    return out


# --- resolving a run's config ---

def _field_names(obj: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


def build_config(model: str = "vae", data: str | None = None, *, preset: str | None = None,
                 overrides: Iterable[str] = (), **options: Any) -> RunConfig:
    """Resolve a run config: the family's defaults (and its ``train_defaults``), then a preset, then ``options``
    (field names of the model, data or train config, e.g. ``epochs=5, latent_dim=2``), then dotted ``overrides``
    ("train.lr=3e-4").
    ``data`` None means the preset's dataset, or mnist-5k."""
    family = MODELS.get(model)
    routed: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
    routed["train"].update(family.train_defaults)  # e.g. the GANs' Adam(beta1=0.5)
    if preset is not None:
        presets = family.presets
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r} for {model}; choose one of {', '.join(presets) or 'none'}")
        for key, value in presets[preset].items():  # "train.epochs"/"data.binarize" keys; plain keys are model's
            section, _, name = key.rpartition(".")
            routed[section or "model"][name] = value
    if data is None:
        data = routed["data"].pop("name", "mnist-5k")
    else:
        routed["data"].pop("name", None)
    sections = {"model": family.Config(), "data": DataConfig(name=data), "train": TrainConfig()}
    sections = {s: apply_overrides(obj, routed[s], s) for s, obj in sections.items()}
    sections = _apply_options(sections, model, overrides, options)
    return RunConfig(model=model, model_config=sections["model"], data=sections["data"], train=sections["train"])


def _apply_options(sections: dict[str, Any], model: str, overrides: Iterable[str],
                   options: dict[str, Any]) -> dict[str, Any]:
    """Route ``options`` (plain field names) to the section that has the field, then apply them and the dotted
    ``overrides`` to the three sections."""
    routed: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
    for key, value in options.items():
        owners = [s for s, obj in sections.items() if key in _field_names(obj)]
        if not owners:
            raise ConfigError(f"unknown option {key!r}; see `genlab train {model} --help` for the options")
        if len(owners) > 1:
            raise ConfigError(f"option {key!r} is ambiguous; write it as {owners[0]}.{key}=...")
        routed[owners[0]][key] = value
    for section, values in split_overrides(overrides).items():
        routed[section].update(values)
    return {section: apply_overrides(sections[section], routed[section], section) for section in sections}


def resumed_config(saved: RunConfig, model: str | None = None, data: str | None = None, *,
                   preset: str | None = None, overrides: Iterable[str] = (), **options: Any) -> RunConfig:
    """The config a resumed run continues with: ``saved``, with train options changed as asked. The model and
    data options may be repeated (the same command with ``--resume`` added) but not changed."""
    if model is not None and model != saved.model:
        raise ConfigError(f"this run trains {saved.model}, not {model}; resume it as `genlab train {saved.model} ...`")
    if data is not None and data != saved.data.name:
        raise ConfigError(f"this run trains on {saved.data.name}, not {data}; a resumed run keeps its data")
    if preset is not None:
        raise ConfigError("a preset sets up a new run; leave --preset out when resuming")
    asked = _apply_options({"model": saved.model_config, "data": saved.data, "train": saved.train}, saved.model,
                           overrides, options)
    for section, before in (("model", saved.model_config), ("data", saved.data)):
        for f in dataclasses.fields(before):
            old, new = getattr(before, f.name), getattr(asked[section], f.name)
            if old != new:
                raise ConfigError(f"a resumed run keeps its model and data: {section}.{f.name} is {old!r} in this "
                                  f"run, not {new!r}; only train.* options may change")
    return RunConfig(model=saved.model, model_config=saved.model_config, data=saved.data, train=asked["train"])
