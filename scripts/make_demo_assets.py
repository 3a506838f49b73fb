"""Rebuild the real imagery shipped for `ddif demo` and the tests (ddif/assets/).

- ``landsat8_oli_demo_{MS,PAN,BQA}.tif``: the real PAN + MS pair of `ddif demo`. Rows 470-601,
  columns 0-191 of the 30 m grid of the Landsat-8 OLI L1T scene LC80200392015216LGN00 (B2, B3, B4
  as one 3-band GeoTIFF with band descriptions; the real 15 m B8 PAN over the same ground, with
  its half-pixel offset; the BQA), public domain (USGS), from ../shared/data/landsat8-oli-pan-scene.
  It lies in the strip the shipped `landsat8` model holds out (columns 0-191), so it never saw it.
- ``landsat8_demo_b2b4.tif``: a 256 x 256 crop (rows 800-1055, columns 0-255) of LC08_L1TP_224078
  B2-B4 (the semi-synthetic model's held-out strip), kept for the tests.

    python scripts/make_demo_assets.py ../shared/data
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window, from_bounds

ASSETS = Path(__file__).resolve().parents[1] / "ddif" / "assets"
OLI_WINDOW = Window(0, 470, 192, 132)  # col, row, width, height on the 30 m grid


def write(path: Path, data: np.ndarray, profile: dict, descriptions=None) -> None:
    profile = {**profile, "count": data.shape[0], "compress": "deflate", "predictor": 2, "tiled": False}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for k, d in enumerate(descriptions or ()):
            dst.set_band_description(k + 1, d)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {data.shape})")


def oli_demo(shared: Path) -> None:
    src = shared / "landsat8-oli-pan-scene"
    bands = []
    with rasterio.open(src / "l8_B2.tif") as ref:
        profile = ref.profile
        transform = ref.window_transform(OLI_WINDOW)
        bounds = rasterio.windows.bounds(OLI_WINDOW, ref.transform)
    for b in ("B2", "B3", "B4"):
        with rasterio.open(src / f"l8_{b}.tif") as ds:
            bands.append(ds.read(1, window=OLI_WINDOW))
    ms_profile = {**profile, "width": OLI_WINDOW.width, "height": OLI_WINDOW.height, "transform": transform}
    write(ASSETS / "landsat8_oli_demo_MS.tif", np.stack(bands), ms_profile, ["B2", "B3", "B4"])
    with rasterio.open(src / "l8_BQA.tif") as ds:
        write(ASSETS / "landsat8_oli_demo_BQA.tif", ds.read(window=OLI_WINDOW), ms_profile)
    with rasterio.open(src / "l8_B8.tif") as ds:
        w = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
        w = Window(w.col_off, w.row_off, w.width + 1, w.height + 1)  # the PAN grid reaches half a pixel beyond
        pan = ds.read(window=w)
        pan_profile = {**ds.profile, "width": w.width, "height": w.height, "transform": ds.window_transform(w)}
    write(ASSETS / "landsat8_oli_demo_PAN.tif", pan, pan_profile)


def rgb_crop(shared: Path) -> None:
    from ddif.data.raster import read_raster, write_raster

    scene = shared / "landsat8-scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    raster = read_raster(scene, window=(800, 0, 256, 256))
    if raster.fill_mask([0]).any():
        raise SystemExit("the crop contains fill pixels")
    out = ASSETS / "landsat8_demo_b2b4.tif"
    write_raster(out, raster.array, crs=raster.info.crs, transform=raster.info.transform, compress="deflate")
    print(f"wrote {out}")


if __name__ == "__main__":
    shared = Path(sys.argv[1])
    oli_demo(shared)
    if "--rgb" in sys.argv:
        rgb_crop(shared)
