"""Classical baselines (ddif.baselines): they sharpen a Wald-protocol case, keep their defining
properties, batch, and reject bad input."""
from __future__ import annotations

import pytest
import torch

from conftest import synthetic_scene
from ddif.baselines import BASELINES, brovey, gs, gsa, mtf_glp_hpm
from ddif.data.mtf import degrade, simulate_reduced_resolution
from ddif.metrics import ergas, q2n, sam, scc


def scene(bands: int, size: int, seed: int = 0, batch: int = 1):
    ms, pan = synthetic_scene(bands, size, seed, batch, rectangles=12)
    return ms.float(), pan.float()


@pytest.fixture(scope="module")
def wald_case():
    """Wald protocol on a synthetic 'real' pair: a 4-band MS at 64x64 and its PAN at 256x256."""
    x, pan = scene(4, 256, seed=11)
    ms_real = degrade(x, "qb", 4)                    # the sensor's MS image (64 x 64)
    return simulate_reduced_resolution(ms_real, pan, ratio=4, sensor="qb")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_beats_plain_interpolation(wald_case, name):
    rr = wald_case
    fused = BASELINES[name](rr.lms, rr.pan, rr.ms, 4, "qb")
    assert fused.shape == rr.gt.shape and fused.dtype == rr.lms.dtype
    assert bool(torch.isfinite(fused).all())
    assert ergas(fused, rr.gt) < 0.8 * ergas(rr.lms, rr.gt)
    assert scc(fused, rr.gt) > scc(rr.lms, rr.gt) + 0.01
    assert q2n(fused, rr.gt, 32, 32) > q2n(rr.lms, rr.gt, 32, 32) + 0.05


def test_adaptive_methods_beat_plain_cs(wald_case):
    """GSA and MTF-GLP-HPM adapt to the sensor / data; on this case they beat Brovey and GS on ERGAS
    (the ordering reported by Vivone et al. 2015 for real data)."""
    rr = wald_case
    score = {n: float(ergas(fn(rr.lms, rr.pan, rr.ms, 4, "qb"), rr.gt)) for n, fn in BASELINES.items()}
    assert max(score["gsa"], score["mtf_glp_hpm"]) < min(score["brovey"], score["gs"])


def test_brovey_scales_each_spectrum_by_one_factor():
    x, pan = scene(4, 32, seed=1)
    x, pan = x.double(), pan.double()
    fused = brovey(x, pan)
    ratio = fused / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12)     # same factor for every band
    assert sam(fused, x) == pytest.approx(0.0, abs=1e-5)
    # the fused band mean is the PAN matched to the intensity's mean and standard deviation
    intensity = x.mean(dim=1, keepdim=True)
    band_mean = fused.mean(dim=1, keepdim=True)
    assert float(band_mean.mean()) == pytest.approx(float(intensity.mean()), rel=1e-9)
    assert float(band_mean.std()) == pytest.approx(float(intensity.std()), rel=1e-9)
    corr = torch.corrcoef(torch.stack([band_mean.flatten(), pan.flatten()]))[0, 1]
    assert float(corr) == pytest.approx(1.0, abs=1e-9)


def test_cs_and_mra_inject_nothing_when_the_pan_adds_nothing():
    x, _ = scene(4, 32, seed=2)
    # GS: a PAN equal to the intensity (up to an affine map) has no detail to inject
    intensity = x.mean(dim=1, keepdim=True)
    assert torch.allclose(gs(x, 3 * intensity + 1), x, atol=1e-5)
    # MTF-GLP-HPM: a flat PAN modulates nothing
    assert torch.allclose(mtf_glp_hpm(x, torch.full_like(intensity, 0.4), 4, "qb"), x, atol=1e-5)


def test_batched_unbatched_and_guides():
    x, pan = scene(4, 64, seed=3, batch=2)
    ms = degrade(x, "qb", 4)
    for name, fn in BASELINES.items():
        batched = fn(x, pan, ms, 4, "qb")
        single = torch.stack([fn(x[i], pan[i], ms[i], 4, "qb") for i in range(2)])
        assert single.shape == x.shape
        assert torch.allclose(batched, single, atol=1e-5), name
        # a 3-band guide is reduced to its mean: three copies of the PAN give the PAN's result
        assert torch.allclose(fn(x, pan.repeat(1, 3, 1, 1), ms, 4, "qb"), batched, atol=1e-5), name
        assert fn(x.double(), pan.double(), ms.double(), 4, "qb").dtype == torch.float64


def test_registry_signature_and_gsa_without_ms(wald_case):
    rr = wald_case
    from ddif.baselines.gdal_pansharpen import gdal_available

    assert set(BASELINES) == {"brovey", "gs", "gsa", "mtf_glp_hpm"} | ({"gdal_brovey"} if gdal_available() else set())
    for fn in BASELINES.values():       # defaults: ms=None, ratio=4, sensor="wv3" (qb via keyword here)
        assert fn(rr.lms, rr.pan, sensor="qb").shape == rr.lms.shape
    # lms made by the 23-tap interpolator passes through the MS samples, so ms can be recovered
    assert torch.allclose(gsa(rr.lms, rr.pan), gsa(rr.lms, rr.pan, rr.ms, 4), atol=1e-5)


def test_input_validation():
    x, pan = scene(4, 32)
    with pytest.raises(ValueError, match="pan: expected spatial size 32x32 to match lms"):
        brovey(x, pan[..., :16, :16])
    bad = x.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="lms: contains non-finite"):
        gs(bad, pan)
    with pytest.raises(ValueError, match="pan: shape"):
        brovey(x, pan[0])
    with pytest.raises(ValueError, match="ms: expected spatial size 8x8"):
        gsa(x, pan, torch.rand(1, 4, 16, 16), 4)
    with pytest.raises(ValueError, match="ms: expected 4 bands"):
        gsa(x, pan, torch.rand(1, 3, 8, 8), 4)
    with pytest.raises(ValueError, match="divisible"):
        mtf_glp_hpm(x[..., :30, :30], pan[..., :30, :30], 4, "qb")
    with pytest.raises(ValueError, match="8 MS bands"):
        mtf_glp_hpm(x, pan, 4, "wv3")
    with pytest.raises(ValueError, match="floating-point"):
        brovey((x * 100).int(), pan)


def _toolbox_hpm(lms, pan, ratio, gains):
    """The toolbox's MTF_GLP_HPM written out (no floor, no clip): the reference the robust version
    must equal wherever its guards are inactive."""
    from ddif.data.mtf import decimate, interp23tap, mtf_filter

    x, p = lms.double(), pan.double()
    p_lp = mtf_filter(p, 0.3, ratio)
    mean = lambda t: t.mean(dim=(-2, -1), keepdim=True)
    std = lambda t: t.std(dim=(-2, -1), keepdim=True)
    p_eq = (p - mean(p)) * (std(x) / std(p_lp)) + mean(x)
    p_low = interp23tap(decimate(mtf_filter(p_eq, gains, ratio), ratio), ratio)
    return x * p_eq / (p_low + torch.finfo(torch.float64).eps), p_eq, p_low


def test_mtf_glp_hpm_stays_bounded_on_dark_pixels():
    """A PAN with dark points (darker, relative to its mean, than the MS band is): the toolbox's
    equalised PAN goes negative there and so does its product; the robust version stays
    non-negative and bounded. On the same scene without the dark points no guard fires and it is
    the toolbox's HPM."""
    x, pan = scene(4, 64, seed=5)
    x, pan = x.double(), pan.double()
    gains = [0.35] * 4
    ref, p_eq, p_low = _toolbox_hpm(x, pan, 4, gains)
    assert float(p_eq.min()) > 0 and float((ref / x).max()) < 4
    torch.testing.assert_close(mtf_glp_hpm(x, pan, 4, gains), ref, rtol=1e-5, atol=1e-6)  # float32 filters
    dark = pan.clone()
    dark[..., 8::8, 8::8] = 0.0
    dark[..., 9::8, 8::8] = 0.0
    ref, p_eq, _ = _toolbox_hpm(x, dark, 4, gains)
    assert float(p_eq.min()) < 0 and float(ref.min()) < -0.1  # the toolbox's failure
    fused = mtf_glp_hpm(x, dark, 4, gains)
    assert float(fused.min()) >= 0 and float(fused.max()) <= 4 * float(x.max()) + 1e-9


def test_mtf_glp_hpm_takes_band_gains():
    x, pan = scene(4, 32, seed=2)
    by_name = mtf_glp_hpm(x, pan, 4, "qb")
    from ddif.data.mtf import sensor_gains

    torch.testing.assert_close(mtf_glp_hpm(x, pan, 4, sensor_gains("qb", 4)[0]), by_name)


@pytest.mark.parametrize("case", ["worldview2 tile 2 (11-bit)", "landsat8 OLI (16-bit)"])
def test_every_baseline_on_real_data(case):
    """Every baseline on real data at reduced resolution (Wald): finite, no blow-up (within the
    reference's range, 2 % tolerance above), and the toolbox methods better than plain
    interpolation. GDAL's weighted Brovey with its default weights (1/N) takes the pseudo-PAN as
    the band mean, off from a real PAN's level: a bias, but no blow-up."""
    pytest.importorskip("rasterio")
    from conftest import SHARED

    from ddif.evaluation import RealScene, real_reduced_set

    d = SHARED / "data"
    if case.startswith("worldview2"):
        scene = RealScene("wv2", (str(d / "worldview2-spacenet6/ms2_2m.tif"),), str(d / "worldview2-spacenet6/pan2.tif"),
                          4, "wv2", ("blue", "green", "red", "nir1"), 2047.0, crop=32, nodata=(0.0,), margin=0)
    else:
        o = d / "landsat8-oli-pan-scene"
        scene = RealScene("l8", tuple(str(o / f"l8_{b}.tif") for b in ("B2", "B3", "B4")), str(o / "l8_B8.tif"),
                          2, "landsat8", ("B2", "B3", "B4"), 65535.0, holdout="strip:192", crop=32,
                          qa=str(o / "l8_BQA.tif"))
    if not all(p.exists() for p in map(__import__("pathlib").Path, (*scene.ms, scene.pan))):
        pytest.skip("shared real data not found")
    data = real_reduced_set(scene)
    exp = float(ergas(data.lms, data.gt, ratio=scene.ratio).mean())
    top = float(data.gt.max())
    for name, fn in BASELINES.items():
        fused = fn(data.lms, data.pan, data.ms, scene.ratio, scene.gains)
        assert bool(torch.isfinite(fused).all()), name
        assert float(fused.max()) <= 1.02 * top + 0.01 and float(fused.min()) >= -0.01, name
        if name in ("gsa", "mtf_glp_hpm", "gs", "brovey"):
            assert float(ergas(fused.clamp(0, 1), data.gt, ratio=scene.ratio).mean()) < exp, name


# ------------------------------------------------------------------ multi-band guides (Sentinel-2)
def _multi_guide_case(seed=0, size=32, ratio=2):
    """Four smooth-plus-texture guide bands at full resolution; six MS bands that are affine
    combinations of them (so each band has an exact high-resolution predictor), reduced by the
    Wald protocol with per-band MTF gains."""
    from ddif.data.mtf import decimate, mtf_filter, upsample

    g = torch.Generator().manual_seed(seed)
    guide = 0.2 + 0.6 * torch.rand(2, 4, size, size, generator=g)
    guide = mtf_filter(guide, [0.6] * 4, 2)  # some spatial correlation
    weights = torch.rand(6, 4, generator=g) / 4
    gt = torch.einsum("kj,bjhw->bkhw", weights, guide) + 0.05
    gains = (0.38, 0.34, 0.34, 0.33, 0.23, 0.22)
    ms = decimate(mtf_filter(gt, list(gains), ratio), ratio)
    lms = upsample(ms, ratio, method="interp23tap", padding="symmetric")
    return gt, ms, lms, guide, gains


def test_multi_guide_baselines_recover_bands_the_guide_predicts():
    """A band that is an affine function of the guide is recovered by MTF-GLP with the regressed
    per-band guide (the HPM ratio is exact away from the borders) far better than by interpolation; GSA with the
    regressed guides and the per-band guides themselves also beat interpolation by a wide margin."""
    from ddif.baselines import MULTI_GUIDE_BASELINES, gsa_synthesized, mtf_glp_synthesized
    from ddif.baselines.classical import synthesize_band_guides

    gt, ms, lms, guide, gains = _multi_guide_case()
    base = float(ergas(lms, gt, 2).mean())
    synth = synthesize_band_guides(lms, guide, ms, 2, gains).float()
    assert float(ergas(synth, gt, 2).mean()) < 0.05 * base
    glp = mtf_glp_synthesized(lms, guide, ms, 2, gains)
    assert float(ergas(glp, gt, 2).mean()) < 0.3 * base  # the pyramid's borders are not exact
    cs = gsa_synthesized(lms, guide, ms, 2, gains)
    assert float(ergas(cs, gt, 2).mean()) < 0.5 * base
    assert set(MULTI_GUIDE_BASELINES) == {"bicubic", "gsa_synthesized", "mtf_glp_synthesized"}
    # unbatched in, unbatched out; ms optional (recovered from the interpolating lms)
    one = mtf_glp_synthesized(lms[0], guide[0], None, 2, gains)
    assert one.shape == lms[0].shape and torch.allclose(one, glp[0], atol=1e-5)


def test_bicubic_baseline_is_keys_upsampling_of_the_coarse_ms():
    from ddif.baselines import bicubic
    from ddif.data.mtf import bicubic_upsample

    _, ms, lms, _, _ = _multi_guide_case()
    assert torch.equal(bicubic(lms, ms, 2), bicubic_upsample(ms, 2))
    assert not torch.allclose(bicubic(lms, ms, 2), lms)  # not the 23-tap EXP
