"""Tables of a shipped model on real data it never saw, next to the classical methods.

Reduced resolution (Wald protocol): the held-out region of the model's training scene (clear crops
only, clouds from the QA band, the PAN registered to the MS as for training), degraded four ways:
the sensor's nominal MTF with interp23tap (as the training files' nominal variant) and with
bicubic upsampling, and MS MTF gains 0.2 and 0.4 (PAN gains scaled alike); plus, for Landsat, the
other real scene ``landsat8-pan-ms/`` (another path/row and year). Full resolution (no reference):
D_lambda, D_s and HQNR with both MTF kernels on the native held-out crops.

    python scripts/eval_real.py landsat8 [--ckpt PATH] [--json OUT.json] [--adapt]
    python scripts/eval_real.py worldview2 ...

Methods: EXP (the interpolated MS), GSA, MTF-GLP-HPM, GDAL's weighted Brovey, Brovey, GS, the
model (its default steps, seed 0) and, with --adapt, the model adapted to each test scene first
(``ddif adapt`` on the scene's own reduced-resolution version: for a reduced-resolution set that
is the set degraded once more). Per-band bias = mean(fused - reference) / mean(reference). One
thread; prints Markdown and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddif.evaluation import RealScene, band_bias, real_full_set, real_reduced_scene

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDIF_SHARED", REPO.parent / "shared")) / "data"

GAIN_SETS = (
    ("nominal MTF, interp23tap", None, "interp23tap"),
    ("nominal MTF, bicubic", None, "bicubic"),
    ("MS MTF gain 0.2", 0.2, "interp23tap"),
    ("MS MTF gain 0.4", 0.4, "interp23tap"),
)


def scenes_for(model: str) -> list[RealScene]:
    if model.startswith("landsat8"):
        bands = ("B2", "B3", "B4") if model == "landsat8" else ("B2", "B3", "B4", "B5")
        d = SHARED / "landsat8-oli-pan-scene"
        e = SHARED / "landsat8-pan-ms"
        stem = "LC08_L1TP_195025_20130707_20170503_01_T1"
        return [
            RealScene(
                "Landsat-8 LC80200392015216 (path 20 / row 39), held-out left strip, 32 px crops",
                tuple(str(d / f"l8_{b}.tif") for b in bands),
                str(d / "l8_B8.tif"),
                2,
                "landsat8",
                bands,
                65535.0,
                holdout="strip:192",
                crop=32,
                qa=str(d / "l8_BQA.tif"),
            ),
            RealScene(
                "Landsat-8 LC08_L1TP_195025 2013 (path 195 / row 25), another scene: one 40 px crop",
                tuple(str(e / f"{stem}_{b}.TIF") for b in bands),
                str(e / f"{stem}_B8.TIF"),
                2,
                "landsat8",
                bands,
                65535.0,
                crop=40,
                margin=0,
            ),
        ]
    if model == "worldview2":
        d = SHARED / "worldview2-spacenet6"
        return [
            RealScene(
                "WorldView-2 Rotterdam tile 1 (held out), 32 px crops",
                (str(d / "ms1_2m.tif"),),
                str(d / "pan1.tif"),
                4,
                "wv2",
                ("blue", "green", "red", "nir1"),
                2047.0,
                crop=32,
                nodata=(0.0,),
            )
        ]
    if model == "sentinel2":
        import tempfile

        from ddif.data.raster import write_band_stack
        from ddif.data.sensors import SENTINEL2_10M, SENTINEL2_20M

        d = SHARED / "sentinel2-l1c-north"
        stem = "S2_T18SVG_20160112"
        guide = write_band_stack(
            [d / f"{stem}_{b}.tif" for b in SENTINEL2_10M], Path(tempfile.gettempdir()) / "ddif_eval_s2_guide.vrt"
        )
        return [
            RealScene(
                "Sentinel-2 L1C T18SVG 2016-01-12, held-out left strip (20 m grid columns 0-191), 32 px crops",
                tuple(str(d / f"{stem}_{b}.tif") for b in SENTINEL2_20M),
                str(guide),
                2,
                "sentinel2",
                SENTINEL2_20M,
                10000.0,
                holdout="strip:192",
                crop=32,
            )
        ]
    raise ValueError(f"no evaluation scenes for {model!r}")


def reduced_sets(scene: RealScene) -> dict[str, dict[str, torch.Tensor]]:
    from ddif.data.degradation import Degradation

    nominal = Degradation.nominal(scene.sensor, list(scene.band_names), scene.ratio)
    out = {}
    for label, gain, interp in GAIN_SETS:
        if gain is None:
            deg = Degradation(scene.ratio, nominal.ms_gains, nominal.pan_gain, interp, nominal.padding)
        else:
            scale = gain / float(np.mean(nominal.ms_gains))
            deg = Degradation(
                scene.ratio,
                tuple(g * scale for g in nominal.ms_gains),
                min(1.0, nominal.pan_gain * scale),
                interp,
                nominal.padding,
            )
        data, whole = real_reduced_scene(scene, deg)
        out[label] = {"gt": data.gt, "lms": data.lms, "pan": data.pan, "ms": data.ms, "whole": whole}
    return out


def full_set(scene: RealScene) -> dict[str, torch.Tensor]:
    data = real_full_set(scene)
    return {"ms": data.ms, "lms": data.lms, "pan": data.pan}


def methods(scene: RealScene, fuser, adapt_fn=None) -> dict[str, Any]:
    from ddif.baselines import BASELINES, MULTI_GUIDE_BASELINES
    from ddif.data.degradation import sensor_band_gains

    gains = sensor_band_gains(scene.sensor, list(scene.band_names))[0]
    r = scene.ratio
    out: dict[str, Any] = {"EXP (interpolated MS)": lambda d: d["lms"]}
    names = ("gsa", "mtf_glp_hpm", "gdal_brovey", "brovey", "gs")
    table = dict(BASELINES)
    if scene.sensor == "sentinel2":  # a 4-band guide: the methods that use every guide band, and bicubic
        names = ("bicubic", "gsa_synthesized", "mtf_glp_synthesized", "gsa", "mtf_glp_hpm")
        table.update(MULTI_GUIDE_BASELINES)
    for name in names:
        if name in table:
            fn = table[name]
            out[name] = lambda d, fn=fn: fn(d["lms"], d["pan"], d["ms"], r, gains)
    out["DDIF"] = lambda d: fuser.fuse(d["lms"], d["pan"], seed=0)
    if adapt_fn is not None:
        out["DDIF adapted to the scene"] = adapt_fn
    return out


def reduced_row(fused: torch.Tensor, gt: torch.Tensor, ratio: int) -> dict[str, float]:
    from ddif import metrics
    from ddif.evaluation import block_size_for

    f = fused.clamp(0, 1).double()
    g = gt.double()
    block = block_size_for(*f.shape[-2:])
    bias = band_bias(f, g)
    return {
        "SAM": float(torch.as_tensor(metrics.sam(f, g)).mean()),
        "ERGAS": float(torch.as_tensor(metrics.ergas(f, g, ratio=ratio)).mean()),
        "Q2n": float(torch.as_tensor(metrics.q2n(f, g, block, block)).mean()),
        "bias %": bias,
    }


def full_row(fused: torch.Tensor, d: dict[str, torch.Tensor], scene: RealScene) -> dict[str, float]:
    from ddif.data.degradation import sensor_band_gains
    from ddif.evaluation import block_size_for
    from ddif.metrics import full_resolution_metrics

    gains = sensor_band_gains(scene.sensor, list(scene.band_names))[0]
    f = fused.clamp(0, 1)
    block = block_size_for(*f.shape[-2:])
    row = {}
    for kernel in ("ddif", "toolbox"):
        m = full_resolution_metrics(f, d["ms"], d["pan"], scene.ratio, gains, block, kernel)
        suffix = "" if kernel == "ddif" else " (toolbox MTF)"
        row[f"D_lambda{suffix}"] = float(torch.as_tensor(m["D_lambda"]).mean())
        if kernel == "ddif":
            row["D_s"] = float(torch.as_tensor(m["D_s"]).mean())
        row[f"HQNR{suffix}"] = float(torch.as_tensor(m["HQNR"]).mean())
    return row


def markdown(title: str, rows: dict[str, dict[str, Any]]) -> str:
    cols = [c for c in next(iter(rows.values())) if c != "s"]
    lower = {"SAM", "ERGAS", "D_lambda", "D_lambda (toolbox MTF)", "D_s"}
    best = {}
    for c in cols:
        vals = [r[c] for r in rows.values() if isinstance(r.get(c), float)]
        if vals:
            best[c] = min(vals) if c in lower else max(vals)
    lines = [f"**{title}**", "", "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                text = f"{v:.4f}"
                cells.append(f"**{text}**" if v == best.get(c) else text)
            elif isinstance(v, list):
                cells.append(" / ".join(f"{x:+.2f}" for x in v))
            else:
                cells.append(str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def adapted_fuser_for(model, whole: dict[str, np.ndarray], scene: RealScene, budget: float, steps: int):
    """``ddif adapt``'s fine-tuning on what a method sees of the reduced scene (its coarse MS and
    its PAN, not the reference), degraded once more: Scarpa et al.'s protocol."""
    from ddif.data.degradation import Degradation
    from ddif.fuser import Fuser
    from ddif.training.adapt import AdaptConfig, adapt, patches_from_windows

    r = scene.ratio
    nominal = Degradation.nominal(scene.sensor, list(scene.band_names), r)
    ms, pan, bad = whole["ms"], whole["pan"], whole["bad"]
    h, w = ms.shape[1] // r * r, ms.shape[2] // r * r
    window = {
        "ms": np.ascontiguousarray(ms[:, :h, :w]),
        "pan": np.ascontiguousarray(pan[:, : r * h, : r * w]),
        "bad": bad[:h, :w],
        "centre": (float(r // 2), float(r // 2)),  # the toolbox grid the Wald simulation made
    }
    patch = min(16 if r == 4 else 32, h // (2 * r) * r * 2 if h >= 4 * r else h // r * r, w // r * r)
    cfg = AdaptConfig(budget_s=budget, patch_size=max(2 * r, patch), registration="off", holdout_fraction=0.0)
    data = patches_from_windows([window], r, nominal, cfg)
    adapted, report = adapt(model, data, cfg, progress=False)
    return Fuser(adapted, steps=steps), report


def steps_study(model, d: dict[str, torch.Tensor], teacher_steps: int = 25) -> dict[str, Any]:
    """How far n DDIM steps land from the ``teacher_steps``-step output, in DN (max and mean |diff|
    over every pixel and band of the set), and the fewest steps within 0.5 DN everywhere."""
    from ddif.fuser import Fuser

    max_dn = float(model.config.max_dn)
    ref = Fuser(model, steps=teacher_steps).fuse(d["lms"], d["pan"], seed=0).double()
    rows = {}
    for n in (1, 2, 3, 4, 5, 10):
        out = Fuser(model, steps=n).fuse(d["lms"], d["pan"], seed=0).double()
        diff = (out - ref).abs() * max_dn
        rows[n] = {"max_dn_diff": float(diff.max()), "mean_dn_diff": float(diff.mean())}
    fewest = min((n for n, r in rows.items() if r["max_dn_diff"] <= 0.5), default=None)
    return {"teacher_steps": teacher_steps, "steps": rows, "fewest_within_0.5_dn": fewest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="shipped model name (landsat8, landsat8_nir, worldview2)")
    ap.add_argument("--ckpt", default=None, help="checkpoint to evaluate instead of the shipped one")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--adapt", action="store_true", help="also the model adapted to each test set")
    ap.add_argument("--adapt-budget", type=float, default=60.0)
    ap.add_argument("--full", action="store_true", help="also the full-resolution table")
    ap.add_argument("--steps-study", action="store_true", help="n steps vs 25 on the first held-out set, in DN")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from ddif.fuser import Fuser
    from ddif.models import load_model
    from ddif.models.cards import resolve_model

    path = Path(args.ckpt) if args.ckpt else resolve_model(args.model)[0]
    model = load_model(str(path))
    fuser = Fuser(model, steps=args.steps)
    results: dict[str, Any] = {"checkpoint": str(path), "steps": fuser.steps, "tables": {}}
    for index, scene in enumerate(scenes_for(args.model)):
        sets = reduced_sets(scene)
        if args.steps_study and index == 0:
            study = steps_study(model, next(iter(sets.values())))
            results["steps_study"] = study
            print(json.dumps(study, indent=2), flush=True)
        for label, d in sets.items():
            adapt_fn = None
            if args.adapt:

                def adapt_fn(dd, scene=scene, label=label):
                    f, rep = adapted_fuser_for(model, dd["whole"], scene, args.adapt_budget, fuser.steps)
                    results.setdefault("adaptation", {})[f"{scene.name} / {label}"] = rep
                    return f.fuse(dd["lms"], dd["pan"], seed=0)

            rows = {}
            for name, fn in methods(scene, fuser, adapt_fn).items():
                t0 = time.perf_counter()
                fused = fn(d)
                rows[name] = {**reduced_row(fused, d["gt"], scene.ratio), "s": time.perf_counter() - t0}
            title = f"{scene.name}: {label} ({d['gt'].shape[0]} crops)"
            results["tables"][title] = rows
            print(markdown(title, rows) + "\n", flush=True)
            if "another scene" in scene.name and label != GAIN_SETS[0][0]:
                break  # the one-crop second Landsat scene: nominal and bicubic only
        if args.full:
            d = full_set(scene)
            rows = {}
            for name, fn in methods(scene, fuser).items():
                rows[name] = full_row(fn(d), d, scene)
            title = f"{scene.name}: full resolution ({d['ms'].shape[0]} crops)"
            results["tables"][title] = rows
            print(markdown(title, rows) + "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
