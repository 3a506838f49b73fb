"""Quality indices (ddif.metrics): identities, hand-computed cases, invariances, orderings, batching."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import synthetic_scene
from ddif.data.mtf import degrade, interp23tap, mtf_filter
from ddif.metrics import (d_lambda, d_s, ergas, full_resolution_metrics, hqnr, psnr, q2n, q_index,
                          reduced_resolution_metrics, sam, scc, ssim)


def scene(bands: int = 4, size: int = 64, seed: int = 0, batch: int = 1):
    return synthetic_scene(bands, size, seed, batch, rectangles=10)


ALL_RR = {
    "SAM": lambda p, t: sam(p, t),
    "ERGAS": lambda p, t: ergas(p, t, 4),
    "Q2n": lambda p, t: q2n(p, t, 16, 16),
    "Q": lambda p, t: q_index(p, t, 16),
    "SCC": lambda p, t: scc(p, t),
    "PSNR": lambda p, t: psnr(p, t),
    "SSIM": lambda p, t: ssim(p, t),
}
HIGHER_IS_BETTER = {"SAM": False, "ERGAS": False, "Q2n": True, "Q": True, "SCC": True, "PSNR": True, "SSIM": True}


# ----------------------------------------------------------------------------------------------
# identities
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bands", [3, 4, 8])
def test_perfect_prediction(bands):
    x, _ = scene(bands, 32)
    assert sam(x, x) == pytest.approx(0.0, abs=1e-6)
    assert ergas(x, x) == 0.0
    assert q_index(x, x, 16) == pytest.approx(1.0, abs=1e-9)
    assert q2n(x, x, 16, 16) == pytest.approx(1.0, abs=1e-9)
    assert scc(x, x) == pytest.approx(1.0, abs=1e-12)
    assert psnr(x, x) == math.inf                     # not capped
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    rr = reduced_resolution_metrics(x[0], x[0], block_size=16)
    assert set(rr) == {"SAM", "ERGAS", "Q2n", "Q", "SCC", "PSNR", "SSIM"}
    assert all(isinstance(v, float) for v in rr.values())


# ----------------------------------------------------------------------------------------------
# hand-computed cases
# ----------------------------------------------------------------------------------------------
def test_sam_known_angles():
    # pixel 0: (1, 0, 0) vs (1, 1, 0) = 45 deg; pixel 1: (0, 2, 0) vs (0, 0, 3) = 90 deg
    t = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]], [[0.0, 0.0]]])        # (3, 1, 2)
    p = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 3.0]]])
    assert sam(p, t) == pytest.approx(67.5, abs=1e-9)
    # a zero spectrum is skipped, not counted as 0 or 90 degrees
    t0 = torch.cat([t, torch.zeros(3, 1, 1)], dim=2)
    p0 = torch.cat([p, torch.ones(3, 1, 1)], dim=2)
    assert sam(p0, t0) == pytest.approx(67.5, abs=1e-9)
    assert math.isnan(sam(torch.zeros(3, 2, 2), torch.ones(3, 2, 2)))


def test_ergas_constant_offset_by_hand():
    gt = torch.stack([torch.full((8, 8), 0.5), torch.full((8, 8), 0.25)])
    pred = gt + 0.05
    # 100/4 * sqrt(((0.05/0.5)^2 + (0.05/0.25)^2) / 2) = 25 * sqrt(0.025)
    assert ergas(pred, gt, ratio=4) == pytest.approx(25 * math.sqrt(0.025), rel=1e-6)
    assert ergas(pred, gt, ratio=2) == pytest.approx(50 * math.sqrt(0.025), rel=1e-6)


def test_q_index_by_hand():
    x, _ = scene(2, 32)
    # y = 2x: structure 2*2v/(v+4v) = 0.8 and luminance 2*2m^2/(m^2+4m^2) = 0.8 in EVERY window
    assert q_index(2 * x, x, 16) == pytest.approx(0.64, abs=1e-9)
    # flat windows: only the luminance term, 2ab/(a^2+b^2)
    a, b = torch.full((1, 20, 20), 0.3), torch.full((1, 20, 20), 0.6)
    assert q_index(a, b, 8) == pytest.approx(2 * 0.18 / (0.09 + 0.36), abs=1e-9)
    # x against -x + 2m (same mean, anti-correlated): structure -1, luminance 1
    flipped = 2 * x.mean(dim=(-2, -1), keepdim=True) - x
    assert q_index(flipped, x, 32) == pytest.approx(-1.0, abs=1e-9)


def test_q_index_matches_a_window_by_window_loop():
    torch.manual_seed(9)
    t = torch.rand(2, 12, 10, dtype=torch.float64)
    p = t + 0.2 * torch.rand(2, 12, 10, dtype=torch.float64) - 0.05
    per_band = []
    for k in range(2):
        values = []
        for i in range(12 - 4 + 1):
            for j in range(10 - 4 + 1):
                a, b = p[k, i:i + 4, j:j + 4].flatten(), t[k, i:i + 4, j:j + 4].flatten()
                cov = ((a - a.mean()) * (b - b.mean())).mean()
                values.append(4 * cov * a.mean() * b.mean() / ((a.var(unbiased=False) + b.var(unbiased=False))
                                                                 * (a.mean() ** 2 + b.mean() ** 2)))
        per_band.append(torch.stack(values).mean())
    assert q_index(p, t, 4) == pytest.approx(float(torch.stack(per_band).mean()), abs=1e-10)


def test_q2n_single_block_by_hand():
    torch.manual_seed(0)
    t = torch.rand(1, 8, 8, dtype=torch.float64)
    p = 2 * t + 0.1
    # one band, one block: the block is normalised by the reference's mean m and std s (unbiased):
    # z = (t - m)/s + 1 has mean 1, std 1; y = (p - m)/s + 1 has mean (m + 0.1)/s + 1, std 2
    m, s = float(t.mean()), float(t.std())
    mean_y = (m + 0.1) / s + 1
    expected = (2 * 2 / (1 + 4)) * (2 * 1 * mean_y / (1 + mean_y ** 2))
    assert q2n(p, t, 8, 8) == pytest.approx(expected, abs=1e-9)


def test_psnr_and_ssim_by_hand():
    gt = torch.rand(2, 16, 16, dtype=torch.float64)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)
    assert psnr(gt + 0.1, gt, data_range=2.0) == pytest.approx(20 + 20 * math.log10(2), abs=1e-9)
    a, b = torch.full((1, 16, 16), 0.3), torch.full((1, 16, 16), 0.6)
    c1 = 0.01 ** 2
    assert ssim(a, b) == pytest.approx((2 * 0.18 + c1) / (0.09 + 0.36 + c1), abs=1e-9)


# ----------------------------------------------------------------------------------------------
# invariances and documented conventions
# ----------------------------------------------------------------------------------------------
def test_sam_invariant_to_per_pixel_scaling():
    x, _ = scene(4, 32)
    torch.manual_seed(1)
    pred = x + 0.02 * torch.randn_like(x)
    scale = 0.2 + 3 * torch.rand(1, 1, 32, 32, dtype=torch.float64)
    assert sam(pred * scale, x) == pytest.approx(sam(pred, x), abs=1e-9)
    assert sam(pred, x * scale) == pytest.approx(sam(pred, x), abs=1e-9)
    assert ergas(pred * scale, x) > ergas(pred, x)   # ERGAS is not


def test_scale_invariances():
    x, _ = scene(4, 32)
    torch.manual_seed(2)
    pred = x + 0.03 * torch.randn_like(x)
    assert q2n(7 * pred, 7 * x, 16, 16) == pytest.approx(q2n(pred, x, 16, 16), abs=1e-9)
    assert q_index(7 * pred, 7 * x, 16) == pytest.approx(q_index(pred, x, 16), abs=1e-9)
    assert ergas(7 * pred, 7 * x) == pytest.approx(ergas(pred, x), rel=1e-9)
    assert scc(3 * x, x) == pytest.approx(1.0, abs=1e-12)


def test_q2n_band_padding_and_block_padding():
    x, _ = scene(3, 40)
    torch.manual_seed(3)
    pred = x + 0.03 * torch.randn_like(x)
    zeros = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
    # 3 bands are padded with a zero band to 4 (toolbox q2n.m)
    assert q2n(pred, x, 16, 16) == pytest.approx(
        q2n(torch.cat([pred, zeros], 1), torch.cat([x, zeros], 1), 16, 16), abs=1e-12)
    # 40 is not a multiple of 16: the image is mirror-padded to 48 (3 x 3 blocks)
    padded = lambda t: torch.cat([t, t[..., -8:].flip(-1)], -1)
    padded2 = lambda t: padded(torch.cat([t, t[..., -8:, :].flip(-2)], -2))
    assert q2n(pred, x, 16, 16) == pytest.approx(q2n(padded2(pred), padded2(x), 16, 16), abs=1e-12)


def test_q2n_sees_spectral_distortion_that_q_averages_cannot():
    """Swapping two bands' content keeps every band's own statistics similar but breaks the spectra;
    Q2n and SAM drop while being 1 / 0 for the true image."""
    x, _ = scene(4, 32)
    swapped = x[:, [1, 0, 2, 3]]
    assert q2n(swapped, x, 16, 16) < 0.99
    assert sam(swapped, x) > 1.0


# ----------------------------------------------------------------------------------------------
# degradations are ordered correctly
# ----------------------------------------------------------------------------------------------
def _assert_ordered(values: dict[str, list[float]]):
    for name, vals in values.items():
        for better, worse in zip(vals, vals[1:]):
            if HIGHER_IS_BETTER[name]:
                assert better > worse, (name, vals)
            else:
                assert better < worse, (name, vals)


def test_more_blur_is_worse_on_every_metric():
    x, _ = scene(4, 64)
    preds = [x] + [mtf_filter(x, g, 4) for g in (0.6, 0.3, 0.1)]
    _assert_ordered({k: [f(p, x) for p in preds] for k, f in ALL_RR.items()})


def test_more_noise_is_worse_on_every_metric():
    x, _ = scene(4, 64)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    preds = [x] + [x + s * noise for s in (0.005, 0.02, 0.06)]
    _assert_ordered({k: [f(p, x) for p in preds] for k, f in ALL_RR.items()})


# ----------------------------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------------------------
def test_batched_equals_stacked_unbatched():
    x, pan = scene(4, 64, batch=3)
    torch.manual_seed(6)
    pred = x + 0.02 * torch.randn_like(x)
    for name, f in ALL_RR.items():
        batched = f(pred, x)
        assert isinstance(batched, torch.Tensor) and batched.shape == (3,), name
        single = torch.tensor([f(pred[i], x[i]) for i in range(3)], dtype=torch.float64)
        assert torch.allclose(batched, single, atol=1e-10), name
    ms = degrade(x, "qb", 4)
    full = full_resolution_metrics(pred, ms, pan, 4, "qb")
    for i in range(3):
        one = full_resolution_metrics(pred[i], ms[i], pan[i], 4, "qb")
        for k in ("D_lambda", "D_s", "HQNR"):
            assert isinstance(one[k], float)
            assert float(full[k][i]) == pytest.approx(one[k], abs=1e-9), k
    assert torch.allclose(hqnr(pred, ms, pan, 4, "qb"), full["HQNR"])
    assert torch.allclose(d_lambda(pred, ms, None, 4, "qb"), full["D_lambda"])
    assert torch.allclose(d_s(pred, ms, pan, 4, "qb"), full["D_s"])
    rr = reduced_resolution_metrics(pred, x, 4, block_size=16, border=4)
    assert float(rr["SAM"][1]) == pytest.approx(sam(pred[1, :, 4:-4, 4:-4], x[1, :, 4:-4, 4:-4]), abs=1e-10)


# ----------------------------------------------------------------------------------------------
# full resolution
# ----------------------------------------------------------------------------------------------
def test_hqnr_ideal_fusion_beats_degraded_ones():
    """Full-resolution case with a known answer: the scene itself is the ideal fusion of its
    MTF-degraded MS and its PAN; the interpolated MS (no PAN detail) and a noisy fusion score lower."""
    x, pan = scene(4, 64, seed=7)
    ms = degrade(x, "qb", 4)
    lms = interp23tap(ms, 4)
    g = torch.Generator().manual_seed(8)
    noisy = x + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ideal = full_resolution_metrics(x, ms, pan, 4, "qb")
    assert float(ideal["HQNR"]) > 0.9 and float(ideal["D_lambda"]) < 0.03 and float(ideal["D_s"]) < 0.08
    for worse in (lms, noisy):
        m = full_resolution_metrics(worse, ms, pan, 4, "qb")
        assert float(m["HQNR"]) < float(ideal["HQNR"]) - 0.03
        assert float(m["D_s"]) > float(ideal["D_s"])
    assert float(d_lambda(noisy, ms, pan, 4, "qb")) > float(ideal["D_lambda"])
    # an RGB-like guide with 3 identical bands is reduced to its mean: same as the 1-band PAN
    assert float(d_s(x, ms, pan.repeat(1, 3, 1, 1), 4)) == pytest.approx(float(ideal["D_s"]), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def test_input_validation():
    x = torch.rand(2, 4, 32, 32)
    with pytest.raises(ValueError, match="does not match target shape"):
        sam(x[:, :3], x)
    with pytest.raises(ValueError, match="unbatched"):
        ergas(x, x[0])
    with pytest.raises(ValueError, match="4-D"):
        psnr(x[0, 0], x[0, 0])
    with pytest.raises(ValueError, match="floating-point"):
        scc((x * 100).long(), x)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="pred: contains non-finite"):
        ssim(bad, x)
    with pytest.raises(ValueError, match="smaller than block_size"):
        q_index(x, x, 64)
    with pytest.raises(ValueError, match="too small"):
        q2n(x[..., :8, :8], x[..., :8, :8], 32, 32)
    with pytest.raises(ValueError, match="ratio"):
        ergas(x, x, ratio=0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="border"):
        reduced_resolution_metrics(x, x, border=16)
    ms, pan = torch.rand(2, 4, 8, 8), torch.rand(2, 1, 32, 32)
    with pytest.raises(ValueError, match="times the ratio"):
        d_lambda(x, torch.rand(2, 4, 16, 16), pan, 4, "qb")
    with pytest.raises(ValueError, match="pan: shape"):
        d_s(x, ms, torch.rand(2, 1, 16, 16), 4)
    with pytest.raises(ValueError, match="multiple of the D_s block size"):
        d_s(torch.rand(2, 4, 40, 40), torch.rand(2, 4, 10, 10), torch.rand(2, 1, 40, 40), 4, block_size=32)
    with pytest.raises(ValueError, match="8 MS bands"):
        hqnr(x, ms, pan, 4, "wv3")
