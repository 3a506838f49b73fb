"""A small GeoTIFF reader / writer (rasterio) for MS and PAN rasters.

:func:`read_geotiff` returns the pixels with what is needed to use them honestly: the nodata value
(fill pixels must never be fused or trained on), the CRS and the affine transform (to check that
an MS and a PAN raster cover the same ground and to georeference outputs). Several single-band
files (e.g. Landsat's one-file-per-band layout) are stacked with :func:`read_geotiff_stack`.
rasterio is imported only when these functions run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddif.data.raster import import_rasterio


@dataclass
class Raster:
    """Pixels ``(bands, H, W)`` in their stored dtype, with georeferencing."""

    array: np.ndarray
    nodata: float | None  # the file's nodata tag (None when it has none)
    crs: str | None  # WKT, or None for an ungeoreferenced file
    transform: tuple[float, ...] | None  # affine (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f
    path: str = ""

    @property
    def bands(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[2])

    @property
    def resolution(self) -> tuple[float, float] | None:
        """Pixel size (x, y) in CRS units."""
        if self.transform is None:
            return None
        a, b, _, d, e, _ = self.transform
        return float(np.hypot(a, d)), float(np.hypot(b, e))

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """(left, bottom, right, top) of the pixel edges, for north-up rasters."""
        if self.transform is None:
            return None
        a, _, c, _, e, f = self.transform
        h, w = self.shape
        xs, ys = (c, c + a * w), (f, f + e * h)
        return min(xs), min(ys), max(xs), max(ys)

    def fill_mask(self, extra_nodata: Sequence[float] = ()) -> np.ndarray:
        """(H, W) bool: True where any band holds nodata (the tag or one of ``extra_nodata``) or a
        non-finite value."""
        return fill_mask(self.array, ([] if self.nodata is None else [self.nodata]) + list(extra_nodata))


def fill_mask(data: np.ndarray, nodata_values: Sequence[float]) -> np.ndarray:
    """(H, W) bool from (bands, H, W): True where any band equals one of ``nodata_values`` or is
    not finite."""
    mask = np.zeros(data.shape[-2:], dtype=bool)
    if data.dtype.kind == "f":
        mask |= ~np.isfinite(data).all(axis=0)
    for v in nodata_values:
        if v is None or np.isnan(v) or not _representable(v, data.dtype):
            continue  # NaN is covered by the finiteness test; -1 cannot occur in uint16
        mask |= (data == data.dtype.type(v)).any(axis=0)
    return mask


def _representable(v: float, dtype: np.dtype) -> bool:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(v).is_integer() and info.min <= v <= info.max
    return True


def read_geotiff(
    path: str | os.PathLike, bands: Sequence[int] | None = None, window: Sequence[int] | None = None
) -> Raster:
    """Read a GeoTIFF (all bands, or the 1-based ``bands``), whole or only ``window`` =
    (row, col, height, width) (then the transform is the window's).

    ``FileNotFoundError`` for a missing file; ``ValueError`` naming the file for one rasterio
    cannot open or decode (corrupt, truncated, not a raster) or for bands it does not have.
    """
    rasterio = import_rasterio()
    from rasterio.errors import RasterioError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a GeoTIFF")
    try:
        with warnings.catch_warnings():
            # an ungeoreferenced file is fine: transform is None then
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            count = src.count
            if count == 0:
                raise ValueError(f"{path}: has no raster bands (driver {src.driver}); expected a GeoTIFF")
            if bands is None:
                indexes = list(range(1, count + 1))
            else:
                indexes = [int(b) for b in bands]
                bad = [b for b in indexes if not 1 <= b <= count]
                if bad:
                    raise ValueError(f"{path}: has {count} bands (1-based), asked for {bad}")
            if len(set(src.dtypes[i - 1] for i in indexes)) > 1:
                raise ValueError(f"{path}: bands {indexes} have mixed dtypes {src.dtypes}")
            if window is None:
                data = src.read(indexes)
                t = src.transform
            else:
                from rasterio.windows import Window

                row, col, height, width = (int(v) for v in window)
                if (
                    row < 0
                    or col < 0
                    or height <= 0
                    or width <= 0
                    or row + height > src.height
                    or col + width > src.width
                ):
                    raise ValueError(
                        f"{path}: window (row {row}, col {col}, {height}x{width}) is not inside the "
                        f"{src.height}x{src.width} raster"
                    )
                data = src.read(indexes, window=Window(col, row, width, height))
                t = shift_transform(src.transform, row, col)
            nodata = src.nodata
            crs = src.crs.to_wkt() if src.crs else None
            transform = None if src.transform.is_identity else tuple(float(v) for v in tuple(t)[:6])
    except (RasterioError, OSError) as e:
        # rasterio raises RasterioIOError on open ("not recognized as a supported file format") and
        # on decode of damaged tiles / strips ("Read or write failed", "TIFFReadEncodedTile").
        raise ValueError(f"{path}: cannot read as a GeoTIFF (corrupt, truncated or not a raster?): {e}") from None
    if data.dtype.kind not in "iuf":
        raise ValueError(f"{path}: pixel dtype {data.dtype} is not integer or float")
    return Raster(
        array=data, nodata=None if nodata is None else float(nodata), crs=crs, transform=transform, path=str(path)
    )


def shift_transform(t: Sequence[float], row: int, col: int) -> tuple[float, ...]:
    """The affine transform of a window starting at (row, col)."""
    a, b, c, d, e, f = (float(v) for v in tuple(t)[:6])
    return (a, b, c + a * col + b * row, d, e, f + d * col + e * row)


def read_geotiff_stack(paths: Sequence[str | os.PathLike], window: Sequence[int] | None = None) -> Raster:
    """Stack single- or multi-band GeoTIFFs on one grid into one raster (bands in the given order).

    All files must share size, CRS and transform; the nodata tags must agree (a file without a tag
    takes the others')."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no GeoTIFF paths given")
    rasters = [read_geotiff(p, window=window) for p in paths]
    first = rasters[0]
    for r in rasters[1:]:
        if r.shape != first.shape:
            raise ValueError(
                f"{r.path}: {r.shape[0]}x{r.shape[1]} pixels, but {first.path} is {first.shape[0]}x{first.shape[1]}"
            )
        if r.crs != first.crs:
            raise ValueError(f"{r.path}: CRS differs from {first.path}")
        if not _same_transform(r.transform, first.transform):
            raise ValueError(f"{r.path}: transform {r.transform} differs from {first.path} {first.transform}")
        if r.array.dtype != first.array.dtype:
            raise ValueError(f"{r.path}: dtype {r.array.dtype} differs from {first.path} ({first.array.dtype})")
    tags = {r.nodata for r in rasters if r.nodata is not None}
    if len(tags) > 1:
        raise ValueError(f"nodata tags differ between {[r.path for r in rasters]}: {sorted(tags)}")
    return Raster(
        array=np.concatenate([r.array for r in rasters], axis=0),
        nodata=next(iter(tags), None),
        crs=first.crs,
        transform=first.transform,
        path=",".join(r.path for r in rasters),
    )


def _same_transform(a, b, tol: float = 1e-6) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.allclose(a, b, rtol=0, atol=tol * max(1.0, max(abs(v) for v in a))))


def write_geotiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    crs: str | None = None,
    transform: Sequence[float] | None = None,
    nodata: float | None = None,
    compress: str | None = "deflate",
) -> Path:
    """Write ``data`` (bands, H, W) or (H, W) as a GeoTIFF, atomically (temporary file + rename)."""
    rasterio = import_rasterio()
    from rasterio.transform import Affine

    from ddif.utils.io import atomic_path

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.size == 0:
        raise ValueError(f"expected (bands, H, W) or (H, W) pixels, got shape {data.shape}")
    if data.dtype.kind not in "iuf" or data.dtype == np.float16:
        raise ValueError(f"GeoTIFF pixels must be an integer or float32/64 dtype, got {data.dtype}")
    profile = dict(
        driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype.name
    )
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = Affine(*transform[:6])
    if nodata is not None:
        profile["nodata"] = nodata
    if compress:
        profile["compress"] = compress
    path = Path(path)
    with atomic_path(path, suffix=".partial.tif") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # allowed: no transform given
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
    return path
