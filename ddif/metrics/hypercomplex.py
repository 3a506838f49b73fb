"""Q2n: the hypercomplex (Q4 / Q8) quality index of multiband images.

A. Garzelli and F. Nencini, "Hypercomplex quality assessment of multi/hyperspectral images",
IEEE GRSL 6(4), 2009; L. Alparone, S. Baronti, A. Garzelli and F. Nencini, "A global quality
measurement of pan-sharpened multispectral imagery", IEEE GRSL 1(4), 2004 (Q4); computed as in the
toolbox's ``q2n.m`` / ``onions_quality.m`` (Vivone et al., IEEE GRSM 2021).

Each pixel's spectrum (bands padded with zeros to 2^n) is a hypercomplex number. On every block
the reference's bands are normalised to zero mean and unit standard deviation, then shifted by +1,
and the same affine map is applied to the prediction. The block's index is

    Q2n_block = |sigma_zy| / (sigma_z sigma_y) * 2 sigma_z sigma_y / (sigma_z^2 + sigma_y^2)
                * 2 |m_z| |m_y| / (|m_z|^2 + |m_y|^2)

with the hypercomplex covariance sigma_zy = E[z conj(y)] - m_z conj(m_y) (unbiased, n/(n-1)),
and the index is the mean over blocks of size ``block_size`` taken every ``shift`` pixels. The
hypercomplex product is the toolbox's recursive Cayley-Dickson-type product (``onion_mult``):
for x = (a, b), y = (c, d) split into halves,
    x y = (a c - conj(d) b,  conj(a) conj(d) + c conj(b))      (N > 2)
    x y = (a c - d b,  a d + c b)                              (N = 2, the complex product)
which the index's value depends on, so it is reproduced as defined there.
"""

from __future__ import annotations

import torch

from ._common import MetricValue, finish, prepare_pair


def _conj(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[..., :1], -x[..., 1:]], dim=-1)


def hypercomplex_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The toolbox's hypercomplex product of x and y (..., N), N a power of 2, batched."""
    n = x.shape[-1]
    if n == 1:
        return x * y
    half = n // 2
    a, b = x[..., :half], _conj(x[..., half:])
    c, d = y[..., :half], _conj(y[..., half:])
    if n == 2:
        return torch.cat([a * c - d * b, a * d + c * b], dim=-1)
    first = hypercomplex_product(a, c) - hypercomplex_product(d, _conj(b))
    second = hypercomplex_product(_conj(a), d) + hypercomplex_product(c, b)
    return torch.cat([first, second], dim=-1)


def _symmetric_pad_end(x: torch.Tensor, extra_h: int, extra_w: int) -> torch.Tensor:
    # The toolbox mirrors the last rows/columns (edge included) to fill incomplete blocks.
    if extra_w:
        x = torch.cat([x, x[..., -extra_w:].flip(-1)], dim=-1)
    if extra_h:
        x = torch.cat([x, x[..., -extra_h:, :].flip(-2)], dim=-2)
    return x


def _blocks(x: torch.Tensor, block_size: int, shift: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, n, C): L blocks of n = block_size^2 pixels."""
    b, c = x.shape[:2]
    cols = torch.nn.functional.unfold(x, kernel_size=block_size, stride=shift)  # (B, C*n, L)
    return cols.view(b, c, block_size * block_size, -1).permute(0, 3, 2, 1)


def q2n_block_values(ref_blocks: torch.Tensor, fused_blocks: torch.Tensor) -> torch.Tensor:
    """Q2n of each block: inputs (..., n, N) with N a power of 2, output (...)."""
    n = ref_blocks.shape[-2]
    mean = ref_blocks.mean(dim=-2, keepdim=True)
    std = ref_blocks.std(dim=-2, keepdim=True)  # unbiased, as MATLAB std2
    std = torch.where(std == 0, torch.full_like(std, torch.finfo(std.dtype).eps), std)
    z = (ref_blocks - mean) / std + 1
    y = (fused_blocks - mean) / std + 1
    unbias = n / (n - 1)
    m_z = z.mean(dim=-2)
    m_y = y.mean(dim=-2)
    mod_mz2 = (m_z**2).sum(-1)
    mod_my2 = (m_y**2).sum(-1)
    var_sum = unbias * ((z**2).sum(-1).mean(-1) + (y**2).sum(-1).mean(-1) - mod_mz2 - mod_my2)
    mean_bias = 2 * mod_mz2.sqrt() * mod_my2.sqrt() / (mod_mz2 + mod_my2)
    cov = unbias * (hypercomplex_product(z, _conj(y)).mean(dim=-2) - hypercomplex_product(m_z, _conj(m_y)))
    flat = var_sum == 0
    q = cov.pow(2).sum(-1).sqrt() * mean_bias * 2 / torch.where(flat, torch.ones_like(var_sum), var_sum)
    return torch.where(flat, mean_bias, q)


def q2n(pred: torch.Tensor, target: torch.Tensor, block_size: int = 32, shift: int = 32) -> MetricValue:
    """Q2n index (Q4 for 4 bands, Q8 for 8 bands; 1 = perfect) of ``pred`` against ``target``.

    Inputs (C, H, W) or (B, C, H, W) on the same scale; returns a float, or a (B,) float64 tensor.
    Any band count works as in the toolbox: the bands are padded with zero bands up to the next
    power of 2 (3 -> 4, 31 -> 32; 1 band is the scalar case, a block-normalised UIQI). An image
    whose size is not a multiple of ``shift`` is mirror-padded at the bottom/right to whole
    blocks, as in ``q2n.m``. Not symmetric: ``target``'s block statistics normalise both images.
    The toolbox rounds DN images to uint16 first; floats are used as given here (the index is
    invariant to a common scale factor, so [0, 1] data and DN data give the same value up to
    that rounding).
    """
    p, t, unbatched = prepare_pair(pred, target)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size: expected an integer >= 2, got {block_size!r}")
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 1:
        raise ValueError(f"shift: expected a positive integer, got {shift!r}")
    h, w = t.shape[-2:]
    steps_h, steps_w = -(-h // shift), -(-w // shift)
    extra_h = (steps_h - 1) * shift + block_size - h
    extra_w = (steps_w - 1) * shift + block_size - w
    if extra_h > h or extra_w > w:
        raise ValueError(
            f"target: spatial size {h}x{w} is too small for block_size {block_size} "
            f"and shift {shift}; pass a smaller block_size"
        )
    if extra_h > 0 or extra_w > 0:
        p = _symmetric_pad_end(p, max(extra_h, 0), max(extra_w, 0))
        t = _symmetric_pad_end(t, max(extra_h, 0), max(extra_w, 0))
    c = t.shape[1]
    n_bands = 1 << (c - 1).bit_length()
    if n_bands != c:
        zeros = t.new_zeros(t.shape[0], n_bands - c, *t.shape[-2:])
        p = torch.cat([p, zeros], dim=1)
        t = torch.cat([t, zeros], dim=1)
    values = q2n_block_values(_blocks(t, block_size, shift), _blocks(p, block_size, shift))
    return finish(values.mean(dim=-1), unbatched)
