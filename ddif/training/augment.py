"""Training augmentation: a random element of the dihedral group (flips and 90-degree
rotations) per sample, applied identically to every image of the sample."""
from __future__ import annotations

import torch

IMAGE_KEYS = ("gt", "ms", "lms", "pan")


def dihedral_transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` in [0, 8) of the dihedral group on the last two axes: rot90 ** (k % 4), then
    a horizontal flip when k >= 4."""
    x = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def dihedral_augment(batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Random flip / rot90 per sample (rotations only when every image is square)."""
    images = {k: v for k, v in batch.items() if k in IMAGE_KEYS}
    if not images:
        return batch
    square = all(v.shape[-1] == v.shape[-2] for v in images.values())
    n = next(iter(images.values())).shape[0]
    ks = torch.randint(0, 8 if square else 2, (n,), generator=generator).tolist()
    if not square:
        ks = [4 * k for k in ks]              # identity or horizontal flip only
    out = dict(batch)
    for key, value in images.items():
        out[key] = torch.stack([dihedral_transform(value[i], k) for i, k in enumerate(ks)])
    return out
