"""Side-by-side evaluation of fusion methods (DDIF checkpoints, distilled students, classical
baselines) under the reduced-resolution (Wald) and full-resolution (QNR) protocols, following the
conventions of Vivone et al., "A new benchmarking framework and survey of pansharpening methods"
(IEEE GRSM 2021)."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import torch

from ddif.data.evalset import EvalSet, eval_set_from_dataset  # noqa: F401 (re-exported)
from ddif.utils.io import atomic_write_text

if TYPE_CHECKING:
    from ddif.fuser import Fuser
    from ddif.runtime.backends import FuserBackend

# a method fuses a batch: (lms, pan, ms) -> fused, all (B, C, H, W) in [0, 1]
Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# one table row: the method's name under "method", then its metrics and timing
Row = dict[str, Any]

LOWER_IS_BETTER = {"SAM", "ERGAS", "D_lambda", "D_s", "s/image"}


def classical_methods(ratio: int, sensor: str, names: Sequence[str] | None = None) -> dict[str, Method]:
    """EXP (the interpolated MS itself) and the classical baselines of :mod:`ddif.baselines`."""
    from ddif.baselines import BASELINES

    methods: dict[str, Method] = {"EXP (interpolated MS)": lambda lms, pan, ms: lms}
    for name, fn in BASELINES.items():
        if names is None or name in names:
            methods[name] = (lambda f: lambda lms, pan, ms: f(lms, pan, ms=ms, ratio=ratio, sensor=sensor))(fn)
    return methods


def fuser_method(fuser: Fuser | FuserBackend, seed: int = 0) -> Method:
    return lambda lms, pan, ms: fuser.fuse(lms, pan, seed=seed)


def block_size_for(h: int, w: int, preferred: int = 32) -> int:
    """The toolbox's 32x32 Q blocks, or the largest smaller power of 2 that tiles a small image."""
    b = preferred
    while b > 2 and (h % b or w % b):
        b //= 2
    return b


def _metrics_for(
    fused: torch.Tensor, data: EvalSet, ratio: int, sensor: str, mtf_kernel: str = "ddif"
) -> dict[str, float]:
    from ddif import metrics

    fused = fused.clamp(0, 1)
    block = block_size_for(*fused.shape[-2:])
    if data.gt is not None:
        m = metrics.reduced_resolution_metrics(fused, data.gt, ratio=ratio, block_size=block)
    else:
        ms = _require_ms(data, "the full-resolution metrics")
        m = metrics.full_resolution_metrics(
            fused, ms, data.pan, ratio=ratio, sensor=sensor, block_size=block, mtf_kernel=mtf_kernel
        )
    return {k: _mean(v) for k, v in m.items()}


def _require_ms(data: EvalSet, what: str) -> torch.Tensor:
    if data.ms is None:
        raise ValueError(f"the evaluation set has no 'ms' (the coarse multispectral image), needed by {what}")
    return data.ms


def _mean(v: torch.Tensor | float) -> float:
    return float(torch.as_tensor(v, dtype=torch.float64).mean())


@overload
def evaluate(
    methods: Mapping[str, Method],
    data: EvalSet,
    ratio: int,
    sensor: str,
    batch_size: int = 8,
    return_outputs: Literal[False] = False,
    reference: str | None = None,
    compare: Sequence[str] = (),
    mtf_kernel: str = "ddif",
) -> list[Row]: ...


@overload
def evaluate(
    methods: Mapping[str, Method],
    data: EvalSet,
    ratio: int,
    sensor: str,
    batch_size: int = 8,
    *,
    return_outputs: Literal[True],
    reference: str | None = None,
    compare: Sequence[str] = (),
    mtf_kernel: str = "ddif",
) -> tuple[list[Row], dict[str, torch.Tensor]]: ...


def evaluate(
    methods: Mapping[str, Method],
    data: EvalSet,
    ratio: int,
    sensor: str,
    batch_size: int = 8,
    return_outputs: bool = False,
    reference: str | None = None,
    compare: Sequence[str] = (),
    mtf_kernel: str = "ddif",
) -> list[Row] | tuple[list[Row], dict[str, torch.Tensor]]:
    """Run every method on ``data`` (in batches) and compute its metrics; rows of dicts.

    With ``reference`` (the name of one of ``methods``, e.g. a 25-step teacher), the methods named
    in ``compare`` (e.g. its distilled students) also get "PSNR vs <reference>": how closely they
    reproduce the reference's output. ``mtf_kernel`` (``"ddif"`` or ``"toolbox"``) picks the MTF
    filter of the full-resolution D_lambda (:func:`ddif.metrics.d_lambda`); the reduced-resolution
    metrics use no MTF filter.
    """
    from ddif.data.mtf import check_mtf_kernel

    check_mtf_kernel(mtf_kernel)
    rows: list[Row] = []
    outputs: dict[str, torch.Tensor] = {}
    for name, method in methods.items():
        ms = _require_ms(data, "the methods (called with lms, pan, ms)")
        t0 = time.perf_counter()
        fused = torch.cat(
            [
                method(data.lms[i : i + batch_size], data.pan[i : i + batch_size], ms[i : i + batch_size])
                for i in range(0, len(data), batch_size)
            ]
        )
        elapsed = (time.perf_counter() - t0) / len(data)
        rows.append({"method": name, **_metrics_for(fused, data, ratio, sensor, mtf_kernel), "s/image": elapsed})
        outputs[name] = fused
    if reference is not None:
        from ddif.metrics import psnr

        column = "PSNR vs teacher"
        for row in rows:
            row[column] = (
                _mean(psnr(outputs[row["method"]].clamp(0, 1), outputs[reference].clamp(0, 1)))
                if row["method"] in compare
                else float("nan")
            )
            row["s/image"] = row.pop("s/image")  # keep timing the last column
    return (rows, outputs) if return_outputs else rows


def markdown(rows: list[Row], title: str | None = None) -> str:
    if not rows:
        return ""
    cols = [c for c in rows[0] if c != "method"]
    best = {}
    for c in cols:
        vals = [r[c] for r in rows if isinstance(r.get(c), float) and math.isfinite(r[c])]
        if vals and c not in ("s/image", "PSNR vs teacher"):
            best[c] = min(vals) if c in LOWER_IS_BETTER else max(vals)
    lines = []
    if title:
        lines.append(f"**{title}**\n")
    arrows = {c: (" ↓" if c in LOWER_IS_BETTER else " ↑") for c in cols}
    lines.append("| method | " + " | ".join(c + arrows[c] for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float) and math.isnan(v):
                text = "–"
            elif isinstance(v, float):
                text = f"{v:.4f}" if c != "s/image" else f"{v:.3g}"
            else:
                text = str(v)
            cells.append(f"**{text}**" if c in best and v == best[c] else text)
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
    if not rows:
        return
    buf = io.StringIO()
    fields = list(extra or {}) + list(rows[0])
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({**(extra or {}), **r})
    atomic_write_text(path, buf.getvalue())
