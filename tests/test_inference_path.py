"""The one inference path, end to end with the checkpoint users get (``ddif/assets/landsat_small.pt``:
32 px tiles, 8 px overlap, 2 steps) on real Landsat-8 pixels: a ground-station product equals
``ddif.Fuser``'s output for the same scene within 1 DN, with the PyTorch and the ONNX Runtime
backend, on odd scene sizes and on a scene smaller than one tile."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning", "ignore::PendingDeprecationWarning")

ASSETS = Path(__file__).resolve().parents[1] / "ddif" / "assets"
SHIPPED = ASSETS / "landsat_small.pt"
PAN_WEIGHTS = (0.1, 0.6, 0.3)       # Landsat-8 B2, B3, B4 overlap with the 500-680 nm PAN band


def landsat_pair(folder: Path, pan_h: int, pan_w: int, ratio: int = 4) -> tuple[Path, Path]:
    """An MS + PAN GeoTIFF pair from the shipped real Landsat-8 B2-B4 crop: the MS is the crop
    averaged over ratio x ratio blocks (uint16 DN), the PAN a synthesised band (weighted sum) on
    the full grid, ``pan_h x pan_w`` (sizes that are not multiples of the ratio leave PAN pixels
    the MS does not cover: nodata in the product)."""
    from rasterio.transform import Affine

    with rasterio.open(ASSETS / "landsat8_demo_b2b4.tif") as src:
        truth, transform, crs = src.read().astype(np.float64), src.transform, src.crs
    truth = truth[:, :pan_h, :pan_w]
    mh, mw = pan_h // ratio, pan_w // ratio
    ms = truth[:, :mh * ratio, :mw * ratio].reshape(3, mh, ratio, mw, ratio).mean(axis=(2, 4))
    pan = np.tensordot(np.array(PAN_WEIGHTS), truth, axes=1)[None]
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "s_MS.tif", folder / "s_PAN.tif"
    for path, arr, t in ((paths[0], ms, transform * Affine.scale(ratio)), (paths[1], pan, transform)):
        with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                           dtype="uint16", crs=crs, transform=t, nodata=0) as dst:
            dst.write(np.rint(arr).astype(np.uint16))
    return paths


def fuser_dn(ms: Path, pan: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ddif.Fuser on the whole scene, read by the same ingestion layer (in memory), in DN."""
    import ddif
    from ddif.data.scene import read_scene
    from ddif.models import DDIF

    model = DDIF.load(SHIPPED)
    _, lms, pan_n, valid = read_scene(ms, pan, preset=model.preset)
    fused = ddif.Fuser(model).fuse(torch.from_numpy(lms), torch.from_numpy(pan_n), seed=seed)
    return fused.numpy() * model.config.max_dn, valid


def station_dn(ms: Path, pan: Path, out: Path, backend, **config) -> np.ndarray:
    from ddif.station import StationConfig, run_scene

    run_scene(ms, pan, out, backend, StationConfig(metric_tiles=0, **config))
    with rasterio.open(out) as src:
        return src.read().astype(np.float64)


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    from ddif.runtime import OnnxRuntimeBackend, TorchBackend
    from ddif.export import ensure_onnx

    onnx_path = ensure_onnx(SHIPPED, cache_dir=tmp_path_factory.mktemp("cache"))
    return {"pytorch": TorchBackend(SHIPPED, batch_size=64),
            "onnxruntime": OnnxRuntimeBackend(onnx_path, intra_op_threads=1, batch_size=64)}


@pytest.mark.parametrize("name", ["pytorch", "onnxruntime"])
def test_station_product_equals_fuser_within_one_dn(tmp_path, backends, name):
    """A 101 x 150 PAN (odd sizes; 4 x 6 tiles of 32 px; the last row / 2 columns beyond the MS
    footprint are nodata): every valid product pixel within 1 DN of the Fuser's output."""
    ms, pan = landsat_pair(tmp_path / "in", 101, 150)
    want, valid = fuser_dn(ms, pan, seed=0)
    got = station_dn(ms, pan, tmp_path / "out.tif", backends[name], batch_size=5)
    assert valid.sum() == 100 * 148 and not valid[100:].any() and not valid[:, 148:].any()
    assert (got[:, ~valid] == 0).all()                            # nodata where the MS does not reach
    diff = np.abs(got[:, valid] - np.rint(want[:, valid]))
    assert diff.max() <= 1, (name, diff.max())
    assert float(want[:, valid].std()) > 100                      # a real image, not a constant
    # and the product is a fusion, not the interpolated MS: it follows the PAN's detail
    from ddif.data.scene import read_scene
    from ddif.models import DDIF

    _, lms, _, _ = read_scene(ms, pan, preset=DDIF.load(SHIPPED).preset)
    assert np.abs(got[:, valid] - lms[:, valid] * 32767).mean() > 5


def test_scene_smaller_than_a_tile_is_padded_like_the_fuser(tmp_path, backends):
    """A 20 x 44 PAN (shorter than a 32 px tile on one side): the station reads the 20 rows and
    pads them to the tile exactly as the Fuser pads the whole image."""
    ms, pan = landsat_pair(tmp_path / "in", 20, 44)
    want, valid = fuser_dn(ms, pan, seed=3)
    got = station_dn(ms, pan, tmp_path / "out.tif", backends["onnxruntime"], seed=3)
    assert got.shape == (3, 20, 44) and valid.all()
    assert np.abs(got - np.rint(want)).max() <= 1


def test_seed_changes_the_product_and_tiles_do_not_depend_on_batching(tmp_path, backends):
    ms, pan = landsat_pair(tmp_path / "in", 64, 64)
    a = station_dn(ms, pan, tmp_path / "a.tif", backends["pytorch"], batch_size=1)
    b = station_dn(ms, pan, tmp_path / "b.tif", backends["pytorch"], batch_size=7)
    c = station_dn(ms, pan, tmp_path / "c.tif", backends["pytorch"], seed=1)
    assert np.abs(a - b).max() <= 1
    assert np.abs(a - c).max() >= 1


def test_evaluate_a_geotiff_pair_at_full_resolution(tmp_path, capsys):
    """``ddif evaluate --ms --pan`` reads the pair through the same ingestion layer: D_lambda, D_s
    and HQNR of the shipped checkpoint next to the baselines on real pixels; nodata inside the
    evaluated window is refused (give --crop)."""
    import csv

    from ddif.cli.main import main

    ms, pan = landsat_pair(tmp_path / "in", 64, 64)
    out = tmp_path / "eval"
    assert main(["evaluate", "--ckpt", str(SHIPPED), "--ms", str(ms), "--pan", str(pan), "--baselines", "gsa",
                 "--out-dir", str(out), "--steps", "2"]) == 0
    rows = {r["method"]: r for r in csv.DictReader(open(out / "results_scene.csv"))}
    assert set(rows) == {"EXP (interpolated MS)", "gsa", "DDIF landsat_small.pt (2 steps)"}
    for r in rows.values():
        assert 0 < float(r["HQNR"]) <= 1 and 0 <= float(r["D_lambda"]) < 1
    with rasterio.open(ms, "r+") as dst:                     # a nodata pixel inside
        data = dst.read()
        data[:, 5, 5] = 0
        dst.write(data)
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(SHIPPED), "--ms", str(ms), "--pan", str(pan), "--baselines", "none",
                 "--out-dir", str(out)]) == 2
    assert "nodata inside the MS window" in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(SHIPPED), "--ms", str(ms), "--pan", str(pan), "--baselines", "none",
                 "--out-dir", str(out), "--crop", "8,0,8,16", "--steps", "2"]) == 0


def test_a_set_fused_in_chunks_equals_it_fused_at_once():
    """``ddif sample --batch-size`` fuses a set in chunks: image i's noise is keyed by its index in
    the set (first_image), so the chunking does not change the result."""
    import ddif
    from ddif.models import DDIF

    model = DDIF.load(SHIPPED)
    g = torch.Generator().manual_seed(0)
    lms = torch.rand(5, 3, 40, 36, generator=g) * 0.3 + 0.2
    pan = lms.mean(1, keepdim=True)
    fuser = ddif.Fuser(model, steps=2)
    whole = fuser.fuse(lms, pan, seed=3)
    parts = torch.cat([fuser.fuse(lms[s:s + 2], pan[s:s + 2], seed=3, first_image=s) for s in range(0, 5, 2)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)  # batch composition: float rounding only


def test_tile_preparation_and_blend_groups_do_not_change_the_image(monkeypatch):
    """InferencePath.fuse prepares inputs and noise for groups of sampler batches and blends tile
    rows in groups: with groups of one batch / one tile row the image is bit-identical, and every
    tile cut by _TileLayout.cut is its window of the padded input (an evenly spread, irregular grid
    over two images, runs that wrap across rows and images)."""
    import ddif
    from ddif.inference import engine
    from ddif.models import DDIF

    model = DDIF.load(SHIPPED)
    g = torch.Generator().manual_seed(1)
    lms = torch.rand(2, 3, 97, 83, generator=g) * 0.3 + 0.2
    pan = lms.mean(1, keepdim=True)
    fuser = ddif.Fuser(model, steps=2, batch_size=5)
    default = fuser.fuse(lms, pan, seed=4)
    monkeypatch.setattr(engine, "PREP_PIXELS", 1)
    monkeypatch.setattr(engine, "BLEND_STRIP_BYTES", 1)
    assert torch.equal(fuser.fuse(lms, pan, seed=4), default)

    grid = fuser.inference.tiling.grid(97, 83)
    layout = engine._TileLayout(grid, 2, torch.device("cpu"))
    x = torch.rand(2, 3, grid.height, grid.width, generator=g)
    per_image = grid.shape[0] * grid.shape[1]
    for jobs in (slice(0, layout.jobs), slice(3, 11), slice(per_image - 2, per_image + 3)):
        cut = layout.cut(x, jobs)
        for k, j in enumerate(range(jobs.start, jobs.stop)):
            image, tile = divmod(j, per_image)
            t = grid.tile(tile)
            assert torch.equal(cut[k], x[image, :, t.y : t.y + t.height, t.x : t.x + t.width])
