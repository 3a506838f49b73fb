"""train.csv agrees with the checkpoint training restarts from: no repeated step rows after an
interruption before the first checkpoint, after a plain restart, or after a kill that tore the
last line."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import tiny_preset
from ddif.training import RunOptions, Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ddif.data import write_pancollection_h5

    path = tmp_path_factory.mktemp("csvdata") / "train.h5"
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(4, 4, 16, 16, generator=g) * 0.8 + 0.1
    ms = torch.nn.functional.avg_pool2d(gt, 4)
    lms = torch.nn.functional.interpolate(ms, scale_factor=4, mode="bilinear", align_corners=False)
    write_pancollection_h5(path, ms=ms, lms=lms, pan=gt.mean(1, keepdim=True), gt=gt, max_dn=1.0)
    return path


def _trainer(data: Path, out: Path, **opts) -> Trainer:
    from ddif.data import open_dataset

    p = tiny_preset()
    p.model.base_width, p.model.channel_mults, p.model.attn_resolutions = 8, (1, 2), ()
    p.train.batch_size, p.train.iterations, p.train.ckpt_every = 2, 5, 3
    p.train.val_every, p.train.log_every, p.train.num_workers, p.train.ema_start = 0, 1, 0, 1
    return Trainer(p, open_dataset(data, p), None, RunOptions(out=str(out), progress=False, **opts))


def _steps(out: Path) -> list[int]:
    with open(out / "train.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_resume_before_first_checkpoint_does_not_repeat_rows(data, tmp_path):
    _trainer(data, tmp_path, stop_after=2).fit()              # interrupted before the step-3 checkpoint
    assert _steps(tmp_path) == [1, 2] and not (tmp_path / "checkpoints").exists()
    _trainer(data, tmp_path, resume=True).fit()               # no checkpoint: starts from scratch
    assert _steps(tmp_path) == [1, 2, 3, 4, 5]


def test_restart_without_resume_starts_a_new_log(data, tmp_path):
    _trainer(data, tmp_path).fit()
    _trainer(data, tmp_path).fit()                            # a fresh run into the same folder
    assert _steps(tmp_path) == [1, 2, 3, 4, 5]


def test_resume_after_a_kill_drops_rows_past_the_checkpoint_and_a_torn_line(data, tmp_path):
    _trainer(data, tmp_path, stop_after=4).fit()              # checkpoint at 3, rows 1..4
    with open(tmp_path / "train.csv", "a") as f:
        f.write("5,0.12")                                     # a row torn by kill -9
    resumed = _trainer(data, tmp_path, resume=True)
    resumed.fit()
    assert resumed.step == 5 and _steps(tmp_path) == [1, 2, 3, 4, 5]
    with open(tmp_path / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(None not in r.values() and None not in r for r in rows)
