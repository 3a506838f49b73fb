"""Honest spatial splits of one scene, and the patches each split is cut into.

The scene is cut into regions along one side (:func:`split_regions`): a test strip (from which one
square fill-free crop is taken, :func:`pick_test_crop`), then a validation strip, then the
training region. Patches (:func:`patch_positions`) keep ``margin`` pixels from fill / nodata and
from their region's border, because the degradation filters smear both into their neighbourhood.
:func:`plan_splits` does all of it before anything is written, so a scene that cannot give every
split fails without leaving files behind.

All sizes are in pixels of the (cropped) scene's MS grid, which is the reduced-resolution PAN grid.
numpy only.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ddif.data.dataset_config import MakeDatasetConfig


@dataclass(frozen=True)
class Region:
    """Rows [row, row + height) and columns [col, col + width) of the (cropped) scene, MS grid."""

    row: int
    col: int
    height: int
    width: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.row, self.col, self.height, self.width)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def split_regions(height: int, width: int, cfg: MakeDatasetConfig) -> dict[str, Region]:
    """Test strip (``test_size`` wide), then validation strip (``val_fraction`` of the scene), then
    the training region, starting from ``cfg.holdout_side``; boundaries on multiples of the ratio."""
    r = cfg.ratio
    horizontal = cfg.holdout_side in ("left", "right")
    length = width if horizontal else height
    test_len = cfg.test_size
    val_len = int(round(cfg.val_fraction * length / r)) * r
    train_len = (length - test_len - val_len) // r * r
    if train_len < cfg.patch_size:
        raise ValueError(
            f"after a {test_len} px test strip and a {val_len} px validation strip only {max(train_len, 0)} px of "
            f"the scene's {length} px {'width' if horizontal else 'height'} remain for training (< patch_size "
            f"{cfg.patch_size})"
        )
    spans: dict[str, tuple[int, int]] = {}
    if cfg.holdout_side in ("left", "top"):
        spans["test"] = (0, test_len)
        spans["val"] = (test_len, val_len)
        spans["train"] = (test_len + val_len, train_len)
    else:  # measure from the far side; keep a ratio-aligned origin
        end = length // r * r
        spans["test"] = (end - test_len, test_len)
        spans["val"] = (end - test_len - val_len, val_len)
        spans["train"] = (end - test_len - val_len - train_len, train_len)
    other = (height if horizontal else width) // r * r
    regions = {}
    for k, (start, size) in spans.items():
        if size <= 0:
            continue
        regions[k] = Region(0, start, other, size) if horizontal else Region(start, 0, size, other)
    return regions


def _integral(mask: np.ndarray) -> np.ndarray:
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    s[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return s


def _box_sum(integral: np.ndarray, r0, c0, r1, c1):
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


def patch_positions(fill: np.ndarray, size: int, stride: int, margin: int, align: int) -> tuple[np.ndarray, int]:
    """Top-left corners (rows, cols) of ``size`` patches on a ``stride`` grid that lie at least
    ``margin`` pixels from fill and from the region border; also the number of grid positions
    rejected for fill."""
    h, w = fill.shape
    start = -(-margin // align) * align  # first aligned position >= margin
    rows = np.arange(start, h - size - margin + 1, stride)
    cols = np.arange(start, w - size - margin + 1, stride)
    if rows.size == 0 or cols.size == 0:
        return np.zeros((0, 2), dtype=np.int64), 0
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    integral = _integral(fill)
    bad = _box_sum(integral, rr - margin, cc - margin, rr + size + margin, cc + size + margin) > 0
    keep = ~bad
    return np.stack([rr[keep], cc[keep]], axis=1).astype(np.int64), int(bad.sum())


def pick_test_crop(fill: np.ndarray, size: int, align: int) -> tuple[int, int] | None:
    """The fill-free ``size`` crop (aligned) nearest the centre of the strip, or None."""
    h, w = fill.shape
    if h < size or w < size:
        return None
    rows = np.arange(0, h - size + 1, align)
    cols = np.arange(0, w - size + 1, align)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    ok = _box_sum(_integral(fill), rr, cc, rr + size, cc + size) == 0
    if not ok.any():
        return None
    dist = (rr + size / 2 - h / 2) ** 2 + (cc + size / 2 - w / 2) ** 2
    dist = np.where(ok, dist, np.inf)
    i = np.unravel_index(np.argmin(dist), dist.shape)
    return int(rr[i]), int(cc[i])


def pick_test_crops(fill: np.ndarray, size: int, margin: int, align: int) -> list[tuple[int, int]]:
    """Non-overlapping ``size`` crops (aligned), each at least ``margin`` px from fill and from the
    strip's border, taken greedily in raster order: every usable crop of a cloudy strip."""
    pos, _ = patch_positions(fill, size, align, margin, align)
    chosen: list[tuple[int, int]] = []
    for y, x in pos.tolist():
        if all(abs(y - a) >= size or abs(x - b) >= size for a, b in chosen):
            chosen.append((int(y), int(x)))
    return chosen


@dataclass
class SplitPlan:
    """Everything that will be written, decided before writing."""

    regions: dict[str, Region]
    patches: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N, 2) corners in its region
    rejected_fill: dict[str, int] = field(default_factory=dict)  # split -> grid positions lost to fill
    test_crop: Region | None = None  # in scene coordinates
    test_crops: list[Region] = field(default_factory=list)  # test_crop_size > 0: every crop, scene coordinates


def plan_splits(fill: np.ndarray, cfg: MakeDatasetConfig) -> SplitPlan:
    """Regions, the patches of ``train`` (shuffled by ``cfg.seed``, at most ``max_train_patches``)
    and ``val``, and the test crop, for a scene whose fill mask is ``fill`` (H, W). Raises
    ``ValueError`` when a split gets no patch or no test crop fits; the message then also names
    the options to change, with values that give every split on this scene (:func:`suggest_options`)."""
    try:
        return _plan(fill, cfg)
    except ValueError as e:
        raise ValueError(explain_failure(fill, cfg, str(e))) from None


def _plan(fill: np.ndarray, cfg: MakeDatasetConfig) -> SplitPlan:
    r, p = cfg.ratio, cfg.patch_size
    height, width = fill.shape
    plan = SplitPlan(split_regions(height, width, cfg))
    for split in ("train", "val"):
        if split not in plan.regions:
            continue
        region = plan.regions[split]
        pos, rejected = patch_positions(fill[region.slices], p, cfg.stride, cfg.margin, r)
        if len(pos) == 0:
            raise ValueError(
                f"the {split} region (row, col, height, width) {region.as_tuple()} holds no fill-free {p} px patch "
                f"{cfg.margin} px or more from fill and from the region's border (fill_margin)"
            )
        if split == "train":
            pos = pos[np.random.default_rng(cfg.seed).permutation(len(pos))]
            if cfg.max_train_patches:
                pos = pos[: cfg.max_train_patches]
        plan.patches[split] = pos
        plan.rejected_fill[split] = rejected
    if cfg.test_size and cfg.test_crop_size:
        region = plan.regions["test"]
        corners = pick_test_crops(fill[region.slices], cfg.test_crop_size, cfg.margin, r)
        if not corners:
            raise ValueError(
                f"no fill-free {cfg.test_crop_size}x{cfg.test_crop_size} test crop {cfg.margin} px or more from fill "
                f"in the test strip (row, col, height, width) {region.as_tuple()}"
            )
        plan.test_crops = [
            Region(region.row + y, region.col + x, cfg.test_crop_size, cfg.test_crop_size) for y, x in corners
        ]
    elif cfg.test_size:
        region = plan.regions["test"]
        corner = pick_test_crop(fill[region.slices], cfg.test_size, r)
        if corner is None:
            raise ValueError(
                f"no fill-free {cfg.test_size}x{cfg.test_size} test crop in the test strip (row, col, height, "
                f"width) {region.as_tuple()}"
            )
        plan.test_crop = Region(region.row + corner[0], region.col + corner[1], cfg.test_size, cfg.test_size)
    return plan


# ---------------------------------------------------------------------------------------------
# What to change when a scene is too small (or too full of fill) for the options
# ---------------------------------------------------------------------------------------------
_NICE_SIZES = (512, 384, 256, 192, 128, 96, 64, 48, 32, 24, 16, 8, 4, 2)
_VAL_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
_MIN_MS_PATCH = 4  # suggested patches keep at least 4 x 4 MS pixels
_MAX_PLANS = 200
_MAX_SECONDS = 10.0


def _split_sizes(cfg: MakeDatasetConfig, height: int, width: int, margin: int) -> list[dict[str, Any]]:
    """test_size / val_fraction / holdout_side settings, cheapest first, that leave the validation
    and training regions ``patch_size + 2 margin`` px each (geometry only: fill is not looked at).
    The current values come first, then the nearest validation fractions; the test crop only
    shrinks."""
    r, p = cfg.ratio, cfg.patch_size
    need = p + 2 * margin
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
    across = ("top", "bottom") if cfg.holdout_side in ("left", "right") else ("left", "right")
    sides = [cfg.holdout_side, opposite[cfg.holdout_side], *across]
    others = [v for v in _VAL_FRACTIONS if v != cfg.val_fraction]
    vfs = [cfg.val_fraction, *sorted(others, key=lambda v: (abs(v - cfg.val_fraction), -v))]
    # a suggested test crop holds one patch at least
    tests = [cfg.test_size] + [t for t in _NICE_SIZES if p <= t < cfg.test_size and t % r == 0]
    out = []
    for side in sides:
        horizontal = side in ("left", "right")
        length = (width if horizontal else height) // r * r
        other = (height if horizontal else width) // r * r
        if other < need:
            continue
        for vf in vfs:
            val_len = int(round(vf * length / r)) * r
            if 0 < vf and val_len < need:
                continue
            for t in tests:
                if t > other or (length - t - val_len) // r * r < need:
                    continue
                out.append({"holdout_side": side, "val_fraction": vf, "test_size": t})
    return out


def suggest_options(fill: np.ndarray, cfg: MakeDatasetConfig, limit: int = 2) -> list[tuple[dict[str, Any], SplitPlan]]:
    """Changes to ``cfg`` (option -> value) with which every split fits a scene whose fill mask is
    ``fill``, each with its plan; up to ``limit`` of them, the cheapest first.

    Cost order: the split sizes (``test_size``, ``val_fraction``, ``holdout_side``) change nothing
    in a patch, so they are changed first (the current holdout side, then the opposite one, then
    the other axis); then ``patch_size`` (less context per patch, with
    ``stride`` = half of it at most); ``fill_margin`` (patches nearer fill and region borders,
    where the degradation filters see padding) is lowered last, to the ratio, then 0. The
    validation split is kept when one was asked for; the test crop is given up (``test_size``
    0) only when nothing else works. Suggested patches keep 4 x 4 MS px at least and suggested test
    crops one patch at least. Empty when nothing tried works."""
    height, width = fill.shape
    r = cfg.ratio
    margins = [cfg.margin] + [m for m in (r, 0) if m < cfg.margin]
    patches = [(cfg.patch_size, cfg.stride)] + [
        (size, min(cfg.stride, max(r, size // 2 // r * r)))
        for size in _NICE_SIZES
        if _MIN_MS_PATCH * r <= size < cfg.patch_size and size % r == 0
    ]
    found: list[tuple[dict[str, Any], SplitPlan]] = []
    plans, start = 0, time.monotonic()
    for allow_no_test in (False, True):
        for margin in margins:
            for size, stride in patches:
                try:
                    trial = dataclasses.replace(
                        cfg,
                        fill_margin=margin,
                        patch_size=size,
                        stride=stride,
                        test_size=0 if allow_no_test else cfg.test_size,
                    )
                except ValueError:
                    continue
                for split in _split_sizes(trial, height, width, margin):
                    if plans >= _MAX_PLANS or time.monotonic() - start > _MAX_SECONDS:
                        return found
                    try:
                        candidate = dataclasses.replace(trial, **split)
                    except ValueError:
                        continue
                    plans += 1
                    try:
                        plan = _plan(fill, candidate)
                    except ValueError:
                        continue
                    if cfg.val_fraction > 0 and "val" not in plan.patches:
                        continue
                    change = {
                        k: getattr(candidate, k)
                        for k in ("patch_size", "stride", "fill_margin", "holdout_side", "val_fraction", "test_size")
                        if getattr(candidate, k) != getattr(cfg, k)
                    }
                    if candidate.margin == cfg.margin:
                        change.pop("fill_margin", None)  # -1 (auto) already meant this margin
                    found.append((change, plan))
                    break  # the cheapest split sizes for this patch / margin
                if len(found) >= limit:
                    return found
        if found or cfg.test_size == 0:
            break
    return found


def _flags(change: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return " ".join(f"--{k.replace('_', '-')} {value(v)}" for k, v in change.items())


def explain_failure(fill: np.ndarray, cfg: MakeDatasetConfig, reason: str) -> str:
    """``reason`` (why the plan failed), what the options ask of this scene, and the options to
    change, with values that work (:func:`suggest_options`), as ``ddif make-dataset`` flags."""
    r = cfg.ratio
    height, width = fill.shape
    horizontal = cfg.holdout_side in ("left", "right")
    length = width if horizontal else height
    val_len = int(round(cfg.val_fraction * length / r)) * r
    need = cfg.patch_size + 2 * cfg.margin
    text = (
        f"{reason}: the scene is {height} x {width} px on the MS grid ({r * height} x {r * width} PAN px at "
        f"ratio {r}; patch_size, stride, test_size and fill_margin count MS px). Along its "
        f"{'width' if horizontal else 'height'} ({length} px, holdout_side {cfg.holdout_side}) it must hold the "
        f"{cfg.test_size} px test strip, the {val_len} px validation strip (val_fraction {cfg.val_fraction:g}) "
        f"and the training region, and the validation and training regions need patch_size + 2 x fill_margin "
        f"= {cfg.patch_size} + 2 x {cfg.margin} = {need} px at least"
    )
    options = suggest_options(fill, cfg)
    if not options:
        return (
            text + "; no smaller test_size, patch_size or fill_margin, larger val_fraction or other "
            "holdout_side tried fits this scene: use a bigger one"
        )
    parts = []
    for change, plan in options:
        crop = f"a {plan.test_crop.height} px test crop" if plan.test_crop is not None else "no test file"
        counts = ", ".join(f"{len(v)} {k}" for k, v in plan.patches.items())
        parts.append(f"{_flags(change)} ({counts} patches, {crop})")
    return text + ". Pass " + "; or ".join(parts) + " (MakeDatasetConfig fields of the same names)"
