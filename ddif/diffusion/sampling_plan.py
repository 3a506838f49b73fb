"""The fixed-step sampling plan: the one rule for which timesteps a model samples, used by
:class:`ddif.Fuser`, every runtime backend and the ONNX export.

A plan is the list of training timesteps a deterministic DDIM sampler (Song et al., "Denoising
Diffusion Implicit Models", ICLR 2021, eta = 0) visits. It comes from, in order of precedence:

1. explicit timesteps (``--timesteps 480,240``);
2. the model's own grid: ``preset.diffusion.sample_timesteps`` (a step-distilled student records
   the timesteps it was trained for there; Salimans & Ho, "Progressive Distillation for Fast
   Sampling of Diffusion Models", ICLR 2022), else a ``sample_timesteps`` / ``timesteps`` list in
   the checkpoint metadata; used when no step count is asked for or the asked count equals its
   length (as :func:`ddif.training.distill.teacher_grid` does);
3. an asked step count (``--steps N``), respaced like :class:`ddif.Fuser` does
   (:func:`ddif.diffusion.respace` with the preset's ``timestep_spacing``);
4. the checkpoint metadata's ``sample_steps`` (or ``sampling_steps``);
5. the preset's ``diffusion.sample_steps``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ddif.config import Preset
from ddif.diffusion.samplers import DDIMScheduler, respace
from ddif.diffusion.schedule import NoiseSchedule

log = logging.getLogger(__name__)

# Metadata keys a checkpoint may carry to say how it samples (a distilled student writes these):
# a list of training timesteps, or a step count. Other values under these keys are ignored.
METADATA_TIMESTEPS_KEYS = ("sample_timesteps", "timesteps")
METADATA_STEPS_KEYS = ("sample_steps", "sampling_steps")


@dataclass(frozen=True)
class SamplingPlan:
    """Training timesteps (descending) of a deterministic DDIM sampler, and where they came from."""

    timesteps: tuple[int, ...]
    num_train_timesteps: int
    source: str = "explicit"

    def __post_init__(self) -> None:
        object.__setattr__(self, "timesteps", check_timestep_list(self.timesteps, self.num_train_timesteps))

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def scheduler(self, preset: Preset) -> FixedStepDDIM:
        """A DDIM (eta 0) scheduler over exactly these timesteps for ``preset``'s noise schedule."""
        schedule = NoiseSchedule.from_config(preset.diffusion)
        if schedule.num_timesteps != self.num_train_timesteps:
            raise ValueError(
                f"sampling plan is for {self.num_train_timesteps} training timesteps, the preset "
                f"has {schedule.num_timesteps}"
            )
        sched = FixedStepDDIM(schedule)
        sched.set_explicit_timesteps(self.timesteps)
        return sched

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampler": "ddim",
            "eta": 0.0,
            "steps": self.steps,
            "timesteps": list(self.timesteps),
            "num_train_timesteps": self.num_train_timesteps,
            "source": self.source,
        }


class FixedStepDDIM(DDIMScheduler):
    """:class:`DDIMScheduler` (eta 0) over an explicit list of training timesteps.

    The step coefficients are kept as Python floats (the same float64 values the parent computes),
    so that ``step`` needs no tensor-to-float conversion (and the timestep -> position lookup of
    ``step(model_output, timestep, sample)`` is a Python dict fed the loop's Python-int timesteps):
    that lets ``torch.export`` trace :func:`ddif.diffusion.sample_residual` itself, making the
    exported graph the library's own sampling loop rather than a copy of it.
    """

    def __init__(self, schedule: NoiseSchedule):
        super().__init__(schedule, eta=0.0)

    def set_timesteps(self, num_inference_steps: int | None = None, timesteps: Sequence[int] | None = None) -> None:
        super().set_timesteps(num_inference_steps, timesteps=timesteps)
        self._as_floats()

    def set_explicit_timesteps(self, timesteps: Iterable[int]) -> None:
        self.set_timesteps(timesteps=check_timestep_list(timesteps, self.num_train_timesteps))

    def _as_floats(self) -> None:
        self._ab = [float(v) for v in self._ab]
        self._ab_prev = [float(v) for v in self._ab_prev]


def check_timestep_list(timesteps: Iterable[int] | str, num_train_timesteps: int) -> tuple[int, ...]:
    """Validate a timestep list (or "480,240"): non-empty ints in [0, T), strictly descending."""
    if isinstance(timesteps, str):
        parts = [p.strip() for p in timesteps.split(",") if p.strip()]
        try:
            timesteps = [int(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"timesteps: expected comma-separated integers like '480,240', got {timesteps!r}"
            ) from None
    if isinstance(timesteps, torch.Tensor):
        timesteps = timesteps.tolist()
    ts = []
    for v in timesteps:
        if isinstance(v, bool) or not float(v).is_integer():
            raise ValueError(f"timesteps: expected integers, got {v!r}")
        ts.append(int(v))
    if not ts:
        raise ValueError("timesteps: the list is empty")
    bad = [t for t in ts if not 0 <= t < num_train_timesteps]
    if bad:
        raise ValueError(f"timesteps: values must lie in [0, {num_train_timesteps}), got {bad}")
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps: must be strictly descending (noisiest first), got {ts}")
    return tuple(ts)


def resolve_sampling_plan(
    preset: Preset,
    metadata: Mapping[str, Any] | None = None,
    *,
    steps: int | None = None,
    timesteps: Iterable[int] | str | None = None,
) -> SamplingPlan:
    """The sampling plan for a model (see the module docstring for the precedence)."""
    dcfg = preset.diffusion
    num_train = int(dcfg.timesteps)
    metadata = dict(metadata or {})
    if steps is not None:
        steps = int(steps)
        if not 1 <= steps <= num_train:
            raise ValueError(f"steps: must be in [1, {num_train}], got {steps}")
    if timesteps is not None:
        ts = check_timestep_list(timesteps, num_train)
        if steps is not None and steps != len(ts):
            raise ValueError(f"steps={steps} contradicts the {len(ts)} timesteps given ({list(ts)})")
        return SamplingPlan(ts, num_train, "explicit timesteps")
    own, where = tuple(getattr(dcfg, "sample_timesteps", ()) or ()), "the model's sample_timesteps"
    if not own:
        own = next((metadata[k] for k in METADATA_TIMESTEPS_KEYS if isinstance(metadata.get(k), (list, tuple))), ())
        where = "checkpoint metadata timesteps"
    if own:
        meta_ts = check_timestep_list(own, num_train)
        if steps is None or steps == len(meta_ts):
            return SamplingPlan(meta_ts, num_train, where)
        log.warning(
            "the checkpoint records %d sampling timesteps %s (a distilled student samples best with "
            "those); respacing to the %d steps asked for instead",
            len(meta_ts),
            list(meta_ts),
            steps,
        )
    if steps is not None:
        return SamplingPlan(_respaced(num_train, steps, dcfg.timestep_spacing), num_train, f"{steps} steps asked for")
    for key in METADATA_STEPS_KEYS:
        if isinstance(metadata.get(key), int) and not isinstance(metadata.get(key), bool):
            n = int(metadata[key])
            return SamplingPlan(_respaced(num_train, n, dcfg.timestep_spacing), num_train, f"checkpoint metadata {key}")
    n = int(dcfg.sample_steps)
    return SamplingPlan(_respaced(num_train, n, dcfg.timestep_spacing), num_train, "preset default sample_steps")


def _respaced(num_train: int, steps: int, spacing: str) -> tuple[int, ...]:
    return tuple(int(t) for t in respace(num_train, steps, spacing).tolist())
