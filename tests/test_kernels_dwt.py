"""Triton Haar DWT / wavelet-condition kernels against their PyTorch references.

Without a GPU the kernels run in Triton's CPU interpreter: ``TRITON_INTERPRET=1`` is set here,
before any kernel module is imported (they are imported lazily, at first use, so setting it at
collection time is early enough). It is set only when no GPU is visible, where Triton could not
launch anything else anyway, so it cannot change what other test modules see. With a GPU the same
tests run on CUDA tensors, and the ``cuda`` tests run too.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ddif.kernels._triton_utils import can_launch  # noqa: E402
from ddif.kernels.haar_dwt import (fused_ready, haar_dwt2_fused, haar_dwt2_ref, haar_idwt2_fused,  # noqa: E402
                                   haar_idwt2_ref, wavelet_condition_fused, wavelet_condition_ref)
from ddif.models.layers import WaveletCondition  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ATOL32 = 2e-6  # fp32: sums of at most 16 terms, one rounding apart

pytestmark = pytest.mark.skipif(not can_launch(DEVICE, "ddif.kernels._haar_triton"),
                                reason="Triton cannot launch here (not installed, or no GPU and no interpreter)")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _pair(batch, bands, guide, h, w, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    lms = torch.rand(batch, bands, h, w, generator=g, dtype=torch.float32)
    pan = torch.rand(batch, guide, h, w, generator=g, dtype=torch.float32)
    return lms.to(DEVICE, dtype), pan.to(DEVICE, dtype)


# (batch, bands, guide bands, H, W, detail order): the presets' channel counts, odd and
# non-square sizes, batch 1 and 3
CONDITION_CASES = [
    pytest.param(1, 4, 1, 16, 16, "HDV", id="4band-pan-16x16-b1"),
    pytest.param(3, 8, 1, 12, 20, "HDV", id="8band-pan-12x20-b3"),
    pytest.param(1, 31, 3, 13, 9, "HVD", id="31band-rgb-odd13x9-b1"),
    pytest.param(3, 4, 3, 7, 10, "DVH", id="4band-3guide-odd7x10-b3"),
    pytest.param(1, 8, 1, 1, 5, "HDV", id="8band-pan-1x5-b1"),
]


@pytest.mark.parametrize("batch,bands,guide,h,w,order", CONDITION_CASES)
@pytest.mark.parametrize("fuse_resize", [True, False], ids=["one-pass", "half+interpolate"])
def test_wavelet_condition_forward_and_grad(batch, bands, guide, h, w, order, fuse_resize):
    lms, pan = _pair(batch, bands, guide, h, w)
    lms.requires_grad_(True)
    pan.requires_grad_(True)
    out = wavelet_condition_fused(lms, pan, order, fuse_resize)
    ref = wavelet_condition_ref(lms, pan, order)
    assert out.shape == ref.shape == (batch, bands + 3 * guide, h, w)
    assert _max_err(out, ref) <= ATOL32
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (lms, pan), grad)
    want = torch.autograd.grad(ref, (lms, pan), grad)
    for name, a, b in zip(("lms", "pan"), got, want):
        assert _max_err(a, b) <= 4 * ATOL32, name


def test_wavelet_condition_non_contiguous_inputs():
    lms, pan = _pair(2, 8, 1, 14, 10)
    lms_t = lms.transpose(-1, -2).contiguous().transpose(-1, -2)  # column-major planes
    both = torch.cat([lms, pan], dim=1)
    pan_view = both[:, 8:]  # a channel slice: batch stride is not C*H*W
    assert not lms_t.is_contiguous() and not pan_view.is_contiguous()
    out = wavelet_condition_fused(lms_t, pan_view, "HDV")
    assert _max_err(out, wavelet_condition_ref(lms, pan, "HDV")) <= ATOL32


def test_wavelet_condition_double_backward():
    """The backward op is linear in the incoming gradient; its own backward is the forward map."""
    lms, pan = _pair(1, 4, 1, 9, 8)
    lms.requires_grad_(True)
    pan.requires_grad_(True)
    grad = torch.randn(1, 7, 9, 8, device=DEVICE, requires_grad=True)

    def second(fn):
        g_lms, g_pan = torch.autograd.grad(fn(lms, pan, "HDV"), (lms, pan), grad, create_graph=True)
        return torch.autograd.grad((g_lms * g_lms).sum() + (g_pan * g_pan).sum(), grad)[0]

    assert _max_err(second(wavelet_condition_fused), second(wavelet_condition_ref)) <= 1e-5


@pytest.mark.parametrize("shape", [(2, 3, 10, 14), (1, 5, 9, 7), (3, 1, 1, 1)], ids=["even", "odd", "1x1"])
def test_haar_dwt2_and_its_backward(shape):
    x = torch.randn(*shape, device=DEVICE, requires_grad=True)
    got = haar_dwt2_fused(x)
    want = haar_dwt2_ref(x)
    grads = [torch.randn_like(t) for t in want]
    for a, b in zip(got, want):
        assert _max_err(a, b) <= ATOL32
    assert _max_err(torch.autograd.grad(got, x, grads)[0], torch.autograd.grad(want, x, grads)[0]) <= ATOL32


def test_haar_idwt2_inverts_and_backward():
    bands = [torch.randn(3, 4, 5, 6, device=DEVICE, requires_grad=True) for _ in range(4)]
    x = haar_idwt2_fused(*bands)
    ref = haar_idwt2_ref(*bands)
    assert x.shape == (3, 4, 10, 12)
    assert _max_err(x, ref) <= ATOL32
    for a, b in zip(haar_dwt2_fused(x), bands):  # the orthonormal transform round-trips
        assert _max_err(a, b) <= 1e-5
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(x, bands, grad), torch.autograd.grad(ref, bands, grad)):
        assert _max_err(a, b) <= ATOL32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_within_twice_eager_error(dtype):
    """The fused op in fp16 / bf16 is at most ~2x as far from the fp32 result as eager PyTorch
    in the same precision (it accumulates in fp32 and rounds once, so usually closer)."""
    lms, pan = _pair(2, 8, 1, 15, 12)
    exact = wavelet_condition_ref(lms, pan, "HDV")
    eager = wavelet_condition_ref(lms.to(dtype), pan.to(dtype), "HDV")
    fused = wavelet_condition_fused(lms.to(dtype), pan.to(dtype), "HDV")
    assert fused.dtype == dtype
    eps = torch.finfo(dtype).eps * exact.abs().max().item()
    assert _max_err(fused, exact) <= 2 * _max_err(eager, exact) + 0.5 * eps


def test_module_dispatch_and_fallback():
    lms, pan = _pair(1, 4, 1, 8, 8)
    module = WaveletCondition("HDV")
    module.fused = True
    assert fused_ready(lms, pan)
    assert _max_err(module(lms, pan), wavelet_condition_ref(lms, pan, "HDV")) <= ATOL32
    # float64 is not a kernel dtype: the module falls back to the reference, exactly
    l64, p64 = lms.double(), pan.double()
    assert not fused_ready(l64, p64)
    assert torch.equal(module(l64, p64), wavelet_condition_ref(l64, p64, "HDV"))


@pytest.mark.parametrize("call,match", [
    (lambda l, p: wavelet_condition_fused(l[0], p), "lms: expected a \\(B, C, H, W\\)"),
    (lambda l, p: wavelet_condition_fused(l, p[:, :, :-1]), "guide: shape"),
    (lambda l, p: wavelet_condition_fused(l, p, "HHV"), "detail_order"),
    (lambda l, p: wavelet_condition_fused(l.double(), p), "float16, bfloat16 or float32"),
    (lambda l, p: wavelet_condition_fused(l.long(), p), "floating-point"),
    (lambda l, p: haar_idwt2_fused(l, l, l, l[:, :2]), "d: shape"),
    (lambda l, p: torch.ops.ddif.haar_synthesis(l, l, l, l, 20, 16), "cannot make a 20x16 image"),
    (lambda l, p: torch.ops.ddif.wavelet_condition_backward(l, 4, 1, 8, 8, "HDV", True), "does not match"),
], ids=["3d-lms", "size-mismatch", "bad-order", "float64", "integer", "band-mismatch", "synthesis-size",
        "backward-grad-shape"])
def test_bad_input_is_a_clear_value_error(call, match):
    lms, pan = _pair(1, 4, 1, 8, 8)
    with pytest.raises(ValueError, match=match):
        call(lms, pan)


def test_custom_ops_pass_opcheck():
    lms, pan = _pair(2, 4, 1, 7, 6)
    lms.requires_grad_(True)
    pan.requires_grad_(True)
    x = torch.randn(2, 3, 7, 6, device=DEVICE, requires_grad=True)
    bands = [torch.randn(2, 3, 4, 3, device=DEVICE, requires_grad=True) for _ in range(4)]
    grad = torch.randn(2, 7, 7, 6, device=DEVICE)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    for op, args in ((torch.ops.ddif.wavelet_condition.default, (lms, pan, "HVD", True)),
                     (torch.ops.ddif.wavelet_condition.default, (lms, pan, "HDV", False)),
                     (torch.ops.ddif.wavelet_condition_backward.default, (grad, 4, 1, 7, 6, "HDV", True)),
                     (torch.ops.ddif.haar_dwt2.default, (x,)),
                     (torch.ops.ddif.haar_synthesis.default, (*bands, 7, 6))):
        torch.library.opcheck(op, args, test_utils=checks)


def test_custom_op_aot_dispatch():
    """One AOT-autograd (torch.compile's path) check with dynamic shapes: the fake kernels and
    the autograd registration agree with the real op."""
    lms, pan = _pair(1, 4, 1, 6, 6)
    lms.requires_grad_(True)
    torch.library.opcheck(torch.ops.ddif.wavelet_condition.default, (lms, pan, "HDV", True),
                          test_utils=("test_aot_dispatch_dynamic",))


def test_references_gradcheck_float64():
    """fast_mode: finite differences against random Jacobian-vector products (full Jacobians cost
    seconds here for no extra power on linear maps)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    pan = torch.rand(1, 1, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: haar_dwt2_ref(t), (x,), fast_mode=True)
    bands = [torch.rand(1, 2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    assert torch.autograd.gradcheck(haar_idwt2_ref, bands, fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: wavelet_condition_ref(a, b, "HVD"), (x, pan), fast_mode=True)


def test_export_uses_the_reference():
    """torch.export sees plain aten ops (the wrapper falls back to the reference while exporting),
    so ONNX export needs no custom op."""
    module = WaveletCondition("HDV")
    module.fused = True
    lms, pan = _pair(1, 4, 1, 8, 8)
    program = torch.export.export(module, (lms, pan))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("ddif" in t for t in targets), targets
    assert _max_err(program.module()(lms, pan), wavelet_condition_ref(lms, pan, "HDV")) <= ATOL32


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_cuda_large_condition(dtype):
    lms, pan = _pair(2, 31, 3, 257, 130, dtype=dtype)
    exact = wavelet_condition_ref(lms.float(), pan.float(), "HVD")
    eager = wavelet_condition_ref(lms, pan, "HVD")
    for fuse_resize in (True, False):
        fused = wavelet_condition_fused(lms, pan, "HVD", fuse_resize)
        if dtype == torch.float32:
            assert _max_err(fused, exact) <= ATOL32
        else:
            assert _max_err(fused, exact) <= 2 * _max_err(eager, exact) + 1e-3
