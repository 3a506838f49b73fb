"""Augmentation: the same random flip / rot90 applied to every image of a sample.

Pansharpening samples are several co-registered images at two resolutions (``gt``, ``lms``,
``pan`` on the PAN grid, ``ms`` on the coarse grid). Flips and 90-degree rotations act on the
last two axes only, so they commute with decimation by the ratio and keep every key aligned
with the others, whatever its resolution.

Training augments in one place: :class:`ddif.training.Trainer` draws a dihedral element per sample
from its checkpointed generator (:func:`ddif.training.augment.dihedral_augment`). Datasets do not
augment unless asked (``FusionH5(..., augment=True)`` or a callable), for uses outside the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

Sample = dict[str, torch.Tensor]


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """One of the 8 symmetries of the square on the last two axes: optional horizontal flip,
    then ``k`` counter-clockwise quarter turns."""
    if flip:
        x = torch.flip(x, dims=(-1,))
    if k % 4:
        x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.contiguous()


class RandomDihedral:
    """Draw one element of the dihedral group D4 per sample and apply it to every tensor in it.

    Randomness comes from ``generator`` when given, otherwise from torch's global RNG, which
    ``torch.utils.data.DataLoader`` seeds differently in every worker (base seed + worker id), so
    a seeded training run draws the same augmentations every time.
    """

    def __init__(self, flips: bool = True, rotations: bool = True, generator: torch.Generator | None = None):
        self.flips = flips
        self.rotations = rotations
        self.generator = generator

    def draw(self) -> tuple[int, bool]:
        r = int(torch.randint(0, 8, (1,), generator=self.generator).item())
        k = r % 4 if self.rotations else 0
        flip = bool(r // 4) if self.flips else False
        return k, flip

    def __call__(self, sample: Mapping[str, torch.Tensor]) -> Sample:
        k, flip = self.draw()
        if k % 2 and any(v.shape[-1] != v.shape[-2] for v in sample.values()):
            k -= 1  # quarter turns would transpose non-square images and break batching
        return {key: dihedral(value, k, flip) for key, value in sample.items()}

    def __repr__(self) -> str:
        return f"RandomDihedral(flips={self.flips}, rotations={self.rotations})"


def resolve_augment(augment: bool | Callable[[Sample], Sample] | None) -> Callable[[Sample], Sample] | None:
    """What a dataset applies to each item it serves: ``None`` / ``False`` -> nothing (the default:
    the :class:`ddif.training.Trainer` augments its batches itself, so a dataset fed to it must
    not), ``True`` -> :class:`RandomDihedral`, a callable (sample dict -> sample dict) as given."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return RandomDihedral()
    if callable(augment):
        return augment
    raise ValueError(f"augment must be None, a bool or a callable(sample) -> sample, got {augment!r}")
