"""CSM (coarse-grained style modulation) of DDIF (Cao et al., "Diffusion model with disentangled
modulations for sharpening multispectral and hyperspectral images", Information Fusion 104, 2024,
arXiv:2304.04774): a 1x1 convolution whose output is modulated per pixel by a style computed from
the condition::

    y = conv1x1(x; weight, bias) * (1 + scale) + shift

``scale`` and ``shift`` are (B, C_out, H, W) maps that depend on the condition only, so they
are computed once per image when sampling.

Three layers, from the bottom:

1. the native kernels in ``csrc/`` (``torch.ops.ddif.csm_forward`` / ``csm_backward``; CPU
   always, CUDA when built with nvcc), compiled by ``setup.py`` into ``ddif._C`` and
   imported lazily by :func:`_load_extension`;
2. fake (meta) implementations of both ops and the autograd formula of ``csm_forward``,
   registered once on the C++ schema (``torch.library.register_fake`` / ``register_autograd``,
   when the extension is loaded), so the one op works in eager mode, under ``torch.compile``,
   ``torch.library.opcheck`` and autograd. Eager calls go to the resolved overload: no Python
   op wrapper in between (a ``custom_op`` wrapper cost ~0.1 ms per call on a CPU, as much as the
   kernel on a small feature map; the Python autograd kernel adds ~3.5 us under ``no_grad`` and
   nothing under ``inference_mode``);
3. :func:`style_modulated_conv` (autocast cast policy, export guard, layout handling) and the
   dispatch :func:`csm` (used by ``ddif.models.layers.StyleModulatedConv``), which uses it when
   ``fused=True`` and the extension is built, and otherwise :func:`style_modulated_conv_ref`
   (with one warning).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ddif.kernels._triton_utils import constant_while_tracing
from ddif.kernels.dispatch import autocast_inputs, exporting

__all__ = ["style_modulated_conv_ref", "style_modulated_conv", "csm", "CsmKernelConfig", "CONFIG", "fused_available"]

EXTENSION_MODULE = "ddif._C"


def style_modulated_conv_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """x (B, C_in, H, W), weight (C_out, C_in[, 1, 1]), bias (C_out,) -> (B, C_out, H, W)."""
    if weight.dim() == 2:
        weight = weight[:, :, None, None]
    return F.conv2d(x, weight, bias) * (1 + scale) + shift


@dataclass(frozen=True)
class CsmKernelConfig:
    """Tuning of the fused op.

    ``keep_conv_min_in_channels``: when training, the forward also stores ``conv1x1(x) + bias``
    for the backward if ``C_in`` is at least this; below it the backward recomputes the conv from
    ``x`` (a cheap GEMM at few input channels, and one (B, C_out, H, W) tensor less in memory).
    64 was measured on a 2-core AVX-512 CPU: at C_in = 32 both ways cost the same, at 64 and 128
    keeping is 10-25 % faster (fwd + bwd).
    """

    keep_conv_min_in_channels: int = 64


CONFIG = CsmKernelConfig()

# --------------------------------------------------------------------------------------------
# Layer 1: the native extension, imported on first use.
# --------------------------------------------------------------------------------------------
_ext_lock = threading.Lock()
_ext_state: dict[str, Any] = {"loaded": False, "module": None, "error": None}
_fallback_warned = False


def _load_extension():
    """The compiled ``ddif._C`` module, or None (the reason is kept for :func:`_status`)."""
    if not _ext_state["loaded"]:
        with _ext_lock:
            if not _ext_state["loaded"]:
                try:
                    _ext_state["module"] = importlib.import_module(EXTENSION_MODULE)
                    # Resolved overloads: the cheapest way to call the ops from Python.
                    _ext_state["forward"] = torch.ops.ddif.csm_forward.default
                    _ext_state["backward"] = torch.ops.ddif.csm_backward.default
                    _register_on_schema()
                except (ImportError, OSError, AttributeError) as exc:  # not built, or for another torch
                    _ext_state["module"] = None
                    _ext_state["error"] = f"{type(exc).__name__}: {exc}"
                _ext_state["loaded"] = True
    return _ext_state["module"]


@constant_while_tracing  # decided once while tracing (the loader imports and takes a lock)
def _missing_reason(device_type: str) -> str | None:
    """None when the fused op runs on ``device_type``, else why not."""
    ext = _load_extension()
    if ext is None:
        return (
            f"not built ({_ext_state['error']}); build it with "
            "`pip install --no-build-isolation -e .` (needs a C++ compiler)"
        )
    if device_type == "cpu":
        return None
    if device_type == "cuda":
        if not ext.with_cuda:
            return (
                "not built: the extension was compiled without CUDA (CPU-only torch, no nvcc, or "
                "DDIF_SKIP_CUDA_BUILD=1)"
            )
        return None
    return f"no kernel for device type {device_type!r}"


def fused_available(device: torch.device | str = "cpu") -> bool:
    """Whether ``StyleModulatedConv(fused=True)`` runs the native kernel on ``device``."""
    return _missing_reason(torch.device(device).type) is None


def _status() -> dict[str, bool | str]:
    """Backends of this module for :func:`kernels.available`: name -> True, or why not."""
    status: dict[str, bool | str] = {}
    cpu_reason = _missing_reason("cpu")
    status["csm_cpu"] = True if cpu_reason is None else f"missing: {cpu_reason}"
    cuda_reason = _missing_reason("cuda")
    if cuda_reason is None and not torch.cuda.is_available():
        cuda_reason = "built with CUDA, but no CUDA device is visible"
    status["csm_cuda"] = True if cuda_reason is None else f"missing: {cuda_reason}"
    return status


def _needed_grads(needs_input_grad, bias) -> list[bool]:
    """output_mask of the native backward: (x, weight, bias, scale)."""
    need_x, need_w, need_b, need_scale = needs_input_grad[:4]
    return [bool(need_x), bool(need_w), bool(need_b and bias is not None), bool(need_scale)]


def _grads_for_inputs(mask, grads, grad_y, need_shift):
    """(x, weight, bias, scale, shift, keep_conv) gradients from the native backward's outputs."""
    grad_x, grad_w, grad_b, grad_scale = grads if any(mask) else (None,) * 4
    return (
        grad_x if mask[0] else None,
        grad_w if mask[1] else None,
        grad_b if mask[2] else None,
        grad_scale if mask[3] else None,
        grad_y if need_shift else None,
        None,
    )


# --------------------------------------------------------------------------------------------
# Layer 2: fake (meta) implementations and autograd, registered once on the C++ schema.
# --------------------------------------------------------------------------------------------
def _check_fake_shapes(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> list[int]:
    torch._check(x.dim() == 4, lambda: f"x must be 4-D (B, C_in, H, W), got {tuple(x.shape)}")
    torch._check(weight.dim() in (2, 4), lambda: f"weight must be (C_out, C_in[, 1, 1]), got {tuple(weight.shape)}")
    torch._check(weight.shape[1] == x.shape[1], lambda: "weight and x disagree on C_in")
    out_shape = [x.shape[0], weight.shape[0], x.shape[2], x.shape[3]]
    torch._check(list(scale.shape) == out_shape, lambda: f"scale must have shape {out_shape}")
    return out_shape


def _forward_fake(x, weight, bias, scale, shift, keep_conv=False):
    """(y, conv): conv = conv1x1(x) + bias when ``keep_conv`` (for the backward), else empty."""
    out_shape = _check_fake_shapes(x, weight, scale)
    y = x.new_empty(out_shape)
    conv = x.new_empty(out_shape) if keep_conv else x.new_empty((0,))
    return y, conv


def _backward_fake(grad_out, x, weight, bias, scale, conv, output_mask):
    """(grad_x, grad_weight, grad_bias, grad_scale); None (an undefined tensor) where not asked."""
    _check_fake_shapes(x, weight, scale)
    want_x, want_w, want_b, want_s = output_mask
    return (
        x.new_empty(x.shape) if want_x else None,
        weight.new_empty(weight.shape) if want_w else None,
        weight.new_empty((weight.shape[0],)) if (want_b and bias is not None) else None,
        scale.new_empty(scale.shape) if want_s else None,
    )


def _setup_context(ctx, inputs, output):
    x, weight, bias, scale, _shift, keep_conv = inputs
    _y, conv = output
    ctx.mark_non_differentiable(conv)
    ctx.save_for_backward(x, weight, bias, scale, conv if keep_conv else None)


def _backward(ctx, grad_y, _grad_conv):
    x, weight, bias, scale, conv = ctx.saved_tensors
    mask = _needed_grads(ctx.needs_input_grad, bias)
    grads = None
    if any(mask):
        grads = torch.ops.ddif.csm_backward.default(grad_y.contiguous(), x, weight, bias, scale, conv, mask)
    return _grads_for_inputs(mask, grads, grad_y, ctx.needs_input_grad[4])


_registered = False


def _register_on_schema() -> None:
    """Fake and autograd for ``ddif::csm_forward`` / ``csm_backward``, once the extension has
    defined them (a registration needs the schema to exist)."""
    global _registered
    if _registered:
        return
    torch.library.register_fake("ddif::csm_forward", _forward_fake)
    torch.library.register_fake("ddif::csm_backward", _backward_fake)
    torch.library.register_autograd("ddif::csm_forward", _backward, setup_context=_setup_context)
    _registered = True


# --------------------------------------------------------------------------------------------
# Layer 3: the user-facing function and its dispatch.
# --------------------------------------------------------------------------------------------
def style_modulated_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Fused :func:`style_modulated_conv_ref` (same arguments, same result) on the native kernels.

    Under autocast, every input is cast to the autocast dtype (like the eager convolution would
    be); ``scale`` / ``shift`` may broadcast to (B, C_out, H, W); any memory layout is accepted.
    ONNX / ``torch.export`` see the reference, which exporters understand.
    """
    if exporting():
        return style_modulated_conv_ref(x, weight, bias, scale, shift)
    x, weight, scale, shift = autocast_inputs(x, weight, scale, shift)
    if bias is not None:
        (bias,) = autocast_inputs(bias)
    if x.dim() == 4 and weight.dim() in (2, 4):
        out_shape = (x.shape[0], weight.shape[0], x.shape[2], x.shape[3])
        scale, shift = (_broadcast_map(t, out_shape) for t in (scale, shift))
    requires_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, scale))
    keep_conv = requires_grad and x.dim() > 1 and x.shape[1] >= CONFIG.keep_conv_min_in_channels
    args = (
        x.contiguous(),
        weight.contiguous(),
        bias.contiguous() if bias is not None else None,
        scale.contiguous(),
        shift.contiguous(),
        keep_conv,
    )
    reason = _missing_reason(x.device.type)
    if reason is not None:
        raise RuntimeError(f"ddif CSM extension for {x.device.type} tensors: {reason}")
    return torch.ops.ddif.csm_forward.default(*args)[0]


def _broadcast_map(t: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """Expand a broadcastable scale / shift; leave a wrong shape to the kernel's shape check."""
    if t.shape == out_shape:
        return t
    try:
        if torch.broadcast_shapes(t.shape, out_shape) == torch.Size(out_shape):
            return t.expand(out_shape)
    except RuntimeError:
        pass
    return t


@constant_while_tracing  # under torch.compile: warns while tracing instead of being traced
def _warn_fallback_once(reason: str) -> bool:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            f"StyleModulatedConv(fused=True): the fused CSM kernel is unavailable ({reason}); "
            "using the PyTorch reference instead (same results, slower). This is reported once.",
            RuntimeWarning,
            stacklevel=2,
        )
    return True


def csm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    fused: bool = False,
) -> torch.Tensor:
    """CSM: :func:`style_modulated_conv` on the native kernels when ``fused`` and they are built for
    ``x``'s device, else :func:`style_modulated_conv_ref` (the fallback is reported once)."""
    if fused:
        reason = _missing_reason(x.device.type)
        if reason is None:
            return style_modulated_conv(x, weight, bias, scale, shift)
        _warn_fallback_once(reason)
    return style_modulated_conv_ref(x, weight, bias, scale, shift)
