"""Helpers for the ground-station tests: synthetic GeoTIFF scenes (CRS, transform, nodata
borders) and a tiny real model (``ddif.runtime.TorchBackend`` over a small random DDIF, the real
sampling path, no mock). Imported by tests/test_station*.py; holds no tests itself."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import condition_matters, tiny_preset

CRS = "EPSG:32632"
ORIGIN = (500000.0, 4200000.0)
PAN_RES = 2.0


def station_preset(bands: int = 8, ratio: int = 4, max_dn: float = 2047.0, steps: int = 1, sensor: str = "wv3"):
    """A model small enough for many 64 x 64 tiles per second on a shared 2-core CPU: four levels
    without self-attention in the encoder (the mid block keeps its global attention)."""
    p = tiny_preset(bands=bands)
    p.name = "station-tiny"
    p.model.max_dn = float(max_dn)
    p.model.base_width = 8
    p.model.channel_mults = (1, 1, 1, 1)
    p.model.attn_resolutions = ()
    p.model.attn_heads = 2
    p.model.fwm_heads = 2
    p.diffusion.sample_steps = steps
    p.data.ratio = ratio
    p.data.sensor = sensor
    p.data.rgb_bands = (4, 2, 1) if bands >= 5 else (2, 1, 0)
    return p


def station_model(preset, seed: int = 0, residual_scale: float = 0.1):
    """Random DDIF whose condition path matters (CSM output conv not zero) and whose predicted
    residual is kept small (final conv scaled), like a trained model's output close to lms."""
    from ddif.models import DDIF

    torch.manual_seed(seed)
    model = condition_matters(DDIF(preset))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("final_conv"):
                p.mul_(residual_scale)
    return model.eval()


def save_station_model(path: Path, **kwargs) -> Path:
    model = station_model(station_preset(**{k: v for k, v in kwargs.items() if k != "seed"}),
                          seed=kwargs.get("seed", 0))
    model.save(path)
    return path


def backend_for(model):
    from ddif.runtime import TorchBackend

    return TorchBackend(model)


def synthetic_scene(folder: Path, name: str = "scene", *, bands: int = 8, ms_size: int | tuple[int, int] = 64,
                    ratio: int = 4, dtype: str = "uint16", nodata: float | None = 0, max_dn: float = 2047.0,
                    border: int = 3, seed: int = 0, pan_origin_shift: tuple[float, float] = (0.0, 0.0),
                    pan_res: float = PAN_RES, ms_res: float | None = None, crs: str | None = CRS,
                    ms_suffix: str = "_MS.tif", pan_suffix: str = "_PAN.tif") -> tuple[Path, Path]:
    """An MS (bands, h, w) + PAN (1, ratio*h, ratio*w) GeoTIFF pair of a smooth scene with sharp
    edges: the MS is the box-averaged high-resolution truth, the PAN its band mean. Nodata
    ``border`` MS pixels on the top and left of the MS and ``ratio * border`` PAN rows at the
    bottom of the PAN (so nodata comes from both inputs)."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    h, w = (ms_size, ms_size) if isinstance(ms_size, int) else ms_size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ratio * h, 0:ratio * w].astype(np.float64)
    yy /= ratio * h
    xx /= ratio * w
    base = 0.45 + 0.2 * np.sin(6 * xx + 3 * yy + seed) + 0.08 * np.cos(17 * xx * yy)
    blocks = (((xx * 9).astype(int) + (yy * 7).astype(int)) % 2) * 0.12
    truth = np.stack([np.clip(base * (0.7 + 0.06 * b) + blocks * (1 - 0.05 * b)
                              + 0.01 * rng.standard_normal(base.shape), 0.02, 0.98) for b in range(bands)])
    ms = truth.reshape(bands, h, ratio, w, ratio).mean(axis=(2, 4))
    pan = truth.mean(axis=0, keepdims=True)

    def to_dn(x):
        v = x * max_dn
        if np.dtype(dtype).kind in "iu":
            v = np.rint(v)
        v = v.astype(dtype)
        if nodata is not None and not np.isnan(nodata):
            v[v == np.dtype(dtype).type(nodata)] += 1
        return v

    ms_dn, pan_dn = to_dn(ms), to_dn(pan)
    if border and nodata is not None:
        ms_dn[:, :border, :] = nodata
        ms_dn[:, :, :border] = nodata
        pan_dn[:, -ratio * border:, :] = nodata
    ms_res = ratio * pan_res if ms_res is None else ms_res
    x0, y0 = ORIGIN
    ms_path, pan_path = folder / f"{name}{ms_suffix}", folder / f"{name}{pan_suffix}"
    for path, arr, res, (dx, dy) in ((ms_path, ms_dn, ms_res, (0.0, 0.0)),
                                     (pan_path, pan_dn, pan_res, pan_origin_shift)):
        with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                           dtype=dtype, crs=crs, transform=from_origin(x0 + dx, y0 - dy, res, res),
                           nodata=nodata) as dst:
            dst.write(arr)
            if path == ms_path:
                for i in range(arr.shape[0]):
                    dst.set_band_description(i + 1, f"B{i + 1}")
    return ms_path, pan_path


def read(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), src.profile, src


def small_config(**overrides):
    from ddif.station import StationConfig

    kw = dict(tile_size=64, overlap=16, batch_size=4, block_size=64, metric_tiles=2, gdal_cache_mb=16)
    kw.update(overrides)
    return StationConfig(**kw)


@functools.lru_cache(maxsize=None)
def shared_backend():
    """One backend per test process (torch's first calls and new shapes cost seconds here)."""
    return backend_for(station_model(station_preset()))


@pytest.fixture(scope="module")
def station_backend():
    return shared_backend()


def journal_tiles(folder: Path) -> int:
    """Tiles journaled in a tile-journal folder (one file per batch of tiles)."""
    import numpy as np

    total = 0
    for p in Path(folder).glob("batch_*.npy"):
        try:
            total += int(np.load(p, mmap_mode="r").shape[0])
        except (OSError, ValueError):
            pass
    return total
