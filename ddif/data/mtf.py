"""Sensor MTF filters, decimation, 23-tap / bicubic interpolation and the Wald-protocol simulator.

Everything here follows the conventions of the pansharpening toolbox used by PanCollection:

- G. Vivone, L. Alparone, J. Chanussot, M. Dalla Mura, A. Garzelli, G. Licciardi, R. Restaino and
  L. Wald, "A critical comparison among pansharpening algorithms", IEEE TGRS 53(5), 2015.
- G. Vivone, M. Dalla Mura, A. Garzelli, R. Restaino, G. Scarpa, M. O. Ulfarsson, L. Alparone and
  J. Chanussot, "A new benchmark based on recent advances in multispectral pansharpening",
  IEEE GRSM 9(1), 2021 (the toolbox's reference paper).
- B. Aiazzi, L. Alparone, S. Baronti, A. Garzelli and M. Selva, "MTF-tailored multiscale fusion of
  high-resolution MS and Pan imagery", PE&RS 72(5), 2006 (Gaussian filters matched to the MTF).
- B. Aiazzi, L. Alparone, S. Baronti and A. Garzelli, "Context-driven fusion of high spatial and
  spectral resolution images based on oversampled multiresolution analysis", IEEE TGRS 40(10),
  2002 (the 23-tap interpolation kernel).
- L. Wald, T. Ranchin and M. Mangolini, "Fusion of satellite images of different spatial
  resolutions: assessing the quality of resulting images", PE&RS 63(6), 1997 (the protocol).

Pixel-grid convention (the toolbox's): low-resolution pixel ``i`` sits on high-resolution pixel
``ratio * i + ratio // 2``. Decimation keeps exactly those pixels (the toolbox's
``imresize(..., 1/ratio, 'nearest')`` after an odd-length filter), and both interpolators here are
interpolating on that grid, so ``upsample(x, r)[..., r//2::r, r//2::r] == x``.

All functions take float tensors (B, C, H, W) and return the input's dtype; filtering runs in
float64 for float64 input and in float32 otherwise.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ddif.data.sensors import SENSOR_ALIASES, SENSOR_MTF  # noqa: F401 (re-exported: the registry's table)
from ddif.utils.validation import check_image

__all__ = [
    "SENSOR_MTF",
    "SENSOR_ALIASES",
    "ReducedResolution",
    "MTF_KERNELS",
    "check_mtf_kernel",
    "known_sensors",
    "sensor_gains",
    "ms_gains",
    "mtf_kernel",
    "toolbox_mtf_kernel",
    "mtf_filter",
    "decimate",
    "degrade",
    "interp23tap",
    "bicubic_upsample",
    "upsample",
    "simulate_reduced_resolution",
]

# The MTF gains per sensor live in the sensor registry (ddif.data.sensors.SENSOR_MTF).

# The toolbox's MTF filters are 41 x 41.
DEFAULT_KERNEL_SIZE = 41

# Half of the toolbox's 23-tap interpolator (Aiazzi et al. 2002): a symmetric half-band
# Lagrange-type polynomial kernel. Even offsets are zero except the centre, so the filter is
# interpolating; the factor 2 compensates the zeros inserted by upsampling by 2.
_INTERP23_HALF = (
    0.5,
    0.305334091185,
    0.0,
    -0.072698593239,
    0.0,
    0.021809577942,
    0.0,
    -0.005192756653,
    0.0,
    0.000807762146,
    0.0,
    -0.000060081482,
)
_INTERP23_PADDINGS = ("circular", "symmetric", "replicate")


# --------------------------------------------------------------------------------------------
# sensor gains
# --------------------------------------------------------------------------------------------
def _resolve_sensor(sensor: str) -> str:
    if not isinstance(sensor, str):
        raise ValueError(f"sensor: expected a sensor name string, got {type(sensor).__name__}")
    key = sensor.strip().lower()
    key = SENSOR_ALIASES.get(key, key)
    if key not in SENSOR_MTF:
        warnings.warn(
            f"sensor {sensor!r} has no published MTF gains here (known: {sorted(SENSOR_MTF)}); "
            "using the toolbox's generic values (MS 0.3, PAN 0.15 at Nyquist)",
            UserWarning,
            stacklevel=3,
        )
        key = "generic"
    return key


def known_sensors() -> tuple[str, ...]:
    """Every sensor name :func:`sensor_gains` knows (table keys and aliases), sorted."""
    return tuple(sorted(set(SENSOR_MTF) | set(SENSOR_ALIASES)))


def sensor_gains(sensor: str, bands: int) -> tuple[tuple[float, ...], float]:
    """MTF gains at Nyquist for ``sensor``: (one MS gain per band, PAN gain).

    Names are case-insensitive (aliases such as ``"WorldView3"`` or ``"QuickBird"`` work). A sensor
    with a single listed MS gain (gf2, landsat7/8/9, generic, none) applies it to every band. An unknown
    name warns and falls back to the toolbox's generic 0.3 / 0.15. Raises ``ValueError`` when a
    sensor with per-band gains is asked for a different number of bands.
    """
    key = _resolve_sensor(sensor)
    if not isinstance(bands, int) or bands < 1:
        raise ValueError(f"bands: expected a positive int, got {bands!r}")
    ms_gains, pan_gain = SENSOR_MTF[key]
    if len(ms_gains) == 1:
        ms_gains = ms_gains * bands
    elif len(ms_gains) != bands:
        raise ValueError(
            f"sensor {sensor!r} has {len(ms_gains)} MS bands with published MTF gains, but the image "
            f"has {bands} bands; pass sensor='generic' or explicit per-band gains to mtf_filter"
        )
    return tuple(float(g) for g in ms_gains), float(pan_gain)


def ms_gains(sensor: str | Sequence[float], bands: int) -> tuple[float, ...]:
    """MS MTF gains for ``bands`` bands: :func:`sensor_gains` of a sensor name, or the gains
    themselves (one per band, or one for all) for a band subset of a sensor."""
    if isinstance(sensor, str):
        return sensor_gains(sensor, bands)[0]
    values = tuple(float(g) for g in sensor)
    if len(values) == 1:
        values = values * bands
    if len(values) != bands:
        raise ValueError(f"sensor: {len(values)} MTF gains given for an image with {bands} bands")
    return values


# --------------------------------------------------------------------------------------------
# MTF-matched Gaussian filters
# --------------------------------------------------------------------------------------------
def _check_ratio(ratio, name: str = "ratio") -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"{name}: expected a positive integer scale ratio, got {ratio!r}")
    return ratio


def _check_gain(gain) -> float:
    try:
        g = float(gain)
    except (TypeError, ValueError):
        raise ValueError(f"MTF gain: expected a number in (0, 1], got {gain!r}") from None
    if not (0.0 < g <= 1.0) or math.isnan(g):
        raise ValueError(f"MTF gain at Nyquist must lie in (0, 1], got {g}")
    return g


def _kaiser(size: int, beta: float = 0.5) -> torch.Tensor:
    # MATLAB's kaiser(N) default beta = 0.5: a window that only gently tapers the tails.
    return torch.kaiser_window(size, periodic=False, beta=beta, dtype=torch.float64)


def _mtf_kernel_1d(gain_nyquist: float, ratio: int, size: int) -> torch.Tensor:
    """1-D factor of the separable MTF kernel (see :func:`mtf_kernel`), float64, sums to 1."""
    g = _check_gain(gain_nyquist)
    _check_ratio(ratio)
    if not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd integer >= 3, got {size!r}")
    if g == 1.0:
        h = torch.zeros(size, dtype=torch.float64)
        h[size // 2] = 1.0
        return h
    # Desired response H(f) = exp(-f^2 / (2 s^2)), f in cycles per high-resolution pixel, with
    # H(1 / (2 ratio)) = g  =>  s^2 = (1 / (2 ratio))^2 / (-2 ln g).
    f_nyq = 1.0 / (2.0 * ratio)
    s2 = f_nyq**2 / (-2.0 * math.log(g))
    # Frequency-sampling design (as the toolbox's fwind1): sample H on the size-point DFT grid,
    # inverse DFT, window, normalise to unit DC gain.
    k = torch.arange(size, dtype=torch.float64) - size // 2
    response = torch.exp(-((k / size) ** 2) / (2.0 * s2))
    h = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(response))).real
    h = h * _kaiser(size)
    return h / h.sum()


def mtf_kernel(gain_nyquist: float, ratio: int, size: int = DEFAULT_KERNEL_SIZE) -> torch.Tensor:
    """Gaussian low-pass (size x size, float64, sums to 1) whose frequency response at the Nyquist
    frequency of the low-resolution grid equals ``gain_nyquist`` (Aiazzi et al. 2006; the toolbox's
    ``genMTF`` / ``MTF`` / ``MTF_PAN``).

    Design. The sensor MTF is modelled as an isotropic Gaussian in frequency,
    ``H(f) = exp(-|f|^2 / (2 s^2))`` with ``f`` in cycles per high-resolution pixel. The Nyquist
    frequency of a grid ``ratio`` times coarser is ``f_N = 1 / (2 ratio)``; ``H(f_N) = G`` gives
    ``s^2 = f_N^2 / (-2 ln G)``. The equivalent spatial Gaussian has standard deviation
    ``sigma = 1 / (2 pi s) = ratio * sqrt(-2 ln G) / pi`` pixels (1.98 px for G = 0.3 at ratio 4,
    2.48 px for G = 0.15). As in the toolbox, the filter is made by frequency sampling: ``H`` is
    sampled on the ``size``-point DFT grid (bin spacing ``1/size`` cycles/pixel), inverse
    transformed, multiplied by a Kaiser window (beta = 0.5, MATLAB's ``kaiser`` default) and
    normalised to unit DC gain so that means are preserved.

    Differences from the MATLAB toolbox's ``genMTF.m`` (reproduced exactly by
    :func:`toolbox_mtf_kernel`, selectable with ``kernel="toolbox"`` in :func:`mtf_filter` and
    ``mtf_kernel="toolbox"`` in the no-reference metrics): (1) the toolbox writes the Gaussian's
    width with ``(N - 1)`` instead of ``N`` bins, which puts the gain ``G`` at ``(N-1)/N`` of
    Nyquist (0.282 instead of 0.3 exactly at Nyquist for N = 41); here the gain is exact at
    Nyquist. (2) The toolbox's ``fwind1`` builds a circularly symmetric 2-D window from the 1-D
    Kaiser window (Huang's method); here the window is the separable outer product, so the whole
    kernel is separable (``outer(h1, h1)``), which lets :func:`mtf_filter` run two 1-D passes.
    (3) The toolbox does not renormalise (its DC gain is 0.9988 for G = 0.3 at ratio 4); here the
    kernel sums to 1. The kernels differ by at most 2.0e-3 per tap at ratio 4 (G = 0.3) and 7.7e-3
    at ratio 2, and these differences are **not** negligible for the indices built on them:
    measured on the real Landsat-8 OLI pair (B2-B4 + the real B8 PAN, ratio 2, 32 x 32 MS px),
    D_lambda^(K) with the toolbox's kernel is higher by 0.6 % (GSA) to 3.5 % (GS) relative and by
    7.4 % for the interpolated MS itself; HQNR moves by 0.03-0.3 %. Use the toolbox kernel to
    compare with published tables made with the toolbox.

    ``gain_nyquist = 1`` gives the unit impulse (no filtering). Keep ``size`` >= ~8 sigma + 1
    (41 covers ratio 4 and ratio 8 at the listed gains).
    """
    h = _mtf_kernel_1d(gain_nyquist, ratio, size)
    return torch.outer(h, h)


# Which MTF filter construction: ddif's separable kernel (:func:`mtf_kernel`, the default) or the
# MATLAB toolbox's genMTF.m kernel, reproduced by :func:`toolbox_mtf_kernel`.
MTF_KERNELS = ("ddif", "toolbox")


def check_mtf_kernel(kernel: str) -> str:
    """``kernel`` if it is one of :data:`MTF_KERNELS`, else ``ValueError``."""
    if kernel not in MTF_KERNELS:
        raise ValueError(f"mtf_kernel: expected one of {MTF_KERNELS}, got {kernel!r}")
    return kernel


@functools.lru_cache(maxsize=256)
def _toolbox_kernel_np(gain: float, ratio: int, size: int) -> np.ndarray:
    n = size
    h = np.zeros((n, n))
    if gain == 1.0:  # alpha = inf in genMTF: Hd is all ones, fsamp2 gives the unit impulse
        h[n // 2, n // 2] = 1.0
        return h
    # genMTF.m: alpha = sqrt(((N-1)*(fcut/2))^2/(-2*log(GNyq))), fcut = 1/ratio
    fcut = 1.0 / ratio
    alpha = math.sqrt(((n - 1) * (fcut / 2)) ** 2 / (-2.0 * math.log(gain)))
    # fspecial('gaussian', N, alpha): exp(-(x^2+y^2)/(2 alpha^2)) on -(N-1)/2..(N-1)/2, values below
    # eps * max set to 0, normalised to sum 1; then Hd = H ./ max(H(:))
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2
    x, y = np.meshgrid(t, t)
    g = np.exp(-(x * x + y * y) / (2.0 * alpha * alpha))
    g[g < np.finfo(np.float64).eps * g.max()] = 0.0
    g = g / g.sum()
    hd = g / g.max()
    # fsamp2(Hd): Hd is the frequency response on the N-point DFT grid (centred):
    # h = rot90(fftshift(ifft2(rot90(fftshift(rot90(Hd,2)),2))),2); rot90(fftshift(rot90(.,2)),2)
    # is the inverse fftshift for odd N
    h = np.rot90(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(hd))), 2).real
    # fwind1(Hd, kaiser(N)) with one 1-D window: Huang's method. The window is made circularly
    # symmetric by sampling the 1-D window at the radius: t = (-(N-1)/2:(N-1)/2)*(2/(N-1)) (the
    # window's own abscissae, -1..1), t12 = sqrt(t1.^2 + t2.^2), w = interp1(t, w1, t12, 'linear'),
    # w = 0 where t12 > 1 (the corners); then h = fsamp2(Hd) .* w. No renormalisation follows.
    tw = (np.arange(n, dtype=np.float64) - (n - 1) / 2) * (2.0 / (n - 1))
    t1, t2 = np.meshgrid(tw, tw)
    t12 = np.sqrt(t1 * t1 + t2 * t2)
    outside = (t12 < tw[0]) | (t12 > tw[-1])
    w = np.interp(np.where(outside, 0.0, t12), tw, np.kaiser(n, 0.5))  # MATLAB kaiser(N): beta 0.5
    w[outside] = 0.0
    out = np.ascontiguousarray(h * w)
    out.setflags(write=False)
    return out


def toolbox_mtf_kernel(gain_nyquist: float, ratio: int, size: int = DEFAULT_KERNEL_SIZE) -> torch.Tensor:
    """The MATLAB pansharpening toolbox's MTF filter (``genMTF.m``, Vivone et al. 2021; used by its
    ``MTF.m`` and so by ``D_lambda_K.m`` / ``HQNR.m``), reproduced step by step: size x size
    float64, not separable, **not** normalised to sum 1.

    Construction (toolbox code, MATLAB Image Processing Toolbox semantics):

    1. ``alpha = sqrt(((N-1) * (fcut/2))^2 / (-2 ln G))`` with ``fcut = 1/ratio``;
    2. ``H = fspecial('gaussian', N, alpha)``; ``Hd = H / max(H)``: a Gaussian of standard
       deviation ``alpha`` *bins*, read as a frequency response;
    3. ``h = fwind1(Hd, kaiser(N))``: ``fsamp2(Hd)`` (inverse 2-D DFT of the centred samples, so
       bin ``k`` is ``k/N`` cycles per pixel) times a circularly symmetric window made from the
       1-D Kaiser window (beta 0.5) by Huang's method: ``w(r)`` linearly interpolated at the radius
       ``r = sqrt(t1^2 + t2^2)`` of the window's own -1..1 abscissae, 0 outside the unit circle.

    What follows from it. ``Hd`` equals ``G`` at ``(N-1) fcut / 2`` bins, i.e. at
    ``(N-1)/N`` of the Nyquist frequency ``1/(2 ratio)`` (bin 5 of 41 for ratio 4, 40/41 of
    Nyquist); at Nyquist itself the response is ``G^((N/(N-1))^2)`` (0.2817 for G = 0.3, 0.1369
    for G = 0.15). The window takes 0.1-0.2 % off the DC gain (sum 0.9988 for G = 0.3 at ratio 4),
    which the toolbox leaves in. ``gain_nyquist = 1`` gives the unit impulse (the toolbox would
    divide by log(1) = 0). :func:`mtf_kernel` is ddif's own (separable, gain exact at Nyquist,
    sum 1); ``mtf_filter(..., kernel="toolbox")`` filters with this one.
    """
    g = _check_gain(gain_nyquist)
    _check_ratio(ratio)
    if not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd integer >= 3, got {size!r}")
    return torch.from_numpy(_toolbox_kernel_np(g, ratio, size).copy())


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # float64 stays float64; float32 / half types are filtered in float32 (plenty for imagery and
    # several times faster than float64 convolution on CPU).
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _separable_depthwise(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Filter every channel of x (B, C, H, W) with its own separable kernel outer(taps[c], taps[c]),
    replicate boundaries (the toolbox's ``imfilter(..., 'replicate')``), output the same size."""
    c = x.shape[1]
    k = taps.shape[-1]
    pad = k // 2
    w = taps.to(device=x.device, dtype=x.dtype)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), w.view(c, 1, k, 1), groups=c)
    return F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), w.view(c, 1, 1, k), groups=c)


def _gains_for(gains, channels: int) -> list[float]:
    if isinstance(gains, (int, float)) and not isinstance(gains, bool):
        return [_check_gain(gains)] * channels
    if isinstance(gains, torch.Tensor):
        gains = gains.flatten().tolist()
    try:
        values = [float(g) for g in gains]
    except TypeError:
        raise ValueError(f"gains: expected a number or a sequence of numbers, got {type(gains).__name__}") from None
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"gains: got {len(values)} MTF gains for an image with {channels} bands")
    return [_check_gain(g) for g in values]


def _depthwise_2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter every channel of x (B, C, H, W) with its own 2-D kernel (C, k, k), replicate
    boundaries (``imfilter(..., 'replicate')``: correlation, the same as convolution for these
    symmetric kernels), output the same size."""
    c, k = kernels.shape[0], kernels.shape[-1]
    pad = k // 2
    w = kernels.to(device=x.device, dtype=x.dtype).view(c, 1, k, k)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), w, groups=c)


def mtf_filter(
    img: torch.Tensor,
    gains: float | Sequence[float],
    ratio: int,
    size: int = DEFAULT_KERNEL_SIZE,
    kernel: str = "ddif",
) -> torch.Tensor:
    """Low-pass every band of ``img`` (B, C, H, W) with its MTF-matched Gaussian.

    ``gains``: one gain at Nyquist per band, or a single value for all bands. ``kernel``:
    ``"ddif"`` (default) is :func:`mtf_kernel`, run as a depthwise separable convolution;
    ``"toolbox"`` is the MATLAB toolbox's :func:`toolbox_mtf_kernel`, run as a full 2-D depthwise
    convolution (it is not separable). Replicate padding (the toolbox's
    ``imfilter(..., 'replicate')``), computed in float64 for float64 input and in float32
    otherwise; the output has the input's shape and dtype.
    """
    x = check_image("img", img)
    _check_ratio(ratio)
    check_mtf_kernel(kernel)
    values = _gains_for(gains, x.shape[1])
    xc = x.to(_compute_dtype(x))
    if kernel == "toolbox":
        kernels = torch.stack([toolbox_mtf_kernel(g, ratio, size) for g in values])
        return _depthwise_2d(xc, kernels).to(img.dtype)
    taps = torch.stack([_mtf_kernel_1d(g, ratio, size) for g in values])
    return _separable_depthwise(xc, taps).to(img.dtype)


# --------------------------------------------------------------------------------------------
# decimation and Wald degradation
# --------------------------------------------------------------------------------------------
def _check_divisible(name: str, x: torch.Tensor, ratio: int) -> None:
    h, w = x.shape[-2:]
    if h % ratio or w % ratio:
        raise ValueError(
            f"{name}: spatial size {h}x{w} is not divisible by the ratio {ratio}; "
            f"crop it to a multiple of {ratio} first"
        )


def decimate(img: torch.Tensor, ratio: int) -> torch.Tensor:
    """Keep pixel ``ratio * i + ratio // 2`` in each direction (the toolbox's nearest decimation).

    ``img`` (B, C, H, W) with H and W divisible by ``ratio``; returns (B, C, H/ratio, W/ratio).
    """
    x = check_image("img", img, check_finite=False)
    _check_ratio(ratio)
    _check_divisible("img", x, ratio)
    o = ratio // 2
    return x[..., o::ratio, o::ratio]


def degrade(
    img: torch.Tensor, sensor: str, ratio: int, kind: str = "ms", size: int = DEFAULT_KERNEL_SIZE
) -> torch.Tensor:
    """MTF-matched low-pass then decimation by ``ratio`` (Wald et al. 1997; toolbox ``resize_images``).

    ``kind="ms"`` uses the sensor's per-band MS gains (the band count must match the sensor's);
    ``kind="pan"`` uses its PAN gain on every band of ``img`` (so a 3-band RGB guide works too).
    Unlike the toolbox's ``resize_images``, which shrinks the PAN with MATLAB's bicubic
    ``imresize``, the PAN is degraded here with its own MTF filter and the same decimation as the
    MS, as the issue's protocol asks (Aiazzi et al. 2006 recommend MTF-matched filters for both).
    """
    x = check_image("img", img)
    _check_ratio(ratio)
    _check_divisible("img", x, ratio)
    if kind == "ms":
        gains = list(sensor_gains(sensor, x.shape[1])[0])
    elif kind == "pan":
        gains = [SENSOR_MTF[_resolve_sensor(sensor)][1]] * x.shape[1]
    else:
        raise ValueError(f"kind: expected 'ms' or 'pan', got {kind!r}")
    return decimate(mtf_filter(x, gains, ratio, size), ratio)


# --------------------------------------------------------------------------------------------
# interpolation
# --------------------------------------------------------------------------------------------
def _pad_index(n: int, pad: int, mode: str, device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if mode == "circular":
        return i % n
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "symmetric":  # half-sample mirror, edge sample repeated (MATLAB 'symmetric')
        i = i % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)
    raise ValueError(f"padding: expected one of {_INTERP23_PADDINGS}, got {mode!r}")


_INTERP23_PAD = 6  # low-res samples needed on each side by the 12 odd taps


def _interp23_odd_taps(dtype, device) -> torch.Tensor:
    """Weights of x[i-5 .. i+6] for the new sample halfway between x[i] and x[i+1]: the kernel's
    odd taps (offsets -11, -9, ..., -1, 1, ..., 11, times 2 for the inserted zeros). The even taps
    are 0 except the centre (1), so existing samples pass through unchanged."""
    odd = torch.tensor(_INTERP23_HALF[1::2], dtype=torch.float64) * 2.0  # offsets 1, 3, ..., 11
    return torch.cat([odd.flip(0), odd]).to(device=device, dtype=dtype)


def _upsample2_last(x: torch.Tensor, phase: int, padding: str, taps: torch.Tensor) -> torch.Tensor:
    """Upsample the last axis by 2 with the 23-tap kernel; input sample i lands on 2 i + phase.

    Polyphase form of zero insertion + 23-tap filtering: the output interleaves the input samples
    with the half-way samples ``mid[i] = sum_j taps[j] x[i - 5 + j]`` (between x[i] and x[i+1]).
    """
    n = x.shape[-1]
    lead = x.shape[:-1]
    p = _INTERP23_PAD
    xp = x.index_select(-1, _pad_index(n, p, padding, x.device)).reshape(-1, 1, n + 2 * p)
    mid = F.conv1d(xp, taps.view(1, 1, -1)).reshape(*lead, -1)  # mid[s] is between x[s-1] and x[s]
    if phase == 1:  # out[2i] = mid between x[i-1] and x[i], out[2i+1] = x[i]
        pairs = (mid[..., :n], x)
    else:  # out[2i] = x[i], out[2i+1] = mid between x[i] and x[i+1]
        pairs = (x, mid[..., 1 : n + 1])
    return torch.stack(pairs, dim=-1).reshape(*lead, 2 * n)


def interp23tap(img: torch.Tensor, ratio: int, padding: str = "circular") -> torch.Tensor:
    """Upsample (B, C, h, w) by ``ratio`` (a power of 2) with the toolbox's 23-tap polynomial kernel.

    Aiazzi et al. 2002 (kernel), Vivone et al. 2015/2021 (``interp23tap.m``). The image is
    upsampled by 2 in ``log2(ratio)`` separable stages: zero insertion then filtering with the
    symmetric 23-tap half-band kernel (interpolating: original samples pass unchanged). Phases as
    in the toolbox: the first stage puts sample i at 2 i + 1, later stages at 2 i, so overall
    low-resolution pixel i lands on ``ratio * i + ratio // 2`` (matching :func:`decimate`).

    ``padding``: boundary handling of each stage. ``"circular"`` (default) is the toolbox's
    ``imfilter(..., 'circular')`` and reproduces the PanCollection ``lms`` convention (the image
    wraps around, which leaves faint ringing at borders of non-periodic images);
    ``"symmetric"`` (mirror) or ``"replicate"`` avoid the wrap-around.

    (The toolbox loops ``for z = 1:ratio/2``, which is log2(ratio) only for ratios 2 and 4; here
    the number of stages is always log2(ratio).)
    """
    x = check_image("img", img)
    _check_ratio(ratio)
    if ratio & (ratio - 1):
        raise ValueError(f"interp23tap needs a power-of-2 ratio, got {ratio}; use method='bicubic'")
    if padding not in _INTERP23_PADDINGS:
        raise ValueError(f"padding: expected one of {_INTERP23_PADDINGS}, got {padding!r}")
    y = x.to(_compute_dtype(x))
    taps = _interp23_odd_taps(y.dtype, y.device)
    stages = int(math.log2(ratio))
    for stage in range(stages):
        phase = 1 if stage == 0 else 0
        y = _upsample2_last(y, phase, padding, taps)  # width
        y = _upsample2_last(y.transpose(-1, -2), phase, padding, taps).transpose(-1, -2)  # height
    return y.to(img.dtype).contiguous()


def _keys_weights(t: torch.Tensor, a: float = -0.5) -> list[torch.Tensor]:
    """Keys cubic convolution weights for neighbours at offsets -1, 0, 1, 2 of fractional part t."""

    def k(d):
        d = d.abs()
        return torch.where(
            d <= 1,
            (a + 2) * d**3 - (a + 3) * d**2 + 1,
            torch.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, torch.zeros_like(d)),
        )

    return [k(t + 1), k(t), k(1 - t), k(2 - t)]


def _cubic_upsample_axis(x: torch.Tensor, ratio: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    p = torch.arange(n * ratio, device=x.device, dtype=torch.float64)  # weights in float64, then cast
    u = (p - ratio // 2) / ratio  # low-res coordinate of each output pixel
    i0 = torch.floor(u)
    t = u - i0
    i0 = i0.long()
    shape = [1] * x.dim()
    shape[dim] = n * ratio
    out = torch.zeros(x.shape[:dim] + (n * ratio,) + x.shape[dim + 1 :], dtype=x.dtype, device=x.device)
    for offset, w in zip((-1, 0, 1, 2), _keys_weights(t)):
        idx = (i0 + offset).clamp(0, n - 1)
        out = out + x.index_select(dim, idx) * w.to(x.dtype).view(shape)
    return out


def bicubic_upsample(img: torch.Tensor, ratio: int) -> torch.Tensor:
    """Bicubic (Keys, a = -0.5, as MATLAB / PyTorch) upsampling by any integer ``ratio``, on the
    toolbox's grid (low-res pixel i on ``ratio * i + ratio // 2``), replicate boundaries.

    ``F.interpolate(..., align_corners=False)`` would put pixel i on ``ratio * i + (ratio - 1)/2``,
    half a pixel away from the grid the MTF decimation uses for even ratios, a shift that costs
    every fusion method accuracy (Aiazzi et al., "Bi-cubic interpolation for shift-free
    pan-sharpening", ISPRS J. 86, 2013); this version is shift-free and interpolating.
    """
    x = check_image("img", img)
    _check_ratio(ratio)
    y = x.to(_compute_dtype(x))
    y = _cubic_upsample_axis(y, ratio, 2)
    y = _cubic_upsample_axis(y, ratio, 3)
    return y.to(img.dtype)


def upsample(img: torch.Tensor, ratio: int, method: str = "interp23tap", padding: str = "circular") -> torch.Tensor:
    """Upsample (B, C, h, w) to (B, C, ratio*h, ratio*w): ``method`` is ``"interp23tap"``
    (:func:`interp23tap`, power-of-2 ratios, ``padding`` as there) or ``"bicubic"``
    (:func:`bicubic_upsample`, any integer ratio)."""
    if method == "interp23tap":
        return interp23tap(img, ratio, padding=padding)
    if method == "bicubic":
        return bicubic_upsample(img, ratio)
    raise ValueError(f"method: expected 'interp23tap' or 'bicubic', got {method!r}")


# --------------------------------------------------------------------------------------------
# Wald protocol
# --------------------------------------------------------------------------------------------
@dataclass
class ReducedResolution:
    """A reduced-resolution (Wald protocol) sample; shapes for ratio r and MS size h x w:

    ``gt`` (B, C, h, w) the original MS (the reference); ``ms`` (B, C, h/r, w/r) the degraded MS;
    ``lms`` (B, C, h, w) ``ms`` upsampled back; ``pan`` (B, P, h, w) the degraded PAN.
    Unbatched inputs give unbatched (C, ., .) tensors.
    """

    gt: torch.Tensor
    ms: torch.Tensor
    lms: torch.Tensor
    pan: torch.Tensor


def simulate_reduced_resolution(
    ms: torch.Tensor,
    pan: torch.Tensor,
    ratio: int = 4,
    sensor: str = "wv3",
    interpolation: str = "interp23tap",
    padding: str = "circular",
) -> ReducedResolution:
    """Wald-protocol simulation (Wald et al. 1997, as in the toolbox's ``resize_images``).

    ``ms``: the real MS image at MS resolution, (B, C, h, w) or (C, h, w); ``pan``: the real PAN
    at PAN resolution, (B, P, r h, r w) or (P, r h, r w). Both are degraded by ``ratio`` with their
    sensor's MTF-matched filter and decimated (:func:`degrade`), and the degraded MS is upsampled
    back to the degraded PAN's grid with ``interpolation`` (``"interp23tap"`` or ``"bicubic"``;
    ``padding`` for interp23tap). The original MS becomes the ground truth. ``h`` and ``w`` must be
    divisible by ``ratio``.
    """
    _check_ratio(ratio)
    if ratio < 2:
        raise ValueError(f"ratio: the Wald protocol needs a ratio >= 2, got {ratio}")
    unbatched = isinstance(ms, torch.Tensor) and ms.dim() == 3
    ms4 = check_image("ms", ms, allow_unbatched=True)
    if isinstance(pan, torch.Tensor) and pan.dim() == 3 and not unbatched:
        raise ValueError(f"pan: got an unbatched (P, H, W) tensor with a batched ms of shape {tuple(ms.shape)}")
    if isinstance(pan, torch.Tensor) and pan.dim() == 4 and unbatched:
        raise ValueError(f"pan: got a batched (B, P, H, W) tensor with an unbatched ms of shape {tuple(ms.shape)}")
    pan4 = check_image("pan", pan, allow_unbatched=True, batch=ms4.shape[0])
    h, w = ms4.shape[-2:]
    if tuple(pan4.shape[-2:]) != (ratio * h, ratio * w):
        raise ValueError(
            f"pan: spatial size {pan4.shape[-2]}x{pan4.shape[-1]} does not match ratio {ratio} times the MS "
            f"size {h}x{w} (expected {ratio * h}x{ratio * w})"
        )
    if h % ratio or w % ratio:
        raise ValueError(
            f"ms: spatial size {h}x{w} is not divisible by the ratio {ratio}; crop both images "
            f"(MS to a multiple of {ratio}, PAN to {ratio} times that)"
        )
    ms_lr = degrade(ms4, sensor, ratio, kind="ms")
    pan_lr = degrade(pan4, sensor, ratio, kind="pan")
    lms = upsample(ms_lr, ratio, method=interpolation, padding=padding)
    out = ReducedResolution(gt=ms4, ms=ms_lr, lms=lms, pan=pan_lr)
    if unbatched:
        out = ReducedResolution(gt=ms4[0], ms=ms_lr[0], lms=lms[0], pan=pan_lr[0])
    return out
