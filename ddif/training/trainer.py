"""Training loop for DDIF: AdamW, MultiStep decay, gradient clipping, EMA, self-conditioning,
AMP, periodic validation, atomic checkpoints and exact resume, DistributedDataParallel.

Exact resume: every source of randomness is an explicit, checkpointed state: the data order is a
stream of per-epoch permutations derived from (seed, epoch) and consumed at a known offset;
augmentations, timesteps, noise and the self-conditioning coin come from the trainer's generator;
dropout uses the global torch RNG. All of it is saved with the optimizer, scheduler, EMA and
grad-scaler states, so an interrupted-and-resumed run gives the same losses as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import os
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from ddif.config import Preset
from ddif.data.augment import RandomDihedral
from ddif.diffusion.loss import DiffusionLoss, draw_noise
from ddif.diffusion.schedule import NoiseSchedule
from ddif.models.checkpoint import TRAIN_STATE_FORMAT, read_checkpoint
from ddif.models.ddif import DDIF
from ddif.training.augment import dihedral_augment, random_crop
from ddif.training.ema import EMA
from ddif.utils.io import atomic_torch_save, atomic_write_text

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunOptions:
    """How to run (not what to train): where, on what device, precision, logging."""

    out: str = "runs/ddif"
    device: str = "auto"
    amp: str = "none"  # none | bf16 | fp16
    fused_kernels: bool = False
    resume: bool = False
    tensorboard: bool = False
    progress: bool = True
    val_batches: int = 2  # validation batches per evaluation (loss + metrics)
    val_sample_steps: int = 10  # sampling steps for validation metrics
    stop_after: int | None = None  # stop (as if interrupted) after this many steps in this run
    time_budget_s: float | None = None  # stop after the step that crosses this much wall time (this run)
    keep_checkpoints: int = 3


class StreamSampler(Sampler[int]):
    """Infinite stream of indices: per-epoch permutations seeded by (seed, epoch), split across
    ranks, starting at a given offset (the number of samples this rank already consumed)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if n <= 0:
            raise ValueError("the training dataset is empty")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start

    def _global(self) -> Iterator[int]:
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            yield from torch.randperm(self.n, generator=g).tolist()
            epoch += 1

    def __iter__(self) -> Iterator[int]:
        skip = self.start
        for i, idx in enumerate(self._global()):
            if i % self.world != self.rank:
                continue
            if skip:
                skip -= 1
                continue
            yield idx

    def __len__(self) -> int:  # pragma: no cover - infinite; DataLoader only needs it for len()
        return 2**62


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    keys = items[0].keys()
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in keys if k in ("gt", "ms", "lms", "pan")}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    # Training randomness comes from `generator` (data order is derived from the step); the
    # global torch RNG drives dropout / drop-path.
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _dataset_augment(dataset: Dataset) -> Callable | None:
    """The per-item augmentation a dataset applies (``FusionH5.augment``), or None."""
    return getattr(dataset, "augment", None)


def _check_single_augmentation(train_set: Dataset) -> None:
    """The trainer is the one place training data is flipped / rotated (from its checkpointed
    generator, so that resume is exact): a dataset that draws its own dihedral transforms would
    augment every sample twice, from an RNG the checkpoint does not follow."""
    if isinstance(_dataset_augment(train_set), RandomDihedral):
        raise ValueError(
            f"{train_set!r} augments its items (RandomDihedral) and the Trainer augments every batch "
            "itself: open the training set without augmentation (augment=False, the default; "
            "train=True only requires ground truth)"
        )


def _length(dataset: Dataset) -> int:
    """The number of items of a dataset (the trainer needs datasets with a ``__len__``)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{dataset!r}: the trainer needs datasets with a length (__len__)")
    return len(dataset)


def _item(dataset: Dataset, index: int) -> dict[str, torch.Tensor]:
    """Item ``index`` as stored: without the dataset's augmentation when it has a ``read``."""
    read = getattr(dataset, "read", None)
    return read(index) if _dataset_augment(dataset) is not None and callable(read) else dataset[index]


class Trainer:
    """Train a DDIF model on a dataset of dicts with ``gt``, ``lms``, ``pan`` (images in [0, 1]).

    The trainer augments (a random crop to ``train.patch_size``, or to one of ``train.patch_sizes``
    per step with the batch cut to keep the pixel count, then a random flip / rot90 per
    sample, see :mod:`ddif.training.augment`); give it datasets that do not: a :class:`ddif.data.
    FusionH5` opened with the default ``augment=None`` (``train=True`` only requires ``gt``). One
    that draws its own :class:`ddif.data.RandomDihedral` is refused; validation reads items without
    the dataset's augmentation.
    """

    def __init__(
        self,
        preset: Preset,
        train_set: Dataset,
        val_set: Dataset | None = None,
        options: RunOptions | None = None,
        model: DDIF | None = None,
    ):
        _check_single_augmentation(train_set)
        self.preset = preset
        self.cfg = preset.train
        self.opts = options or RunOptions()
        self.out = Path(self.opts.out)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.is_main = self.rank == 0
        self.device = resolve_device(self.opts.device)
        if self.opts.amp not in AMP_DTYPES:
            raise ValueError(f"--amp must be one of {list(AMP_DTYPES)}, got {self.opts.amp!r}")
        self.amp_dtype = AMP_DTYPES[self.opts.amp]
        if self.cfg.batch_size % self.world:
            raise ValueError(f"batch size {self.cfg.batch_size} is not divisible by {self.world} processes")
        self.local_batch = self.cfg.batch_size // self.world

        torch.manual_seed(self.cfg.seed)
        self.model = (model or DDIF(preset)).to(self.device)
        if self.opts.fused_kernels:
            self.model.set_fused_kernels(True)
        self.schedule = NoiseSchedule.from_config(preset.diffusion)
        self.loss_module: torch.nn.Module = self.build_loss_module()
        if self.world > 1:
            self.loss_module = torch.nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(self.cfg.lr_milestones), gamma=self.cfg.lr_gamma
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.ema = EMA(self.model, decay=self.cfg.ema_decay, start_step=self.cfg.ema_start)
        self.generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + self.rank)
        self.step = 0
        self.train_set, self.val_set = train_set, val_set
        self.history: list[dict[str, float]] = []
        self._tb: SummaryWriter | None = None

    def build_loss_module(self) -> torch.nn.Module:
        return DiffusionLoss(self.model, self.schedule)

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": TRAIN_STATE_FORMAT,
            "step": self.step,
            "config": self.preset.to_json(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(self.generator),
            "world": self.world,
        }

    def save_checkpoint(self) -> Path:
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        atomic_torch_save(self.state_dict(), path)
        self.preset.save_json(path.with_suffix(".json"))
        atomic_write_text(self.ckpt_dir / "latest", path.name + "\n")
        # the EMA weights as an engine checkpoint, ready for `ddif sample` / `ddif evaluate`
        self.ema_model().save(self.out / "model_ema.pt", metadata={"step": self.step, "kind": "ema"})
        self._prune_checkpoints()
        return path

    def _prune_checkpoints(self) -> None:
        ckpts = sorted(self.ckpt_dir.glob("step_*.pt"))
        for old in ckpts[: -max(self.opts.keep_checkpoints, 1)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)

    def latest_checkpoint(self) -> Path | None:
        marker = self.ckpt_dir / "latest"
        if marker.exists():
            path = self.ckpt_dir / marker.read_text().strip()
            if path.exists():
                return path
        ckpts = sorted(self.ckpt_dir.glob("step_*.pt"))
        return ckpts[-1] if ckpts else None

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = read_checkpoint(path, map_location="cpu")
        if state.get("format") != TRAIN_STATE_FORMAT:
            raise ValueError(f"{path}: not a training checkpoint (format {state.get('format')!r})")
        saved = Preset.from_json(state["config"])
        if saved.model != self.preset.model:
            raise ValueError(
                f"{path}: checkpoint model config differs from this run's: {saved.model} vs {self.preset.model}"
            )
        if state.get("world", 1) != self.world:
            raise ValueError(
                f"{path}: saved with {state['world']} processes, resuming with {self.world}; "
                "exact resume needs the same number"
            )
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], self.generator)
        self.step = int(state["step"])

    def ema_model(self) -> DDIF:
        model = copy.deepcopy(self.model).cpu()
        self.ema.copy_to(model)
        return model.eval()

    # ------------------------------------------------------------------ data
    def _loader(self) -> Iterator[dict[str, torch.Tensor]]:
        sampler = StreamSampler(
            _length(self.train_set), self.cfg.seed, self.rank, self.world, start=self.step * self.local_batch
        )
        loader = DataLoader(
            self.train_set,
            batch_size=self.local_batch,
            sampler=sampler,
            collate_fn=_collate,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            pin_memory=self.device.type == "cuda",
            # its own generator: creating the iterator must not consume the global
            # RNG (which drives dropout), or a resumed run would diverge
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        return iter(loader)

    # ------------------------------------------------------------------ logging
    def _log(self, name: str, row: dict[str, Any]) -> None:
        if not self.is_main:
            return
        path = self.out / f"{name}.csv"
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{name}/{k}", v, row["step"])

    def _truncate_logs(self) -> None:
        """Make the CSV logs agree with the step training restarts from: on a resume from step S,
        drop the rows with step > S (written after the checkpoint, they will be redone) and any
        torn last line of a killed run, rewriting the file atomically; on a fresh start (step 0:
        no checkpoint, with or without --resume) start new logs."""
        for name in ("train", "val"):
            path = self.out / f"{name}.csv"
            if not path.exists():
                continue
            if self.step == 0:
                path.unlink()
                continue
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                rows = []
                for r in reader:
                    try:
                        step = int(float(r["step"]))
                    except (KeyError, TypeError, ValueError):
                        continue  # a torn line (or a foreign file): not a row
                    if None in r.values() or None in r:
                        continue  # too few / too many fields: a torn line
                    if step <= self.step:
                        rows.append(r)
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(path, buf.getvalue())

    # ------------------------------------------------------------------ training
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.model.train()
        size, n = self.cfg.step_patch(self.step, self.local_batch)
        if n < next(iter(batch.values())).shape[0]:
            batch = {k: v[:n] if torch.is_tensor(v) else v for k, v in batch.items()}
        batch = random_crop(batch, size, self.preset.data.ratio, self.generator)
        batch = dihedral_augment(batch, self.generator)
        gt, lms, pan = (batch[k].to(self.device, non_blocking=True) for k in ("gt", "lms", "pan"))
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss, info = self.compute_loss(gt, lms, pan)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step}")
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        loss_value = loss.detach()
        if self.world > 1:
            dist.all_reduce(loss_value)
            loss_value /= self.world
        return {
            "step": self.step,
            "loss": float(loss_value),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "grad_norm": float(grad_norm),
            **info,
        }

    def compute_loss(
        self, gt: torch.Tensor, lms: torch.Tensor, pan: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The diffusion loss of one batch (randomness from the trainer's generator)."""
        draw = draw_noise(
            gt.shape,
            self.schedule.num_timesteps,
            self.cfg.self_cond_prob,
            self.model.config.self_condition,
            self.device,
            self.generator,
        )
        loss = self.loss_module(gt, lms, pan, draw.t, draw.noise, draw.use_self_cond)
        return loss, {"self_cond": int(draw.use_self_cond)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss (fixed noise) and reduced-resolution metrics of EMA samples."""
        if self.val_set is None or _length(self.val_set) == 0:
            return {}
        from ddif.fuser import Fuser

        model = self.ema_model().to(self.device)
        g = torch.Generator().manual_seed(12345)
        loss_fn = DiffusionLoss(model, self.schedule)
        # a distilled student samples on its own grid; otherwise a few respaced steps
        own_grid = bool(model.preset.diffusion.sample_timesteps)
        fuser = Fuser(model, steps=None if own_grid else min(self.opts.val_sample_steps, self.schedule.num_timesteps))
        losses, preds, gts = [], [], []
        n = _length(self.val_set)
        for b in range(self.opts.val_batches):
            idx = [(b * self.local_batch + i) % n for i in range(min(self.local_batch, n))]
            batch = _collate([_item(self.val_set, i) for i in idx])
            gt, lms, pan = (batch[k].to(self.device) for k in ("gt", "lms", "pan"))
            draw = draw_noise(gt.shape, self.schedule.num_timesteps, 0.0, False, self.device, g)
            losses.append(float(loss_fn(gt, lms, pan, draw.t, draw.noise, False)))
            preds.append(fuser.fuse(lms, pan, seed=b).cpu())
            gts.append(gt.cpu())
        row: dict[str, float] = {"step": self.step, "val_loss": float(np.mean(losses))}
        row.update(reduced_metrics(torch.cat(preds), torch.cat(gts), self.preset.data.ratio))
        return row

    def _remove_stale_temp_files(self) -> list[str]:
        """A killed run leaves the temporary files of its atomic writes (``.<name>.<random>.partial``)
        in the run folder and its checkpoints/: garbage, never a checkpoint. Removed at start."""
        from ddif.utils.io import is_atomic_temp

        removed = []
        for folder in (self.out, self.ckpt_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if p.is_file() and is_atomic_temp(p.name):
                    p.unlink(missing_ok=True)
                    removed.append(p.name)
        return removed

    def fit(self, on_step: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            stale = self._remove_stale_temp_files()
            if stale:
                print(f"removed {len(stale)} temporary file(s) of an interrupted run: {', '.join(sorted(stale)[:3])}")
            self.preset.save_json(self.out / "config.json")
        if self.opts.resume:
            latest = self.latest_checkpoint()
            if latest is not None:
                self.load_checkpoint(latest)
                if self.is_main:
                    print(f"resumed from {latest} at step {self.step}")
            elif self.is_main:
                print(f"--resume: no checkpoint in {self.ckpt_dir}, starting from scratch")
        if self.is_main:
            self._truncate_logs()  # the CSV logs restart where training does
        if self.opts.tensorboard and self.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                print("tensorboard is not installed: logging to CSV only")
        total = self.cfg.iterations
        stop_at = total if self.opts.stop_after is None else min(total, self.step + self.opts.stop_after)
        batches = self._loader()
        progress = None
        if self.opts.progress and self.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(total=total, initial=self.step, desc="train", dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            while self.step < stop_at:
                if self.opts.time_budget_s is not None and time.perf_counter() - t0 >= self.opts.time_budget_s:
                    break
                row = self.train_step(next(batches))
                row["elapsed_s"] = round(time.perf_counter() - t0, 3)
                self.history.append(row)
                if on_step is not None:
                    on_step(row)
                if self.step % self.cfg.log_every == 0 or self.step == total:
                    self._log("train", row)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                if self.cfg.val_every and (self.step % self.cfg.val_every == 0 or self.step == total):
                    if self.is_main:
                        val = self.validate()
                        if val:
                            self._log("val", val)
                            if progress is not None:
                                progress.write(" ".join(f"{k}={v:.4g}" for k, v in val.items()))
                if self.step % self.cfg.ckpt_every == 0 or self.step == total:
                    if self.is_main:
                        self.save_checkpoint()
                    if self.world > 1:
                        dist.barrier()
        finally:
            if progress is not None:
                progress.close()
            if self._tb is not None:
                self._tb.close()
        return self.history


def reduced_metrics(pred: torch.Tensor, gt: torch.Tensor, ratio: int) -> dict[str, float]:
    """SAM / ERGAS / PSNR (and Q2n where defined) averaged over a batch."""
    from ddif import metrics

    out: dict[str, float] = {}
    for name, fn in (
        ("sam", metrics.sam),
        ("ergas", lambda p, g: metrics.ergas(p, g, ratio=ratio)),
        ("psnr", metrics.psnr),
    ):
        out[name] = float(torch.as_tensor(fn(pred, gt)).float().mean())
    return out
