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

Module layout (each concern in its own module; the public names are re-exported here and from
:mod:`ddif.data`): :mod:`ddif.data.synthetic_pan` (band-pass weights, synthetic PAN),
:mod:`ddif.data.sources` (loading, fill masks, MS / PAN registration, the prepared scene),
:mod:`ddif.data.splits` (regions, patch positions, test crop: the plan), :mod:`ddif.data.wald_writer`
(the degradation of a region and the files). This module holds the configuration and
:func:`make_dataset`, which plans every split before it writes any.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# numpy only at import, here and in the modules below: `import ddif.data` (which re-exports this
# module's names eagerly, see ddif/data/__init__.py) must stay cheap.
from ddif.data.sources import PreparedScene, band_names, prepare_scene, register_pair
from ddif.data.splits import SIDES, Region, SplitPlan, patch_positions, plan_splits, split_regions
from ddif.data.synthetic_pan import LANDSAT8_OLI_BANDPASS_NM, bandpass_pan_weights, synthesize_pan
from ddif.data.wald_writer import write_patches, write_test_crop, write_test_full

# re-exported: the names callers import from here (and from ddif.data)
__all__ = ["LANDSAT8_OLI_BANDPASS_NM", "SIDES", "MakeDatasetConfig", "Region", "bandpass_pan_weights", "make_dataset",
           "patch_positions", "register_pair", "split_regions", "synthesize_pan"]


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
# The builder: prepare the scene, plan every split, then write
# ---------------------------------------------------------------------------------------------

def make_dataset(cfg: MakeDatasetConfig, ms=None, pan=None, *, progress: bool = False) -> dict[str, Any]:
    """Build ``{name}_train.h5`` / ``_val.h5`` / ``_test.h5`` (PanCollection layout) from one scene.

    ``ms`` / ``pan`` override ``cfg.ms`` / ``cfg.pan`` with arrays (C, h, w) and (P, r*h, r*w) in
    DN, tensors, :class:`ddif.data.geotiff.Raster` objects or paths. Returns a summary (patch
    counts, file paths, regions), also written as ``{name}_summary.json``. ``progress`` shows
    tqdm bars while patches are written.

    Every split is planned before any file is written, so a scene that cannot give every split
    (no patch in a region, no fill-free test crop) raises and leaves nothing behind.
    """
    from ddif.utils.io import atomic_write_text

    ms_source = cfg.ms if ms is None else ms
    pan_source = cfg.pan if pan is None else pan
    scene = prepare_scene(cfg, ms_source, pan_source)
    plan = plan_splits(scene.fill, cfg)
    attrs = _file_attrs(cfg, scene, ms_source)
    summary = _summary(cfg, scene, plan)

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, corners in plan.patches.items():
        region = plan.regions[split]
        path = out_dir / f"{cfg.name}_{split}.h5"
        write_patches(path, scene, region, corners, cfg, {**attrs, "split": split, "region": region.as_tuple()},
                      progress=progress)
        summary["files"][split] = str(path)
        summary[f"{split}_patches"] = len(corners)
    if plan.test_crop is not None:
        crop = plan.test_crop
        path = out_dir / f"{cfg.name}_test.h5"
        write_test_crop(path, scene, crop, cfg, {**attrs, "split": "test", "region": crop.as_tuple()})
        summary["files"]["test"] = str(path)
        summary["test_crop"] = crop.as_tuple()
        if scene.pan is not None:
            path = out_dir / f"{cfg.name}_test_full.h5"
            write_test_full(path, scene, crop, cfg, {**attrs, "split": "test_full", "region": crop.as_tuple(),
                                                     "protocol": "full resolution (no ground truth)"})
            summary["files"]["test_full"] = str(path)

    summary["config"] = asdict(cfg)
    atomic_write_text(out_dir / f"{cfg.name}_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _file_attrs(cfg: MakeDatasetConfig, scene: PreparedScene, ms_source) -> dict[str, Any]:
    """The attributes every file of the dataset carries (how it was made, from what)."""
    has_pan = scene.pan is not None
    pan_desc = ("real PAN" if has_pan else
                f"synthesized PAN (semi-synthetic): weighted sum of the MS bands, weights {cfg.pan_weights}")
    return {
        "created_by": "ddif.data.make_dataset", "protocol": "Wald reduced resolution", "ratio": cfg.ratio,
        "sensor": cfg.sensor, "interpolation": cfg.interpolation, "interp_padding": cfg.padding,
        "band_names": band_names(ms_source, cfg.ms_bands),
        "pan_source": pan_desc,
        "source_ms": scene.ms_image.source, "source_pan": scene.pan_image.source if has_pan else "",
        "source_max_dn": float(scene.in_max), "patch_size": cfg.patch_size, "stride": cfg.stride,
        "scene_crop": (*scene.origin, *scene.size), "crs": scene.ms_image.crs or "",
        "transform": scene.ms_image.transform or (), "config_json": json.dumps(asdict(cfg)),
        **scene.registration,
    }


def _summary(cfg: MakeDatasetConfig, scene: PreparedScene, plan: SplitPlan) -> dict[str, Any]:
    """The summary before writing (the writers add file paths and counts)."""
    summary: dict[str, Any] = {"pan": "real" if scene.pan is not None else "synthesized", "ratio": cfg.ratio,
                               "scene_size": scene.size, "max_dn": float(scene.out_max),
                               "regions": {k: v.as_tuple() for k, v in plan.regions.items()}, "files": {}}
    for split, rejected in plan.rejected_fill.items():
        summary[f"{split}_rejected_fill"] = rejected
    return summary
