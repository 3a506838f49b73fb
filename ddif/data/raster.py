"""Opening and checking an MS + PAN raster pair, and where the MS sits on the PAN grid (part of
the scene-ingestion layer, :mod:`ddif.data.scene`): :class:`SceneError` and its categories, the
:class:`Preprocessing` a model was trained with, raster headers, the grid checks (CRS, north-up,
integer resolution ratio, overlap, bands, band order), the one placement rule
(:func:`placement`, :func:`paired_windows`) and band stacks: an MS delivered as one file per band
(Landsat) read as one raster through a GDAL VRT (:func:`write_band_stack`)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from affine import Affine

    from ddif.config import Preset

# scene problems, by what a service does about them (quarantine categories)
CORRUPT = "corrupt"
MISSING_PARTNER = "missing_partner"
WRONG_RATIO = "wrong_ratio"
NO_OVERLAP = "no_overlap"
ALL_NODATA = "all_nodata"
BAD_GRID = "bad_grid"  # rotated / skewed transform, CRS mismatch, missing georeferencing
WRONG_BANDS = "wrong_bands"
BAD_VALUES = "bad_values"  # NaN / Inf that are not the nodata value, unsupported dtype
BAD_SCALE = "bad_scale"  # dtype or value range does not fit the model's DN convention

INTERPOLATIONS = ("interp23tap", "bicubic")
PADDINGS = ("symmetric", "replicate", "circular")


class SceneError(ValueError):
    """A bad scene: ``category`` (one of the constants above) says why, the message says what."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category


def gdal_errors() -> tuple[type[BaseException], ...]:
    """The exceptions GDAL I/O raises through rasterio: ``RasterioError``, the ``CPLE_*`` errors
    some calls raise directly (e.g. ``rasterio.shutil.copy``: not RasterioError subclasses), and
    ``OSError``."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    return (RasterioError, CPLE_BaseError, OSError)


def import_rasterio() -> ModuleType:
    try:
        import rasterio
    except ImportError as exc:
        raise ImportError("reading GeoTIFF scenes needs rasterio: pip install rasterio (or ddif[geo])") from exc
    return rasterio


@contextlib.contextmanager
def gdal_env(cache_mb: int = 64) -> Iterator[None]:
    """GDAL settings of every scene read / product write: a bounded block cache (part of the
    station's memory bound), no side-car .aux.xml files, single-threaded (deterministic)
    compression.

    rasterio hands an integer ``GDAL_CACHEMAX`` to ``GDALSetCacheMax`` in bytes (GDAL's own
    "below 100000 means MB" rule applies to the string option only): 64 would be a 64-byte cache,
    every window read decompressing its blocks again (measured: 8x slower reads of a 4096 px
    scene), so the megabytes are converted here."""
    rasterio = import_rasterio()
    with rasterio.Env(
        GDAL_CACHEMAX=int(cache_mb) * 2**20, GDAL_PAM_ENABLED="NO", GDAL_NUM_THREADS="1", GDAL_TIFF_INTERNAL_MASK="YES"
    ):
        yield


# --------------------------------------------------------------------------------------------
# what a model was trained with
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocessing:
    """How a model's ``lms`` / ``pan`` inputs are made from DN rasters."""

    max_dn: float
    interpolation: str = "interp23tap"  # MS -> PAN grid (interp23tap needs a power-of-2 ratio)
    padding: str = "symmetric"  # interp23tap boundary at the scene edge
    fill_iterations: int = 4  # 3x3 dilations filling nodata holes before interpolating
    band_names: tuple[str, ...] = ()  # the MS bands in the model's order, when the training data named them

    def __post_init__(self) -> None:
        if not self.max_dn > 0:
            raise ValueError(f"max_dn must be positive, got {self.max_dn}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.fill_iterations < 0:
            raise ValueError(f"fill_iterations must be >= 0, got {self.fill_iterations}")

    @classmethod
    def for_preset(
        cls,
        preset: Preset,
        *,
        interpolation: str | None = None,
        padding: str | None = None,
        fill_iterations: int | None = None,
    ) -> Preprocessing:
        """The preprocessing stored in a model's preset, with optional overrides."""
        d = preset.data
        return cls(
            float(preset.model.max_dn),
            interpolation or str(getattr(d, "interpolation", "interp23tap")),
            padding or str(getattr(d, "interp_padding", "symmetric")),
            int(getattr(d, "fill_iterations", 4) if fill_iterations is None else fill_iterations),
            tuple(getattr(d, "band_names", ()) or ()),
        )

    def method_for(self, ratio: int) -> str:
        """interp23tap needs a power-of-2 ratio; make_dataset trains other ratios on bicubic."""
        return "bicubic" if self.interpolation == "interp23tap" and ratio & (ratio - 1) else self.interpolation


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
    crs: Any  # rasterio CRS or None
    transform: Any  # affine.Affine
    descriptions: tuple[str | None, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def open_raster(path: str | os.PathLike, what: str) -> RasterInfo:
    """Header of a raster (GeoTIFF, or a GDAL VRT whose source files all exist); :class:`SceneError`
    (corrupt, or missing_partner for a VRT source that is not there) when it cannot be opened."""
    rasterio = import_rasterio()
    from rasterio.errors import NotGeoreferencedWarning

    path = Path(path)
    if not path.is_file():
        raise SceneError(CORRUPT, f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise SceneError(CORRUPT, f"{what} {path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                info = RasterInfo(
                    str(path),
                    src.width,
                    src.height,
                    src.count,
                    src.dtypes[0] if src.count else "",
                    src.nodata,
                    src.crs,
                    src.transform,
                    tuple(src.descriptions),
                )
                dtypes = set(src.dtypes)
                # a VRT opens without its source files and fails only when pixels are read
                missing = [f for f in src.files[1:] if not f.startswith("/vsi") and not Path(f).exists()]
    except gdal_errors() as exc:
        raise SceneError(
            CORRUPT, f"{what} {path}: cannot open as a GeoTIFF (corrupt, truncated or not a raster): {exc}"
        ) from None
    if missing:
        raise SceneError(
            MISSING_PARTNER,
            f"{what} {path}: the VRT reads {missing[0]}, which does not exist"
            + (f" (nor {len(missing) - 1} more of its source files)" if len(missing) > 1 else ""),
        )
    if info.count == 0:
        raise SceneError(CORRUPT, f"{what} {path}: has no raster bands")
    if len(dtypes) > 1:
        raise SceneError(BAD_VALUES, f"{what} {path}: bands have mixed dtypes {sorted(dtypes)}")
    if np.dtype(info.dtype).kind not in "iuf":
        raise SceneError(BAD_VALUES, f"{what} {path}: pixel dtype {info.dtype} is not integer or float")
    return info


# --------------------------------------------------------------------------------------------
# several files as one raster (band stacks)
# --------------------------------------------------------------------------------------------
# numpy dtype -> GDAL data type name (what a VRTRasterBand declares)
_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


def raster_files(path: str | os.PathLike) -> list[Path]:
    """The files GDAL reads for a raster: the file itself and, for a VRT, its source files (and
    any side-car such as ``.ovr``), in GDAL's order; ``[path]`` when it cannot be opened."""
    rasterio = import_rasterio()
    try:
        with rasterio.open(path) as src:
            return [Path(f) for f in src.files if not f.startswith("/vsi")] or [Path(path)]
    except gdal_errors():
        return [Path(path)]


def is_vrt(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a GDAL VRT (a raster made of other files), by its first bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(64).lstrip().startswith(b"<VRTDataset")
    except OSError:
        return False


_NETWORK_PREFIXES = (
    "/vsicurl",
    "/vsis3",
    "/vsigs",
    "/vsiaz",
    "/vsiadls",
    "/vsioss",
    "/vsiswift",
    "/vsihdfs",
    "/vsiwebhdfs",
)
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
MAX_VRT_DEPTH = 8


def raster_references(path: str | os.PathLike, depth: int = 0) -> list[str]:
    """Every file or URL a raster makes GDAL read besides itself, read from the file's text (the
    ``SourceFilename`` elements of a GDAL VRT, nested VRTs included, relative names resolved
    against their VRT), without letting GDAL open any of them. Non-VRT rasters reference
    nothing. A VRT nested deeper than ``MAX_VRT_DEPTH`` is reported as its own reference."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    if not is_vrt(path):
        return []
    try:
        root = ET.fromstring(path.read_bytes()[: 64 << 20])
    except (OSError, ET.ParseError) as exc:
        raise SceneError(CORRUPT, f"{path}: a VRT that is not readable XML ({exc})") from None
    out: list[str] = []
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag not in ("SourceFilename", "SourceDataset", "Filename"):
            continue
        text = (el.text or "").strip()
        if not text:
            continue
        relative = str(el.get("relativeToVRT", "0")).strip() in ("1", "true", "yes")
        if relative and not text.startswith("/vsi") and not _URL_RE.match(text) and not os.path.isabs(text):
            text = str(path.parent / text)
        out.append(text)
        if depth < MAX_VRT_DEPTH and not text.startswith("/vsi") and not _URL_RE.match(text) and is_vrt(text):
            out.extend(raster_references(text, depth + 1))
    return out


def reference_problem(path: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """Why a raster inside ``root`` may not be read as delivered: it makes GDAL read a file
    outside ``root`` (absolute or ``..`` sources, symbolic links leading out), a network or
    archive location (``/vsicurl/``, ``/vsis3/``, URLs, any ``/vsi`` path), or a VRT nested deeper
    than :data:`MAX_VRT_DEPTH`; None when everything it reads lies inside ``root``."""
    real_root = os.path.realpath(root)
    for ref in raster_references(path):
        if ref.startswith("/vsi") or _URL_RE.match(ref):
            kind = "a network location" if ref.startswith(_NETWORK_PREFIXES) or _URL_RE.match(ref) else "a /vsi path"
            return f"{Path(path).name} is a VRT that reads {ref} ({kind}); only files inside {real_root} are read"
        real = os.path.realpath(ref)
        if os.path.commonpath([real, real_root]) != real_root:
            return f"{Path(path).name} is a VRT that reads {ref} (resolved {real}), outside {real_root}"
    return None


def _nodata_text(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value)).removesuffix(".0")


def band_stack_xml(paths: Sequence[str | os.PathLike], what: str = "MS", bands: Sequence[int] | None = None) -> str:
    """GDAL VRT XML stacking the bands of ``paths`` in order (``gdalbuildvrt -separate``): several
    files must hold one band each (e.g. Landsat's one file per band), one file keeps all its bands
    (a VRT re-wrapped). Every file must share the first one's CRS, geotransform, size, dtype and
    nodata; :class:`SceneError` naming the file and what differs otherwise. Band descriptions are
    the files' own, else (one-band files) the file name's stem. The XML records name, size and
    modification time of every file read (the sources of a VRT too), so it changes whenever one
    of them changes: the tile journal's fingerprint of the stack is then honest. ``bands``
    (1-based, one file only) takes those bands of the file in that order (a band subset, or the
    model's order of bands delivered in another)."""
    import xml.etree.ElementTree as ET

    rasterio = import_rasterio()
    if not paths:
        raise ValueError(f"{what}: no band files given")
    files = [Path(p) for p in paths]
    infos = [open_raster(p, f"{what} band file" if len(files) > 1 else what) for p in files]
    first = infos[0]
    for info in infos:
        if len(files) > 1 and info.count != 1:
            raise SceneError(
                WRONG_BANDS,
                f"{what} band file {info.path}: has {info.count} bands, expected 1 (several {what} files are "
                f"stacked one band per file; give a multi-band {what} file alone)",
            )
        for field, name in (
            ("crs", "CRS"),
            ("shape", "size (rows, cols)"),
            ("transform", "geotransform"),
            ("dtype", "dtype"),
            ("nodata", "nodata"),
        ):
            a, b = getattr(info, field), getattr(first, field)
            same = (a is None and b is None) or (a is not None and b is not None and a == b)
            if field == "nodata" and a is not None and b is not None and math.isnan(a) and math.isnan(b):
                same = True
            if field == "crs" and a is not None and b is not None:
                a, b = a.to_string(), b.to_string()
            if field == "transform":
                a, b = tuple(a)[:6], tuple(b)[:6]
            if not same:
                raise SceneError(
                    BAD_GRID if field in ("crs", "transform", "shape") else BAD_VALUES,
                    f"{what} band file {info.path}: {name} is {a}, expected {b} as in {first.path} (band files "
                    "are stacked pixel for pixel: same CRS, geotransform, size, dtype and nodata)",
                )
    if first.dtype not in _GDAL_TYPES:
        raise SceneError(BAD_VALUES, f"{what} {first.path}: dtype {first.dtype} cannot be stacked in a VRT")
    root = ET.Element("VRTDataset", rasterXSize=str(first.width), rasterYSize=str(first.height))
    if first.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = first.crs.to_wkt()
    t = first.transform
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    identity = ET.SubElement(root, "Metadata", domain="DDIF_SOURCES")
    seen: set[Path] = set()
    for path in files:
        for f in raster_files(path):
            f = f.resolve()
            if f in seen:
                continue
            seen.add(f)
            st = f.stat()
            item = ET.SubElement(identity, "MDI", key=f"FILE_{len(seen)}")
            item.text = f"{f} size={st.st_size} mtime_ns={st.st_mtime_ns}"
    if bands is not None:
        if len(files) != 1:
            raise ValueError(f"{what}: a band selection applies to one multi-band file, got {len(files)} files")
        bad = [b for b in bands if not 1 <= int(b) <= first.count]
        if bad or not bands:
            raise SceneError(
                WRONG_BANDS, f"{what} {first.path}: has {first.count} bands, asked for bands {list(bands)}"
            )
    band = 0
    for path, info in zip(files, infos):
        with rasterio.open(path) as src:
            nodatavals = src.nodatavals
        for k in [int(b) - 1 for b in bands] if bands is not None else range(info.count):
            band += 1
            vb = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[info.dtype], band=str(band))
            if nodatavals[k] is not None:
                ET.SubElement(vb, "NoDataValue").text = _nodata_text(nodatavals[k])
            description = (info.descriptions[k] if k < len(info.descriptions) else None) or (
                path.stem if len(files) > 1 else None
            )
            if description:
                ET.SubElement(vb, "Description").text = description
            source = ET.SubElement(vb, "SimpleSource")
            ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = str(path.resolve())
            ET.SubElement(source, "SourceBand").text = str(k + 1)
            for rect in ("SrcRect", "DstRect"):
                ET.SubElement(source, rect, xOff="0", yOff="0", xSize=str(info.width), ySize=str(info.height))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_band_stack(
    paths: Sequence[str | os.PathLike],
    vrt_path: str | os.PathLike,
    what: str = "MS",
    bands: Sequence[int] | None = None,
) -> Path:
    """Write :func:`band_stack_xml` of ``paths`` to ``vrt_path`` (atomically, and only when its
    text changed: an unchanged stack keeps its modification time, so an interrupted run resumes
    from its tile journal) and return the path; open it like any raster (:func:`open_pair`)."""
    from ddif.utils.io import atomic_write_text

    vrt_path = Path(vrt_path)
    text = band_stack_xml(paths, what, bands)
    try:
        if vrt_path.read_text(encoding="utf-8") == text:
            return vrt_path
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(vrt_path, text)
    return vrt_path


@dataclass
class InterpGeometry:
    """Where ``upsample`` puts MS samples and how far its kernel reaches (measured, not assumed)."""

    phase: int  # MS pixel j lands on upsampled pixel ratio * j + phase
    support: int  # upsampled pixels on each side of a sample that it influences


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
        raise RuntimeError(
            f"upsample({method}) is not an interpolating kernel on the expected grid "
            f"(peak {float(y[peak]):g} at phase {phase})"
        )
    return InterpGeometry(phase=phase, support=support)


@dataclass
class SceneGrid:
    """A checked MS + PAN pair and how the interpolated MS sits on the PAN grid."""

    ms: RasterInfo
    pan: RasterInfo
    ratio: int
    shift: tuple[int, int]  # PAN (row, col) = upsampled (row, col) + shift + subpixel
    subpixel: tuple[float, float]  # fractional part (rows, cols) in PAN pixels, |.| <= 0.5, resampled
    phase: int
    halo: int  # MS pixels read around a tile's footprint
    coverage: tuple[int, int, int, int]  # PAN window (row0, col0, row1, col1) covered by the MS
    interpolation: str = "interp23tap"  # the method actually used (bicubic for non-power-of-2 ratios)

    @property
    def bands(self) -> int:
        return self.ms.count

    @property
    def shape(self) -> tuple[int, int]:
        return self.pan.height, self.pan.width

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

    def registered(self, correction: tuple[float, float]) -> SceneGrid:
        """The same pair with the MS placed ``correction`` (rows, cols) PAN px further than its
        geotransform says (a measured misregistration, :func:`ddif.data.scene.measure_registration`):
        the integer shift and the fractional residual are recomputed, the coverage follows."""
        from dataclasses import replace

        offsets = (self.shift[0] + self.subpixel[0] + correction[0], self.shift[1] + self.subpixel[1] + correction[1])
        shift = (int(math.floor(offsets[0] + 0.5)), int(math.floor(offsets[1] + 0.5)))
        subpixel = (float(offsets[0] - shift[0]), float(offsets[1] - shift[1]))
        r = self.ratio
        coverage = (
            max(0, shift[0]),
            max(0, shift[1]),
            min(self.pan.height, shift[0] + r * self.ms.height),
            min(self.pan.width, shift[1] + r * self.ms.width),
        )
        return replace(self, shift=shift, subpixel=subpixel, coverage=coverage)

    def describe_placement(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "ms_shift_pan_px": list(self.shift),
            "subpixel_offset_pan_px": [round(v, 6) for v in self.subpixel],
            "placement": "exact (fractional part resampled, Keys cubic)" if any(self.subpixel) else "exact",
            "interpolation": self.interpolation,
        }


def placement(
    ms_transform: Affine, pan_transform: Affine, ratio: int, phase: int
) -> tuple[tuple[int, int], tuple[float, float]]:
    """(shift, residual) of the upsampled MS on the PAN grid: PAN index m of upsampled index k is
    m = k + (ms_origin - pan_origin) / pan_res + r/2 - phase - 1/2, rounded to the nearest integer
    (ties towards +inf); the residual is what rounding left (rows, cols), in PAN pixels."""
    mt, pt = ms_transform, pan_transform
    offsets = ((mt.f - pt.f) / pt.e + ratio / 2 - phase - 0.5, (mt.c - pt.c) / pt.a + ratio / 2 - phase - 0.5)
    shift = (int(math.floor(offsets[0] + 0.5)), int(math.floor(offsets[1] + 0.5)))
    return shift, (float(offsets[0] - shift[0]), float(offsets[1] - shift[1]))


def paired_windows(
    ms_shape: tuple[int, int],
    pan_shape: tuple[int, int],
    ratio: int,
    shift: tuple[int, int],
    crop: tuple[int, int, int, int] | None = None,
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """The MS window (row, col, h, w) whose every pixel j has its PAN pixels [r*j + shift,
    r*(j+1) + shift) inside the PAN, limited to ``crop`` (MS grid), and that PAN window; None if
    they do not overlap. (Full-resolution pairs for ``make-dataset`` and ``evaluate``.)"""
    r, (sy, sx) = ratio, shift
    j0, j1 = max(0, -(sy // r)), min(ms_shape[0], (pan_shape[0] - sy) // r)  # -(s // r) = ceil(-s / r)
    i0, i1 = max(0, -(sx // r)), min(ms_shape[1], (pan_shape[1] - sx) // r)
    if crop:
        j0, j1 = max(j0, crop[0]), min(j1, crop[0] + crop[2])
        i0, i1 = max(i0, crop[1]), min(i1, crop[1] + crop[3])
    if j1 <= j0 or i1 <= i0:
        return None
    return (j0, i0, j1 - j0, i1 - i0), (r * j0 + sy, r * i0 + sx, r * (j1 - j0), r * (i1 - i0))


def _ratio_of(ms_res: float, pan_res: float) -> float:
    return ms_res / pan_res if pan_res else float("nan")


def check_grids(ms: RasterInfo, pan: RasterInfo, ratio: int | None) -> int:
    """Both georeferenced and north-up, same CRS, an integer resolution ratio (equal to ``ratio``
    when given); returns the ratio."""
    for info, what in ((ms, "MS"), (pan, "PAN")):
        if info.transform.is_identity:
            raise SceneError(
                BAD_GRID,
                f"{what} {info.path}: not georeferenced (no transform); the resolution ratio "
                "and overlap cannot be checked",
            )
        t = info.transform
        if t.b != 0 or t.d != 0:
            raise SceneError(
                BAD_GRID,
                f"{what} {info.path}: rotated or sheared grid (transform {tuple(t)[:6]}); "
                "only north-up grids are supported",
            )
    if (ms.crs is None) != (pan.crs is None) or (ms.crs is not None and ms.crs != pan.crs):
        raise SceneError(
            BAD_GRID,
            f"MS {ms.path} and PAN {pan.path} have different CRSs ({ms.crs} vs {pan.crs}); reproject one first",
        )
    mt, pt = ms.transform, pan.transform
    rx, ry = _ratio_of(mt.a, pt.a), _ratio_of(mt.e, pt.e)
    rounded = round(rx) if math.isfinite(rx) else 0
    if not (rounded >= 1 and abs(rx - rounded) <= 1e-3 * rounded and abs(ry - rounded) <= 1e-3 * rounded):
        want = f" (the model needs {ratio})" if ratio else ""
        raise SceneError(
            WRONG_RATIO,
            f"MS pixels are {abs(mt.a):g} x {abs(mt.e):g} and PAN pixels {abs(pt.a):g} x "
            f"{abs(pt.e):g}: resolution ratio {rx:g} x {ry:g} is not a whole number{want}",
        )
    if ratio is not None and rounded != ratio:
        raise SceneError(
            WRONG_RATIO,
            f"MS/PAN resolution ratio is {rounded} (MS {abs(mt.a):g}, PAN {abs(pt.a):g} "
            f"CRS units per pixel) but the model was trained for ratio {ratio}",
        )
    return int(rounded)


def check_band_order(ms: RasterInfo, band_names: tuple[str, ...]) -> None:
    """When the model knows its bands by name and the MS file names all of its bands, the names
    must come in the model's order (a B4, B3, B2 file for a B2, B3, B4 model is refused: fusing it
    would swap the colours silently). Descriptions that are not the model's names (free text)
    cannot be checked and are accepted."""
    names = tuple((d or "").strip() for d in ms.descriptions)
    if not band_names or len(names) != len(band_names) or not all(names):
        return
    if set(names) == set(band_names) and names != tuple(band_names):
        raise SceneError(
            WRONG_BANDS,
            f"MS {ms.path}: bands are {list(names)}, the model fuses {list(band_names)} in "
            "that order; reorder the bands (e.g. gdal_translate -b)",
        )


def open_pair(
    ms_path: str | os.PathLike,
    pan_path: str | os.PathLike,
    *,
    bands: int | None,
    guide_bands: int | None,
    ratio: int | None,
    preprocessing: Preprocessing,
    input_nodata: float | None = None,
) -> SceneGrid:
    """Open and check an MS + PAN pair against a model (``bands`` / ``guide_bands`` / ``ratio``,
    None = whatever the files hold); :class:`SceneError` naming the problem. ``input_nodata``
    stands in for the nodata tag of an input that has none."""
    ms = open_raster(ms_path, "MS")
    pan = open_raster(pan_path, "PAN")
    for info in (ms, pan):
        if info.nodata is None and input_nodata is not None:
            info.nodata = float(input_nodata)
    if bands is not None and ms.count != bands:
        raise SceneError(WRONG_BANDS, f"MS {ms.path}: has {ms.count} bands, the model fuses {bands}")
    if guide_bands is not None and pan.count != guide_bands:
        raise SceneError(WRONG_BANDS, f"PAN {pan.path}: has {pan.count} bands, the model expects {guide_bands}")
    check_band_order(ms, preprocessing.band_names)
    ratio = check_grids(ms, pan, ratio)
    interpolation = preprocessing.method_for(ratio)
    geo = interpolation_geometry(ratio, interpolation, preprocessing.padding)
    shift, subpixel = placement(ms.transform, pan.transform, ratio, geo.phase)
    row0, col0 = max(0, shift[0]), max(0, shift[1])
    row1, col1 = min(pan.height, shift[0] + ratio * ms.height), min(pan.width, shift[1] + ratio * ms.width)
    if row1 <= row0 or col1 <= col0:
        raise SceneError(
            NO_OVERLAP,
            f"MS {ms.path} and PAN {pan.path} do not overlap (MS footprint lands at PAN "
            f"rows {shift[0]}..{shift[0] + ratio * ms.height}, cols {shift[1]}.."
            f"{shift[1] + ratio * ms.width} of a {pan.height} x {pan.width} PAN)",
        )
    halo = -(-geo.support // ratio) + 1 + int(preprocessing.fill_iterations)
    return SceneGrid(ms, pan, ratio, shift, subpixel, geo.phase, halo, (row0, col0, row1, col1), interpolation)


# --------------------------------------------------------------------------------------------
# whole reads (datasets, demos): the same rasters, headers, stacking and nodata rule
# --------------------------------------------------------------------------------------------
@dataclass
class Raster:
    """Pixels ``(bands, H, W)`` in their stored dtype and the file's header (:class:`RasterInfo`,
    the one header type: rasterio CRS and affine transform; for a window, the window's)."""

    array: np.ndarray
    info: RasterInfo

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def nodata(self) -> float | None:
        return self.info.nodata

    @property
    def georeferenced(self) -> bool:
        return not self.info.transform.is_identity

    @property
    def crs_wkt(self) -> str | None:
        return self.info.crs.to_wkt() if self.info.crs else None

    @property
    def transform_tuple(self) -> tuple[float, ...] | None:
        """(a, b, c, d, e, f): x = a col + b row + c, y = d col + e row + f; None without georeferencing."""
        return tuple(float(v) for v in tuple(self.info.transform)[:6]) if self.georeferenced else None


def nodata_mask(data: np.ndarray, nodata_values: Sequence[float | None]) -> np.ndarray:
    """The one nodata rule: (H, W) True where any band of ``data`` (bands, H, W) equals one of
    ``nodata_values`` (a NaN value matches NaN; a value the dtype cannot hold matches nothing).
    Non-finite values that are not nodata are not masked here: :func:`check_finite_values`
    refuses them (a NaN is data gone wrong unless the file says it means nodata)."""
    mask = np.zeros(data.shape[-2:], dtype=bool)
    for v in nodata_values:
        if v is None:
            continue
        if math.isnan(v):
            if data.dtype.kind == "f":
                mask |= np.isnan(data).any(axis=0)
            continue
        if data.dtype.kind in "iu":
            info = np.iinfo(data.dtype)
            if not (float(v).is_integer() and info.min <= v <= info.max):
                continue
        mask |= (data == data.dtype.type(v)).any(axis=0)
    return mask


def check_finite_values(data: np.ndarray, nodata: np.ndarray, what: str) -> None:
    """:class:`SceneError` (bad_values) naming ``what`` when a float raster holds NaN / Inf outside
    its nodata mask."""
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data).all(axis=0) & ~nodata
        if bad.any():
            raise SceneError(
                BAD_VALUES,
                f"{what}: {int(bad.sum())} pixels hold NaN/Inf that are not the nodata value (declare the "
                "nodata value, e.g. --nodata nan, if they mark missing data)",
            )


def read_raster(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    what: str = "raster",
    *,
    bands: Sequence[int] | None = None,
    window: Sequence[int] | None = None,
) -> Raster:
    """Read a raster whole, or only ``window`` = (row, col, height, width): one GeoTIFF / VRT
    (all bands, or the 1-based ``bands``), or several one-band files stacked in order as a VRT
    (:func:`band_stack_xml`: same CRS, geotransform, size, dtype and nodata). Opened by
    :func:`open_raster` like every scene: ``FileNotFoundError`` for a missing file,
    :class:`SceneError` (a ``ValueError``) naming the file for one that cannot be opened or
    decoded (corrupt, truncated, not a raster) or for bands / windows it does not have."""
    rasterio = import_rasterio()
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not files:
        raise ValueError(f"{what}: no raster files given")
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"{f}: no such file")
        if f.is_dir():
            raise ValueError(f"{f}: is a directory, expected a GeoTIFF")
    if len(files) == 1:
        info = open_raster(files[0], what)
        source: str = str(files[0])
    else:
        if bands is not None:
            raise ValueError(f"{what}: a band selection applies to one multi-band file, got {len(files)} files")
        source = band_stack_xml(files, what)  # GDAL opens a VRT given as its XML text
        info = dataclasses.replace(open_raster(files[0], what), path=",".join(str(f) for f in files))
        info.count = len(files)
    indexes = list(range(1, info.count + 1)) if bands is None else [int(b) for b in bands]
    bad = [b for b in indexes if not 1 <= b <= info.count]
    if bad:
        raise SceneError(WRONG_BANDS, f"{info.path}: has {info.count} bands (1-based), asked for {bad}")
    win = None
    if window is not None:
        row, col, height, width = (int(v) for v in window)
        if row < 0 or col < 0 or height <= 0 or width <= 0 or row + height > info.height or col + width > info.width:
            raise SceneError(
                BAD_GRID,
                f"{info.path}: window (row {row}, col {col}, {height}x{width}) is not inside the "
                f"{info.height}x{info.width} raster",
            )
        win = Window(col, row, width, height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # an ungeoreferenced file is fine
            with rasterio.open(source) as src:
                if len({src.dtypes[i - 1] for i in indexes}) > 1:
                    raise SceneError(BAD_VALUES, f"{info.path}: bands {indexes} have mixed dtypes {src.dtypes}")
                data = src.read(indexes, window=win)
    except gdal_errors() as exc:
        raise SceneError(
            CORRUPT, f"{info.path}: cannot read as a GeoTIFF (corrupt, truncated or not a raster?): {exc}"
        ) from None
    if data.dtype.kind not in "iuf":
        raise SceneError(BAD_VALUES, f"{info.path}: pixel dtype {data.dtype} is not integer or float")
    header = dataclasses.replace(info, count=len(indexes), dtype=str(data.dtype))
    if win is not None:
        header = dataclasses.replace(header, width=win.width, height=win.height)
        if not info.transform.is_identity:
            header.transform = window_transform(win, info.transform)
    return Raster(data, header)


def write_raster(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    crs: Any = None,
    transform: Any = None,
    nodata: float | None = None,
    compress: str | None = "deflate",
) -> Path:
    """Write ``data`` (bands, H, W) or (H, W) as a GeoTIFF, atomically (temporary file + rename).
    ``crs``: anything rasterio takes ("EPSG:32632", WKT, a CRS); ``transform``: an Affine or its
    six coefficients (a, b, c, d, e, f)."""
    rasterio = import_rasterio()
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import Affine

    from ddif.utils.io import atomic_path

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.size == 0:
        raise ValueError(f"expected (bands, H, W) or (H, W) pixels, got shape {data.shape}")
    if data.dtype.kind not in "iuf" or data.dtype == np.float16:
        raise ValueError(f"GeoTIFF pixels must be an integer or float32/64 dtype, got {data.dtype}")
    profile: dict[str, Any] = dict(
        driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype.name
    )
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])
    if nodata is not None:
        profile["nodata"] = nodata
    if compress:
        profile["compress"] = compress
    path = Path(path)
    with atomic_path(path, suffix=".partial.tif") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # allowed: no transform given
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
    return path
