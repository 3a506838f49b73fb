"""Diffusion process and samplers, kept apart from the network."""

from ddif.diffusion.loss import DiffusionLoss, diffusion_loss, draw_noise
from ddif.diffusion.samplers import DDIMScheduler, DDPMScheduler, make_scheduler, respace
from ddif.diffusion.sampling import sample_residual
from ddif.diffusion.schedule import NoiseSchedule, cosine_betas

__all__ = [
    "NoiseSchedule",
    "cosine_betas",
    "DDIMScheduler",
    "DDPMScheduler",
    "make_scheduler",
    "respace",
    "sample_residual",
    "diffusion_loss",
    "DiffusionLoss",
    "draw_noise",
]
