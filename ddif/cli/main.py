"""``ddif`` command line: one sub-command per job; options generated from the dataclass configs."""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, help); each module has add_arguments(parser) and run(args) -> int
COMMANDS = {
    "info": ("ddif.cli.info", "presets, parameter counts, live kernel backends"),
    "demo": ("ddif.cli.demo", "fuse a real Landsat-8 scene shipped with ddif and compare with classical methods"),
    "train": ("ddif.cli.train", "train a DDIF model on PanCollection / HISR .h5 files"),
    "fuse": ("ddif.cli.fuse", "pansharpen MS + PAN rasters into a Cloud-Optimized GeoTIFF (one-shot)"),
    "models": ("ddif.cli.models", "the models shipped with ddif and their cards"),
    "adapt": ("ddif.cli.adapt", "fine-tune a model on one scene's reduced-resolution version (scene adaptation)"),
    "sample": ("ddif.cli.sample", "fuse an .h5 file, .npy pair or GeoTIFF pair with a checkpoint"),
    "evaluate": ("ddif.cli.evaluate", "metrics table of a checkpoint next to classical baselines"),
    "make-dataset": ("ddif.cli.make_dataset", "build train/val .h5 patch files from a real MS + PAN pair"),
    "distill": ("ddif.cli.distill", "progressive distillation of a sampler into fewer steps"),
}


class _Parser(argparse.ArgumentParser):
    """Bad arguments are an expected refusal too: one line ``ddif <command>: error: ...`` (and
    where to find the usage), exit code 2. Sub-command parsers inherit the class."""

    def error(self, message: str):
        words = self.prog.split()
        self.exit(2, f"{' '.join(words[:2])}: error: {message} (see '{self.prog} --help')\n")


def _expected_refusal(exc: BaseException) -> bool:
    """Bad input or a refusal the user can act on (a missing file, a lock held by another
    service): printed as one line. Anything else is a bug and keeps its traceback."""
    from ddif.station.errors import Refused

    return isinstance(exc, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, Refused))


def build_parser() -> argparse.ArgumentParser:
    from ddif import __version__

    parser = _Parser(prog="ddif", description="Diffusion-based image fusion (DDIF) engine.")
    parser.add_argument("--version", action="version", version=f"ddif {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a command whose module is not there yet is simply absent
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    try:
        from ddif.cli.station import add_station_commands
    except ImportError:
        pass
    else:
        add_station_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is an expected refusal
        if not _expected_refusal(exc):
            raise
        # bad input or a refusal: one clear line, not a traceback
        print(f"ddif {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
