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


def _cosine_ab(t: int) -> float:
    """alpha_bar(t) of the cosine schedule (Nichol & Dhariwal, 2021), written out independently:
    f(t + 1) / f(0) with f(t) = cos^2((t / T + s) / (1 + s) * pi / 2), T = 500, s = 0.008 (the
    schedule's beta clipping at 0.999 only touches the last timesteps, never visited below)."""
    f = lambda u: math.cos((u / 500 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return f(t + 1) / f(0)


def _ddim_expected(x, x0, z, t, t_prev, eta):
    """DDIM (Song et al. 2021, eq. 12): x_prev = sqrt(ab') x0 + sqrt(1 - ab' - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab'); ab' = 1 after the last step."""
    ab = _cosine_ab(t)
    abp = 1.0 if t_prev is None else _cosine_ab(t_prev)
    eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    sigma = eta * math.sqrt((1 - abp) / (1 - ab)) * math.sqrt(1 - ab / abp)
    return math.sqrt(abp) * x0 + math.sqrt(max(1 - abp - sigma ** 2, 0.0)) * eps + sigma * z


def _ddpm_expected(x, x0, z, t, t_prev):
    """Posterior q(x_prev | x_t, x0) of the respaced chain (Ho et al. 2020, eq. 6-7, with
    alpha = ab / ab'): mean = sqrt(ab') beta / (1 - ab) x0 + sqrt(alpha) (1 - ab') / (1 - ab) x_t,
    var = beta (1 - ab') / (1 - ab); no noise on the last step."""
    ab = _cosine_ab(t)
    abp = 1.0 if t_prev is None else _cosine_ab(t_prev)
    alpha = ab / abp
    beta = 1 - alpha
    mean = math.sqrt(abp) * beta / (1 - ab) * x0 + math.sqrt(alpha) * (1 - abp) / (1 - ab) * x
    var = beta * (1 - abp) / (1 - ab)
    return mean + (math.sqrt(var) * z if t_prev is not None else 0 * z)


@pytest.mark.parametrize("kind, eta", [("ddim", 0.0), ("ddim", 0.5), ("ddim", 1.0), ("ddpm", None)])
def test_every_step_matches_an_independent_formula(schedule, kind, eta):
    """Every intermediate step (not only the last) of DDIM with eta 0 / 0.5 / 1 and of DDPM,
    against the papers' formulas written out here, with the noise z given explicitly."""
    sched = DDIMScheduler(schedule, eta=eta) if kind == "ddim" else DDPMScheduler(schedule)
    sched.set_timesteps(10)
    ts = sched.timesteps.tolist()
    assert ts == list(range(450, -1, -50))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)      # not consistent with x: a real test
    for i, t in enumerate(ts):
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        t_prev = ts[i + 1] if i + 1 < len(ts) else None
        want = _ddim_expected(x, x0, z, t, t_prev, eta) if kind == "ddim" else _ddpm_expected(x, x0, z, t, t_prev)
        got = sched.step(x0, t, x, noise=z).prev_sample      # diffusers API: the timestep, not i
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12), (kind, eta, i)
        assert torch.equal(sched.step(x0, sched.timesteps[i], x, noise=z).prev_sample, got)   # 0-d tensor
        noisy = kind == "ddpm" and t_prev is not None or (kind == "ddim" and bool(eta) and t_prev is not None)
        assert sched.adds_noise(t) == noisy and sched.adds_noise(torch.tensor(t)) == noisy
        if noisy:   # the noise really enters
            assert not torch.allclose(sched.step(x0, t, x, noise=torch.zeros_like(z)).prev_sample, got)
        x = got


@pytest.mark.parametrize("cls, kw", [(DDIMScheduler, {}), (DDIMScheduler, {"eta": 1.0}), (DDPMScheduler, {})])
def test_perfect_x0_prediction_is_recovered(cls, kw, schedule):
    """With an oracle x0 the chain ends exactly at x0, and every intermediate x_t is distributed as
    q(x_t | x0): for eta 0 it stays on the line sqrt(ab) x0 + sqrt(1 - ab) eps_T; with noise, the
    empirical std of (x_t - sqrt(ab) x0) matches sqrt(1 - ab) (many samples)."""
    x0 = torch.randn(1, 1, 64, 64, dtype=torch.float64).expand(64, 1, 64, 64).contiguous()
    sched = cls(schedule, **kw)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eps_T = (x - math.sqrt(_cosine_ab(450)) * x0) / math.sqrt(1 - _cosine_ab(450))
    ts = sched.timesteps.tolist()
    for i, t in enumerate(ts):
        x = sched.step(x0, t, x, generator=g).prev_sample
        if i + 1 < len(ts):
            ab = _cosine_ab(ts[i + 1])
            dev = x - math.sqrt(ab) * x0
            if cls is DDIMScheduler and not kw:
                assert torch.allclose(dev, math.sqrt(1 - ab) * eps_T, atol=1e-10)
            else:
                assert float(dev.std()) == pytest.approx(math.sqrt(1 - ab), rel=0.02)
    assert torch.allclose(x, x0, atol=1e-10)


def test_ddim_step_formula(schedule):
    """eta 0 at 25 steps against DDIM's formula with the schedule's own alpha_bar values."""
    sched = DDIMScheduler(schedule, eta=0.0)
    sched.set_timesteps(25)
    x, x0 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    for i in (0, 3, 24):
        t = 480 - 20 * i
        want = _ddim_expected(x, x0, torch.zeros(4, dtype=torch.float64), t, t - 20 if i < 24 else None, 0.0)
        assert torch.allclose(sched.step(x0, t, x).prev_sample, want, rtol=1e-9, atol=1e-12)


def test_ddim_eta_adds_noise(schedule):
    sched = DDIMScheduler(schedule, eta=1.0)
    sched.set_timesteps(5)
    x, x0 = torch.randn(16), torch.randn(16)
    t = sched.timesteps[1]                     # 300: a 0-d tensor, as diffusers loops give it
    assert int(t) == 300
    a = sched.step(x0, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = sched.step(x0, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_step_takes_a_timestep_of_the_grid(schedule, cls):
    """step(model_output, timestep, sample) as in diffusers: the timestep picks the step (its
    position in the grid), a value outside the grid is refused, naming it and the grid."""
    sched = cls(schedule)
    x, x0 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sched.step(x0, 0, x)
    sched.set_timesteps(5)
    assert sched.timesteps.tolist() == [400, 300, 200, 100, 0]
    assert [sched.index_for_timestep(t) for t in (400, 300, 200, 100, 0)] == [0, 1, 2, 3, 4]
    assert sched.index_for_timestep(torch.tensor(200)) == 2 and sched.index_for_timestep(200.0) == 2
    # the last step (timestep 0) lands on the clean image exactly: x0
    assert torch.allclose(sched.step(x0, 0, x, noise=torch.ones(4)).prev_sample, x0, atol=1e-12)
    # the first step (timestep 400) does not
    assert not torch.allclose(sched.step(x0, 400, x, noise=torch.zeros(4)).prev_sample, x0, atol=1e-3)
    for bad in (1, 3, 450, -1, 500, 100.5, torch.tensor(7), True, "400"):
        with pytest.raises(ValueError, match=r"not in the sampling grid \[400, 300, 200, 100, 0\]") as err:
            sched.step(x0, bad, x)
        assert repr(bad) in str(err.value)
        with pytest.raises(ValueError, match="not in the sampling grid"):
            sched.adds_noise(bad)
    with pytest.raises(ValueError, match="single value"):
        sched.step(x0, torch.tensor([400, 300]), x)
    # an explicit grid maps the same way
    sched.set_timesteps(timesteps=[499, 123, 7])
    assert [sched.index_for_timestep(t) for t in (499, 123, 7)] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"timestep 400 is not in the sampling grid \[499, 123, 7\]"):
        sched.step(x0, 400, x)


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

    def time_features(self, t):
        return self.inner.time_features(t)

    def forward(self, x_t, t, lms=None, pan=None, self_cond=None, cache=None, time_features=None):
        out = self.inner(x_t, t, lms, pan, self_cond=self_cond, cache=cache, time_features=time_features)
        self.calls.append(("step", t.tolist(), None if self_cond is None else self_cond.clone(), out.clone(),
                           cache is not None))
        return out


def test_time_features_give_the_networks_own_result(tiny_model):
    """The timestep-only work computed once per timestep (time embedding, every TimeShift's
    projection) gives the same denoiser output as computing it in the call."""
    g = torch.Generator().manual_seed(0)
    lms, pan = torch.rand(2, 4, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    x, t = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([7, 300])
    tiny_model.eval()
    with torch.no_grad():
        cache = tiny_model.encode_condition(lms, pan)
        direct = tiny_model(x, t, cache=cache)
        feats = tiny_model.time_features(t)
        assert len(feats.shifts) == sum(1 for m in tiny_model.modules() if type(m).__name__ == "TimeShift")
        torch.testing.assert_close(tiny_model(x, t, cache=cache, time_features=feats), direct, rtol=0, atol=0)


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
    g = torch.Generator().manual_seed(0)
    lms, pan = torch.rand(3, 4, 21, 30, generator=g), torch.rand(3, 1, 21, 30, generator=g)
    fuser = Fuser(tiny_model, steps=4)
    a = fuser.fuse(lms, pan, seed=5)
    assert a.shape == lms.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, fuser.fuse(lms, pan, seed=5))
    assert float((a - fuser.fuse(lms, pan, seed=6)).abs().max()) > 1e-3
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(fuser.fuse(lms, pan, generator=g1), fuser.fuse(lms, pan, generator=g2))
    # batching does not change the result
    chunked = Fuser(tiny_model, steps=4, batch_size=2).fuse(lms, pan, seed=5)
    assert float((a - chunked).abs().max()) <= 1e-5
    # an image's noise depends on (seed, its index, tile): image 0 alone == entry 0 of the batch
    one = fuser.fuse(lms[0], pan[0], seed=5)
    assert one.shape == lms[0].shape and float((one - a[0]).abs().max()) <= 1e-5
    # an explicit x_T (padded to the size multiple 2: 21 -> 22 rows) gives the same as that slice
    noise = torch.randn(3, 4, 22, 30, generator=g)
    full = fuser.fuse(lms, pan, noise=noise)
    part = fuser.fuse(lms[2], pan[2], noise=noise[2:3])
    assert float((part - full[2]).abs().max()) <= 1e-5
    assert float((full - a).abs().max()) > 1e-3      # and the noise does matter


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


def _axis_weights_by_hand(origins, tile, length):
    """Per-tile 1-D weights over [0, length), pixel by pixel from the documented rule: neighbours
    i, i+1 share o_i + T - o_{i+1} pixels; the cross-fade band is the shared part capped at T/2 and
    centred in it; inside it the right tile weighs sin^2(pi/2 (d + 0.5) / width), the left one
    cos^2 of the same; before the band the left tile owns the pixels, after it the right one."""
    w = [[0.0] * length for _ in origins]
    for x in range(length):
        for i, o in enumerate(origins):
            if not o <= x < o + tile:
                continue
            weight = 1.0
            if i > 0:                               # band with the left neighbour
                shared = origins[i - 1] + tile - o
                width = min(shared, tile // 2)
                start = o + (shared - width) // 2
                if x < start:
                    weight = 0.0
                elif x < start + width:
                    weight *= math.sin(math.pi / 2 * (x - start + 0.5) / width) ** 2
            if i + 1 < len(origins):                # band with the right neighbour
                shared = o + tile - origins[i + 1]
                width = min(shared, tile // 2)
                start = origins[i + 1] + (shared - width) // 2
                if x >= start + width:
                    weight = 0.0
                elif x >= start:
                    weight *= math.cos(math.pi / 2 * (x - start + 0.5) / width) ** 2
            w[i][x] = weight
    return torch.tensor(w, dtype=torch.float64)


def test_fuser_tiled_inference(tiny_model):
    """16 px tiles, 6 px overlap on a 40 x 28 image: the Fuser's output equals an independent
    computation: each tile sampled on its own with its own x_T, blended with weights computed
    pixel by pixel from the documented rule."""
    from ddif.inference import tile_noise

    g = torch.Generator().manual_seed(3)
    lms, pan = torch.rand(2, 4, 40, 28, generator=g), torch.rand(2, 1, 40, 28, generator=g)
    tiled = Fuser(tiny_model, steps=2, tile_size=16, tile_overlap=6)
    a = tiled.fuse(lms, pan, seed=1)
    assert a.shape == lms.shape and torch.isfinite(a).all() and 0 <= a.min() and a.max() <= 1

    rows, cols = [0, 8, 16, 24], [0, 6, 12]          # 4 x 3 tiles: neighbours share >= 6 px, spread evenly
    wy, wx = _axis_weights_by_hand(rows, 16, 40), _axis_weights_by_hand(cols, 16, 28)
    assert torch.allclose(wy.sum(0), torch.ones(40, dtype=torch.float64))   # a partition of unity
    assert not torch.allclose(wx.sum(0), torch.ones(28, dtype=torch.float64))  # 3 tiles meet at cols 13-14
    expected = torch.zeros(2, 4, 40, 28, dtype=torch.float64)
    total = torch.zeros(40, 28, dtype=torch.float64)
    for i in range(2):
        for r, y in enumerate(rows):
            for c, x in enumerate(cols):
                k = r * len(cols) + c                 # row-major tile index: the noise key
                sl = (slice(i, i + 1), slice(None), slice(y, y + 16), slice(x, x + 16))
                residual = sample_residual(tiny_model, lms[sl], pan[sl], tiled.scheduler,
                                           noise=tile_noise(1, i, k, (4, 16, 16))[None])
                weight = torch.outer(wy[r, y:y + 16], wx[c, x:x + 16])
                expected[i, :, y:y + 16, x:x + 16] += weight * (lms[sl][0] + residual[0]).double()
                total[y:y + 16, x:x + 16] += weight / 2
    expected = (expected / total).clamp(0, 1)           # normalised where the weights do not sum to 1
    assert float((a.double() - expected).abs().max()) <= 1e-5
    # the blend is not a no-op: it differs from taking any single tile's value in the bands
    assert torch.equal(a, tiled.fuse(lms, pan, seed=1))
    assert float((a - Fuser(tiny_model, steps=2, tile_size=16, tile_overlap=6, batch_size=3).fuse(
        lms, pan, seed=1)).abs().max()) <= 1e-5       # batching of tiles does not change the result
    # an image smaller than a tile is padded (reflect) to the tile: the same as sampling the
    # padded image whole (same x_T: tile 0 of image i)
    from ddif.inference import pad_to

    small = Fuser(tiny_model, steps=2, tile_size=64, tile_overlap=8).fuse(lms, pan, seed=1)
    whole_padded = Fuser(tiny_model, steps=2).fuse(pad_to(lms, 64, 64), pad_to(pan, 64, 64), seed=1)
    assert float((small - whole_padded[..., :40, :28]).abs().max()) <= 1e-6
    with pytest.raises(ValueError, match="multiple of 2"):
        Fuser(tiny_model, tile_size=15)
    with pytest.raises(ValueError, match="overlap must lie in"):
        Fuser(tiny_model, tile_size=16, tile_overlap=9)


def test_the_tile_batch_sampler_compiles_as_one_graph(tiny_model):
    """The fixed-step loop holds no host synchronisation (inputs are checked once at entry, the
    grid is Python ints, the step coefficients Python floats): torch.compile captures the whole
    sampler with fullgraph=True (a graph break, e.g. a value read back to the host, would raise),
    and the captured sampler gives the eager result."""
    from ddif.diffusion.sampling import sample_residual

    sched = DDIMScheduler(NoiseSchedule.from_config(tiny_model.preset.diffusion))
    sched.set_timesteps(2)
    tiny_model.eval()

    def sampler(lms, pan, noise):
        return sample_residual(tiny_model, lms, pan, sched, noise=noise)

    g = torch.Generator().manual_seed(4)
    lms, pan = torch.rand(2, 4, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    noise = torch.randn(2, 4, 16, 16, generator=g)
    with torch.no_grad():
        eager = sampler(lms, pan, noise)
        captured = torch.compile(sampler, fullgraph=True, backend="eager")(lms, pan, noise)
    torch.testing.assert_close(captured, eager, rtol=0, atol=1e-6)
