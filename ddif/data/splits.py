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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
            f"the scene is {height}x{width}: after a {test_len}-pixel test strip and a {val_len}-pixel "
            f"validation strip only {max(train_len, 0)} pixels remain for training (< patch_size "
            f"{cfg.patch_size}); use a smaller test_size / val_fraction or a bigger scene"
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


@dataclass
class SplitPlan:
    """Everything that will be written, decided before writing."""

    regions: dict[str, Region]
    patches: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N, 2) corners in its region
    rejected_fill: dict[str, int] = field(default_factory=dict)  # split -> grid positions lost to fill
    test_crop: Region | None = None  # in scene coordinates


def plan_splits(fill: np.ndarray, cfg: MakeDatasetConfig) -> SplitPlan:
    """Regions, the patches of ``train`` (shuffled by ``cfg.seed``, at most ``max_train_patches``)
    and ``val``, and the test crop, for a scene whose fill mask is ``fill`` (H, W). Raises
    ``ValueError`` when a split gets no patch or no test crop fits."""
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
                f"{split} region {region.as_tuple()} holds no fill-free {p}-pixel patch "
                f"(margin {cfg.margin}); use a smaller patch_size / fill_margin or move the split"
            )
        if split == "train":
            pos = pos[np.random.default_rng(cfg.seed).permutation(len(pos))]
            if cfg.max_train_patches:
                pos = pos[: cfg.max_train_patches]
        plan.patches[split] = pos
        plan.rejected_fill[split] = rejected
    if cfg.test_size:
        region = plan.regions["test"]
        corner = pick_test_crop(fill[region.slices], cfg.test_size, r)
        if corner is None:
            raise ValueError(
                f"no fill-free {cfg.test_size}x{cfg.test_size} test crop in the test strip "
                f"{region.as_tuple()}; use a smaller test_size or another holdout_side"
            )
        plan.test_crop = Region(region.row + corner[0], region.col + corner[1], cfg.test_size, cfg.test_size)
    return plan
