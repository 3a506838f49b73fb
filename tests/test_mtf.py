"""MTF filters, decimation, interpolation and the Wald-protocol simulator (ddif.data.mtf)."""
from __future__ import annotations

import math

import pytest
import torch

from ddif.data.mtf import (SENSOR_MTF, ReducedResolution, bicubic_upsample, decimate, degrade,
                           interp23tap, mtf_filter, mtf_kernel, sensor_gains,
                           simulate_reduced_resolution, upsample)


def _response_at(kernel2d: torch.Tensor, freq: float) -> float:
    """Frequency response (DTFT) of a centred 2-D kernel at (freq, 0) cycles/pixel."""
    n = kernel2d.shape[-1]
    pos = torch.arange(n, dtype=torch.float64) - n // 2
    return float((kernel2d.sum(0) * torch.cos(2 * math.pi * freq * pos)).sum())


@pytest.mark.parametrize("ratio", [2, 4, 8])
@pytest.mark.parametrize("gain", [0.325, 0.3, 0.22, 0.15])
def test_kernel_gain_at_nyquist(gain, ratio):
    k = mtf_kernel(gain, ratio)
    assert k.shape == (41, 41) and k.dtype == torch.float64
    assert abs(float(k.sum()) - 1.0) < 1e-12
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    assert abs(_response_at(k, 1.0 / (2 * ratio)) - gain) < 3e-3
    # equivalent spatial Gaussian: sigma = ratio * sqrt(-2 ln G) / pi
    sigma = ratio * math.sqrt(-2 * math.log(gain)) / math.pi
    pos = torch.arange(41, dtype=torch.float64) - 20
    g1 = torch.exp(-pos ** 2 / (2 * sigma ** 2))
    g1 = g1 / g1.sum()
    assert float((k - torch.outer(g1, g1)).abs().max()) < 1e-3


def test_kernel_edge_cases():
    delta = mtf_kernel(1.0, 4)
    assert float(delta[20, 20]) == 1.0 and float(delta.abs().sum()) == 1.0
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="gain"):
            mtf_kernel(bad, 4)
    with pytest.raises(ValueError, match="odd"):
        mtf_kernel(0.3, 4, size=40)
    with pytest.raises(ValueError, match="ratio"):
        mtf_kernel(0.3, 0)


def test_sensor_table_and_gains():
    assert SENSOR_MTF["wv3"][0] == (0.325, 0.355, 0.360, 0.350, 0.365, 0.360, 0.335, 0.315)
    assert SENSOR_MTF["qb"] == ((0.34, 0.32, 0.30, 0.22), 0.15)
    ms, pan = sensor_gains("WorldView-3", 8)
    assert len(ms) == 8 and pan == SENSOR_MTF["wv3"][1]
    assert sensor_gains("gf2", 4) == ((0.3,) * 4, 0.15)
    with pytest.raises(ValueError, match="8 MS bands"):
        sensor_gains("wv3", 4)
    with pytest.warns(UserWarning, match="generic"):
        assert sensor_gains("my-cubesat", 3) == ((0.3,) * 3, 0.15)


def test_mtf_filter_properties():
    torch.manual_seed(0)
    const = torch.full((1, 2, 20, 24), 0.4)
    assert torch.allclose(mtf_filter(const, 0.3, 4), const, atol=1e-6)  # replicate padding, unit DC gain
    x = torch.rand(2, 2, 32, 32, dtype=torch.float64)
    y = mtf_filter(x, [0.6, 0.2], 4)
    assert y.shape == x.shape and y.dtype == x.dtype
    hp = lambda t: (t - t.mean(dim=(-2, -1), keepdim=True)).pow(2).mean(dim=(0, 2, 3))
    energy_in, energy_out = hp(x), hp(y)
    assert bool((energy_out < energy_in).all())
    assert float(energy_out[1]) < float(energy_out[0])  # lower gain at Nyquist -> blurrier band
    # filtering is per band: band 0 alone gives the same result
    assert torch.allclose(mtf_filter(x[:, :1], 0.6, 4), y[:, :1])
    with pytest.raises(ValueError, match="3 MTF gains"):
        mtf_filter(x, [0.3, 0.3, 0.3], 4)


def test_decimation_phase_and_degrade():
    x = torch.arange(8 * 8, dtype=torch.float32).view(1, 1, 8, 8)
    d = decimate(x, 4)
    assert d.shape == (1, 1, 2, 2)
    assert d.flatten().tolist() == [x[0, 0, 2, 2].item(), x[0, 0, 2, 6].item(),
                                    x[0, 0, 6, 2].item(), x[0, 0, 6, 6].item()]
    # sensor 'none' is an all-pass filter: degrade == decimate
    assert torch.equal(degrade(x, "none", 4), d)
    img = torch.rand(2, 8, 32, 32)
    assert degrade(img, "wv3", 4).shape == (2, 8, 8, 8)
    assert degrade(img[:, :1], "wv3", 4, kind="pan").shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        decimate(torch.rand(1, 1, 10, 8), 4)
    with pytest.raises(ValueError, match="kind"):
        degrade(img, "wv3", 4, kind="hs")


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_upsamplers_interpolate_on_the_toolbox_grid(ratio):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    for y in (interp23tap(x, ratio), bicubic_upsample(x, ratio), upsample(x, ratio, "bicubic")):
        assert y.shape == (2, 3, 12 * ratio, 10 * ratio)
        o = ratio // 2
        assert torch.allclose(y[..., o::ratio, o::ratio], x, atol=1e-12)


@pytest.mark.parametrize("ratio", [2, 4])
def test_upsamplers_reproduce_a_smooth_signal(ratio):
    """Sampling a periodic low-frequency signal at r*i + r//2 and upsampling gives the signal back:
    checks the phase convention and the kernel (a half-pixel shift would cost ~1e-1 here)."""
    n = 16
    p = torch.arange(n * ratio, dtype=torch.float64)
    freq = 2.0 / (n * ratio)                      # two periods across the image
    signal = torch.cos(2 * math.pi * freq * p + 0.3)
    img_hr = signal.view(1, 1, 1, -1) * signal.view(1, 1, -1, 1)
    lr = img_hr[..., ratio // 2::ratio, ratio // 2::ratio]
    assert float((interp23tap(lr, ratio) - img_hr).abs().max()) < 1e-3   # circular = exact periodic
    inner = slice(2 * ratio, -2 * ratio)
    err_bic = (bicubic_upsample(lr, ratio) - img_hr)[..., inner, inner].abs().max()
    assert float(err_bic) < 2e-2
    shifted = torch.nn.functional.interpolate(lr, scale_factor=ratio, mode="bicubic", align_corners=False)
    assert float((shifted - img_hr)[..., inner, inner].abs().max()) > 2 * float(err_bic)


def test_interp23tap_padding_modes_and_errors():
    torch.manual_seed(2)
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64)
    a = interp23tap(x, 4, padding="circular")
    b = interp23tap(x, 4, padding="symmetric")
    c = interp23tap(x, 4, padding="replicate")
    inner = (slice(None), slice(None), slice(28, 36), slice(28, 36))
    assert torch.allclose(a[inner], b[inner], atol=1e-9) and torch.allclose(a[inner], c[inner], atol=1e-9)
    assert not torch.allclose(a[..., :4, :], b[..., :4, :])
    with pytest.raises(ValueError, match="power-of-2"):
        interp23tap(x, 3)
    with pytest.raises(ValueError, match="padding"):
        interp23tap(x, 4, padding="zeros")
    with pytest.raises(ValueError, match="method"):
        upsample(x, 4, method="nearest")
    assert upsample(x, 3, method="bicubic").shape == (1, 2, 48, 48)


def test_simulate_reduced_resolution_shapes_and_consistency():
    torch.manual_seed(3)
    ms = torch.rand(2, 8, 32, 32)
    pan = torch.rand(2, 1, 128, 128)
    rr = simulate_reduced_resolution(ms, pan, ratio=4, sensor="wv3")
    assert isinstance(rr, ReducedResolution)
    assert rr.gt is ms or torch.equal(rr.gt, ms)
    assert rr.ms.shape == (2, 8, 8, 8) and rr.lms.shape == (2, 8, 32, 32) and rr.pan.shape == (2, 1, 32, 32)
    assert torch.allclose(decimate(rr.lms, 4), rr.ms, atol=1e-6)
    assert torch.allclose(rr.ms, degrade(ms, "wv3", 4), atol=0)
    # unbatched in, unbatched out; bicubic; batch item == unbatched
    one = simulate_reduced_resolution(ms[1], pan[1], ratio=4, sensor="wv3", interpolation="bicubic")
    assert one.gt.shape == (8, 32, 32) and one.ms.shape == (8, 8, 8) and one.pan.shape == (1, 32, 32)
    assert torch.allclose(one.ms, rr.ms[1], atol=1e-6)


def test_simulate_reduced_resolution_validation():
    ms = torch.rand(1, 4, 16, 16)
    pan = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError, match="does not match ratio 4"):
        simulate_reduced_resolution(ms, torch.rand(1, 1, 60, 64), 4, "qb")
    with pytest.raises(ValueError, match="divisible"):
        simulate_reduced_resolution(torch.rand(1, 4, 18, 16), torch.rand(1, 1, 72, 64), 4, "qb")
    bad = ms.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="ms: contains non-finite"):
        simulate_reduced_resolution(bad, pan, 4, "qb")
    with pytest.raises(ValueError, match="4-D"):
        simulate_reduced_resolution(torch.rand(16, 16), pan, 4, "qb")
    with pytest.raises(ValueError, match="floating-point"):
        simulate_reduced_resolution((ms * 100).to(torch.int16), pan, 4, "qb")
    with pytest.raises(ValueError, match="batch size"):
        simulate_reduced_resolution(ms, torch.rand(2, 1, 64, 64), 4, "qb")
    with pytest.raises(ValueError, match="8 MS bands"):
        simulate_reduced_resolution(ms, pan, 4, "wv3")
    with pytest.raises(ValueError, match="ratio"):
        simulate_reduced_resolution(ms, pan, 1, "qb")


def _interp23tap_direct(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Textbook form of the toolbox's interp23tap: per stage, zero insertion (first stage at odd
    positions, later stages at even ones), then circular filtering with the full 23-tap kernel."""
    half = [0.5, 0.305334091185, 0, -0.072698593239, 0, 0.021809577942, 0,
            -0.005192756653, 0, 0.000807762146, 0, -0.000060081482]
    kernel = 2 * torch.tensor(half[:0:-1] + half, dtype=torch.float64)
    y = x
    for stage in range(int(math.log2(ratio))):
        b, c, h, w = y.shape
        up = torch.zeros(b, c, 2 * h, 2 * w, dtype=y.dtype)
        o = 1 if stage == 0 else 0
        up[..., o::2, o::2] = y
        up = torch.nn.functional.pad(up, (11, 11, 11, 11), mode="circular")
        up = torch.nn.functional.conv2d(up.reshape(-1, 1, *up.shape[-2:]), kernel.view(1, 1, 23, 1))
        up = torch.nn.functional.conv2d(up, kernel.view(1, 1, 1, 23))
        y = up.view(b, c, 2 * h, 2 * w)
    return y


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_interp23tap_matches_zero_insertion_form(ratio):
    torch.manual_seed(4)
    x = torch.rand(1, 2, 12, 16, dtype=torch.float64)
    assert torch.allclose(interp23tap(x, ratio), _interp23tap_direct(x, ratio), atol=1e-12)
