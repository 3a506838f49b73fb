"""Training loop, exact resume, DDP on gloo, AMP, distillation and the train / sample / evaluate CLIs."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

from conftest import tiny_preset
from ddif.cli.main import main as cli
from ddif.models import DDIF, load_model
from ddif.training import RunOptions, Trainer

REPO = Path(__file__).resolve().parents[1]


def _write_dataset(path: Path, n: int = 8, size: int = 16, seed: int = 0, with_gt: bool = True) -> Path:
    from ddif.data import write_pancollection_h5

    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 4, size, size, generator=g) * 0.8 + 0.1
    ms = torch.nn.functional.avg_pool2d(gt, 4)
    lms = torch.nn.functional.interpolate(ms, scale_factor=4, mode="bilinear", align_corners=False)
    pan = gt.mean(1, keepdim=True)
    write_pancollection_h5(path, ms=ms, lms=lms, pan=pan, gt=gt if with_gt else None, max_dn=1.0)
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {"train": _write_dataset(root / "train.h5", 8, seed=0), "val": _write_dataset(root / "val.h5", 4, seed=1),
            "full": _write_dataset(root / "full.h5", 2, seed=2, with_gt=False)}


def _preset(iterations=6):
    p = tiny_preset()
    p.train.batch_size, p.train.iterations, p.train.ckpt_every = 4, iterations, 3
    p.train.val_every, p.train.log_every, p.train.num_workers, p.train.ema_start = 0, 1, 0, 2
    p.train.lr = 1e-3
    p.model.dropout, p.model.drop_path = 0.1, 0.1          # exercise the global RNG on resume
    return p


def _trainer(data, out, **opts):
    from ddif.data import open_dataset

    p = _preset()
    return Trainer(p, open_dataset(data["train"], p), None, RunOptions(out=str(out), progress=False, **opts))


def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_data, tmp_path):
    full = _trainer(tiny_data, tmp_path / "a").fit()
    _trainer(tiny_data, tmp_path / "b", stop_after=3).fit()                # "interrupted" after a checkpoint
    resumed = _trainer(tiny_data, tmp_path / "b", resume=True)
    rest = resumed.fit()
    assert resumed.step == 6 and [r["step"] for r in rest] == [4, 5, 6]
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[3:]], "resumed losses differ"
    a = load_model(tmp_path / "a" / "model_ema.pt").state_dict()
    b = load_model(tmp_path / "b" / "model_ema.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the CSV log holds each step once, in order
    with open(tmp_path / "b" / "train.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_checkpoints_atomic_and_complete(tiny_data, tmp_path):
    _trainer(tiny_data, tmp_path / "run").fit()
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert [c.name for c in ckpts] == ["step_00000003.pt", "step_00000006.pt"]
    state = torch.load(ckpts[-1], weights_only=True)
    for key in ("model", "ema", "optimizer", "scheduler", "scaler", "rng", "step", "config"):
        assert key in state
    assert (tmp_path / "run" / "config.json").exists() and ckpts[-1].with_suffix(".json").exists()
    assert not list((tmp_path / "run").rglob("*.partial"))


def test_resume_refuses_other_model_config(tiny_data, tmp_path):
    _trainer(tiny_data, tmp_path / "run", stop_after=3).fit()
    from ddif.data import open_dataset

    p = _preset()
    p.model.base_width = 8
    t = Trainer(p, open_dataset(tiny_data["train"], p), None,
                RunOptions(out=str(tmp_path / "run"), progress=False, resume=True))
    with pytest.raises(ValueError, match="model config differs"):
        t.fit()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_are_finite(tiny_data, tmp_path, amp):
    t = _trainer(tiny_data, tmp_path / amp, amp=amp)
    t.cfg.iterations = 2
    hist = t.fit()
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in hist)


def test_cli_train_resume_sample_evaluate(tiny_data, tmp_path):
    run = tmp_path / "run"
    common = ["train", "--config", str(_save_preset(tmp_path)), "--data", str(tiny_data["train"]), "--val",
              str(tiny_data["val"]), "--out", str(run), "--no-progress", "--val-batches", "1", "--val-sample-steps", "2", "--val-every", "3"]
    assert cli(common + ["--stop-after", "3"]) == 0
    assert cli(common + ["--resume"]) == 0
    with open(run / "val.csv") as f:
        val = list(csv.DictReader(f))
    assert [int(r["step"]) for r in val] == [3, 6] and all(float(r["sam"]) >= 0 for r in val)

    out = tmp_path / "fused.h5"
    assert cli(["sample", "--ckpt", str(run / "model_ema.pt"), "--input", str(tiny_data["val"]), "--out", str(out),
                "--steps", "2", "--quicklooks", str(tmp_path / "ql")]) == 0
    with h5py.File(out) as f:
        assert f["fused"].shape == (4, 4, 16, 16) and 0 <= f["fused"][:].min() and f["fused"][:].max() <= 1
    assert len(list((tmp_path / "ql").glob("fused_*.png"))) == 4

    ev = tmp_path / "eval"
    assert cli(["evaluate", "--ckpt", str(run / "model_ema.pt"), "--test", str(tiny_data["val"]), "--full",
                str(tiny_data["full"]), "--steps", "2", "--out-dir", str(ev), "--baselines", "brovey,gsa"]) == 0
    table = (ev / "results.md").read_text()
    for name in ("EXP", "brovey", "gsa", "DDIF model_ema.pt (2 steps)", "SAM", "ERGAS", "HQNR"):
        assert name in table

    # students next to their teacher: PSNR of each student's output vs the teacher's
    assert cli(["evaluate", "--ckpt", str(run / "model_ema.pt"), "--ckpt", str(run / "checkpoints" / "step_00000006.pt"),
                "--steps", "1",
                "--teacher", str(run / "model_ema.pt"), "--teacher-steps", "1", "--test", str(tiny_data["val"]),
                "--baselines", "none", "--out-dir", str(ev)]) == 0
    with open(ev / "results_reduced.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["teacher model_ema.pt (1 steps)", "DDIF model_ema.pt (1 steps)",
                                           "DDIF step_00000006.pt (1 steps)"]
    assert rows[0]["PSNR vs teacher"] == "nan"
    assert rows[1]["PSNR vs teacher"] == "inf"          # same weights, same steps, same seed
    assert rows[2]["PSNR vs teacher"] == "inf"          # the training state's EMA weights are the same


def test_cli_sample_geotiff_pair(tiny_data, tmp_path):
    import numpy as np

    from ddif.data import write_geotiff

    model = DDIF(_preset())
    model.save(tmp_path / "m.pt")
    g = np.random.default_rng(0)
    ms = (g.random((4, 8, 8)) * 0.8 + 0.1).astype(np.float32)
    pan = (g.random((1, 32, 32)) * 0.8 + 0.1).astype(np.float32)
    write_geotiff(tmp_path / "ms.tif", ms, crs="EPSG:32632", transform=(40.0, 0, 500000.0, 0, -40.0, 4e6))
    write_geotiff(tmp_path / "pan.tif", pan, crs="EPSG:32632", transform=(10.0, 0, 500000.0, 0, -10.0, 4e6))
    out = tmp_path / "f.h5"
    assert cli(["sample", "--ckpt", str(tmp_path / "m.pt"), "--ms", str(tmp_path / "ms.tif"), "--pan",
                str(tmp_path / "pan.tif"), "--out", str(out), "--steps", "2"]) == 0
    with h5py.File(out) as f:
        assert f["fused"].shape == (1, 4, 32, 32)
    write_geotiff(tmp_path / "pan_bad.tif", pan[:, :30, :30], crs="EPSG:32632")
    assert cli(["sample", "--ckpt", str(tmp_path / "m.pt"), "--ms", str(tmp_path / "ms.tif"), "--pan",
                str(tmp_path / "pan_bad.tif"), "--out", str(out), "--steps", "2"]) == 2


def _save_preset(tmp_path: Path) -> Path:
    path = tmp_path / "preset.json"
    _preset().save_json(path)
    return path


def test_cli_reports_bad_input_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    rc = cli(["train", "--preset", "gf2", "--data", str(bad), "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2 and "bad.h5" in capsys.readouterr().err


def test_ddp_two_cpu_processes_gloo(tiny_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): completes, one checkpoint writer, same weights on both ranks."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "ddif.cli.main", "train", "--config", str(_save_preset(tmp_path)), "--data", str(tiny_data["train"]),
           "--out", str(run), "--no-progress", "--iterations", "4", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert state["world"] == 2 and state["step"] == 4
    with open(run / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]


def test_distillation_rounds_and_resume(tiny_data, tmp_path):
    from ddif.data import open_dataset
    from ddif.fuser import Fuser
    from ddif.training.distill import DistillConfig, distill

    torch.manual_seed(0)
    teacher = DDIF(_preset()).eval()
    data = open_dataset(tiny_data["train"], teacher.preset)
    cfg = DistillConfig(schedule=(8, 4, 2), iterations_per_round=2, batch_size=4, ckpt_every=1, val_every=0,
                        log_every=1)
    students = distill(teacher, data, None, tmp_path / "d", cfg, RunOptions(progress=False))
    assert [p.parent.name for p in students] == ["round_8to4", "round_4to2"]
    grid8 = [434, 372, 310, 248, 186, 124, 62, 0]
    s4, s2 = DDIF.load(students[0]), DDIF.load(students[1])
    assert list(s4.preset.diffusion.sample_timesteps) == grid8[::2]
    assert list(s2.preset.diffusion.sample_timesteps) == grid8[::4]
    assert s2.metadata["student_steps"] == 2 and s2.metadata["teacher_steps"] == 4
    assert Fuser(s2).steps == 2
    # a second call with resume skips finished rounds
    again = distill(teacher, data, None, tmp_path / "d", cfg, RunOptions(progress=False, resume=True))
    assert again == students


def test_distillation_target_is_exact_for_an_oracle_teacher():
    """If the teacher predicts the true x0, two DDIM steps land on the noised x0 and the student's
    target is x0 itself."""
    from ddif.diffusion import NoiseSchedule
    from ddif.config import DiffusionConfig
    from ddif.training.distill import DistillationLoss

    class Oracle(torch.nn.Module):
        def __init__(self, x0):
            super().__init__()
            self.x0 = x0
            self.config = tiny_preset().model

        def encode_condition(self, lms, pan):
            return None

        def forward(self, z, t, self_cond=None, cache=None):
            return self.x0

    g = torch.Generator().manual_seed(0)
    gt, lms = torch.rand(3, 4, 8, 8, generator=g), torch.rand(3, 4, 8, 8, generator=g)
    x0 = gt - lms
    oracle = Oracle(x0)
    student = Oracle(x0)
    grid = torch.tensor([400, 300, 200, 100])
    loss = DistillationLoss(student, oracle, NoiseSchedule.from_config(DiffusionConfig()), grid)
    value = loss(gt, lms, None, torch.tensor([0, 1, 1]), torch.randn(3, 4, 8, 8, generator=g))
    assert value.item() < 1e-10
