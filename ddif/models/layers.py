"""The network's layers whose computation has a fused kernel: each holds the parameters and a
``fused`` flag and calls the kernel package's dispatch function, which runs the fused kernel where
it can (and while no graph is being exported) and the plain-PyTorch reference elsewhere.

- :class:`WaveletCondition`: the Haar wavelet condition of FWM (``ddif.kernels.haar_dwt``);
- :class:`FWMAttention`: FWM linear attention with a cacheable context (``ddif.kernels.fwm``);
- :class:`StyleModulatedConv`: the CSM-modulated 1x1 convolution (``ddif.kernels.style_conv``).

``DDIF.set_fused_kernels(True)`` switches every one of them on.
"""

from __future__ import annotations

import torch

from ddif.kernels.fwm import fwm_apply, fwm_context
from ddif.kernels.haar_dwt import wavelet_condition
from ddif.kernels.style_conv import csm


class WaveletCondition(torch.nn.Module):
    """Computes the wavelet condition (Cao et al. 2024, FWM): the Haar detail bands of the guide
    next to the MS. ``fuse_resize`` picks the one-pass Triton kernel (DWT + bilinear resize)."""

    fuse_resize: bool = True

    def __init__(self, detail_order: str = "HDV"):
        super().__init__()
        self.detail_order = detail_order
        self.fused = False

    def forward(self, lms: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return wavelet_condition(lms, guide, self.detail_order, fused=self.fused, fuse_resize=self.fuse_resize)

    def extra_repr(self) -> str:
        return f"detail_order={self.detail_order!r}, fused={self.fused}"


class FWMAttention(torch.nn.Module):
    """FWM linear attention: ``context(k, v)`` depends on the condition only (cached once per
    image), ``forward(q, context)`` runs every denoising step."""

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads
        self.fused = False

    def context(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return fwm_context(k, v, self.heads, fused=self.fused)

    def forward(self, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return fwm_apply(q, context, self.heads, fused=self.fused)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, fused={self.fused}"


class StyleModulatedConv(torch.nn.Conv2d):
    """1x1 convolution with a per-pixel style modulation in its epilogue (CSM).

    Subclasses ``nn.Conv2d`` so the parameters keep the published names (``x_conv.weight``,
    ``x_conv.bias``); ``fused=True`` selects the C++/CUDA extension where it is built.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)
        self.fused = False

    def forward(
        self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        if scale is None:
            return super().forward(x)
        if shift is None:
            raise ValueError("StyleModulatedConv: scale was given without shift")
        return csm(x, self.weight, self.bias, scale, shift, fused=self.fused)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fused={self.fused}"
