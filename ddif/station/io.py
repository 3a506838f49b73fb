"""Product side of the station: the product's nodata and DN conversion, GeoTIFF profile,
overviews, the read-back check and the quicklook.

The input side (opening and checking MS + PAN pairs, MS-to-PAN placement, windowed reading,
nodata, hole filling, scale checks) is the one ingestion layer :mod:`ddif.data.scene`, shared
with ``make-dataset``, ``sample`` and ``evaluate``; its names are re-exported here.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ddif.data.raster import gdal_errors, import_rasterio
from ddif.data.scene import (  # noqa: F401 (re-exported)
    RasterInfo,
    SceneGrid,
    SceneReader,
    fill_invalid,
    gdal_env,
    invalid_mask,
    normalise,
    open_pair,
    open_raster,
)
from ddif.station.errors import OutputWriteError


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


def to_dn(
    fused: np.ndarray, valid: np.ndarray, max_dn: float, dtype: np.dtype, nodata: float, offset: float = 0.0
) -> np.ndarray:
    """[0, 1] floats -> DN of ``dtype`` in [0, max_dn] (rounded half to even), written back in the
    input's convention (minus ``offset``, the input's DN offset); nodata where not valid; a valid
    pixel that would equal the nodata value is moved one DN (one ulp for floats) away from it so
    that it is not mistaken for nodata."""
    dn = fused * np.float32(max_dn)
    if offset:
        dn -= np.float32(offset)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(0.0, float(info.min)), min(float(max_dn) - float(offset), float(info.max))
        dn = np.clip(np.rint(dn), lo, hi)
        out = dn.astype(dtype)
        if lo <= nodata <= hi:
            nd = dtype.type(nodata)
            clash = (out == nd) & valid[None]
            out[clash] = dtype.type(nodata + 1 if nodata < hi else nodata - 1)
        out[:, ~valid] = dtype.type(nodata)
        return out
    out = np.clip(dn, 0.0 - float(offset), float(max_dn) - float(offset)).astype(dtype)  # 0.0 - 0.0 is +0.0
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


def product_profile(
    grid: SceneGrid, nodata: float, block_size: int, compress: str, zlevel: int, count: int | None = None
) -> dict:
    """The product's GeoTIFF profile on the PAN grid (``count`` bands, default the fused ones)."""
    dtype = np.dtype(grid.ms.dtype)
    profile = dict(
        driver="GTiff",
        width=grid.pan.width,
        height=grid.pan.height,
        count=grid.bands if count is None else count,
        dtype=dtype.name,
        crs=grid.pan.crs,
        transform=grid.pan.transform,
        nodata=nodata,
        tiled=True,
        blockxsize=block_size,
        blockysize=block_size,
        interleave="pixel",
        BIGTIFF="IF_SAFER",
    )
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


def verify_product(
    path: str | os.PathLike, *, bands: int, height: int, width: int, dtype: str, overviews: list[int]
) -> None:
    """Read a just-written product back: the header, the number of overview levels and each
    level's size (ceil(size / factor) on each axis, as GDAL makes them), the last block of every
    band and of every overview level. GDAL can report a failed write (full disk, file-size limit)
    only when the file is read again, so nothing is renamed into place before it passes. Reads
    one block per level: the cost does not grow with the scene. Raises :class:`OutputWriteError`."""
    rasterio = import_rasterio()

    want_sizes = overview_sizes(height, width, list(overviews))
    try:
        with rasterio.open(path) as src:
            got = (src.count, src.height, src.width, src.dtypes[0])
            want = (bands, height, width, dtype)
            if got != want:
                raise OutputWriteError(f"{path}: read back as (bands, height, width, dtype) = {got}, expected {want}")
            levels = len(src.overviews(1))
            if levels != len(want_sizes):
                raise OutputWriteError(
                    f"{path}: read back with {levels} overview levels, expected "
                    f"{len(want_sizes)} (factors {list(overviews)})"
                )
            src.read(window=_last_block(height, width, src.block_shapes[0]))
        for level, (oh, ow) in enumerate(want_sizes):
            with rasterio.open(path, overview_level=level) as ov:
                if (ov.height, ov.width) != (oh, ow):
                    raise OutputWriteError(
                        f"{path}: overview level {level} (factor {overviews[level]}) read back as "
                        f"{ov.height} x {ov.width} px, expected {oh} x {ow}"
                    )
                ov.read(window=_last_block(oh, ow, ov.block_shapes[0]))
    except gdal_errors() as exc:
        if isinstance(exc, OutputWriteError):
            raise
        raise OutputWriteError(
            f"{path}: the product written cannot be read back (disk full, file-size limit or I/O error?): {exc}"
        ) from exc


def write_quicklook(
    product: str | os.PathLike,
    out_png: str | os.PathLike,
    rgb_bands: tuple[int, ...],
    size: int,
    percentiles: tuple[float, float],
) -> dict:
    """True-colour (``rgb_bands``, 0-based) quicklook of a written product: a decimated read (GDAL
    serves it from the overviews: bounded memory), per-band percentile stretch over valid pixels
    (:mod:`ddif.utils.quicklook`), nodata black. Written atomically."""
    rasterio = import_rasterio()
    from rasterio.enums import Resampling

    from ddif.utils.quicklook import band_limits, save_quicklook

    with rasterio.open(product) as src:
        scale = max(1.0, max(src.height, src.width) / size)
        oh, ow = max(1, round(src.height / scale)), max(1, round(src.width / scale))
        bands = list(rgb_bands) if src.count >= 3 and len(rgb_bands) == 3 and max(rgb_bands) < src.count else [0, 0, 0]
        data = src.read([b + 1 for b in bands], out_shape=(3, oh, ow), resampling=Resampling.nearest, masked=True)
    valid = np.asarray(~np.ma.getmaskarray(data).any(axis=0))
    arr = np.ma.filled(data.astype(np.float32), np.nan)
    del data
    lo, hi = percentiles
    limits = band_limits(arr, [0, 1, 2], (lo, hi), valid)
    save_quicklook(arr, out_png, [0, 1, 2], (lo, hi), valid, limits)
    return {"bands": bands, "size": [oh, ow], "stretch_dn": limits, "percentiles": list(percentiles)}
