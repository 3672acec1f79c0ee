"""Name -> thing tables: ``MODELS`` (family name -> ``GenerativeModel`` subclass) and ``DATASETS`` (dataset name ->
``DatasetEntry``), both ``Registry`` objects.

A family registers itself with ``@MODELS.register("vae")`` in its own file, a dataset loader with
``@DATASETS.register("mnist", ...)``. This module imports neither: ``genlab/models/__init__.py`` and
``genlab/data/catalog.py`` import every family and dataset file explicitly, and code that looks a name up imports
one of those first (``genlab.config`` imports ``genlab.models``), so a table is complete before it is read and no
import goes back up.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from genlab.errors import ConfigError, DatasetError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered table of named entries with one-line errors that suggest the closest name."""

    def __init__(self, kind: str, *, error: type[Exception] = ConfigError):
        # ``error``: the GenlabError raised for an unknown name (a ConfigError for models, DatasetError for data)
        self.kind = kind  # "model" or "dataset": names the entries in messages
        self._error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; registering a different entry under a taken name is a bug."""
        if name in self._entries and self._entries[name] is not entry:
            raise RuntimeError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``; a class gets ``family = name`` (how a model knows its registered name)."""

        def wrap(entry: T) -> T:
            self.add(name, entry)
            if isinstance(entry, type):
                entry.family = name  # type: ignore[attr-defined]
            return entry

        return wrap

    def remove(self, name: str) -> None:
        """Take ``name`` out again (for tests that register something temporary)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise self.unknown(name) from None

    def unknown(self, name: str, shown: list[str] | None = None) -> Exception:
        """The error for a name that is not registered: the closest name, and every valid one."""
        shown = shown if shown is not None else self.names()
        close = difflib.get_close_matches(name, shown, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return self._error(f"unknown {self.kind} {name!r}{hint}; choose one of {', '.join(shown)}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MODELS: Registry[Any] = Registry("model")
DATASETS: Registry[Any] = Registry("dataset", error=DatasetError)
