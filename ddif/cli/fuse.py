"""Pansharpen one scene into a Cloud-Optimized GeoTIFF (like gdal_pansharpen.py, with DDIF).

    ddif fuse MS.tif PAN.tif OUT.tif                                  # multi-band MS
    ddif fuse B2.TIF B3.TIF B4.TIF B8.TIF OUT.tif --nodata 0          # one file per MS band (Landsat)
    ddif fuse MS.vrt PAN.tif OUT.tif -co COMPRESS=ZSTD -co LEVEL=9 -co BLOCKSIZE=512
    ddif fuse S2_SCENE_DIR OUT.tif       # Sentinel-2: band files *_B02.tif ... *_B12.tif, a .SAFE or a VRT

The last two paths are the PAN and the output; every path before them is the MS: one multi-band
raster (GeoTIFF or GDAL VRT), or single-band files stacked in the order given (same CRS, grid,
size, dtype and nodata; stacked through OUT_MS.vrt, kept beside the product as the record of
the bands used). The scene goes through the ground station's single-scene path (``ddif station
run``: the same checks, tiles, journal and product, byte for byte): OUT is a COG on the PAN grid
in the MS dtype, with OUT_quicklook.png, OUT_report.json (quality indices, timings) and a STAC
item OUT.json beside it (--no-sidecars: the product alone). An interrupted run resumes from its
tile journal (.OUT.journal) when started again with the same arguments.

-co NAME=VALUE sets the COG's creation options: COMPRESS (DEFLATE, LZW, ZSTD, NONE), LEVEL (1-9),
BLOCKSIZE (a multiple of 16), OVERVIEW_RESAMPLING (AVERAGE, NEAREST, BILINEAR, CUBIC, ...);
the others are fixed so that the product's bytes depend on the data only. Without --model, ddif
picks the one shipped model (`ddif models`) that fits the inputs: their band count and band names
(``..._B4.TIF`` file names, band descriptions), the resolution ratio and the sensor (an _MTL.txt
or .IMD beside the files, or the file names), and says which; when none fits it names the models
and why. Bands delivered in another order than the model's are reordered by name (or a subset
taken), never fused swapped.

Sentinel-2 (two paths: a delivery and OUT): the six 20 m bands are sharpened to 10 m with the four
10 m bands as the guide, and OUT carries all ten bands in the order B02, B03, B04, B05, B06, B07,
B08, B8A, B11, B12 (the 10 m bands passed through unchanged), each named in its band description.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddif.cli.args import input_scale
from ddif.cli.common import (
    STATION_BACKENDS,
    FastPath,
    band_stacks,
    build_station_backend,
    fuse_planned_scene,
    pick_model,
)
from ddif.station.events import EventLog

# -co names ddif fuse sets on StationConfig: NAME -> (field, what the value must be)
SETTABLE_CO = {
    "COMPRESS": ("compress", "DEFLATE, LZW, ZSTD or NONE"),
    "LEVEL": ("zlevel", "an integer in 1..9"),
    "BLOCKSIZE": ("block_size", "a multiple of 16"),
    "OVERVIEW_RESAMPLING": ("overview_resampling", "AVERAGE, NEAREST, BILINEAR, CUBIC, ..."),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "ddif fuse [options] MS [MS ...] PAN OUT"
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="MS (one multi-band raster or one file per band, in order), then PAN, then the output COG",
    )
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint (.pt), exported .onnx / TensorRT .plan, or the name of a shipped model (`ddif models`; "
        "default: the one shipped model that fits the inputs: band count and names, ratio, sensor)",
    )
    p.add_argument("--backend", choices=STATION_BACKENDS, default="auto", help="auto: the fastest available")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: CUDA when available)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--tile-size", type=int, default=None, help="fused tile side, PAN px (default: the model's)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap, PAN px (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the backend (default: its own)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (the product is a function of it)")
    p.add_argument(
        "--nodata",
        type=float,
        default=None,
        help="nodata of inputs without a nodata tag (e.g. 0 for Landsat's zero fill)",
    )
    p.add_argument(
        "--registration",
        default="check",
        help="MS-to-PAN registration beyond the geotransforms: check (measure and warn), measure (also correct "
        "when the scene's windows agree), off, or DY,DX (PAN px)",
    )
    p.add_argument(
        "--input-scale",
        type=input_scale,
        default=None,
        help="DN = file value x this (e.g. 10000 for reflectance in [0, 1])",
    )
    p.add_argument(
        "--input-offset",
        type=float,
        default=None,
        help="DN = file value x scale + this (Sentinel-2 from processing baseline 04.00: -1000, read from its "
        "MTD file by default); the product is written back in the file's convention",
    )
    p.add_argument(
        "-co",
        dest="creation_options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="COG creation option (repeatable): COMPRESS, LEVEL, BLOCKSIZE, OVERVIEW_RESAMPLING",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT (and its side-cars) if it exists")
    p.add_argument(
        "--no-sidecars",
        action="store_true",
        help="write the product only (no quicklook, report, STAC item or kept band-stack VRT)",
    )
    p.add_argument(
        "--adapt",
        action="store_true",
        help="adapt the model to this scene first (ddif adapt: fine-tuning on the scene's reduced-resolution "
        "version within --budget seconds); the adapted model is kept beside OUT as OUT_adapted.pt",
    )
    from ddif.cli.adapt import add_adapt_options
    from ddif.cli.common import add_fast_path_args

    add_adapt_options(p)
    add_fast_path_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def split_paths(paths: Sequence[str]) -> tuple[list[Path], Path, Path]:
    """(MS paths, PAN, OUT) of ``MS [MS ...] PAN OUT``."""
    if len(paths) < 3:
        raise ValueError(
            f"expected MS [MS ...] PAN OUT (at least 3 paths), or a Sentinel-2 delivery (folder, .SAFE or VRT) "
            f"and OUT, got {len(paths)}: {' '.join(paths)}"
        )
    return [Path(p) for p in paths[:-2]], Path(paths[-2]), Path(paths[-1])


def _fixed_options() -> dict[str, str]:
    """The COG options ddif fixes (deterministic bytes), as the station writes them."""
    from ddif.station.products import cog_creation_options

    fixed = cog_creation_options("deflate", 6, 256, "uint16")
    return {k: v for k, v in fixed.items() if k not in SETTABLE_CO and k not in ("PREDICTOR", "LEVEL")}


def creation_option_fields(options: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``-co NAME=VALUE`` options as :class:`ddif.station.StationConfig` fields, and the fixed
    options the user repeated (checked against the product's later: PREDICTOR depends on its
    dtype). Unknown names, or a fixed option at another value, raise ValueError listing the
    accepted ones."""
    from ddif.station.config import COMPRESSIONS
    from ddif.station.products import OVERVIEW_RESAMPLINGS

    fixed = _fixed_options()
    accepted = ", ".join(f"{k} ({what})" for k, (_, what) in SETTABLE_CO.items())
    fields: dict[str, Any] = {}
    repeated: dict[str, str] = {}
    for text in options:
        name, sep, value = text.partition("=")
        name, value = name.strip().upper(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"-co {text!r}: expected NAME=VALUE, e.g. -co COMPRESS=ZSTD")
        if name in SETTABLE_CO:
            field, what = SETTABLE_CO[name]
            if name == "COMPRESS":
                ok = value.lower() in COMPRESSIONS
                parsed: Any = value.lower()
            elif name == "OVERVIEW_RESAMPLING":
                ok = value.lower() in OVERVIEW_RESAMPLINGS
                parsed = value.lower()
            else:
                ok = value.isdigit()
                parsed = int(value) if ok else value
                ok = ok and (1 <= parsed <= 9 if name == "LEVEL" else parsed >= 16 and parsed % 16 == 0)
            if not ok:
                raise ValueError(f"-co {name}={value}: expected {what}")
            fields[field] = parsed
        elif name in fixed or name == "PREDICTOR":
            if name in fixed and value.upper() != fixed[name]:
                raise ValueError(
                    f"-co {name}={value}: ddif fixes {name}={fixed[name]} (products are byte-for-byte "
                    f"reproducible); settable: {accepted}"
                )
            repeated[name] = value.upper()
        else:
            raise ValueError(
                f"-co {name}: not a creation option ddif fuse sets; accepted: {accepted} "
                f"(fixed: {', '.join(f'{k}={v}' for k, v in fixed.items())}, PREDICTOR by dtype)"
            )
    return fields, repeated


class _Messages(EventLog):
    """The station's events for a one-shot command: kept in memory; warnings and errors printed
    as plain lines on stderr (the JSON-lines log is the service's)."""

    def __init__(self) -> None:
        super().__init__(stream=None)

    def emit(self, event: str, level: str = "info", **fields: Any) -> dict[str, Any]:
        record = super().emit(event, level, **fields)
        if level != "info":
            detail = fields.get("message") or fields.get("reason") or fields.get("error")
            if detail is None:
                detail = ", ".join(f"{k}={v}" for k, v in fields.items())
            print(f"ddif fuse: {level}: {event}: {detail}", file=sys.stderr)
        return record


def adapted_model(
    model: Path, ms_path: Path, pan_path: Path, out: Path, args: argparse.Namespace, inputs: list[Path], progress: bool
) -> Path:
    """``--adapt``: the model adapted to this scene, OUT_adapted.pt beside the product; an adapted
    model left there by an interrupted run of the same scene and model is reused (so the tile
    journal, keyed by the model, resumes)."""
    from ddif.cli.adapt import adapt_scene, describe
    from ddif.models.checkpoint import read_contents
    from ddif.training.adapt import scene_identity

    if model.suffix != ".pt":
        raise ValueError(f"--adapt fine-tunes a checkpoint (.pt), got {model}")
    path = out.with_name(out.stem + "_adapted.pt")
    if path.exists():
        try:
            meta = read_contents(path).metadata
        except (ValueError, OSError):
            meta = {}
        report = meta.get("adaptation", {}) if isinstance(meta, dict) else {}
        if meta.get("adapted_from") == str(model) and report.get("scene") == scene_identity(inputs):
            if not args.quiet:
                print(f"ddif fuse: reusing {path} (adapted to this scene by an earlier run)", file=sys.stderr)
            return path
        if not args.overwrite:
            raise ValueError(f"{path} exists (an adapted model of another scene or model); give --overwrite")
    report = adapt_scene(model, ms_path, pan_path, path, args, inputs, progress)
    if not args.quiet:
        print(f"ddif fuse: {path}: {describe(report)}", file=sys.stderr)
    return path


def run(args: argparse.Namespace) -> int:
    first = Path(args.paths[0])
    delivery_like = first.is_dir() or first.suffix.lower() in (".vrt", ".safe") or not first.suffix
    if len(args.paths) == 2 and delivery_like:  # DIR OUT: a Sentinel-2 delivery (a pair takes three paths)
        return run_sentinel2(args, first, Path(args.paths[1]))
    ms, pan, out = split_paths(args.paths)
    return fuse_scene(args, ms, pan, out)


def run_sentinel2(args: argparse.Namespace, source: Path, out: Path) -> int:
    """``ddif fuse DIR OUT.tif`` on a Sentinel-2 delivery (a folder of band files, a .SAFE or a
    VRT, :func:`ddif.data.sentinel2.find_bands`): the six 20 m bands sharpened with the four 10 m
    bands as the guide (stacked into OUT_guide10m.vrt), one COG on the 10 m grid with the ten
    bands in Sentinel-2 order, the 10 m bands passed through (the product layout of the station:
    :attr:`ddif.station.plan.ScenePlan.product_bands`)."""
    from ddif.data.raster import write_band_stack
    from ddif.data.sensors import SENTINEL2_10M, SENTINEL2_20M
    from ddif.data.sentinel2 import check_band_resolutions, find_bands, offset_warning
    from ddif.station.errors import Refused
    from ddif.station.outputs import check_outputs, plan_outputs
    from ddif.station.run import default_journal_dir

    delivery = find_bands(source)
    check_band_resolutions(delivery)
    warning = offset_warning(delivery)
    if warning and args.input_offset is None:
        print(f"ddif fuse: warning: {warning}", file=sys.stderr)
    if args.input_offset is None and delivery.dn_offset:
        args.input_offset = delivery.dn_offset  # reflectance x 10000 = DN + offset (the MTD file's)
        if not args.quiet:
            print(
                f"ddif: {source}: DN offset {delivery.dn_offset:g} (processing baseline 04.00+) applied",
                file=sys.stderr,
            )
    guide = out.with_name(f"{out.stem}_guide10m.vrt")
    if out.exists() and not args.overwrite:
        raise Refused(f"output {out} exists; give --overwrite to replace it")
    # before the guide stack is written (fuse_scene checks its own outputs again, with the stack as an input)
    check_outputs(
        plan_outputs(out, write_stac=not args.no_sidecars, extra={"guide stack": guide}), delivery.bands.values()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    created = not guide.exists()
    write_band_stack(delivery.guide_files, guide, "guide")
    if not args.quiet:
        print(
            f"ddif: Sentinel-2 {delivery.layout} {source}: sharpening {', '.join(SENTINEL2_20M)} to 10 m with "
            f"{', '.join(SENTINEL2_10M)} as the guide",
            file=sys.stderr,
        )
    ok = False
    try:
        rc = fuse_scene(args, delivery.sharpened_files, guide, out)
        ok = rc == 0
        return rc
    finally:
        # kept beside a product (the record of the guide bands); gone after --no-sidecars, and after
        # a failure unless a tile journal remains for a rerun to resume
        failed_fresh = not ok and created and not default_journal_dir(out).exists()
        if args.no_sidecars or failed_fresh:
            guide.unlink(missing_ok=True)


def fuse_scene(args: argparse.Namespace, ms: list[Path], pan: Path, out: Path) -> int:
    """One MS + PAN (or guide) scene into OUT through the station's single-scene path."""
    from ddif.export import model_preset
    from ddif.station.config import StationConfig
    from ddif.station.errors import Refused
    from ddif.station.outputs import check_outputs, plan_outputs
    from ddif.station.plan import plan_scene
    from ddif.station.products import cog_creation_options

    t0 = time.perf_counter()
    if len({p.resolve() for p in ms}) != len(ms):
        names = [p.name for p in ms]
        raise ValueError(f"MS {', '.join(names)}: the same band file is given more than once")
    # every file this command may write, checked against each other and the inputs before anything is read
    extra = {f"{k} band stack": out.with_name(f"{out.stem}_{k}.vrt") for k in ("MS", "PAN")}
    if args.adapt:
        extra["adapted model"] = out.with_name(out.stem + "_adapted.pt")
    check_outputs(plan_outputs(out, write_stac=not args.no_sidecars, extra=extra), [*ms, pan])
    if out.exists() and not args.overwrite:
        raise Refused(f"output {out} exists; give --overwrite to replace it")
    fast = FastPath.from_args(args)
    fast.check(args.backend, args.device)  # before anything is read
    fields, repeated = creation_option_fields(args.creation_options)
    config = StationConfig(
        tile_size=args.tile_size,
        overlap=args.overlap,
        seed=args.seed,
        input_nodata=args.nodata,
        input_scale=args.input_scale,
        input_offset=args.input_offset or 0.0,
        registration=args.registration,
        **fields,
    )
    model, match = pick_model(args.model, ms, pan, quiet=args.quiet)
    preset, _ = model_preset(model)
    log = _Messages()
    progress = not args.quiet and sys.stderr.isatty()
    keep = not args.no_sidecars
    out.parent.mkdir(parents=True, exist_ok=True)
    order = match.order if match is not None else None
    stacking = band_stacks(ms, pan, out, keep, order)
    with stacking as (ms_path, pan_path, stacks), tempfile.TemporaryDirectory() as scratch:
        # the scene is checked against the model before any backend is built (no export for a bad scene)
        plan = plan_scene(ms_path, pan_path, preset, config, log=log)
        cfg = plan.config
        options = cog_creation_options(cfg.compress, cfg.zlevel, cfg.block_size, plan.grid.ms.dtype)
        if "PREDICTOR" in repeated and repeated["PREDICTOR"] != options.get("PREDICTOR"):
            raise ValueError(
                f"-co PREDICTOR={repeated['PREDICTOR']}: ddif sets PREDICTOR="
                f"{options.get('PREDICTOR', 'none (no compression)')} for a {plan.grid.ms.dtype} product"
            )
        if args.adapt:
            model = adapted_model(model, ms_path, pan_path, out, args, [*ms, pan], progress)
        # --no-sidecars: the quicklook and report run_scene always writes go to a scratch folder
        quicklook, report_path = (None, None) if keep else (Path(scratch) / "q.png", Path(scratch) / "r.json")
        outcome = fuse_planned_scene(
            "ddif fuse",
            plan,
            lambda: build_station_backend(
                model,
                config,
                backend=args.backend,
                device=args.device,
                steps=args.steps,
                threads=args.threads,
                fast=fast,
            ),
            model,
            ms_path,
            pan_path,
            out,
            log=log,
            progress=progress,
            quicklook_path=quicklook,
            report_path=report_path,
            write_stac=keep,
        )
        if isinstance(outcome, int):
            return outcome
        report = outcome
    if not args.quiet:
        g = plan.grid
        level = f" level {cfg.zlevel}" if cfg.compress in ("deflate", "zstd") else ""
        print(
            f"{out}: {len(plan.product_bands)} bands {g.pan.height} x {g.pan.width} {g.ms.dtype}, "
            f"COG {cfg.compress.upper()}{level} "
            f"{cfg.block_size} px blocks, {report['tiles']['fused']} tiles with {report['backend']['describe']} "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        if keep:
            written = report["outputs"]
            base = out.parent
            also = [str(base / written[k]) for k in ("quicklook", "report", "stac_item") if k in written]
            also += [str(p) for p in stacks]
            print("  with " + ", ".join(also))
        quality = report["quality"].get("mean")
        if quality:
            print("  quality " + json.dumps({k: round(v, 4) for k, v in quality.items()}))
    return 0
