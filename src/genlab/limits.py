"""The limits that bound what a hostile file or flag can make genlab allocate, each read from an environment
variable when set: a header, a config or a few kB of JSON must not be able to ask for gigabytes."""
from __future__ import annotations

import os

from genlab.errors import ConfigError, DatasetError, GenlabError

MAX_DATA_BYTES_ENV, DEFAULT_MAX_DATA_BYTES = "GENLAB_MAX_DATA_BYTES", 2 * 1024**3  # one data file, decoded
MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS = "GENLAB_MAX_IMAGE_PIXELS", 4096 * 4096  # one image of a folder
MAX_PARAMETERS_ENV, DEFAULT_MAX_PARAMETERS = "GENLAB_MAX_PARAMETERS", 100_000_000  # one model, buffers included


def env_limit(variable: str, default: int, unit: str, example: str, error: type[GenlabError]) -> int:
    """``$variable`` as a positive whole number of ``unit``, else ``default``; any other value raises ``error``
    with one line that says what to set (``example``)."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise error(f"{variable}={raw!r} is not a positive whole number of {unit}; set it to e.g. {example} or "
                    "unset it for the default")
    return value


def max_data_bytes() -> int:
    """The most bytes of data one file may hold or declare (2 GiB unless ``$GENLAB_MAX_DATA_BYTES`` says)."""
    return env_limit(MAX_DATA_BYTES_ENV, DEFAULT_MAX_DATA_BYTES, "bytes", f"{4 * 1024**3} (4 GiB)", DatasetError)


def max_image_pixels() -> int:
    """The most pixels (width x height) one image of a folder may declare (4096 x 4096 unless
    ``$GENLAB_MAX_IMAGE_PIXELS`` says). PIL's own decompression-bomb limit still applies above it."""
    return env_limit(MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS, "pixels", f"{8192 * 8192} (8192x8192)",
                     DatasetError)


def max_parameters() -> int:
    """The most parameters and buffers a model may have (1e8 unless ``$GENLAB_MAX_PARAMETERS`` says)."""
    return env_limit(MAX_PARAMETERS_ENV, DEFAULT_MAX_PARAMETERS, "parameters", "500000000", ConfigError)


# --- the data limit's checks and message ---

class DataLimitExceeded(DatasetError):
    """A file holds, or declares, more data than ``max_data_bytes()`` allows."""


def format_bytes(n: int) -> str:
    """``2147483648`` -> ``2.0 GiB``; sizes under 1 KiB stay in bytes."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_data_size(what: str, size: int, *, declared: bool = False) -> None:
    """Raise ``DataLimitExceeded`` naming ``what`` when ``size`` bytes are over ``max_data_bytes()``."""
    limit = max_data_bytes()
    if size > limit:
        verb = "declares" if declared else "holds"
        raise limit_error(f"{what} {verb} {format_bytes(size)} of data, which", limit)


def limit_error(subject: str, limit: int, thing: str = "file") -> DataLimitExceeded:
    """The one-line error for data over the limit: ``<subject> exceeds the limit of ...`` and how to lift it."""
    return DataLimitExceeded(
        f"{subject} exceeds the limit of {format_bytes(limit)} ({MAX_DATA_BYTES_ENV}); raise it if the {thing} is "
        "genuine"
    )
