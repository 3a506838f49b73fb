"""Triton FWM kernels (context, apply, their backward passes) against the PyTorch references, and
a tiny DDIF with every fused kernel switched on.

Without a GPU the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` is set here
before any kernel module is imported; only when no GPU is visible, where Triton can launch
nothing else). With a GPU the same tests run on CUDA tensors, and the ``cuda`` tests run too.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ddif.kernels._triton_utils import can_launch  # noqa: E402
from ddif.kernels.fwm import (fused_ready, fwm_apply_fused, fwm_apply_ref, fwm_context_fused,  # noqa: E402
                              fwm_context_ref)
from ddif.models.layers import FWMAttention  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

pytestmark = pytest.mark.skipif(not can_launch(DEVICE, "ddif.kernels._fwm_triton"),
                                reason="Triton cannot launch here (not installed, or no GPU and no interpreter)")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return _max_err(a, b) / max(b.abs().max().item(), 1e-30)


def _features(batch, dim, h, w, n=3, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(batch, dim, h, w, generator=g)).to(DEVICE) for _ in range(n)]


class OpRecorder(TorchDispatchMode):
    """Records the names of the operators dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func))
        return func(*args, **(kwargs or {}))


# (batch, dim, heads, H, W): head widths d = 8 (two heads share a tile), 12, 16, 24, 32 as in the
# WV3 decoder; odd and non-square sizes; batch 1 and 3
FWM_CASES = [
    pytest.param(1, 64, 8, 16, 16, id="d8-16x16-b1"),
    pytest.param(3, 96, 8, 9, 13, id="d12-odd9x13-b3"),
    pytest.param(1, 32, 2, 7, 20, id="d16-7x20-b1"),
    pytest.param(2, 192, 8, 5, 6, id="d24-5x6-b2"),
    pytest.param(1, 256, 8, 4, 3, id="d32-4x3-b1"),
]


@pytest.mark.parametrize("batch,dim,heads,h,w", FWM_CASES)
def test_context_and_apply_forward_and_grad(batch, dim, heads, h, w):
    q, k, v = (t.requires_grad_(True) for t in _features(batch, dim, h, w))
    ctx = fwm_context_fused(k, v, heads)
    ctx_ref = fwm_context_ref(k, v, heads)
    assert ctx.shape == ctx_ref.shape == (batch, heads, dim // heads, dim // heads)
    assert _rel_err(ctx, ctx_ref) <= 1e-5
    g_ctx = torch.randn_like(ctx_ref)
    for name, a, b in zip("kv", torch.autograd.grad(ctx, (k, v), g_ctx), torch.autograd.grad(ctx_ref, (k, v), g_ctx)):
        assert _rel_err(a, b) <= 1e-5, name

    context = ctx_ref.detach().requires_grad_(True)
    out = fwm_apply_fused(q, context, heads)
    out_ref = fwm_apply_ref(q, context, heads)
    assert _rel_err(out, out_ref) <= 1e-5
    g_out = torch.randn_like(out_ref)
    got = torch.autograd.grad(out, (q, context), g_out)
    want = torch.autograd.grad(out_ref, (q, context), g_out)
    for name, a, b in zip(("q", "context"), got, want):
        assert _rel_err(a, b) <= 1e-5, name


def test_non_contiguous_inputs():
    """k, v as the two halves of one kv tensor (strided channels, the model's case) and q with
    column-major planes."""
    kv, q = _features(2, 64, 10, 12, n=2)
    kv = torch.cat([kv, -kv.flip(1)], dim=1)
    k, v = kv.chunk(2, dim=1)
    q_t = q.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not k.is_contiguous() and not q_t.is_contiguous()
    ctx = fwm_context_fused(k, v, 8)
    assert _rel_err(ctx, fwm_context_ref(k.contiguous(), v.contiguous(), 8)) <= 1e-5
    ctx_t = ctx.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert _rel_err(fwm_apply_fused(q_t, ctx_t, 8), fwm_apply_ref(q, ctx, 8)) <= 1e-5


def test_precomputed_context_mode():
    """The sampler's cache: the context is computed once (fused), then applied to new queries,
    also in another precision than the queries."""
    attn = FWMAttention(heads=8)
    attn.fused = True
    q1, q2, k, v = _features(2, 64, 8, 8, n=4)
    ctx = attn.context(k, v)
    for q in (q1, q2):
        assert _rel_err(attn(q, ctx), fwm_apply_ref(q, fwm_context_ref(k, v, 8), 8)) <= 1e-5
    half = attn(q1.half(), ctx)  # fp16 queries, fp32 cached context
    assert half.dtype == torch.float16
    assert _rel_err(half, fwm_apply_ref(q1, ctx, 8)) <= 2e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_within_twice_eager_error(dtype):
    """Forward and gradients in fp16 / bf16: at most ~2x as far from the fp32 result as eager
    PyTorch in the same precision."""
    q, k, v = _features(2, 64, 12, 10)
    g_out = torch.randn(2, 64, 12, 10, device=DEVICE)

    def run(fn_ctx, fn_apply, cast):
        qq, kk, vv = (cast(t).detach().requires_grad_(True) for t in (q, k, v))
        out = fn_apply(qq, fn_ctx(kk, vv, 8), 8)
        grads = torch.autograd.grad(out, (qq, kk, vv), cast(g_out))
        return [out, *grads]

    exact = run(fwm_context_ref, fwm_apply_ref, lambda t: t)
    eager = run(fwm_context_ref, fwm_apply_ref, lambda t: t.to(dtype))
    fused = run(fwm_context_fused, fwm_apply_fused, lambda t: t.to(dtype))
    for name, f, e, x in zip(("out", "dq", "dk", "dv"), fused, eager, exact):
        assert f.dtype == dtype, name
        floor = 0.5 * torch.finfo(dtype).eps * x.abs().max().item()
        assert _max_err(f, x) <= 2 * _max_err(e, x) + floor, name


def test_autocast_policy():
    """Under torch.autocast the fused ops run in the autocast dtype (fp32 accumulation inside),
    and gradients reach the fp32 leaves."""
    device_type = DEVICE.type
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    q, k, v = (t.requires_grad_(True) for t in _features(1, 32, 8, 8))
    attn = FWMAttention(heads=4)
    attn.fused = True
    with torch.autocast(device_type, dtype=dtype):
        assert fused_ready(q, k, v)
        out = attn(q, attn.context(k, v))
    assert out.dtype == dtype
    exact = fwm_apply_ref(q, fwm_context_ref(k, v, 4), 4)
    low = fwm_apply_ref(q.to(dtype), fwm_context_ref(k.to(dtype), v.to(dtype), 4), 4)
    assert _max_err(out, exact) <= 2 * _max_err(low, exact) + 1e-3
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in (q, k, v))


def test_module_falls_back_for_float64():
    q, k, v = (t.double() for t in _features(1, 16, 4, 4))
    attn = FWMAttention(heads=2)
    attn.fused = True
    assert not fused_ready(k, v)
    ctx = attn.context(k, v)
    assert torch.equal(ctx, fwm_context_ref(k, v, 2))
    assert torch.equal(attn(q, ctx), fwm_apply_ref(q, ctx, 2))


@pytest.mark.parametrize("call,match", [
    (lambda q, k, v: fwm_context_fused(k, v, 3), "heads=3"),
    (lambda q, k, v: fwm_context_fused(k, v[:, :, :-1], 8), "v: shape"),
    (lambda q, k, v: fwm_context_fused(k[0], v[0], 8), "k: expected a \\(B, dim, H, W\\)"),
    (lambda q, k, v: fwm_apply_fused(q, torch.zeros(1, 8, 4, 4, device=q.device), 8), "context: expected shape"),
    (lambda q, k, v: fwm_apply_fused(q.double(), torch.zeros(1, 8, 2, 2, device=q.device), 8), "float64"),
], ids=["heads", "kv-mismatch", "3d", "context-shape", "float64"])
def test_bad_input_is_a_clear_value_error(call, match):
    q, k, v = _features(1, 16, 4, 4)
    with pytest.raises(ValueError, match=match):
        call(q, k, v)


def test_custom_ops_pass_opcheck():
    q, k, v = (t.requires_grad_(True) for t in _features(2, 32, 5, 6))
    ctx = fwm_context_ref(k, v, 2).detach().requires_grad_(True)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.ddif.fwm_context.default, (k, v, 2), test_utils=checks)
    torch.library.opcheck(torch.ops.ddif.fwm_apply.default, (q, ctx, 2), test_utils=checks)
    _, lse_row = torch.ops.ddif.fwm_context(k, v, 2)
    _, lse_col = torch.ops.ddif.fwm_apply(q, ctx, 2)
    torch.library.opcheck(torch.ops.ddif.fwm_context_backward.default,
                          (torch.randn_like(ctx), k.detach(), v.detach(), lse_row, 2), test_utils=checks)
    torch.library.opcheck(torch.ops.ddif.fwm_apply_backward.default,
                          (torch.randn_like(q), q.detach(), ctx.detach(), lse_col, 2), test_utils=checks)


def test_custom_op_aot_dispatch():
    q, k, v = (t.requires_grad_(True) for t in _features(1, 16, 4, 5))
    ctx = fwm_context_ref(k, v, 1).detach().requires_grad_(True)
    torch.library.opcheck(torch.ops.ddif.fwm_apply.default, (q, ctx, 1), test_utils=("test_aot_dispatch_dynamic",))


def test_references_gradcheck_float64():
    """fast_mode: finite differences against random Jacobian-vector products."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b: fwm_context_ref(a, b, 2), (k, v), fast_mode=True)
    ctx = torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c: fwm_apply_ref(a, c, 2), (q, ctx), fast_mode=True)


def test_export_uses_the_reference():
    attn = FWMAttention(heads=2)
    attn.fused = True

    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, q, k, v):
            return self.attn(q, self.attn.context(k, v))

    q, k, v = _features(1, 16, 4, 6)
    program = torch.export.export(Both(), (q, k, v))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("ddif" in t for t in targets), targets
    assert _rel_err(program.module()(q, k, v), fwm_apply_ref(q, fwm_context_ref(k, v, 2), 2)) <= 1e-6


def test_torch_compile_fullgraph_keeps_the_fused_ops():
    """Dynamo traces the modules without graph breaks and keeps the custom ops in the graph
    (the launch decision is a constant while tracing)."""
    from ddif.kernels.haar_dwt import wavelet_condition_ref
    from ddif.models.layers import WaveletCondition

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    attn = FWMAttention(heads=2)
    condition = WaveletCondition("HDV")
    attn.fused = condition.fused = True

    def step(q, k, v, lms, pan):
        return attn(q, attn.context(k, v)), condition(lms, pan)

    q, k, v = _features(1, 16, 6, 8)
    lms, pan = torch.rand(1, 4, 6, 8, device=DEVICE), torch.rand(1, 1, 6, 8, device=DEVICE)
    out, cond = torch.compile(step, backend=record, fullgraph=True)(q, k, v, lms, pan)
    targets = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    assert {"ddif.fwm_context", "ddif.fwm_apply", "ddif.wavelet_condition"} <= targets, targets
    assert _rel_err(out, fwm_apply_ref(q, fwm_context_ref(k, v, 2), 2)) <= 1e-5
    assert _max_err(cond, wavelet_condition_ref(lms, pan, "HDV")) <= 2e-6


def test_aot_graph_sees_the_triton_kernels():
    """The fused ops are ``triton_op``s: under AOT autograd (inductor's input) a GPU build
    decomposes them into their Triton kernel launches, so inductor schedules the kernels; Triton's
    CPU interpreter cannot launch on fake tensors, so there each op stays one opaque node."""
    from torch._dynamo.backends.common import aot_autograd

    from ddif.kernels._triton_utils import kernels_interpreted
    from ddif.kernels.haar_dwt import wavelet_condition_fused, wavelet_condition_ref

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def step(q, k, v, lms, pan):
        return fwm_apply_fused(q, fwm_context_fused(k, v, 2), 2), wavelet_condition_fused(lms, pan)

    q, k, v = _features(1, 16, 6, 8)
    lms, pan = torch.rand(1, 4, 6, 8, device=DEVICE), torch.rand(1, 1, 6, 8, device=DEVICE)
    out, cond = torch.compile(step, backend=aot_autograd(fw_compiler=record), fullgraph=True)(q, k, v, lms, pan)
    targets = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    ours = {"ddif.fwm_context.default", "ddif.fwm_apply.default", "ddif.wavelet_condition.default"}
    if kernels_interpreted("ddif.kernels._fwm_triton"):
        assert ours <= targets, targets
    else:
        assert not ours & targets, targets
        assert any("triton_kernel_wrapper" in t for t in targets), targets
    assert _rel_err(out, fwm_apply_ref(q, fwm_context_ref(k, v, 2), 2)) <= 1e-5
    assert _max_err(cond, wavelet_condition_ref(lms, pan, "HDV")) <= 2e-6


# ----------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_pair():
    from conftest import tiny_preset

    from ddif.models import DDIF

    torch.manual_seed(0)
    ref = DDIF(tiny_preset(bands=4, guide=1))
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "cond_inj.body.3" in name:  # CSM's zero-initialised output conv: make the condition matter
                p.normal_(0, 0.05)
    ref = ref.to(DEVICE)
    fused = copy.deepcopy(ref).set_fused_kernels(True)
    return ref, fused


def _tiny_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    lms, pan, gt = (torch.rand(2, c, 8, 8, generator=g).to(DEVICE) for c in (4, 1, 4))
    return lms, pan, gt


def test_tiny_ddif_fused_matches_reference(tiny_pair):
    ref, fused = tiny_pair
    lms, pan, _ = _tiny_batch()
    x_t = torch.randn(2, 4, 8, 8, device=DEVICE)
    t = torch.tensor([10, 400], device=DEVICE)
    ref.eval()
    fused.eval()
    with torch.no_grad():
        want = ref(x_t, t, lms, pan)
        with OpRecorder() as rec:
            got = fused(x_t, t, lms, pan)
    assert {"ddif.wavelet_condition.default", "ddif.fwm_context.default", "ddif.fwm_apply.default"} <= rec.ops
    assert _rel_err(got, want) <= 1e-4


def test_tiny_ddif_training_loss_backward(tiny_pair):
    from ddif.diffusion import NoiseSchedule
    from ddif.diffusion.loss import DiffusionLoss

    ref, fused = tiny_pair
    ref.train()
    fused.train()
    schedule = NoiseSchedule.from_config(ref.preset.diffusion)
    lms, pan, gt = _tiny_batch(2)
    t = torch.tensor([5, 450], device=DEVICE)
    noise = torch.randn(2, 4, 8, 8, device=DEVICE)
    losses, grads = [], []
    for model in (ref, fused):
        model.zero_grad()
        loss = DiffusionLoss(model, schedule)(gt, lms, pan, t, noise, use_self_cond=False)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])
    assert grads[0].keys() == grads[1].keys()
    fwm_q = [n for n in grads[0] if "cond_inj.q.1.weight" in n]
    assert fwm_q, "the FWM query projection must receive gradients through the fused apply"
    for name in grads[0]:
        assert _max_err(grads[1][name], grads[0][name]) <= 1e-4 * max(grads[0][name].abs().max().item(), 1e-3), name


def test_tiny_ddif_under_autocast(tiny_pair):
    """--fused-kernels under torch.autocast: the fused model is as close to the fp32 result as the
    eager model under the same autocast."""
    ref, fused = tiny_pair
    ref.eval()
    fused.eval()
    lms, pan, _ = _tiny_batch(3)
    x_t = torch.randn(2, 4, 8, 8, device=DEVICE)
    t = torch.tensor([30, 300], device=DEVICE)
    dtype = torch.float16 if DEVICE.type == "cuda" else torch.bfloat16
    with torch.no_grad():
        exact = ref(x_t, t, lms, pan)
        with torch.autocast(DEVICE.type, dtype=dtype):
            eager = ref(x_t, t, lms, pan)
            with OpRecorder() as rec:
                got = fused(x_t, t, lms, pan)
    assert "ddif.fwm_apply.default" in rec.ops
    assert torch.isfinite(got).all()
    assert _max_err(got, exact) <= 2 * _max_err(eager, exact) + 1e-3 * exact.abs().max().item()


# ----------------------------------------------------------------------------------- GPU only
@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("dim,size", [(64, 256), (256, 64), (96, 130)], ids=["d8-256", "d32-64", "d12-130"])
def test_cuda_sizes_and_dtypes(dtype, dim, size):
    q, k, v = (t.to(dtype).requires_grad_(True) for t in _features(2, dim, size, size + 3))
    exact = fwm_apply_ref(q.float(), fwm_context_ref(k.float(), v.float(), 8), 8)
    eager = fwm_apply_ref(q, fwm_context_ref(k, v, 8), 8)
    fused = fwm_apply_fused(q, fwm_context_fused(k, v, 8), 8)
    if dtype == torch.float32:
        assert _rel_err(fused, exact) <= 1e-5
    else:
        assert _max_err(fused, exact) <= 2 * _max_err(eager, exact) + 1e-3
    fused.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
