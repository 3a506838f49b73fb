"""Quicklook PNGs: true-colour composite with a per-band percentile stretch."""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from ddif.utils.io import atomic_write_bytes


def stretch_rgb(image, rgb_bands: Sequence[int], percentiles: tuple[float, float] = (2.0, 98.0),
                valid_mask: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) array/tensor -> (H, W, 3) uint8, each band stretched between its percentiles
    (computed over ``valid_mask`` when given, so fill areas do not skew the stretch)."""
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"quicklook: expected a (C, H, W) image, got shape {arr.shape}")
    bands = list(rgb_bands) if arr.shape[0] >= 3 else [0, 0, 0]
    if max(bands) >= arr.shape[0]:
        raise ValueError(f"quicklook: rgb bands {tuple(bands)} out of range for {arr.shape[0]} bands")
    out = np.zeros(arr.shape[1:] + (3,), dtype=np.uint8)
    for i, b in enumerate(bands):
        band = arr[b]
        values = band[valid_mask] if valid_mask is not None else band
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, percentiles)
        scaled = (band - lo) / (hi - lo) if hi > lo else np.zeros_like(band)
        out[..., i] = (np.clip(np.nan_to_num(scaled), 0, 1) * 255 + 0.5).astype(np.uint8)
    if valid_mask is not None:
        out[~valid_mask] = 0
    return out


def save_quicklook(image, path: str | os.PathLike, rgb_bands: Sequence[int],
                   percentiles: tuple[float, float] = (2.0, 98.0), valid_mask: np.ndarray | None = None) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(stretch_rgb(image, rgb_bands, percentiles, valid_mask)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
