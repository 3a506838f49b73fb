"""The products operators expect: a Cloud-Optimized GeoTIFF, per-band statistics, a STAC Item per
product and a STAC Collection for the outbox.

- **COG** (:func:`write_cog`): the station assembles its product block by block into a tiled
  GeoTIFF with overviews (bounded memory), then GDAL's COG driver copies it into the
  cloud-optimized layout (IFDs first, overviews before the full resolution, internal tiles),
  keeping the overviews exactly as built (nodata-aware averaging, or ``overview_resampling``),
  the CRS, the geotransform, the nodata value, the band descriptions and the tags. Deterministic:
  the same input gives the same bytes. :func:`validate_cog` is rio-cogeo's validator.
- **Statistics** (:class:`BandStatistics`): min / max / mean / standard deviation / valid percent
  of every band over the valid pixels, accumulated while the blocks are written.
- **STAC** (:func:`stac_item`, :func:`update_collection`, with pystac): the projection and raster
  extensions (per-band statistics, nodata, data type, scale), processing fields (software and
  version, model SHA-256, preset, steps, backend, seed, tiling), assets for the product,
  quicklook and report, ``derived_from`` links to the inputs. Collections are updated under a
  lock and written atomically. Nothing here downloads a schema.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddif.data.raster import gdal_errors
from ddif.utils.io import atomic_write_text

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
OVERVIEW_RESAMPLINGS = ("average", "nearest", "bilinear", "cubic", "cubicspline", "lanczos", "mode", "rms")
_COG_COMPRESS = {"deflate": "DEFLATE", "lzw": "LZW", "zstd": "ZSTD", "none": "NONE"}


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
class BandStatistics:
    """Per-band statistics of the valid pixels of a product, accumulated block by block (float64
    sums: exact enough for 16-bit data over 10^9 pixels)."""

    def __init__(self, bands: int) -> None:
        self.bands = bands
        self.valid = 0
        self.total = 0
        self.sum = np.zeros(bands, dtype=np.float64)
        self.sumsq = np.zeros(bands, dtype=np.float64)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def add(self, block: np.ndarray, valid: np.ndarray) -> None:
        """``block`` (bands, h, w) in the product's units, ``valid`` (h, w)."""
        self.total += int(valid.size)
        n = int(valid.sum())
        if not n:
            return
        picked = block[:, valid]
        values = picked.astype(np.float64)
        self.valid += n
        self.sum += values.sum(axis=1)
        self.sumsq += np.einsum("ij,ij->i", values, values)  # no squared temporary
        self.min = np.minimum(self.min, picked.min(axis=1))  # in the block's own (narrow) dtype
        self.max = np.maximum(self.max, picked.max(axis=1))

    def to_list(self) -> list[dict[str, float | None]]:
        """One dict per band: minimum, maximum, mean, stddev, valid_percent (None without data)."""
        out: list[dict[str, float | None]] = []
        pct = 100.0 * self.valid / self.total if self.total else 0.0
        for b in range(self.bands):
            if not self.valid:
                out.append({"minimum": None, "maximum": None, "mean": None, "stddev": None, "valid_percent": pct})
                continue
            mean = self.sum[b] / self.valid
            var = max(self.sumsq[b] / self.valid - mean * mean, 0.0)
            out.append(
                {
                    "minimum": float(self.min[b]),
                    "maximum": float(self.max[b]),
                    "mean": float(mean),
                    "stddev": math.sqrt(var),
                    "valid_percent": pct,
                }
            )
        return out


# --------------------------------------------------------------------------------------------
# Cloud-Optimized GeoTIFF
# --------------------------------------------------------------------------------------------
def cog_creation_options(
    compress: str, level: int, block_size: int, dtype: np.dtype | str, overview_resampling: str = "average"
) -> dict[str, str]:
    """GDAL COG-driver options of a station product (also the defaults of ``ddif fuse``, whose
    ``-co NAME=VALUE`` override them)."""
    compress = compress.lower()
    if compress not in _COG_COMPRESS:
        raise ValueError(f"compress must be one of {sorted(_COG_COMPRESS)}, got {compress!r}")
    if overview_resampling not in OVERVIEW_RESAMPLINGS:
        raise ValueError(f"overview_resampling must be one of {OVERVIEW_RESAMPLINGS}, got {overview_resampling!r}")
    opts = {
        "COMPRESS": _COG_COMPRESS[compress],
        "BLOCKSIZE": str(int(block_size)),
        "OVERVIEWS": "FORCE_USE_EXISTING",
        "OVERVIEW_RESAMPLING": overview_resampling.upper(),
        "NUM_THREADS": "1",
        "BIGTIFF": "IF_SAFER",
        "STATISTICS": "NO",
    }
    if compress != "none":
        opts["PREDICTOR"] = "FLOATING_POINT" if np.dtype(dtype).kind == "f" else "STANDARD"
        if compress in ("deflate", "zstd"):
            opts["LEVEL"] = str(int(level))
    return opts


def write_cog(src: str | os.PathLike, dst: str | os.PathLike, options: Mapping[str, str]) -> None:
    """Copy a tiled GeoTIFF with overviews into the COG layout at ``dst`` (GDAL's COG driver;
    streams: memory does not grow with the raster)."""
    import rasterio
    import rasterio.shutil

    from ddif.station.errors import OutputWriteError

    try:
        with rasterio.Env(GDAL_NUM_THREADS="1", GDAL_PAM_ENABLED="NO"):
            rasterio.shutil.copy(str(src), str(dst), driver="COG", **dict(options))
    except gdal_errors() as exc:
        # libtiff reports a full disk / file-size limit while appending as "Seek error" or "Write
        # error" (the errno only reaches GDAL's stderr): writing our own output failed
        raise OutputWriteError(
            f"{dst}: writing the Cloud-Optimized GeoTIFF failed (disk full, file-size limit or I/O error?): {exc}"
        ) from exc


def validate_cog(path: str | os.PathLike) -> dict[str, Any]:
    """rio-cogeo's validator: ``{"valid": bool, "errors": [...], "warnings": [...]}``."""
    from rio_cogeo.cogeo import cog_validate

    valid, errors, warnings = cog_validate(str(path), quiet=True)
    return {"valid": bool(valid), "errors": list(errors), "warnings": list(warnings)}


# --------------------------------------------------------------------------------------------
# STAC
# --------------------------------------------------------------------------------------------
def _stac_data_type(dtype: str) -> Any:
    from pystac.extensions.raster import DataType

    return DataType(np.dtype(dtype).name)


def stac_item(
    product: str | os.PathLike,
    *,
    item_id: str,
    assets: Mapping[str, str | os.PathLike],
    statistics: Sequence[Mapping[str, float | None]],
    processing: Mapping[str, Any],
    inputs: Sequence[str | os.PathLike],
    band_names: Sequence[str],
    scale: float | None = None,
    created: _dt.datetime | None = None,
) -> Any:
    """A pystac Item for a written product: footprint (WGS84 bbox of the product grid),
    projection (EPSG / WKT2, shape, transform, native bbox), raster bands (nodata, data type,
    statistics, scale), processing fields, assets (``product``, ``quicklook``, ``report`` as
    given) and ``derived_from`` links to ``inputs``. Hrefs are relative to the product's folder."""
    import pystac
    import rasterio
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterBand, RasterExtension, Statistics
    from rasterio.warp import transform_bounds

    product = Path(product)
    with rasterio.open(product) as src:
        crs, transform, bounds = src.crs, src.transform, src.bounds
        shape, dtype, nodata = [src.height, src.width], src.dtypes[0], src.nodata
    if crs is not None:
        west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    else:
        west, south, east, north = bounds
    geometry = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    created = created or _dt.datetime.now(_dt.timezone.utc)
    item = pystac.Item(id=item_id, geometry=geometry, bbox=[west, south, east, north], datetime=created, properties={})
    item.common_metadata.created = created
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg() if crs is not None else None
    proj.epsg = epsg
    if epsg is None and crs is not None:
        proj.wkt2 = crs.to_wkt()
    proj.shape = shape
    proj.transform = list(transform)[:6]
    proj.bbox = [bounds.left, bounds.bottom, bounds.right, bounds.top]
    item.stac_extensions.append(PROCESSING_SCHEMA)
    item.properties.update(
        {f"processing:{k}": v for k, v in processing.items() if k in ("software", "level", "lineage", "facility")}
    )
    item.properties.update(
        {f"ddif:{k}": v for k, v in processing.items() if k not in ("software", "level", "lineage", "facility")}
    )
    base = product.parent
    roles = {
        "product": (["data"], pystac.MediaType.COG),
        "quicklook": (["overview", "visual"], pystac.MediaType.PNG),
        "report": (["metadata"], pystac.MediaType.JSON),
    }
    for key, path in assets.items():
        role, media = roles.get(key, (["metadata"], None))
        item.add_asset(
            key, pystac.Asset(href=os.path.relpath(path, base), media_type=media, roles=role, title=Path(path).name)
        )
    raster = RasterExtension.ext(item.assets["product"], add_if_missing=True)
    raster.bands = [
        RasterBand.create(
            nodata=nodata,
            data_type=_stac_data_type(dtype),
            scale=scale,
            statistics=Statistics.create(**{k: v for k, v in stats.items() if v is not None}),
        )
        for stats in statistics
    ]
    item.assets["product"].extra_fields["ddif:band_names"] = list(band_names)
    for path in inputs:
        item.add_link(
            pystac.Link(
                rel="derived_from",
                target=os.path.relpath(path, base),
                # the inputs are GeoTIFFs of any layout (not necessarily cloud optimized)
                media_type=pystac.MediaType.GEOTIFF if str(path).lower().endswith((".tif", ".tiff")) else None,
                title=Path(path).name,
            )
        )
    return item


def write_stac_item(item: Any, path: str | os.PathLike) -> Path:
    """The Item as JSON at ``path``, atomically (its hrefs stay relative)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False), indent=2) + "\n")
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


DEFAULT_COLLECTION_DESCRIPTION = "Pansharpened products written by ddif station"


def product_items(outbox: str | os.PathLike) -> list[Path]:
    """The STAC items of the products in ``outbox``: ``<scene>/<scene>.json`` of every product
    folder (superseded products kept as ``<scene>.N/`` are not in the collection)."""
    outbox = Path(outbox)
    items = []
    with os.scandir(outbox) as entries:
        for e in entries:
            if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
                continue
            item = outbox / e.name / f"{e.name}.json"
            if item.is_file():
                items.append(item)
    return sorted(items)


def update_collection(
    outbox: str | os.PathLike,
    item_path: str | os.PathLike | None = None,
    *,
    collection_id: str = "ddif-products",
    description: str | None = None,
) -> Path:
    """Write ``outbox/collection.json`` as the index of the products on disk (every
    :func:`product_items`), under a lock and atomically (several services may share an outbox).

    The collection is rebuilt from the items each time rather than edited: one that is missing,
    truncated or corrupt (by a failed write, a full disk, someone else), or behind (an update that
    failed once), converges to the products at the next update. ``item_path``, when given, must be
    one of them (the product just written); an item without a bbox is skipped with its name in the
    collection's ``ddif:skipped``. The id, description and title of a readable collection are kept."""
    import pystac

    outbox = Path(outbox)
    path = outbox / "collection.json"
    with _locked(outbox / ".collection.lock"):
        items = product_items(outbox)
        if item_path is not None and Path(item_path).resolve() not in {p.resolve() for p in items}:
            raise ValueError(f"{item_path}: not the item of a product folder of {outbox}")
        previous: dict[str, Any] = {}
        try:
            loaded = json.loads(path.read_text())
            previous = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            previous = {}
        links, boxes, times, skipped = [], [], [], []
        for item_file in items:
            try:
                item = pystac.Item.from_dict(json.loads(item_file.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                skipped.append(f"{item_file.parent.name}: {type(exc).__name__}")
                continue
            if item.bbox is None:
                skipped.append(f"{item_file.parent.name}: no bbox")
                continue
            boxes.append(list(item.bbox))
            if item.datetime is not None:
                times.append(item.datetime)
            href = os.path.relpath(item_file, outbox)
            links.append({"rel": "item", "href": href, "type": "application/geo+json", "title": item.id})
        first = min(times) if times else None
        last = max(times) if times else None
        extent = pystac.Extent(
            pystac.SpatialExtent(
                [
                    [
                        min(b[0] for b in boxes),
                        min(b[1] for b in boxes),
                        max(b[2] for b in boxes),
                        max(b[3] for b in boxes),
                    ]
                ]
                if boxes
                else [[-180.0, -90.0, 180.0, 90.0]]
            ),
            pystac.TemporalExtent([[first, last]]),
        )
        data = pystac.Collection(
            id=str(previous.get("id") or collection_id),
            description=str(
                previous.get("description") or description or "Pansharpened products written by ddif station"
            ),
            extent=extent,
            license="other",
            title=previous.get("title") if isinstance(previous.get("title"), str) else None,
        ).to_dict(include_self_link=False, transform_hrefs=False)
        data["links"] = [lk for lk in data.get("links", []) if lk.get("rel") != "item"] + links
        if skipped:
            data["ddif:skipped"] = skipped
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


__all__ = [
    "BandStatistics",
    "cog_creation_options",
    "write_cog",
    "validate_cog",
    "stac_item",
    "write_stac_item",
    "update_collection",
    "product_items",
    "OVERVIEW_RESAMPLINGS",
]
