"""How an image is cut into the tiles the network samples, padded, seeded and blended back.

Every entry point (``ddif.Fuser``, the ``ddif.runtime`` backends, ``ddif station``) lays an image
out with :class:`Tiling`, so all of them sample the same tiles with the same noise:

- **tiled** (``tile_size > 0``, e.g. the shipped ``landsat_small`` checkpoint: 32 px tiles, 8 px
  overlap): every tile is ``tile_size x tile_size``. An image side shorter than a tile is padded
  up to the tile (reflect where possible, else replicate); a longer side is covered by tiles that
  lie inside the image (:class:`ddif.utils.tiling.TileGrid`), so nothing else is padded and a
  scene read by windows gives the same tiles as the whole image in memory.
- **whole image** (``tile_size == 0``, the published presets): one tile per image, padded at the
  bottom / right to the network's size multiple.

A tile's initial noise x_T is drawn from ``derive_seed(seed, image, tile)`` on the CPU
(:func:`tile_noise`): it depends on the tile's position only, not on batching, device, resume or
the backend. Overlapping tiles are blended with the smooth partition of unity of
:func:`ddif.utils.tiling.blend_window` (the station assembles its product with the same function).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ddif.utils.seeding import derive_seed, generator_for
from ddif.utils.tiling import TileGrid, pad_to  # noqa: F401 (pad_to: part of this layer's API)

if TYPE_CHECKING:
    from ddif.config import Preset

# Default network batch: about this many pixels of tiles per call (bounded memory whatever the image).
DEFAULT_BATCH_PIXELS = 1 << 20


@dataclass(frozen=True)
class Tiling:
    """Tile geometry of one model: ``tile_size`` (0 = whole image), ``overlap``, and the size
    multiple every network input must have (``2 ** (levels - 1)``)."""

    tile_size: int
    overlap: int
    size_multiple: int

    def __post_init__(self) -> None:
        t, o, m = int(self.tile_size), int(self.overlap), int(self.size_multiple)
        if m < 1:
            raise ValueError(f"size_multiple must be >= 1, got {m}")
        if t < 0 or (t and t % m):
            raise ValueError(
                f"tile_size must be 0 (whole image) or a positive multiple of {m} (the network's size "
                f"multiple), got {t}"
            )
        if t and not 0 <= o <= t // 2:
            raise ValueError(f"tile overlap must lie in [0, tile_size/2 = {t // 2}], got {o}")
        if not t and o:
            raise ValueError(f"tile overlap {o} given without a tile size")

    @classmethod
    def for_preset(cls, preset: Preset, tile_size: int | None = None, overlap: int | None = None) -> Tiling:
        """The model's own tiling (``preset.diffusion.tile_size / tile_overlap``), or overrides."""
        d = preset.diffusion
        t = d.tile_size if tile_size is None else int(tile_size)
        o = (d.tile_overlap if t == d.tile_size else default_overlap(t)) if overlap is None else int(overlap)
        return cls(int(t), int(o if t else 0), int(preset.model.size_multiple))

    @property
    def tiled(self) -> bool:
        return self.tile_size > 0

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image is padded to before it is cut (see the module docstring)."""
        if self.tiled:
            return max(height, self.tile_size), max(width, self.tile_size)
        m = self.size_multiple
        return -(-height // m) * m, -(-width // m) * m

    def grid(self, height: int, width: int) -> TileGrid:
        """The tiles of an image of ``height x width`` (on its padded size)."""
        hp, wp = self.padded_size(height, width)
        if self.tiled:
            return TileGrid(hp, wp, self.tile_size, self.overlap)
        return TileGrid(hp, wp, max(hp, wp), 0)  # one tile: the whole padded image

    def tile_shape(self, height: int, width: int) -> tuple[int, int]:
        grid = self.grid(height, width)
        return grid.tile_h, grid.tile_w

    def default_batch(self, height: int, width: int) -> int:
        th, tw = self.tile_shape(height, width)
        return max(1, DEFAULT_BATCH_PIXELS // (th * tw))

    def to_dict(self) -> dict[str, Any]:
        return {"tile_size": self.tile_size, "overlap": self.overlap, "size_multiple": self.size_multiple}

    def describe(self) -> str:
        if not self.tiled:
            return f"whole image (padded to a multiple of {self.size_multiple})"
        return f"{self.tile_size} px tiles, {self.overlap} px overlap"


def default_overlap(tile_size: int) -> int:
    """Overlap used with a tile size other than the model's: 1/8 of the tile (32 px for 256 px)."""
    return tile_size // 8 if tile_size else 0


def tile_noise(seed: int | None, image: int, tile: int, shape: tuple[int, ...]) -> torch.Tensor:
    """x_T of one tile: float32 standard normal ``shape`` drawn on the CPU from
    ``derive_seed(seed, image, tile)`` (``seed=None``: from torch's global generator)."""
    gen = None if seed is None else generator_for(seed, image, tile)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32)


def step_generator(seed: int | None, image: int, tile: int) -> torch.Generator | None:
    """Generator of the per-step noise of a stochastic sampler (DDPM, DDIM eta > 0) for one tile:
    a stream separate from the tile's x_T."""
    return None if seed is None else generator_for(seed, image, tile, 1)


__all__ = ["Tiling", "DEFAULT_BATCH_PIXELS", "default_overlap", "pad_to", "tile_noise", "step_generator", "derive_seed"]
