"""ddif: a fast, faithful engine for diffusion-based image fusion (DDIF, Cao et al. 2024).

Public entry points are imported lazily so that ``import ddif`` does no work.
"""

from __future__ import annotations

from ddif.utils.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
