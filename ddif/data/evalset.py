"""The images a method is evaluated on: :class:`EvalSet` (lms, pan, ms, and gt at reduced
resolution), from a dataset or built by hand. Used by ``ddif evaluate`` / ``ddif demo``
(:mod:`ddif.evaluation`) and by training's validation (:mod:`ddif.training.distill`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EvalSet:
    lms: torch.Tensor
    pan: torch.Tensor
    ms: torch.Tensor
    gt: torch.Tensor | None = None  # present at reduced resolution

    def __len__(self) -> int:
        return self.lms.shape[0]


def eval_set_from_dataset(ds, limit: int | None = None) -> EvalSet:
    """The first ``limit`` items of ``ds`` stacked, as stored: a dataset opened with augmentation
    (``FusionH5(..., augment=...)``) is read without it."""
    n = len(ds) if limit is None else min(limit, len(ds))
    read = getattr(ds, "read", None)
    get = read if getattr(ds, "augment", None) is not None and callable(read) else ds.__getitem__
    items = [get(i) for i in range(n)]
    stack = lambda k: torch.stack([it[k] for it in items]) if k in items[0] else None  # noqa: E731
    return EvalSet(lms=stack("lms"), pan=stack("pan"), ms=stack("ms"), gt=stack("gt"))
