"""Fused kernels for the DDIF hot paths, each with a plain-PyTorch ``<op>_ref`` beside it.

- :mod:`kernels.haar_dwt`: Haar DWT / wavelet condition;
- :mod:`kernels.fwm`: FWM linear attention (context and apply);
- :mod:`kernels.style_conv`: CSM style-modulated 1x1 convolution.

Importing this package does no work and never fails for lack of Triton, CUDA or a compiler.
"""
