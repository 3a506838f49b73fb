"""Cloud masks from Landsat quality bands.

Clouds move between the PAN and MS acquisitions of a push-broom scanner (the focal-plane bands
look at a point a fraction of a second apart, and clouds stand kilometres above the ground and
drift), so a cloud is misregistered between PAN and MS by about a PAN pixel even in a
well-registered scene. Training pairs and registration estimates leave clouds (and a margin around
them) out.

Landsat-8/9 quality bands, three generations (USGS product guides):

- **Pre-collection** (``LC8...LGN00`` scene IDs, BQA): two-bit confidences, cloud in bits 14-15,
  cirrus in bits 12-13, snow / ice 10-11, water 4-5; bit 0 designated fill.
- **Collection 1** (``LC08_L1TP_..._01_T1``, BQA): bit 0 fill, bit 4 cloud, bits 5-6 cloud
  confidence, bits 7-8 cloud-shadow confidence, bits 11-12 cirrus confidence.
- **Collection 2** (``..._02_T1``, QA_PIXEL): bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud,
  4 cloud shadow, bits 8-9 cloud confidence, 10-11 shadow confidence, 14-15 cirrus confidence.

Confidence values: 1 low, 2 medium, 3 high. :func:`landsat_cloud_mask` marks medium and high
cloud (and, where the band has them, shadow and high cirrus).
"""

from __future__ import annotations

import numpy as np

QA_GENERATIONS = ("pre-collection", "collection1", "collection2")


def _bits(qa: np.ndarray, first: int, count: int = 1) -> np.ndarray:
    return (qa.astype(np.uint32) >> first) & ((1 << count) - 1)


def qa_generation(metadata: dict[str, str]) -> str:
    """Which QA layout a Landsat product has, from its ``_MTL.txt`` entries."""
    collection = metadata.get("COLLECTION_NUMBER", "").strip().lstrip("0")
    if collection == "2":
        return "collection2"
    if collection == "1":
        return "collection1"
    return "pre-collection"


def landsat_cloud_mask(qa: np.ndarray, generation: str, *, cirrus: bool = True) -> np.ndarray:
    """(H, W) True where the quality band says cloud (medium / high confidence), cloud shadow
    (where recorded) or high-confidence cirrus (``cirrus``), or fill."""
    if generation not in QA_GENERATIONS:
        raise ValueError(f"generation must be one of {QA_GENERATIONS}, got {generation!r}")
    if generation == "pre-collection":
        mask = _bits(qa, 14, 2) >= 2
        if cirrus:
            mask |= _bits(qa, 12, 2) == 3
        mask |= _bits(qa, 0) == 1
        return mask
    if generation == "collection1":
        mask = (_bits(qa, 4) == 1) | (_bits(qa, 5, 2) >= 2) | (_bits(qa, 7, 2) >= 2)
        if cirrus:
            mask |= _bits(qa, 11, 2) == 3
        mask |= _bits(qa, 0) == 1
        return mask
    mask = (_bits(qa, 3) == 1) | (_bits(qa, 1) == 1) | (_bits(qa, 4) == 1) | (_bits(qa, 8, 2) >= 2)
    if cirrus:
        mask |= _bits(qa, 14, 2) == 3
    mask |= _bits(qa, 0) == 1
    return mask


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2 radius + 1) square (separable running maximum)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    m = mask.astype(bool)
    out = m.copy()
    for axis in (0, 1):
        src = out.copy()
        n = src.shape[axis]
        for d in range(1, radius + 1):
            if d >= n:
                break
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


__all__ = ["QA_GENERATIONS", "qa_generation", "landsat_cloud_mask", "dilate"]
