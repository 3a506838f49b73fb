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

if TYPE_CHECKING:
    from ddif.data.dataset_config import MakeDatasetConfig
    from ddif.data.degradation import Degradation
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


def nominal_degradation(cfg: MakeDatasetConfig, bands: int | Sequence[str]) -> Degradation:
    """The sensor's nominal Wald simulation for ``cfg`` (its MTF gains, ``cfg.interpolation``):
    gains by band name when the scene names its bands as the sensor does (e.g. WorldView-2's
    blue, green, red, nir1 of its eight), else by position."""
    from ddif.data.degradation import Degradation
    from ddif.data.sensors import find_sensor

    if not isinstance(bands, int):
        sensor = find_sensor(cfg.sensor)
        if sensor is None or sensor.canonical(list(bands)) is None:
            bands = len(bands)
        else:
            bands = list(bands)
    return Degradation.nominal(cfg.sensor, bands, cfg.ratio, cfg.interpolation, cfg.padding)


def scene_bands(scene: PreparedScene) -> int | tuple[str, ...]:
    """What the nominal degradation is looked up by: the scene's band names, or its band count."""
    names = tuple(scene.band_names)
    return names if names and len(names) == scene.ms.shape[0] else scene.ms.shape[0]


def variant_degradations(cfg: MakeDatasetConfig, bands: int | Sequence[str]) -> list[Degradation]:
    """The degradations of the training region: the nominal one (``cfg.variants == 1``) or
    ``cfg.variants`` draws from ``cfg.degradation_ranges()``, seeded by ``cfg.seed``."""
    from ddif.data.degradation import draw_degradation

    nominal = nominal_degradation(cfg, bands)
    if cfg.variants == 1:
        return [nominal]
    rng = np.random.default_rng([cfg.seed, 0x5EED_DE6])
    ranges = cfg.degradation_ranges()
    return [draw_degradation(rng, nominal, ranges) for _ in range(cfg.variants)]


def wald(
    gt: np.ndarray,
    pan_full: np.ndarray | None,
    pan_weights: Sequence[float],
    cfg: MakeDatasetConfig,
    degradation: Any = None,
    bands: int | Sequence[str] = 0,
) -> dict[str, np.ndarray]:
    """gt (C, H, W) in [0, 1] on the reduced-resolution PAN grid; pan_full (P, rH, rW) or None
    (synthetic PAN, synthesised from gt itself: as sharp as gt, as a real PAN degraded to that grid
    would be). ``degradation``: a :class:`ddif.data.degradation.Degradation` (default: the
    sensor's nominal one). Returns gt, ms (C, H/r, W/r), lms (C, H, W), pan (P, H, W)."""
    import torch

    from ddif.data.degradation import wald_triplet

    deg = degradation if degradation is not None else nominal_degradation(cfg, bands or gt.shape[0])
    gt_t = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32))[None]
    pan_t = None if pan_full is None else torch.from_numpy(np.ascontiguousarray(pan_full, dtype=np.float32))[None]
    with torch.no_grad():
        rr = wald_triplet(gt_t, pan_t, deg, pan_weights)
    return {k: getattr(rr, k)[0].float().numpy() for k in IMAGE_KEYS}


def degrade_region(
    scene: PreparedScene, region: Region, cfg: MakeDatasetConfig, degradation: Any = None
) -> dict[str, np.ndarray]:
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
    return wald(gt, pan_full, cfg.pan_weights, cfg, degradation, scene_bands(scene))


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
    degradations: Sequence[Any] = (),
) -> int:
    """Degrade ``region`` (once per degradation in ``degradations``, default the nominal one) and
    write the ``patch_size`` patches at ``corners`` (in the region, gt grid) of each to ``path``,
    each with its ``coords`` in the MS source and the index of its degradation; returns the
    number of patches written."""
    import json

    r, p = cfg.ratio, cfg.patch_size
    q = p // r
    degs = list(degradations) or [nominal_degradation(cfg, scene_bands(scene))]
    attrs = {**attrs, "degradations_json": json.dumps([d.describe() for d in degs])}
    written = 0
    with _writer(path, scene, cfg, attrs) as w:
        for index, deg in enumerate(degs):
            images = degrade_region(scene, region, cfg, deg)
            starts = range(0, len(corners), WRITE_BATCH)
            if progress:
                from tqdm.auto import tqdm

                desc = f"{attrs.get('split', '')} patches" + (f" {index + 1}/{len(degs)}" if len(degs) > 1 else "")
                starts = tqdm(starts, desc=desc, unit="batch")
            for start in starts:
                chunk = corners[start : start + WRITE_BATCH]
                batch: dict[str, list[np.ndarray]] = {k: [] for k in IMAGE_KEYS}
                for y, x in chunk:
                    for k in ("gt", "lms", "pan"):
                        batch[k].append(images[k][:, y : y + p, x : x + p])
                    batch["ms"].append(images["ms"][:, y // r : y // r + q, x // r : x // r + q])
                extra = {"coords": _scene_coords(chunk, region, scene.origin)}
                if len(degs) > 1:
                    extra["degradation"] = np.full(len(chunk), index, dtype=np.int32)
                w.append(**{k: np.stack(v) for k, v in batch.items()}, extra=extra)
                written += len(chunk)
    return written


def write_test_crop(
    path: Path, scene: PreparedScene, crop: Region, cfg: MakeDatasetConfig, attrs: dict[str, Any]
) -> None:
    """The test crop at reduced resolution (with ground truth), one item."""
    images = degrade_region(scene, crop, cfg)
    with _writer(path, scene, cfg, attrs) as w:
        w.append(**images, extra={"coords": _scene_coords(np.zeros(2), crop, scene.origin)})


def write_test_crops(
    path: Path,
    scene: PreparedScene,
    strip: Region,
    crops: Sequence[Region],
    cfg: MakeDatasetConfig,
    attrs: dict[str, Any],
) -> None:
    """Several test crops of one strip at reduced resolution: the strip is degraded once (as a
    scene would be), then every crop cut from it, one item each."""
    r = cfg.ratio
    images = degrade_region(scene, strip, cfg)
    with _writer(path, scene, cfg, attrs) as w:
        for crop in crops:
            y, x = crop.row - strip.row, crop.col - strip.col
            item = {k: images[k][:, y : y + crop.height, x : x + crop.width] for k in ("gt", "lms", "pan")}
            item["ms"] = images["ms"][:, y // r : (y + crop.height) // r, x // r : (x + crop.width) // r]
            w.append(**item, extra={"coords": _scene_coords(np.zeros(2), crop, scene.origin)})


def write_test_full(
    path: Path, scene: PreparedScene, crops: Region | Sequence[Region], cfg: MakeDatasetConfig, attrs: dict[str, Any]
) -> None:
    """The test crop(s) at full resolution (no ground truth): the original MS, it upsampled, and
    the real PAN of the same area (as registered to the MS). Only for a real PAN."""
    import torch

    from ddif.data.mtf import upsample

    if scene.pan is None:
        raise ValueError("a full-resolution test file needs a real PAN")
    r = cfg.ratio
    items: list[Region] = list(crops) if isinstance(crops, (list, tuple)) else [crops]  # type: ignore[list-item]
    with _writer(path, scene, cfg, attrs) as w:
        for crop in items:
            rows, cols = crop.slices
            ms_full = torch.from_numpy(np.ascontiguousarray(scene.ms[:, rows, cols]))[None]
            pan_full = scene.pan[:, r * rows.start : r * rows.stop, r * cols.start : r * cols.stop]
            with torch.no_grad():
                lms_full = upsample(ms_full, r, method=cfg.interpolation, padding=cfg.padding)
            w.append(
                ms=ms_full[0].numpy(),
                lms=lms_full[0].float().numpy(),
                pan=pan_full,
                extra={"coords": _scene_coords(np.zeros(2), crop, scene.origin)},
            )
