"""The models users get, on the paths users take: for every shipped real-sensor model, every
backend equals ddif.Fuser (ONNX Runtime within 1e-4), and ``ddif fuse`` on a real pair, without
--model, picks the model and writes a product equal to the Fuser's output within 1 DN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::PendingDeprecationWarning")

ASSETS = Path(__file__).resolve().parents[1] / "ddif" / "assets"
REAL_MODELS = ["landsat8", "worldview2", "sentinel2"]


def _inputs(name: str, model):
    """Realistic network inputs for the model: its own DN range, PAN mostly the MS bands' mean."""
    g = torch.Generator().manual_seed(1)
    b = model.config.bands
    base = torch.rand(2, b, 70, 53, generator=g)
    base = torch.nn.functional.avg_pool2d(base, 5, 1, 2)
    lo, hi = (0.1, 0.35) if name.startswith("landsat") else (0.03, 0.4) if name == "sentinel2" else (0.05, 0.6)
    lms = lo + (hi - lo) * base
    p = model.config.guide_bands
    if p == 1:
        guide = lms.mean(1, keepdim=True)
    else:  # a multi-band guide (Sentinel-2's 10 m bands): each a mixture of the bands
        mix = torch.rand(p, b, generator=g)
        guide = torch.einsum("pb,nbhw->nphw", mix / mix.sum(1, keepdim=True), lms)
    pan = guide + 0.02 * torch.randn(2, p, 70, 53, generator=g)
    return lms, pan.clamp(0, 1)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_every_backend_equals_the_fuser(tmp_path, name):
    import ddif
    from ddif.export import best_available
    from ddif.models import DDIF
    from ddif.models.cards import resolve_model
    from ddif.runtime import OnnxRuntimeBackend, TorchBackend

    path, card = resolve_model(name)
    model = DDIF.load(path)
    reference = ddif.Fuser(model)
    assert reference.steps == card.default_steps and model.preset.diffusion.residual_mean == "zero"
    lms, pan = _inputs(name, model)
    want = reference.fuse(lms, pan, seed=5)
    ort = best_available(path, device="cpu", cache_dir=tmp_path / "cache", ort_threads=1)
    assert isinstance(ort, OnnxRuntimeBackend) and ort.steps == card.default_steps
    for backend in (ort, TorchBackend(path)):
        got = backend.fuse(lms, pan, seed=5)
        assert float((got - want).abs().max()) <= 1e-4, backend.name
    assert float((want - lms).abs().mean()) * model.config.max_dn > 1  # a fusion, not the interpolated MS


def test_ddif_fuse_picks_landsat8_for_the_real_pair_and_equals_the_fuser(tmp_path, capsys):
    import ddif
    from ddif.cli.main import main
    from ddif.data.scene import read_scene
    from ddif.models import DDIF
    from ddif.models.cards import resolve_model

    ms, pan = ASSETS / "landsat8_oli_demo_MS.tif", ASSETS / "landsat8_oli_demo_PAN.tif"
    out = tmp_path / "fused.tif"
    assert main(["fuse", str(ms), str(pan), str(out), "--backend", "pytorch"]) == 0
    assert "model landsat8" in capsys.readouterr().err
    model = DDIF.load(resolve_model("landsat8")[0])
    _, lms, pan_n, valid = read_scene(ms, pan, preset=model.preset)
    want = ddif.Fuser(model).fuse(torch.from_numpy(lms), torch.from_numpy(pan_n), seed=0).numpy() * 65535
    with rasterio.open(out) as src:
        got = src.read().astype(np.float64)
        assert src.descriptions == ("B2", "B3", "B4") or src.count == 3
    diff = np.abs(got[:, valid] - np.rint(want[:, valid]))
    assert valid.mean() > 0.95 and diff.max() <= 1, diff.max()


def test_band_files_in_another_order_are_fused_in_the_models_order(tmp_path, capsys):
    """B4, B3, B2 as separate files: reordered by name, the product equals the one of the
    multi-band file in the model's order."""
    from ddif.cli.main import main

    ms = ASSETS / "landsat8_oli_demo_MS.tif"
    with rasterio.open(ms) as src:
        profile, data = src.profile, src.read()
    files = []
    for k, band in ((2, "B4"), (1, "B3"), (0, "B2")):
        path = tmp_path / f"LC08_L1TP_020039_20150804_20170406_01_T1_{band}.TIF"
        with rasterio.open(path, "w", **{**profile, "count": 1}) as dst:
            dst.write(data[k : k + 1])
        files.append(path)
    pan = ASSETS / "landsat8_oli_demo_PAN.tif"
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    assert main(["fuse", *map(str, files), str(pan), str(a), "--backend", "pytorch", "--no-sidecars"]) == 0
    assert "reordered to B2, B3, B4" in capsys.readouterr().err
    assert main(["fuse", str(ms), str(pan), str(b), "--backend", "pytorch", "--no-sidecars"]) == 0
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert np.array_equal(x.read(), y.read())


def test_ddif_fuse_picks_sentinel2_for_a_real_delivery_and_equals_the_fuser(tmp_path, capsys):
    """A 160 x 200 px (10 m) window of the real Sentinel-2 L1C crop, delivered as band files: ddif
    fuse DIR OUT picks the sentinel2 model, writes the ten bands in Sentinel-2 order with the 10 m
    bands unchanged, and its sharpened bands equal ddif.Fuser on the scene layer's inputs within 1 DN."""
    import os

    import ddif
    from ddif.cli.main import main
    from ddif.data.scene import read_scene
    from ddif.data.sensors import SENTINEL2_10M, SENTINEL2_PRODUCT_ORDER
    from ddif.models import DDIF
    from ddif.models.cards import resolve_model
    from rasterio.windows import Window

    shared = Path(os.environ.get("DDIF_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    src_dir = shared / "data" / "sentinel2-l1c-north"
    if not src_dir.is_dir():
        pytest.skip(f"{src_dir} not found (set DDIF_SHARED)")
    delivery = tmp_path / "delivery"
    delivery.mkdir()
    for band in SENTINEL2_PRODUCT_ORDER:
        path = src_dir / f"S2_T18SVG_20160112_{band}.tif"
        res = 10 if band in SENTINEL2_10M else 20
        win = Window(400 * 10 // res, 300 * 10 // res, 200 * 10 // res + (res == 20), 160 * 10 // res)
        with rasterio.open(path) as src:
            profile = src.profile | {"width": int(win.width), "height": int(win.height),
                                     "transform": src.window_transform(win)}
            data = src.read(window=win)
        with rasterio.open(delivery / path.name, "w", **profile) as dst:
            dst.write(data)
    out = tmp_path / "out" / "S2_10m.tif"
    assert main(["fuse", str(delivery), str(out), "--backend", "pytorch"]) == 0
    assert "model sentinel2" in capsys.readouterr().err
    model = DDIF.load(resolve_model("sentinel2")[0])
    _, lms, guide, valid = read_scene(out.with_name("S2_10m_MS.vrt"), out.with_name("S2_10m_guide10m.vrt"),
                                      preset=model.preset)
    want = ddif.Fuser(model).fuse(torch.from_numpy(lms), torch.from_numpy(guide), seed=0).numpy() * 10000
    with rasterio.open(out) as src:
        assert src.descriptions == SENTINEL2_PRODUCT_ORDER
        got = src.read().astype(np.float64)
    sharpened = [k for k, b in enumerate(SENTINEL2_PRODUCT_ORDER) if b not in SENTINEL2_10M]
    diff = np.abs(got[sharpened][:, valid] - np.rint(want[:, valid]))
    assert valid.mean() > 0.95 and diff.max() <= 1, diff.max()
    for k, band in enumerate(SENTINEL2_PRODUCT_ORDER):
        if band in SENTINEL2_10M:
            with rasterio.open(delivery / f"S2_T18SVG_20160112_{band}.tif") as src:
                assert np.array_equal(src.read(1), got[k].astype(np.uint16)), band
