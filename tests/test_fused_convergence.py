"""Convergence: 200 training steps of a small model with and without the fused kernels (same seed)
give loss curves that agree.

Tolerance (stated in the README): every step's loss within 5% (relative) of the reference run's
and the mean of the last 20 losses within 1%. Measured on CPU (2-core x86-64): all fused kernels
(Triton in the interpreter) max 1.4%, mean 0.08% per step; the C++ CSM op alone max 3.6%, mean 0.2%
(float32 round-off, amplified by 200 optimizer steps).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_preset
from test_training import _write_dataset

STEPS = 200
MAX_STEP_REL = 0.05
LAST20_REL = 0.01


def _losses(data: Path, out: Path, fused: str) -> torch.Tensor:
    """fused: 'none', 'csm' (the C++ op only) or 'all'."""
    from ddif.data import open_dataset
    from ddif.training import RunOptions, Trainer
    from ddif.models.layers import FWMAttention, WaveletCondition

    p = tiny_preset()
    p.train.batch_size, p.train.iterations, p.train.lr, p.train.grad_clip = 4, STEPS, 1e-3, 1.0
    p.train.val_every, p.train.ckpt_every, p.train.log_every, p.train.num_workers = 0, 10 ** 9, 10 ** 9, 0
    trainer = Trainer(p, open_dataset(data, p), None, RunOptions(out=str(out), progress=False))
    if fused != "none":
        trainer.model.set_fused_kernels(True)
    if fused == "csm":
        for m in trainer.model.modules():
            if isinstance(m, (FWMAttention, WaveletCondition)):
                m.fused = False
    return torch.tensor([r["loss"] for r in trainer.fit()])


def _compare(a: torch.Tensor, b: torch.Tensor) -> None:
    rel = (a - b).abs() / a.abs()
    assert rel.max() <= MAX_STEP_REL, f"step losses differ by up to {rel.max():.3%}"
    last = abs(a[-20:].mean() - b[-20:].mean()) / a[-20:].mean()
    assert last <= LAST20_REL, f"last-20 mean losses differ by {last:.3%}"
    assert a[-20:].mean() < 0.8 * a[:5].mean(), "the reference run did not learn"


def test_fused_csm_training_matches_reference(tmp_path):
    from ddif.kernels import available

    if available().get("csm_cpu") is not True and available().get("csm_cuda") is not True:
        pytest.skip(f"the C++ CSM op is not built: {available()}")
    data = _write_dataset(tmp_path / "train.h5", 16)
    ref = _losses(data, tmp_path / "ref", "none")
    fused = _losses(data, tmp_path / "fused", "csm")
    _compare(ref, fused)


@pytest.mark.slow
def test_all_fused_kernels_training_matches_reference(tmp_path):
    """Every fused kernel, the Triton ones in the CPU interpreter (about 10 minutes on 2 cores)."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from test_fused_convergence import _losses, _compare
from test_training import _write_dataset
data = _write_dataset(Path({str(tmp_path)!r}) / "train.h5", 16)
_compare(_losses(data, Path({str(tmp_path)!r}) / "ref", "none"), _losses(data, Path({str(tmp_path)!r}) / "fused", "all"))
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
