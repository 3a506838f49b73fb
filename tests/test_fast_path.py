"""The fast-path options of the PyTorch tile sampler (issue: GPU fast path), checked on the CPU:
bf16 autocast within its stated tolerance of fp32, channels_last and torch.compile equal to eager,
cuda_graphs falling back to eager with one warning off CUDA, the automatic tile batch (pixel
budget off CUDA). The shipped checkpoint is used where the tolerance is stated for users."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import ddif
from ddif.models import DDIF

SHIPPED = Path(__file__).resolve().parents[1] / "ddif" / "assets" / "landsat_small.pt"
# bf16 autocast vs fp32, fused image in [0, 1] (shipped checkpoint, CPU): measured max 2.9e-3 and
# mean 5e-4 abs (bf16 keeps 8 significant bits); the bound stated in the README
BF16_MAX, BF16_MEAN = 4e-3, 1e-3


def _inputs(h=70, w=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    lms = 0.2 + 0.5 * torch.rand(2, 3, h, w, generator=g)
    return lms, lms.mean(1, keepdim=True)


@pytest.fixture(scope="module")
def reference():
    lms, pan = _inputs()
    return lms, pan, ddif.Fuser(DDIF.from_pretrained(SHIPPED)).fuse(lms, pan, seed=1)


def test_bf16_autocast_within_the_stated_tolerance(reference):
    lms, pan, want = reference
    got = ddif.Fuser(DDIF.from_pretrained(SHIPPED), amp="bf16").fuse(lms, pan, seed=1)
    diff = (got - want).abs()
    assert got.dtype == torch.float32 and 0 < float(diff.max()) <= BF16_MAX, float(diff.max())  # really in bf16
    assert float(diff.mean()) <= BF16_MEAN, float(diff.mean())
    with pytest.raises(ValueError, match="amp must be one of"):
        ddif.Fuser(DDIF.from_pretrained(SHIPPED), amp="int8")


def test_channels_last_equals_eager(reference):
    lms, pan, want = reference
    got = ddif.Fuser(DDIF.from_pretrained(SHIPPED), channels_last=True).fuse(lms, pan, seed=1)
    assert float((got - want).abs().max()) <= 1e-5


def test_cuda_graphs_fall_back_to_eager_off_cuda(reference):
    lms, pan, want = reference
    fuser = ddif.Fuser(DDIF.from_pretrained(SHIPPED), cuda_graphs=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fuser.fuse(lms, pan, seed=1)
        fuser.fuse(lms[:1], pan[:1], seed=1)
    said = [w for w in caught if "cuda_graphs=True" in str(w.message)]
    assert len(said) == 1 and "CUDA graphs need a CUDA device" in str(said[0].message)
    assert torch.equal(got, want)


def test_torch_compile_equals_eager():
    from conftest import condition_matters, tiny_preset

    preset = tiny_preset()
    preset.diffusion.tile_size, preset.diffusion.tile_overlap = 16, 4
    torch.manual_seed(0)
    model = condition_matters(DDIF(preset)).eval()
    g = torch.Generator().manual_seed(0)
    lms, pan = torch.rand(1, 4, 30, 20, generator=g), torch.rand(1, 1, 30, 20, generator=g)
    want = ddif.Fuser(model, steps=2).fuse(lms, pan, seed=2)
    got = ddif.Fuser(model, steps=2, compile=True).fuse(lms, pan, seed=2)
    assert float((got - want).abs().max()) <= 1e-5


def test_automatic_tile_batch_off_cuda():
    model = DDIF.from_pretrained(SHIPPED)
    fuser = ddif.Fuser(model)
    assert fuser.sampler.preferred_batch((32, 32)) is None
    assert fuser.inference._batch_for((32, 32)) == (1 << 15) // (32 * 32)  # 32 tiles: they stay in cache
    assert ddif.Fuser(model, batch_size=7).inference._batch_for((32, 32)) == 7
