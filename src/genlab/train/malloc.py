"""Keep the memory a training step frees inside the process, where the C library allows it (glibc).

glibc's malloc serves a block of at least its mmap threshold with a fresh ``mmap`` and gives it back with
``munmap`` when freed, and returns the free top of its heap to the system once that exceeds its trim threshold. Both
thresholds start at 128 KB and follow the largest block freed so far, up to 32 MB (mmap) and twice that (trim). A
PixelCNN step frees tens of megabytes of activations and gradients in blocks of a few megabytes each, so the heap is
trimmed after each step and the next step takes every page back with a page fault: about 10,000 faults a step for
``pixelcnn --preset mnist-2h`` (batch 64, bf16, channels-last). Fixing the mmap threshold at 32 MB and the trim
threshold at 256 MB keeps those pages in the process: under 100 faults a step (``bench/malloc.py`` measures the
faults and the seconds). The price is that a process may hold up to 256 MB of memory it has freed until it exits.

The setting is process-wide and lasts until the process ends. Nothing is changed off glibc (macOS, musl), nor when
the environment already sets malloc's thresholds (``GLIBC_TUNABLES`` naming ``glibc.malloc``, or the older
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_``): the user's choice stands.
"""
from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit systems (half its 64 MB heap size)
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_held: bool | None = None  # None until the first call decides


def user_set_malloc(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment already tunes glibc's malloc thresholds."""
    return "glibc.malloc." in environ.get("GLIBC_TUNABLES", "") or any(name in environ for name in _ENVIRONMENT)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def hold_freed_memory() -> bool:
    """Set glibc's mmap threshold to 32 MB and its trim threshold to 256 MB for this process, once; True when the
    process holds its freed memory (now or from an earlier call), False where this is not glibc or the environment
    set malloc's thresholds itself."""
    global _held
    if _held is None:
        libc = None if user_set_malloc() else _glibc()
        _held = (libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _held
