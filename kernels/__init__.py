"""Fused kernels for the DDIF hot paths, each with a plain-PyTorch ``<op>_ref`` beside it.

- :mod:`kernels.haar_dwt`: Haar DWT / wavelet condition (Triton);
- :mod:`kernels.fwm`: FWM linear attention, context and apply (Triton);
- :mod:`kernels.style_conv`: CSM style-modulated 1x1 convolution (C++ / CUDA extension).

Importing this package does no work and never fails for lack of Triton, CUDA or a compiler.
"""
from __future__ import annotations


def available() -> dict[str, str | bool]:
    """Which fused backends are live here: name -> True, or the reason it is not."""
    return {}
