"""The one raster-ingestion layer: every entry point that reads an MS + PAN pair (``ddif
make-dataset``, ``ddif sample``, ``ddif evaluate``, ``ddif station``) opens, checks, places and
reads it here, so the same scene gives the same network inputs everywhere.

- **Opening and checks** (:func:`open_pair`): both rasters readable, north-up and georeferenced,
  same CRS, band counts, an integer MS / PAN resolution ratio equal to the model's, overlapping
  footprints. Problems raise :class:`SceneError` with a category (what a service does about it)
  and a message naming the file, what was expected and what came.
- **Placement** (:func:`placement`): the MS is interpolated as in training
  (:func:`ddif.data.mtf.upsample`), which puts MS pixel ``j`` on upsampled pixel
  ``ratio * j + phase``; the upsampled image is placed on the PAN grid at the integer shift
  nearest to where its pixel centres fall. For Landsat ratio-2 pairs, whose PAN grid is offset
  by half a PAN pixel from the MS grid, the placement is exact (shift (-1, 0) for the real
  Landsat-8 pair in ``shared/data``); for a pair sharing its top-left corner (PanCollection) the
  shift is 0 and a residual of half a PAN pixel remains, the convention of the toolbox. The
  residual is reported, never resampled. ``make-dataset`` pairs MS and PAN with the same shift.
- **Nodata, holes, normalisation** (:class:`SceneReader`): nodata masks (the files' tags, or
  ``input_nodata`` for files without one), holes filled by dilation before interpolating, DN
  divided by the model's max DN.
- **Scale** (:func:`check_scale`): data whose dtype or value range does not fit the model's DN
  convention (reflectance in [0, 1], 8-bit quick-looks, 16-bit full-range products for a
  15-bit model) are refused unless ``input_scale`` states the conversion (DN = value x scale).
- **Windows**: a PAN-grid window reads its PAN pixels and the MS pixels under it plus a halo as
  wide as the interpolation kernel and the hole filling reach, so a window gives the same values
  as the whole scene would (the ground station reads scenes of any size this way).

The preprocessing a model was trained with (interpolation, boundary padding, hole filling, max
DN) is stored in its checkpoint (``preset.data`` / ``preset.model.max_dn``) and read back with
:meth:`Preprocessing.for_preset`.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

# scene problems, by what a service does about them (quarantine categories)
CORRUPT = "corrupt"
MISSING_PARTNER = "missing_partner"
WRONG_RATIO = "wrong_ratio"
NO_OVERLAP = "no_overlap"
ALL_NODATA = "all_nodata"
BAD_GRID = "bad_grid"            # rotated / skewed transform, CRS mismatch, missing georeferencing
WRONG_BANDS = "wrong_bands"
BAD_VALUES = "bad_values"        # NaN / Inf that are not the nodata value, unsupported dtype
BAD_SCALE = "bad_scale"          # dtype or value range does not fit the model's DN convention

INTERPOLATIONS = ("interp23tap", "bicubic")
PADDINGS = ("symmetric", "replicate", "circular")


class SceneError(ValueError):
    """A bad scene: ``category`` (one of the constants above) says why, the message says what."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category


def _rasterio():
    try:
        import rasterio
    except ImportError as exc:
        raise ImportError("reading GeoTIFF scenes needs rasterio: pip install rasterio (or ddif[geo])") from exc
    return rasterio


@contextlib.contextmanager
def gdal_env(cache_mb: int = 64) -> Iterator[None]:
    """GDAL settings of every scene read / product write: a bounded block cache (part of the
    station's memory bound), no side-car .aux.xml files, single-threaded (deterministic)
    compression."""
    rasterio = _rasterio()
    with rasterio.Env(GDAL_CACHEMAX=int(cache_mb), GDAL_PAM_ENABLED="NO", GDAL_NUM_THREADS="1",
                      GDAL_TIFF_INTERNAL_MASK="YES"):
        yield


# --------------------------------------------------------------------------------------------
# what a model was trained with
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocessing:
    """How a model's ``lms`` / ``pan`` inputs are made from DN rasters."""

    max_dn: float
    interpolation: str = "interp23tap"     # MS -> PAN grid (interp23tap needs a power-of-2 ratio)
    padding: str = "symmetric"             # interp23tap boundary at the scene edge
    fill_iterations: int = 4               # 3x3 dilations filling nodata holes before interpolating
    band_names: tuple[str, ...] = ()       # the MS bands in the model's order, when the training data named them

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
    def for_preset(cls, preset, *, interpolation: str | None = None, padding: str | None = None,
                   fill_iterations: int | None = None) -> "Preprocessing":
        """The preprocessing stored in a model's preset, with optional overrides."""
        d = preset.data
        return cls(float(preset.model.max_dn),
                   interpolation or getattr(d, "interpolation", "interp23tap"),
                   padding or getattr(d, "interp_padding", "symmetric"),
                   int(getattr(d, "fill_iterations", 4) if fill_iterations is None else fill_iterations),
                   tuple(getattr(d, "band_names", ()) or ()))

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

    def describe_placement(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "ms_shift_pan_px": list(self.shift),
                "subpixel_offset_pan_px": [round(v, 6) for v in self.subpixel], "interpolation": self.interpolation}


def placement(ms_transform, pan_transform, ratio: int, phase: int) -> tuple[tuple[int, int], tuple[float, float]]:
    """(shift, residual) of the upsampled MS on the PAN grid: PAN index m of upsampled index k is
    m = k + (ms_origin - pan_origin) / pan_res + r/2 - phase - 1/2, rounded to the nearest integer
    (ties towards +inf); the residual is what rounding left (rows, cols), in PAN pixels."""
    mt, pt = ms_transform, pan_transform
    offsets = ((mt.f - pt.f) / pt.e + ratio / 2 - phase - 0.5,
               (mt.c - pt.c) / pt.a + ratio / 2 - phase - 0.5)
    shift = (int(math.floor(offsets[0] + 0.5)), int(math.floor(offsets[1] + 0.5)))
    return shift, (float(offsets[0] - shift[0]), float(offsets[1] - shift[1]))


def paired_windows(ms_shape: tuple[int, int], pan_shape: tuple[int, int], ratio: int, shift: tuple[int, int],
                   crop: tuple[int, int, int, int] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The MS window (row, col, h, w) whose every pixel j has its PAN pixels [r*j + shift,
    r*(j+1) + shift) inside the PAN, limited to ``crop`` (MS grid), and that PAN window; None if
    they do not overlap. (Full-resolution pairs for ``make-dataset`` and ``evaluate``.)"""
    r, (sy, sx) = ratio, shift
    j0, j1 = max(0, -(sy // r)), min(ms_shape[0], (pan_shape[0] - sy) // r)       # -(s // r) = ceil(-s / r)
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
            raise SceneError(BAD_GRID, f"{what} {info.path}: not georeferenced (no transform); the resolution ratio "
                                       "and overlap cannot be checked")
        t = info.transform
        if t.b != 0 or t.d != 0:
            raise SceneError(BAD_GRID, f"{what} {info.path}: rotated or sheared grid (transform {tuple(t)[:6]}); "
                                       "only north-up grids are supported")
    if (ms.crs is None) != (pan.crs is None) or (ms.crs is not None and ms.crs != pan.crs):
        raise SceneError(BAD_GRID, f"MS {ms.path} and PAN {pan.path} have different CRSs ({ms.crs} vs {pan.crs}); "
                                   "reproject one first")
    mt, pt = ms.transform, pan.transform
    rx, ry = _ratio_of(mt.a, pt.a), _ratio_of(mt.e, pt.e)
    rounded = round(rx) if math.isfinite(rx) else 0
    if not (rounded >= 1 and abs(rx - rounded) <= 1e-3 * rounded and abs(ry - rounded) <= 1e-3 * rounded):
        want = f" (the model needs {ratio})" if ratio else ""
        raise SceneError(WRONG_RATIO, f"MS pixels are {abs(mt.a):g} x {abs(mt.e):g} and PAN pixels {abs(pt.a):g} x "
                                      f"{abs(pt.e):g}: resolution ratio {rx:g} x {ry:g} is not a whole number{want}")
    if ratio is not None and rounded != ratio:
        raise SceneError(WRONG_RATIO, f"MS/PAN resolution ratio is {rounded} (MS {abs(mt.a):g}, PAN {abs(pt.a):g} "
                                      f"CRS units per pixel) but the model was trained for ratio {ratio}")
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
        raise SceneError(WRONG_BANDS, f"MS {ms.path}: bands are {list(names)}, the model fuses {list(band_names)} in "
                                      "that order; reorder the bands (e.g. gdal_translate -b)")


def open_pair(ms_path: str | os.PathLike, pan_path: str | os.PathLike, *, bands: int | None, guide_bands: int | None,
              ratio: int | None, preprocessing: Preprocessing, input_nodata: float | None = None) -> SceneGrid:
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
        raise SceneError(NO_OVERLAP, f"MS {ms.path} and PAN {pan.path} do not overlap (MS footprint lands at PAN "
                                     f"rows {shift[0]}..{shift[0] + ratio * ms.height}, cols {shift[1]}.."
                                     f"{shift[1] + ratio * ms.width} of a {pan.height} x {pan.width} PAN)")
    halo = -(-geo.support // ratio) + 1 + int(preprocessing.fill_iterations)
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


def normalise(data: np.ndarray, max_dn: float, scale: float = 1.0) -> np.ndarray:
    """DN (``data * scale``) -> [0, 1] float32 (values above the max DN saturate at 1, negatives at 0)."""
    x = data.astype(np.float32)
    if scale != 1.0:
        x *= np.float32(scale)
    return np.clip(x / np.float32(max_dn), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# value scale
# --------------------------------------------------------------------------------------------
# The rule: a raster fits a model whose inputs are DN / max_dn when (1) an integer dtype can hold
# at least half the max DN, (2) its largest valid value reaches 2 % of the max DN (reflectance in
# [0, 1] or an 8-bit quick-look of a 15-bit model does not), (3) at most 1 % of its valid pixels
# exceed the max DN (a 16-bit full-range product for a 15-bit model does not).
MIN_PEAK_FRACTION = 0.02
MAX_ABOVE_FRACTION = 0.01


@dataclass
class ValueStats:
    """Running statistics of the valid pixels of one raster (values in file units)."""

    dtype: str
    valid: int = 0
    above: int = 0               # valid pixels (any band) above the threshold (the max DN, in file units)
    peak: float = -math.inf      # largest valid value
    low: float = math.inf        # smallest valid value
    threshold: float = math.inf

    def add(self, data: np.ndarray, invalid: np.ndarray) -> None:
        ok = ~invalid
        n = int(ok.sum())
        if not n:
            return
        vals = data[:, ok]
        if vals.dtype.kind == "f":
            vals = vals[:, np.isfinite(vals).all(axis=0)]
            if not vals.size:
                return
        self.valid += n
        self.peak = max(self.peak, float(vals.max()))
        self.low = min(self.low, float(vals.min()))
        self.above += int((vals > self.threshold).any(axis=0).sum())

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "valid_pixels": self.valid, "min": self.low if self.valid else None,
                "max": self.peak if self.valid else None, "above_max_dn": self.above}


def new_stats(info_dtype: str, max_dn: float, scale: float) -> ValueStats:
    return ValueStats(str(info_dtype), threshold=float(max_dn) / float(scale))


def array_stats(arr: np.ndarray, max_dn: float, scale: float = 1.0) -> ValueStats:
    """:class:`ValueStats` of a whole (C, H, W) / (N, C, H, W) array (non-finite values ignored)."""
    arr = np.asarray(arr)
    stats = new_stats(arr.dtype.name, max_dn, scale)
    flat = arr.reshape((-1,) + arr.shape[-2:]) if arr.ndim >= 3 else arr[None]
    bad = ~np.isfinite(flat).all(axis=0) if flat.dtype.kind == "f" else np.zeros(flat.shape[-2:], dtype=bool)
    stats.add(flat, bad)
    return stats


def scale_problem(stats: ValueStats, max_dn: float, scale: float = 1.0) -> str | None:
    """Why values with these statistics (times ``scale``) do not fit DN up to ``max_dn``, or None."""
    dtype = np.dtype(stats.dtype)
    if dtype.kind in "iu" and np.iinfo(dtype).max * scale < 0.5 * max_dn:
        return (f"dtype {dtype.name} holds at most {np.iinfo(dtype).max} (x scale {scale:g}), but the model expects "
                f"digital numbers up to {max_dn:g}")
    if not stats.valid:
        return None
    peak = stats.peak * scale
    if peak < MIN_PEAK_FRACTION * max_dn:
        return (f"the largest valid value is {peak:g}, under {100 * MIN_PEAK_FRACTION:g}% of the model's max DN "
                f"{max_dn:g} (reflectance in [0, 1], or data scaled for display?)")
    frac = stats.above / stats.valid
    if frac > MAX_ABOVE_FRACTION:
        return (f"{100 * frac:.1f}% of the valid pixels exceed the model's max DN {max_dn:g} (largest {peak:g}): "
                "the data use another DN range than the model was trained on")
    return None


def check_scale(what: str, path: str, stats: ValueStats, max_dn: float, input_scale: float | None,
                warn: Callable[[str], None] | None = None) -> None:
    """Refuse (:class:`SceneError` BAD_SCALE) a raster whose values do not fit the model's DN
    convention; when ``input_scale`` was stated explicitly, the user has the last word: the
    problem is only reported through ``warn``."""
    problem = scale_problem(stats, max_dn, 1.0 if input_scale is None else float(input_scale))
    if problem is None:
        return
    if input_scale is None:
        raise SceneError(BAD_SCALE, f"{what} {path}: {problem}. Expected {stats.dtype} digital numbers in "
                                    f"[0, {max_dn:g}]; if the values are in other units, state the conversion "
                                    "with --input-scale S (DN = value x S)")
    if warn is not None:
        warn(f"{what} {path}: {problem} (kept: --input-scale {input_scale:g} was given)")


# --------------------------------------------------------------------------------------------
# windowed readers
# --------------------------------------------------------------------------------------------
class SceneReader:
    """Open MS + PAN datasets of a :class:`SceneGrid` and read PAN-grid windows of them.

    ``input_scale`` converts file values to DN (DN = value x scale) before normalising by
    ``preprocessing.max_dn``."""

    def __init__(self, grid: SceneGrid, preprocessing: Preprocessing, input_scale: float | None = None):
        self.grid = grid
        self.pre = preprocessing
        self.max_dn = float(preprocessing.max_dn)
        self.scale = 1.0 if input_scale is None else float(input_scale)
        self.interpolation = grid.interpolation
        self.padding = preprocessing.padding
        self.fill_iterations = preprocessing.fill_iterations
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

    def _norm(self, data: np.ndarray) -> np.ndarray:
        return normalise(data, self.max_dn, self.scale)

    # ---- PAN
    def pan_window(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """PAN DN (P, h, w) in its dtype and its invalid mask."""
        data = self._read(self._pan, "PAN", y0, x0, h, w)
        bad = invalid_mask(data, self.grid.pan.nodata)
        check_finite(data, bad, f"PAN {self.grid.pan.path}")
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
        check_finite(data, bad, f"MS {g.ms.path}")
        sub = bad[np.clip(jy - r0, 0, r1 - r0 - 1)][:, np.clip(jx - c0, 0, c1 - c0 - 1)]
        return sub | ~iny[:, None] | ~inx[None, :]

    def valid_window(self, y0: int, x0: int, h: int, w: int, pan_stats: ValueStats | None = None) -> np.ndarray:
        """(h, w) True where the product holds data: PAN valid and MS valid under it."""
        pan, pan_bad = self.pan_window(y0, x0, h, w)
        if pan_stats is not None:
            pan_stats.add(pan, pan_bad)
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
        x = fill_invalid(self._norm(data), bad, self.fill_iterations)
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
        :func:`ddif.utils.tiling.pad_to` pads a whole image, so the tile equals the Fuser's."""
        H, W = self.grid.shape
        hh, ww = min(h, H - y0), min(w, W - x0)
        lms, pan = self.window_inputs(y0, x0, hh, ww)
        if (hh, ww) == (h, w):
            return lms, pan
        import torch

        from ddif.utils.tiling import pad_to

        return (pad_to(torch.from_numpy(lms), h, w).numpy(), pad_to(torch.from_numpy(pan), h, w).numpy())

    def read_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole scene: lms (C, H, W), pan (P, H, W) float32 in [0, 1] and valid (H, W)
        (for small scenes; large ones are read by windows)."""
        H, W = self.grid.shape
        lms, pan = self.window_inputs(0, 0, H, W)
        return lms, pan, self.valid_window(0, 0, H, W)


@dataclass
class SceneScan:
    """What one pass over a scene found: valid pixels and value statistics of both rasters."""

    valid_pixels: int
    pan: ValueStats
    ms: ValueStats
    extra: dict[str, Any] = field(default_factory=dict)


def scan_scene(reader: SceneReader, block: int,
               on_block: Callable[[int, int, np.ndarray], None] | None = None) -> SceneScan:
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
            check_finite(data, bad, f"MS {g.ms.path}")
            ms_stats.add(data, bad)
    return SceneScan(total, pan_stats, ms_stats)


def check_scene_scale(grid: SceneGrid, scan: SceneScan, max_dn: float, input_scale: float | None,
                      warn: Callable[[str], None] | None = None) -> None:
    """:func:`check_scale` for both rasters of a scanned scene."""
    check_scale("MS", grid.ms.path, scan.ms, max_dn, input_scale, warn)
    check_scale("PAN", grid.pan.path, scan.pan, max_dn, input_scale, warn)


def read_scene(ms_path, pan_path, *, preset, input_scale: float | None = None, input_nodata: float | None = None,
               block: int = 512, warn: Callable[[str], None] | None = None):
    """Open, check (grids, bands, ratio, scale) and read a whole MS + PAN pair for ``preset``'s
    model: (grid, lms (C, H, W), pan (P, H, W), valid (H, W)), float32 in [0, 1] on the PAN grid.
    For scenes that fit in memory (``ddif sample``, ``ddif evaluate``); the station reads windows."""
    pre = Preprocessing.for_preset(preset)
    with gdal_env():
        grid = open_pair(ms_path, pan_path, bands=preset.model.bands, guide_bands=preset.model.guide_bands,
                         ratio=preset.data.ratio, preprocessing=pre, input_nodata=input_nodata)
        with SceneReader(grid, pre, input_scale) as reader:
            scan = scan_scene(reader, block)
            if scan.valid_pixels == 0:
                raise SceneError(ALL_NODATA, f"scene {ms_path} + {pan_path}: no pixel is valid in both MS and PAN")
            check_scene_scale(grid, scan, pre.max_dn, input_scale, warn)
            lms, pan, valid = reader.read_all()
    return grid, lms, pan, valid


def read_full_resolution(ms_path, pan_path, *, preset, crop: tuple[int, int, int, int] | None = None,
                         input_scale: float | None = None, input_nodata: float | None = None,
                         warn: Callable[[str], None] | None = None):
    """A full-resolution evaluation pair (no ground truth): the MS (C, h, w) and, on the PAN grid
    under it, lms (C, r*h, r*w) and pan (P, r*h, r*w), float32 in [0, 1], read and checked like
    :func:`read_scene`. ``crop`` (row, col, h, w on the MS grid) limits it; nodata inside is refused."""
    grid, lms, pan, valid = read_scene(ms_path, pan_path, preset=preset, input_scale=input_scale,
                                       input_nodata=input_nodata, warn=warn)
    windows = paired_windows(grid.ms.shape, grid.pan.shape, grid.ratio, grid.shift, crop)
    if windows is None:
        raise SceneError(NO_OVERLAP, f"MS {grid.ms.path}: no MS pixel{' of the crop ' + str(crop) if crop else ''} "
                                     f"has all its PAN pixels in {grid.pan.path}")
    (j0, i0, h, w), (y0, x0, ph, pw) = windows
    if not valid[y0:y0 + ph, x0:x0 + pw].all():
        raise SceneError(ALL_NODATA, f"scene {ms_path} + {pan_path}: nodata inside the MS window {windows[0]}; "
                                     "give a crop (row, col, height, width on the MS grid) free of nodata")
    pre = Preprocessing.for_preset(preset)
    with gdal_env(), SceneReader(grid, pre, input_scale) as reader:
        ms = reader.ms_lowres(j0, i0, h, w)
    cut = (slice(None), slice(y0, y0 + ph), slice(x0, x0 + pw))
    return grid, ms, np.ascontiguousarray(lms[cut]), np.ascontiguousarray(pan[cut])


__all__ = ["SceneError", "Preprocessing", "RasterInfo", "SceneGrid", "SceneReader", "SceneScan", "ValueStats",
           "open_raster", "open_pair", "check_grids", "placement", "interpolation_geometry", "invalid_mask",
           "check_finite", "fill_invalid", "normalise", "scan_scene", "check_scale", "check_scene_scale",
           "scale_problem", "new_stats", "array_stats", "read_scene", "read_full_resolution",
           "paired_windows", "gdal_env", "CORRUPT", "MISSING_PARTNER", "WRONG_RATIO",
           "NO_OVERLAP", "ALL_NODATA", "BAD_GRID", "WRONG_BANDS", "BAD_VALUES", "BAD_SCALE"]
