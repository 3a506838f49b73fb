"""Fuse images with a checkpoint.

    ddif sample --ckpt run/model_ema.pt --input test.h5 --out fused.h5 --quicklooks ql/
    ddif sample --ckpt model.pt --lms lms.npy --pan pan.npy --out fused.h5      # DN arrays (C,H,W) or (N,C,H,W)
    ddif sample --ckpt model.pt --ms MS.tif --pan PAN.tif --out fused.h5        # small GeoTIFF pair

Output: an .h5 file with dataset ``fused`` (N, C, H, W) float32 in [0, 1] (attribute ``max_dn``
to convert back to digital numbers) and, with --quicklooks, true-colour PNGs. For large scenes
use ``ddif station run`` (tiled, georeferenced output).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ddif.cli.common import add_model_args, add_sampler_args, load_model_from_args, make_fuser


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--input", help=".h5 file in the model's layout (PanCollection or HISR)")
    src.add_argument("--lms", help=".npy of the upsampled MS in digital numbers")
    src.add_argument("--ms", help="MS GeoTIFF (upsampled to the PAN grid with the 23-tap kernel)")
    src.add_argument("--pan", help=".npy or GeoTIFF of the PAN / guide in digital numbers")
    p.add_argument("--out", required=True, help="output .h5")
    p.add_argument("--quicklooks", default=None, help="folder for true-colour PNG quicklooks")
    p.add_argument("--limit", type=int, default=None, help="fuse only the first N images of --input")
    add_sampler_args(p)


def _read_inputs(args, model):
    import numpy as np
    import torch

    cfg = model.config
    if args.input:
        from ddif.cli.train import open_dataset

        ds = open_dataset(args.input, model.preset, train=False)
        n = len(ds) if args.limit is None else min(args.limit, len(ds))
        items = [ds[i] for i in range(n)]
        return torch.stack([it["lms"] for it in items]), torch.stack([it["pan"] for it in items])
    if args.lms and args.pan:
        lms, pan = (torch.from_numpy(np.load(path).astype(np.float32)) / cfg.max_dn for path in (args.lms, args.pan))
        if pan.dim() == lms.dim() - 1:
            pan = pan.unsqueeze(-3)
        return lms, pan
    if args.ms and args.pan:
        from ddif.data.geotiff import read_geotiff
        from ddif.data.mtf import upsample

        ms, pan = read_geotiff(args.ms), read_geotiff(args.pan)
        ratio = model.preset.data.ratio
        ms_t = torch.from_numpy(ms.array.astype(np.float32))[None] / cfg.max_dn
        pan_t = torch.from_numpy(pan.array.astype(np.float32))[None] / cfg.max_dn
        # as `ddif make-dataset` builds lms for training (23-tap kernel, symmetric boundaries)
        method = "interp23tap" if ratio & (ratio - 1) == 0 else "bicubic"
        lms = upsample(ms_t, ratio, method=method, padding="symmetric")
        if lms.shape[-2:] != pan_t.shape[-2:]:
            raise ValueError(f"MS ({ms.array.shape[-2]}x{ms.array.shape[-1]}) x ratio {ratio} does not match "
                             f"PAN ({pan.array.shape[-2]}x{pan.array.shape[-1]})")
        return lms, pan_t
    raise ValueError("give --input, or --lms and --pan, or --ms and --pan")


def run(args) -> int:
    import h5py
    from tqdm.auto import tqdm

    from ddif.utils.io import atomic_path
    from ddif.utils.quicklook import save_quicklook

    model = load_model_from_args(args)
    fuser = make_fuser(model, args)
    lms, pan = _read_inputs(args, model)
    if lms.dim() == 3:
        lms, pan = lms[None], pan[None]
    outputs = []
    for start in tqdm(range(0, lms.shape[0], args.batch_size), desc="fuse", unit="batch"):
        sl = slice(start, start + args.batch_size)
        outputs.append(fuser.fuse(lms[sl], pan[sl], seed=args.seed + start))
    import torch

    fused = torch.cat(outputs).float().numpy()
    with atomic_path(args.out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("fused", data=fused, chunks=(1,) + fused.shape[1:], compression="gzip")
            f.attrs["max_dn"] = model.config.max_dn
            f.attrs["steps"] = fuser.steps
            f.attrs["sampler"] = type(fuser.scheduler).__name__
    print(f"wrote {fused.shape[0]} fused images ({fused.shape[1]} bands, {fused.shape[2]}x{fused.shape[3]}) to {args.out}")
    if args.quicklooks:
        folder = Path(args.quicklooks)
        rgb = model.preset.data.rgb_bands
        for i, img in enumerate(fused):
            save_quicklook(img, folder / f"fused_{i:04d}.png", rgb)
            save_quicklook(lms[i], folder / f"lms_{i:04d}.png", rgb)
        print(f"quicklooks in {folder}")
    return 0
