"""The sampling loop: runs a scheduler over an x0-predicting DDIF network.

By default the condition branch is computed once per image (``model.encode_condition``) and
self-conditioning receives the previous step's x0 estimate (Chen et al., "Analog Bits", ICLR 2023).

``legacy_published_sampler=True`` reproduces the loop of the published DDIF code, which
(1) feeds the network the respaced step index (n-1, ..., 0) instead of the training timestep it
stands for, and (2) never updates the self-conditioning estimate (the network always gets
``x_t`` in its place). Published weights were evaluated that way, so this mode gives published
numbers; the default mode is the mathematically consistent sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from ddif.diffusion.samplers import RespacedScheduler
from ddif.models.ddif import inputs_checked

if TYPE_CHECKING:
    from ddif.models.ddif import DDIF

# one generator per batch item (sample_residual tells them from a single generator by type)
PerItemGenerators = list[torch.Generator | None] | tuple[torch.Generator | None, ...]


def _as_generator(seed_or_generator: torch.Generator | int | None, device: str = "cpu") -> torch.Generator | None:
    if seed_or_generator is None or isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    g = torch.Generator(device=device)
    g.manual_seed(int(seed_or_generator))
    return g


@torch.no_grad()
def sample_residual(
    model: DDIF,
    lms: torch.Tensor,
    pan: torch.Tensor,
    scheduler: RespacedScheduler,
    *,
    generator: torch.Generator | int | PerItemGenerators | None = None,
    noise: torch.Tensor | None = None,
    use_cache: bool = True,
    self_condition: bool = True,
    legacy_published_sampler: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Sample the residual x0 = gt - lms for a batch. ``noise`` (x_T) overrides the generator.

    ``generator`` may be one generator (or seed) for the batch, or one generator per batch item:
    then every item's x_T and per-step noise (DDPM, DDIM with eta > 0) come from its own
    generator, so an item's result does not depend on the batch it was sampled in.
    """
    per_item: PerItemGenerators | None = None  # one generator per batch item, or
    shared: torch.Generator | None = None  # one for the batch
    if isinstance(generator, (list, tuple)):
        if len(generator) != lms.shape[0]:
            raise ValueError(f"generator: got {len(generator)} generators for a batch of {lms.shape[0]}")
        per_item = generator
    else:
        shared = _as_generator(generator)
    if not len(scheduler.timesteps):
        raise RuntimeError("call scheduler.set_timesteps(n) first")
    if noise is None:
        noise = _draw(lms.shape, shared, per_item, lms.device)
    x = noise.to(lms.device, lms.dtype)
    if tuple(x.shape) != (lms.shape[0], model.config.bands, *lms.shape[-2:]):
        raise ValueError(
            f"noise: expected shape {(lms.shape[0], model.config.bands, *lms.shape[-2:])}, got {tuple(x.shape)}"
        )
    # inputs are checked here, once (encode_condition checks lms / pan); the fixed-step loop then
    # runs without the network's per-call checks, whose host read-backs would synchronise a GPU
    # every step, and with the timestep-only work (time embedding, TimeShift projections) done
    # for the whole grid up front
    cache = model.encode_condition(lms, pan) if use_cache else None
    n = len(scheduler.timesteps)
    batch = lms.shape[0]
    grid = list(scheduler.grid) if getattr(scheduler, "grid", None) else scheduler.timesteps.tolist()
    fed = [(n - 1 - i) if legacy_published_sampler else t for i, t in enumerate(grid)]
    t_batches = [torch.full((batch,), t_in, dtype=torch.int64, device=lms.device) for t_in in fed]
    features = [model.time_features(tb) for tb in t_batches]
    adds_noise = [per_item is not None and scheduler.adds_noise(t) for t in grid]
    x0_prev = None
    with inputs_checked():
        for i, t in enumerate(grid):
            sc = None if (legacy_published_sampler or not self_condition) else x0_prev
            if cache is not None:
                x0 = model(x, t_batches[i], self_cond=sc, cache=cache, time_features=features[i])
            else:
                x0 = model(x, t_batches[i], lms, pan, self_cond=sc, time_features=features[i])
            x0 = x0.to(x.dtype)
            step_noise = _draw(x.shape, None, per_item, x.device).to(x.device, x.dtype) if adds_noise[i] else None
            out = scheduler.step(x0, t, x, generator=shared, noise=step_noise)
            x, x0_prev = out.prev_sample, out.pred_original_sample
            if callback is not None:
                callback(i, n)
    return x


def _draw(
    shape: Sequence[int],
    generator: torch.Generator | None,
    per_item: Sequence[torch.Generator | None] | None,
    device: torch.device,
) -> torch.Tensor:
    """float32 standard normal of ``shape``: one draw per item from its generator in ``per_item``
    (on the generator's device, CPU by default), or one draw from ``generator``."""
    if per_item is None:
        gdev = generator.device if generator is not None else device
        return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=torch.float32)
    item = tuple(shape[1:])
    return torch.stack(
        [
            torch.randn(item, generator=g, device=g.device if g is not None else device, dtype=torch.float32).to(device)
            for g in per_item
        ]
    )
