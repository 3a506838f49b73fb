"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ddif.fuser import Fuser
    from ddif.inference.selection import BandMatch
    from ddif.models.ddif import DDIF
    from ddif.runtime.backends import RuntimeBackend
    from ddif.station.config import StationConfig
    from ddif.station.plan import ScenePlan
    from ddif.station.run import StationBackend

# what --backend of the station commands and ``ddif fuse`` accepts
STATION_BACKENDS = ("auto", "tensorrt", "onnxruntime", "pytorch")  # "auto" + ddif.export.auto.BACKENDS
ASSETS = Path(__file__).resolve().parents[1] / "assets"  # checkpoints shipped with ddif
SHIPPED_MODEL = ASSETS / "landsat_small.pt"  # the checkpoint ``ddif demo`` and ``ddif fuse`` use by default


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", default=None, choices=["ddim", "ddpm"], help="default: the checkpoint's config")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's config)")
    g.add_argument("--eta", type=float, default=None, help="DDIM eta (0 = deterministic)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=8, help="images per network batch")
    g.add_argument("--device", default="auto")
    g.add_argument("--fused-kernels", action="store_true", help="use the fused kernels where they are live")
    add_fast_path_args(p)
    g.add_argument(
        "--legacy-published-sampler",
        action="store_true",
        help="reproduce the published sampling loop (step index as timestep, no self-conditioning)",
    )


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--ckpt",
        required=required,
        help="engine checkpoint (.pt from ddif train / DDIF.save), a "
        "training state, or a published-layout state dict (then --preset is needed)",
    )
    p.add_argument("--preset", default=None, help="preset of a published-layout checkpoint")


def load_model_from_args(args: argparse.Namespace) -> DDIF:
    from ddif.models import load_model

    return load_model(args.ckpt, args.preset)


def make_fuser(model: DDIF, args: argparse.Namespace) -> Fuser:
    from ddif.fuser import Fuser
    from ddif.training.trainer import resolve_device

    device = resolve_device(args.device)
    if args.fused_kernels:
        enable_fused_kernels(model)
    fast = FastPath.from_args(args)
    fast.check("pytorch", str(device))
    return Fuser(
        model,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        batch_size=args.batch_size,
        device=device,
        legacy_published_sampler=args.legacy_published_sampler,
        **fast.kwargs(),
    )


def enable_fused_kernels(model: DDIF) -> None:
    """Switch the fused kernels on, saying which backends are live (off where none is)."""
    from ddif.kernels import available

    status = available()
    live = [k for k, v in status.items() if v is True]
    if not live:
        reasons = "; ".join(f"{k}: {v}" for k, v in status.items()) or "no fused backend is built"
        print(f"--fused-kernels: no fused backend is live here ({reasons}); using the reference ops")
        return
    print(f"--fused-kernels: live backends {live}")
    model.set_fused_kernels(True)


def resolve_model(name: str | os.PathLike | None) -> Path:
    """A model file from a path (checkpoint .pt, .onnx, .plan, or a model card) or the name of a
    model shipped with ddif (``ddif models``; :func:`ddif.models.cards.resolve_model`); None: the
    shipped demo checkpoint."""
    from ddif.models.cards import resolve_model as resolve

    if name is None:
        return SHIPPED_MODEL
    return resolve(name)[0]


@dataclass
class FastPath:
    """The PyTorch fast-path switches of the command line (``--amp``, ``--compile``,
    ``--cuda-graphs``, ``--channels-last``), as :class:`ddif.Fuser` / ``TorchBackend`` take them."""

    amp: str | None = None  # "bf16" | "fp16"
    compile: bool = False
    cuda_graphs: bool = False
    channels_last: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FastPath:
        return cls(
            getattr(args, "amp_inference", None),
            bool(getattr(args, "compile", False)),
            bool(getattr(args, "cuda_graphs", False)),
            bool(getattr(args, "channels_last", False)),
        )

    @property
    def any(self) -> bool:
        return bool(self.amp or self.compile or self.cuda_graphs or self.channels_last)

    def flags(self) -> list[str]:
        out = [f"--amp {self.amp}"] if self.amp else []
        out += [
            f
            for f, on in (
                ("--compile", self.compile),
                ("--cuda-graphs", self.cuda_graphs),
                ("--channels-last", self.channels_last),
            )
            if on
        ]
        return out

    def kwargs(self) -> dict[str, Any]:
        return {
            "amp": self.amp,
            "compile": self.compile,
            "cuda_graphs": self.cuda_graphs,
            "channels_last": self.channels_last,
        }

    def check(self, backend: str, device: str | None) -> None:
        """ValueError (one line) where a switch cannot apply: any of them with a backend other
        than PyTorch (the ONNX / TensorRT graphs are built as they are), ``--cuda-graphs`` and
        ``--amp fp16`` without a CUDA device."""
        if not self.any:
            return
        if backend not in ("auto", "pytorch"):
            raise ValueError(
                f"{' '.join(self.flags())}: PyTorch fast-path switches, they do not apply to the {backend} backend "
                "(use --backend pytorch, or leave them out)"
            )
        import torch

        cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if self.cuda_graphs and not cuda:
            raise ValueError("--cuda-graphs captures the sampler on a CUDA device; none is in use here")
        if self.amp == "fp16" and not cuda:
            raise ValueError("--amp fp16 needs a CUDA device (on a CPU use --amp bf16)")


def add_fast_path_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("PyTorch fast path (the pytorch backend; results within the tested tolerances)")
    g.add_argument(
        "--amp",
        dest="amp_inference",
        choices=["bf16", "fp16"],
        default=None,
        help="autocast the network (fp32 accumulation); fp16 needs CUDA",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the network (weights frozen)")
    g.add_argument("--cuda-graphs", action="store_true", help="capture the fixed-step sampler per tile batch (CUDA)")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format (for GPUs)")


def build_station_backend(
    model: str | os.PathLike,
    config: StationConfig,
    *,
    backend: str = "auto",
    device: str | None = None,
    steps: int | None = None,
    threads: int | None = None,
    fast: FastPath | None = None,
) -> RuntimeBackend:
    """The station backend for ``model``: ``backend`` "auto" (``ddif.export.best_available``: the
    fastest that works here) or a name of the backend registry (``ddif.export.auto.BACKENDS``:
    "tensorrt", "onnxruntime", "pytorch"; a checkpoint is exported once into the export cache),
    sampling the tiles the station cuts (``config.tiling_for``: the model's own unless
    overridden). ``threads``: intra-op threads of PyTorch / ONNX Runtime (default: theirs). Shared
    by ``ddif station run|watch`` and ``ddif fuse``."""
    import ddif.export as export
    from ddif.export.auto import backend_options, build_backend

    if backend not in STATION_BACKENDS:
        raise ValueError(f"backend must be one of {STATION_BACKENDS}, got {backend!r}")
    fast = fast or FastPath()
    fast.check(backend, device)
    if fast.any:
        backend = "pytorch"  # the switches are PyTorch's: "auto" honours them
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(int(threads))
    path = Path(model)
    preset, _ = export.model_preset(path)
    tiling = config.tiling_for(preset)
    # the station hands the backend its batches (the journal's unit); the backend cuts them into
    # calls of its own size (its device's default) unless a batch size was given
    tiles = {"tile_size": tiling.tile_size, "tile_overlap": tiling.overlap, "batch_size": config.batch_size}
    if backend == "auto":
        return export.best_available(path, device=device, steps=steps, ort_threads=threads, **tiles)
    opts = backend_options(device, steps=steps, threads=threads, fast=fast.kwargs(), **tiles)
    return build_backend(backend, path, opts)


def fuse_planned_scene(
    command: str,
    plan: ScenePlan,
    make_backend: Callable[[], StationBackend],
    model: str | os.PathLike,
    ms_path: str | os.PathLike,
    pan_path: str | os.PathLike,
    out: str | os.PathLike,
    **run_kwargs: Any,
) -> dict[str, Any] | int:
    """The one single-scene job of ``ddif fuse`` and ``ddif station run``, after the scene was
    planned (checked against the model): build the backend, then
    :func:`ddif.station.run.run_scene` with that plan. Returns the report, or exit status 3 after
    one line on stderr when the environment failed (disk full, read-only cache, permissions):
    while building the backend (nothing fused) or while fusing (nothing written under the output
    names; the tile journal stays, so the same command resumes)."""
    from ddif.station.errors import environment_error_kind
    from ddif.station.journal import model_identity
    from ddif.station.run import run_scene

    try:
        backend = make_backend()
    except Exception as exc:
        kind = environment_error_kind(exc)
        if kind is None:
            raise
        print(
            f"{command}: {kind}: {type(exc).__name__}: {exc} (while preparing the backend, before any pixel was "
            "fused: an ONNX export goes to the export cache, ~/.cache/ddif or $DDIF_CACHE_DIR, which must be "
            "writable)",
            file=sys.stderr,
        )
        return 3
    try:
        return run_scene(
            ms_path, pan_path, out, backend, plan.config, plan=plan, model_id=model_identity(str(model)), **run_kwargs
        )
    except Exception as exc:
        kind = environment_error_kind(exc)
        if kind is None:
            raise
        print(
            f"{command}: {kind}: {type(exc).__name__}: {exc} (no product written; run the same command again to "
            "resume from the tile journal)",
            file=sys.stderr,
        )
        return 3


@contextlib.contextmanager
def band_stacks(
    ms: list[Path], pan: Path, out: Path, keep: bool, order: tuple[int, ...] | None = None
) -> Iterator[tuple[Path, Path, list[Path]]]:
    """(MS, PAN, stacks) as the station reads them: a single plain raster as is; several MS files,
    or a VRT (whose sources the tile journal's file identity would not see), through a band-stack
    VRT beside the output (OUT_MS.vrt / OUT_PAN.vrt, rewritten only when a source changed, so a
    rerun resumes from the tile journal). After a success the stacks are kept unless ``keep`` is
    False; after a failure a stack this run created is removed unless a tile journal remains."""
    from ddif.data.raster import is_vrt, write_band_stack
    from ddif.station.run import default_journal_dir

    stacks: list[Path] = []
    created: list[Path] = []

    def stacked(paths: list[Path], what: str, bands: list[int] | None = None) -> Path:
        if len(paths) == 1 and not is_vrt(paths[0]) and bands is None:
            return paths[0]
        vrt = out.with_name(f"{out.stem}_{what}.vrt")
        if vrt.resolve() in {p.resolve() for p in paths}:
            raise ValueError(f"{what} {vrt}: is the band stack ddif fuse writes for {out}; give another output name")
        if not vrt.exists():
            created.append(vrt)
        stacks.append(write_band_stack(paths, vrt, what, bands))
        return vrt

    # the model's band order (ddif.inference.selection): per-band files reordered, or a multi-band
    # file's bands taken through the stack
    select: list[int] | None = None
    if order is not None:
        if len(ms) > 1:
            ms = [ms[i] for i in order]
        else:
            select = [i + 1 for i in order]

    ok = False
    try:
        yield stacked(ms, "MS", select), stacked([pan], "PAN"), stacks
        ok = True
    finally:
        if ok:
            remove = [] if keep else stacks
        else:
            remove = [] if default_journal_dir(out).exists() else created
        for vrt in remove:
            vrt.unlink(missing_ok=True)


def pick_model(name: str | None, ms: Sequence[Path], pan: Path, quiet: bool = False) -> tuple[Path, BandMatch | None]:
    """The model file to fuse with and how the delivered bands map onto it: ``name`` (a path or a
    shipped model's name; its card, when it has one, checked against the inputs) or, without a
    name, the one shipped model that fits (:func:`ddif.inference.selection.choose_model`).
    Says what it chose and what it did with the bands on stderr (unless ``quiet``)."""
    from ddif.inference.selection import check_card, choose_model
    from ddif.models.cards import resolve_model

    if name is None:
        chosen = choose_model(ms, pan)
        if not quiet:
            print(f"ddif: {chosen.reason}", file=sys.stderr)
        match: BandMatch | None = chosen.match
        path = chosen.checkpoint
    else:
        path, card = resolve_model(name)
        match = check_card(card, ms, pan) if card is not None else None
    if match is not None and match.note and not quiet:
        print(f"ddif: {match.note}", file=sys.stderr)
    return path, match
