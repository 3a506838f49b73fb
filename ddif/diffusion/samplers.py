"""Samplers for an x0-predicting network, with the API of diffusers schedulers:
``set_timesteps(n)``, ``timesteps``, ``step(model_output, timestep, sample)``, where ``timestep``
is an element of ``timesteps`` (a training timestep, int or 0-d tensor), not the step's position;
a timestep outside the grid is refused (``ValueError``). :meth:`index_for_timestep` gives the
position. ``adds_noise(timestep)`` takes a timestep of the grid too.

- :class:`DDIMScheduler`: Song et al., "Denoising Diffusion Implicit Models" (ICLR 2021), with eta.
- :class:`DDPMScheduler`: ancestral sampling of Ho et al. (NeurIPS 2020) on a respaced schedule
  (Nichol & Dhariwal, 2021).

Respaced steps always map back to the training timesteps they stand for: ``timesteps`` holds
training timesteps, and those are what the network is fed (the published loop fed the step
index instead; see :func:`ddif.diffusion.sample_residual` with ``legacy_published_sampler=True``).
All coefficients are computed in float64.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ddif.diffusion.schedule import NoiseSchedule

SPACINGS = ("leading", "trailing", "linspace")

# a training timestep of the sampling grid: an int or a 0-d / one-element tensor
Timestep = int | torch.Tensor


def respace(num_train: int, num_steps: int, spacing: str = "leading") -> torch.Tensor:
    """Training timesteps (descending) used by an ``num_steps``-step sampler.

    leading:  {0, k, 2k, ...} with k = T // n (guided-diffusion's "ddimN": 25 of 500 -> 480, ..., 20, 0);
    trailing: {T-1, T-1-k, ...} (starts at the noisiest step);
    linspace: round(linspace(0, T-1, n)).
    """
    if not 1 <= num_steps <= num_train:
        raise ValueError(f"number of sampling steps must be in [1, {num_train}], got {num_steps}")
    if spacing == "leading":
        k = num_train // num_steps
        ts = torch.arange(num_steps, dtype=torch.int64) * k
    elif spacing == "trailing":
        stride = num_train / num_steps
        ts = (torch.round(torch.arange(num_train, 0, -stride, dtype=torch.float64)) - 1).to(torch.int64).flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, num_train - 1, num_steps, dtype=torch.float64).round().to(torch.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
    return ts.flip(0)


@dataclass
class SchedulerOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class RespacedScheduler:
    # alpha_bar at each step of the grid and at the step each one leads to, set by set_timesteps
    # (a subclass may keep them as Python floats, see ddif.diffusion.sampling_plan.FixedStepDDIM)
    _ab: torch.Tensor | list[float]
    _ab_prev: torch.Tensor | list[float]

    def __init__(self, schedule: NoiseSchedule, spacing: str = "leading", clip_sample: float | None = None):
        self.schedule = schedule
        self.spacing = spacing
        self.clip_sample = clip_sample
        self.timesteps = torch.empty(0, dtype=torch.int64)
        self.grid: list[int] = []
        self._positions: dict[int, int] = {}

    @property
    def num_train_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def set_timesteps(self, num_inference_steps: int | None = None, timesteps: Sequence[int] | None = None) -> None:
        """Choose the sampling grid: ``num_inference_steps`` respaced steps, or explicit training
        ``timesteps`` (strictly descending; the last step always leads to the clean image)."""
        if timesteps is not None and len(timesteps):
            ts = torch.as_tensor(list(timesteps), dtype=torch.int64)
            if (ts[1:] >= ts[:-1]).any() or ts.min() < 0 or ts.max() >= self.num_train_timesteps:
                raise ValueError(
                    f"timesteps must be strictly descending within [0, {self.num_train_timesteps}), got {ts.tolist()}"
                )
            self.timesteps = ts
        elif num_inference_steps is not None:
            self.timesteps = respace(self.num_train_timesteps, num_inference_steps, self.spacing)
        else:
            raise ValueError("set_timesteps needs num_inference_steps or timesteps")
        # the grid as Python ints (what a sampling loop iterates: constants for a traced / compiled
        # loop, no tensor read back) and timestep -> position, for step(model_output, timestep, sample)
        self.grid = [int(t) for t in self.timesteps.tolist()]
        self._positions = {t: i for i, t in enumerate(self.grid)}
        if len(self._positions) != len(self.timesteps):
            raise ValueError(f"sampling timesteps must be distinct, got {self.timesteps.tolist()}")
        ab = self.schedule.alphas_cumprod
        # Python floats: a step reads no tensor back (nothing for a traced / compiled loop to sync on)
        self._ab = ab[self.timesteps].tolist()
        # alpha_bar of the step each one leads to; the last step leads to the clean image
        self._ab_prev = torch.cat([ab[self.timesteps[1:]], torch.ones(1, dtype=torch.float64)]).tolist()

    def __len__(self) -> int:
        return len(self.timesteps)

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        return x0.clamp(-self.clip_sample, self.clip_sample) if self.clip_sample is not None else x0

    def adds_noise(self, timestep: Timestep | None = None) -> bool:
        """Whether ``step(.., timestep, ..)`` (any step when ``timestep`` is None) draws fresh noise."""
        if timestep is not None:
            self.index_for_timestep(timestep)
        return False

    def index_for_timestep(self, timestep: Timestep) -> int:
        """Position in ``timesteps`` of ``timestep`` (an int or a 0-d/one-element tensor)."""
        if not len(self.timesteps):
            raise RuntimeError("call set_timesteps(n) before step()")
        if type(timestep) is int and timestep in self._positions:  # the sampling loop's case
            return self._positions[timestep]
        value: object = timestep
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"timestep must be a single value, got a tensor of shape {tuple(value.shape)}")
            value = value.item()
        key = None
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
            key = int(float(value))  # integral (checked), and the grid's timesteps are far below 2**53
        if key is None or key not in self._positions:
            raise ValueError(
                f"timestep {timestep!r} is not in the sampling grid {self.timesteps.tolist()} "
                f"(step() takes a training timestep from scheduler.timesteps, not a step index)"
            )
        return self._positions[key]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Timestep,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> SchedulerOutput:
        """One step from ``timestep`` to the next timestep of the grid (see the subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")


class DDIMScheduler(RespacedScheduler):
    """x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z."""

    def __init__(
        self, schedule: NoiseSchedule, eta: float = 0.0, spacing: str = "leading", clip_sample: float | None = None
    ):
        super().__init__(schedule, spacing, clip_sample)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = eta

    def _sigma(self, index: int) -> float:
        ab, ab_prev = float(self._ab[index]), float(self._ab_prev[index])
        return self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5

    def adds_noise(self, timestep: Timestep | None = None) -> bool:
        index = None if timestep is None else self.index_for_timestep(timestep)
        if self.eta == 0:
            return False
        if index is None:
            return any(self._sigma(i) > 0 for i in range(len(self.timesteps))) if len(self.timesteps) else True
        return self._sigma(index) > 0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Timestep,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> SchedulerOutput:
        """One step from ``timestep`` (an element of ``timesteps``) to the next timestep of the grid
        (the clean image after the last), given the network's x0 prediction."""
        index = self.index_for_timestep(timestep)
        ab, ab_prev = float(self._ab[index]), float(self._ab_prev[index])
        x0 = self._clip(model_output)
        eps = (sample - ab**0.5 * x0) / (1 - ab) ** 0.5
        sigma = self._sigma(index)
        dir_coef = max(1 - ab_prev - sigma**2, 0.0) ** 0.5
        prev = ab_prev**0.5 * x0 + dir_coef * eps
        if sigma > 0:
            if noise is None:
                noise = _randn_like(sample, generator)
            prev = prev + sigma * noise
        return SchedulerOutput(prev, x0)


class DDPMScheduler(RespacedScheduler):
    """Ancestral sampling from the posterior q(x_prev | x_t, x0) of the respaced chain."""

    def adds_noise(self, timestep: Timestep | None = None) -> bool:
        if timestep is None:
            return True
        index = self.index_for_timestep(timestep)
        ab, ab_prev = float(self._ab[index]), float(self._ab_prev[index])
        return index < len(self.timesteps) - 1 and (1 - ab / ab_prev) * (1 - ab_prev) / (1 - ab) > 0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Timestep,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> SchedulerOutput:
        """One ancestral step from ``timestep`` (an element of ``timesteps``); no noise on the last."""
        index = self.index_for_timestep(timestep)
        ab, ab_prev = float(self._ab[index]), float(self._ab_prev[index])
        beta = 1 - ab / ab_prev
        x0 = self._clip(model_output)
        c0 = ab_prev**0.5 * beta / (1 - ab)
        ct = (1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab)
        prev = c0 * x0 + ct * sample
        var = beta * (1 - ab_prev) / (1 - ab)
        if index < len(self.timesteps) - 1 and var > 0:
            if noise is None:
                noise = _randn_like(sample, generator)
            prev = prev + var**0.5 * noise
        return SchedulerOutput(prev, x0)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the generator's device (CPU by default) so results do not depend on the device.
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=torch.float32).to(x.device, x.dtype)


SCHEDULERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}


def make_scheduler(
    name: str, schedule: NoiseSchedule, eta: float = 0.0, spacing: str = "leading", clip_sample: float | None = None
) -> RespacedScheduler:
    name = name.lower()
    if name == "ddim":
        return DDIMScheduler(schedule, eta=eta, spacing=spacing, clip_sample=clip_sample)
    if name == "ddpm":
        return DDPMScheduler(schedule, spacing=spacing, clip_sample=clip_sample)
    raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SCHEDULERS)}")
