"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddif.fuser import Fuser
    from ddif.models.ddif import DDIF


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
