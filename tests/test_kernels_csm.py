"""CSM style-modulated convolution: native CPU / CUDA op (csrc/) against style_modulated_conv_ref.

The native tests need the extension built by setup.py (``pip install --no-build-isolation -e .``);
they are skipped with the reason when it is missing, except that a machine with a C++ compiler
must have built it (test_extension_built_when_compiler_present).
"""
from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch

from ddif.kernels import style_conv as sc
from ddif.kernels.style_conv import style_modulated_conv, style_modulated_conv_ref
from ddif.models.layers import StyleModulatedConv


def _native_reason(device_type: str = "cpu") -> str | None:
    return sc._missing_reason(device_type)


needs_native = pytest.mark.skipif(_native_reason() is not None,
                                  reason=f"CSM extension unavailable: {_native_reason()}")
cuda_reason = (None if torch.cuda.is_available() and _native_reason("cuda") is None else
               "no CUDA device" if not torch.cuda.is_available() else f"CUDA kernels unavailable: {_native_reason('cuda')}")


def make_inputs(batch, c_in, c_out, height, width, *, dtype=torch.float32, device="cpu", bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype=dtype, device=device)

    x = rnd(batch, c_in, height, width)
    weight = rnd(c_out, c_in, 1, 1, std=c_in ** -0.5)
    b = rnd(c_out, std=0.1) if bias else None
    scale = rnd(batch, c_out, height, width, std=0.5)
    shift = rnd(batch, c_out, height, width, std=0.5)
    return [x, weight, b, scale, shift]


def forward_and_grads(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    y = fn(*leaves)
    y.backward(grad_out)
    return y.detach(), [t.grad if t is not None else None for t in leaves]


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs error relative to the expected tensor's magnitude (float64 arithmetic)."""
    a, e = actual.double(), expected.double()
    return ((a - e).abs().max() / e.abs().max().clamp_min(1e-12)).item()


GRAD_NAMES = ["x", "weight", "bias", "scale", "shift"]

# (batch, C_in, C_out, H, W): band counts of the sensors (4, 8, 31) and DDIF's CSM widths.
SHAPES = {
    "bands4_to8_odd7x5_b1": (1, 4, 8, 7, 5),
    "bands8_to32_nonsquare12x20_b3": (3, 8, 32, 12, 20),
    "bands31_to32_odd17x9_b3": (3, 31, 32, 17, 9),
    "ddif32_to32_odd33x31_b1": (1, 32, 32, 33, 31),
    "ddif32_to64_24x40_b1": (1, 32, 64, 24, 40),
    "ddif64_to128_16x16_b3": (3, 64, 128, 16, 16),
    "ddif128_to128_8x12_b1": (1, 128, 128, 8, 12),
    "tiny5_to3_1x1_b2": (2, 5, 3, 1, 1),
}


@pytest.fixture(params=["recompute_conv", "keep_conv"])
def conv_policy(request, monkeypatch):
    """Run both backward strategies: recompute conv from x, or keep the forward's conv."""
    threshold = 10 ** 9 if request.param == "recompute_conv" else 0
    monkeypatch.setattr(sc, "CONFIG", sc.CsmKernelConfig(keep_conv_min_in_channels=threshold))
    return request.param


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------
def test_reference_gradcheck_float64():
    inputs = [t.requires_grad_(True) for t in make_inputs(2, 3, 4, 3, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(style_modulated_conv_ref, inputs)


def test_reference_accepts_2d_weight():
    x, w, b, s, t = make_inputs(1, 4, 6, 5, 5)
    torch.testing.assert_close(style_modulated_conv_ref(x, w[:, :, 0, 0], b, s, t),
                               style_modulated_conv_ref(x, w, b, s, t))


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
def test_extension_built_when_compiler_present():
    if os.environ.get("DDIF_SKIP_NATIVE_BUILD", "") not in ("", "0"):
        pytest.skip("DDIF_SKIP_NATIVE_BUILD is set")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler here, so no extension is expected")
    assert _native_reason() is None, (f"a C++ compiler is present but the CSM extension is not importable: "
                                      f"{_native_reason()}")


def test_import_is_light():
    """Importing the module (done by ``import ddif``) loads neither the extension nor torch._dynamo."""
    import subprocess
    import sys

    code = ("import sys, ddif.kernels.style_conv; "
            "print('torch._dynamo' in sys.modules, 'ddif._C' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_status_reports_every_backend():
    status = sc._status()
    assert set(status) == {"csm_cpu", "csm_cuda"}
    for value in status.values():
        assert value is True or (isinstance(value, str) and value)


# ---------------------------------------------------------------------------------------------
# Fused CPU op against the reference, float32
# ---------------------------------------------------------------------------------------------
@needs_native
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_fused_matches_reference_fp32(shape, conv_policy):
    inputs = make_inputs(*shape)
    grad_out = torch.randn(shape[0], shape[2], shape[3], shape[4], generator=torch.Generator().manual_seed(1))
    y_ref, g_ref = forward_and_grads(style_modulated_conv_ref, inputs, grad_out)
    y, g = forward_and_grads(style_modulated_conv, inputs, grad_out)
    assert max_rel_err(y, y_ref) < 1e-5
    for name, a, e in zip(GRAD_NAMES, g, g_ref):
        assert a.shape == e.shape and a.dtype == e.dtype, name
        assert max_rel_err(a, e) < 2e-5, f"grad {name}: {max_rel_err(a, e):.2e}"


@needs_native
def test_fused_without_bias_and_with_2d_weight():
    x, w, _, s, t = make_inputs(3, 31, 32, 9, 11, bias=False)
    grad_out = torch.randn(3, 32, 9, 11)
    y_ref, g_ref = forward_and_grads(style_modulated_conv_ref, [x, w[:, :, 0, 0], None, s, t], grad_out)
    y, g = forward_and_grads(style_modulated_conv, [x, w[:, :, 0, 0], None, s, t], grad_out)
    assert max_rel_err(y, y_ref) < 1e-5
    assert g[2] is None and g[1].shape == (32, 31)
    for name, a, e in zip(GRAD_NAMES, g, g_ref):
        if e is not None:
            assert max_rel_err(a, e) < 2e-5, name


@needs_native
def test_fused_only_some_inputs_require_grad():
    """The backward computes only what is needed (output_mask) and still gets those right."""
    x, w, b, s, t = make_inputs(2, 8, 16, 6, 10)
    w.requires_grad_(True)
    s.requires_grad_(True)
    y = style_modulated_conv(x, w, b, s, t)
    gw, gs = torch.autograd.grad(y.square().sum(), (w, s))
    w2, s2 = w.detach().requires_grad_(True), s.detach().requires_grad_(True)
    y_ref = style_modulated_conv_ref(x, w2, b, s2, t)
    gw_ref, gs_ref = torch.autograd.grad(y_ref.square().sum(), (w2, s2))
    assert max_rel_err(gw, gw_ref) < 2e-5 and max_rel_err(gs, gs_ref) < 2e-5


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_propagates_nan(dtype):
    """A NaN pixel stays NaN in every output channel (no silently finite output)."""
    x, w, b, s, t = [u.to(dtype) for u in make_inputs(1, 8, 16, 5, 40)]
    x[0, 3, 2, 37] = float("nan")
    y = style_modulated_conv(x, w, b, s, t)
    assert torch.isnan(y[0, :, 2, 37]).all()
    y[0, :, 2, 37] = 0
    assert torch.isfinite(y).all()


@needs_native
def test_fused_empty_batch():
    x, w, b, s, t = make_inputs(0, 4, 8, 5, 5)
    assert style_modulated_conv(x, w, b, s, t).shape == (0, 8, 5, 5)


# ---------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------
def _non_contiguous_cases():
    def channels_last(x, w, b, s, t):
        return [x.to(memory_format=torch.channels_last), w, b, s.to(memory_format=torch.channels_last), t]

    def transposed_hw(x, w, b, s, t):  # (H, W) -> (W, H) views
        return [x.transpose(2, 3), w, b, s.transpose(2, 3), t.transpose(2, 3)]

    def strided_channels(x, w, b, s, t):  # every other channel of a wider tensor, transposed 2-D weight
        def every_other(u):
            return torch.stack([u, torch.zeros_like(u)], dim=2).flatten(1, 2)[:, ::2]

        return [every_other(x), w[:, :, 0, 0].t().contiguous().t(), b, every_other(s), t]

    def broadcast_maps(x, w, b, s, t):  # one style map for the whole batch
        return [x, w, b, s[:1], t[:1, :, :1, :1]]

    return {"channels_last": channels_last, "transposed_hw": transposed_hw,
            "strided_channels": strided_channels, "broadcast_maps": broadcast_maps}


@needs_native
@pytest.mark.parametrize("layout", list(_non_contiguous_cases()), ids=list(_non_contiguous_cases()))
def test_fused_non_contiguous_inputs(layout):
    inputs = _non_contiguous_cases()[layout](*make_inputs(3, 8, 16, 7, 9))
    x = inputs[0]
    grad_out = torch.randn(x.shape[0], 16, x.shape[2], x.shape[3])
    y_ref, g_ref = forward_and_grads(style_modulated_conv_ref, inputs, grad_out)
    y, g = forward_and_grads(style_modulated_conv, inputs, grad_out)
    assert max_rel_err(y, y_ref) < 1e-5
    for name, a, e in zip(GRAD_NAMES, g, g_ref):
        assert a.shape == e.shape, name
        assert max_rel_err(a, e) < 2e-5, f"{layout} grad {name}"


# ---------------------------------------------------------------------------------------------
# Reduced precision: within ~2x the eager op's error against a float32 reference
# ---------------------------------------------------------------------------------------------
def _eager_supports(dtype: torch.dtype) -> bool:
    try:
        x, w, b, s, t = make_inputs(1, 2, 2, 2, 2, dtype=dtype)
        style_modulated_conv_ref(x, w, b, s, t)
        return True
    except RuntimeError:
        return False


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [SHAPES["bands31_to32_odd17x9_b3"], (1, 64, 128, 12, 10)],
                         ids=["bands31_to32", "ddif64_to128"])
def test_fused_reduced_precision_error_within_2x_eager(dtype, shape, conv_policy):
    if not _eager_supports(dtype):
        pytest.skip(f"eager PyTorch has no CPU {dtype} convolution to compare with")
    inputs32 = make_inputs(*shape)
    inputs_lp = [t.to(dtype) if t is not None else None for t in inputs32]
    grad32 = torch.randn(shape[0], shape[2], shape[3], shape[4], generator=torch.Generator().manual_seed(2))
    y32, g32 = forward_and_grads(style_modulated_conv_ref, inputs32, grad32)
    y_eager, g_eager = forward_and_grads(style_modulated_conv_ref, inputs_lp, grad32.to(dtype))
    y_fused, g_fused = forward_and_grads(style_modulated_conv, inputs_lp, grad32.to(dtype))
    assert y_fused.dtype == dtype and all(g.dtype == dtype for g in g_fused)
    # A floor of a quarter ulp keeps the comparison meaningful where eager happens to be exact.
    floor = torch.finfo(dtype).eps / 4
    pairs = [("y", y_fused, y_eager, y32)] + list(zip(GRAD_NAMES, g_fused, g_eager, g32))
    for name, fused, eager, ref in pairs:
        err_fused, err_eager = max_rel_err(fused, ref), max_rel_err(eager, ref)
        assert err_fused <= 2 * max(err_eager, floor), f"{name}: fused {err_fused:.2e} vs eager {err_eager:.2e}"


# ---------------------------------------------------------------------------------------------
# gradcheck (float64) and torch.library.opcheck on the native op
# ---------------------------------------------------------------------------------------------
@needs_native
def test_fused_gradcheck_float64(conv_policy):
    inputs = [t.requires_grad_(True) for t in make_inputs(2, 5, 4, 3, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(style_modulated_conv, inputs)


@needs_native
@pytest.mark.parametrize("keep_conv", [False, True], ids=["recompute_conv", "keep_conv"])
def test_opcheck_forward(keep_conv):
    x, w, b, s, t = make_inputs(2, 6, 8, 5, 7)
    args = [u.requires_grad_(True) for u in (x, w, b, s, t)]
    torch.library.opcheck(torch.ops.ddif.csm_forward.default, (*args, keep_conv))


@needs_native
@pytest.mark.parametrize("keep_conv", [False, True], ids=["recompute_conv", "keep_conv"])
def test_custom_op_autograd_matches_reference(keep_conv):
    """The C++ op with its registered autograd (what eager and torch.compile run) gives the reference results."""
    shape = (2, 31, 32, 9, 7)
    inputs = make_inputs(*shape)
    grad_out = torch.randn(2, 32, 9, 7)
    y_ref, g_ref = forward_and_grads(style_modulated_conv_ref, inputs, grad_out)
    y, g = forward_and_grads(lambda *a: torch.ops.ddif.csm_forward.default(*a, keep_conv)[0], inputs, grad_out)
    assert max_rel_err(y, y_ref) < 1e-5
    for name, a, e in zip(GRAD_NAMES, g, g_ref):
        assert max_rel_err(a, e) < 2e-5, name


@needs_native
def test_opcheck_backward():
    x, w, b, s, _ = make_inputs(2, 6, 8, 5, 7)
    grad_out = torch.randn(2, 8, 5, 7)
    conv = style_modulated_conv_ref(x, w, b, torch.zeros_like(s), torch.zeros_like(s))
    torch.library.opcheck(torch.ops.ddif.csm_backward.default, (grad_out, x, w, b, s, None, [True, True, True, True]))
    torch.library.opcheck(torch.ops.ddif.csm_backward.default, (grad_out, x, w, b, s, conv, [False, True, False, True]))


# ---------------------------------------------------------------------------------------------
# Every TORCH_CHECK raises with its message
# ---------------------------------------------------------------------------------------------
def _bad_forward_cases():
    def case(mutate, message):
        return mutate, message

    return {
        "x_not_4d": case(lambda a: a.__setitem__(0, a[0][0]), r"x must be 4-D"),
        "integer_dtype": case(lambda a: [a.__setitem__(i, a[i].to(torch.int32)) for i in (0, 1, 2, 3, 4)],
                              r"unsupported dtype"),
        "dtype_mismatch": case(lambda a: a.__setitem__(3, a[3].double()), r"scale has dtype Double but x has dtype Float"),
        "weight_in_channels": case(lambda a: a.__setitem__(1, a[1][:, :3].contiguous()), r"weight has 3 input channels but x has 4"),
        "weight_kernel_3x3": case(lambda a: a.__setitem__(1, a[1].expand(-1, -1, 3, 3).contiguous()),
                                  r"weight must be \(C_out, C_in\) or \(C_out, C_in, 1, 1\)"),
        "bias_size": case(lambda a: a.__setitem__(2, a[2][:5]), r"bias must have shape \(6,\)"),
        "scale_shape": case(lambda a: a.__setitem__(3, a[3][:, :5].contiguous()), r"scale must have shape \(B, C_out, H, W\)"),
        "shift_shape": case(lambda a: a.__setitem__(4, a[4][:1]), r"shift must have shape \(B, C_out, H, W\)"),
        "x_not_contiguous": case(lambda a: a.__setitem__(0, a[0].transpose(2, 3)), r"x must be contiguous"),
        "shift_not_contiguous": case(lambda a: a.__setitem__(4, a[4].to(memory_format=torch.channels_last)),
                                     r"shift must be contiguous"),
    }


@needs_native
@pytest.mark.parametrize("case", list(_bad_forward_cases()), ids=list(_bad_forward_cases()))
def test_native_forward_checks(case):
    mutate, message = _bad_forward_cases()[case]
    args = make_inputs(2, 4, 6, 5, 5)
    mutate(args)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ddif.csm_forward(*args, False)


@needs_native
def test_native_backward_checks():
    x, w, b, s, _ = make_inputs(2, 4, 6, 5, 5)
    mask = [True, True, True, True]
    with pytest.raises(RuntimeError, match=r"grad_out must have the output's shape"):
        torch.ops.ddif.csm_backward(torch.zeros(2, 6, 5, 4), x, w, b, s, None, mask)
    with pytest.raises(RuntimeError, match=r"conv \(kept by the forward\) must have the output's shape"):
        torch.ops.ddif.csm_backward(torch.zeros(2, 6, 5, 5), x, w, b, s, torch.zeros(2, 6, 5, 4), mask)
    with pytest.raises(RuntimeError, match=r"grad_out has dtype Double but x has dtype Float"):
        torch.ops.ddif.csm_backward(torch.zeros(2, 6, 5, 5, dtype=torch.float64), x, w, b, s, None, mask)
    with pytest.raises(RuntimeError, match=r"x must be 4-D"):
        torch.ops.ddif.csm_backward(torch.zeros(2, 6, 5, 5), x[0], w, b, s, None, mask)


@needs_native
def test_wrapper_reports_wrong_scale_shape():
    x, w, b, s, t = make_inputs(2, 4, 6, 5, 5)
    with pytest.raises(RuntimeError, match=r"scale must have shape"):
        style_modulated_conv(x, w, b, s[:, :, :4], t)


# ---------------------------------------------------------------------------------------------
# Module, autocast, export guard, model integration
# ---------------------------------------------------------------------------------------------
@needs_native
def test_module_fused_matches_reference():
    torch.manual_seed(0)
    module = StyleModulatedConv(8, 16)
    x, _, _, s, t = make_inputs(2, 8, 16, 6, 6)
    expected = module(x, s, t)
    module.fused = True
    torch.testing.assert_close(module(x, s, t), expected, rtol=1e-5, atol=1e-5)
    assert module(x).shape == (2, 16, 6, 6)  # without style it is a plain 1x1 conv
    with pytest.raises(ValueError, match="scale was given without shift"):
        module(x, s)


@needs_native
def test_autocast_bf16_through_wrapper():
    torch.manual_seed(0)
    module = StyleModulatedConv(32, 32)
    module.fused = True
    x, _, _, s, t = make_inputs(1, 32, 32, 9, 9)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x, s, t)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and module.weight.grad.dtype == torch.float32
    with torch.no_grad():
        expected = style_modulated_conv_ref(x, module.weight, module.bias, s, t)
    assert max_rel_err(y.float(), expected) < 2e-2


@needs_native
def test_export_sees_reference():
    module = StyleModulatedConv(4, 8)
    module.fused = True
    x, _, _, s, t = make_inputs(1, 4, 8, 5, 5)
    exported = torch.export.export(module, (x, s, t))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("ddif" in target for target in targets), targets
    torch.testing.assert_close(exported.module()(x, s, t), style_modulated_conv_ref(x, module.weight, module.bias, s, t))


@needs_native
def test_ddif_model_fused_csm_matches_reference(tiny_model):
    x_t = torch.randn(2, 4, 16, 16)
    lms, pan = torch.rand(2, 4, 16, 16), torch.rand(2, 1, 16, 16)
    t = torch.tensor([3, 250])
    with torch.no_grad():
        expected = tiny_model(x_t, t, lms, pan)
        csm = [m for m in tiny_model.modules() if isinstance(m, StyleModulatedConv)]
        assert csm, "the tiny model has CSM blocks"
        for m in csm:
            m.fused = True
        actual = tiny_model(x_t, t, lms, pan)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@needs_native
def test_torch_compile_fullgraph():
    module = StyleModulatedConv(16, 8)
    module.fused = True
    compiled = torch.compile(module, fullgraph=True)
    x, _, _, s, t = make_inputs(2, 16, 8, 6, 6)
    x.requires_grad_(True)
    y = compiled(x, s, t)
    y.sum().backward()
    torch.testing.assert_close(y, style_modulated_conv_ref(x, module.weight, module.bias, s, t), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_fullgraph_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(sc, "_ext_state", {"loaded": True, "module": None, "error": "ImportError: simulated"})
    monkeypatch.setattr(sc, "_fallback_warned", False)
    module = StyleModulatedConv(16, 8)
    module.fused = True
    compiled = torch.compile(module, fullgraph=True)
    x, _, _, s, t = make_inputs(2, 16, 8, 6, 6)
    with pytest.warns(RuntimeWarning, match="simulated") as record:
        y = compiled(x, s, t)
        compiled(x, s, t)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    torch.testing.assert_close(y, style_modulated_conv_ref(x, module.weight, module.bias, s, t))


# ---------------------------------------------------------------------------------------------
# Fallback when the extension is missing
# ---------------------------------------------------------------------------------------------
def test_fallback_warns_once_and_matches_reference(monkeypatch):
    monkeypatch.setattr(sc, "_ext_state", {"loaded": True, "module": None, "error": "ImportError: simulated"})
    monkeypatch.setattr(sc, "_fallback_warned", False)
    module = StyleModulatedConv(4, 8)
    module.fused = True
    x, _, _, s, t = make_inputs(2, 4, 8, 5, 5)
    with pytest.warns(RuntimeWarning, match="fused CSM kernel is unavailable.*simulated") as record:
        first = module(x, s, t)
        second = module(x, s, t)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    expected = style_modulated_conv_ref(x, module.weight, module.bias, s, t)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(x, s, t)  # still silent afterwards
    status = sc._status()
    assert "simulated" in status["csm_cpu"] and "simulated" in status["csm_cuda"]
    assert not sc.fused_available("cpu")


# ---------------------------------------------------------------------------------------------
# CUDA (collected everywhere, run where a GPU and the CUDA kernels exist)
# ---------------------------------------------------------------------------------------------
CUDA_SHAPES = {"bands8_to32_odd_b3": (3, 8, 32, 33, 17), "ddif64_to128_b1": (1, 64, 128, 40, 24),
               "ddif128_to128_b2": (2, 128, 128, 16, 16), "bands31_to32_1x1_b1": (1, 31, 32, 1, 1)}


@pytest.mark.cuda
@pytest.mark.skipif(cuda_reason is not None, reason=str(cuda_reason))
@pytest.mark.parametrize("shape", list(CUDA_SHAPES.values()), ids=list(CUDA_SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.usefixtures("conv_policy")
def test_cuda_fused_matches_reference(shape, dtype):
    # The reference is float64 on the GPU: eager float32 convolutions may run in TF32 there.
    inputs64 = make_inputs(*shape, dtype=torch.float64, device="cuda")
    inputs = [t.to(dtype) if t is not None else None for t in inputs64]
    grad64 = torch.randn(shape[0], shape[2], shape[3], shape[4], device="cuda", dtype=torch.float64)
    y64, g64 = forward_and_grads(style_modulated_conv_ref, inputs64, grad64)
    y_eager, g_eager = forward_and_grads(style_modulated_conv_ref, inputs, grad64.to(dtype))
    y, g = forward_and_grads(style_modulated_conv, inputs, grad64.to(dtype))
    assert y.dtype == dtype and all(t.dtype == dtype for t in g)
    pairs = [("y", y, y_eager, y64)] + list(zip(GRAD_NAMES, g, g_eager, g64))
    for name, fused, eager, ref in pairs:
        err = max_rel_err(fused, ref)
        if dtype == torch.float32:
            assert err < 2e-5, f"{name}: {err:.2e}"  # fp32 FMA accumulation, no TF32
        else:
            floor = torch.finfo(dtype).eps / 4
            assert err <= 2 * max(max_rel_err(eager, ref), floor), f"{name}: {err:.2e}"


@pytest.mark.cuda
@pytest.mark.skipif(cuda_reason is not None, reason=str(cuda_reason))
def test_cuda_gradcheck_float64_and_device_checks():
    inputs = [t.requires_grad_(True) for t in make_inputs(2, 5, 6, 3, 4, dtype=torch.float64, device="cuda")]
    assert torch.autograd.gradcheck(style_modulated_conv, inputs)
    x, w, b, s, t = make_inputs(2, 4, 6, 5, 5, device="cuda")
    with pytest.raises(RuntimeError, match=r"scale must be a CUDA tensor for this kernel, got a tensor on cpu"):
        torch.ops.ddif.csm_forward(x, w, b, s.cpu(), t, False)
    torch.library.opcheck(torch.ops.ddif.csm_forward.default, (x, w, b, s, t, True))
