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


def random_crop(
    batch: dict[str, torch.Tensor], size: int, ratio: int, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """One random ``size`` x ``size`` crop per batch (offsets multiples of ``ratio`` so the coarse
    ``ms`` stays aligned); a no-op when the patches are not larger than ``size``."""
    ref = batch.get("gt", batch.get("lms"))
    if ref is None:
        raise ValueError(f"batch: a random crop needs 'gt' or 'lms', got keys {sorted(batch)}")
    h, w = ref.shape[-2:]
    if size <= 0 or (h <= size and w <= size):
        return batch
    if size % ratio:
        raise ValueError(f"patch_size {size} must be a multiple of the ratio {ratio}")
    size_h, size_w = min(size, h), min(size, w)
    r0 = int(torch.randint(0, (h - size_h) // ratio + 1, (1,), generator=generator)) * ratio
    c0 = int(torch.randint(0, (w - size_w) // ratio + 1, (1,), generator=generator)) * ratio
    out = dict(batch)
    for key, value in batch.items():
        if key not in IMAGE_KEYS:
            continue
        if value.shape[-2:] == (h, w):
            out[key] = value[..., r0 : r0 + size_h, c0 : c0 + size_w]
        else:  # the coarse ms
            out[key] = value[..., r0 // ratio : (r0 + size_h) // ratio, c0 // ratio : (c0 + size_w) // ratio]
    return out
