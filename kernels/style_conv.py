"""CSM (coarse-grained style modulation) of DDIF (Cao et al., 2024): a 1x1 convolution whose
output is modulated per pixel by a style computed from the condition::

    y = conv1x1(x; weight, bias) * (1 + scale) + shift

``scale`` and ``shift`` are (B, C_out, H, W) maps that depend on the condition only, so they
are computed once per image when sampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["style_modulated_conv_ref"]


def style_modulated_conv_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x (B, C_in, H, W), weight (C_out, C_in[, 1, 1]), bias (C_out,) -> (B, C_out, H, W)."""
    if weight.dim() == 2:
        weight = weight[:, :, None, None]
    return F.conv2d(x, weight, bias) * (1 + scale) + shift


class StyleModulatedConv(torch.nn.Conv2d):
    """1x1 convolution with a per-pixel style modulation in its epilogue.

    Subclasses ``nn.Conv2d`` so the parameters keep the published names (``x_conv.weight``,
    ``x_conv.bias``); ``fused=True`` selects the C++/CUDA extension where it is built.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)
        self.fused = False

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        if scale is None:
            return super().forward(x)
        return style_modulated_conv_ref(x, self.weight, self.bias, scale, shift)
