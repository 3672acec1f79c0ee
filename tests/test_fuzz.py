"""Property-based fuzzing of everything genlab reads: IDX files, image files in a folder, text corpora, the JSON and
safetensors files of a run folder, and the command line of every subcommand. The property is the promise of
"bad input gets one clear line": each input either works, or raises a GenlabError whose message is one line (the
CLI: exit code 2 and one line on stderr). Any other exception, a crash or a hang fails the test, and Hypothesis
shrinks the input to a small case that shows it.

The default suite runs a few dozen derandomized examples per reader (deterministic, seconds); the tests marked
slow run many more (``make test-slow``). The command line is also fuzzed in a child process under a memory limit
(RLIMIT_AS), where a segmentation fault or a runaway allocation shows as what it is."""
from __future__ import annotations

import gzip
import io
import json
import os
import resource
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genlab import api
from genlab.cli import main
from genlab.config import RunConfig
from genlab.data.idx import IDX_DTYPES, read_idx
from genlab.data.images import _load_folder
from genlab.data.text import load_corpus
from genlab.errors import ConfigError, GenlabError
from genlab.files import read_json, read_tensors

from helpers import TINY_POEMS  # noqa: E402

QUICK = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LONG = settings(QUICK, max_examples=600)
DRIVER = Path(__file__).with_name("fuzz_driver.py")


def fuzzed(strategy: st.SearchStrategy[Any], case: Callable[..., None]) -> tuple[Callable[..., None], Any]:
    """The property ``case`` as two tests: a quick one for the default suite and a long one marked slow."""
    quick = QUICK(given(strategy)(case))
    long = pytest.mark.slow(LONG(given(strategy)(case)))
    return quick, long


def assert_one_line(err: BaseException) -> None:
    message = str(err)
    assert message.strip() and "\n" not in message, repr(message)


def expect_works_or_refuses(call: Callable[[], Any], errors: tuple[type[BaseException], ...] = (GenlabError,)) -> Any:
    """``call()``'s value, or None when it raised one of ``errors`` with a one-line message; anything else fails."""
    try:
        return call()
    except errors as e:
        assert_one_line(e)
        return None


# --- byte-level mutations shared by the file fuzzers ---

def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` truncated, with bytes overwritten, inserted or deleted, or left alone."""
    kind = draw(st.sampled_from(["keep", "truncate", "flip", "insert", "delete", "append"]))
    if not data or kind == "keep":
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        patch = draw(st.binary(min_size=1, max_size=8))
        return data[:at] + patch + data[at + len(patch):]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)):]
    return data + draw(st.binary(min_size=1, max_size=256))


# --- IDX files ---

DIMS = st.one_of(st.integers(0, 40), st.sampled_from([2**16, 2**31 - 1, 2**31, 2**32 - 1]))


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    code = draw(st.one_of(st.sampled_from(sorted(IDX_DTYPES)), st.integers(0, 255)))
    dims = draw(st.lists(DIMS, min_size=0, max_size=5))
    header = bytes([0, 0, code, draw(st.one_of(st.just(len(dims)), st.integers(0, 255)))])
    header += struct.pack(f">{len(dims)}I", *dims)
    size = int(np.prod(dims, dtype=np.float64)) * (np.dtype(IDX_DTYPES[code]).itemsize if code in IDX_DTYPES else 1)
    body = draw(st.binary(max_size=64)) if size > 4096 else bytes(draw(st.binary(min_size=size, max_size=size)))
    data = mutate(header + body, draw)
    if draw(st.booleans()):
        data = gzip.compress(data, compresslevel=1)
        data = mutate(data, draw) if draw(st.booleans()) else data
    return data


def _idx_case(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz-images-idx3-ubyte"
    path.write_bytes(data)
    array = expect_works_or_refuses(lambda: read_idx(path))
    if array is not None:  # what it read is what the header declared, and the body held it all
        assert isinstance(array, np.ndarray)
        assert array.nbytes <= 64 * max(len(data), 1) * 1024


test_fuzzed_idx_files, test_fuzzed_idx_files_long = fuzzed(idx_files(), _idx_case)


# --- image files in a folder dataset ---

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"]
FORMATS = {"PNG": ".png", "GIF": ".gif", "JPEG": ".jpg", "BMP": ".bmp"}


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    pixels = np.frombuffer(draw(st.binary(min_size=width * height * 4, max_size=width * height * 4)), np.uint8)
    image = Image.fromarray(pixels.reshape(height, width, 4), "RGBA").convert(mode)
    if fmt == "JPEG" and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    if fmt in ("GIF", "BMP") and image.mode in ("LA", "RGBA", "I;16", "I"):
        image = image.convert("RGB" if fmt == "BMP" else "P")
    if fmt == "PNG" and image.mode == "I":  # PIL writes 32-bit grey as PNG only from I;16
        image = image.convert("I;16")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return FORMATS[fmt], mutate(buffer.getvalue(), draw)


def _image_case(tmp_path: Path, files: list[tuple[str, bytes]]) -> None:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i, (suffix, data) in enumerate(files):
        (folder / f"{i:02d}{suffix}").write_bytes(data)
    parts = expect_works_or_refuses(lambda: _load_folder(str(folder), None, None, False))
    if parts is not None:
        spec, train_x = parts[0], parts[1]
        assert tuple(train_x.shape[1:]) == spec.shape and float(train_x.min()) >= 0 and float(train_x.max()) <= 1


test_fuzzed_image_folders, test_fuzzed_image_folders_long = fuzzed(
    st.lists(image_files(), min_size=1, max_size=4), _image_case)


# --- text corpora (chinese-poetry JSON and plain lines) ---

HAN = st.characters(min_codepoint=0x4E00, max_codepoint=0x4E40)
LINES = st.text(st.one_of(HAN, st.sampled_from("，。！？ \n\t"), st.characters(exclude_categories=("Cs",))),
                max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | LINES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["paragraphs", "title", "x"]),
                                                                inner, max_size=3),
    max_leaves=20)
POEM = st.fixed_dictionaries({"paragraphs": st.lists(st.one_of(LINES, st.sampled_from(TINY_POEMS), JSON_VALUES),
                                                      max_size=4)})


@st.composite
def corpora(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["json", "poems", "text", "bytes"]))
    if kind == "json":
        return ".json", mutate(json.dumps(draw(JSON_VALUES), ensure_ascii=False).encode(), draw)
    if kind == "poems":
        return ".json", mutate(json.dumps(draw(st.lists(POEM, max_size=6)), ensure_ascii=False).encode(), draw)
    if kind == "text":
        lines = draw(st.lists(st.one_of(st.sampled_from(TINY_POEMS), LINES), max_size=12))
        return ".txt", mutate("\n".join(lines).encode(), draw)
    return draw(st.sampled_from([".json", ".txt"])), draw(st.binary(max_size=256))


def _corpus_case(tmp_path: Path, corpus: tuple[str, bytes]) -> None:
    suffix, data = corpus
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(data)
    dataset = expect_works_or_refuses(lambda: load_corpus(path, name="fuzz", progress=False))
    if dataset is not None:
        assert len(dataset) >= 1 and len(dataset.texts("test")) >= 1


test_fuzzed_text_corpora, test_fuzzed_text_corpora_long = fuzzed(corpora(), _corpus_case)


# --- run folders: their JSON and safetensors files ---

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny trained runs (two steps each) of an image VAE, a PixelCNN and a text VAE."""
    root = tmp_path_factory.mktemp("fuzz-runs")
    poems = root / "poems.txt"
    poems.write_text("\n".join(TINY_POEMS), encoding="utf-8")
    made = {
        "vae": api.train("vae", data="digits", out=root / "vae", max_steps=2, latent_dim=2, progress=False,
                         overrides=["--model.hidden=[16]"]),
        "pixelcnn": api.train("pixelcnn", data="digits", out=root / "pixelcnn", max_steps=2, progress=False,
                              overrides=["--model.features=8", "--model.layers=1", "--model.out_hidden=8"]),
        "text-vae": api.train("text-vae", data=f"poems:{poems}", out=root / "text-vae", max_steps=2,
                              progress=False),
    }
    return {name: Path(model.run_dir) for name, model in made.items()}


def _copy_run(src: Path, dst: Path) -> Path:
    """A plain copy of the run folder ``src`` (its checkpoint resolved, no store) at ``dst``, replaced if there."""
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    shutil.copy(src / "config.json", dst / "config.json")
    shutil.copytree(src / "checkpoints", dst / "checkpoints")
    return dst


def _leaf_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [prefix] + [p for k, v in obj.items() for p in _leaf_paths(v, (*prefix, k))]
    if isinstance(obj, list):
        return [prefix] + [p for i, v in enumerate(obj) for p in _leaf_paths(v, (*prefix, i))]
    return [prefix]


ODD_VALUES = st.one_of(st.none(), st.booleans(), st.sampled_from([0, -1, 1, 2, 10**6, 2**31, 2**63, 10**400]),
                       st.sampled_from([0.5, -0.0, 1e308, 1e-320]), st.text(max_size=8),
                       st.sampled_from(["NaN", "Infinity", "cuda", "vae", "../x", [], {}, [1, 2], [10**7, 10**7]]))


@st.composite
def json_edits(draw: st.DrawFn) -> tuple[str, str, Any, bool]:
    """Which file to edit, how (replace a value, delete a key, or mangle the bytes), and with what."""
    file = draw(st.sampled_from(["config.json", "checkpoints/model.json", "checkpoints/trainer.json"]))
    how = draw(st.sampled_from(["replace", "delete", "bytes"]))
    return file, how, draw(ODD_VALUES), draw(st.booleans())


def _edit_json(path: Path, how: str, value: Any, draw_index: int, raw: bool) -> None:
    text = path.read_text()
    if how == "bytes":
        cut = draw_index % max(len(text), 1)
        path.write_text(text[:cut] + ("\ufffd{" if raw else "") + text[cut + 1:])
        return
    obj = json.loads(text)
    leaves = [p for p in _leaf_paths(obj) if p]
    where = leaves[draw_index % len(leaves)]
    parent = obj
    for key in where[:-1]:
        parent = parent[key]
    if how == "delete":
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    path.write_text(json.dumps(value if raw and how == "replace" and draw_index % 7 == 0 else obj,
                               allow_nan=True))


def _json_case(runs: dict[str, Path], tmp_path: Path, family: str, edit: tuple[str, str, Any, bool],
               index: int) -> None:
    run = _copy_run(runs[family], tmp_path / "run")
    file, how, value, raw = edit
    _edit_json(run / file, how, value, index, raw)
    expect_works_or_refuses(lambda: read_json(run / file))
    model = expect_works_or_refuses(lambda: api.load(run))
    if model is not None:  # a model that loads also does what its run is for
        if family == "text-vae":
            expect_works_or_refuses(lambda: api.sample_text(model, 2, seed=0))
        else:
            expect_works_or_refuses(lambda: api.sample(model, 2, seed=0))


def _config_case(values: dict[str, Any]) -> None:
    expect_works_or_refuses(lambda: RunConfig.from_dict(values), (ConfigError,))


RUN_EDITS = st.tuples(st.sampled_from(["vae", "pixelcnn", "text-vae"]), json_edits(), st.integers(0, 10**6))


def _json_test(runs: dict[str, Path], tmp_path: Path, case: tuple[str, tuple[str, str, Any, bool], int]) -> None:
    _json_case(runs, tmp_path, *case)


test_fuzzed_run_json, test_fuzzed_run_json_long = fuzzed(RUN_EDITS, _json_test)
test_fuzzed_run_config_dicts, test_fuzzed_run_config_dicts_long = fuzzed(
    st.dictionaries(st.sampled_from(["model", "data", "train", "family", "version", "x"]),
                    st.one_of(JSON_VALUES, st.dictionaries(st.text(max_size=12), ODD_VALUES, max_size=4)),
                    max_size=5),
    _config_case)


@st.composite
def safetensors_edits(draw: st.DrawFn) -> tuple[str, str, Any, int]:
    file = draw(st.sampled_from(["model.safetensors", "trainer.safetensors"]))
    how = draw(st.sampled_from(["header-value", "length", "bytes"]))
    return file, how, draw(st.one_of(ODD_VALUES, st.sampled_from(["F64", "I8", "BOOL", "F16", [0, 2**40], [3]]))), \
        draw(st.integers(0, 10**6))


def _edit_safetensors(path: Path, how: str, value: Any, index: int, draw: Callable[[bytes], bytes]) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    if how == "length":
        path.write_bytes(struct.pack("<Q", [0, 1, n - 1, n + 1, len(data), 2**63, 2**64 - 1][index % 7]) + data[8:])
        return
    if how == "header-value":
        names = [k for k in header if k != "__metadata__"]
        entry = header[names[index % len(names)]]
        entry[["dtype", "shape", "data_offsets"][index % 3]] = value
        encoded = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)
        return
    path.write_bytes(draw(data))


def _tensor_test(runs: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    family = data.draw(st.sampled_from(["vae", "pixelcnn"]))
    file, how, value, index = data.draw(safetensors_edits())
    run = _copy_run(runs[family], tmp_path / "run")
    _edit_safetensors(run / "checkpoints" / file, how, value, index, lambda b: mutate(b, data.draw))
    expect_works_or_refuses(lambda: read_tensors(run / "checkpoints" / file))
    model = expect_works_or_refuses(lambda: api.load(run))
    if model is not None:
        expect_works_or_refuses(lambda: api.sample(model, 2, seed=0))


test_fuzzed_safetensors, test_fuzzed_safetensors_long = fuzzed(st.data(), _tensor_test)


# --- the command line ---

NUMBERS = st.sampled_from(["-1", "0", "1", "2", "3", "1e3", "nan", "inf", "-inf", "0.5", "-0.0", "1e400",
                           str(2**31), str(2**63), str(10**30), "0x10", "", "x", "１", "٣", "1_0", " 2"])
OPTIONS = {  # per subcommand: the flags it has, each with values a user could type (valid ones kept cheap)
    "train": ["--binarize", "--latent-dim", "--epochs", "--batch-size", "--lr", "--seed", "--device", "--preset",
              "--data", "--data-dir", "--max-steps"],
    "sample": ["-n", "--seed", "--label", "--out", "--temperature"],
    "complete": ["--hide", "-n", "--images", "--seed", "--temperature", "--threads", "--out"],
    "interpolate": ["--steps"],
    "reconstruct": ["-n", "--out"],
    "eval": ["-k", "--limit", "-n", "--temperature"],
    "plot": [],
    "compare": ["-k", "-n", "--out"],
    "list": [],
    "runs": [],
    "demo": ["--epochs", "-k", "--out"],
}
SAFE_TAIL = {  # appended last, so that argparse's last-wins keeps every valid fuzzed run short
    "train": ["--max-steps", "1", "--no-figures", "--no-progress", "--train.threads=1"],
    "eval": ["--no-quality", "--no-progress", "--limit", "2", "--no-report"],
    "compare": ["--no-quality", "--no-progress"],
    "complete": ["--images", "1", "-n", "1"],
}
OVERRIDES = st.sampled_from(["--model.hidden", "--model.latent_dim", "--model.beta", "--model.likelihood",
                             "--model.layers", "--data.image_size", "--data.binarize", "--data.palette",
                             "--train.lr", "--train.batch_size", "--train.optimizer", "--train.grad_clip",
                             "--train.seed", "--model.nope", "--train.", "--data"])
TEXTS = st.sampled_from(["白日依山盡，黃河入海流", "", "abc", "白日", "\U0001F600" * 10, "白" * 1000, "-n"])


def cli_argv(paths: dict[str, str]) -> st.SearchStrategy[list[str]]:
    """An argument vector for one subcommand: its positionals from ``paths`` (real runs, a file, an empty folder, a
    missing path...), some of its flags with odd values, overrides, stray words; the cheap tail last."""
    places = st.sampled_from(sorted(paths.values()))

    @st.composite
    def argv(draw: st.DrawFn) -> list[str]:
        command = draw(st.sampled_from(sorted(OPTIONS)))
        args = [command]
        if command == "train":
            args.append(draw(st.sampled_from(["vae", "cvae", "pixelcnn", "gan", "text-vae", "nope", "", "VAE"])))
        elif command == "compare":
            args += draw(st.lists(places, min_size=1, max_size=3))
        elif command not in ("list", "demo"):
            args.append(draw(places))
        if command == "interpolate":
            args += [draw(TEXTS), draw(TEXTS)]
        for flag in draw(st.lists(st.sampled_from(OPTIONS[command] or ["--help"]), max_size=4)):
            is_place = flag in ("--out", "--data-dir", "--data")
            args += [flag, draw(st.one_of(places, st.just("folder:" + paths["file"]))) if is_place
                     else draw(NUMBERS if flag not in ("--preset", "--binarize", "--device") else
                               st.sampled_from(["", "cuda:99", "mps", "x", "static", "mnist-quick"]))]
        if command in ("train", "demo"):
            for key in draw(st.lists(OVERRIDES, max_size=3)):
                args.append(f"{key}={draw(st.one_of(NUMBERS, st.sampled_from(['[]', '[0]', '[4, 4]', 'adam'])))}")
        if draw(st.integers(0, 9)) == 0:  # ("--" would turn the cheap tail below into positionals)
            args.append(draw(st.sampled_from(["--bogus", "extra", "-", "--model"])))
        if command == "train":
            args += ["--out", paths["fresh"] + str(draw(st.integers(0, 10**9)))]
        if command == "demo":
            # the demo trains for minutes when its values are valid: keep the fuzz to values it must refuse
            args += ["--epochs", draw(st.sampled_from(["0", "-1", "x", str(10**30), "nan"]))]
        return args + SAFE_TAIL.get(command, [])

    return argv()


def cli_paths(runs: dict[str, Path], root: Path) -> dict[str, str]:
    root.mkdir(exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    (root / "a-file").write_text("not a run\n")
    return {**{k: str(v) for k, v in runs.items()}, "empty": str(root / "empty"), "file": str(root / "a-file"),
            "missing": str(root / "missing" / "run"), "under-file": str(root / "a-file" / "x.png"),
            "fresh": str(root / "fresh-"), "proc": "/proc/genlab-cannot-write-here"}


def check_cli_result(argv: list[str], code: int, out: str, err: str) -> None:
    """Exit code 0, or 2 with the error on one line, the last one on stderr, and no other error before it.
    Progress bars and the data summary may come first: stderr is read as a terminal shows it (a progress bar
    redraws its line after each carriage return)."""
    assert "Traceback" not in err and "Traceback" not in out, (argv, err[-3000:])
    assert code in (0, 2), (argv, code, err[-3000:])
    if code == 2:
        shown = [line.split("\r")[-1] for line in err.split("\n")]
        lines = [line for line in shown if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
        assert lines and lines[-1].startswith("genlab") and errors == lines[-1:], (argv, err[-3000:])


def _cli_test(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch, data: st.DataObject) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))  # the quality metrics are off: nothing to fetch
    argv = data.draw(cli_argv(cli_paths(runs, tmp_path / "places")))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: --help exits 0, a bad flag 2
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    check_cli_result(argv, code, out, err)


test_fuzzed_command_lines, test_fuzzed_command_lines_long = fuzzed(st.data(), _cli_test)


@settings(QUICK, max_examples=1)
@given(st.data())
def test_fuzzed_command_lines_in_a_child_process_under_a_memory_limit(
        runs: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    """Forty fuzzed command lines in one child process whose address space is capped at 6 GiB: a segmentation
    fault, an abort or an allocation the checks missed ends the child, and shows here as its exit status."""
    paths = cli_paths(runs, tmp_path / "places")
    batch = [data.draw(cli_argv(paths)) for _ in range(40)]
    limit = 6 * 2**30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "GENLAB_CACHE": str(tmp_path / "cache"), "PYTHONHASHSEED": "0"}
    result = subprocess.run([sys.executable, str(DRIVER)], input=json.dumps(batch), capture_output=True, text=True,
                            env=env, cwd=tmp_path, preexec_fn=cap, timeout=600)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    outcomes = json.loads(result.stdout)
    assert len(outcomes) == len(batch)
    for argv, (code, out, err) in zip(batch, outcomes):
        check_cli_result(argv, code, out, err)
