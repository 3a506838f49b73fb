"""Build train / val / test ``.h5`` files of patches from a real MS + PAN scene (Wald protocol).

Reduced-resolution protocol (Wald, Ranchin & Mangolini, "Fusion of satellite images of different
spatial resolutions: assessing the quality of resulting images", PE&RS 63(6), 1997; as applied in
Vivone et al., "A critical comparison among pansharpening algorithms", IEEE TGRS 53(5), 2015):
the MS image at its native resolution is the ground truth ``gt``; MS and PAN are both low-pass
filtered with the sensor's MTF and decimated by the ratio (:func:`ddif.data.mtf.
simulate_reduced_resolution`), giving ``ms`` (coarse), ``lms`` (``ms`` re-interpolated to the gt
grid) and ``pan`` on the gt grid. A network trained to map (``lms``, ``pan``) to ``gt`` at this
scale is then applied at full scale (scale invariance hypothesis).

Scenes without a PAN band (e.g. an RGB-only Landsat-8 B2-B4 product) can still be used
**semi-synthetically**: the PAN on the gt grid is synthesised as a spectral-response-weighted sum of
the MS bands (:func:`synthesize_pan`) while ``ms`` / ``lms`` are made by the MTF degradation as
above. Such a PAN is a linear function of ``gt``: it is not a real panchromatic acquisition, and
every result obtained with it must say so (the files carry ``pan_source = "synthesized ..."``).

Honest splits: the scene is cut into spatial regions along one side: a test strip (from which one
square fill-free crop is taken), then a validation strip, then the training region. Each region is
degraded on its own, so no pixel of the validation or test regions enters a training file, not
even through the filter support. Patches touching fill / nodata (within ``fill_margin`` pixels,
because the filters smear fill into its neighbourhood) or a region border are skipped.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# torch is imported inside the functions: `import ddif.data` (which re-exports this module's names
# eagerly, see ddif/data/__init__.py) must stay cheap.

# Landsat-8 OLI band passes in nm (USGS, "What are the band designations for the Landsat
# satellites?"; lower / upper band edges). B8 is the panchromatic band.
LANDSAT8_OLI_BANDPASS_NM: dict[str, tuple[float, float]] = {
    "B1": (430.0, 450.0), "B2": (450.0, 510.0), "B3": (530.0, 590.0), "B4": (640.0, 670.0),
    "B5": (850.0, 880.0), "B6": (1570.0, 1650.0), "B7": (2110.0, 2290.0), "B8": (500.0, 680.0),
}

SIDES = ("left", "right", "top", "bottom")


def _option(default, help: str):
    """A dataclass field with its CLI help text (``field.metadata["help"]``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class MakeDatasetConfig:
    """Everything ``make_dataset`` needs (the ``ddif make-dataset`` options).

    Sizes (``patch_size``, ``stride``, ``test_size``, ``fill_margin``, ``crop``) are in pixels of the
    reduced-resolution PAN grid, which is the scene's MS grid. Each field's ``metadata["help"]``
    says what it is (for generated CLI help).
    """

    ms: tuple[str, ...] = _option((), "MS GeoTIFF (multi-band), one GeoTIFF per band in order, or one .npy "
                                      "(C, h, w) of DN")
    pan: str = _option("", "PAN GeoTIFF / .npy (P, ratio*h, ratio*w); '' -> synthesise it from the MS "
                           "(semi-synthetic)")
    out_dir: str = _option("data/dataset", "folder for the .h5 files and the summary JSON")
    name: str = _option("dataset", "files: {name}_train.h5, {name}_val.h5, {name}_test.h5 (+ {name}_test_full.h5 "
                                   "with a real PAN)")
    ratio: int = _option(4, "MS / PAN resolution ratio")
    sensor: str = _option("generic", "MTF gains of the degradation (ddif.data.mtf.SENSOR_MTF: wv3, qb, gf2, "
                                     "landsat8, generic, ...)")
    interpolation: str = _option("interp23tap", "how ms is re-interpolated to lms: interp23tap or bicubic")
    padding: str = _option("symmetric", "interp23tap boundary: symmetric, replicate or circular (the toolbox's "
                                        "wrap-around)")
    ms_bands: tuple[int, ...] = _option((), "1-based bands of a multi-band MS file to use (empty = all)")
    pan_weights: tuple[float, ...] = _option((), "synthetic-PAN weight per MS band (only without a PAN); see "
                                                 "bandpass_pan_weights")
    max_dn: float = _option(0.0, "input DN mapped to 1.0 (0 -> the dtype's max for integer data, 1.0 for floats)")
    out_max_dn: float = _option(0.0, "files store value * out_max_dn, the training preset's model.max_dn "
                                     "(0 -> max_dn: the files hold the scene's DN)")
    nodata: tuple[float, ...] = _option((), "fill values besides the GeoTIFF nodata tag (e.g. 0 for Landsat L1 "
                                            "scenes)")
    fill_margin: int = _option(-1, "keep patches this far from fill and region borders (-1 -> 4 * ratio)")
    crop: tuple[int, ...] = _option((), "row,col,height,width of the scene to use, MS grid (empty = whole scene)")
    patch_size: int = _option(64, "side of a training / validation patch on the gt grid (multiple of ratio)")
    stride: int = _option(32, "step between patches (multiple of ratio)")
    holdout_side: str = _option("left", "side of the scene holding the test strip, then the val strip: "
                                        "left/right/top/bottom")
    val_fraction: float = _option(0.15, "width of the validation strip, as a fraction of the scene along that axis")
    test_size: int = _option(256, "side of the square held-out test crop (0 -> no test file)")
    max_train_patches: int = _option(0, "keep a random subset of this many training patches (0 -> all)")
    seed: int = _option(0, "shuffles the training patches (and picks the subset)")
    compression: str = _option("gzip", "gzip, lzf or '' (none)")

    def __post_init__(self) -> None:
        if isinstance(self.ms, (str, os.PathLike)):
            self.ms = (str(self.ms),)
        self.ms = tuple(str(p) for p in self.ms)
        self.ms_bands = tuple(int(b) for b in self.ms_bands)
        self.pan_weights = tuple(float(w) for w in self.pan_weights)
        self.nodata = tuple(float(v) for v in self.nodata)
        self.crop = tuple(int(v) for v in self.crop)
        r = self.ratio
        if r < 2:
            raise ValueError(f"ratio must be >= 2 (the Wald protocol degrades by it), got {r}")
        for name in ("patch_size", "stride"):
            v = getattr(self, name)
            if v < r or v % r:
                raise ValueError(f"{name}={v} must be a positive multiple of ratio {r} (so the ms patch is whole)")
        if self.test_size < 0 or self.test_size % r:
            raise ValueError(f"test_size={self.test_size} must be 0 or a multiple of ratio {r}")
        if self.holdout_side not in SIDES:
            raise ValueError(f"holdout_side must be one of {SIDES}, got {self.holdout_side!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.max_dn < 0 or self.out_max_dn < 0:
            raise ValueError(f"max_dn and out_max_dn must be >= 0 (0 = auto), got {self.max_dn}, {self.out_max_dn}")
        if self.crop and (len(self.crop) != 4 or min(self.crop[2:]) <= 0 or min(self.crop[:2]) < 0):
            raise ValueError(f"crop must be (row, col, height, width) with positive size, got {self.crop}")
        if self.interpolation not in ("interp23tap", "bicubic"):
            raise ValueError(f"interpolation must be interp23tap or bicubic, got {self.interpolation!r}")
        if self.interpolation == "interp23tap" and r & (r - 1):
            raise ValueError(f"interp23tap needs a power-of-2 ratio, got {r}; use interpolation='bicubic'")
        if self.padding not in ("symmetric", "replicate", "circular"):
            raise ValueError(f"padding must be symmetric, replicate or circular, got {self.padding!r}")
        if self.compression not in ("", "gzip", "lzf"):
            raise ValueError(f"compression must be gzip, lzf or '' (none), got {self.compression!r}")
        if self.max_train_patches < 0:
            raise ValueError(f"max_train_patches must be >= 0, got {self.max_train_patches}")

    @property
    def margin(self) -> int:
        return 4 * self.ratio if self.fill_margin < 0 else self.fill_margin


# ---------------------------------------------------------------------------------------------
# Synthetic PAN
# ---------------------------------------------------------------------------------------------

def bandpass_pan_weights(band_passes_nm: Sequence[tuple[float, float]],
                         pan_pass_nm: tuple[float, float]) -> tuple[float, ...]:
    """Weights for :func:`synthesize_pan`: the overlap (nm) of each MS band pass with the PAN pass,
    normalised to sum to 1 (box approximation of the relative spectral responses).

    Landsat-8 OLI B2, B3, B4 against B8 (500-680 nm) give (0.1, 0.6, 0.3)."""
    lo_p, hi_p = pan_pass_nm
    overlaps = [max(0.0, min(hi, hi_p) - max(lo, lo_p)) for lo, hi in band_passes_nm]
    total = sum(overlaps)
    if total <= 0:
        raise ValueError(f"no band pass overlaps the PAN pass {pan_pass_nm}")
    return tuple(o / total for o in overlaps)


def synthesize_pan(ms, weights: Sequence[float]):
    """A **synthetic** panchromatic band: ``sum_b w_b * ms_b / sum_b w_b``.

    This is a semi-synthetic stand-in for a scene without a PAN acquisition (a linear function of
    the MS bands, weighted by their spectral overlap with the PAN band, see
    :func:`bandpass_pan_weights`); results obtained with it are not results on real PAN data.
    ``ms`` is (C, H, W) or (B, C, H, W), numpy or torch; returns (1, H, W) or (B, 1, H, W) of the
    same kind.
    """
    import torch

    w = np.asarray(weights, dtype=np.float64)
    is_torch = isinstance(ms, torch.Tensor)
    shape = tuple(ms.shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"ms: expected (C, H, W) or (B, C, H, W), got shape {shape}")
    c = shape[-3]
    if w.ndim != 1 or w.shape[0] != c:
        raise ValueError(f"pan weights: need one weight per MS band ({c}), got {tuple(np.atleast_1d(w))}")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"pan weights must be finite, non-negative and not all zero, got {tuple(w)}")
    w = w / w.sum()
    if is_torch:
        wt = torch.as_tensor(w, dtype=ms.dtype if ms.is_floating_point() else torch.float32, device=ms.device)
        return (ms.to(wt.dtype) * wt.view(c, 1, 1)).sum(dim=-3, keepdim=True)
    ms = np.asarray(ms)
    dtype = ms.dtype if ms.dtype.kind == "f" else np.dtype(np.float32)
    pan = np.tensordot(w.astype(dtype), ms.astype(dtype, copy=False), axes=([0], [ms.ndim - 3]))
    return np.expand_dims(pan, -3)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

@dataclass
class _Scene:
    array: np.ndarray                 # (C, H, W) native dtype
    fill: np.ndarray                  # (H, W) bool
    crs: str | None
    transform: tuple[float, ...] | None
    source: str


def _load(source, what: str, bands: Sequence[int], extra_nodata: Sequence[float],
          window: Sequence[int] | None = None) -> _Scene:
    """Pixels, fill mask and georeferencing of ``source`` (paths, Raster, array or tensor), only
    inside ``window`` = (row, col, height, width) when given (GeoTIFFs and .npy files are read
    only there)."""
    import torch

    from ddif.data.geotiff import Raster, fill_mask, read_geotiff, read_geotiff_stack

    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, (str, os.PathLike)):
        source = (source,)
    if isinstance(source, (tuple, list)):
        paths = [Path(p) for p in source]
        if not paths:
            raise ValueError(f"{what}: no input given")
        if len(paths) == 1 and paths[0].suffix.lower() == ".npy":
            if not paths[0].exists():
                raise FileNotFoundError(f"{paths[0]}: no such file")
            try:
                arr = np.load(paths[0], mmap_mode="r")       # memory-mapped: only the window is read
            except ValueError as e:
                raise ValueError(f"{paths[0]}: not a readable .npy file: {e}") from None
            return _from_array(arr, what, bands, extra_nodata, str(paths[0]), window)
        source = read_geotiff(paths[0], window=window) if len(paths) == 1 else \
            read_geotiff_stack(paths, window=window)
        window = None                                        # already applied
    if isinstance(source, Raster):
        arr, transform = source.array, source.transform
        if window is not None:
            arr = _window(arr, window, f"{what} ({source.path})")
            if transform is not None:
                from ddif.data.geotiff import _shift_transform

                transform = _shift_transform(transform, window[0], window[1])
        if bands:
            arr = _select_bands(arr, bands, f"{what} ({source.path})")
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{what}: pixel dtype {arr.dtype} is not numeric")
        tags = [] if source.nodata is None else [source.nodata]
        return _Scene(arr, fill_mask(arr, tags + list(extra_nodata)), source.crs, transform, source.path)
    if isinstance(source, np.ndarray):
        return _from_array(source, what, bands, extra_nodata, "array", window)
    raise ValueError(f"{what}: expected a path, a list of GeoTIFF paths, a numpy array or a tensor, "
                     f"got {type(source).__name__}")


def _window(arr: np.ndarray, window: Sequence[int], what: str) -> np.ndarray:
    row, col, height, width = (int(v) for v in window)
    h, w = arr.shape[-2:]
    if row < 0 or col < 0 or row + height > h or col + width > w:
        raise ValueError(f"{what}: window (row {row}, col {col}, {height}x{width}) is not inside the {h}x{w} image")
    return arr[..., row:row + height, col:col + width]


def _select_bands(arr: np.ndarray, bands: Sequence[int], what: str) -> np.ndarray:
    bad = [b for b in bands if not 1 <= b <= arr.shape[0]]
    if bad:
        raise ValueError(f"{what}: has {arr.shape[0]} bands (1-based), asked for {bad}")
    return arr[[b - 1 for b in bands]]


def _from_array(arr: np.ndarray, what: str, bands, extra_nodata, source: str, window=None) -> _Scene:
    from ddif.data.geotiff import fill_mask

    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{what}: expected a (C, H, W) image, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{what}: expected integer or float pixels, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{what}: empty image of shape {arr.shape}")
    if window is not None:
        arr = _window(arr, window, what)
    if bands:
        arr = _select_bands(arr, bands, what)
    arr = np.ascontiguousarray(arr)
    return _Scene(arr, fill_mask(arr, list(extra_nodata)), None, None, source)


def _auto_max_dn(arr: np.ndarray) -> float:
    if arr.dtype.kind in "iu":
        return float(np.iinfo(arr.dtype).max)
    return 1.0


def _check_shapes(ms: _Scene, pan: _Scene, ratio: int) -> None:
    (_, h, w), (_, ph, pw) = ms.array.shape, pan.array.shape
    if (ph, pw) != (ratio * h, ratio * w):
        raise ValueError(f"PAN is {ph}x{pw} but MS {h}x{w} x ratio {ratio} = {ratio * h}x{ratio * w}: "
                         "they must cover the same area at the given ratio")


def _georef(source) -> Any:
    """A :class:`ddif.data.scene.RasterInfo` header of a GeoTIFF source (path, list of per-band
    paths, or Raster), or None for arrays / ungeoreferenced rasters."""
    from ddif.data.geotiff import Raster
    from ddif.data.scene import RasterInfo, open_raster

    if isinstance(source, (str, os.PathLike)):
        source = (source,)
    if isinstance(source, (tuple, list)) and source and all(isinstance(p, (str, os.PathLike)) for p in source):
        if Path(source[0]).suffix.lower() == ".npy":
            return None
        info = open_raster(source[0], "MS" if len(source) > 1 else "raster")
        return None if info.transform.is_identity else info
    if isinstance(source, Raster) and source.transform is not None:
        from rasterio.crs import CRS
        from rasterio.transform import Affine

        h, w = source.shape
        return RasterInfo(source.path, w, h, source.bands, str(source.array.dtype), source.nodata,
                          CRS.from_wkt(source.crs) if source.crs else None, Affine(*source.transform[:6]))
    return None


def _band_names(source, bands: Sequence[int]) -> tuple[str, ...]:
    """Names of the MS bands used, when the source names them: the band descriptions of a GeoTIFF,
    or Landsat-style ``..._B4.TIF`` file names of per-band files; () when unknown."""
    import re

    if isinstance(source, (str, os.PathLike)):
        source = (source,)
    if not (isinstance(source, (tuple, list)) and source and all(isinstance(p, (str, os.PathLike)) for p in source)):
        return ()
    if len(source) > 1:
        found = [re.search(r"_(B\d+)\.tiff?$", str(p), re.IGNORECASE) for p in source]
        names = tuple(m.group(1).upper() for m in found if m)
        return names if len(names) == len(source) else ()
    if Path(source[0]).suffix.lower() == ".npy":
        return ()
    from ddif.data.scene import open_raster

    names = tuple((d or "").strip() for d in open_raster(source[0], "MS").descriptions)
    if bands:
        names = tuple(names[b - 1] for b in bands if 1 <= b <= len(names))
    return names if names and all(names) else ()


def register_pair(ms_source, pan_source, cfg: "MakeDatasetConfig") -> tuple[tuple | None, tuple | None, dict]:
    """MS and PAN windows that pair each MS pixel with the PAN pixels under it, by the placement
    rule every entry point uses (:func:`ddif.data.scene.placement`: the upsampled MS sits on the
    PAN grid at an integer shift; for Landsat ratio-2 pairs, whose PAN grid is offset by half a
    PAN pixel, shift (-1, 0)). Returns (ms_window, pan_window, attrs) as (row, col, h, w) windows
    (None: no georeferencing, the arrays are taken as given); ``cfg.crop`` limits the MS window."""
    from ddif.data.scene import (NO_OVERLAP, Preprocessing, SceneError, check_grids, interpolation_geometry,
                                 paired_windows, placement)

    r = cfg.ratio
    crop = tuple(cfg.crop) or None
    ms_info, pan_info = _georef(ms_source), _georef(pan_source)
    if ms_info is None or pan_info is None:
        return crop, None if crop is None else tuple(r * v for v in crop), {}
    check_grids(ms_info, pan_info, r)
    method = Preprocessing(1.0, cfg.interpolation, cfg.padding, 0).method_for(r)
    shift, subpixel = placement(ms_info.transform, pan_info.transform, r,
                                interpolation_geometry(r, method, cfg.padding).phase)
    windows = paired_windows(ms_info.shape, pan_info.shape, r, shift, crop)
    if windows is None:
        raise SceneError(NO_OVERLAP, f"MS {ms_info.path} and PAN {pan_info.path} do not overlap"
                                     f"{' inside the crop ' + str(crop) if crop else ''} (the MS lands at PAN shift "
                                     f"{shift} on a {pan_info.height}x{pan_info.width} PAN)")
    ms_window, pan_window = windows
    return ms_window, pan_window, {"ms_shift_pan_px": shift, "subpixel_offset_pan_px": subpixel,
                                   "pan_window": pan_window}


# ---------------------------------------------------------------------------------------------
# Regions and patches
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """Rows [row, row + height) and columns [col, col + width) of the (cropped) scene, MS grid."""

    row: int
    col: int
    height: int
    width: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.row, self.col, self.height, self.width)


def split_regions(height: int, width: int, cfg: MakeDatasetConfig) -> dict[str, Region]:
    """Test strip (``test_size`` wide), then validation strip (``val_fraction`` of the scene), then
    the training region, starting from ``cfg.holdout_side``; boundaries on multiples of the ratio."""
    r = cfg.ratio
    horizontal = cfg.holdout_side in ("left", "right")
    length = width if horizontal else height
    test_len = cfg.test_size
    val_len = int(round(cfg.val_fraction * length / r)) * r
    train_len = (length - test_len - val_len) // r * r
    if train_len < cfg.patch_size:
        raise ValueError(f"the scene is {height}x{width}: after a {test_len}-pixel test strip and a {val_len}-pixel "
                         f"validation strip only {max(train_len, 0)} pixels remain for training (< patch_size "
                         f"{cfg.patch_size}); use a smaller test_size / val_fraction or a bigger scene")
    spans: dict[str, tuple[int, int]] = {}
    if cfg.holdout_side in ("left", "top"):
        spans["test"] = (0, test_len)
        spans["val"] = (test_len, val_len)
        spans["train"] = (test_len + val_len, train_len)
    else:                               # measure from the far side; keep a ratio-aligned origin
        end = length // r * r
        spans["test"] = (end - test_len, test_len)
        spans["val"] = (end - test_len - val_len, val_len)
        spans["train"] = (end - test_len - val_len - train_len, train_len)
    other = (height if horizontal else width) // r * r
    regions = {}
    for k, (start, size) in spans.items():
        if size <= 0:
            continue
        regions[k] = Region(0, start, other, size) if horizontal else Region(start, 0, size, other)
    return regions


def _integral(mask: np.ndarray) -> np.ndarray:
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    s[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return s


def _box_sum(integral: np.ndarray, r0, c0, r1, c1):
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


def patch_positions(fill: np.ndarray, size: int, stride: int, margin: int, align: int) -> tuple[np.ndarray, int]:
    """Top-left corners (rows, cols) of ``size`` patches on a ``stride`` grid that lie at least
    ``margin`` pixels from fill and from the region border; also the number of grid positions
    rejected for fill."""
    h, w = fill.shape
    start = -(-margin // align) * align         # first aligned position >= margin
    rows = np.arange(start, h - size - margin + 1, stride)
    cols = np.arange(start, w - size - margin + 1, stride)
    if rows.size == 0 or cols.size == 0:
        return np.zeros((0, 2), dtype=np.int64), 0
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    integral = _integral(fill)
    bad = _box_sum(integral, rr - margin, cc - margin, rr + size + margin, cc + size + margin) > 0
    keep = ~bad
    return np.stack([rr[keep], cc[keep]], axis=1).astype(np.int64), int(bad.sum())


def _pick_test_crop(fill: np.ndarray, size: int, align: int) -> tuple[int, int] | None:
    """The fill-free ``size`` crop (aligned) nearest the centre of the strip, or None."""
    h, w = fill.shape
    if h < size or w < size:
        return None
    rows = np.arange(0, h - size + 1, align)
    cols = np.arange(0, w - size + 1, align)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    ok = _box_sum(_integral(fill), rr, cc, rr + size, cc + size) == 0
    if not ok.any():
        return None
    dist = (rr + size / 2 - h / 2) ** 2 + (cc + size / 2 - w / 2) ** 2
    dist = np.where(ok, dist, np.inf)
    i = np.unravel_index(np.argmin(dist), dist.shape)
    return int(rr[i]), int(cc[i])


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------

def _fill_holes(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Replace fill pixels by each band's median of valid pixels, so that the filters do not ring
    on a jump to zero (affected patches are skipped anyway; this keeps the damage local)."""
    if not fill.any():
        return x
    x = x.copy()
    valid = ~fill
    for b in range(x.shape[0]):
        x[b][fill] = np.median(x[b][valid]) if valid.any() else 0.0
    return x


def _wald(gt: np.ndarray, pan_full: np.ndarray | None, pan_weights, cfg: MakeDatasetConfig) -> dict[str, np.ndarray]:
    """gt (C, H, W) in [0, 1] on the reduced-resolution PAN grid; pan_full (P, rH, rW) or None
    (synthetic PAN). Returns gt, ms (C, H/r, W/r), lms (C, H, W), pan (P, H, W)."""
    import torch

    from ddif.data.mtf import degrade, simulate_reduced_resolution, upsample

    gt_t = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32))[None]
    with torch.no_grad():
        if pan_full is not None:
            pan_t = torch.from_numpy(np.ascontiguousarray(pan_full, dtype=np.float32))[None]
            rr = simulate_reduced_resolution(gt_t, pan_t, ratio=cfg.ratio, sensor=cfg.sensor,
                                             interpolation=cfg.interpolation, padding=cfg.padding)
            out = {"gt": rr.gt, "ms": rr.ms, "lms": rr.lms, "pan": rr.pan}
        else:
            # Semi-synthetic: the MS path of the protocol as in simulate_reduced_resolution; the PAN
            # on the gt grid is synthesised from gt itself (so it is as sharp as gt, as a real PAN
            # degraded to that grid would be).
            ms_lr = degrade(gt_t, cfg.sensor, cfg.ratio, kind="ms")
            lms = upsample(ms_lr, cfg.ratio, method=cfg.interpolation, padding=cfg.padding)
            out = {"gt": gt_t, "ms": ms_lr, "lms": lms, "pan": synthesize_pan(gt_t, pan_weights)}
    return {k: v[0].float().numpy() for k, v in out.items()}


def make_dataset(cfg: MakeDatasetConfig, ms=None, pan=None, *, progress: bool = False) -> dict[str, Any]:
    """Build ``{name}_train.h5`` / ``_val.h5`` / ``_test.h5`` (PanCollection layout) from one scene.

    ``ms`` / ``pan`` override ``cfg.ms`` / ``cfg.pan`` with arrays (C, h, w) and (P, r*h, r*w) in
    DN, tensors, :class:`ddif.data.geotiff.Raster` objects or paths. Returns a summary (patch
    counts, file paths, regions), also written as ``{name}_summary.json``. ``progress`` shows
    tqdm bars while patches are written.
    """
    import torch

    from ddif.data.h5 import FusionH5Writer
    from ddif.utils.io import atomic_write_text

    r = cfg.ratio
    crop = cfg.crop or None
    ms_source = cfg.ms if ms is None else ms
    pan_source = cfg.pan if pan is None else pan
    has_pan = not (isinstance(pan_source, str) and pan_source == "")
    info: dict[str, Any] = {}
    if has_pan:
        if cfg.pan_weights:
            raise ValueError("pan_weights is for synthesising a PAN; a real PAN was given as well")
        crop, pan_window, info = register_pair(ms_source, pan_source, cfg)
        ms_scene = _load(ms_source, "ms", cfg.ms_bands, cfg.nodata, window=crop)
        pan_scene = _load(pan_source, "pan", (), cfg.nodata, window=pan_window)
        _check_shapes(ms_scene, pan_scene, r)
    else:
        ms_scene = _load(ms_source, "ms", cfg.ms_bands, cfg.nodata, window=crop)
        pan_scene = None
        if not cfg.pan_weights:
            raise ValueError("no PAN given: give a PAN raster, or pan_weights (one per MS band) to synthesise a "
                             "semi-synthetic PAN, e.g. bandpass_pan_weights(...) = (0.1, 0.6, 0.3) for "
                             "Landsat-8 B2, B3, B4")
        if len(cfg.pan_weights) != ms_scene.array.shape[0]:
            raise ValueError(f"pan_weights has {len(cfg.pan_weights)} weights for {ms_scene.array.shape[0]} MS bands")

    # --- trim to whole coarse pixels, mask, normalise ---------------------------------------
    row0, col0 = (crop[0], crop[1]) if crop else (0, 0)
    H, W = ms_scene.array.shape[1] // r * r, ms_scene.array.shape[2] // r * r
    if H == 0 or W == 0:
        raise ValueError(f"the MS image ({ms_scene.array.shape[1]}x{ms_scene.array.shape[2]}) is smaller than "
                         f"the ratio {r}")
    ms_arr, fill = ms_scene.array[:, :H, :W], ms_scene.fill[:H, :W]
    pan_arr = pan_fill = None
    if pan_scene is not None:
        pan_arr, pan_fill = pan_scene.array[:, :r * H, :r * W], pan_scene.fill[:r * H, :r * W]
        fill = fill | pan_fill.reshape(H, r, W, r).any(axis=(1, 3))   # a fill PAN pixel spoils its MS pixel
    if fill.all():
        raise ValueError("the scene (or crop) is all fill / nodata")
    in_max = cfg.max_dn or _auto_max_dn(ms_arr)
    out_max = cfg.out_max_dn or in_max
    ms_norm = ms_arr.astype(np.float32) / np.float32(in_max)
    pan_norm = None
    if pan_arr is not None:   # one max DN for MS and PAN, as in PanCollection
        pan_norm = pan_arr.astype(np.float32) / np.float32(in_max)

    # --- regions ----------------------------------------------------------------------------
    regions = split_regions(H, W, cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pan_desc = ("real PAN" if has_pan else
                f"synthesized PAN (semi-synthetic): weighted sum of the MS bands, weights {cfg.pan_weights}")
    common_attrs = {
        "created_by": "ddif.data.make_dataset", "protocol": "Wald reduced resolution", "ratio": r,
        "sensor": cfg.sensor, "interpolation": cfg.interpolation, "interp_padding": cfg.padding,
        "band_names": _band_names(ms_source, cfg.ms_bands),
        "pan_source": pan_desc,
        "source_ms": ms_scene.source, "source_pan": pan_scene.source if pan_scene else "",
        "source_max_dn": float(in_max), "patch_size": cfg.patch_size, "stride": cfg.stride,
        "scene_crop": (row0, col0, H, W), "crs": ms_scene.crs or "",
        "transform": ms_scene.transform or (), "config_json": json.dumps(asdict(cfg)),
        **{k: v for k, v in info.items()},
    }
    compression = cfg.compression or None
    summary: dict[str, Any] = {"pan": "real" if has_pan else "synthesized", "ratio": r, "scene_size": (H, W),
                               "max_dn": float(out_max), "regions": {k: v.as_tuple() for k, v in regions.items()},
                               "files": {}}

    def degrade(region: Region) -> dict[str, np.ndarray]:
        # Fill is patched from this region's own pixels only: nothing outside it may leak in.
        rows, cols = slice(region.row, region.row + region.height), slice(region.col, region.col + region.width)
        gt = _fill_holes(ms_norm[:, rows, cols], fill[rows, cols])
        pan_full = None
        if pan_norm is not None:
            prow, pcol = slice(r * rows.start, r * rows.stop), slice(r * cols.start, r * cols.stop)
            pan_full = _fill_holes(pan_norm[:, prow, pcol], pan_fill[prow, pcol])
        return _wald(gt, pan_full, cfg.pan_weights, cfg)

    # --- plan everything first, so that a scene that cannot give every split writes nothing ----
    p, q = cfg.patch_size, cfg.patch_size // r
    plans: dict[str, np.ndarray] = {}
    for split in ("train", "val"):
        if split not in regions:
            continue
        region = regions[split]
        region_fill = fill[region.row:region.row + region.height, region.col:region.col + region.width]
        pos, rejected = patch_positions(region_fill, p, cfg.stride, cfg.margin, r)
        if len(pos) == 0:
            raise ValueError(f"{split} region {region.as_tuple()} holds no fill-free {p}-pixel patch "
                             f"(margin {cfg.margin}); use a smaller patch_size / fill_margin or move the split")
        if split == "train":
            pos = pos[np.random.default_rng(cfg.seed).permutation(len(pos))]
            if cfg.max_train_patches:
                pos = pos[:cfg.max_train_patches]
        plans[split] = pos
        summary[f"{split}_rejected_fill"] = rejected
    test_crop = None
    if cfg.test_size:
        region = regions["test"]
        region_fill = fill[region.row:region.row + region.height, region.col:region.col + region.width]
        corner = _pick_test_crop(region_fill, cfg.test_size, r)
        if corner is None:
            raise ValueError(f"no fill-free {cfg.test_size}x{cfg.test_size} test crop in the test strip "
                             f"{region.as_tuple()}; use a smaller test_size or another holdout_side")
        test_crop = Region(region.row + corner[0], region.col + corner[1], cfg.test_size, cfg.test_size)

    def scene_coords(rows_cols: np.ndarray, region: Region) -> np.ndarray:
        offset = np.array([row0 + region.row, col0 + region.col])
        return (np.asarray(rows_cols).reshape(-1, 2) + offset).astype(np.int32)

    # --- write ---------------------------------------------------------------------------------
    for split, pos in plans.items():
        region = regions[split]
        images = degrade(region)
        path = out_dir / f"{cfg.name}_{split}.h5"
        attrs = {**common_attrs, "split": split, "region": region.as_tuple()}
        with FusionH5Writer(path, max_dn=out_max, compression=compression, attrs=attrs) as w:
            starts = range(0, len(pos), 256)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=f"{split} patches", unit="batch")
            for start in starts:
                chunk = pos[start:start + 256]
                batch: dict[str, list[np.ndarray]] = {k: [] for k in ("gt", "ms", "lms", "pan")}
                for y, x in chunk:
                    for k in ("gt", "lms", "pan"):
                        batch[k].append(images[k][:, y:y + p, x:x + p])
                    batch["ms"].append(images["ms"][:, y // r:y // r + q, x // r:x // r + q])
                w.append(**{k: np.stack(v) for k, v in batch.items()}, extra={"coords": scene_coords(chunk, region)})
        summary["files"][split] = str(path)
        summary[f"{split}_patches"] = int(len(pos))

    if test_crop is not None:
        crop_region = test_crop
        images = degrade(crop_region)
        path = out_dir / f"{cfg.name}_test.h5"
        attrs = {**common_attrs, "split": "test", "region": crop_region.as_tuple()}
        corner = np.array([[row0 + crop_region.row, col0 + crop_region.col]], dtype=np.int32)
        with FusionH5Writer(path, max_dn=out_max, compression=compression, attrs=attrs) as w:
            w.append(**images, extra={"coords": corner})
        summary["files"]["test"] = str(path)
        summary["test_crop"] = crop_region.as_tuple()
        if pan_norm is not None:
            # Full resolution (no ground truth): the original MS and the real PAN of the same crop.
            from ddif.data.mtf import upsample

            rows = slice(crop_region.row, crop_region.row + crop_region.height)
            cols = slice(crop_region.col, crop_region.col + crop_region.width)
            ms_full = torch.from_numpy(np.ascontiguousarray(ms_norm[:, rows, cols]))[None]
            pan_full = pan_norm[:, r * rows.start:r * rows.stop, r * cols.start:r * cols.stop]
            with torch.no_grad():
                lms_full = upsample(ms_full, r, method=cfg.interpolation, padding=cfg.padding)
            path = out_dir / f"{cfg.name}_test_full.h5"
            attrs = {**common_attrs, "split": "test_full", "protocol": "full resolution (no ground truth)",
                     "region": crop_region.as_tuple()}
            with FusionH5Writer(path, max_dn=out_max, compression=compression, attrs=attrs) as w:
                w.append(ms=ms_full[0].numpy(), lms=lms_full[0].float().numpy(), pan=pan_full,
                         extra={"coords": corner})
            summary["files"]["test_full"] = str(path)

    summary["config"] = asdict(cfg)
    atomic_write_text(out_dir / f"{cfg.name}_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
