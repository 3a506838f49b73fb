"""The images a method is evaluated on: :class:`EvalSet` (lms, pan, ms, and gt at reduced
resolution), from a dataset or built by hand. Used by ``ddif evaluate`` / ``ddif demo``
(:mod:`ddif.evaluation`) and by training's validation (:mod:`ddif.training.distill`)."""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.utils.data import Dataset


@dataclass
class EvalSet:
    lms: torch.Tensor
    pan: torch.Tensor
    ms: torch.Tensor | None  # needed by the classical baselines and the full-resolution metrics
    gt: torch.Tensor | None = None  # present at reduced resolution

    def __len__(self) -> int:
        return self.lms.shape[0]


def eval_set_from_dataset(ds: Dataset, limit: int | None = None) -> EvalSet:
    """The first ``limit`` items of ``ds`` (a dataset with a length, of dicts with ``lms``,
    ``pan`` and optionally ``ms``, ``gt``) stacked, as stored: a dataset opened with augmentation
    (``FusionH5(..., augment=...)``) is read without it."""
    if not isinstance(ds, Sized):
        raise TypeError(f"{ds!r}: an evaluation set is read from a dataset with a length (__len__)")
    n = len(ds) if limit is None else min(limit, len(ds))
    read = getattr(ds, "read", None)
    get = read if getattr(ds, "augment", None) is not None and callable(read) else ds.__getitem__
    items = [get(i) for i in range(n)]

    def stack(key: str) -> torch.Tensor | None:
        return torch.stack([it[key] for it in items]) if key in items[0] else None

    lms, pan = stack("lms"), stack("pan")
    if lms is None or pan is None:
        raise ValueError(f"{ds!r}: items need 'lms' and 'pan' to be evaluated on, got {sorted(items[0])}")
    return EvalSet(lms=lms, pan=pan, ms=stack("ms"), gt=stack("gt"))
