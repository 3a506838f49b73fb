"""Fuse images with a checkpoint.

    ddif sample --ckpt run/model_ema.pt --input test.h5 --out fused.h5 --quicklooks ql/
    ddif sample --ckpt model.pt --lms lms.npy --pan pan.npy --out fused.h5      # DN arrays (C,H,W) or (N,C,H,W)
    ddif sample --ckpt model.pt --ms MS.tif --pan PAN.tif --out fused.h5        # small GeoTIFF pair

Output: an .h5 file with dataset ``fused`` (N, C, H, W) float32 in [0, 1] (attribute ``max_dn``
to convert back to digital numbers) and, with --quicklooks, true-colour PNGs. A GeoTIFF pair is
read by the same ingestion layer as ``ddif station`` and ``make-dataset`` (CRS / ratio / overlap
checks, MS-to-PAN placement, nodata, scale check): the output lies on the PAN grid, with a
``valid`` mask and the PAN's CRS / transform as attributes. For large scenes use
``ddif station run`` (read by windows, georeferenced GeoTIFF output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddif.cli.args import input_scale
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
    p.add_argument(
        "--input-scale",
        type=input_scale,
        default=None,
        help="DN = input value x this (e.g. 10000 for reflectance in [0, 1]); without it, inputs whose "
        "dtype or range does not fit the model's max DN are refused",
    )
    p.add_argument(
        "--input-nodata",
        type=float,
        default=None,
        help="nodata value of GeoTIFF inputs that carry no nodata tag (e.g. 0)",
    )
    add_sampler_args(p)


def _read_inputs(args, model):
    """(lms, pan, extra): normalised float tensors and, for a GeoTIFF pair, the PAN grid."""
    import numpy as np
    import torch

    cfg = model.config
    if args.input:
        from ddif.cli.train import open_dataset

        ds = open_dataset(args.input, model.preset, train=False)
        n = len(ds) if args.limit is None else min(args.limit, len(ds))
        items = [ds[i] for i in range(n)]
        return torch.stack([it["lms"] for it in items]), torch.stack([it["pan"] for it in items]), {}
    if args.lms and args.pan:
        from ddif.data.scene import array_stats, check_scale

        scale = 1.0 if args.input_scale is None else args.input_scale
        arrays = []
        for what, path in (("lms", args.lms), ("pan", args.pan)):
            arr = np.load(path)
            check_scale(
                what,
                path,
                array_stats(arr, cfg.max_dn, scale),
                cfg.max_dn,
                args.input_scale,
                warn=lambda msg: print(f"warning: {msg}"),
            )
            arrays.append(torch.from_numpy(arr.astype(np.float32) * np.float32(scale)) / cfg.max_dn)
        lms, pan = arrays
        if pan.dim() == lms.dim() - 1:
            pan = pan.unsqueeze(-3)
        return lms, pan, {}
    if args.ms and args.pan:
        from ddif.data.scene import read_scene

        grid, lms, pan, valid = read_scene(
            args.ms,
            args.pan,
            preset=model.preset,
            input_scale=args.input_scale,
            input_nodata=args.input_nodata,
            warn=lambda msg: print(f"warning: {msg}"),
        )
        extra = {
            "valid": valid,
            "crs": grid.pan.crs.to_wkt() if grid.pan.crs else "",
            "transform": tuple(grid.pan.transform)[:6],
            **grid.describe_placement(),
        }
        return torch.from_numpy(lms)[None], torch.from_numpy(pan)[None], extra
    raise ValueError("give --input, or --lms and --pan, or --ms and --pan")


def run(args: argparse.Namespace) -> int:
    import h5py
    from tqdm.auto import tqdm

    from ddif.utils.io import atomic_path
    from ddif.utils.quicklook import save_quicklook

    model = load_model_from_args(args)
    fuser = make_fuser(model, args)
    lms, pan, extra = _read_inputs(args, model)
    if lms.dim() == 3:
        lms, pan = lms[None], pan[None]
    outputs = []
    for start in tqdm(range(0, lms.shape[0], args.batch_size), desc="fuse", unit="batch"):
        sl = slice(start, start + args.batch_size)
        # image i's noise comes from (seed, i, tile) whatever the batch size
        outputs.append(fuser.fuse(lms[sl], pan[sl], seed=args.seed, first_image=start))
    import torch

    fused = torch.cat(outputs).float().numpy()
    valid = extra.pop("valid", None)
    if valid is not None:
        fused[:, :, ~valid] = 0.0  # no data where the PAN or the MS under it is nodata
    with atomic_path(args.out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("fused", data=fused, chunks=(1,) + fused.shape[1:], compression="gzip")
            if valid is not None:
                f.create_dataset("valid", data=valid[None], compression="gzip")
            f.attrs["max_dn"] = model.config.max_dn
            f.attrs["steps"] = fuser.steps
            f.attrs["sampler"] = type(fuser.scheduler).__name__
            f.attrs["tiling"] = fuser.tiling.describe()
            for key, value in extra.items():
                f.attrs[key] = value
    print(
        f"wrote {fused.shape[0]} fused images ({fused.shape[1]} bands, {fused.shape[2]}x{fused.shape[3]}) to {args.out}"
    )
    if args.quicklooks:
        folder = Path(args.quicklooks)
        rgb = model.preset.data.rgb_bands
        for i, img in enumerate(fused):
            save_quicklook(img, folder / f"fused_{i:04d}.png", rgb)
            save_quicklook(lms[i], folder / f"lms_{i:04d}.png", rgb)
        print(f"quicklooks in {folder}")
    return 0
