"""Discoverable options: `genlab train FAMILY --help` and `genlab config` list every field of the model, data and
train configs with its type, default, range and source comment, and the presets with what they set; config files
in TOML (`--config FILE.toml`, every run's config.toml) read back to the same config and reproduce a run; hostile
config files and bad flag values end in one line with exit code 2."""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    tomllib = pytest.importorskip("tomli")

import genlab
from genlab.config import (
    MAX_CONFIG_BYTES,
    RunConfig,
    build_config,
    cli_value,
    config_toml,
    describe_options,
    field_comments,
    read_config_file,
)
from genlab.errors import ConfigError
from genlab.registry import MODELS

from helpers import assert_user_error, run_cli


def _flat(text: str) -> str:
    """Text with every run of whitespace as one space: wrapped help compares with one-line comments."""
    return " ".join(text.split())


def _sections(cfg: RunConfig) -> dict[str, Any]:
    return {"model": cfg.model_config, "data": cfg.data, "train": cfg.train}


# --- reading the comments of a dataclass ---

@dataclasses.dataclass
class _Commented:
    """A docstring is no field's comment."""

    plain: int = 1  # the trailing comment
    # a comment above,
    # over two lines
    above: float = 0.5
    both: str = "x"  # trailing too
    # a comment that a blank line separates from every field

    bare: bool = False
    # --- a section marker ---
    marked: int = 2
    spread: tuple[int, ...] = (1,
                               2)  # the comment of a field written over two lines

    def method(self) -> int:
        inner: int = 3  # not a field
        return inner


@dataclasses.dataclass
class _Child(_Commented):
    extra: int = 0  # the subclass's own field


def test_field_comments_read_above_and_trailing_comments_and_nothing_else() -> None:
    comments = field_comments(_Commented)
    assert comments == {
        "plain": "the trailing comment",
        "above": "a comment above, over two lines",
        "both": "trailing too",
        "spread": "the comment of a field written over two lines",
    }
    assert field_comments(_Child) == {**comments, "extra": "the subclass's own field"}


def test_a_dataclass_without_source_still_gets_types_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    made = dataclasses.make_dataclass("Made", [("width", int, dataclasses.field(default=7)),
                                               ("scale", float | None, dataclasses.field(default=None))])
    assert field_comments(made) == {}
    cfg = build_config("vae")
    docs = describe_options(dataclasses.replace(cfg, model_config=made()))
    model = {d.name: d for d in docs if d.section == "model"}
    assert (model["width"].type, model["width"].value, model["width"].comment) == ("int", 7, "")
    assert model["scale"].type == "float or none" and model["scale"].flag == "--model.scale=none"


# --- the help of every family ---

@pytest.mark.parametrize("family", MODELS.names())
def test_family_help_lists_every_option_with_its_default_and_comment(
        family: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "train", family, "--help")
    assert code == 0, err
    assert out.index("--no-progress") < out.index("model options"), "the usual flags come first"
    flat = _flat(out)
    cfg = build_config(family)  # the family's effective defaults: its train_defaults applied
    for section, obj in _sections(cfg).items():
        comments = field_comments(type(obj))
        for f in dataclasses.fields(obj):
            flag = f"--{section}.{f.name}={cli_value(getattr(obj, f.name))}"
            assert f"  {flag}  (" in out, (family, flag)
            if f.name in comments:
                assert _flat(comments[f.name]) in flat, (family, f.name)
    for preset, values in MODELS.get(family).presets.items():
        assert f"\n  {preset}\n" in out, (family, preset)
        for key, value in values.items():
            key = key if "." in key else f"model.{key}"
            shown = cli_value(tuple(value) if isinstance(value, list) else value)
            assert f"{key}={shown}" in flat, (family, preset, key)


def test_help_shows_the_family_defaults_types_ranges_and_the_comment_of_a_field(
        capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "train", "gan", "--help")
    # the GANs train with Adam(beta1=0.5) at 2e-4: their help says so, not TrainConfig's 1e-3
    assert "--train.lr=0.0002  (float, > 0)" in out
    assert "--train.betas=0.5,0.999  (float list, >= 0, < 1, 2 values)" in out
    assert "--train.optimizer=adam  (str, one of adam, adamw, rmsprop)" in out
    assert "--data.binarize=none  (str, one of none, static, dynamic, threshold)" in out
    assert "--train.max_steps=none  (int or none," in out
    assert "--model.latent_dim=10  (int, 1 to 65536)\n      size of the noise z\n" in out


def test_help_with_a_preset_and_options_shows_what_that_run_gets(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "train", "vae", "--preset", "conv-small", "--epochs", "3", "--train.lr=0.01",
                        "--help")
    assert "--model.arch=conv " in out and "--model.latent_dim=2 " in out
    assert "--train.epochs=3 " in out and "--train.lr=0.01 " in out
    assert "with preset conv-small" in out


def test_preset_notes_appear_in_the_help_and_in_list(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    note = "a small conv VAE with a 2-D latent; recognisable digits in 40 s on 2 cores"
    monkeypatch.setattr(MODELS.get("vae"), "preset_notes", {"conv-small": note})
    _, out, _ = run_cli(capsys, "train", "vae", "--help")
    assert f"  conv-small\n      {note}\n      sets model.arch=conv" in out
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert f"--preset conv-small: {note}" in _flat(out)
    assert "other presets: mlp-784-400-20, keras-deconv" in _flat(out)


def test_a_toy_family_gets_its_help_from_its_dataclass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "train", "toy-pixels", "--help")
    assert code == 0, err
    assert "--model.smoothing=0.0  (float)\n      added to every logit's initial value" in out
    assert "toy-pixels has no presets." in out


def test_train_help_without_a_family_says_how_to_get_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    assert "--epochs" in out and "genlab train FAMILY --help" in out
    assert "model options" not in out


def test_an_unknown_family_is_one_line_naming_the_families(capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_user_error(run_cli(capsys, "train", "vea", "--help"), "unknown model 'vea'", "'vae'")
    assert all(name in line for name in MODELS.names())
    assert_user_error(run_cli(capsys, "config", "nope"), "unknown model 'nope'")
    assert_user_error(run_cli(capsys, "train"), "name a model family", "--config")


def test_genlab_config_prints_the_options_and_the_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "config", "wgan-gp", "--preset", "dcgan")
    assert code == 0, err
    _, help_out, _ = run_cli(capsys, "train", "wgan-gp", "--preset", "dcgan", "--help")
    assert out.strip() in help_out and "--model.arch=conv " in out
    code, out, err = run_cli(capsys, "config", "wgan-gp", "--preset", "dcgan", "--epochs", "4", "--toml")
    assert code == 0, err
    doc = tomllib.loads(out)
    assert doc["family"] == "wgan-gp" and doc["model"]["arch"] == "conv" and doc["train"]["epochs"] == 4
    path = tmp_path / "x.toml"
    path.write_text(out, encoding="utf-8")
    file = read_config_file(path)
    assert build_config(file.family, sections=file.sections) == build_config("wgan-gp", preset="dcgan", epochs=4)


# --- TOML round trips ---

def _round_trip(cfg: RunConfig, tmp_path: Path) -> RunConfig:
    path = tmp_path / "config.toml"
    path.write_text(config_toml(cfg.to_dict()), encoding="utf-8")
    file = read_config_file(path)
    return build_config(file.family, preset=file.preset, sections=file.sections)


def _family_presets() -> list[tuple[str, str | None]]:
    return [(family, preset) for family in MODELS.names()
            for preset in (None, *MODELS.get(family).presets)]


@pytest.mark.parametrize("family,preset", _family_presets())
def test_toml_round_trip_of_every_default_and_preset(family: str, preset: str | None, tmp_path: Path) -> None:
    cfg = build_config(family, preset=preset)
    assert _round_trip(cfg, tmp_path) == cfg


# a valid non-None value for each optional field; a new optional field must be added here
OPTIONAL_VALUES = {"data_dir": "/tmp/some data/ü", "image_size": 16, "channels": 3, "max_steps": 7,
                   "time_limit": 1.5, "grad_clip": 2.0, "threads": 2}


@pytest.mark.parametrize("family", MODELS.names())
def test_toml_round_trip_of_every_optional_field_set_and_unset(family: str, tmp_path: Path) -> None:
    """None has no TOML form: a None field is left out (or written "none") and must still read back as None; a
    set one as its value."""
    cfg = build_config(family)
    for fill in (False, True):
        objs = {}
        for section, obj in _sections(cfg).items():
            hints = typing.get_type_hints(type(obj))
            optional = [f.name for f in dataclasses.fields(obj) if type(None) in typing.get_args(hints[f.name])]
            assert all(name in OPTIONAL_VALUES for name in optional), f"add a value for {section}.{optional}"
            objs[section] = dataclasses.replace(obj, **{n: OPTIONAL_VALUES[n] if fill else None for n in optional})
        changed = RunConfig(family, objs["model"], objs["data"], objs["train"])
        assert _round_trip(changed, tmp_path) == changed


def test_a_none_whose_default_is_not_none_is_written_as_none(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setattr(MODELS.get("vae"), "train_defaults", {"grad_clip": 1.0})
    cfg = build_config("vae", grad_clip=None)
    assert cfg.train.grad_clip is None and build_config("vae").train.grad_clip == 1.0
    text = config_toml(cfg.to_dict())
    assert 'grad_clip = "none"' in text
    assert _round_trip(cfg, tmp_path).train.grad_clip is None


def test_odd_strings_round_trip_and_meta_becomes_comments(tmp_path: Path) -> None:
    name = 'folder:/tmp/a "quoted" \\ back\tslash\x7f\x01 ü 白 \U0001F600'
    cfg = build_config("vae", data=name)
    d = {**cfg.to_dict(), "meta": {"command": "genlab train vae\nrm -rf ~ # \x00 \udcff", "threads": 2, "gpu": None},
         "meta_resumed": [{"command": "genlab train --resume", "date": "2026-01-01"}, "junk"]}
    text = config_toml(d)
    doc = tomllib.loads(text)  # the meta is comments only: nothing of it is read
    assert set(doc) == {"family", "model", "data", "train"}
    assert doc["data"]["name"] == name
    assert "# command: genlab train vae rm -rf ~ #   \\udcff" in text and "# threads: 2" in text
    assert "gpu" not in text
    text.encode("utf-8")  # what the run folder's writer does with it
    assert "# resumed: command: genlab train --resume, date: 2026-01-01" in text
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    file = read_config_file(path)
    assert build_config(file.family, sections=file.sections) == cfg


def test_a_string_toml_cannot_hold_is_escaped_and_said_so() -> None:
    """Left out, it would read back as the default dataset: escaped, it names a folder that is not there."""
    d = build_config("vae").to_dict()
    d["data"]["data_dir"] = "/tmp/bad\udcff"  # an undecodable file name, as os.fsdecode gives it
    text = config_toml(d)
    assert "# data_dir: not UTF-8" in text
    assert tomllib.loads(text)["data"]["data_dir"] == "/tmp/bad\\udcff"


def test_a_handwritten_partial_file_keeps_the_family_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('family = "gan"\npreset = "dcgan"\n[train]\nepochs = 3\n[meta]\nwho = "me"\n', encoding="utf-8")
    cfg = genlab.api.resolve_config(config=path, lr=1e-3)
    assert cfg == build_config("gan", preset="dcgan", epochs=3, lr=1e-3)
    assert cfg.train.betas == (0.5, 0.999)  # the family's train default, as the file does not say


# --- every run writes config.toml; --config reproduces the run ---

def _weights(run: Path) -> dict[str, Any]:
    return load_file(str(run / "checkpoints" / "model.safetensors"))


def _test_losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["test/loss"] for line in lines]


def test_train_config_toml_reproduces_a_run(capsys: pytest.CaptureFixture[str], cli_env: Path) -> None:
    first = cli_env / "first"
    code, _, err = run_cli(capsys, "train", "vae", "--data", "digits", "--model.hidden=16", "--latent-dim", "2",
                           "--epochs", "1", "--seed", "3", "--train.threads=1", "--out", first, "--no-figures",
                           "--no-progress")
    assert code == 0, err
    saved = json.loads((first / "config.json").read_text(encoding="utf-8"))
    toml_text = (first / "config.toml").read_text(encoding="utf-8")
    assert toml_text == config_toml(saved)
    assert tomllib.loads(toml_text)["model"]["hidden"] == [16]

    again = cli_env / "again"
    code, _, err = run_cli(capsys, "train", "--config", first / "config.toml", "--out", again, "--no-figures",
                           "--no-progress")
    assert code == 0, err
    w1, w2 = _weights(first), _weights(again)
    assert w1.keys() == w2.keys() and all(w1[k].equal(w2[k]) for k in w1)
    assert _test_losses(first) == _test_losses(again)
    resolved = {k: v for k, v in json.loads((again / "config.json").read_text(encoding="utf-8")).items()
                if k not in ("meta", "meta_resumed")}
    assert resolved == {k: v for k, v in saved.items() if k not in ("meta", "meta_resumed")}

    # the Python API takes the file too, with options on top; a family that differs from the file's is refused
    model = genlab.train(config=first / "config.toml", out=cli_env / "python", max_steps=2, progress=False)
    cfg = RunConfig.from_dict(json.loads((model.run_dir / "config.json").read_text(encoding="utf-8")))
    assert cfg.train.max_steps == 2 and cfg.model_config.hidden == (16,) and cfg.data.name == "digits"
    assert_user_error(run_cli(capsys, "train", "gan", "--config", first / "config.toml", "--out", cli_env / "x"),
                      "config.toml", "it trains vae, not gan")
    assert not (cli_env / "x").exists()


# --- hostile config files ---

HOSTILE = {
    "not TOML": (b'family = "vae"\n[model\n', "not valid TOML"),
    "no family": (b"[model]\nlatent_dim = 2\n", "names no model family"),
    "family not a string": (b"family = 5\n", "family must be a string"),
    "unknown family": (b'family = "vea"\n', "unknown model 'vea'"),
    "unknown key": (b'family = "vae"\nepochs = 3\n', "unknown key 'epochs'"),
    "unknown option": (b'family = "vae"\n[model]\nlatnt_dim = 2\n', "did you mean model.latent_dim"),
    "section not a table": (b'family = "vae"\ntrain = 3\n', "[train]"),
    "wrong type": (b'family = "vae"\n[train]\nepochs = 1.5\n', "train.epochs"),
    "a date": (b'family = "vae"\n[train]\nepochs = 1979-05-27\n', "train.epochs"),
    "out of range": (b'family = "vae"\n[train]\nlr = -1.0\n', "train.lr must be > 0"),
    "not finite": (b'family = "vae"\n[train]\nlr = nan\n', "train.lr must be a finite number"),
    "a float too large": (b'family = "vae"\n[train]\nlr = 1' + b"0" * 400 + b"\n", "too large"),
    "an integer too long": (b'family = "vae"\n[train]\nepochs = ' + b"9" * 5000 + b"\n", "digits"),
    "nested list": (b'family = "vae"\n[model]\nhidden = [[16]]\n', "model.hidden"),
    "deep nesting": (b"a = " + b"[" * 100000 + b"]" * 100000 + b"\n", "nested too deeply"),
    "not UTF-8": (b'family = "vae"\n# \xff\xfe\n', "not UTF-8"),
    "too large": (b"#" * (MAX_CONFIG_BYTES + 1), "too large"),
    "bad preset": (b'family = "vae"\npreset = "huge"\n', "unknown preset 'huge'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_config_file_is_one_line_and_exit_2(case: str, capsys: pytest.CaptureFixture[str],
                                                      cli_env: Path) -> None:
    content, needle = HOSTILE[case]
    path = cli_env / "hostile.toml"
    path.write_bytes(content)
    line = assert_user_error(run_cli(capsys, "train", "--config", path, "--out", cli_env / "run"), needle)
    assert str(path) in line, line
    assert not (cli_env / "run").exists()
    with pytest.raises(ConfigError):
        read_config_file(path)


def test_config_paths_that_are_no_file_are_one_line(capsys: pytest.CaptureFixture[str], cli_env: Path) -> None:
    assert_user_error(run_cli(capsys, "train", "--config", cli_env / "missing.toml"), "no such file")
    (cli_env / "folder.toml").mkdir()
    assert_user_error(run_cli(capsys, "config", "--config", cli_env / "folder.toml"), "cannot read it")
    (cli_env / "p.toml").write_text('family = "vae"\npreset = "conv-small"\n', encoding="utf-8")
    assert_user_error(run_cli(capsys, "config", "--config", cli_env / "p.toml", "--preset", "keras-deconv"),
                      "it names preset 'conv-small', not 'keras-deconv'")


# --- bad values of typed flags ---

@pytest.mark.parametrize("argv,needle", [
    (["train", "vae", "--lr", "-1"], "train.lr must be > 0, got -1.0"),
    (["train", "vae", "--lr", "-1e-3"], "train.lr must be > 0"),  # argparse alone took "-1e-3" for an option
    (["train", "vae", "--lr=-2.5E+2"], "train.lr must be > 0"),
    (["train", "vae", "--lr", "nan"], "train.lr must be a finite number"),
    (["train", "vae", "--lr", "x"], "invalid float value"),
    (["train", "vae", "--epochs", "-1"], "train.epochs must be >= 0"),
    (["train", "vae", "--batch-size", "-.5"], "invalid int value"),
    (["train", "vae", "--max-steps", "0"], "train.max_steps must be >= 1"),
    (["train", "vae", "--seed", "-1"], "train.seed must be >= 0"),
    (["train", "vae", "--latent-dim", "-1"], "model.latent_dim must be >= 1"),
    (["train", "vae", "--device", "gpu"], "train.device must look like"),
    (["train", "vae", "--train.lr=-1"], "train.lr must be > 0"),
    (["config", "vae", "--lr", "-1"], "train.lr must be > 0"),
    (["config", "vae", "--epochs", "1e3"], "invalid int value"),
    (["demo", "-k", "-1"], "k (importance samples"),  # checked before minutes of training, not after them
    (["demo", "--epochs", "-1"], "train.epochs must be >= 0"),
])
def test_a_bad_flag_value_is_one_line_and_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str],
                                                 cli_env: Path) -> None:
    out = ["--out", cli_env / "run"] if argv[0] != "config" else []
    assert_user_error(run_cli(capsys, *argv, *out), needle)
    assert not (cli_env / "run").exists()
