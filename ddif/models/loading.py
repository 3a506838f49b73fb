"""Kept for compatibility: :func:`load_model` is :meth:`ddif.DDIF.from_pretrained`."""

from __future__ import annotations

import os

import torch

from ddif.config import Preset
from ddif.models.ddif import DDIF


def load_model(
    path: str | os.PathLike,
    preset: str | Preset | None = None,
    *,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
) -> DDIF:
    """Alias of ``DDIF.from_pretrained(path, preset, use_ema=...)``."""
    return DDIF.from_pretrained(path, preset, use_ema=use_ema, map_location=map_location)
