"""Scene adaptation: fine-tune a model on the scene it is about to fuse.

Target-adaptive fine-tuning after G. Scarpa, S. Vitale and D. Cozzolino, "Target-adaptive
CNN-based pansharpening", IEEE TGRS 56(9), 5443-5457, 2018: before fusing a scene at full
resolution, the network is fine-tuned for a short while on the scene's *own* reduced-resolution
version (Wald protocol: MS and PAN degraded by the ratio with the sensor's MTF, the original MS as
the reference), so that it adapts to the scene's land cover, the sensor's actual PAN/MS relation
and acquisition conditions it never saw in training. Nothing but the scene is used: no reference
at the scale of the product is needed.

Here (:func:`adaptation_set`): windows spread over the scene's valid area are read through the
scene layer (nodata, scale, the model's preprocessing), the MS-to-PAN misregistration is measured
on them and the PAN resampled onto the MS's own grid (as ``ddif make-dataset`` does for training
data), each window is Wald-degraded with the model's nominal simulation and, as in training, a
few simulations drawn around it (``AdaptConfig.variants``: adapting to one simulator would tune the
model to that simulator), and cut into patches; a tenth of the windows is held back.
:func:`adapt` fine-tunes with the training loop (:class:`ddif.training.Trainer`: the same loss,
crops and flips) within a wall-time budget and keeps the adapted weights only if they lower ERGAS
on the held-back patches (else the model is returned unchanged, and the report says so).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ddif.config import Preset
from ddif.models.ddif import DDIF


@dataclass
class AdaptConfig:
    """Scene adaptation settings (``ddif adapt`` options)."""

    budget_s: float = 150.0  # wall time of the fine-tuning itself (reading + checks + saving come on top)
    max_iterations: int = 5000
    lr: float = 5e-5
    batch_size: int = 8
    patch_size: int = 32  # reduced-resolution patches (MS px of the scene)
    windows: int = 24  # scene windows read (spread over the valid area)
    window_size: int = 96  # MS px per window side
    holdout_fraction: float = 0.1  # windows held back to check the adaptation
    registration: str = "measure"  # as make-dataset: measure, off, or DY,DX
    # simulations of the scene's reduced version: the sensor's nominal one and variants - 1 draws
    # around it (ddif.data.degradation.DegradationRanges), as the model was trained: adapting to
    # one simulator would tune the model to it, not to the scene
    variants: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget_s <= 0 or self.max_iterations < 1:
            raise ValueError(
                f"budget_s and max_iterations must be positive, got {self.budget_s}, {self.max_iterations}"
            )
        if self.batch_size < 1 or self.windows < 1:
            raise ValueError("batch_size and windows must be >= 1")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction must lie in [0, 0.5), got {self.holdout_fraction}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")


class _Items(torch.utils.data.Dataset):
    """Patches as dicts of float32 tensors (gt, ms, lms, pan), in memory."""

    def __init__(self, items: list[dict[str, torch.Tensor]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


@dataclass
class AdaptationSet:
    train: _Items
    holdout: _Items
    report: dict[str, Any] = field(default_factory=dict)


def _window_grid(ms_shape: tuple[int, int], size: int) -> list[tuple[int, int]]:
    h, w = ms_shape
    ys = list(range(0, max(h - size, 0) + 1, size)) or [0]
    xs = list(range(0, max(w - size, 0) + 1, size)) or [0]
    return [(y, x) for y in ys for x in xs]


def adaptation_set(
    ms_path: str | os.PathLike,
    pan_path: str | os.PathLike,
    preset: Preset,
    cfg: AdaptConfig,
    *,
    input_scale: float | None = None,
    input_nodata: float | None = None,
) -> AdaptationSet:
    """Reduced-resolution patches of a scene (see the module docstring), checked like any scene."""
    from ddif.data.clouds import dilate
    from ddif.data.degradation import Degradation
    from ddif.data.raster import Preprocessing, open_pair
    from ddif.data.registration import ms_centre_in_pan
    from ddif.data.scene import SceneReader, gdal_env, invalid_mask

    pre = Preprocessing.for_preset(preset)
    r = int(preset.data.ratio)
    size = max(cfg.patch_size, cfg.window_size // r * r)
    with gdal_env():
        grid = open_pair(
            ms_path,
            pan_path,
            bands=preset.model.bands,
            guide_bands=preset.model.guide_bands,
            ratio=r,
            preprocessing=pre,
            input_nodata=input_nodata,
        )
        origin_full = ms_centre_in_pan(grid.ms.transform, grid.pan.transform)
        windows: list[dict[str, Any]] = []
        with SceneReader(grid, pre, input_scale) as reader:
            for j0, i0 in _window_grid(grid.ms.shape, size):
                h, w = min(size, grid.ms.height - j0), min(size, grid.ms.width - i0)
                h, w = h // r * r, w // r * r
                py, px = r * j0 + grid.shift[0], r * i0 + grid.shift[1]
                if h < cfg.patch_size or w < cfg.patch_size or py < 0 or px < 0:
                    continue
                if py + r * h > grid.pan.height or px + r * w > grid.pan.width:
                    continue
                raw = reader._read(reader._ms, "MS", j0, i0, h, w)
                bad = invalid_mask(raw, grid.ms.nodata)
                pan_raw, pan_bad = reader.pan_window(py, px, r * h, r * w)
                bad = bad | pan_bad.reshape(h, r, w, r).any(axis=(1, 3))
                if bad.mean() > 0.5:
                    continue
                windows.append(
                    {
                        "window": (j0, i0, h, w),
                        "ms": reader.ms_lowres(j0, i0, h, w),
                        "pan": reader._norm(pan_raw),
                        "bad": dilate(bad, 2),
                        "centre": (origin_full[0] + r * j0 - py, origin_full[1] + r * i0 - px),
                    }
                )
    if not windows:
        raise ValueError(
            f"scene {ms_path} + {pan_path}: no {size} x {size} MS-px window is half valid; the scene is too "
            "small or too empty to adapt a model on"
        )
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(windows))
    chosen = [windows[i] for i in sorted(order[: cfg.windows])]
    nominal = Degradation.nominal(
        preset.data.sensor,
        list(preset.data.band_names) if preset.data.band_names else preset.model.bands,
        r,
        pre.method_for(r),
        pre.padding,
    )
    return patches_from_windows(chosen, r, nominal, cfg)


def patches_from_windows(
    windows: list[dict[str, Any]], ratio: int, degradation: Any, cfg: AdaptConfig
) -> AdaptationSet:
    """Reduced-resolution patches of scene windows, each ``{"ms": (C, h, w), "pan": (P, r h, r w),
    "bad": (h, w) bool, "centre": (row, col)}`` (normalised; ``centre``: MS pixel (0, 0) in the PAN
    window's coordinates). The scene's misregistration is measured on the windows (median of their
    estimates) and the PAN resampled onto the MS's own grid, then each window is Wald-degraded with
    ``degradation`` and cut into ``cfg.patch_size`` patches; whole windows are held back."""
    from ddif.data.degradation import wald_triplet
    from ddif.data.registration import estimate_misregistration
    from ddif.data.sources import register_pan

    r = ratio
    rng = np.random.default_rng([cfg.seed, 1])
    shifts = []
    for win in windows:
        try:
            found = estimate_misregistration(win["ms"], win["pan"][0], r, win["centre"], ~win["bad"])
        except ValueError:
            continue
        if found.r2 >= 0.5:
            shifts.append(found.shift_pan_px)
    from ddif.data.scene import MAX_REGISTRATION_SPREAD

    mode = cfg.registration
    measured = None
    if mode.strip().lower() == "measure" and shifts:
        measured = tuple(float(v) for v in np.median(np.asarray(shifts), axis=0))
        spread = float(np.median(np.abs(np.asarray(shifts) - np.asarray(measured)), axis=0).max())
        # one shift for the scene only when the windows agree (clouds move between the two looks)
        usable = len(shifts) >= 3 and spread <= MAX_REGISTRATION_SPREAD
        mode = f"{measured[0]},{measured[1]}" if usable and max(abs(v) for v in measured) >= 0.05 else "off"
    n_hold = int(round(cfg.holdout_fraction * len(windows))) if len(windows) >= 4 else 0
    hold_ids = set(rng.permutation(len(windows))[:n_hold].tolist())
    train: list[dict[str, torch.Tensor]] = []
    hold: list[dict[str, torch.Tensor]] = []
    p = cfg.patch_size
    from ddif.data.degradation import DegradationRanges, draw_degradation

    draws = np.random.default_rng([cfg.seed, 2])
    degradations = [degradation] + [
        draw_degradation(draws, degradation, DegradationRanges()) for _ in range(cfg.variants - 1)
    ]
    for k, win in enumerate(windows):
        pan, _ = register_pan(win["ms"], win["pan"], win["bad"], r, win["centre"], mode)
        h, w = win["ms"].shape[1:]
        held = k in hold_ids
        stride = p if held else max(r, p // 2 // r * r)
        # held-back windows are checked on the nominal simulation only
        for deg in degradations[:1] if held else degradations:
            with torch.no_grad():
                rr = wald_triplet(torch.from_numpy(win["ms"])[None], torch.from_numpy(pan)[None], deg)
            for y in range(0, h - p + 1, stride):
                for x in range(0, w - p + 1, stride):
                    if win["bad"][y : y + p, x : x + p].any():
                        continue
                    item = {
                        "gt": rr.gt[0, :, y : y + p, x : x + p].clone(),
                        "lms": rr.lms[0, :, y : y + p, x : x + p].clone(),
                        "pan": rr.pan[0, :, y : y + p, x : x + p].clone(),
                        "ms": rr.ms[0, :, y // r : (y + p) // r, x // r : (x + p) // r].clone(),
                    }
                    (hold if held else train).append(item)
    if not train:
        raise ValueError(f"no valid {p} px patch to adapt on")
    report = {
        "windows": len(windows),
        "patches": len(train),
        "holdout_patches": len(hold),
        "misregistration_pan_px": None if measured is None else [round(v, 4) for v in measured],
        "registration_applied": mode,
        "degradation": degradation.describe(),
        "variants": len(degradations),
    }
    return AdaptationSet(_Items(train), _Items(hold), report)


def _ergas(model: DDIF, items: _Items, steps: int, seed: int) -> float | None:
    from ddif.fuser import Fuser
    from ddif.metrics import ergas

    if not len(items):
        return None
    fuser = Fuser(model, steps=steps)
    gt = torch.stack([it["gt"] for it in items.items])
    lms = torch.stack([it["lms"] for it in items.items])
    pan = torch.stack([it["pan"] for it in items.items])
    with torch.no_grad():
        fused = fuser.fuse(lms, pan, seed=seed)
    return float(torch.as_tensor(ergas(fused, gt, ratio=model.preset.data.ratio)).mean())


def adapt(
    model: DDIF,
    data: AdaptationSet,
    cfg: AdaptConfig,
    *,
    progress: bool = True,
    check_steps: int = 2,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> tuple[DDIF, dict[str, Any]]:
    """Fine-tune a copy of ``model`` on ``data.train`` within ``cfg.budget_s`` seconds; returns
    (the adapted model, or ``model`` itself when the held-back patches got worse) and a report."""
    from ddif.training.trainer import RunOptions, Trainer

    preset = copy.deepcopy(model.preset)
    t = preset.train
    t.lr, t.batch_size, t.iterations = cfg.lr, cfg.batch_size, cfg.max_iterations
    t.lr_milestones, t.patch_size, t.patch_sizes = (), cfg.patch_size, ()
    t.ema_start, t.val_every, t.ckpt_every = cfg.max_iterations + 1, 0, cfg.max_iterations + 1
    t.log_every, t.num_workers, t.seed = cfg.max_iterations + 1, 0, cfg.seed
    before = _ergas(model, data.holdout, check_steps, cfg.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ddif-adapt-") as tmp:
        trainer = Trainer(
            preset,
            data.train,
            None,
            RunOptions(out=tmp, device="cpu", progress=progress, time_budget_s=cfg.budget_s),
            model=copy.deepcopy(model),
        )
        history = trainer.fit(on_step=on_step)
    seconds = time.perf_counter() - t0
    adapted = trainer.model.eval()
    adapted.preset.train = model.preset.train  # the recipe it was trained with stays recorded
    after = _ergas(adapted, data.holdout, check_steps, cfg.seed)
    kept = after is None or before is None or after <= before
    losses = [h["loss"] for h in history]
    report = {
        "method": "target-adaptive fine-tuning (Scarpa et al., IEEE TGRS 2018), scene at reduced resolution",
        "config": asdict(cfg),
        **data.report,
        "iterations": len(history),
        "seconds": round(seconds, 2),
        "loss_first_50": float(np.mean(losses[:50])) if losses else None,
        "loss_last_50": float(np.mean(losses[-50:])) if losses else None,
        "holdout_ergas_before": before,
        "holdout_ergas_after": after,
        "kept": kept,
    }
    if not kept:
        report["note"] = "the adapted weights fused the held-back patches worse; the model is returned unchanged"
        return model, report
    return adapted, report


def adapted_metadata(source: str, report: dict[str, Any]) -> dict[str, Any]:
    """Metadata recorded in an adapted checkpoint."""
    clean = {k: v for k, v in report.items() if not (isinstance(v, float) and math.isnan(v))}
    return {"kind": "adapted", "adapted_from": source, "adaptation": clean}


def scene_identity(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Name, size and modification time of each input (an adapted model records them, so a
    rerun can reuse it for the same scene)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(f"{os.path.abspath(p)} size={st.st_size} mtime_ns={st.st_mtime_ns}")
    return out


__all__ = [
    "AdaptConfig",
    "AdaptationSet",
    "adaptation_set",
    "patches_from_windows",
    "adapt",
    "adapted_metadata",
    "scene_identity",
]
