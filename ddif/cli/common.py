"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddif.fuser import Fuser
    from ddif.models.ddif import DDIF
    from ddif.runtime.backends import FuserBackend
    from ddif.station.config import StationConfig

# what --backend of the station commands and ``ddif fuse`` accepts
STATION_BACKENDS = ("auto", "pytorch", "onnxruntime")
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
    return Fuser(
        model,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        batch_size=args.batch_size,
        device=device,
        legacy_published_sampler=args.legacy_published_sampler,
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


def build_station_backend(
    model: str | os.PathLike,
    config: StationConfig,
    *,
    backend: str = "auto",
    device: str | None = None,
    steps: int | None = None,
    threads: int | None = None,
) -> FuserBackend:
    """The station backend for ``model``: ``backend`` "auto" (``ddif.export.best_available``: the
    fastest that works here), "pytorch" or "onnxruntime" (a checkpoint is exported once into the
    export cache), sampling the tiles the station cuts (``config.tiling_for``: the model's own
    unless overridden). ``threads``: intra-op threads of PyTorch / ONNX Runtime (default: theirs).
    Shared by ``ddif station run|watch`` and ``ddif fuse``."""
    import ddif.export as export
    import ddif.runtime as runtime
    from ddif.data.raster import Preprocessing

    if backend not in STATION_BACKENDS:
        raise ValueError(f"backend must be one of {STATION_BACKENDS}, got {backend!r}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(int(threads))
    path = Path(model)
    preset, _ = export.model_preset(path)
    tiling = config.tiling_for(preset)
    pre = Preprocessing.for_preset(
        preset, interpolation=config.interpolation, padding=config.padding, fill_iterations=config.fill_iterations
    )
    batch = config.resolved(tiling, pre).batch_size
    tiles = {"tile_overlap": tiling.overlap, "batch_size": batch}
    if backend == "auto":
        return export.best_available(
            path, device=device, steps=steps, tile_size=tiling.tile_size, ort_threads=threads, **tiles
        )
    if backend == "pytorch":
        return runtime.TorchFuser(path, steps=steps, device=device, tile_size=tiling.tile_size, **tiles)
    if path.suffix.lower() != ".onnx":
        path = export.ensure_onnx(path, steps=steps, tile_size=tiling.tile_size)
    built = runtime.OnnxRuntimeFuser(path, device=device, steps=steps, intra_op_threads=threads, **tiles)
    if built.tiling.tile_size != tiling.tile_size:
        raise ValueError(
            f"{path} samples {built.tiling.describe()}, the station is set to {tiling.tile_size} px "
            "tiles: export it again with --tile-size, or leave --tile-size unset"
        )
    return built
