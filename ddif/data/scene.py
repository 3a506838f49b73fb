"""The one raster-ingestion layer: every entry point that reads an MS + PAN pair (``ddif
make-dataset``, ``ddif sample``, ``ddif evaluate``, ``ddif station``) opens, checks, places and
reads it here, so the same scene gives the same network inputs everywhere.

- **Band stacks** (:func:`write_band_stack`): an MS delivered as one single-band file per band
  (Landsat) is stacked into a GDAL VRT (same CRS, grid, size, dtype and nodata checked; the VRT
  records every source's size and modification time, so a changed band changes the stack) and
  then read like any other raster; a VRT given as input is read as is (missing sources refused).
- **Opening and checks** (:func:`open_pair`): both rasters readable, north-up and georeferenced,
  same CRS, band counts, an integer MS / PAN resolution ratio equal to the model's, overlapping
  footprints. Problems raise :class:`SceneError` with a category (what a service does about it)
  and a message naming the file, what was expected and what came.
- **Placement** (:func:`placement`): the MS is interpolated as in training
  (:func:`ddif.data.mtf.upsample`), which puts MS pixel ``j`` on upsampled pixel
  ``ratio * j + phase``; the upsampled image is placed on the PAN grid where its pixel centres
  fall, exactly: an integer shift plus a fractional residual resampled with Keys cubic
  convolution. For Landsat ratio-2 pairs, whose PAN grid is offset by half a PAN pixel from the MS
  grid, the residual is 0; for a ratio-4 pair sharing its top-left corner (the usual VHR layout)
  it is -0.5 PAN px in both axes. ``make-dataset`` resamples the PAN of a training pair so that
  the Wald protocol's decimation samples it at the MS pixel centres (plus any measured
  misregistration, :mod:`ddif.data.registration`).
- **Nodata, holes, normalisation** (:class:`SceneReader`): nodata masks (the files' tags, or
  ``input_nodata`` for files without one), holes filled by dilation before interpolating, DN
  divided by the model's max DN.
- **Scale** (:func:`check_scale`): data whose dtype or value range does not fit the model's DN
  convention (reflectance in [0, 1], 8-bit quick-looks, 16-bit full-range products for a
  15-bit model) are refused unless ``input_scale`` states the conversion (DN = value x scale).
- **Windows**: a PAN-grid window reads its PAN pixels and the MS pixels under it plus a halo as
  wide as the interpolation kernel and the hole filling reach, so a window gives the same values
  as the whole scene would (the ground station reads scenes of any size this way).

Pieces: :mod:`ddif.data.raster` (opening, checks, placement, :class:`SceneError`) and
:mod:`ddif.data.scale` (the value-scale rule); this module adds masks, hole filling, the windowed
:class:`SceneReader` and whole-scene reads, and re-exports the pieces' names.

The preprocessing a model was trained with (interpolation, boundary padding, hole filling, max
DN) is stored in its checkpoint (``preset.data`` / ``preset.model.max_dn``) and read back with
:meth:`Preprocessing.for_preset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ddif.data.raster import (  # noqa: F401 (re-exported)
    ALL_NODATA,
    BAD_GRID,
    BAD_SCALE,
    BAD_VALUES,
    CORRUPT,
    INTERPOLATIONS,
    MISSING_PARTNER,
    NO_OVERLAP,
    PADDINGS,
    WRONG_BANDS,
    WRONG_RATIO,
    InterpGeometry,
    Preprocessing,
    RasterInfo,
    SceneError,
    SceneGrid,
    band_stack_xml,
    check_band_order,
    check_finite_values,
    check_grids,
    gdal_env,
    gdal_errors,
    import_rasterio,
    interpolation_geometry,
    is_vrt,
    nodata_mask,
    open_pair,
    open_raster,
    paired_windows,
    placement,
    raster_files,
    write_band_stack,
)
from ddif.data.scale import (  # noqa: F401
    MAX_ABOVE_FRACTION,
    MIN_PEAK_FRACTION,
    ValueStats,
    array_stats,
    check_input_scale,
    check_scale,
    new_stats,
    scale_problem,
)

if TYPE_CHECKING:
    from ddif.config import Preset


# --------------------------------------------------------------------------------------------
# masks, filling, normalisation
# --------------------------------------------------------------------------------------------
def invalid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) True where any band is the file's nodata value: :func:`ddif.data.raster.nodata_mask`
    with its one tag."""
    return nodata_mask(data, [nodata])


def fill_invalid(x: np.ndarray, invalid: np.ndarray, iterations: int) -> np.ndarray:
    """Fill nodata pixels of (C, H, W) float32 ``x`` by growing the valid area ``iterations`` times
    (each new pixel = mean of its valid 3x3 neighbours), then the rest with the valid mean: the
    interpolation kernel then sees a smooth continuation instead of a jump to the fill value."""
    if not invalid.any():
        return x
    x = x.copy()
    valid = ~invalid
    if not valid.any():
        x[...] = 0.0
        return x
    x[:, invalid] = 0.0
    for _ in range(iterations):
        if valid.all():
            break
        vp = np.pad(valid.astype(np.float32), 1)
        xp = np.pad(x * valid, ((0, 0), (1, 1), (1, 1)))
        h, w = valid.shape
        cnt = sum(vp[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
        acc = sum(xp[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
        assert isinstance(cnt, np.ndarray) and isinstance(acc, np.ndarray)  # sums of nine arrays, never the 0 start
        grow = ~valid & (cnt > 0)
        if not grow.any():
            break
        x[:, grow] = acc[:, grow] / cnt[grow]
        valid = valid | grow
    if not valid.all():
        means = x[:, valid].mean(axis=1)
        x[:, ~valid] = means[:, None]
    return x


def normalise(data: np.ndarray, max_dn: float, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """DN (``data * scale + offset``) -> [0, 1] float32 (values above the max DN saturate at 1,
    negatives at 0)."""
    x = data.astype(np.float32)
    if scale != 1.0:
        x *= np.float32(scale)
    if offset:
        x += np.float32(offset)
    return np.clip(x / np.float32(max_dn), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# windowed readers
# --------------------------------------------------------------------------------------------
def _unreadable_source(ds: Any, window: Any) -> str | None:
    """For a band-stack VRT whose window failed to read: the first of its source files that cannot
    be read at the same window (band stacks share one grid), so the error names the broken band."""
    if not str(ds.name).lower().endswith(".vrt"):
        return None
    rasterio = import_rasterio()
    for path in list(getattr(ds, "files", []))[1:]:
        try:
            with rasterio.open(path) as src:
                src.read(window=window)
        except gdal_errors():
            return str(path)
    return None


class SceneReader:
    """Open MS + PAN datasets of a :class:`SceneGrid` and read PAN-grid windows of them.

    ``input_scale`` and ``input_offset`` convert file values to DN (DN = value x scale + offset,
    e.g. Sentinel-2's -1000 from processing baseline 04.00) before normalising by
    ``preprocessing.max_dn``; nodata is recognised on the file values."""

    def __init__(
        self,
        grid: SceneGrid,
        preprocessing: Preprocessing,
        input_scale: float | None = None,
        input_offset: float = 0.0,
    ):
        self.grid = grid
        self.offset = float(input_offset)
        self.pre = preprocessing
        self.max_dn = float(preprocessing.max_dn)
        scale = check_input_scale(input_scale, "--input-scale")
        self.scale = 1.0 if scale is None else scale
        self.interpolation = grid.interpolation
        self.padding = preprocessing.padding
        self.fill_iterations = preprocessing.fill_iterations
        self._ms = None
        self._pan = None

    def __enter__(self) -> SceneReader:
        rasterio = import_rasterio()
        self._ms = rasterio.open(self.grid.ms.path)
        self._pan = rasterio.open(self.grid.pan.path)
        return self

    def __exit__(self, *exc) -> None:
        for ds in (self._ms, self._pan):
            if ds is not None:
                ds.close()
        self._ms = self._pan = None

    def _read(self, ds, what: str, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        from rasterio.windows import Window

        try:
            return ds.read(window=Window(col0, row0, w, h))
        except gdal_errors() as exc:
            culprit = _unreadable_source(ds, Window(col0, row0, w, h))
            where = f" (band file {culprit})" if culprit else ""
            detail = str(exc).replace(" See previous exception for details.", "")
            raise SceneError(
                CORRUPT,
                f"{what} {ds.name}{where}: cannot read pixels at rows {row0}..{row0 + h}, cols "
                f"{col0}..{col0 + w} (corrupt or truncated file): {detail}",
            ) from None

    def _norm(self, data: np.ndarray) -> np.ndarray:
        return normalise(data, self.max_dn, self.scale, self.offset)

    # ---- PAN
    def pan_window(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """PAN DN (P, h, w) in its dtype and its invalid mask."""
        data = self._read(self._pan, "PAN", y0, x0, h, w)
        bad = invalid_mask(data, self.grid.pan.nodata)
        check_finite_values(data, bad, f"PAN {self.grid.pan.path}")
        return data, bad

    # ---- MS
    def _ms_axis(self, m0: int, n: int, shift: int, length: int):
        """For PAN indices [m0, m0+n): upsampled indices and in-coverage flags."""
        k = np.arange(m0, m0 + n) - shift
        inside = (k >= 0) & (k < self.grid.ratio * length)
        return k, inside

    def ms_invalid(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """(h, w) True where the MS pixel under a PAN pixel is nodata or where the MS does not reach."""
        g = self.grid
        ky, iny = self._ms_axis(y0, h, g.shift[0], g.ms.height)
        kx, inx = self._ms_axis(x0, w, g.shift[1], g.ms.width)
        out = np.ones((h, w), dtype=bool)
        if not iny.any() or not inx.any():
            return out
        jy = np.clip(g.ms_index(ky), 0, g.ms.height - 1)
        jx = np.clip(g.ms_index(kx), 0, g.ms.width - 1)
        r0, r1 = int(jy[iny].min()), int(jy[iny].max()) + 1
        c0, c1 = int(jx[inx].min()), int(jx[inx].max()) + 1
        data = self._read(self._ms, "MS", r0, c0, r1 - r0, c1 - c0)
        bad = invalid_mask(data, g.ms.nodata)
        check_finite_values(data, bad, f"MS {g.ms.path}")
        sub = bad[np.clip(jy - r0, 0, r1 - r0 - 1)][:, np.clip(jx - c0, 0, c1 - c0 - 1)]
        return sub | ~iny[:, None] | ~inx[None, :]

    def valid_window(self, y0: int, x0: int, h: int, w: int, pan_stats: ValueStats | None = None) -> np.ndarray:
        """(h, w) True where the product holds data: PAN valid and MS valid under it."""
        return self.pan_and_valid(y0, x0, h, w, pan_stats)[1]

    def pan_and_valid(
        self, y0: int, x0: int, h: int, w: int, pan_stats: ValueStats | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The PAN DN of the window (P, h, w) and :meth:`valid_window`'s mask, from one read."""
        pan, pan_bad = self.pan_window(y0, x0, h, w)
        if pan_stats is not None:
            pan_stats.add(pan, pan_bad)
        return pan, ~(pan_bad | self.ms_invalid(y0, x0, h, w))

    def ms_upsampled(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """The MS interpolated to the PAN window, normalised to [0, 1]: (C, h, w) float32.

        Placement is exact: PAN pixel m takes the interpolated MS at upsampled position
        ``m - shift - residual`` (:attr:`SceneGrid.shift`, :attr:`SceneGrid.subpixel`); a
        fractional residual (e.g. the half PAN pixel of a ratio-4 pair whose grids share a corner)
        is resampled with Keys cubic convolution (:func:`ddif.data.registration.sample_axis`) on
        the interpolated MS, which is smooth at that scale. Beyond the MS footprint: edge values."""
        import torch

        from ddif.data.mtf import upsample
        from ddif.data.registration import shift_axis

        g = self.grid
        r = g.ratio
        res_y, res_x = g.subpixel
        k0y, k0x = y0 - g.shift[0], x0 - g.shift[1]
        # upsampled rows / cols needed: the window, plus the cubic kernel's reach for a residual
        ly, hy = (k0y - 2, k0y + h + 2) if res_y else (k0y, k0y + h)
        lx, hx = (k0x - 2, k0x + w + 2) if res_x else (k0x, k0x + w)
        r0, r1 = g.ms_rows_for(ly, hy, g.ms.height)
        c0, c1 = g.ms_rows_for(lx, hx, g.ms.width)
        if r1 <= r0 or c1 <= c0:  # the window lies outside the MS footprint
            return np.zeros((g.bands, h, w), dtype=np.float32)
        data = self._read(self._ms, "MS", r0, c0, r1 - r0, c1 - c0)
        bad = invalid_mask(data, g.ms.nodata)
        check_finite_values(data, bad, f"MS {g.ms.path}")
        x = fill_invalid(self._norm(data), bad, self.fill_iterations)
        up = upsample(torch.from_numpy(x)[None], r, method=self.interpolation, padding=self.padding)[0]
        # upsampled pixel k of the scene is pixel k - r*r0 of this window
        y0w, x0w = k0y - r * r0, k0x - r * c0
        if res_y or res_x:  # one constant fractional offset: a 4-tap convolution per axis
            out = shift_axis(shift_axis(up.to(torch.float64), y0w - res_y, h, 1), x0w - res_x, w, 2)
            return np.ascontiguousarray(out.numpy(), dtype=np.float32)
        upn = up.numpy()
        if 0 <= y0w and y0w + h <= upn.shape[1] and 0 <= x0w and x0w + w <= upn.shape[2]:
            return np.ascontiguousarray(upn[:, y0w : y0w + h, x0w : x0w + w], dtype=np.float32)
        yi = np.clip(np.arange(y0w, y0w + h), 0, upn.shape[1] - 1)
        xi = np.clip(np.arange(x0w, x0w + w), 0, upn.shape[2] - 1)
        return np.ascontiguousarray(upn[:, yi][:, :, xi], dtype=np.float32)

    def ms_lowres(self, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        """The MS itself at rows/cols of the MS grid, normalised: (C, h, w) float32."""
        return self._norm(self._read(self._ms, "MS", row0, col0, h, w))

    def pan_normalised(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """The PAN window normalised to [0, 1] (no hole filling): (P, h, w) float32."""
        data, _ = self.pan_window(y0, x0, h, w)
        return self._norm(data)

    def window_inputs(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Network inputs of a PAN-grid window inside the scene: lms (C, h, w) and pan (P, h, w),
        float32 in [0, 1], holes filled."""
        pan, pan_bad = self.pan_window(y0, x0, h, w)
        pan_n = fill_invalid(self._norm(pan), pan_bad, self.fill_iterations)
        return self.ms_upsampled(y0, x0, h, w), pan_n

    def tile_inputs(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Network inputs of a tile that may reach beyond the scene's bottom / right edge (a scene
        side shorter than a tile): the part inside is read and padded the way
        :func:`ddif.utils.tile_grid.pad_to` pads a whole image, so the tile equals the Fuser's."""
        H, W = self.grid.shape
        hh, ww = min(h, H - y0), min(w, W - x0)
        lms, pan = self.window_inputs(y0, x0, hh, ww)
        if (hh, ww) == (h, w):
            return lms, pan
        import torch

        from ddif.utils.tile_grid import pad_to

        return (pad_to(torch.from_numpy(lms), h, w).numpy(), pad_to(torch.from_numpy(pan), h, w).numpy())

    def read_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole scene: lms (C, H, W), pan (P, H, W) float32 in [0, 1] and valid (H, W)
        (for small scenes; large ones are read by windows)."""
        H, W = self.grid.shape
        lms, pan = self.window_inputs(0, 0, H, W)
        return lms, pan, self.valid_window(0, 0, H, W)


def measure_registration(
    reader: SceneReader, *, windows: int = 8, size: int = 96, min_r2: float = 0.5
) -> dict[str, Any]:
    """The MS-to-PAN misregistration of a scene beyond its geotransforms, in PAN px (rows, cols):
    :func:`ddif.data.registration.estimate_misregistration` on up to ``windows`` MS windows of
    ``size`` px spread over the scene (mostly valid ones), the median of the estimates whose fit
    explains the low-passed PAN (R^2 >= ``min_r2``). Returns ``{"shift_pan_px": (dy, dx) or None,
    "windows": n, "estimates": [...], "r2": [...]}``; None when no window gives a usable fit."""
    from ddif.data.registration import estimate_misregistration

    g = reader.grid
    r = g.ratio
    # windows of ``size`` MS px, smaller on small scenes (a 3 x 3 layout at least), >= 32 px
    size = max(min(32, g.ms.height, g.ms.width), min(size, g.ms.height // 3, g.ms.width // 3))
    ys = np.linspace(0, max(0, g.ms.height - size), num=max(1, min(4, g.ms.height // size or 1))).astype(int)
    xs = np.linspace(0, max(0, g.ms.width - size), num=max(1, min(4, g.ms.width // size or 1))).astype(int)
    candidates = [(int(y), int(x)) for y in ys for x in xs]
    step = max(1, len(candidates) // windows)
    estimates, fits = [], []
    for j0, i0 in candidates[::step][:windows]:
        py, px = r * j0 + g.shift[0], r * i0 + g.shift[1]
        h, w = size, size
        if py < 0 or px < 0 or py + r * h > g.pan.height or px + r * w > g.pan.width:
            continue
        raw = reader._read(reader._ms, "MS", j0, i0, h, w)
        bad = invalid_mask(raw, g.ms.nodata)
        pan, pan_bad = reader.pan_window(py, px, r * h, r * w)
        bad = bad | pan_bad.reshape(h, r, w, r).any(axis=(1, 3))
        if bad.mean() > 0.5:
            continue
        # MS pixel (0, 0)'s centre in the PAN window where the geotransforms (shift + residual) put it
        centre = (g.phase + g.subpixel[0], g.phase + g.subpixel[1])
        try:
            found = estimate_misregistration(reader._norm(raw), reader._norm(pan)[0], r, centre, ~bad)
        except ValueError:
            continue
        fits.append(round(found.r2, 4))
        if found.r2 >= min_r2:
            estimates.append(found.shift_pan_px)
    shift = tuple(float(v) for v in np.median(np.asarray(estimates), axis=0)) if estimates else None
    spread = None
    if shift is not None:  # median absolute deviation of the window estimates, per axis
        dev = np.abs(np.asarray(estimates) - np.asarray(shift))
        spread = [round(float(v), 4) for v in np.median(dev, axis=0)]
    consistent = shift is not None and len(estimates) >= 3 and max(spread or [1.0]) <= MAX_REGISTRATION_SPREAD
    return {
        "shift_pan_px": None if shift is None else [round(v, 4) for v in shift],
        "spread_pan_px": spread,
        "consistent": bool(consistent),
        "windows": len(fits),
        "estimates": [[round(a, 4), round(b, 4)] for a, b in estimates],
        "r2": fits,
    }


# window estimates that disagree by more than this (median absolute deviation, PAN px) are not
# one misregistration (clouds moving between the PAN and MS looks, parallax of tall objects)
MAX_REGISTRATION_SPREAD = 0.25


@dataclass
class SceneScan:
    """What one pass over a scene found: valid pixels and value statistics of both rasters."""

    valid_pixels: int
    pan: ValueStats
    ms: ValueStats
    extra: dict[str, Any] = field(default_factory=dict)


def scan_scene(
    reader: SceneReader, block: int, on_block: Callable[[int, int, np.ndarray], None] | None = None
) -> SceneScan:
    """Read the scene once by ``block``-sized PAN windows (bounded memory) and the MS by blocks:
    valid pixels (``on_block(y0, x0, valid)`` for each block) and value statistics. Raises
    :class:`SceneError` for unreadable data or NaN/Inf that are not nodata."""
    g = reader.grid
    pan_stats = new_stats(g.pan.dtype, reader.max_dn, reader.scale)
    ms_stats = new_stats(g.ms.dtype, reader.max_dn, reader.scale)
    total = 0
    for y0 in range(0, g.pan.height, block):
        for x0 in range(0, g.pan.width, block):
            h, w = min(block, g.pan.height - y0), min(block, g.pan.width - x0)
            valid = reader.valid_window(y0, x0, h, w, pan_stats)
            total += int(valid.sum())
            if on_block is not None:
                on_block(y0, x0, valid)
    for r0 in range(0, g.ms.height, block):
        for c0 in range(0, g.ms.width, block):
            h, w = min(block, g.ms.height - r0), min(block, g.ms.width - c0)
            data = reader._read(reader._ms, "MS", r0, c0, h, w)
            bad = invalid_mask(data, g.ms.nodata)
            check_finite_values(data, bad, f"MS {g.ms.path}")
            ms_stats.add(data, bad)
    return SceneScan(total, pan_stats, ms_stats)


def check_scene_scale(
    grid: SceneGrid,
    scan: SceneScan,
    max_dn: float,
    input_scale: float | None,
    warn: Callable[[str], object] | None = None,
) -> None:
    """:func:`check_scale` for both rasters of a scanned scene."""
    check_scale("MS", grid.ms.path, scan.ms, max_dn, input_scale, warn)
    check_scale("PAN", grid.pan.path, scan.pan, max_dn, input_scale, warn)


def read_scene(
    ms_path: str | os.PathLike,
    pan_path: str | os.PathLike,
    *,
    preset: Preset,
    input_scale: float | None = None,
    input_nodata: float | None = None,
    block: int = 512,
    warn: Callable[[str], None] | None = None,
) -> tuple[SceneGrid, np.ndarray, np.ndarray, np.ndarray]:
    """Open, check (grids, bands, ratio, scale) and read a whole MS + PAN pair for ``preset``'s
    model: (grid, lms (C, H, W), pan (P, H, W), valid (H, W)), float32 in [0, 1] on the PAN grid.
    For scenes that fit in memory (``ddif sample``, ``ddif evaluate``); the station reads windows."""
    pre = Preprocessing.for_preset(preset)
    with gdal_env():
        grid = open_pair(
            ms_path,
            pan_path,
            bands=preset.model.bands,
            guide_bands=preset.model.guide_bands,
            ratio=preset.data.ratio,
            preprocessing=pre,
            input_nodata=input_nodata,
        )
        with SceneReader(grid, pre, input_scale) as reader:
            scan = scan_scene(reader, block)
            if scan.valid_pixels == 0:
                raise SceneError(ALL_NODATA, f"scene {ms_path} + {pan_path}: no pixel is valid in both MS and PAN")
            check_scene_scale(grid, scan, pre.max_dn, input_scale, warn)
            lms, pan, valid = reader.read_all()
    return grid, lms, pan, valid


def read_full_resolution(
    ms_path: str | os.PathLike,
    pan_path: str | os.PathLike,
    *,
    preset: Preset,
    crop: tuple[int, int, int, int] | None = None,
    input_scale: float | None = None,
    input_nodata: float | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[SceneGrid, np.ndarray, np.ndarray, np.ndarray]:
    """A full-resolution evaluation pair (no ground truth): the MS (C, h, w) and, on the PAN grid
    under it, lms (C, r*h, r*w) and pan (P, r*h, r*w), float32 in [0, 1], read and checked like
    :func:`read_scene`. ``crop`` (row, col, h, w on the MS grid) limits it; nodata inside is refused."""
    grid, lms, pan, valid = read_scene(
        ms_path, pan_path, preset=preset, input_scale=input_scale, input_nodata=input_nodata, warn=warn
    )
    windows = paired_windows(grid.ms.shape, grid.pan.shape, grid.ratio, grid.shift, crop)
    if windows is None:
        raise SceneError(
            NO_OVERLAP,
            f"MS {grid.ms.path}: no MS pixel{' of the crop ' + str(crop) if crop else ''} "
            f"has all its PAN pixels in {grid.pan.path}",
        )
    (j0, i0, h, w), (y0, x0, ph, pw) = windows
    if not valid[y0 : y0 + ph, x0 : x0 + pw].all():
        raise SceneError(
            ALL_NODATA,
            f"scene {ms_path} + {pan_path}: nodata inside the MS window {windows[0]}; "
            "give a crop (row, col, height, width on the MS grid) free of nodata",
        )
    pre = Preprocessing.for_preset(preset)
    with gdal_env(), SceneReader(grid, pre, input_scale) as reader:
        ms = reader.ms_lowres(j0, i0, h, w)
    cut = (slice(None), slice(y0, y0 + ph), slice(x0, x0 + pw))
    return grid, ms, np.ascontiguousarray(lms[cut]), np.ascontiguousarray(pan[cut])


__all__ = [
    "SceneError",
    "Preprocessing",
    "RasterInfo",
    "SceneGrid",
    "SceneReader",
    "SceneScan",
    "ValueStats",
    "open_raster",
    "open_pair",
    "write_band_stack",
    "band_stack_xml",
    "raster_files",
    "is_vrt",
    "check_grids",
    "placement",
    "interpolation_geometry",
    "invalid_mask",
    "check_finite_values",
    "fill_invalid",
    "normalise",
    "scan_scene",
    "check_scale",
    "check_scene_scale",
    "scale_problem",
    "new_stats",
    "array_stats",
    "read_scene",
    "read_full_resolution",
    "measure_registration",
    "paired_windows",
    "gdal_env",
    "CORRUPT",
    "MISSING_PARTNER",
    "WRONG_RATIO",
    "NO_OVERLAP",
    "ALL_NODATA",
    "BAD_GRID",
    "WRONG_BANDS",
    "BAD_VALUES",
    "BAD_SCALE",
]
