"""How an image is cut into the tiles the network samples, padded, seeded and blended back.

Every entry point (``ddif.Fuser``, the ``ddif.runtime`` backends, ``ddif station``) lays an image
out with :class:`Tiling`, so all of them sample the same tiles with the same noise:

- **tiled** (``tile_size > 0``, e.g. the shipped ``landsat_small`` checkpoint: 32 px tiles, 8 px
  overlap): every tile is ``tile_size x tile_size``. An image side shorter than a tile is padded
  up to the tile (reflect where possible, else replicate); a longer side is covered by tiles that
  lie inside the image (:class:`ddif.utils.tile_grid.TileGrid`), so nothing else is padded and a
  scene read by windows gives the same tiles as the whole image in memory.
- **whole image** (``tile_size == 0``, the published presets): one tile per image, padded at the
  bottom / right to the network's size multiple.

A tile's initial noise x_T is a counter-based draw keyed by ``derive_seed(seed, image, tile)``
(:func:`tile_noise_batch`: integer hashing of (key, element index), for a whole batch at once, on
the backend's device): it depends on the tile's position only, not on batching, device, resume or
the backend. Overlapping tiles are blended with the smooth partition of unity of
:func:`ddif.utils.tile_grid.blend_window` (the station assembles its product with the same function).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ddif.utils.seeding import derive_seed, generator_for
from ddif.utils.tile_grid import TileGrid, pad_to  # noqa: F401 (pad_to: part of this layer's API)

if TYPE_CHECKING:
    from ddif.config import Preset

# Default network batch on CPUs (GPU samplers say what fills the device: ``preferred_batch``): about
# this many pixels of tiles per call. Small batches keep a call's activations in the CPU caches:
# measured on a 2-core x86-64 CPU with the shipped 32 px models, 2 steps, 2 threads, ONNX Runtime
# 4.1 ms per tile at 32 tiles, 4.4 at 64, 5.4 at 128, 8.2 at 256; PyTorch 6.7 at 32 and 64, 11.6
# at 256.
DEFAULT_BATCH_PIXELS = 1 << 15


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


def check_tiling(actual: Tiling, tile_size: int | None, overlap: int | None = None, *, what: str, fix: str) -> None:
    """The one check (and message) that a backend, graph or plan samples the tiles asked for:
    ValueError "``what`` samples <its tiling>, not <asked>: ``fix``" when ``tile_size`` / ``overlap``
    (None: not asked) differ from ``actual``'s."""
    size_differs = tile_size is not None and actual.tile_size != int(tile_size)
    overlap_differs = overlap is not None and actual.overlap != int(overlap)
    if size_differs or overlap_differs:
        asked = f"{int(tile_size)} px tiles" if tile_size is not None else "its tile size"
        if overlap is not None:
            asked += f" with {int(overlap)} px overlap"
        raise ValueError(f"{what} samples {actual.describe()}, not {asked}: {fix}")


def default_overlap(tile_size: int) -> int:
    """Overlap used with a tile size other than the model's: 1/8 of the tile (32 px for 256 px)."""
    return tile_size // 8 if tile_size else 0


_M32 = 0xFFFFFFFF
_shr = torch.bitwise_right_shift  # (the ``>>`` operator takes a slower path on CPU)


def _signed32(c: int) -> int:
    return c - (1 << 32) if c >= (1 << 31) else c


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """The "lowbias32" integer hash (C. Wellons, hash-prospector) of int32 words, read as
    unsigned: logical shifts (masked arithmetic ones) and products wrapped mod 2**32, which is
    what CPU and CUDA integer multiplication do; a bijection with low bias."""
    x = x ^ (_shr(x, 16) & 0xFFFF)
    x = x * _signed32(0x7FEB352D)
    x = x ^ (_shr(x, 15) & 0x1FFFF)
    x = x * _signed32(0x846CA68B)
    return x ^ (_shr(x, 16) & 0xFFFF)


def counter_normal(
    keys: torch.Tensor, shape: tuple[int, ...], device: torch.device | str | None = None
) -> torch.Tensor:
    """Standard normal noise, one ``shape`` block per 63-bit key of ``keys`` (N,), as a pure
    function of (key, element index): a counter-based generator (each value hashes its key and
    counter, as Philox does), drawn for the whole batch at once on ``device`` with 32-bit integer
    arithmetic that is exact everywhere, so CPU and GPU give the same uniforms (the Box-Muller
    transform's float32 log / cos / sin agree to rounding). Returns (N, *shape) float32."""
    keys = torch.as_tensor(keys, dtype=torch.int64)
    k_lo = torch.where((keys & _M32) >= (1 << 31), (keys & _M32) - (1 << 32), keys & _M32).to(torch.int32)
    k_hi = (_shr(keys, 32) & 0x7FFFFFFF).to(torch.int32)
    key = _mix32(_mix32(k_lo) ^ k_hi).to(device)[:, None]  # one word per tile
    n = int(math.prod(shape))
    pairs = (n + 1) // 2  # Box-Muller: two normals per pair of uniforms
    counter = torch.arange(pairs, dtype=torch.int32, device=key.device) * 2

    def uniform(stream: int) -> torch.Tensor:
        h = _mix32((counter + stream)[None, :] ^ key)
        return ((_shr(h, 8) & 0xFFFFFF).to(torch.float32) + 0.5) * (1.0 / 16777216.0)  # (0, 1), 24 bits

    radius = torch.sqrt(-2.0 * torch.log(uniform(0)))
    angle = (2.0 * math.pi) * uniform(1)
    z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n]
    return z.reshape((keys.shape[0],) + tuple(shape))


def tile_noise_batch(
    seed: int | None,
    images: int | Sequence[int],
    tiles: Sequence[int],
    shape: tuple[int, ...],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """x_T of a batch of tiles, (N, *shape) float32: tile k's noise is a function of
    ``(seed, image_k, tile_k)`` only (:func:`counter_normal` keyed by ``derive_seed``), whatever
    the batch, the device or the order of the work (``seed=None``: torch's global generator)."""
    tiles = [int(t) for t in tiles]
    image_list = [int(images)] * len(tiles) if isinstance(images, int) else [int(i) for i in images]
    if len(image_list) != len(tiles):
        raise ValueError(f"{len(image_list)} image indices for {len(tiles)} tiles")
    if seed is None:
        return torch.randn((len(tiles),) + tuple(shape), dtype=torch.float32, device=device)
    keys = torch.tensor([derive_seed(seed, i, t) for i, t in zip(image_list, tiles)], dtype=torch.int64)
    return counter_normal(keys, tuple(shape), device)


def tile_noise(seed: int | None, image: int, tile: int, shape: tuple[int, ...]) -> torch.Tensor:
    """x_T of one tile (:func:`tile_noise_batch` of one tile)."""
    return tile_noise_batch(seed, image, [tile], shape)[0]


def step_generator(seed: int | None, image: int, tile: int) -> torch.Generator | None:
    """Generator of the per-step noise of a stochastic sampler (DDPM, DDIM eta > 0) for one tile:
    a stream separate from the tile's x_T."""
    return None if seed is None else generator_for(seed, image, tile, 1)


__all__ = [
    "Tiling",
    "DEFAULT_BATCH_PIXELS",
    "default_overlap",
    "pad_to",
    "tile_noise",
    "tile_noise_batch",
    "counter_normal",
    "step_generator",
    "derive_seed",
]
