"""Training objective of DDIF: L1 between the predicted and the true clean residual, with
self-conditioning (Chen et al., "Analog Bits", ICLR 2023) used with probability ``self_cond_prob``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ddif.diffusion.schedule import NoiseSchedule


@dataclass
class LossOutput:
    loss: torch.Tensor
    t: torch.Tensor
    used_self_cond: bool


def diffusion_loss(model, schedule: NoiseSchedule, gt: torch.Tensor, lms: torch.Tensor, pan: torch.Tensor,
                   *, self_cond_prob: float = 0.5, generator: torch.Generator | None = None) -> LossOutput:
    """One training loss evaluation on a batch (images in [0, 1])."""
    residual = gt - lms
    b = residual.shape[0]
    gdev = generator.device if generator is not None else residual.device
    t = torch.randint(0, schedule.num_timesteps, (b,), generator=generator, device=gdev).to(residual.device)
    noise = torch.randn(residual.shape, generator=generator, device=gdev, dtype=residual.dtype).to(residual.device)
    x_t = schedule.q_sample(residual, t, noise)
    cache = model.encode_condition(lms, pan)
    coin = torch.rand((), generator=generator, device=gdev).item()
    used = model.config.self_condition and coin < self_cond_prob
    self_cond = None
    if used:
        with torch.no_grad():
            self_cond = model(x_t, t, self_cond=None, cache=cache).detach()
    pred = model(x_t, t, self_cond=self_cond, cache=cache)
    loss = (pred.float() - residual.float()).abs().mean()
    return LossOutput(loss, t, used)
