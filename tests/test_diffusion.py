"""Noise schedule, samplers, sampling loop, training loss and the Fuser."""
from __future__ import annotations

import math

import pytest
import torch

from ddif.config import DiffusionConfig
from ddif.diffusion import (DDIMScheduler, DDPMScheduler, NoiseSchedule, diffusion_loss, respace,
                            sample_residual)
from ddif.fuser import Fuser


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.from_config(DiffusionConfig())


def test_cosine_schedule_endpoints(schedule):
    ab = schedule.alphas_cumprod
    assert ab.dtype == torch.float64 and schedule.betas.dtype == torch.float64
    assert schedule.num_timesteps == 500
    # alpha_bar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2)
    f = lambda t: math.cos((t / 500 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert ab[0].item() == pytest.approx(f(1) / f(0), rel=1e-12)
    assert 0.9998 < ab[0].item() < 1.0
    assert ab[-1].item() < 1e-6
    assert schedule.betas.max().item() <= 0.999
    assert torch.all(ab[1:] < ab[:-1])


def test_q_sample(schedule):
    x0, noise = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 250, 499])
    xt = schedule.q_sample(x0, t, noise)
    for i, ti in enumerate(t.tolist()):
        ab = schedule.alphas_cumprod[ti]
        assert torch.allclose(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * noise[i])


def test_ddim_25_over_500_timestep_mapping():
    ts = respace(500, 25)
    assert ts.tolist() == list(range(480, -1, -20))
    sched = DDIMScheduler(NoiseSchedule.from_config(DiffusionConfig()))
    sched.set_timesteps(25)
    assert sched.timesteps.tolist() == list(range(480, -1, -20))
    trailing = respace(500, 25, "trailing")
    assert trailing[0].item() == 499 and trailing[-1].item() == 19 and len(trailing) == 25
    assert respace(500, 500).tolist() == list(range(499, -1, -1))
    with pytest.raises(ValueError):
        respace(500, 0)


@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_perfect_x0_prediction_is_recovered(cls, schedule):
    """With an oracle x0 the chain ends exactly at x0, whatever the sampler."""
    x0 = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    sched = cls(schedule)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for i in range(len(sched)):
        x = sched.step(x0, i, x, generator=g).prev_sample
    assert torch.allclose(x, x0, atol=1e-10)


def test_ddim_step_formula(schedule):
    sched = DDIMScheduler(schedule, eta=0.0)
    sched.set_timesteps(25)
    x, x0 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    i = 3
    ab = schedule.alphas_cumprod[480 - 20 * i]
    ab_prev = schedule.alphas_cumprod[480 - 20 * (i + 1)]
    eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    want = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    assert torch.allclose(sched.step(x0, i, x).prev_sample, want)


def test_ddim_eta_adds_noise(schedule):
    sched = DDIMScheduler(schedule, eta=1.0)
    sched.set_timesteps(5)
    x, x0 = torch.randn(16), torch.randn(16)
    a = sched.step(x0, 1, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = sched.step(x0, 1, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert not torch.allclose(a, b)


class RecordingModel(torch.nn.Module):
    """Stands in for DDIF: records what the sampling loop feeds it."""

    def __init__(self, tiny_model):
        super().__init__()
        self.inner = tiny_model
        self.preset, self.config = tiny_model.preset, tiny_model.config
        self.calls = []

    def encode_condition(self, lms, pan):
        self.calls.append(("encode",))
        return self.inner.encode_condition(lms, pan)

    def forward(self, x_t, t, lms=None, pan=None, self_cond=None, cache=None):
        out = self.inner(x_t, t, lms, pan, self_cond=self_cond, cache=cache)
        self.calls.append(("step", t.tolist(), None if self_cond is None else self_cond.clone(), out.clone(),
                           cache is not None))
        return out


def _run(model, legacy=False, use_cache=True, steps=5):
    sched = DDIMScheduler(NoiseSchedule.from_config(DiffusionConfig()))
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(123)
    lms, pan = torch.rand(2, 4, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    return sample_residual(model, lms, pan, sched, generator=0, legacy_published_sampler=legacy,
                           use_cache=use_cache)


def test_sampler_feeds_training_timesteps_and_self_conditioning(tiny_model):
    rec = RecordingModel(tiny_model)
    _run(rec)
    assert rec.calls[0] == ("encode",) and sum(c[0] == "encode" for c in rec.calls) == 1
    steps = [c for c in rec.calls if c[0] == "step"]
    assert [c[1][0] for c in steps] == [400, 300, 200, 100, 0]
    assert all(c[4] for c in steps), "condition cache not used"
    assert steps[0][2] is None
    for prev, cur in zip(steps, steps[1:]):
        assert torch.equal(cur[2], prev[3]), "self-conditioning must get the previous x0 estimate"


def test_legacy_published_sampler(tiny_model):
    rec = RecordingModel(tiny_model)
    _run(rec, legacy=True)
    steps = [c for c in rec.calls if c[0] == "step"]
    assert [c[1][0] for c in steps] == [4, 3, 2, 1, 0]       # the step index, not the timestep
    assert all(c[2] is None for c in steps)                  # self-conditioning never updated


def test_uncached_loop_matches_cached(tiny_model):
    a = _run(tiny_model, use_cache=True)
    b = _run(tiny_model, use_cache=False)
    assert torch.equal(a, b)


def test_fuser_deterministic_with_seed(tiny_model):
    lms, pan = torch.rand(3, 4, 21, 30), torch.rand(3, 1, 21, 30)
    fuser = Fuser(tiny_model, steps=4)
    a = fuser.fuse(lms, pan, seed=5)
    assert a.shape == lms.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, fuser.fuse(lms, pan, seed=5))
    assert not torch.equal(a, fuser.fuse(lms, pan, seed=6))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(fuser.fuse(lms, pan, generator=g1), fuser.fuse(lms, pan, generator=g2))
    # batching does not change the result
    chunked = Fuser(tiny_model, steps=4, batch_size=2).fuse(lms, pan, seed=5)
    assert torch.allclose(a, chunked, atol=1e-5)
    # unbatched input gives unbatched output equal to the batch entry (same noise slice)
    one = fuser.fuse(lms[0], pan[0], noise=torch.randn(1, 4, 22, 30))
    assert one.shape == lms[0].shape


def test_fuser_stochastic_samplers_reproducible(tiny_model):
    lms, pan = torch.rand(1, 4, 16, 16), torch.rand(1, 1, 16, 16)
    for kw in ({"sampler": "ddpm"}, {"sampler": "ddim", "eta": 1.0}):
        f = Fuser(tiny_model, steps=3, **kw)
        assert torch.equal(f.fuse(lms, pan, seed=1), f.fuse(lms, pan, seed=1))


def test_fuser_output_is_lms_plus_residual(tiny_model):
    lms, pan = torch.rand(1, 4, 16, 16), torch.rand(1, 1, 16, 16)
    f = Fuser(tiny_model, steps=2)
    r = f.fuse(lms, pan, seed=0, return_residual=True)
    assert torch.allclose(f.fuse(lms, pan, seed=0), (lms + r).clamp(0, 1))


def test_loss_backward_finite_gradients_everywhere(tiny_model, schedule):
    tiny_model.train()
    gt, lms, pan = torch.rand(2, 4, 16, 16), torch.rand(2, 4, 16, 16), torch.rand(2, 1, 16, 16)
    for seed in (0, 1, 2, 3):       # both branches of the self-conditioning coin
        tiny_model.zero_grad()
        out = diffusion_loss(tiny_model, schedule, gt, lms, pan, generator=torch.Generator().manual_seed(seed))
        out.loss.backward()
        assert torch.isfinite(out.loss)
        for name, p in tiny_model.named_parameters():
            assert p.grad is not None, f"no gradient for {name}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
    used = {diffusion_loss(tiny_model, schedule, gt, lms, pan,
                           generator=torch.Generator().manual_seed(s)).used_self_cond for s in range(12)}
    assert used == {True, False}


def test_fuser_tiled_inference(tiny_model):
    g = torch.Generator().manual_seed(3)
    lms, pan = torch.rand(2, 4, 40, 28, generator=g), torch.rand(2, 1, 40, 28, generator=g)
    whole = Fuser(tiny_model, steps=2).fuse(lms, pan, seed=1)
    # tiles at least as large as the image: exactly the untiled result
    assert torch.equal(Fuser(tiny_model, steps=2, tile_size=64, tile_overlap=8).fuse(lms, pan, seed=1), whole)
    tiled = Fuser(tiny_model, steps=2, tile_size=16, tile_overlap=6)
    a = tiled.fuse(lms, pan, seed=1)
    assert a.shape == lms.shape and torch.isfinite(a).all() and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, tiled.fuse(lms, pan, seed=1))
    assert not torch.equal(a, whole)
    # batching of tiles does not change the result
    assert torch.allclose(a, Fuser(tiny_model, steps=2, tile_size=16, tile_overlap=6, batch_size=3).fuse(lms, pan, seed=1),
                          atol=1e-5)
    with pytest.raises(ValueError, match="tile_size must be a multiple of 2"):
        Fuser(tiny_model, tile_size=15)
    with pytest.raises(ValueError, match="tile_overlap < tile_size"):
        Fuser(tiny_model, tile_size=16, tile_overlap=16)
