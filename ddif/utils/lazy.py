"""Lazy re-exports for package ``__init__`` modules: ``import ddif.runtime`` (say) loads nothing
heavy; a name is imported from its submodule the first time it is used, then cached."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for a package whose public ``name`` lives in module
    ``table[name]``; ``namespace`` is the package's ``globals()`` (resolved names are cached there)."""

    def __getattr__(name: str):
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
