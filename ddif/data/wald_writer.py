"""The Wald degradation of one region of a prepared scene, and the ``.h5`` file of each split.

Each region is degraded on its own (:func:`degrade_region`), its fill patched from its own pixels
only, so no pixel of one split reaches another's file, not even through the filter support. The
MS at its native resolution is ``gt``; ``ms`` / ``lms`` / ``pan`` come from
:func:`ddif.data.mtf.simulate_reduced_resolution` (or, without a real PAN, from the MS path of the
protocol plus :func:`ddif.data.synthetic_pan.synthesize_pan` of ``gt``).

numpy only at import; torch, h5py and the MTF filters are imported when writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddif.data.synthetic_pan import synthesize_pan

if TYPE_CHECKING:
    from ddif.data.dataset_config import MakeDatasetConfig
    from ddif.data.sources import PreparedScene
    from ddif.data.splits import Region

IMAGE_KEYS = ("gt", "ms", "lms", "pan")
WRITE_BATCH = 256  # patches appended to the file at a time


def fill_holes(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Replace fill pixels by each band's median of valid pixels, so that the filters do not ring
    on a jump to zero (affected patches are skipped anyway; this keeps the damage local)."""
    if not fill.any():
        return x
    x = x.copy()
    valid = ~fill
    for b in range(x.shape[0]):
        x[b][fill] = np.median(x[b][valid]) if valid.any() else 0.0
    return x


def wald(
    gt: np.ndarray, pan_full: np.ndarray | None, pan_weights: Sequence[float], cfg: MakeDatasetConfig
) -> dict[str, np.ndarray]:
    """gt (C, H, W) in [0, 1] on the reduced-resolution PAN grid; pan_full (P, rH, rW) or None
    (synthetic PAN). Returns gt, ms (C, H/r, W/r), lms (C, H, W), pan (P, H, W)."""
    import torch

    from ddif.data.mtf import degrade, simulate_reduced_resolution, upsample

    gt_t = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32))[None]
    with torch.no_grad():
        if pan_full is not None:
            pan_t = torch.from_numpy(np.ascontiguousarray(pan_full, dtype=np.float32))[None]
            rr = simulate_reduced_resolution(
                gt_t, pan_t, ratio=cfg.ratio, sensor=cfg.sensor, interpolation=cfg.interpolation, padding=cfg.padding
            )
            out = {"gt": rr.gt, "ms": rr.ms, "lms": rr.lms, "pan": rr.pan}
        else:
            # Semi-synthetic: the MS path of the protocol as in simulate_reduced_resolution; the PAN
            # on the gt grid is synthesised from gt itself (so it is as sharp as gt, as a real PAN
            # degraded to that grid would be).
            ms_lr = degrade(gt_t, cfg.sensor, cfg.ratio, kind="ms")
            lms = upsample(ms_lr, cfg.ratio, method=cfg.interpolation, padding=cfg.padding)
            out = {"gt": gt_t, "ms": ms_lr, "lms": lms, "pan": synthesize_pan(gt_t, pan_weights)}
    return {k: v[0].float().numpy() for k, v in out.items()}


def degrade_region(scene: PreparedScene, region: Region, cfg: MakeDatasetConfig) -> dict[str, np.ndarray]:
    """gt / ms / lms / pan of ``region`` alone. Fill is patched from this region's own pixels
    only: nothing outside it may leak in."""
    r = cfg.ratio
    rows, cols = region.slices
    gt = fill_holes(scene.ms[:, rows, cols], scene.fill[rows, cols])
    pan_full = None
    if scene.pan is not None:
        assert scene.pan_fill is not None  # loaded with the PAN (prepare_scene)
        prow, pcol = slice(r * rows.start, r * rows.stop), slice(r * cols.start, r * cols.stop)
        pan_full = fill_holes(scene.pan[:, prow, pcol], scene.pan_fill[prow, pcol])
    return wald(gt, pan_full, cfg.pan_weights, cfg)


def _writer(path: Path, scene: PreparedScene, cfg: MakeDatasetConfig, attrs: dict[str, Any]):
    from ddif.data.h5_writer import FusionH5Writer

    return FusionH5Writer(path, max_dn=scene.out_max, compression=cfg.compression or None, attrs=attrs)


def _scene_coords(corners: np.ndarray, region: Region, origin: tuple[int, int]) -> np.ndarray:
    """Corners within ``region`` as (row, col) of the MS source (before any crop)."""
    offset = np.array([origin[0] + region.row, origin[1] + region.col])
    return (np.asarray(corners).reshape(-1, 2) + offset).astype(np.int32)


def write_patches(
    path: Path,
    scene: PreparedScene,
    region: Region,
    corners: np.ndarray,
    cfg: MakeDatasetConfig,
    attrs: dict[str, Any],
    progress: bool = False,
) -> None:
    """Degrade ``region`` and write the ``patch_size`` patches at ``corners`` (in the region, gt
    grid) to ``path``, each with its ``coords`` in the MS source."""
    r, p = cfg.ratio, cfg.patch_size
    q = p // r
    images = degrade_region(scene, region, cfg)
    with _writer(path, scene, cfg, attrs) as w:
        starts = range(0, len(corners), WRITE_BATCH)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"{attrs.get('split', '')} patches", unit="batch")
        for start in starts:
            chunk = corners[start : start + WRITE_BATCH]
            batch: dict[str, list[np.ndarray]] = {k: [] for k in IMAGE_KEYS}
            for y, x in chunk:
                for k in ("gt", "lms", "pan"):
                    batch[k].append(images[k][:, y : y + p, x : x + p])
                batch["ms"].append(images["ms"][:, y // r : y // r + q, x // r : x // r + q])
            w.append(
                **{k: np.stack(v) for k, v in batch.items()},
                extra={"coords": _scene_coords(chunk, region, scene.origin)},
            )


def write_test_crop(
    path: Path, scene: PreparedScene, crop: Region, cfg: MakeDatasetConfig, attrs: dict[str, Any]
) -> None:
    """The test crop at reduced resolution (with ground truth), one item."""
    images = degrade_region(scene, crop, cfg)
    with _writer(path, scene, cfg, attrs) as w:
        w.append(**images, extra={"coords": _scene_coords(np.zeros(2), crop, scene.origin)})


def write_test_full(
    path: Path, scene: PreparedScene, crop: Region, cfg: MakeDatasetConfig, attrs: dict[str, Any]
) -> None:
    """The test crop at full resolution (no ground truth): the original MS, it upsampled, and the
    real PAN of the same area. Only for a real PAN."""
    import torch

    from ddif.data.mtf import upsample

    if scene.pan is None:
        raise ValueError("a full-resolution test file needs a real PAN")
    r = cfg.ratio
    rows, cols = crop.slices
    ms_full = torch.from_numpy(np.ascontiguousarray(scene.ms[:, rows, cols]))[None]
    pan_full = scene.pan[:, r * rows.start : r * rows.stop, r * cols.start : r * cols.stop]
    with torch.no_grad():
        lms_full = upsample(ms_full, r, method=cfg.interpolation, padding=cfg.padding)
    with _writer(path, scene, cfg, attrs) as w:
        w.append(
            ms=ms_full[0].numpy(),
            lms=lms_full[0].float().numpy(),
            pan=pan_full,
            extra={"coords": _scene_coords(np.zeros(2), crop, scene.origin)},
        )
