"""Tile grid and the smooth blending of overlapping tiles (used by ddif.Fuser and the station).

Tiles of ``tile_size`` are spread evenly along each axis so that neighbours share at least
``overlap`` pixels and every tile lies inside the scene (a scene side shorter than a tile gets one
tile of that side). Across the band two neighbours share (all of it, capped at half a tile and centred) one
tile's weight rises as ``sin^2(pi/2 * (d + 0.5) / R)`` (``d`` pixels into the band of width
``R``) while the other's falls as ``cos^2`` of the same argument; outside the band each weighs 1
on its own side and 0 on the other. The weights sum to exactly one (a partition of unity,
separable in 2-D), so the blend is a continuous cross-fade with no step at any tile border. The
blend is still divided by the sum of weights, which keeps it exact where a short scene side makes
three tiles overlap. Sides on the scene border get no ramp.

Contributions are summed in tile-index order (row-major), so the blend of a pixel is the same
floating-point expression however the work was scheduled or interrupted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Tile:
    index: int  # row-major index in the full grid (also the seed / journal key)
    grid_row: int
    grid_col: int
    y: int  # top-left corner on the PAN grid
    x: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)


def axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: evenly spread, neighbours share >= ``overlap`` pixels."""
    if length <= 0:
        raise ValueError(f"cannot tile an axis of length {length}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = -(-(length - tile) // stride) + 1
    span = length - tile
    # integer rounding of i * span / (n - 1): exact and platform-independent
    return [(2 * i * span + (n - 1)) // (2 * (n - 1)) for i in range(n)]


def _ramp(width: int) -> np.ndarray:
    """sin^2 ramp rising over ``width`` pixels (float64, pixel centres)."""
    d = np.arange(width, dtype=np.float64)
    return np.sin(0.5 * math.pi * (d + 0.5) / width) ** 2


def crossfade_band(origins: list[int], size: int, i: int) -> tuple[int, int]:
    """Global [start, end) of the cross-fade between tiles ``i`` and ``i + 1``: the whole shared
    width, capped at half a tile and centred in the shared part."""
    shared = origins[i] + size - origins[i + 1]
    width = max(0, min(shared, size // 2))
    start = origins[i + 1] + (shared - width) // 2
    return start, start + width


def axis_weights(origins: list[int], size: int, i: int) -> np.ndarray:
    """1-D blend weight of tile ``i`` along an axis (``size`` = tile side on that axis): 1 inside,
    sin^2 up / cos^2 down across each cross-fade band, 0 beyond the band inside a neighbour."""
    w = np.ones(size, dtype=np.float64)
    o = origins[i]
    if i > 0:
        a, b = crossfade_band(origins, size, i - 1)
        w[: max(0, a - o)] = 0.0
        if b > a:
            w[a - o : b - o] = _ramp(b - a)
    if i < len(origins) - 1:
        a, b = crossfade_band(origins, size, i)
        if b > a:
            w[a - o : b - o] *= _ramp(b - a)[::-1]
        w[b - o :] = 0.0
    return w


@dataclass
class TileGrid:
    height: int
    width: int
    tile_size: int
    overlap: int

    def __post_init__(self) -> None:
        self.rows = axis_origins(self.height, self.tile_size, self.overlap)
        self.cols = axis_origins(self.width, self.tile_size, self.overlap)
        self.tile_h = min(self.tile_size, self.height)
        self.tile_w = min(self.tile_size, self.width)
        self._wy = [axis_weights(self.rows, self.tile_h, i).astype(np.float32) for i in range(len(self.rows))]
        self._wx = [axis_weights(self.cols, self.tile_w, j).astype(np.float32) for j in range(len(self.cols))]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def tile(self, index: int) -> Tile:
        r, c = divmod(index, len(self.cols))
        return Tile(index, r, c, self.rows[r], self.cols[c], self.tile_h, self.tile_w)

    def __iter__(self) -> Iterator[Tile]:
        return (self.tile(i) for i in range(len(self)))

    def weights(self, tile: Tile) -> np.ndarray:
        """(h, w) float32 blend weights of ``tile``."""
        return np.outer(self._wy[tile.grid_row], self._wx[tile.grid_col])

    def _axis_hits(self, origins: list[int], size: int, lo: int, hi: int) -> list[int]:
        return [i for i, o in enumerate(origins) if o < hi and o + size > lo]

    def tiles_in(self, y0: int, x0: int, h: int, w: int) -> list[Tile]:
        """Tiles that intersect the window, in index order."""
        rows = self._axis_hits(self.rows, self.tile_h, y0, y0 + h)
        cols = self._axis_hits(self.cols, self.tile_w, x0, x0 + w)
        return [self.tile(r * len(self.cols) + c) for r in rows for c in cols]


def blend_window(
    grid: TileGrid,
    y0: int,
    x0: int,
    h: int,
    w: int,
    bands: int,
    load: Callable[[Tile, slice, slice], np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Blend every tile intersecting the window [y0, y0+h) x [x0, x0+w).

    ``load(tile, rows, cols)`` returns the tile's (bands, len(rows), len(cols)) float32 values at
    tile-local ``rows, cols`` (or None for a tile that was not fused: all nodata). Returns the
    blended (bands, h, w) float32 image and the (h, w) sum of weights (0 where no tile covered).
    """
    num = np.zeros((bands, h, w), dtype=np.float32)
    den = np.zeros((h, w), dtype=np.float32)
    for t in grid.tiles_in(y0, x0, h, w):
        ty0, ty1 = max(y0, t.y), min(y0 + h, t.y + t.height)
        tx0, tx1 = max(x0, t.x), min(x0 + w, t.x + t.width)
        local = (slice(ty0 - t.y, ty1 - t.y), slice(tx0 - t.x, tx1 - t.x))
        values = load(t, *local)
        if values is None:
            continue
        wt = grid.weights(t)[local]
        out = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
        num[(slice(None),) + out] += values * wt
        den[out] += wt
    covered = den > 0
    np.divide(num, den, out=num, where=covered[None])
    return num, den


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad ``x`` (..., h, w) at the bottom / right to ``height x width``: reflect where the pad is
    shorter than the side, else replicate (reflection needs pad < side)."""
    import torch.nn.functional as F  # torch only when padding: this module is numpy-only at import

    h, w = x.shape[-2:]
    ph, pw = height - h, width - w
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {h}x{w} down to {height}x{width}")
    if not (ph or pw):
        return x
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    squeeze = x.dim() == 3
    y = F.pad(x[None] if squeeze else x, (0, pw, 0, ph), mode=mode)
    return y[0] if squeeze else y
