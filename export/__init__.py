"""Exporters for the fixed-step sampler.

- ``python -m ddif.export.onnx``: the whole sampler (condition encoding once, unrolled DDIM steps,
  final clamp) as one ONNX graph, with ``OUT.onnx.json`` spec beside it;
- ``python -m ddif.export.tensorrt``: a TensorRT engine with an optimization profile from that graph;
- ``python export/check_tensorrt.py``: build + accuracy (PSNR vs PyTorch) + timing on a GPU machine.

The runtimes that use these files live in :mod:`ddif.runtime`.
"""
