"""Typed run configuration: a model config (the family's dataclass), ``DataConfig`` (``genlab.data.spec``) and
``TrainConfig``, and how they are resolved: the family's defaults, then a preset, then options, then dotted
overrides (``build_config``).

Overrides use dotted keys, ``model.latent_dim=20`` or ``train.epochs=5``; unknown keys and values of the wrong
type raise ``ConfigError`` with the valid choices. The resolved config is saved as ``config.json`` in every run,
and as ``config.toml`` (``config_toml``), which ``read_config_file`` reads back: ``genlab train --config``.

``describe_options`` and ``options_help`` list every field with its type, value, range (``FIELD_RANGES``) and the
comment written beside it in the dataclass's source: ``genlab train FAMILY --help`` and ``genlab config FAMILY``.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import io
import json
import math
import re
import shlex
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import genlab.models  # noqa: F401  (fills MODELS: a config names its family)
from genlab.data.spec import DataConfig
from genlab.errors import ConfigError, GenlabError
from genlab.models.dim import PRIOR_DISTS
from genlab.nn.mutual_info import ESTIMATORS
from genlab.registry import MODELS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package (where installed)
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

__all__ = ["DataConfig", "TrainConfig", "RunConfig", "build_config", "apply_overrides", "build", "parse_value",
           "split_overrides", "validate", "check_value", "resumed_config", "Range", "FIELD_RANGES",
           # describing the options, and config files
           "field_comments", "OptionDoc", "describe_options", "options_help", "preset_lines", "first_run_note",
           "family_summary", "cli_value", "range_text", "config_toml", "read_config_file", "ConfigFile",
           "MAX_CONFIG_BYTES", "resolve_config"]


OPTIMIZERS = ("adam", "adamw", "rmsprop")
PRECISIONS = ("fp32", "bf16", "auto")
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
    # the precision of the training step's products: fp32, or bf16 (torch.autocast; weights, gradients and the
    # optimizer's state stay fp32, and evaluation stays fp32); auto picks bf16 for the families measured to gain
    # from it (bench/precision.py: vae, and cvae with the same networks; gan) where the device computes it
    # natively (a GPU that supports it, a CPU with AVX512-BF16 or AMX), else fp32
    precision: str = "fp32"
    eval_every: int = 1  # evaluate on the test split every N epochs (0: never)
    # also write the mean of the training terms over every N optimizer steps to steps.jsonl (0: per epoch only),
    # so that short runs have curves with a shape; 10 steps cost nothing measurable beside a step
    log_every: int = 10
    # write TensorBoard event files into RUN/tensorboard/ (needs `pip install genlab[tensorboard]`)
    tensorboard: bool = False


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
    "seed": Range(0, 2**32 - 1), "threads": Range(1, 4096), "eval_every": COUNT, "log_every": COUNT,
    "optimizer": Range(choices=OPTIMIZERS), "schedule": Range(choices=SCHEDULES),
    "precision": Range(choices=PRECISIONS),
    "device": Range(pattern=r"cpu|auto|mps|cuda(:\d{1,3})?", hint="cpu, cuda, cuda:N, mps or auto"),
    # data
    "image_size": Range(1, 4096), "channels": WIDTH, "data.channels": Range(1, 4), "palette": Range(0, 4096),
    "center_crop": Range(0, 4096),
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
    "dropout": Range(0, 1, open_hi=True),
    # models: Deep InfoMax (dim); its "prior" (kl | adversarial | none) shares the name with cvae's and is checked
    # by the family
    "estimator": Range(choices=ESTIMATORS), "global_weight": WEIGHT, "local_weight": WEIGHT,
    "kl_weight": WEIGHT, "adversarial_weight": WEIGHT, "prior_dist": Range(choices=PRIOR_DISTS),
    "critic_dim": WIDTH, "prior_hidden": WIDTH,
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
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits (JSON and TOML allow them)
            raise ConfigError(f"{key} is a number too large for a float") from None
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
        train = d["train"]
        if isinstance(train, dict) and "progress" in train:  # saved before progress became a runtime argument
            train = {k: v for k, v in train.items() if k != "progress"}
        return cls(
            model=d["model"],
            model_config=build(family.Config, d["model_config"], "model"),
            data=build(DataConfig, d["data"], "data"),
            train=build(TrainConfig, train, "train"),
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
                 overrides: Iterable[str] = (), sections: dict[str, dict[str, Any]] | None = None,
                 **options: Any) -> RunConfig:
    """Resolve a run config: the family's defaults (and its ``train_defaults``), then a preset, then ``sections``
    (typed values by section, {"model": {...}, "data": {...}, "train": {...}}: a config file's), then ``options``
    (field names of the model, data or train config, e.g. ``epochs=5, latent_dim=2``), then dotted ``overrides``
    ("train.lr=3e-4").
    ``data`` None means the dataset of ``sections``, else the preset's, else mnist-5k."""
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
    for section, values in _typed_sections(sections).items():
        routed[section].update(values)
    if data is None:
        data = routed["data"].pop("name", "mnist-5k")
    else:
        routed["data"].pop("name", None)
    sections = {"model": family.Config(), "data": DataConfig(name=data), "train": TrainConfig()}
    sections = {s: apply_overrides(obj, routed[s], s) for s, obj in sections.items()}
    sections = _apply_options(sections, model, overrides, options)
    return RunConfig(model=model, model_config=sections["model"], data=sections["data"], train=sections["train"])


def _typed_sections(sections: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``sections`` checked to be {"model"|"data"|"train": {field: value}}."""
    for section, values in (sections or {}).items():
        if section not in ("model", "data", "train"):
            raise ConfigError(f"unknown config section {section!r}; the sections are model, data and train")
        if not isinstance(values, dict):
            raise ConfigError(f"the {section} section is a {type(values).__name__}, not a table of options")
    return sections or {}


def _apply_options(sections: dict[str, Any], model: str, overrides: Iterable[str],
                   options: dict[str, Any], typed: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Route ``options`` (plain field names) to the section that has the field, then apply ``typed`` (values by
    section), them and the dotted ``overrides`` to the three sections."""
    routed: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
    for section, values in _typed_sections(typed).items():
        routed[section].update(values)
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
                   preset: str | None = None, overrides: Iterable[str] = (),
                   sections: dict[str, dict[str, Any]] | None = None, **options: Any) -> RunConfig:
    """The config a resumed run continues with: ``saved``, with train options changed as asked. The model and
    data options (and a config file's ``sections``) may be repeated (the same command with ``--resume`` added)
    but not changed."""
    if model is not None and model != saved.model:
        raise ConfigError(f"this run trains {saved.model}, not {model}; resume it as `genlab train {saved.model} ...`")
    if data is not None and data != saved.data.name:
        raise ConfigError(f"this run trains on {saved.data.name}, not {data}; a resumed run keeps its data")
    if preset is not None:
        raise ConfigError("a preset sets up a new run; leave --preset out when resuming")
    asked = _apply_options({"model": saved.model_config, "data": saved.data, "train": saved.train}, saved.model,
                           overrides, options, sections)
    for section, before in (("model", saved.model_config), ("data", saved.data)):
        for f in dataclasses.fields(before):
            old, new = getattr(before, f.name), getattr(asked[section], f.name)
            if old != new:
                raise ConfigError(f"a resumed run keeps its model and data: {section}.{f.name} is {old!r} in this "
                                  f"run, not {new!r}; only train.* options may change")
    return RunConfig(model=saved.model, model_config=saved.model_config, data=saved.data, train=asked["train"])


# --- describing the options: `genlab train FAMILY --help`, `genlab config FAMILY` ---

def _comment_text(token: str) -> str:
    return token.lstrip("#").strip()


@functools.lru_cache(maxsize=None)
def _class_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines just above its line (no blank line between) and the comment at its end, as
    written in ``cls``'s own source; {} when the source cannot be read (a class made in a REPL, a frozen app)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return {}
    out: dict[str, str] = {}
    depth = 0  # 1 inside the class body
    above: list[str] = []  # standalone comment lines since the last statement
    trailing: list[str] = []  # comments inside the logical line being read
    line: list[tokenize.TokenInfo] = []
    for tok in tokens:
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.COMMENT:
            text = _comment_text(tok.string)
            if line:
                trailing.append(text)
            elif text.startswith("---") or not text:  # a section marker is no field's comment
                above.clear()
            else:
                above.append(text)
        elif tok.type == tokenize.NL:
            if not line and not tok.line.strip():  # a blank line: the comment above belongs to nothing below
                above.clear()
        elif tok.type == tokenize.NEWLINE:
            is_field = (depth == 1 and len(line) > 1 and line[0].type == tokenize.NAME
                        and line[1].type == tokenize.OP and line[1].string == ":")
            if is_field:
                text = "; ".join(t for t in (" ".join(above), " ".join(trailing)) if t)
                if text:
                    out[line[0].string] = text
            above, trailing, line = [], [], []
        elif tok.type not in (tokenize.ENCODING, tokenize.ENDMARKER):
            line.append(tok)
    return out


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the source of config dataclass ``cls`` (or of a dataclass it inherits from);
    fields without a comment are left out."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update(_class_comments(klass))
    return out


@dataclass(frozen=True)
class OptionDoc:
    """One config field as the help shows it."""

    section: str  # model | data | train
    name: str
    type: str  # "int", "float or none", "int list"
    value: Any  # the resolved value (the family's default, unless a preset or an option changed it)
    comment: str  # from the dataclass's source; "" when it has none
    allowed: str  # what FIELD_RANGES allows, in words; "" when the table does not name it

    @property
    def flag(self) -> str:
        return f"--{self.section}.{self.name}={cli_value(self.value)}"


def _type_name(tp: Any) -> str:
    base, optional = _strip_optional(tp)
    if typing.get_origin(base) is tuple:
        (elem,) = typing.get_args(base)[:1]
        name = f"{getattr(elem, '__name__', elem)} list"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional else name


def cli_value(value: Any) -> str:
    """``value`` written as a command-line option takes it: ``true``, ``none``, ``32,64``, ``()``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(cli_value(v) for v in value) if value else "()"
    if isinstance(value, str) and (not value or any(c.isspace() or c in "'\"\\$`;&|<>()" for c in value)):
        return shlex.quote(value)
    return str(value)


def range_text(rule: Range) -> str:
    """What ``rule`` allows, in words: ``one of adam, adamw``, ``1 to 65536``, ``> 0``."""
    if rule.choices:
        return "one of " + ", ".join(rule.choices)
    if rule.pattern:
        return rule.hint or rule.pattern
    parts = []
    if rule.lo is not None and rule.hi is not None and not (rule.open_lo or rule.open_hi):
        parts.append(f"{_number(rule.lo)} to {_number(rule.hi)}")
    else:
        if rule.lo is not None:
            parts.append(f"{'>' if rule.open_lo else '>='} {_number(rule.lo)}")
        if rule.hi is not None:
            parts.append(f"{'<' if rule.open_hi else '<='} {_number(rule.hi)}")
    if rule.length is not None:
        parts.append(f"{rule.length} values")
    return ", ".join(parts)


def describe_options(cfg: RunConfig) -> list[OptionDoc]:
    """Every field of ``cfg``'s model, data and train configs, with its type, resolved value, source comment and
    allowed range: what the help lists. Built from the dataclasses, so a new family or field needs nothing here."""
    out = []
    for section, obj in (("model", cfg.model_config), ("data", cfg.data), ("train", cfg.train)):
        comments = field_comments(type(obj))
        for name, tp in _fields(type(obj)).items():
            rule = FIELD_RANGES.get(f"{section}.{name}") or FIELD_RANGES.get(name)
            out.append(OptionDoc(section, name, _type_name(tp), getattr(obj, name), comments.get(name, ""),
                                 range_text(rule) if rule else ""))
    return out


def family_summary(cls: type) -> str:
    """The first paragraph of a family's docstring, on one line (``genlab list``, the help)."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def first_run_note(model: str) -> str | None:
    """For ``genlab train FAMILY`` without a preset or config file: what the family's plain defaults give and the
    ``quick`` preset to try first, from its ``preset_notes`` (None when it has no such note or no quick preset)."""
    family = MODELS.get(model)
    default, quick = family.preset_notes.get("default"), family.preset_notes.get("quick")
    if "quick" not in family.presets or not default:
        return None
    return f"{model} without a preset: {default}" + (f"\n--preset quick: {quick}" if quick else "")


def preset_lines(model: str) -> list[tuple[str, str, str]]:
    """(name, what it sets as ``key=value, ...``, its note from ``preset_notes``) for each preset of ``model``."""
    family = MODELS.get(model)
    notes = family.preset_notes
    return [(name, ", ".join(f"{k if '.' in k else 'model.' + k}={cli_value(_as_tuple(v))}"
                             for k, v in values.items()), notes.get(name, ""))
            for name, values in family.presets.items()]


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_SECTION_TITLES = {"model": "model options", "data": "data options (genlab.data.spec.DataConfig)",
                   "train": "train options (genlab.config.TrainConfig)"}


def options_help(cfg: RunConfig, *, preset: str | None = None, width: int = 100) -> str:
    """The text of ``genlab train FAMILY --help`` after the flags (and of ``genlab config FAMILY``): every option
    of ``cfg``'s family with its type, value, range and comment, then the family's presets and what they set."""
    family = MODELS.get(cfg.model)
    doc = family_summary(family)
    wrap = functools.partial(textwrap.fill, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                             break_on_hyphens=False, break_long_words=False)
    shown = f" with preset {preset}" if preset else ""
    intro = (f"Each option shows the value a run of {cfg.model}{shown} gets; set one as --SECTION.KEY=VALUE "
             "(a list comma-separated, none to unset) or in a --config FILE.toml (`genlab config "
             f"{cfg.model} --toml` writes one).")
    lines = [textwrap.fill(f"{cfg.model}: {doc}" if doc else cfg.model, width=width), "",
             textwrap.fill(intro, width=width, break_on_hyphens=False)]
    default_note = family.preset_notes.get("default")
    if default_note:  # what the plain defaults give, measured, before the long list
        lines += ["", textwrap.fill(f"Without a preset: {default_note}", width=width, break_on_hyphens=False)]
    docs = describe_options(cfg)
    for section in ("model", "data", "train"):
        title = _SECTION_TITLES[section] + (f" of {cfg.model} ({type(cfg.model_config).__name__})"
                                            if section == "model" else "")
        lines += ["", f"{title}:"]
        for d in (d for d in docs if d.section == section):
            extra = f"{d.type}, {d.allowed}" if d.allowed else d.type
            lines.append(f"  {d.flag}  ({extra})")
            if d.comment:
                lines.append(wrap(d.comment))
    presets = preset_lines(cfg.model)
    lines += ["", f"presets of {cfg.model} (--preset NAME; the options above apply on top):" if presets
              else f"{cfg.model} has no presets."]
    for name, sets, note in presets:
        lines.append(f"  {name}")
        if note:
            lines.append(wrap(note))
        lines.append(wrap(f"sets {sets}" if sets else "sets nothing (the defaults)"))
    return "\n".join(lines)


# --- config files: TOML ---

MAX_CONFIG_BYTES = 2**20  # a config file is a few kB; past this it is not one
_TOML_KEYS = ("family", "preset", "model", "data", "train", "meta")  # meta (what made a run) is read by nobody
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _toml_string(text: str) -> str | None:
    """A TOML basic string, or None when ``text`` holds what TOML cannot (a lone surrogate from an undecodable
    file name)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


def _toml_value(value: Any) -> str | None:
    """``value`` in TOML, or None when it has no TOML form (None itself, an odd string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        items = [_toml_value(v) for v in value]
        return None if any(i is None for i in items) else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    return None


def _comment_line(text: str) -> str:
    # a command line may hold an undecodable file name (a lone surrogate): escaped, or the file could not be written
    return "# " + _CONTROL.sub(" ", text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _family_defaults(model: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """What a config file that leaves a key out gets (the family's resolved defaults), and the fields'
    comments, by section; empty for a family this process does not know."""
    try:
        cfg = build_config(model)
    except GenlabError:
        return {}, {}
    objs = {"model": cfg.model_config, "data": cfg.data, "train": cfg.train}
    return ({s: dataclasses.asdict(o) for s, o in objs.items()},
            {s: field_comments(type(o)) for s, o in objs.items()})


def config_toml(d: dict[str, Any]) -> str:
    """A run config (``RunConfig.to_dict()``, as saved in config.json, optionally with ``"meta"``: what made the
    run) as a TOML file that ``read_config_file`` reads back to the same config: ``family = ...`` and the
    ``[model]``, ``[data]``, ``[train]`` tables, each key under its comment from the dataclass source. ``"meta"``
    and ``"meta_resumed"`` become comment lines at the top. TOML has no null: a None value is left out (reading
    then gives the family's default, which is None for every such field; where it is not, the key is written as
    the string "none", which every optional non-string field reads as None)."""
    defaults, notes = _family_defaults(str(d.get("model", "")))
    out = ["# genlab run config: `genlab train --config config.toml --out NEW_FOLDER` trains this run again;",
           "# options given on the command line apply on top. `genlab config FAMILY` lists every option."]
    meta = d.get("meta")
    if isinstance(meta, dict) and meta:
        out.append("#")
        out += [_comment_line(f"{k}: {v}") for k, v in meta.items() if v is not None]
    resumed = d.get("meta_resumed")
    for m in resumed if isinstance(resumed, list) else []:
        if isinstance(m, dict):
            out.append(_comment_line("resumed: " + ", ".join(f"{k}: {v}" for k, v in m.items()
                                                               if k in ("command", "date", "git_commit") and v)))
    family = _toml_value(str(d.get("model", "")))
    out += ["", f"family = {family}"]
    for section, key in (("model", "model_config"), ("data", "data"), ("train", "train")):
        values = d.get(key)
        if not isinstance(values, dict):
            continue
        out += ["", f"[{section}]"]
        for name, value in values.items():
            if not _BARE_KEY.fullmatch(str(name)):
                continue
            note = notes.get(section, {}).get(name)
            if note:
                out += [_comment_line(line) for line in textwrap.wrap(note, 116, break_long_words=False,
                                                                      break_on_hyphens=False)]
            text = _toml_value(value)
            if text is None and isinstance(value, str):  # not UTF-8 (a lone surrogate from an odd file name)
                # escaped, so that reading it back names a path that is not there (one clear error), not nothing
                # (which would quietly mean the default)
                out.append(f"# {name}: not UTF-8, written with \\x escapes; config.json holds it as it is")
                text = _toml_string(value.encode("utf-8", "backslashreplace").decode("utf-8"))
            if value is None and defaults.get(section, {}).get(name, None) is not None:
                text = '"none"'  # left out, the key would read as the family's non-None default
            if text is None:
                out.append(f"# {name} = none (unset)" if value is None else f"# {name}: no TOML form; see config.json")
            else:
                out.append(f"{name} = {text}")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class ConfigFile:
    """A config file read and checked: its family, preset (None unless the file names one) and its values by
    section (what ``build_config(..., sections=...)`` applies)."""

    path: Path
    family: str
    preset: str | None
    sections: dict[str, dict[str, Any]]

    def with_preset(self, preset: str | None) -> str | None:
        """The preset of a run from this file and a ``--preset`` flag (None: not given): either, or both alike."""
        if preset is not None and self.preset is not None and preset != self.preset:
            raise _file_error(self.path, f"it names preset {self.preset!r}, not {preset!r}; leave --preset out or "
                                         "change the file's preset = ...")
        return preset if preset is not None else self.preset


def resolve_config(model: str | None = None, data: str | None = None, *, preset: str | None = None,
                   config: str | Path | None = None, overrides: Iterable[str] = (), **options: Any) -> RunConfig:
    """``build_config`` with an optional config file (``read_config_file``) under the options: the family's
    defaults, the preset (the file's or ``preset``), the file's values, then ``data``, ``options`` and
    ``overrides``. ``model`` may be left out when the file names the family."""
    sections = None
    if config is not None:
        file = read_config_file(config, model)
        model, preset, sections = file.family, file.with_preset(preset), file.sections
    return build_config(model or "vae", data, preset=preset, overrides=overrides, sections=sections, **options)


def _file_error(path: Path, what: str) -> ConfigError:
    return ConfigError(f"config file {path}: {what}")


def read_config_file(path: str | Path, family: str | None = None) -> ConfigFile:
    """Read a TOML config file (``config_toml``'s format, or any part of it written by hand: keys left out keep
    the family's defaults). ``family`` is the one named on the command line: the file's must agree, and names
    it when the file does not. Every problem -- missing, too large, not UTF-8, not TOML, an unknown key, a wrong
    type or range -- raises ``ConfigError`` with one line naming the file and what to fix."""
    path = Path(path)
    if tomllib is None:
        raise _file_error(path, "reading TOML needs Python 3.11 or later, or the tomli package (pip install tomli)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise _file_error(path, "no such file; give the path of a .toml file (a run writes RUN/config.toml)") from None
    except OSError as e:
        raise _file_error(path, f"cannot read it ({e.strerror or e}); check the path and its permissions") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _file_error(path, f"over {MAX_CONFIG_BYTES // 2**10} KiB, too large for a config; is this the right "
                                "file?")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _file_error(path, "not UTF-8 text; save it as UTF-8") from None
    except RecursionError:
        raise _file_error(path, "nested too deeply to read; it is not a genlab config") from None
    except tomllib.TOMLDecodeError as e:
        raise _file_error(path, f"not valid TOML ({' '.join(str(e).split())}); fix that line") from None
    except ValueError:  # an integer of more digits than Python converts
        raise _file_error(path, "it holds a number thousands of digits long; it is not a genlab config") from None
    unknown = [k for k in doc if k not in _TOML_KEYS]
    if unknown:
        raise _file_error(path, f"unknown key {unknown[0]!r}; a config holds family, preset and the [model], "
                                "[data] and [train] tables")
    named = doc.get("family")
    if named is not None and not isinstance(named, str):
        raise _file_error(path, f"family must be a string such as \"vae\", not {named!r}")
    if named is not None and family is not None and named != family:
        raise _file_error(path, f"it trains {named}, not {family}; leave the family out of the command or change "
                                "the file's family = ...")
    name = named or family
    if name is None:
        raise _file_error(path, 'it names no model family; add a line family = "vae" (see `genlab list`) at the top')
    preset = doc.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise _file_error(path, f"preset must be a string, not {preset!r}")
    sections = {s: doc.get(s, {}) for s in ("model", "data", "train")}
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise _file_error(path, f"{section} = ... is not a table; write its options under a [{section}] line")
    try:
        build_config(name, preset=preset, sections=sections)  # every key, type and range checked here
    except ConfigError as e:
        raise _file_error(path, str(e)) from None
    return ConfigFile(path, name, preset, sections)
