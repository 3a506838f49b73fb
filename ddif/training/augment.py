"""Batch augmentation for the trainer: a random element of the dihedral group per sample, drawn
from the trainer's checkpointed generator (so a resumed run draws the same ones), applied with
:func:`ddif.data.augment.dihedral` to every image of the sample."""
from __future__ import annotations

import torch

from ddif.data.augment import dihedral

IMAGE_KEYS = ("gt", "ms", "lms", "pan")


def dihedral_augment(batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Random flip / rot90 per sample (rotations only when every image is square)."""
    images = {k: v for k, v in batch.items() if k in IMAGE_KEYS}
    if not images:
        return batch
    square = all(v.shape[-1] == v.shape[-2] for v in images.values())
    n = next(iter(images.values())).shape[0]
    draws = torch.randint(0, 8, (n,), generator=generator).tolist()
    out = dict(batch)
    for key, value in images.items():
        out[key] = torch.stack([dihedral(value[i], r % 4 if square else 0, r >= 4) for i, r in enumerate(draws)])
    return out
