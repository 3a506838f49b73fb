"""Quicklook PNGs: true-colour composite with a per-band percentile stretch."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ddif.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    import torch


def _as_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"quicklook: expected a (C, H, W) image, got shape {arr.shape}")
    return arr


def _bands(arr: np.ndarray, rgb_bands: Sequence[int]) -> list[int]:
    bands = list(rgb_bands) if arr.shape[0] >= 3 else [0, 0, 0]
    if max(bands) >= arr.shape[0]:
        raise ValueError(f"quicklook: rgb bands {tuple(bands)} out of range for {arr.shape[0]} bands")
    return bands


def band_limits(
    image: torch.Tensor | np.ndarray,
    rgb_bands: Sequence[int],
    percentiles: tuple[float, float] = (2.0, 98.0),
    valid_mask: np.ndarray | None = None,
) -> list[tuple[float, float] | None]:
    """Per displayed band, the (low, high) percentiles (over ``valid_mask`` when given, so fill
    areas do not skew the stretch); None for a band with no valid value."""
    arr = _as_array(image)
    limits: list[tuple[float, float] | None] = []
    for b in _bands(arr, rgb_bands):
        values = arr[b][valid_mask] if valid_mask is not None else arr[b]
        values = values[np.isfinite(values)]
        if values.size:
            low, high = np.percentile(values, percentiles)
            limits.append((float(low), float(high)))
        else:
            limits.append(None)
    return limits


def stretch_rgb(
    image: torch.Tensor | np.ndarray,
    rgb_bands: Sequence[int],
    percentiles: tuple[float, float] = (2.0, 98.0),
    valid_mask: np.ndarray | None = None,
    limits: Sequence[tuple[float, float] | None] | None = None,
) -> np.ndarray:
    """(C, H, W) array/tensor -> (H, W, 3) uint8, each band stretched linearly between ``limits``
    (default: its own percentiles, see :func:`band_limits`)."""
    arr = _as_array(image)
    bands = _bands(arr, rgb_bands)
    if limits is None:
        limits = band_limits(arr, rgb_bands, percentiles, valid_mask)
    out = np.zeros(arr.shape[1:] + (3,), dtype=np.uint8)
    for i, (b, lim) in enumerate(zip(bands, limits)):
        if lim is None:
            continue
        band = arr[b]
        lo, hi = lim
        scaled = (band - lo) / (hi - lo) if hi > lo else np.zeros_like(band)
        out[..., i] = (np.clip(np.nan_to_num(scaled), 0, 1) * 255 + 0.5).astype(np.uint8)
    if valid_mask is not None:
        out[~valid_mask] = 0
    return out


def save_quicklook(
    image: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    rgb_bands: Sequence[int],
    percentiles: tuple[float, float] = (2.0, 98.0),
    valid_mask: np.ndarray | None = None,
    limits: Sequence[tuple[float, float] | None] | None = None,
) -> None:
    from PIL import Image

    buf = io.BytesIO()
    # zlib level 1: a quicklook is for eyes, not archives (3x faster to encode than the default 6,
    # the file about 15 % larger)
    Image.fromarray(stretch_rgb(image, rgb_bands, percentiles, valid_mask, limits)).save(
        buf, format="PNG", compress_level=1
    )
    atomic_write_bytes(path, buf.getvalue())
