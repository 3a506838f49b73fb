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

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

# numpy only at import, here and in the modules below: `import ddif.data` (which re-exports this
# module's names eagerly, see ddif/data/__init__.py) must stay cheap.
from ddif.data.dataset_config import SIDES, MakeDatasetConfig
from ddif.data.sources import PreparedScene, band_names, prepare_scene, register_pair
from ddif.data.splits import Region, SplitPlan, patch_positions, plan_splits, split_regions
from ddif.data.synthetic_pan import LANDSAT8_OLI_BANDPASS_NM, bandpass_pan_weights, synthesize_pan
from ddif.data.wald_writer import (
    nominal_degradation,
    scene_bands,
    variant_degradations,
    write_patches,
    write_test_crop,
    write_test_crops,
    write_test_full,
)

if TYPE_CHECKING:
    from ddif.data.sources import ImageSource

# re-exported: the names callers import from here (and from ddif.data)
__all__ = [
    "LANDSAT8_OLI_BANDPASS_NM",
    "SIDES",
    "MakeDatasetConfig",
    "Region",
    "bandpass_pan_weights",
    "check_sensor",
    "make_dataset",
    "patch_positions",
    "register_pair",
    "split_regions",
    "synthesize_pan",
]


def make_dataset(
    cfg: MakeDatasetConfig, ms: ImageSource | None = None, pan: ImageSource | None = None, *, progress: bool = False
) -> dict[str, Any]:
    """Build ``{name}_train.h5`` / ``_val.h5`` / ``_test.h5`` (PanCollection layout) from one scene.

    ``ms`` / ``pan`` override ``cfg.ms`` / ``cfg.pan`` with arrays (C, h, w) and (P, r*h, r*w) in
    DN, tensors, :class:`ddif.data.raster.Raster` objects or paths. Returns a summary (patch
    counts, file paths, regions), also written as ``{name}_summary.json``. ``progress`` shows
    tqdm bars while patches are written.

    Every split is planned before any file is written, so a scene that cannot give every split
    (no patch in a region, no fill-free test crop) raises and leaves nothing behind; the error
    names the options to change and values that give every split on this scene
    (:func:`ddif.data.splits.suggest_options`). An unknown ``cfg.sensor`` is refused
    (:func:`check_sensor`).
    """
    from ddif.utils.io import atomic_write_text

    check_sensor(cfg.sensor)
    ms_source = cfg.ms if ms is None else ms
    pan_source = cfg.pan if pan is None else pan
    scene = prepare_scene(cfg, ms_source, pan_source)
    plan = plan_splits(scene.fill, cfg)
    attrs = _file_attrs(cfg, scene, ms_source)
    summary = _summary(cfg, scene, plan)

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bands = scene_bands(scene)
    for split, corners in plan.patches.items():
        region = plan.regions[split]
        path = out_dir / f"{cfg.name}_{split}.h5"
        # robust training: the training region in several simulations; validation stays nominal
        degs = variant_degradations(cfg, bands) if split == "train" else [nominal_degradation(cfg, bands)]
        written = write_patches(
            path,
            scene,
            region,
            corners,
            cfg,
            {**attrs, "split": split, "region": region.as_tuple()},
            progress=progress,
            degradations=degs,
        )
        summary["files"][split] = str(path)
        summary[f"{split}_patches"] = written
        if split == "train" and len(degs) > 1:
            from ddif.data.degradation import DegradationLog

            summary["degradations"] = DegradationLog(
                nominal_degradation(cfg, bands).describe(),
                dataclasses.asdict(cfg.degradation_ranges()),
                [d.describe() for d in degs],
            ).summary()
    if plan.test_crops:
        strip = plan.regions["test"]
        path = out_dir / f"{cfg.name}_test.h5"
        test_attrs = {**attrs, "split": "test", "region": strip.as_tuple()}
        write_test_crops(path, scene, strip, plan.test_crops, cfg, test_attrs)
        summary["files"]["test"] = str(path)
        summary["test_crops"] = [c.as_tuple() for c in plan.test_crops]
        if scene.pan is not None:
            path = out_dir / f"{cfg.name}_test_full.h5"
            write_test_full(
                path,
                scene,
                plan.test_crops,
                cfg,
                {**test_attrs, "split": "test_full", "protocol": "full resolution (no ground truth)"},
            )
            summary["files"]["test_full"] = str(path)
    elif plan.test_crop is not None:
        crop = plan.test_crop
        path = out_dir / f"{cfg.name}_test.h5"
        write_test_crop(path, scene, crop, cfg, {**attrs, "split": "test", "region": crop.as_tuple()})
        summary["files"]["test"] = str(path)
        summary["test_crop"] = crop.as_tuple()
        if scene.pan is not None:
            path = out_dir / f"{cfg.name}_test_full.h5"
            write_test_full(
                path,
                scene,
                crop,
                cfg,
                {
                    **attrs,
                    "split": "test_full",
                    "region": crop.as_tuple(),
                    "protocol": "full resolution (no ground truth)",
                },
            )
            summary["files"]["test_full"] = str(path)

    summary["config"] = asdict(cfg)
    atomic_write_text(out_dir / f"{cfg.name}_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def check_sensor(sensor: str) -> str:
    """``sensor`` if :mod:`ddif.data.mtf` knows its MTF gains, else ``ValueError`` naming the known
    ones: a dataset degraded with the wrong MTF is silently a different dataset, so a misspelt name
    is refused here rather than falling back to the generic gains as the filters do."""
    from ddif.data.mtf import SENSOR_ALIASES, SENSOR_MTF, known_sensors

    key = sensor.strip().lower() if isinstance(sensor, str) else sensor
    if key not in SENSOR_MTF and key not in SENSOR_ALIASES:
        raise ValueError(
            f"sensor {sensor!r} has no MTF gains in ddif.data.sensors.SENSOR_MTF; pass --sensor with one of "
            f"{', '.join(known_sensors())} ('generic' for the toolbox's default gains)"
        )
    return sensor


def _file_attrs(cfg: MakeDatasetConfig, scene: PreparedScene, ms_source: ImageSource) -> dict[str, Any]:
    """The attributes every file of the dataset carries (how it was made, from what)."""
    has_pan = scene.pan is not None
    pan_desc = (
        "real PAN"
        if has_pan
        else f"synthesized PAN (semi-synthetic): weighted sum of the MS bands, weights {cfg.pan_weights}"
    )
    return {
        "created_by": "ddif.data.make_dataset",
        "protocol": "Wald reduced resolution",
        "ratio": cfg.ratio,
        "sensor": cfg.sensor,
        "interpolation": cfg.interpolation,
        "interp_padding": cfg.padding,
        "band_names": band_names(ms_source, cfg.ms_bands),
        "pan_source": pan_desc,
        "source_ms": scene.ms_image.source,
        "source_pan": scene.pan_image.source if scene.pan_image is not None else "",
        "source_max_dn": float(scene.in_max),
        "patch_size": cfg.patch_size,
        "stride": cfg.stride,
        "scene_crop": (*scene.origin, *scene.size),
        "crs": scene.ms_image.crs or "",
        "transform": scene.ms_image.transform or (),
        "config_json": json.dumps(asdict(cfg)),
        **scene.registration,
    }


def _summary(cfg: MakeDatasetConfig, scene: PreparedScene, plan: SplitPlan) -> dict[str, Any]:
    """The summary before writing (the writers add file paths and counts)."""
    summary: dict[str, Any] = {
        "pan": "real" if scene.pan is not None else "synthesized",
        "ratio": cfg.ratio,
        "scene_size": scene.size,
        "max_dn": float(scene.out_max),
        "regions": {k: v.as_tuple() for k, v in plan.regions.items()},
        "files": {},
    }
    for key in ("registration", "cloud_fraction"):
        if key in scene.registration:
            summary[key] = scene.registration[key]
    for split, rejected in plan.rejected_fill.items():
        summary[f"{split}_rejected_fill"] = rejected
    return summary
