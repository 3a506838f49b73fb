"""``ddif station run`` (one scene) and ``ddif station watch`` (the unattended service).

    ddif station run --ms S_MS.tif --pan S_PAN.tif --model model.pt --out S_fused.tif [--dry-run]
    ddif station watch --inbox IN --outbox OUT --model model.pt [--once] [--log-file station.jsonl]

Every field of :class:`ddif.station.StationConfig` (and, for ``watch``, :class:`WatchConfig`) is
an option: ``--tile-size 256 --overlap 32 --batch-size 4 --seed 0 --compress deflate ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ddif.cli.args import add_dataclass_args, dataclass_from_args
from ddif.cli.common import (
    STATION_BACKENDS,
    FastPath,
    add_fast_path_args,
    build_station_backend,
    fuse_planned_scene,
    resolve_model,
)

if TYPE_CHECKING:
    from ddif.station.config import StationConfig
    from ddif.station.events import EventLog
    from ddif.station.plan import StationBackend

BACKENDS = STATION_BACKENDS

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)

WATCH_DESCRIPTION = """\
Watch INBOX and fuse every complete scene into OUTBOX/<scene>/ (COG product, STAC item, quicklook,
report); OUTBOX/collection.json is the STAC Collection of all products.

A scene is <scene>_MS.tif + <scene>_PAN.tif, taken once <scene>.ready exists or both files kept
their size and mtime over --stable-polls polls; or <scene>.manifest.json = {"ms": ..., "pan": ...}
(written last by the producer; its paths must stay inside the inbox). Scenes are processed in
arrival order; each is claimed with a lock (IN/.<scene>.claim), so several services may share an
inbox. Outputs are staged in OUTBOX/.<scene>.partial/ and renamed into place when complete; a
re-delivered scene is fused again only when its content changed. A per-scene tile journal makes
a restart after kill -9 resume where it stopped (byte-identical product). Bad scenes go to
--quarantine with reason.json; disk-full / permission errors are logged and retried, never
quarantined. Logs are JSON lines on stderr (and --log-file)."""


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="engine checkpoint (.pt), exported .onnx or TensorRT .plan, or a shipped model's name (`ddif models`)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto: fastest available (ddif.export.best_available); or force one",
    )
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: CUDA when available)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    add_fast_path_args(p)
    ray = p.add_argument_group("scale-out on Ray (pip install 'ddif[ray]'; ddif/station/README.md)")
    ray.add_argument("--ray-address", default=None, help="fuse on this Ray cluster: auto or host:port")
    ray.add_argument("--ray-actors", type=int, default=None, help="actors (default: the cluster's CPUs or GPUs)")
    ray.add_argument("--ray-threads", type=int, default=1, help="intra-op threads (and CPUs) per actor (default 1)")
    ray.add_argument("--ray-gpus-per-actor", type=float, default=0.0, help="GPUs per actor (default 0: CPU actors)")


def add_station_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` and ``watch`` sub-commands to ``parser``."""
    from ddif.station.config import StationConfig, WatchConfig

    sub = parser.add_subparsers(dest="station_command", metavar="{run,watch}")
    run = sub.add_parser(
        "run",
        help="fuse one MS + PAN scene into a georeferenced product",
        description="Fuse one MS + PAN GeoTIFF pair into a Cloud-Optimized GeoTIFF on the PAN "
        "grid, its STAC item (<out>.json), a quicklook PNG and a JSON report.",
    )
    run.add_argument("--ms", required=True, help="multispectral GeoTIFF (all bands in one file)")
    run.add_argument("--pan", required=True, help="panchromatic GeoTIFF")
    run.add_argument("--out", required=True, help="output GeoTIFF")
    run.add_argument("--quicklook", default=None, help="quicklook PNG (default: <out>_quicklook.png)")
    run.add_argument("--report", default=None, help="JSON report (default: <out>_report.json)")
    run.add_argument("--journal", default=None, help="tile journal folder (default: .<out>.journal beside --out)")
    run.add_argument("--dry-run", action="store_true", help="check the scene and print the plan; write nothing")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar (default: when stderr is a terminal)",
    )
    _add_backend_args(run)
    add_dataclass_args(run, StationConfig, "fusion and output settings")
    run.set_defaults(_run=cmd_run)

    watch = sub.add_parser(
        "watch",
        help="watch an inbox and fuse every complete scene (unattended)",
        description=WATCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("--inbox", required=True)
    watch.add_argument("--outbox", required=True)
    watch.add_argument("--quarantine", default=None, help="bad scenes (default: <inbox>/quarantine)")
    watch.add_argument("--processed", default=None, help="inputs of finished scenes (default: <inbox>/processed)")
    watch.add_argument("--workdir", default=None, help="tile journals (default: <outbox>/.work)")
    watch.add_argument("--once", action="store_true", help="process what is in the inbox now, then exit")
    watch.add_argument("--log-file", default=None, help="also append the JSON-lines log to this file")
    _add_backend_args(watch)
    add_dataclass_args(watch, StationConfig, "fusion and output settings")
    add_dataclass_args(watch, WatchConfig, "inbox polling")
    watch.set_defaults(_run=cmd_watch)

    def no_sub(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(_run=no_sub)


def add_station_commands(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Register ``ddif station ...`` on the top-level ``ddif`` sub-parsers."""
    p = subparsers.add_parser(
        "station",
        help="ground-station pipeline: GeoTIFF scenes in, fused products out",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_station_arguments(p)


def load_backend(args: argparse.Namespace, config: StationConfig, log: EventLog | None = None) -> StationBackend:
    """The backend named by --backend for --model (:func:`ddif.cli.common.build_station_backend`);
    with --ray-address, that backend built in each actor of a :class:`ddif.station.distributed.RayBackend`."""
    if getattr(args, "ray_address", None):
        import functools

        from ddif.station.distributed import RayBackend

        factory = functools.partial(
            build_station_backend,
            config=config,
            backend=args.backend,
            device=args.device,
            steps=args.steps,
            threads=args.ray_threads,
            fast=FastPath.from_args(args),
        )
        return RayBackend(
            args.model,
            factory,
            address=args.ray_address,
            actors=args.ray_actors,
            threads=args.ray_threads,
            gpus_per_actor=args.ray_gpus_per_actor,
            log=log,
        )
    return build_station_backend(
        args.model, config, backend=args.backend, device=args.device, steps=args.steps, fast=FastPath.from_args(args)
    )


def cmd_run(args: argparse.Namespace) -> int:
    from ddif.export import model_preset
    from ddif.station.config import StationConfig
    from ddif.station.events import EventLog
    from ddif.station.plan import plan_scene

    config = dataclass_from_args(StationConfig, args)  # the settings are checked before the model is looked up
    FastPath.from_args(args).check(args.backend, args.device)
    args.model = str(resolve_model(args.model))
    log = EventLog()
    # the pair is checked against the model (bands, ratio, grids, scale) before any backend is
    # built: a wrong scene is refused in seconds, not after an ONNX export
    preset, _ = model_preset(args.model)
    plan = plan_scene(args.ms, args.pan, preset, config, log=log)
    if args.dry_run:
        print("dry run: nothing written\n" + plan.describe())
        print(
            f"outputs    {args.out}, {args.quicklook or Path(args.out).stem + '_quicklook.png'}, "
            f"{args.report or Path(args.out).stem + '_report.json'}"
        )
        return 0
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    outcome = fuse_planned_scene(
        "ddif station run",
        plan,
        lambda: load_backend(args, config, log),
        args.model,
        args.ms,
        args.pan,
        args.out,
        quicklook_path=args.quicklook,
        report_path=args.report,
        journal_dir=args.journal,
        log=log,
        progress=progress,
    )
    if isinstance(outcome, int):
        return outcome
    report = outcome
    q = report["quality"].get("mean")
    print(
        json.dumps(
            {
                "product": str(Path(args.out)),
                "seconds": report["timing_s"]["total_s"],
                "megapixels_per_s": round(report["throughput"]["megapixels_per_s"], 4),
                "tiles": report["tiles"]["fused"],
                "tiles_from_journal": report["tiles"]["tiles_from_journal"],
                "quality": q,
            },
            default=str,
        )
    )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from ddif.station.config import StationConfig, WatchConfig
    from ddif.station.events import EventLog
    from ddif.station.journal import model_identity
    from ddif.station.watch import StationService

    config = dataclass_from_args(StationConfig, args)
    watch = dataclass_from_args(WatchConfig, args)
    FastPath.from_args(args).check(args.backend, args.device)
    args.model = str(resolve_model(args.model))
    if watch.scenes_in_flight > 1 and not args.ray_address:
        raise ValueError(
            f"--scenes-in-flight {watch.scenes_in_flight} needs --ray-address (scenes at once share a Ray "
            "cluster's actors); one machine fuses one scene at a time"
        )
    log = EventLog(path=args.log_file)
    try:
        backend = load_backend(args, config, log)
    except Exception as exc:
        log.error("service_error", error=f"{type(exc).__name__}: {exc}", stage="load model")
        raise
    service = StationService(
        args.inbox,
        args.outbox,
        backend,
        config,
        watch,
        quarantine_dir=args.quarantine,
        processed_dir=args.processed,
        workdir=args.workdir,
        log=log,
        model_id=model_identity(args.model),
    )
    try:
        failures = service.run(once=args.once)
    except OSError as exc:
        from ddif.station.errors import environment_error_kind

        kind = environment_error_kind(exc)
        if kind is None:
            raise
        # e.g. a read-only or full outbox at start: an environment error, retried by the supervisor
        print(f"ddif station watch: {kind}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """``ddif station run|watch ...`` as a function (argv in, exit code out; also ``python -m ddif station``)."""
    parser = argparse.ArgumentParser(
        prog="ddif station", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_station_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"ddif station: error: {exc}", file=sys.stderr)
        return 2
