"""ddif: a fast, faithful engine for diffusion-based image fusion (DDIF, Cao et al. 2024).

Public entry points are imported lazily so that ``import ddif`` does no work.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "DDIF": "ddif.models",
    "load_published": "ddif.models",
    "Fuser": "ddif.fuser",
    "get_preset": "ddif.config",
    "preset_names": "ddif.config",
    "Preset": "ddif.config",
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ddif' has no attribute {name!r}")
