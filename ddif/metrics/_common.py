"""Shared plumbing for the metrics: input checks, batching, window statistics, the UIQI formula."""

from __future__ import annotations

import torch

from ddif.utils.validation import check_image

# what a metric returns: a Python float for an unbatched (C, H, W) input, a (B,) float64 tensor for
# a batched one
MetricValue = float | torch.Tensor


def prepare(
    name: str, x: torch.Tensor, *, like: torch.Tensor | None = None, like_name: str = "", unbatched: bool | None = None
) -> tuple[torch.Tensor, bool]:
    """Validate (C, H, W) or (B, C, H, W), return the float64 4-D tensor and whether it was unbatched."""
    if isinstance(x, torch.Tensor) and unbatched is not None and x.dim() in (3, 4) and (x.dim() == 3) != unbatched:
        want = "unbatched (C, H, W)" if unbatched else "batched (B, C, H, W)"
        raise ValueError(f"{name}: expected a {want} tensor like {like_name}, got shape {tuple(x.shape)}")
    was_unbatched = isinstance(x, torch.Tensor) and x.dim() == 3
    x4 = check_image(name, x, allow_unbatched=True)
    if like is not None and tuple(x4.shape) != tuple(like.shape):
        raise ValueError(f"{name}: shape {tuple(x4.shape)} does not match {like_name} shape {tuple(like.shape)}")
    return x4.to(torch.float64), was_unbatched


def prepare_pair(
    pred: torch.Tensor, target: torch.Tensor, pred_name: str = "pred", target_name: str = "target"
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    t, unbatched = prepare(target_name, target)
    p, _ = prepare(pred_name, pred, like=t, like_name=target_name, unbatched=unbatched)
    return p, t, unbatched


def finish(values: torch.Tensor, unbatched: bool) -> MetricValue:
    """(B,) float64 tensor for batched input, a Python float for unbatched input."""
    return float(values[0]) if unbatched else values


def box_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over every size x size window ('valid', stride 1) of x (..., H, W) via integral images."""
    c = torch.nn.functional.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return c[..., size:, size:] - c[..., :-size, size:] - c[..., size:, :-size] + c[..., :-size, :-size]


def uiqi_from_moments(
    mx: torch.Tensor, my: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, cxy: torch.Tensor
) -> torch.Tensor:
    """Universal image quality index (Wang & Bovik, IEEE SPL 9(3), 2002) from window moments.

    Q = [2 cov / (vx + vy)] * [2 mx my / (mx^2 + my^2)]. Degenerate windows as in Wang's
    ``img_qi.m`` (the toolbox's Q): a flat pair (vx + vy = 0) keeps only the luminance factor
    2 mx my / (mx^2 + my^2), and an all-zero pair gives 1. One deliberate difference: when both
    means are 0 but the variances are not, ``img_qi`` returns 1 whatever the content, here the
    luminance factor is taken as 1 and the structural factor is kept (so x against -x gives -1).
    Flatness is judged relative to the window's energy, since float rounding never gives exact zeros.
    """
    var_sum = vx + vy
    mean_sq = mx**2 + my**2
    one = torch.ones_like(var_sum)
    flat = var_sum <= 1e-12 * (mean_sq + var_sum).clamp_min(1e-300)
    luminance = torch.where(mean_sq > 0, 2 * mx * my / torch.where(mean_sq > 0, mean_sq, one), one)
    structure = torch.where(flat, one, 2 * cxy / torch.where(flat, one, var_sum))
    return structure * luminance


def check_block(name: str, x: torch.Tensor, block_size: int) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size: expected an integer >= 2, got {block_size!r}")
    h, w = x.shape[-2:]
    if h < block_size or w < block_size:
        raise ValueError(
            f"{name}: spatial size {h}x{w} is smaller than block_size {block_size}; pass a smaller block_size"
        )


def check_ratio(ratio: object) -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio: expected a positive integer scale ratio, got {ratio!r}")
    return ratio
