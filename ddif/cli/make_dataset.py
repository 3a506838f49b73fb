"""Build train / val / test .h5 patch files from a real MS + PAN pair (Wald protocol).

    ddif make-dataset --ms MS.tif --pan PAN.tif --ratio 4 --sensor wv3 --out-dir data/ --name scene
    ddif make-dataset --ms RGB.tif --pan-weights 0.1,0.6,0.3 --nodata 0 ...   # semi-synthetic PAN

Validation and test data come from spatial regions never seen in training (see --holdout-side,
--val-fraction, --test-size). A PAN synthesised from the MS bands is a semi-synthetic stand-in,
and the files say so.

When the defaults do not fit a scene (a small one, a PAN at another ratio, no PAN band) the error
names the options to change and values that work on that scene (e.g. ``--ratio 2``,
``--pan-weights 0,0.2963,0.2222,0.4815,0,0`` for a 6-band Landsat-7 ETM+ stack, or
``--val-fraction 0.3 --test-size 128``), checked against the scene before it is printed.
"""

from __future__ import annotations

import argparse
import json

from ddif.cli.args import add_dataclass_args, dataclass_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ddif.data.make_dataset import MakeDatasetConfig

    add_dataclass_args(p, MakeDatasetConfig, "dataset")


def run(args: argparse.Namespace) -> int:
    from ddif.data.make_dataset import MakeDatasetConfig, make_dataset

    cfg = dataclass_from_args(MakeDatasetConfig, args)
    if not cfg.ms:
        raise ValueError("--ms is required (MS GeoTIFF, per-band GeoTIFFs or .npy)")
    summary = make_dataset(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0
