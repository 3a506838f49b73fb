"""The Triton kernels compile for an H100 (sm_90) with the real GPU compiler, on a CPU-only
machine (``python -m ddif.kernels.compile_check``): the interpreter-run tests check the arithmetic,
this checks that the GPU build works and that the main tile configurations do not spill."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernels_compile_for_sm90_without_spills():
    ptxas = Path(importlib.util.find_spec("triton").origin).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("this Triton build has no NVIDIA backend tools (ptxas)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "ddif.kernels.compile_check", "--quick", "--arch", "90",
                          "--dtypes", "fp16,fp32"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "all kernels compiled" in run.stdout
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("_")]
    assert len(rows) >= 10, run.stdout
    spilled = [r for r in rows if "fp16" in r and r[-2] != "0"]  # columns: ... regs stack smem
    assert not spilled, f"fp16 kernels with a stack frame (register spills): {spilled}"
