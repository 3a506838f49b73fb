"""Print the presets (bands, guide, max DN, parameters), the live kernel backends and the device."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="print this preset's full configuration as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from ddif.config import get_preset, preset_names
    from ddif.kernels import available
    from ddif.models import DDIF

    if args.preset:
        print(get_preset(args.preset).to_json())
        return 0
    print("| preset | bands | guide | detail order | max DN | parameters |")
    print("|---|---|---|---|---|---|")
    for name in preset_names():
        p = get_preset(name)
        with torch.device("meta"):
            n = DDIF(p).num_parameters()
        m = p.model
        print(f"| {name} | {m.bands} | {m.guide_bands} | {m.detail_order} | {m.max_dn:g} | {n:,} |")
    print()
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for backend, status in available().items():
        print(f"kernel backend {backend}: {'live' if status is True else status}")
    return 0
