"""GeoTIFF side of the station: open and check an MS + PAN pair, read tile inputs by windows,
assemble and write the product block by block, and the quicklook.

Grid geometry. The product lies on the PAN grid (its CRS, transform and size). The MS image is
interpolated as in training (:func:`ddif.data.mtf.upsample`, the interpolation ``make_dataset``
uses to build ``lms``), which puts MS pixel ``j`` on upsampled pixel ``r*j + phase``; the
upsampled image is placed on the PAN grid at the integer shift nearest to where its pixel
centres fall (for Landsat-8, whose PAN pixel centres lie on MS pixel centres, the placement is
exact; for a pair sharing its top-left corner the residual is half a PAN pixel, the convention
of the toolbox and of ``make_dataset``). The residual sub-pixel offset is reported, never
resampled.

Windows. A tile reads its PAN window and the MS window under it plus a halo as wide as the
interpolation kernel's support and the nodata filling's reach, so interpolating the window gives
the same values inside the tile as interpolating the whole scene would (at the scene's border the
window ends where the scene does, with the same boundary rule).
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ddif.station.errors import (BAD_GRID, BAD_VALUES, CORRUPT, NO_OVERLAP, WRONG_BANDS, WRONG_RATIO,
                                 OutputWriteError, SceneError)


def _rasterio():
    try:
        import rasterio
    except ImportError as exc:
        raise ImportError("the ground-station pipeline needs rasterio: pip install rasterio (or ddif[geo])") from exc
    return rasterio


@contextlib.contextmanager
def gdal_env(cache_mb: int = 64) -> Iterator[None]:
    """GDAL settings of every station read / write: a bounded block cache (part of the memory
    bound), no side-car .aux.xml files, single-threaded (deterministic) compression."""
    rasterio = _rasterio()
    with rasterio.Env(GDAL_CACHEMAX=int(cache_mb), GDAL_PAM_ENABLED="NO", GDAL_NUM_THREADS="1",
                      GDAL_TIFF_INTERNAL_MASK="YES"):
        yield


# --------------------------------------------------------------------------------------------
# opening and checking
# --------------------------------------------------------------------------------------------
@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs: Any                     # rasterio CRS or None
    transform: Any               # affine.Affine
    descriptions: tuple[str | None, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def open_raster(path: str | os.PathLike, what: str) -> RasterInfo:
    """Header of a GeoTIFF; :class:`SceneError` (corrupt) when it cannot be opened as a raster."""
    rasterio = _rasterio()
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    path = Path(path)
    if not path.is_file():
        raise SceneError(CORRUPT, f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise SceneError(CORRUPT, f"{what} {path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                info = RasterInfo(str(path), src.width, src.height, src.count, src.dtypes[0] if src.count else "",
                                  src.nodata, src.crs, src.transform, tuple(src.descriptions))
                dtypes = set(src.dtypes)
    except (RasterioError, OSError) as exc:
        raise SceneError(CORRUPT, f"{what} {path}: cannot open as a GeoTIFF (corrupt, truncated or not a raster): "
                                  f"{exc}") from None
    if info.count == 0:
        raise SceneError(CORRUPT, f"{what} {path}: has no raster bands")
    if len(dtypes) > 1:
        raise SceneError(BAD_VALUES, f"{what} {path}: bands have mixed dtypes {sorted(dtypes)}")
    if np.dtype(info.dtype).kind not in "iuf":
        raise SceneError(BAD_VALUES, f"{what} {path}: pixel dtype {info.dtype} is not integer or float")
    return info


@dataclass
class InterpGeometry:
    """Where ``upsample`` puts MS samples and how far its kernel reaches (measured, not assumed)."""

    phase: int        # MS pixel j lands on upsampled pixel ratio * j + phase
    support: int      # upsampled pixels on each side of a sample that it influences


def interpolation_geometry(ratio: int, method: str, padding: str) -> InterpGeometry:
    """Measure the interpolator's sample phase and support with an impulse (so the halo and the
    grid placement follow ddif.data.mtf.upsample whatever its implementation)."""
    import torch

    from ddif.data.mtf import upsample

    n = 64
    x = torch.zeros(1, 1, 1, n, dtype=torch.float64)
    x[..., n // 2] = 1.0
    y = upsample(x, ratio, method=method, padding=padding)[0, 0, 0]
    peak = int(torch.argmax(y))
    nz = torch.nonzero(y.abs() > 0).flatten()
    phase = peak - ratio * (n // 2)
    support = int(max(peak - int(nz.min()), int(nz.max()) - peak))
    if not 0 <= phase < ratio or abs(float(y[peak]) - 1.0) > 1e-6:
        raise RuntimeError(f"upsample({method}) is not an interpolating kernel on the expected grid "
                           f"(peak {float(y[peak]):g} at phase {phase})")
    return InterpGeometry(phase=phase, support=support)


@dataclass
class SceneGrid:
    """A checked MS + PAN pair and how the interpolated MS sits on the PAN grid."""

    ms: RasterInfo
    pan: RasterInfo
    ratio: int
    shift: tuple[int, int]              # PAN (row, col) = upsampled (row, col) + shift
    subpixel: tuple[float, float]       # residual offset (rows, cols) in PAN pixels, |.| <= 0.5
    phase: int
    halo: int                           # MS pixels read around a tile's footprint
    coverage: tuple[int, int, int, int]  # PAN window (row0, col0, row1, col1) covered by the MS
    interpolation: str = "interp23tap"  # the method actually used (bicubic for non-power-of-2 ratios)

    @property
    def bands(self) -> int:
        return self.ms.count

    def ms_rows_for(self, k0: int, k1: int, length: int) -> tuple[int, int]:
        """MS index range (clipped to [0, length)) whose samples define upsampled [k0, k1), plus halo."""
        r, p = self.ratio, self.phase
        lo = math.floor((k0 - p) / r) - self.halo
        hi = math.floor((k1 - 1 - p) / r) + 1 + 1 + self.halo
        return max(0, lo), min(length, hi)

    def ms_index(self, k: np.ndarray) -> np.ndarray:
        """MS pixel whose footprint holds upsampled pixel k (nearest sample): floor((k - phase + r/2) / r)."""
        r = self.ratio
        return np.floor_divide(2 * k - 2 * self.phase + r, 2 * r)


def _ratio_of(ms_res: float, pan_res: float) -> float:
    return ms_res / pan_res if pan_res else float("nan")


def check_pair(ms_path: str | os.PathLike, pan_path: str | os.PathLike, *, bands: int, guide_bands: int,
               ratio: int, interpolation: str, padding: str, fill_iterations: int,
               input_nodata: float | None = None) -> SceneGrid:
    """Open and check an MS + PAN pair against the model; :class:`SceneError` naming the problem.
    ``input_nodata`` stands in for the nodata tag of an input that has none."""
    ms = open_raster(ms_path, "MS")
    pan = open_raster(pan_path, "PAN")
    for info in (ms, pan):
        if info.nodata is None and input_nodata is not None:
            info.nodata = float(input_nodata)
    if ms.count != bands:
        raise SceneError(WRONG_BANDS, f"MS {ms.path}: has {ms.count} bands, the model fuses {bands}")
    if pan.count != guide_bands:
        raise SceneError(WRONG_BANDS, f"PAN {pan.path}: has {pan.count} bands, the model expects {guide_bands}")
    for info, what in ((ms, "MS"), (pan, "PAN")):
        if info.transform.is_identity:
            raise SceneError(BAD_GRID, f"{what} {info.path}: not georeferenced (no transform); the resolution ratio "
                                       "and overlap cannot be checked")
        t = info.transform
        if t.b != 0 or t.d != 0:
            raise SceneError(BAD_GRID, f"{what} {info.path}: rotated or sheared grid (transform {tuple(t)[:6]}); "
                                       "only north-up grids are supported")
    if (ms.crs is None) != (pan.crs is None) or (ms.crs is not None and ms.crs != pan.crs):
        raise SceneError(BAD_GRID, f"MS and PAN have different CRSs ({ms.crs} vs {pan.crs}); reproject one first")
    mt, pt = ms.transform, pan.transform
    rx, ry = _ratio_of(mt.a, pt.a), _ratio_of(mt.e, pt.e)
    rounded = round(rx) if math.isfinite(rx) else 0
    if not (rounded >= 1 and abs(rx - rounded) <= 1e-3 * rounded and abs(ry - rounded) <= 1e-3 * rounded):
        raise SceneError(WRONG_RATIO, f"MS pixels are {abs(mt.a):g} x {abs(mt.e):g} and PAN pixels {abs(pt.a):g} x "
                                      f"{abs(pt.e):g}: resolution ratio {rx:g} x {ry:g} is not a whole number "
                                      f"(the model needs {ratio})")
    if rounded != ratio:
        raise SceneError(WRONG_RATIO, f"MS/PAN resolution ratio is {rounded} (MS {abs(mt.a):g}, PAN {abs(pt.a):g} "
                                      f"CRS units per pixel) but the model was trained for ratio {ratio}")
    if interpolation == "interp23tap" and ratio & (ratio - 1):
        interpolation = "bicubic"       # interp23tap needs a power of 2; make_dataset trains such ratios on bicubic
    geo = interpolation_geometry(ratio, interpolation, padding)
    # PAN index m of upsampled index k: m = k + (ms_origin - pan_origin) / pan_res + r/2 - phase - 1/2
    offsets = ((mt.f - pt.f) / pt.e + ratio / 2 - geo.phase - 0.5,
               (mt.c - pt.c) / pt.a + ratio / 2 - geo.phase - 0.5)
    shift = tuple(int(math.floor(o + 0.5)) for o in offsets)
    subpixel = tuple(float(o - s) for o, s in zip(offsets, shift))
    row0, col0 = max(0, shift[0]), max(0, shift[1])
    row1, col1 = min(pan.height, shift[0] + ratio * ms.height), min(pan.width, shift[1] + ratio * ms.width)
    if row1 <= row0 or col1 <= col0:
        raise SceneError(NO_OVERLAP, f"MS {ms.path} and PAN {pan.path} do not overlap (MS footprint lands at PAN "
                                     f"rows {shift[0]}..{shift[0] + ratio * ms.height}, cols {shift[1]}.."
                                     f"{shift[1] + ratio * ms.width} of a {pan.height} x {pan.width} PAN)")
    halo = -(-geo.support // ratio) + 1 + int(fill_iterations)
    return SceneGrid(ms, pan, ratio, shift, subpixel, geo.phase, halo, (row0, col0, row1, col1), interpolation)


# --------------------------------------------------------------------------------------------
# masks, filling, normalisation
# --------------------------------------------------------------------------------------------
def invalid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) True where any band is nodata (or NaN when nodata is NaN)."""
    mask = np.zeros(data.shape[-2:], dtype=bool)
    if nodata is None:
        return mask
    if data.dtype.kind == "f" and math.isnan(nodata):
        return np.isnan(data).any(axis=0)
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
            return mask
    return (data == data.dtype.type(nodata)).any(axis=0)


def check_finite(data: np.ndarray, invalid: np.ndarray, what: str) -> None:
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data).all(axis=0) & ~invalid
        if bad.any():
            raise SceneError(BAD_VALUES, f"{what}: {int(bad.sum())} pixels hold NaN/Inf that are not the nodata value")


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
        cnt = sum(vp[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
        acc = sum(xp[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
        grow = ~valid & (cnt > 0)
        if not grow.any():
            break
        x[:, grow] = acc[:, grow] / cnt[grow]
        valid = valid | grow
    if not valid.all():
        means = x[:, valid].mean(axis=1)
        x[:, ~valid] = means[:, None]
    return x


def normalise(data: np.ndarray, max_dn: float) -> np.ndarray:
    """DN -> [0, 1] float32 (values above the sensor's max DN saturate at 1, negatives at 0)."""
    return np.clip(data.astype(np.float32) / np.float32(max_dn), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# windowed readers
# --------------------------------------------------------------------------------------------
class SceneReader:
    """Open MS + PAN datasets of a :class:`SceneGrid` and read PAN-grid windows of them."""

    def __init__(self, grid: SceneGrid, *, max_dn: float, padding: str, fill_iterations: int):
        self.grid = grid
        self.max_dn = float(max_dn)
        self.interpolation = grid.interpolation
        self.padding = padding
        self.fill_iterations = fill_iterations
        self._ms = None
        self._pan = None

    def __enter__(self) -> "SceneReader":
        rasterio = _rasterio()
        self._ms = rasterio.open(self.grid.ms.path)
        self._pan = rasterio.open(self.grid.pan.path)
        return self

    def __exit__(self, *exc) -> None:
        for ds in (self._ms, self._pan):
            if ds is not None:
                ds.close()
        self._ms = self._pan = None

    def _read(self, ds, what: str, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        try:
            return ds.read(window=Window(col0, row0, w, h))
        except (RasterioError, OSError) as exc:
            raise SceneError(CORRUPT, f"{what} {ds.name}: cannot read pixels at rows {row0}..{row0 + h}, cols "
                                      f"{col0}..{col0 + w} (corrupt or truncated file): {exc}") from None

    # ---- PAN
    def pan_window(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """PAN DN (P, h, w) in its dtype and its invalid mask."""
        data = self._read(self._pan, "PAN", y0, x0, h, w)
        bad = invalid_mask(data, self.grid.pan.nodata)
        check_finite(data, bad, f"PAN {self.grid.pan.path}")
        return data, bad

    # ---- MS
    def _ms_axis(self, m0: int, n: int, shift: int, length: int):
        """For PAN indices [m0, m0+n): upsampled indices, MS read range, in-coverage flags."""
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
        check_finite(data, bad, f"MS {g.ms.path}")
        sub = bad[np.clip(jy - r0, 0, r1 - r0 - 1)][:, np.clip(jx - c0, 0, c1 - c0 - 1)]
        out = sub | ~iny[:, None] | ~inx[None, :]
        return out

    def valid_window(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """(h, w) True where the product holds data: PAN valid and MS valid under it."""
        _, pan_bad = self.pan_window(y0, x0, h, w)
        return ~(pan_bad | self.ms_invalid(y0, x0, h, w))

    def ms_upsampled(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """The MS interpolated to the PAN window, normalised to [0, 1]: (C, h, w) float32."""
        import torch

        from ddif.data.mtf import upsample

        g = self.grid
        r = g.ratio
        k0y, k0x = y0 - g.shift[0], x0 - g.shift[1]
        r0, r1 = g.ms_rows_for(k0y, k0y + h, g.ms.height)
        c0, c1 = g.ms_rows_for(k0x, k0x + w, g.ms.width)
        if r1 <= r0 or c1 <= c0:                  # the window lies outside the MS footprint
            return np.zeros((g.bands, h, w), dtype=np.float32)
        data = self._read(self._ms, "MS", r0, c0, r1 - r0, c1 - c0)
        bad = invalid_mask(data, g.ms.nodata)
        check_finite(data, bad, f"MS {g.ms.path}")
        x = fill_invalid(normalise(data, self.max_dn), bad, self.fill_iterations)
        up = upsample(torch.from_numpy(x)[None], r, method=self.interpolation, padding=self.padding)[0].numpy()
        # upsampled pixel k of the scene is pixel k - r*r0 of this window; beyond the MS: edge values
        y0w, x0w = k0y - r * r0, k0x - r * c0
        if 0 <= y0w and y0w + h <= up.shape[1] and 0 <= x0w and x0w + w <= up.shape[2]:
            return np.ascontiguousarray(up[:, y0w:y0w + h, x0w:x0w + w], dtype=np.float32)
        ys = np.clip(np.arange(y0w, y0w + h), 0, up.shape[1] - 1)
        xs = np.clip(np.arange(x0w, x0w + w), 0, up.shape[2] - 1)
        return np.ascontiguousarray(up[:, ys][:, :, xs], dtype=np.float32)

    def ms_lowres(self, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        """The MS itself at rows/cols of the MS grid, normalised: (C, h, w) float32."""
        data = self._read(self._ms, "MS", row0, col0, h, w)
        return normalise(data, self.max_dn)

    def tile_inputs(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Backend inputs of a tile: lms (C, h, w) and pan (P, h, w), float32 in [0, 1], holes filled."""
        pan, pan_bad = self.pan_window(y0, x0, h, w)
        pan_n = fill_invalid(normalise(pan, self.max_dn), pan_bad, self.fill_iterations)
        return self.ms_upsampled(y0, x0, h, w), pan_n


def scan_validity(reader: SceneReader, block: int, on_block: Callable[[int, int, np.ndarray], None]) -> int:
    """Read the scene once by ``block``-sized PAN windows (bounded memory), call
    ``on_block(y0, x0, valid)`` for each; return the number of valid pixels. Raises
    :class:`SceneError` for unreadable data or NaN/Inf that are not nodata."""
    g = reader.grid
    total = 0
    for y0 in range(0, g.pan.height, block):
        for x0 in range(0, g.pan.width, block):
            h, w = min(block, g.pan.height - y0), min(block, g.pan.width - x0)
            valid = reader.valid_window(y0, x0, h, w)
            total += int(valid.sum())
            on_block(y0, x0, valid)
    return total


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def output_nodata(ms: RasterInfo, pan: RasterInfo, dtype: np.dtype) -> float:
    """The product's nodata value: the MS's, else the PAN's (if the dtype can hold it), else 0
    for unsigned integers, the dtype's minimum for signed integers, NaN for floats."""
    for v in (ms.nodata, pan.nodata):
        if v is None:
            continue
        if dtype.kind == "f":
            return float(v)
        info = np.iinfo(dtype)
        if float(v).is_integer() and info.min <= v <= info.max:
            return float(v)
    if dtype.kind == "u":
        return 0.0
    if dtype.kind == "i":
        return float(np.iinfo(dtype).min)
    return float("nan")


def to_dn(fused: np.ndarray, valid: np.ndarray, max_dn: float, dtype: np.dtype, nodata: float) -> np.ndarray:
    """[0, 1] floats -> DN of ``dtype`` in [0, max_dn] (rounded half to even); nodata where not
    valid; a valid pixel that would equal the nodata value is moved one DN (one ulp for floats)
    away from it so that it is not mistaken for nodata."""
    dn = fused * np.float32(max_dn)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(0.0, float(info.min)), min(float(max_dn), float(info.max))
        dn = np.clip(np.rint(dn), lo, hi)
        out = dn.astype(dtype)
        if lo <= nodata <= hi:
            nd = dtype.type(nodata)
            clash = (out == nd) & valid[None]
            out[clash] = dtype.type(nodata + 1 if nodata < hi else nodata - 1)
        out[:, ~valid] = dtype.type(nodata)
        return out
    out = np.clip(dn, 0.0, float(max_dn)).astype(dtype)
    if not math.isnan(nodata):
        nd = dtype.type(nodata)
        clash = (out == nd) & valid[None]
        out[clash] = np.nextafter(nd, dtype.type(np.inf) if nodata < max_dn else dtype.type(-np.inf))
    out[:, ~valid] = dtype.type(nodata)
    return out


def overview_factors(height: int, width: int, min_size: int) -> list[int]:
    """Overview decimation factors 2, 4, 8, ... while the overview's long side is >= ``min_size``."""
    factors, f = [], 2
    while -(-max(height, width) // f) >= min_size:
        factors.append(f)
        f *= 2
    return factors


def overview_sizes(height: int, width: int, factors: list[int]) -> list[tuple[int, int]]:
    """(height, width) of each overview level as GDAL builds it: ceil(size / factor) on each axis.

    (GDAL's ``overviews()`` list is no substitute: it reports round(full width / overview width),
    e.g. 127 instead of 128 for a 15,361 px wide product, and is taken from the x axis only.)"""
    return [(-(-height // f), -(-width // f)) for f in factors]


def product_profile(grid: SceneGrid, nodata: float, block_size: int, compress: str, zlevel: int) -> dict:
    dtype = np.dtype(grid.ms.dtype)
    profile = dict(driver="GTiff", width=grid.pan.width, height=grid.pan.height, count=grid.bands,
                   dtype=dtype.name, crs=grid.pan.crs, transform=grid.pan.transform, nodata=nodata,
                   tiled=True, blockxsize=block_size, blockysize=block_size, interleave="pixel",
                   BIGTIFF="IF_SAFER")
    if compress != "none":
        profile["compress"] = compress
        profile["predictor"] = 3 if dtype.kind == "f" else 2
        if compress == "deflate":
            profile["zlevel"] = zlevel
        elif compress == "zstd":
            profile["zstd_level"] = zlevel
    return profile


def _last_block(height: int, width: int, block: tuple[int, int]):
    """The window of the last (bottom-right) block of a ``height`` x ``width`` raster."""
    from rasterio.windows import Window

    bh, bw = max(1, int(block[0])), max(1, int(block[1]))
    r0, c0 = ((height - 1) // bh) * bh, ((width - 1) // bw) * bw
    return Window(c0, r0, width - c0, height - r0)


def verify_product(path: str | os.PathLike, *, bands: int, height: int, width: int, dtype: str,
                   overviews: list[int]) -> None:
    """Read a just-written product back: the header, the number of overview levels and each
    level's size (ceil(size / factor) on each axis, as GDAL makes them), the last block of every
    band and of every overview level. GDAL can report a failed write (full disk, file-size limit)
    only when the file is read again, so nothing is renamed into place before it passes. Reads
    one block per level: the cost does not grow with the scene. Raises :class:`OutputWriteError`."""
    rasterio = _rasterio()
    from rasterio.errors import RasterioError

    want_sizes = overview_sizes(height, width, list(overviews))
    try:
        with rasterio.open(path) as src:
            got = (src.count, src.height, src.width, src.dtypes[0])
            want = (bands, height, width, dtype)
            if got != want:
                raise OutputWriteError(f"{path}: read back as (bands, height, width, dtype) = {got}, expected {want}")
            levels = len(src.overviews(1))
            if levels != len(want_sizes):
                raise OutputWriteError(f"{path}: read back with {levels} overview levels, expected "
                                       f"{len(want_sizes)} (factors {list(overviews)})")
            src.read(window=_last_block(height, width, src.block_shapes[0]))
        for level, (oh, ow) in enumerate(want_sizes):
            with rasterio.open(path, overview_level=level) as ov:
                if (ov.height, ov.width) != (oh, ow):
                    raise OutputWriteError(f"{path}: overview level {level} (factor {overviews[level]}) read back as "
                                           f"{ov.height} x {ov.width} px, expected {oh} x {ow}")
                ov.read(window=_last_block(oh, ow, ov.block_shapes[0]))
    except (RasterioError, OSError) as exc:
        if isinstance(exc, OutputWriteError):
            raise
        raise OutputWriteError(f"{path}: the product written cannot be read back (disk full, file-size limit or "
                               f"I/O error?): {exc}") from exc


def write_quicklook(product: str | os.PathLike, out_png: str | os.PathLike, rgb_bands: tuple[int, ...],
                    size: int, percentiles: tuple[float, float]) -> dict:
    """True-colour (``rgb_bands``, 0-based) quicklook of a written product: a decimated read (GDAL
    serves it from the overviews: bounded memory), per-band percentile stretch over valid pixels
    (:mod:`ddif.utils.quicklook`), nodata black. Written atomically."""
    rasterio = _rasterio()
    from rasterio.enums import Resampling

    from ddif.utils.quicklook import band_limits, save_quicklook

    with rasterio.open(product) as src:
        scale = max(1.0, max(src.height, src.width) / size)
        oh, ow = max(1, round(src.height / scale)), max(1, round(src.width / scale))
        bands = list(rgb_bands) if src.count >= 3 and len(rgb_bands) == 3 and max(rgb_bands) < src.count \
            else [0, 0, 0]
        data = src.read([b + 1 for b in bands], out_shape=(3, oh, ow), resampling=Resampling.nearest, masked=True)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    arr = np.ma.filled(data.astype(np.float32), np.nan)
    del data
    limits = band_limits(arr, [0, 1, 2], tuple(percentiles), valid)
    save_quicklook(arr, out_png, [0, 1, 2], tuple(percentiles), valid, limits)
    return {"bands": bands, "size": [oh, ow], "stretch_dn": limits, "percentiles": list(percentiles)}
