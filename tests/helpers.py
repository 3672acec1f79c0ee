"""What several test modules share that is not a fixture (the fixtures are in ``conftest.py``): where the shared
test data is, the tiny poem corpus, and the in-process ``genlab`` runner with its one-line-error check."""
from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.cli import main
from genlab.data.sources import SYSTEM_DATA_DIRS, cache_dir
from genlab.data.spec import DataSpec
from genlab.errors import DatasetError

# Where the tests find the named datasets (MNIST, Fashion-MNIST, the poems): $GENLAB_DATA when the test run sets
# it (`make test` does when the development data ../shared/data is there), else that folder when it exists, else the
# first of the product's own places that holds MNIST (the cache, the system data folders). The product never looks
# at ../shared/data by itself; tests that need a dataset that is nowhere say so and skip.
DEV_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _data_root() -> Path:
    explicit = os.environ.get("GENLAB_DATA")
    if explicit:
        return Path(explicit).resolve()
    if DEV_DATA.is_dir():
        return DEV_DATA
    for root in (cache_dir(), *map(Path, SYSTEM_DATA_DIRS)):
        if (root / "mnist").is_dir():
            return root.resolve()
    return DEV_DATA


SHARED_DATA = _data_root()

TINY_POEMS = ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。", "床前明月光，疑是地上霜。",
              "舉頭望明月，低頭思故鄉。", "千山鳥飛絕，萬徑人蹤滅。", "孤舟蓑笠翁，獨釣寒江雪。",
              "春眠不覺曉，處處聞啼鳥。", "夜來風雨聲，花落知多少。", "紅豆生南國，春來發幾枝。",
              "願君多采擷，此物最相思。"] * 2


def needs_shared(name: str) -> pytest.MarkDecorator:
    """Skip, saying why and how to provide it, when dataset ``name`` is not in ``SHARED_DATA``."""
    return pytest.mark.skipif(not (SHARED_DATA / name).is_dir(),
                              reason=f"needs the dataset {name!r}, found neither in {SHARED_DATA} nor where genlab "
                                     f"searches; set GENLAB_DATA to a folder holding {name}/ to run it")


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT. A shell without job control starts a background
    command (``make test &``) with SIGINT ignored; its children inherit that, and Python then installs no
    KeyboardInterrupt handler, so the signal would be lost. Give the child the default a terminal's Ctrl-C meets."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run ``genlab ARGS`` in-process; argparse errors exit through SystemExit, which is caught here."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(result: tuple[int, str, str], *needles: str) -> str:
    """Exit code 2, exactly one non-empty line on stderr, no traceback; the line names each of ``needles``."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("genlab"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def one_line_error(call: Callable[[], object], *needles: str) -> str:
    """Run ``call``; it must raise DatasetError with one line that contains every needle."""
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.strip(), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def valid_images(spec: DataSpec, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` valid images of ``spec``, seeded: binary, on its grey levels, or palette colours."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = spec.shape
    if spec.palette:
        pal = torch.tensor(spec.palette)
        return pal[torch.randint(len(pal), (n, h, w), generator=g)].permute(0, 3, 1, 2).contiguous()
    return torch.randint(spec.levels, (n, c, h, w), generator=g).float() / (spec.levels - 1)
