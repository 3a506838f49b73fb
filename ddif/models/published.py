"""Checkpoints in the layout of the published DDIF code.

The tensor names and shapes are those of ``../shared/reference/ddif_<preset>_state_dict.tsv``.
Checkpoints come bare or wrapped (``state_dict``, ``model``, ``ema`` entries, ``module.`` prefixes
from DistributedDataParallel, ``_orig_mod.`` from torch.compile); all are accepted. Reading them
is :meth:`ddif.DDIF.from_pretrained` with a preset; this module keeps the older name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ddif.config import Preset
from ddif.models.checkpoint import load_state_dict_checked, unwrap_state_dict  # noqa: F401 (re-exported)
from ddif.models.ddif import DDIF


def load_published(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    preset: str | Preset = "wv3",
    prefer: str | None = None,
    map_location: str | torch.device = "cpu",
) -> DDIF:
    """Alias of ``DDIF.from_pretrained(path_or_state_dict, preset, prefer=...)`` (kept for
    compatibility): the model for ``preset`` with published-layout weights, in eval() mode."""
    return DDIF.from_pretrained(path_or_state_dict, preset, prefer=prefer, map_location=map_location)
