"""Noise schedules, kept in float64.

Cosine schedule of Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models"
(ICML 2021): alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), betas clipped at ``max_beta``.
"""

from __future__ import annotations

import math

import torch

from ddif.config import DiffusionConfig


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def linear_betas(timesteps: int, start: float = 1e-4, end: float = 2e-2) -> torch.Tensor:
    return torch.linspace(start, end, timesteps, dtype=torch.float64)


class NoiseSchedule:
    """Training-time diffusion q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)."""

    def __init__(self, betas: torch.Tensor):
        if betas.dim() != 1 or betas.numel() == 0:
            raise ValueError("betas must be a non-empty 1-D tensor")
        self.betas = betas.to(torch.float64)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.num_timesteps = int(betas.numel())

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> NoiseSchedule:
        if cfg.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {cfg.timesteps}")
        if cfg.schedule == "cosine":
            return cls(cosine_betas(cfg.timesteps, cfg.cosine_s, cfg.max_beta))
        if cfg.schedule == "linear":
            return cls(linear_betas(cfg.timesteps))
        raise ValueError(f"unknown noise schedule {cfg.schedule!r} (cosine, linear)")

    def _gather(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = values.to(t.device)[t.long()]
        return out.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noisy sample x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (coefficients in float64)."""
        ab = self.alphas_cumprod
        return self._gather(ab.sqrt(), t, x0) * x0 + self._gather((1 - ab).sqrt(), t, x0) * noise
