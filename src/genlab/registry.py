"""Name -> model family. Families register themselves with ``@register("vae")``; ``models/__init__.py`` imports
each family file explicitly, so the registry is complete once ``genlab.models`` is imported (no scanning)."""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Callable, TypeVar

from genlab.errors import ConfigError

if TYPE_CHECKING:
    from genlab.models.base import GenerativeModel

_FAMILIES: dict[str, type["GenerativeModel"]] = {}
T = TypeVar("T")


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a ``GenerativeModel`` subclass buildable by ``name``."""

    def wrap(cls: T) -> T:
        if name in _FAMILIES and _FAMILIES[name] is not cls:
            raise RuntimeError(f"model family {name!r} is registered twice")
        _FAMILIES[name] = cls  # type: ignore[assignment]
        cls.family = name  # type: ignore[attr-defined]
        return cls

    return wrap


def get_family(name: str) -> type["GenerativeModel"]:
    import genlab.models  # noqa: F401  (fills the registry)

    try:
        return _FAMILIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, _FAMILIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint}; choose one of {', '.join(sorted(_FAMILIES))}") from None


def list_families() -> list[str]:
    import genlab.models  # noqa: F401

    return sorted(_FAMILIES)
