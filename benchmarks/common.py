"""Shared benchmark helpers: honest timing (warm-up, median with p20/p80), CSV rows that carry
device / dtype / shape / TF32 setting / git commit, and Markdown tables.

The statistic follows ``triton.testing.do_bench``: a warm-up, then repeated timed runs, report
the median and the 20th / 80th percentiles. On a GPU every run is timed with CUDA events on the
current stream and the L2 cache is flushed before it (a 256 MiB write: small problems would
otherwise be timed from a warm cache); on a CPU with ``perf_counter`` around the call.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise SystemExit(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    times_s: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times_s)

    def quantile(self, q: float) -> float:
        xs = sorted(self.times_s)
        if len(xs) == 1:
            return xs[0]
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def p20(self) -> float:
        return self.quantile(0.2)

    @property
    def p80(self) -> float:
        return self.quantile(0.8)


L2_FLUSH_BYTES = 256 << 20     # larger than the L2 of any current GPU (H100: 50 MiB, H200: 60 MiB)


def bench(fn: Callable[[], object], device: torch.device | str, *, warmup: int = 1, reps: int = 3,
          min_time_s: float = 0.0, max_reps: int = 1000, flush_l2: bool = True) -> Timing:
    """Time ``fn`` after ``warmup`` calls; at least ``reps`` runs and at least ``min_time_s`` in all.

    CUDA: each run between two CUDA events on the current stream, after an L2 flush (``flush_l2``);
    the events are read after a synchronisation, so host-side launch cost counts only as far as it
    delays the GPU. CPU: wall time of the call."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    total = 0.0
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device=device) \
        if device.type == "cuda" and flush_l2 else None
    while len(times) < reps or (total < min_time_s and len(times) < max_reps):
        if device.type == "cuda":
            if flush is not None:
                flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return Timing(times)


def tf32_state() -> str:
    """What fp32 matmuls / convolutions use on CUDA (cuDNN defaults to TF32 convolutions: an fp32
    comparison against an exact-fp32 kernel favours eager unless said)."""
    if not torch.cuda.is_available():
        return "n/a (CPU)"
    return (f"matmul {'TF32' if torch.backends.cuda.matmul.allow_tf32 else 'fp32'}, "
            f"cuDNN conv {'TF32' if torch.backends.cudnn.allow_tf32 else 'fp32'}")


def git_commit(repo: str | os.PathLike | None = None) -> str:
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads)"


def append_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Append dict rows to ``path`` (header written when the file is new)."""
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    keys = list(rows[0].keys())
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def base_fields(device: torch.device | str, dtype: torch.dtype) -> dict:
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "dtype": str(dtype).replace("torch.", ""),
        "tf32": tf32_state(),
        "torch": torch.__version__,
        "commit": git_commit(),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(list(headers)), sep] + [line(r) for r in cells])
