"""Adapt a model to one scene before fusing it (target-adaptive fine-tuning, Scarpa et al. 2018).

    ddif adapt --ms MS.tif --pan PAN.tif --model landsat8 --out landsat8_scene.pt
    ddif adapt --ms B4.TIF B3.TIF B2.TIF --pan B8.TIF --model landsat8 --out m2.pt --budget 60
    ddif fuse MS.tif PAN.tif OUT.tif --adapt               # adapt, then fuse, in one command

The model is fine-tuned on the scene's own reduced-resolution version (its MS and PAN degraded
by the ratio with the sensor's MTF, the original MS as the reference: nothing beyond the scene is
needed) for at most --budget seconds of training (default 150 s, so the whole command stays
within 3 minutes on 2 CPU cores), with a progress bar. A tenth of the scene's windows is held
back: the adapted weights are kept only if they fuse those better (ERGAS), else the original
model is written unchanged and the command says so. The output is an engine checkpoint with the
adaptation's report in its metadata, and a model card beside it when the model had one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ddif.cli.args import input_scale

if TYPE_CHECKING:
    from ddif.training.adapt import AdaptConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ms", nargs="+", required=True, help="MS raster, or one file per band")
    p.add_argument("--pan", required=True, help="PAN raster")
    p.add_argument("--model", default=None, help="checkpoint or shipped model name (default: the one that fits)")
    p.add_argument("--out", required=True, help="the adapted checkpoint (.pt)")
    add_adapt_options(p)
    p.add_argument("--nodata", type=float, default=None, help="nodata of inputs without a nodata tag")
    p.add_argument("--input-scale", type=input_scale, default=None, help="DN = file value x this")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_adapt_options(p: argparse.ArgumentParser) -> None:
    from ddif.training.adapt import AdaptConfig

    d = AdaptConfig()
    g = p.add_argument_group("scene adaptation")
    g.add_argument("--budget", type=float, default=d.budget_s, help=f"training seconds (default {d.budget_s:g})")
    g.add_argument("--adapt-iterations", type=int, default=d.max_iterations, help="at most this many steps")
    g.add_argument("--adapt-lr", type=float, default=d.lr, help=f"learning rate (default {d.lr:g})")
    g.add_argument("--adapt-seed", type=int, default=d.seed)


def adapt_config(args: argparse.Namespace) -> AdaptConfig:
    from ddif.training.adapt import AdaptConfig

    return AdaptConfig(
        budget_s=args.budget, max_iterations=args.adapt_iterations, lr=args.adapt_lr, seed=args.adapt_seed
    )


def adapt_scene(
    model_path: Path,
    ms_path: Path,
    pan_path: Path,
    out: Path,
    args: argparse.Namespace,
    inputs: list[Path],
    progress: bool,
) -> dict:
    """Adapt ``model_path`` to the scene and write ``out`` (and its card); returns the report."""
    from ddif.models import load_model
    from ddif.models.cards import card_for
    from ddif.training.adapt import adapt, adaptation_set, adapted_metadata, scene_identity

    cfg = adapt_config(args)
    model = load_model(str(model_path))
    t0 = time.perf_counter()
    data = adaptation_set(ms_path, pan_path, model.preset, cfg, input_scale=args.input_scale, input_nodata=args.nodata)
    adapted, report = adapt(model, data, cfg, progress=progress)
    report["total_s"] = round(time.perf_counter() - t0, 2)
    report["scene"] = scene_identity(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    adapted.save(out, metadata=adapted_metadata(str(model_path), report))
    card = card_for(model_path) if model_path.suffix == ".pt" else None
    if card is not None:
        card.name = out.stem
        card.checkpoint = out.name
        card.title = f"{card.title} (adapted to {Path(inputs[0]).name})"
        card.sha256 = ""
        card.extra = {
            **card.extra,
            "adapted_from": card.extra.get("adapted_from", str(model_path)),
            "adaptation": report,
        }
        card.save(out.with_name(out.stem + ".card.json"))
    return report


def describe(report: dict) -> str:
    before, after = report.get("holdout_ergas_before"), report.get("holdout_ergas_after")
    check = ""
    if before is not None and after is not None:
        check = f"; held-back ERGAS {before:.4f} -> {after:.4f}"
    kept = "" if report.get("kept", True) else " (not kept: worse on the held-back patches; model unchanged)"
    return (
        f"adapted for {report['iterations']} steps in {report['seconds']:.0f} s on {report['patches']} patches from "
        f"{report['windows']} windows{check}{kept}"
    )


def run(args: argparse.Namespace) -> int:
    from ddif.cli.common import band_stacks, pick_model

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"output {out} exists; give --overwrite to replace it")
    if args.threads is not None:
        import torch

        torch.set_num_threads(int(args.threads))
    ms = [Path(p) for p in args.ms]
    pan = Path(args.pan)
    model_path, match = pick_model(args.model, ms, pan, quiet=args.quiet)
    order = match.order if match is not None else None
    progress = not args.quiet and sys.stderr.isatty()
    with band_stacks(ms, pan, out.with_suffix(".tif"), keep=False, order=order) as (ms_path, pan_path, _):
        report = adapt_scene(model_path, ms_path, pan_path, out, args, [*ms, pan], progress)
    print(f"{out}: {describe(report)}")
    return 0
