"""Training objective of DDIF: L1 between the predicted and the true clean residual, with
self-conditioning (Chen et al., "Analog Bits", ICLR 2023) used with probability ``self_cond_prob``.

The randomness (timesteps, noise, the self-conditioning coin) is drawn by :func:`draw_noise`
from an explicit generator, so a training run can be resumed exactly; :class:`DiffusionLoss` is
the module a trainer wraps (e.g. in DistributedDataParallel): one forward computes the condition
cache, the optional no-grad self-conditioning pass and the real pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ddif.diffusion.schedule import NoiseSchedule

if TYPE_CHECKING:
    from ddif.models.ddif import DDIF


@dataclass
class LossOutput:
    loss: torch.Tensor
    t: torch.Tensor
    used_self_cond: bool


@dataclass
class NoiseDraw:
    t: torch.Tensor
    noise: torch.Tensor
    use_self_cond: bool


def draw_noise(
    shape: Sequence[int],
    num_timesteps: int,
    self_cond_prob: float,
    self_condition: bool,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> NoiseDraw:
    gdev = generator.device if generator is not None else device
    t = torch.randint(0, num_timesteps, (shape[0],), generator=generator, device=gdev).to(device)
    noise = torch.randn(shape, generator=generator, device=gdev).to(device)
    coin = torch.rand((), generator=generator, device=gdev).item()
    return NoiseDraw(t, noise, bool(self_condition and coin < self_cond_prob))


class DiffusionLoss(nn.Module):
    """Wraps a DDIF model: ``forward(gt, lms, pan, t, noise, use_self_cond) -> scalar L1 loss``."""

    def __init__(self, model: DDIF, schedule: NoiseSchedule):
        super().__init__()
        self.model = model
        self.schedule = schedule

    def forward(
        self,
        gt: torch.Tensor,
        lms: torch.Tensor,
        pan: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        use_self_cond: bool,
    ) -> torch.Tensor:
        residual = gt - lms
        x_t = self.schedule.q_sample(residual, t, noise.to(residual.dtype))
        cache = self.model.encode_condition(lms, pan)
        self_cond = None
        if use_self_cond:
            with torch.no_grad():
                self_cond = self.model(x_t, t, self_cond=None, cache=cache).detach()
        pred = self.model(x_t, t, self_cond=self_cond, cache=cache)
        return (pred.float() - residual.float()).abs().mean()


def diffusion_loss(
    model: DDIF,
    schedule: NoiseSchedule,
    gt: torch.Tensor,
    lms: torch.Tensor,
    pan: torch.Tensor,
    *,
    self_cond_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """One training loss evaluation on a batch (images in [0, 1])."""
    draw = draw_noise(
        gt.shape, schedule.num_timesteps, self_cond_prob, model.config.self_condition, gt.device, generator
    )
    loss = DiffusionLoss(model, schedule)(gt, lms, pan, draw.t, draw.noise, draw.use_self_cond)
    return LossOutput(loss, draw.t, draw.use_self_cond)
