"""The scene a dataset is built from: loading MS / PAN pixels from paths (GeoTIFF, per-band
GeoTIFFs, ``.npy``), :class:`ddif.data.raster.Raster` objects, arrays or tensors; band selection,
windows and fill masks; MS / PAN registration (:func:`register_pair`, by the placement rule of
:mod:`ddif.data.scene`); and :func:`prepare_scene`, which turns a configured pair into the
trimmed, normalised arrays the splits are planned on and degraded from.

numpy only at import (``import ddif.data`` must stay cheap); torch, rasterio and the scene layer
are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddif.data.sensors import SENSORS

if TYPE_CHECKING:
    import torch

    from ddif.data.dataset_config import MakeDatasetConfig
    from ddif.data.raster import Raster

    # what an image is loaded from (see load_image): a path (GeoTIFF or .npy), per-band GeoTIFF
    # paths, a Raster, a (C, H, W) / (H, W) array or tensor
    ImageSource = str | os.PathLike | Sequence[str | os.PathLike] | Raster | np.ndarray | torch.Tensor

# (row, col, height, width)
Window = tuple[int, int, int, int]


@dataclass
class LoadedImage:
    """One source read: pixels, fill mask and georeferencing."""

    array: np.ndarray  # (C, H, W) native dtype
    fill: np.ndarray  # (H, W) bool
    crs: str | None
    transform: tuple[float, ...] | None
    source: str


def load_image(
    source: ImageSource,
    what: str,
    bands: Sequence[int],
    extra_nodata: Sequence[float],
    window: Sequence[int] | None = None,
) -> LoadedImage:
    """Pixels, fill mask and georeferencing of ``source`` (paths, Raster, array or tensor), only
    inside ``window`` = (row, col, height, width) when given (GeoTIFFs and .npy files are read
    only there)."""
    import torch

    from ddif.data.raster import Raster, check_finite_values, nodata_mask, read_raster

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
                arr = np.load(paths[0], mmap_mode="r")  # memory-mapped: only the window is read
            except ValueError as e:
                raise ValueError(f"{paths[0]}: not a readable .npy file: {e}") from None
            return _from_array(arr, what, bands, extra_nodata, str(paths[0]), window)
        source = read_raster(paths[0] if len(paths) == 1 else paths, what, window=window)
        window = None  # already applied
    if isinstance(source, Raster):
        arr, transform = source.array, source.transform_tuple
        if window is not None:
            arr = _window(arr, window, f"{what} ({source.path})")
            if transform is not None:
                from rasterio.windows import Window
                from rasterio.windows import transform as window_transform

                row, col, height, width = (int(v) for v in window)
                shifted = window_transform(Window(col, row, width, height), source.info.transform)
                transform = tuple(float(v) for v in tuple(shifted)[:6])
        if bands:
            arr = _select_bands(arr, bands, f"{what} ({source.path})")
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{what}: pixel dtype {arr.dtype} is not numeric")
        tags = [] if source.nodata is None else [source.nodata]
        fill = nodata_mask(arr, tags + list(extra_nodata))
        check_finite_values(arr, fill, f"{what} ({source.path})")
        return LoadedImage(arr, fill, source.crs_wkt, transform, source.path)
    if isinstance(source, np.ndarray):
        return _from_array(source, what, bands, extra_nodata, "array", window)
    raise ValueError(
        f"{what}: expected a path, a list of GeoTIFF paths, a numpy array or a tensor, got {type(source).__name__}"
    )


def _window(arr: np.ndarray, window: Sequence[int], what: str) -> np.ndarray:
    row, col, height, width = (int(v) for v in window)
    h, w = arr.shape[-2:]
    if row < 0 or col < 0 or row + height > h or col + width > w:
        raise ValueError(f"{what}: window (row {row}, col {col}, {height}x{width}) is not inside the {h}x{w} image")
    return arr[..., row : row + height, col : col + width]


def _select_bands(arr: np.ndarray, bands: Sequence[int], what: str) -> np.ndarray:
    bad = [b for b in bands if not 1 <= b <= arr.shape[0]]
    if bad:
        raise ValueError(f"{what}: has {arr.shape[0]} bands (1-based), asked for {bad}")
    return arr[[b - 1 for b in bands]]


def _from_array(arr: np.ndarray, what: str, bands, extra_nodata, source: str, window=None) -> LoadedImage:
    from ddif.data.raster import check_finite_values, nodata_mask

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
    fill = nodata_mask(arr, list(extra_nodata))
    check_finite_values(arr, fill, what)
    return LoadedImage(arr, fill, None, None, source)


def auto_max_dn(arr: np.ndarray) -> float:
    """The DN mapped to 1.0 when none is given: the integer dtype's max, 1.0 for floats."""
    if arr.dtype.kind in "iu":
        return float(np.iinfo(arr.dtype).max)
    return 1.0


def _check_shapes(ms: LoadedImage, pan: LoadedImage, ratio: int) -> None:
    (_, h, w), (_, ph, pw) = ms.array.shape, pan.array.shape
    if (ph, pw) != (ratio * h, ratio * w):
        raise ValueError(
            f"PAN is {ph}x{pw} but MS {h}x{w} x ratio {ratio} = {ratio * h}x{ratio * w}: "
            "they must cover the same area at the given ratio"
        )


def _georef(source) -> Any:
    """A :class:`ddif.data.scene.RasterInfo` header of a GeoTIFF source (path, list of per-band
    paths, or Raster), or None for arrays / ungeoreferenced rasters."""
    from ddif.data.raster import Raster
    from ddif.data.scene import open_raster

    if isinstance(source, (str, os.PathLike)):
        source = (source,)
    if isinstance(source, (tuple, list)) and source and all(isinstance(p, (str, os.PathLike)) for p in source):
        if Path(source[0]).suffix.lower() == ".npy":
            return None
        info = open_raster(source[0], "MS" if len(source) > 1 else "raster")
        return None if info.transform.is_identity else info
    if isinstance(source, Raster) and source.georeferenced:
        return source.info
    return None


def band_names(source: ImageSource, bands: Sequence[int]) -> tuple[str, ...]:
    """Names of the MS bands used, when the source names them: the band descriptions of a GeoTIFF,
    or Landsat / Sentinel-2 style ``..._B4.TIF`` / ``..._B8A.tif`` file names of per-band files
    (:func:`ddif.data.sensors.band_from_file_name`); () when unknown."""
    from ddif.data.sensors import band_from_file_name

    if isinstance(source, (str, os.PathLike)):
        source = (source,)
    if not (isinstance(source, (tuple, list)) and source and all(isinstance(p, (str, os.PathLike)) for p in source)):
        return ()
    if len(source) > 1:
        found = [band_from_file_name(p) for p in source]
        names = tuple(n for n in found if n)
        return names if len(names) == len(source) else ()
    if Path(source[0]).suffix.lower() == ".npy":
        return ()
    from ddif.data.scene import open_raster

    names = tuple((d or "").strip() for d in open_raster(source[0], "MS").descriptions)
    if bands:
        names = tuple(names[b - 1] for b in bands if 1 <= b <= len(names))
    return names if names and all(names) else ()


def register_pair(
    ms_source: ImageSource, pan_source: ImageSource, cfg: MakeDatasetConfig
) -> tuple[Window | None, Window | None, dict[str, Any]]:
    """MS and PAN windows that pair each MS pixel with the PAN pixels under it, by the placement
    rule every entry point uses (:func:`ddif.data.scene.placement`: the upsampled MS sits on the
    PAN grid at an integer shift; for Landsat ratio-2 pairs, whose PAN grid is offset by half a
    PAN pixel, shift (-1, 0)). Returns (ms_window, pan_window, attrs) as (row, col, h, w) windows
    (None: no georeferencing, the arrays are taken as given); ``cfg.crop`` limits the MS window."""
    from ddif.data.scene import (
        NO_OVERLAP,
        WRONG_RATIO,
        Preprocessing,
        SceneError,
        check_grids,
        interpolation_geometry,
        paired_windows,
        placement,
    )

    r = cfg.ratio
    crop: Window | None = None
    if cfg.crop:
        row, col, height, width = cfg.crop  # four values (checked by MakeDatasetConfig)
        crop = (row, col, height, width)
    ms_info, pan_info = _georef(ms_source), _georef(pan_source)
    if ms_info is None or pan_info is None:
        return crop, None if crop is None else (r * crop[0], r * crop[1], r * crop[2], r * crop[3]), {}
    try:
        check_grids(ms_info, pan_info, r)
    except SceneError as e:
        if e.category != WRONG_RATIO:
            raise
        try:
            actual = check_grids(ms_info, pan_info, None)
        except SceneError:
            raise e from None  # not a whole ratio: nothing to suggest
        raise SceneError(
            WRONG_RATIO, f"{e}; these files have ratio {actual}: pass --ratio {actual} (MakeDatasetConfig.ratio)"
        ) from None
    method = Preprocessing(1.0, cfg.interpolation, cfg.padding, 0).method_for(r)
    shift, subpixel = placement(
        ms_info.transform, pan_info.transform, r, interpolation_geometry(r, method, cfg.padding).phase
    )
    windows = paired_windows(ms_info.shape, pan_info.shape, r, shift, crop)
    if windows is None:
        raise SceneError(
            NO_OVERLAP,
            f"MS {ms_info.path} and PAN {pan_info.path} do not overlap"
            f"{' inside the crop ' + str(crop) if crop else ''} (the MS lands at PAN shift "
            f"{shift} on a {pan_info.height}x{pan_info.width} PAN)",
        )
    ms_window, pan_window = windows
    from ddif.data.registration import ms_centre_in_pan

    full = ms_centre_in_pan(ms_info.transform, pan_info.transform)
    centre = (full[0] + r * ms_window[0] - pan_window[0], full[1] + r * ms_window[1] - pan_window[1])
    return (
        ms_window,
        pan_window,
        {
            "ms_shift_pan_px": shift,
            "subpixel_offset_pan_px": subpixel,
            "pan_window": pan_window,
            "ms_centre_in_pan_window": centre,
        },
    )


# Landsat-7 ETM+ band passes in nm (band 6, thermal, left out; band 8 the panchromatic band): the
# sensor registry's (ddif.data.sensors). Used to suggest synthetic-PAN weights.
LANDSAT7_ETM_BANDPASS_NM: dict[str, tuple[float, float]] = SENSORS["landsat7"].band_passes("B8")

# band sets of common products, for suggestions: (what, table, band names); the ones with as many
# bands as the MS are offered
_KNOWN_BAND_SETS = (
    ("Landsat-8/9 OLI B2, B3, B4", "oli", ("B2", "B3", "B4")),
    ("Landsat-8/9 OLI B2, B3, B4, B5", "oli", ("B2", "B3", "B4", "B5")),
    ("Landsat-8/9 OLI B1-B7", "oli", ("B1", "B2", "B3", "B4", "B5", "B6", "B7")),
    ("Landsat-7 ETM+ bands 1, 2, 3", "etm", ("B1", "B2", "B3")),
    ("Landsat-7 ETM+ bands 1-4", "etm", ("B1", "B2", "B3", "B4")),
    ("Landsat-7 ETM+ bands 1-5, 7 (e.g. a 6-band ETM+ stack)", "etm", ("B1", "B2", "B3", "B4", "B5", "B7")),
)


def _weights_flag(table: dict[str, tuple[float, float]], names: Sequence[str]) -> str:
    from ddif.data.synthetic_pan import bandpass_pan_weights

    weights = bandpass_pan_weights([table[n] for n in names], table["B8"])
    return "--pan-weights " + ",".join(f"{w:.4g}" for w in weights)


def _no_pan_message(bands: int, names: Sequence[str]) -> str:
    """Why a scene without a PAN cannot be used as given, and the exact --pan-weights to pass:
    computed from the band names when they are Landsat band names, else the known band sets with
    this many bands."""
    from ddif.data.synthetic_pan import LANDSAT8_OLI_BANDPASS_NM

    tables = {"oli": LANDSAT8_OLI_BANDPASS_NM, "etm": LANDSAT7_ETM_BANDPASS_NM}
    text = (
        f"no PAN given: pass --pan with a PAN raster, or --pan-weights with one weight per MS band ({bands} "
        "here) to synthesise a semi-synthetic PAN (a weighted sum of the MS bands; the files then say so)"
    )
    offers = []
    if names and all(n in LANDSAT8_OLI_BANDPASS_NM and n != "B8" for n in names):
        offers.append(f"for these bands ({', '.join(names)}) as Landsat-8/9 OLI: {_weights_flag(tables['oli'], names)}")
    for what, table, set_names in _KNOWN_BAND_SETS:
        if len(set_names) == bands and tuple(names) != set_names:
            offers.append(f"for {what}: {_weights_flag(tables[table], set_names)}")
    if offers:
        text += " - the band-pass overlaps with the PAN band give, " + "; ".join(offers)
    return text + " (ddif.data.bandpass_pan_weights computes them for other bands)"


def _warn_unmarked_zeros(ms: np.ndarray, fill: np.ndarray, cfg: MakeDatasetConfig) -> None:
    """Landsat Level-1 scenes mark fill with 0 and no nodata tag: without --nodata 0 those pixels
    would be cut into patches. Warn when over 1 % of the pixels are 0 in every band and nothing
    marks them as fill."""
    if 0.0 in cfg.nodata:
        return
    zeros = (ms == 0).all(axis=0) & ~fill
    share = float(zeros.mean())
    if share > 0.01:
        warnings.warn(
            f"{100 * share:.1f} % of the MS pixels are 0 in every band and no nodata value marks them; if 0 is "
            "fill (as in Landsat Level-1 products), pass --nodata 0 (MakeDatasetConfig.nodata=(0,)) so that "
            "patches avoid it",
            UserWarning,
            stacklevel=3,
        )


@dataclass
class PreparedScene:
    """The scene a dataset is cut from: trimmed to whole coarse pixels, divided by one max DN."""

    ms: np.ndarray  # (C, H, W) float32 in [0, 1]: the ground truth grid
    pan: np.ndarray | None  # (P, rH, rW) float32, or None (the PAN is synthesised)
    fill: np.ndarray  # (H, W) bool: MS fill, or a fill PAN pixel under the MS pixel
    pan_fill: np.ndarray | None  # (rH, rW) bool
    in_max: float  # source DN mapped to 1.0
    out_max: float  # the files store value * out_max
    origin: tuple[int, int]  # (row, col) of the scene's top-left in the MS source
    ms_image: LoadedImage  # as loaded (source name, crs, transform)
    pan_image: LoadedImage | None
    registration: dict  # attrs from register_pair (empty without georeferencing)
    band_names: tuple[str, ...] = ()  # the MS bands' names when the source names them (band_names())

    @property
    def size(self) -> tuple[int, int]:
        return self.fill.shape


def prepare_scene(cfg: MakeDatasetConfig, ms_source: ImageSource, pan_source: ImageSource) -> PreparedScene:
    """Load (and register) the pair, trim to whole coarse pixels, mask fill, normalise; raises
    ``ValueError`` for a missing or mismatched PAN / weights, a scene smaller than the ratio or one
    that is all fill."""
    r = cfg.ratio
    crop = cfg.crop or None
    has_pan = not (isinstance(pan_source, str) and pan_source == "")
    info: dict[str, Any] = {}
    if has_pan:
        if cfg.pan_weights:
            raise ValueError("pan_weights is for synthesising a PAN; a real PAN was given as well")
        crop, pan_window, info = register_pair(ms_source, pan_source, cfg)
        ms_image = load_image(ms_source, "ms", cfg.ms_bands, cfg.nodata, window=crop)
        pan_image = load_image(pan_source, "pan", (), cfg.nodata, window=pan_window)
        _check_shapes(ms_image, pan_image, r)
    else:
        ms_image = load_image(ms_source, "ms", cfg.ms_bands, cfg.nodata, window=crop)
        pan_image = None
        if not cfg.pan_weights:
            raise ValueError(_no_pan_message(ms_image.array.shape[0], band_names(ms_source, cfg.ms_bands)))
        if len(cfg.pan_weights) != ms_image.array.shape[0]:
            raise ValueError(f"pan_weights has {len(cfg.pan_weights)} weights for {ms_image.array.shape[0]} MS bands")

    origin = (crop[0], crop[1]) if crop else (0, 0)
    H, W = ms_image.array.shape[1] // r * r, ms_image.array.shape[2] // r * r
    if H == 0 or W == 0:
        raise ValueError(
            f"the MS image ({ms_image.array.shape[1]}x{ms_image.array.shape[2]}) is smaller than the ratio {r}"
        )
    ms_arr, fill = ms_image.array[:, :H, :W], ms_image.fill[:H, :W]
    pan_arr = pan_fill = None
    if pan_image is not None:
        pan_arr, pan_fill = pan_image.array[:, : r * H, : r * W], pan_image.fill[: r * H, : r * W]
        fill = fill | pan_fill.reshape(H, r, W, r).any(axis=(1, 3))  # a fill PAN pixel spoils its MS pixel
    if cfg.qa:
        clouds = qa_cloud_mask(cfg, crop)[:H, :W]
        info["cloud_fraction"] = round(float(clouds.mean()), 5)
        fill = fill | clouds
    if fill.all():
        raise ValueError("the scene (or crop) is all fill / nodata" + (" / cloud" if cfg.qa else ""))
    _warn_unmarked_zeros(ms_arr, fill, cfg)
    in_max = cfg.max_dn or auto_max_dn(ms_arr)
    out_max = cfg.out_max_dn or in_max
    ms_norm = ms_arr.astype(np.float32) / np.float32(in_max)
    pan_norm = None
    if pan_arr is not None:  # one max DN for MS and PAN, as in PanCollection
        pan_norm = pan_arr.astype(np.float32) / np.float32(in_max)
        pan_norm, reg = register_pan(ms_norm, pan_norm, fill, r, info.get("ms_centre_in_pan_window"), cfg.registration)
        info["registration"] = reg
    names = band_names(ms_source, cfg.ms_bands)
    return PreparedScene(ms_norm, pan_norm, fill, pan_fill, in_max, out_max, origin, ms_image, pan_image, info, names)


# registration corrections below these are not applied (see register_pan)
MIN_REGISTRATION_R2 = 0.5
MIN_REGISTRATION_SHIFT = 0.05


def qa_cloud_mask(cfg: MakeDatasetConfig, crop: Sequence[int] | None) -> np.ndarray:
    """Clouds of ``cfg.qa`` (a Landsat quality band on the MS grid) inside ``crop``, dilated by
    ``cfg.cloud_margin`` MS px (:mod:`ddif.data.clouds`)."""
    from ddif.data.clouds import dilate, landsat_cloud_mask, qa_generation
    from ddif.data.sensors import metadata_files_near, read_metadata_file

    qa = load_image(cfg.qa, "qa", (), (), window=crop)
    generation = cfg.qa_generation
    if generation == "auto":
        metadata = [read_metadata_file(p) for p in metadata_files_near([cfg.qa])]
        landsat = [m for m in metadata if "SPACECRAFT_ID" in m]
        if not landsat:
            raise ValueError(
                f"qa {cfg.qa}: no Landsat _MTL.txt beside it says which QA bit layout it has; pass "
                "--qa-generation pre-collection, collection1 or collection2"
            )
        generation = qa_generation(landsat[0])
    if qa.array.dtype.kind not in "iu":
        raise ValueError(f"qa {cfg.qa}: expected integer quality flags, got {qa.array.dtype}")
    return dilate(landsat_cloud_mask(qa.array[0], generation), cfg.cloud_margin)


def register_pan(
    ms: np.ndarray,
    pan: np.ndarray,
    fill: np.ndarray,
    ratio: int,
    centre: tuple[float, float] | None,
    mode: str = "measure",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Resample the PAN so that the Wald degradation's decimation (PAN-grid pixel ``ratio * i +
    ratio // 2``, the toolbox grid) samples it where MS pixel i really is: its centre by the
    geotransforms (``centre``: MS pixel (0, 0) in PAN-window coordinates; the toolbox grid
    without georeferencing) plus the misregistration measured on the valid pixels
    (:func:`ddif.data.registration.estimate_misregistration`, ``mode='measure'``) or given
    (``'DY,DX'`` PAN px; ``'off'``: none). Returns the PAN and what was found and done."""
    import torch

    from ddif.data.registration import estimate_misregistration, shift_image

    grid = (ratio // 2, ratio // 2)
    centre = grid if centre is None else (float(centre[0]), float(centre[1]))
    info: dict[str, Any] = {"mode": mode, "ms_centre_by_geotransform": [round(v, 4) for v in centre]}
    from ddif.data.dataset_config import parse_registration

    given = parse_registration(mode)
    shift = (0.0, 0.0)
    if given is not None:
        shift = given
    elif mode.strip().lower() == "measure":
        try:
            guide = pan[0] if pan.shape[0] == 1 else pan.mean(axis=0)
            found = estimate_misregistration(ms, guide, ratio, centre, ~fill)
        except ValueError as e:
            warnings.warn(f"{e}: the PAN is not registered to the MS", UserWarning, stacklevel=3)
            found = None
        if found is not None:
            info["measured"] = found.describe()
            # a shift is applied only when the fit says something (a PAN explained by the MS bands)
            # and it is above the estimate's noise (a few hundredths of a pixel)
            if found.r2 >= MIN_REGISTRATION_R2 and max(abs(v) for v in found.shift_pan_px) >= MIN_REGISTRATION_SHIFT:
                shift = found.shift_pan_px
            else:
                info["not_applied"] = (
                    f"fit R2 {found.r2:.3f} < {MIN_REGISTRATION_R2}"
                    if found.r2 < MIN_REGISTRATION_R2
                    else f"below {MIN_REGISTRATION_SHIFT} PAN px"
                )
    correction = (centre[0] + shift[0] - grid[0], centre[1] + shift[1] - grid[1])
    info["misregistration_pan_px"] = [round(v, 4) for v in shift]
    info["pan_resampled_by_pan_px"] = [round(v, 4) for v in correction]
    if abs(correction[0]) < 1e-6 and abs(correction[1]) < 1e-6:
        return pan, info
    shifted = shift_image(torch.from_numpy(np.ascontiguousarray(pan, dtype=np.float64)), *correction)
    return shifted.numpy().astype(np.float32), info
