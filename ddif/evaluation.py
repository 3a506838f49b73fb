"""Side-by-side evaluation of fusion methods (DDIF checkpoints, distilled students, classical
baselines) under the reduced-resolution (Wald) and full-resolution (QNR) protocols, following the
conventions of Vivone et al., "A new benchmarking framework and survey of pansharpening methods"
(IEEE GRSM 2021)."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch

from ddif.data.evalset import EvalSet, eval_set_from_dataset  # noqa: F401 (re-exported)
from ddif.utils.io import atomic_write_text

if TYPE_CHECKING:
    from ddif.fuser import Fuser
    from ddif.runtime.backends import RuntimeBackend

# a method fuses a batch: (lms, pan, ms) -> fused, all (B, C, H, W) in [0, 1]
Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# one table row: the method's name under "method", then its metrics and timing
Row = dict[str, Any]

LOWER_IS_BETTER = {"SAM", "ERGAS", "D_lambda", "D_s", "s/image"}


def classical_methods(
    ratio: int, sensor: str | Sequence[float], names: Sequence[str] | None = None
) -> dict[str, Method]:
    """EXP (the interpolated MS itself) and the classical baselines of :mod:`ddif.baselines`
    (``sensor``: a sensor name or the MS bands' MTF gains, e.g. for a band subset), those that use
    every band of a multi-band guide included."""
    from ddif.baselines import BASELINES, MULTI_GUIDE_BASELINES

    methods: dict[str, Method] = {"EXP (interpolated MS)": lambda lms, pan, ms: lms}
    for name, fn in {**BASELINES, **MULTI_GUIDE_BASELINES}.items():
        if names is None or name in names:
            methods[name] = (lambda f: lambda lms, pan, ms: f(lms, pan, ms=ms, ratio=ratio, sensor=sensor))(fn)
    return methods


def fuser_method(fuser: Fuser | RuntimeBackend, seed: int = 0) -> Method:
    return lambda lms, pan, ms: fuser.fuse(lms, pan, seed=seed)


def block_size_for(h: int, w: int, preferred: int = 32) -> int:
    """The toolbox's 32x32 Q blocks, or the largest smaller power of 2 that tiles a small image."""
    b = preferred
    while b > 2 and (h % b or w % b):
        b //= 2
    return b


def _metrics_for(
    fused: torch.Tensor, data: EvalSet, ratio: int, sensor: str | Sequence[float], mtf_kernel: str = "ddif"
) -> dict[str, float]:
    from ddif import metrics

    fused = fused.clamp(0, 1)
    block = block_size_for(*fused.shape[-2:])
    if data.gt is not None:
        m = metrics.reduced_resolution_metrics(fused, data.gt, ratio=ratio, block_size=block)
    else:
        ms = _require_ms(data, "the full-resolution metrics")
        m = metrics.full_resolution_metrics(
            fused, ms, data.pan, ratio=ratio, sensor=sensor, block_size=block, mtf_kernel=mtf_kernel
        )
    return {k: _mean(v) for k, v in m.items()}


def _require_ms(data: EvalSet, what: str) -> torch.Tensor:
    if data.ms is None:
        raise ValueError(f"the evaluation set has no 'ms' (the coarse multispectral image), needed by {what}")
    return data.ms


def _mean(v: torch.Tensor | float) -> float:
    return float(torch.as_tensor(v, dtype=torch.float64).mean())


@overload
def evaluate(
    methods: Mapping[str, Method],
    data: EvalSet,
    ratio: int,
    sensor: str | Sequence[float],
    batch_size: int = 8,
    return_outputs: Literal[False] = False,
    reference: str | None = None,
    compare: Sequence[str] = (),
    mtf_kernel: str = "ddif",
) -> list[Row]: ...


@overload
def evaluate(
    methods: Mapping[str, Method],
    data: EvalSet,
    ratio: int,
    sensor: str | Sequence[float],
    batch_size: int = 8,
    *,
    return_outputs: Literal[True],
    reference: str | None = None,
    compare: Sequence[str] = (),
    mtf_kernel: str = "ddif",
) -> tuple[list[Row], dict[str, torch.Tensor]]: ...


def evaluate(
    methods: Mapping[str, Method],
    data: EvalSet,
    ratio: int,
    sensor: str | Sequence[float],
    batch_size: int = 8,
    return_outputs: bool = False,
    reference: str | None = None,
    compare: Sequence[str] = (),
    mtf_kernel: str = "ddif",
) -> list[Row] | tuple[list[Row], dict[str, torch.Tensor]]:
    """Run every method on ``data`` (in batches) and compute its metrics; rows of dicts.

    With ``reference`` (the name of one of ``methods``, e.g. a 25-step teacher), the methods named
    in ``compare`` (e.g. its distilled students) also get "PSNR vs <reference>": how closely they
    reproduce the reference's output. ``mtf_kernel`` (``"ddif"`` or ``"toolbox"``) picks the MTF
    filter of the full-resolution D_lambda (:func:`ddif.metrics.d_lambda`); the reduced-resolution
    metrics use no MTF filter.
    """
    from ddif.data.mtf import check_mtf_kernel

    check_mtf_kernel(mtf_kernel)
    rows: list[Row] = []
    outputs: dict[str, torch.Tensor] = {}
    for name, method in methods.items():
        ms = _require_ms(data, "the methods (called with lms, pan, ms)")
        t0 = time.perf_counter()
        fused = torch.cat(
            [
                method(data.lms[i : i + batch_size], data.pan[i : i + batch_size], ms[i : i + batch_size])
                for i in range(0, len(data), batch_size)
            ]
        )
        elapsed = (time.perf_counter() - t0) / len(data)
        rows.append({"method": name, **_metrics_for(fused, data, ratio, sensor, mtf_kernel), "s/image": elapsed})
        outputs[name] = fused
    if reference is not None:
        from ddif.metrics import psnr

        column = "PSNR vs teacher"
        for row in rows:
            row[column] = (
                _mean(psnr(outputs[row["method"]].clamp(0, 1), outputs[reference].clamp(0, 1)))
                if row["method"] in compare
                else float("nan")
            )
            row["s/image"] = row.pop("s/image")  # keep timing the last column
    return (rows, outputs) if return_outputs else rows


def markdown(rows: list[Row], title: str | None = None) -> str:
    if not rows:
        return ""
    cols = [c for c in rows[0] if c != "method"]
    best = {}
    for c in cols:
        vals = [r[c] for r in rows if isinstance(r.get(c), float) and math.isfinite(r[c])]
        if vals and c not in ("s/image", "PSNR vs teacher"):
            best[c] = min(vals) if c in LOWER_IS_BETTER else max(vals)
    lines = []
    if title:
        lines.append(f"**{title}**\n")
    arrows = {c: ("" if c.startswith("bias") else " ↓" if c in LOWER_IS_BETTER else " ↑") for c in cols}
    lines.append("| method | " + " | ".join(c + arrows[c] for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float) and math.isnan(v):
                text = "–"
            elif isinstance(v, float):
                text = f"{v:.4f}" if c != "s/image" else f"{v:.3g}"
            else:
                text = str(v)
            cells.append(f"**{text}**" if c in best and v == best[c] else text)
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
    if not rows:
        return
    buf = io.StringIO()
    fields = list(extra or {}) + list(rows[0])
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({**(extra or {}), **r})
    atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# real scenes: held-out crops of a real PAN + MS pair (``ddif demo``, scripts/eval_real.py)
# --------------------------------------------------------------------------------------------
@dataclass
class RealScene:
    """A real PAN + MS pair and the part of it a table is made on: ``holdout`` "strip:N" (the
    N-px test strip of ``ddif make-dataset --holdout-side left``) or "all" (the whole scene, e.g.
    a tile never trained on); ``crop``-px crops free of fill / cloud."""

    name: str
    ms: tuple[str, ...]
    pan: str
    ratio: int
    sensor: str
    band_names: tuple[str, ...]
    max_dn: float
    holdout: str = "all"
    crop: int = 32
    qa: str = ""
    qa_generation: str = "auto"
    nodata: tuple[float, ...] = ()
    margin: int = 4

    @property
    def gains(self) -> tuple[float, ...]:
        from ddif.data.degradation import sensor_band_gains

        return sensor_band_gains(self.sensor, list(self.band_names))[0]


def _prepared(scene: RealScene) -> tuple[Any, Any, Any, list[Any]]:
    """(config, prepared scene, region, crops) through ``ddif make-dataset``'s own preparation:
    clouds from the QA band, the PAN registered to the MS (as for training)."""
    from ddif.data.dataset_config import MakeDatasetConfig
    from ddif.data.sources import prepare_scene
    from ddif.data.splits import Region, pick_test_crops, split_regions

    strip = scene.holdout.startswith("strip:")
    cfg = MakeDatasetConfig(
        ms=scene.ms,
        pan=scene.pan,
        qa=scene.qa,
        qa_generation=scene.qa_generation,
        ratio=scene.ratio,
        sensor=scene.sensor,
        max_dn=scene.max_dn,
        nodata=scene.nodata,
        patch_size=scene.crop,
        stride=scene.crop,
        fill_margin=scene.margin,
        test_size=int(scene.holdout.split(":")[1]) if strip else 0,
        val_fraction=0.0,
    )
    prep = prepare_scene(cfg, cfg.ms, cfg.pan)
    h, w = prep.size
    r = scene.ratio
    region = split_regions(h, w, cfg)["test"] if strip else Region(0, 0, h // r * r, w // r * r)
    corners = pick_test_crops(prep.fill[region.slices], scene.crop, cfg.margin, r)
    if not corners:
        raise ValueError(f"{scene.name}: no {scene.crop} px crop free of fill / cloud in {region.as_tuple()}")
    crops = [Region(region.row + y, region.col + x, scene.crop, scene.crop) for y, x in corners]
    return cfg, prep, region, crops


def real_reduced_set(scene: RealScene, degradation: Any = None) -> EvalSet:
    """The crops at reduced resolution (Wald protocol): the region degraded once with
    ``degradation`` (default: the sensor's nominal simulation), then cut."""
    return real_reduced_scene(scene, degradation)[0]


def real_reduced_scene(scene: RealScene, degradation: Any = None) -> tuple[EvalSet, dict[str, np.ndarray]]:
    """:func:`real_reduced_set` and the whole degraded region as a scene to fuse: ``ms`` (C, H/r,
    W/r), ``pan`` (P, H, W) and ``bad`` (H/r, W/r: fill or cloud under a coarse pixel), what a
    method sees of it (e.g. to adapt a model to it)."""
    from ddif.data.wald_writer import degrade_region

    cfg, prep, region, crops = _prepared(scene)
    images = degrade_region(prep, region, cfg, degradation)
    r = scene.ratio
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("gt", "lms", "pan", "ms")}
    for c in crops:
        y, x = c.row - region.row, c.col - region.col
        for k in ("gt", "lms", "pan"):
            parts[k].append(images[k][:, y : y + c.height, x : x + c.width])
        parts["ms"].append(images["ms"][:, y // r : (y + c.height) // r, x // r : (x + c.width) // r])
    t = {k: torch.from_numpy(np.ascontiguousarray(np.stack(v))) for k, v in parts.items()}
    fill = prep.fill[region.slices]
    h, w = fill.shape[0] // r, fill.shape[1] // r
    bad = fill[: h * r, : w * r].reshape(h, r, w, r).any(axis=(1, 3))
    whole = {"ms": images["ms"], "pan": images["pan"], "bad": bad}
    return EvalSet(lms=t["lms"], pan=t["pan"], ms=t["ms"], gt=t["gt"]), whole


def real_full_set(scene: RealScene) -> EvalSet:
    """The crops at full resolution (no reference): the MS, it upsampled, the registered PAN."""
    from ddif.data.mtf import upsample

    cfg, prep, _, crops = _prepared(scene)
    r = scene.ratio
    ms, pan = [], []
    for c in crops:
        rows, cols = c.slices
        ms.append(prep.ms[:, rows, cols])
        pan.append(prep.pan[:, r * rows.start : r * rows.stop, r * cols.start : r * cols.stop])
    ms_t = torch.from_numpy(np.ascontiguousarray(np.stack(ms)))
    lms = upsample(ms_t, r, method=cfg.interpolation, padding=cfg.padding)
    return EvalSet(lms=lms, pan=torch.from_numpy(np.ascontiguousarray(np.stack(pan))), ms=ms_t)


def band_bias(fused: torch.Tensor, gt: torch.Tensor) -> list[float]:
    """Per-band bias mean(fused - gt) / mean(gt), in percent of the band mean."""
    f, g = fused.clamp(0, 1).double(), gt.double()
    return [round(float(v), 3) for v in ((f - g).mean(dim=(0, 2, 3)) / g.mean(dim=(0, 2, 3)) * 100)]
