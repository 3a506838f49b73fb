"""Progressive distillation of the DDIM sampler (Salimans & Ho, "Progressive Distillation for
Fast Sampling of Diffusion Models", ICLR 2022), in the x0 parameterisation DDIF already uses.

Each round a student (initialised from the teacher) learns to take in ONE deterministic DDIM
step what the teacher does in TWO: for a student step from t to t'' covering the teacher steps
t -> t' -> t'', the student's x0 target is the x0 for which one DDIM step from z_t lands exactly
on the teacher's z_t''::

    x0_target = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

(alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar); at the last step z_t'' is already clean).
The loss is the squared error in x0 weighted by max(SNR(t), 1) ("truncated SNR" weighting of
the paper). Grids nest: the student's grid is every other timestep of the teacher's.

Self-conditioning is handled as the sampler handles it: the first step of a chain gets no
estimate (the network is fed z_t in its place); a later step gets the previous x0 estimate. Inside
a teacher pair the second step gets the first step's estimate; where the previous estimate is
not available (the first step of a pair that is not the chain's first, and the student's step)
it is replaced by the network's own no-grad estimate at the current point, the standard
self-conditioning approximation (Chen et al., "Analog Bits", ICLR 2023). Teacher and student
follow the same rule.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ddif.config import Preset
from ddif.diffusion.samplers import respace
from ddif.diffusion.schedule import NoiseSchedule
from ddif.models.ddif import DDIF
from ddif.training.trainer import RunOptions, Trainer


@dataclass
class DistillConfig:
    schedule: tuple[int, ...] = (32, 16, 8, 4, 2, 1)  # teacher steps, then each round's student steps
    iterations_per_round: int = 2000
    lr: float = 5e-5
    batch_size: int = 16
    ema_decay: float = 0.999
    ema_start: int = 0
    grad_clip: float = 1.0
    val_every: int = 500
    ckpt_every: int = 250
    log_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        self.schedule = tuple(int(s) for s in self.schedule)
        if len(self.schedule) < 2:
            raise ValueError(
                f"distillation schedule needs a teacher step count and at least one student: {self.schedule}"
            )
        for a, b in zip(self.schedule, self.schedule[1:]):
            if a != 2 * b:
                raise ValueError(f"each round halves the steps: {a} -> {b} in {self.schedule} is not a halving")


def teacher_grid(preset: Preset, steps: int) -> torch.Tensor:
    """The teacher's descending training timesteps for ``steps`` DDIM steps."""
    d = preset.diffusion
    if d.sample_timesteps and len(d.sample_timesteps) == steps:
        return torch.tensor(d.sample_timesteps, dtype=torch.int64)
    return respace(d.timesteps, steps, d.timestep_spacing)


def _alpha_sigma(schedule: NoiseSchedule, t: torch.Tensor, clean: torch.Tensor, like: torch.Tensor):
    ab = schedule.alphas_cumprod.to(t.device)[t.clamp(min=0)]
    ab = torch.where(clean, torch.ones_like(ab), ab)
    shape = (-1,) + (1,) * (like.dim() - 1)
    return ab.sqrt().to(like.dtype).reshape(shape), (1 - ab).sqrt().to(like.dtype).reshape(shape), ab


class DistillationLoss(nn.Module):
    """Student loss against two deterministic teacher DDIM steps (x0 parameterisation)."""

    grid: torch.Tensor  # the teacher's timesteps (a buffer)

    def __init__(self, student: DDIF, teacher: DDIF, schedule: NoiseSchedule, teacher_timesteps: torch.Tensor):
        super().__init__()
        if len(teacher_timesteps) % 2:
            raise ValueError(f"the teacher grid needs an even number of steps, got {len(teacher_timesteps)}")
        self.student = student
        self.teacher = teacher
        self.schedule = schedule
        self.register_buffer("grid", teacher_timesteps.clone(), persistent=False)

    def _estimate(self, model, z, t, cache, first: torch.Tensor, previous: torch.Tensor | None):
        """Self-conditioning input: z itself at the chain's first step, else ``previous`` or the
        model's own no-grad estimate at (z, t)."""
        if not model.config.self_condition:
            return None
        if previous is None:
            with torch.no_grad():
                previous = model(z, t, self_cond=None, cache=cache)
        return torch.where(first.reshape(-1, 1, 1, 1), z, previous)

    def forward(
        self, gt: torch.Tensor, lms: torch.Tensor, pan: torch.Tensor, pair_index: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        grid = self.grid.to(pair_index.device)
        n = len(grid)
        residual = gt - lms
        i0 = 2 * pair_index
        t, t1 = grid[i0], grid[i0 + 1]
        last = (i0 + 2) >= n
        t2 = torch.where(last, torch.zeros_like(t), grid[(i0 + 2).clamp(max=n - 1)])
        first = pair_index == 0
        a, s, ab = _alpha_sigma(self.schedule, t, torch.zeros_like(last), residual)
        a1, s1, _ = _alpha_sigma(self.schedule, t1, torch.zeros_like(last), residual)
        a2, s2, _ = _alpha_sigma(self.schedule, t2, last, residual)
        z = a * residual + s * noise.to(residual.dtype)

        with torch.no_grad():
            self.teacher.eval()
            cache_t = self.teacher.encode_condition(lms, pan)
            x0a = self.teacher(z, t, self_cond=self._estimate(self.teacher, z, t, cache_t, first, None), cache=cache_t)
            z1 = a1 * x0a + s1 * (z - a * x0a) / s
            x0b = self.teacher(z1, t1, self_cond=x0a if self.teacher.config.self_condition else None, cache=cache_t)
            z2 = a2 * x0b + s2 * (z1 - a1 * x0b) / s1
            ratio = s2 / s
            target = (z2 - ratio * z) / (a2 - ratio * a)

        cache_s = self.student.encode_condition(lms, pan)
        pred = self.student(z, t, self_cond=self._estimate(self.student, z, t, cache_s, first, None), cache=cache_s)
        snr = ab / (1 - ab)
        weight = snr.clamp(min=1.0).to(pred.dtype).reshape(-1, 1, 1, 1)
        return (weight * (pred.float() - target.float()) ** 2).mean()


class DistillRound(Trainer):
    """One halving round, with the trainer's optimiser, EMA, AMP, checkpoints and exact resume."""

    def __init__(
        self,
        teacher: DDIF,
        teacher_timesteps: torch.Tensor,
        train_set: Dataset,
        val_set: Dataset | None,
        options: RunOptions,
        dcfg: DistillConfig,
    ):
        self.teacher_model = teacher
        self.teacher_timesteps = teacher_timesteps
        student_grid = teacher_timesteps[::2]
        preset = copy.deepcopy(teacher.preset)
        preset.diffusion.sample_timesteps = tuple(int(x) for x in student_grid)
        preset.diffusion.__post_init__()
        preset.diffusion.sampler, preset.diffusion.eta = "ddim", 0.0
        t = preset.train
        t.lr, t.batch_size, t.iterations = dcfg.lr, dcfg.batch_size, dcfg.iterations_per_round
        t.lr_milestones, t.grad_clip, t.ema_decay, t.ema_start = (), dcfg.grad_clip, dcfg.ema_decay, dcfg.ema_start
        t.val_every, t.ckpt_every, t.log_every, t.seed = dcfg.val_every, dcfg.ckpt_every, dcfg.log_every, dcfg.seed
        student = DDIF(preset)
        student.load_state_dict(teacher.state_dict())
        if teacher.fused_kernels:
            student.set_fused_kernels(True)
        super().__init__(preset, train_set, val_set, options, model=student)
        self.teacher_model.to(self.device).eval()
        for p in self.teacher_model.parameters():
            p.requires_grad_(False)

    def build_loss_module(self) -> nn.Module:
        return DistillationLoss(self.model, self.teacher_model, self.schedule, self.teacher_timesteps)

    def compute_loss(
        self, gt: torch.Tensor, lms: torch.Tensor, pan: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = len(self.teacher_timesteps) // 2
        pair_index = torch.randint(0, pairs, (gt.shape[0],), generator=self.generator).to(self.device)
        noise = torch.randn(gt.shape, generator=self.generator).to(self.device)
        return self.loss_module(gt, lms, pan, pair_index, noise), {}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics vs ground truth and PSNR of the student's output vs the teacher's."""
        row = super().validate()
        if not row or self.val_set is None:
            return row
        from ddif.data.evalset import eval_set_from_dataset
        from ddif.fuser import Fuser
        from ddif.metrics import psnr

        data = eval_set_from_dataset(self.val_set, limit=self.opts.val_batches * self.local_batch)
        student = Fuser(self.ema_model().to(self.device))
        teacher = Fuser(self.teacher_model)
        teacher.scheduler.set_timesteps(timesteps=self.teacher_timesteps.tolist())
        a = student.fuse(data.lms.to(self.device), data.pan.to(self.device), seed=0).cpu()
        b = teacher.fuse(data.lms.to(self.device), data.pan.to(self.device), seed=0).cpu()
        row["psnr_vs_teacher"] = float(torch.as_tensor(psnr(a, b)).float().mean())
        return row


def distill(
    teacher: DDIF,
    train_set: Dataset,
    val_set: Dataset | None,
    out: str | Path,
    dcfg: DistillConfig,
    options: RunOptions,
) -> list[Path]:
    """Run every round of ``dcfg.schedule``; returns the student checkpoints (fewest steps last).

    Each round lives in ``out/round_<N>to<N/2>/``; a finished round leaves ``student.pt`` there and
    is skipped on ``--resume``; an unfinished one resumes exactly from its checkpoints.
    """
    out = Path(out)
    students = []
    current = teacher.eval()
    grid = teacher_grid(teacher.preset, dcfg.schedule[0])
    for steps_from, steps_to in zip(dcfg.schedule, dcfg.schedule[1:]):
        round_dir = out / f"round_{steps_from}to{steps_to}"
        done = round_dir / "student.pt"
        if options.resume and done.exists():
            current = DDIF.load(done)
            grid = torch.tensor(current.preset.diffusion.sample_timesteps, dtype=torch.int64)
            students.append(done)
            print(f"round {steps_from}->{steps_to}: already done ({done})")
            continue
        opts = copy.copy(options)
        opts.out = str(round_dir)
        rnd = DistillRound(current, grid, train_set, val_set, opts, dcfg)
        rnd.fit()
        if rnd.step < rnd.cfg.iterations:  # stopped early (--stop-after): resume later
            print(f"round {steps_from}->{steps_to} stopped at step {rnd.step}; rerun with --resume to continue")
            return students
        student = rnd.ema_model()
        meta = {
            "teacher_steps": steps_from,
            "student_steps": steps_to,
            "iterations": rnd.step,
            "timesteps": list(student.preset.diffusion.sample_timesteps),
            "method": "progressive distillation",
        }
        student.save(done, metadata=meta)
        print(f"round {steps_from}->{steps_to}: student saved to {done} ({json.dumps(meta['timesteps'])})")
        students.append(done)
        current = student
        grid = torch.tensor(student.preset.diffusion.sample_timesteps, dtype=torch.int64)
    return students
