"""The configuration of ``ddif make-dataset`` (:class:`MakeDatasetConfig`): a leaf module, so that
the pipeline's modules (:mod:`ddif.data.sources`, :mod:`ddif.data.splits`,
:mod:`ddif.data.wald_writer`, :mod:`ddif.data.make_dataset`) can all use it without importing
each other in a circle."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddif.data.degradation import DegradationRanges

SIDES = ("left", "right", "top", "bottom")


def parse_registration(mode: str) -> tuple[float, float] | None:
    """The explicit (rows, cols) correction of a registration mode 'DY,DX', or None for 'measure' /
    'off'; ValueError for anything else."""
    text = str(mode).strip().lower()
    if text in ("measure", "off"):
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 2:
        raise ValueError(f"registration must be measure, off or DY,DX (PAN px), got {mode!r}")
    return values[0], values[1]


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

    ms: tuple[str, ...] = _option(
        (), "MS GeoTIFF (multi-band), one GeoTIFF per band in order, or one .npy (C, h, w) of DN"
    )
    pan: str = _option("", "PAN GeoTIFF / .npy (P, ratio*h, ratio*w); '' -> synthesise it from the MS (semi-synthetic)")
    out_dir: str = _option("data/dataset", "folder for the .h5 files and the summary JSON")
    name: str = _option(
        "dataset", "files: {name}_train.h5, {name}_val.h5, {name}_test.h5 (+ {name}_test_full.h5 with a real PAN)"
    )
    ratio: int = _option(4, "MS / PAN resolution ratio")
    sensor: str = _option(
        "generic",
        "MTF gains of the degradation (ddif.data.sensors.SENSOR_MTF: wv3, qb, gf2, landsat7, landsat8, landsat9, "
        "generic, ...; an unknown name is refused when the build starts)",
    )
    interpolation: str = _option("interp23tap", "how ms is re-interpolated to lms: interp23tap or bicubic")
    padding: str = _option(
        "symmetric", "interp23tap boundary: symmetric, replicate or circular (the toolbox's wrap-around)"
    )
    ms_bands: tuple[int, ...] = _option((), "1-based bands of a multi-band MS file to use (empty = all)")
    pan_weights: tuple[float, ...] = _option(
        (), "synthetic-PAN weight per MS band (only without a PAN); see bandpass_pan_weights"
    )
    max_dn: float = _option(0.0, "input DN mapped to 1.0 (0 -> the dtype's max for integer data, 1.0 for floats)")
    out_max_dn: float = _option(
        0.0,
        "files store value * out_max_dn, the training preset's model.max_dn "
        "(0 -> max_dn: the files hold the scene's DN)",
    )
    nodata: tuple[float, ...] = _option((), "fill values besides the GeoTIFF nodata tag (e.g. 0 for Landsat L1 scenes)")
    fill_margin: int = _option(-1, "keep patches this far from fill and region borders (-1 -> 4 * ratio)")
    crop: tuple[int, ...] = _option((), "row,col,height,width of the scene to use, MS grid (empty = whole scene)")
    patch_size: int = _option(64, "side of a training / validation patch on the gt grid (multiple of ratio)")
    stride: int = _option(32, "step between patches (multiple of ratio)")
    holdout_side: str = _option(
        "left", "side of the scene holding the test strip, then the val strip: left/right/top/bottom"
    )
    val_fraction: float = _option(0.15, "width of the validation strip, as a fraction of the scene along that axis")
    test_size: int = _option(256, "side of the square held-out test crop (0 -> no test file)")
    max_train_patches: int = _option(0, "keep a random subset of this many training patches (0 -> all)")
    test_crop_size: int = _option(
        0,
        "0: one test crop of test_size; >0: every non-overlapping fill-free crop of this size in the test strip "
        "(cloudy scenes), all in one test file",
    )
    qa: str = _option(
        "",
        "Landsat quality band (BQA / QA_PIXEL) on the MS grid: clouds (medium / high confidence), cloud shadow and "
        "high cirrus become fill, so no patch or registration estimate uses them",
    )
    qa_generation: str = _option(
        "auto", "QA bit layout: pre-collection, collection1, collection2 or auto (from an _MTL.txt beside the QA)"
    )
    cloud_margin: int = _option(2, "MS px of margin around QA clouds (clouds move between the PAN and MS looks)")
    registration: str = _option(
        "measure",
        "real PAN only: 'measure' estimates the MS-to-PAN misregistration on valid pixels and resamples the PAN "
        "onto the MS's own grid before degrading; 'off' trusts the geotransforms; 'DY,DX' corrects by a given "
        "shift (PAN px)",
    )
    variants: int = _option(
        1,
        "degradations of the training region: 1 = the sensor's nominal Wald simulation; K > 1 = K simulations "
        "drawn from the ranges below (robust training), every patch position in each",
    )
    ms_gain_range: tuple[float, ...] = _option((0.15, 0.45), "MS MTF gain at Nyquist drawn in this range (variants)")
    pan_gain_range: tuple[float, ...] = _option((0.08, 0.25), "PAN MTF gain at Nyquist drawn in this range")
    interpolations: tuple[str, ...] = _option(
        ("interp23tap", "bicubic"), "interpolations the variants draw from (lms = upsample(ms))"
    )
    pan_noise_max: float = _option(0.03, "PAN noise std, as a fraction of the PAN's std, drawn in [0, this]")
    pan_mix_std: float = _option(0.1, "std of the PAN spectral-response perturbation per band (variants)")
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
        self.ms_gain_range = tuple(float(v) for v in self.ms_gain_range)
        self.pan_gain_range = tuple(float(v) for v in self.pan_gain_range)
        self.interpolations = tuple(str(v) for v in self.interpolations)
        if self.test_crop_size < 0 or self.test_crop_size % r:
            raise ValueError(f"test_crop_size={self.test_crop_size} must be 0 or a multiple of ratio {r}")
        if self.qa_generation not in ("auto", "pre-collection", "collection1", "collection2"):
            raise ValueError(
                f"qa_generation must be auto, pre-collection, collection1 or collection2, got {self.qa_generation!r}"
            )
        if self.cloud_margin < 0:
            raise ValueError(f"cloud_margin must be >= 0, got {self.cloud_margin}")
        self.registration_shift()  # checks the value
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")
        if self.variants > 1:
            self.degradation_ranges()  # checks the ranges

    def registration_shift(self) -> tuple[float, float] | None:
        """The explicit (rows, cols) correction of ``registration``, or None for measure / off."""
        return parse_registration(self.registration)

    def degradation_ranges(self) -> DegradationRanges:
        """The :class:`ddif.data.degradation.DegradationRanges` of the variants."""
        from ddif.data.degradation import DegradationRanges

        for name in ("ms_gain_range", "pan_gain_range"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} must be two values lo,hi, got {getattr(self, name)}")
        lo_ms, hi_ms = self.ms_gain_range
        lo_pan, hi_pan = self.pan_gain_range
        return DegradationRanges(
            ms_gain=(lo_ms, hi_ms),
            pan_gain=(lo_pan, hi_pan),
            interpolations=self.interpolations,
            pan_noise_max=self.pan_noise_max,
            pan_mix_std=self.pan_mix_std,
        )

    @property
    def margin(self) -> int:
        return 4 * self.ratio if self.fill_margin < 0 else self.fill_margin


# ---------------------------------------------------------------------------------------------
# The builder: prepare the scene, plan every split, then write
# ---------------------------------------------------------------------------------------------
