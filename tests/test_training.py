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

from conftest import condition_matters, tiny_preset
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


def test_a_killed_runs_temporary_files_are_removed_on_resume(tiny_data, tmp_path):
    """kill -9 during a checkpoint write leaves ``.step_*.pt.<random>.partial``: removed when the
    run resumes (the resume still starts from the last complete checkpoint)."""
    _trainer(tiny_data, tmp_path / "run", stop_after=3).fit()
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / ".step_00000006.pt.x1y2z3.partial").write_bytes(b"torn")
    (tmp_path / "run" / ".model_ema.pt.abc.partial").write_bytes(b"torn")
    resumed = _trainer(tiny_data, tmp_path / "run", resume=True)
    resumed.fit()
    assert resumed.step == 6 and not list((tmp_path / "run").rglob("*.partial"))


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


def _count_dihedral(monkeypatch) -> dict[str, int]:
    """Count every flip / rot90 applied to one image of one sample, wherever it is applied (the
    dataset's RandomDihedral and the trainer's batch augmentation both go through ``dihedral``)."""
    import ddif.data.augment as data_augment
    import ddif.training.augment as train_augment

    calls = {"n": 0}
    real = data_augment.dihedral

    def counting(x, k, flip):
        calls["n"] += 1
        return real(x, k, flip)

    monkeypatch.setattr(data_augment, "dihedral", counting)
    monkeypatch.setattr(train_augment, "dihedral", counting)
    return calls


def test_training_augments_each_sample_exactly_once(tiny_data, tmp_path, monkeypatch):
    """A dataset opened as a library user would (``train=True``) and as ``ddif train`` does: each
    image of each sample the trainer draws is augmented once (4 images: gt, ms, lms, pan)."""
    from ddif.data import FusionH5, open_dataset

    calls = _count_dihedral(monkeypatch)
    p = _preset(iterations=2)
    per_sample = 4 * p.train.batch_size * p.train.iterations

    ds = open_dataset(tiny_data["train"], p, train=True)             # the library user's way
    assert ds.augment is None and ds.require_gt
    assert Trainer(p, ds, None, RunOptions(out=str(tmp_path / "lib"), progress=False)).fit()
    assert calls["n"] == per_sample, f"{calls['n'] / per_sample:g} augmentations per sample"

    calls["n"] = 0                                                   # the CLI's way
    assert cli(["train", "--config", str(_save_preset(tmp_path)), "--data", str(tiny_data["train"]),
                "--out", str(tmp_path / "cli"), "--no-progress", "--iterations", "2", "--device", "cpu"]) == 0
    assert calls["n"] == per_sample, f"{calls['n'] / per_sample:g} augmentations per sample"

    # the counter sees a dataset that augments, and the trainer refuses one that would do it twice
    calls["n"] = 0
    augmenting = FusionH5(tiny_data["train"], p, augment=True)
    augmenting[0]
    assert calls["n"] == 4
    with pytest.raises(ValueError, match="augments its items"):
        Trainer(p, augmenting, None, RunOptions(out=str(tmp_path / "twice"), progress=False))


def test_cli_train_needs_ground_truth(tiny_data, tmp_path, capsys):
    rc = cli(["train", "--config", str(_save_preset(tmp_path)), "--data", str(tiny_data["full"]),
              "--out", str(tmp_path / "r"), "--no-progress", "--iterations", "1", "--device", "cpu"])
    assert rc == 2 and "ground truth is required" in capsys.readouterr().err


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


def test_cli_sample_geotiff_pair(tmp_path, capsys):
    """``ddif sample --ms --pan``: the values are ddif.Fuser's on the inputs the ingestion layer
    makes (lms = the 23-tap interpolation of MS / max DN, placed on the PAN grid); a PAN in
    another CRS, a float reflectance scene for a DN model and an ungeoreferenced PAN are refused
    with one line naming the file; --input-scale states the conversion."""
    import numpy as np

    import ddif
    from ddif.data import write_raster
    from ddif.data.mtf import upsample
    from ddif.data.registration import shift_image
    from ddif.data.scene import read_scene

    preset = _preset()
    preset.model.max_dn = 2047.0
    torch.manual_seed(0)
    model = DDIF(preset)
    condition_matters(model)
    model.save(tmp_path / "m.pt")
    g = np.random.default_rng(0)
    ms = np.rint(g.random((4, 8, 8)) * 1600 + 200).astype(np.uint16)
    pan = np.rint(g.random((1, 32, 32)) * 1600 + 200).astype(np.uint16)
    geo = dict(crs="EPSG:32632")
    write_raster(tmp_path / "ms.tif", ms, transform=(40.0, 0, 500000.0, 0, -40.0, 4e6), **geo)
    write_raster(tmp_path / "pan.tif", pan, transform=(10.0, 0, 500000.0, 0, -10.0, 4e6), **geo)
    out = tmp_path / "f.h5"
    base = ["sample", "--ckpt", str(tmp_path / "m.pt"), "--ms", str(tmp_path / "ms.tif"), "--out", str(out),
            "--steps", "2"]
    assert cli(base + ["--pan", str(tmp_path / "pan.tif")]) == 0
    with h5py.File(out) as f:
        fused, valid = f["fused"][...], f["valid"][...]
        assert tuple(f.attrs["ms_shift_pan_px"]) == (0, 0) and "32632" in f.attrs["crs"]
    assert fused.shape == (1, 4, 32, 32) and valid.all()
    _, lms, pan_n, _ = read_scene(tmp_path / "ms.tif", tmp_path / "pan.tif", preset=model.preset)
    expected_lms = upsample(torch.from_numpy(ms.astype(np.float32) / 2047)[None], 4, "interp23tap", "symmetric")[0]
    # shared top-left corner: MS pixel j is centred on PAN 4 j + 1.5, the 23-tap grid on 4 j + 2 (exact placement)
    expected_lms = shift_image(expected_lms.double(), 0.5, 0.5).float()
    np.testing.assert_allclose(lms, expected_lms.numpy(), atol=1e-6)
    np.testing.assert_allclose(pan_n, pan / 2047, rtol=1e-6)
    want = ddif.Fuser(DDIF.load(tmp_path / "m.pt"), steps=2).fuse(torch.from_numpy(lms), torch.from_numpy(pan_n))
    np.testing.assert_allclose(fused[0], want.numpy(), atol=1e-6)
    assert np.abs(fused[0] - lms).mean() > 1e-3                     # a fusion, not the interpolated MS

    capsys.readouterr()
    write_raster(tmp_path / "pan_4326.tif", pan, crs="EPSG:4326", transform=(10.0, 0, 505000.0, 0, -10.0, 4e6))
    assert cli(base + ["--pan", str(tmp_path / "pan_4326.tif")]) == 2
    err = capsys.readouterr().err
    assert "pan_4326.tif" in err and "different CRSs" in err and len(err.strip().splitlines()) == 1
    write_raster(tmp_path / "ms_refl.tif", ms.astype(np.float32) / 2047, transform=(40.0, 0, 500000.0, 0, -40.0, 4e6),
                  **geo)
    refl = base[:4] + [str(tmp_path / "ms_refl.tif")] + base[5:]
    write_raster(tmp_path / "pan_refl.tif", pan.astype(np.float32) / 2047,
                  transform=(10.0, 0, 500000.0, 0, -10.0, 4e6), **geo)
    assert cli(refl + ["--pan", str(tmp_path / "pan_refl.tif")]) == 2
    err = capsys.readouterr().err
    assert "ms_refl.tif" in err and "largest valid value" in err and "--input-scale" in err
    assert cli(refl + ["--pan", str(tmp_path / "pan_refl.tif"), "--input-scale", "2047",
                       "--out", str(tmp_path / "g.h5")]) == 0
    with h5py.File(tmp_path / "g.h5") as f:
        np.testing.assert_allclose(f["fused"][...], fused, atol=1e-5)
    write_raster(tmp_path / "pan_bad.tif", pan[:, :30, :30])
    assert cli(base + ["--pan", str(tmp_path / "pan_bad.tif")]) == 2
    assert "not georeferenced" in capsys.readouterr().err


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


def test_training_file_preprocessing_is_recorded_in_the_preset():
    """The checkpoint carries how its inputs were made (taken from the make-dataset attributes),
    so every entry point reading scenes for it interpolates the same way; an explicit option wins
    with a warning."""
    import argparse

    from ddif.cli.train import adopt_preprocessing
    from ddif.data.scene import Preprocessing

    preset = _preset()
    adopt_preprocessing(preset, {"interpolation": "bicubic", "interp_padding": "replicate", "ratio": 4})
    assert (preset.data.interpolation, preset.data.interp_padding) == ("bicubic", "replicate")
    assert Preprocessing.for_preset(preset).interpolation == "bicubic"
    preset = _preset()
    args = argparse.Namespace(cfg__data__interpolation="interp23tap", cfg__data__interp_padding=None)
    adopt_preprocessing(preset, {"interpolation": "bicubic", "interp_padding": "circular"}, args)
    assert (preset.data.interpolation, preset.data.interp_padding) == ("interp23tap", "circular")
    with pytest.raises(ValueError, match="interp_padding"):
        adopt_preprocessing(_preset(), {"interp_padding": "wrap"})


def test_mixed_crop_sizes_keep_the_pixel_budget_and_resume_exactly(tiny_data, tmp_path, monkeypatch):
    """train.patch_sizes: each step crops to a size drawn from (seed, step), the batch cut to keep
    about batch_size x patch_size^2 pixels; the draw is the same after a resume."""
    from ddif.config import TrainConfig
    from ddif.data import open_dataset

    cfg = TrainConfig(batch_size=16, patch_size=8, patch_sizes=(8, 16, 32), seed=3)
    draws = [cfg.step_patch(s, 16) for s in range(60)]
    assert {d for d in draws} == {(8, 16), (16, 4), (32, 1)}
    assert draws == [TrainConfig(batch_size=16, patch_size=8, patch_sizes=(8, 16, 32), seed=3).step_patch(s, 16)
                     for s in range(60)]
    assert [TrainConfig(patch_size=8).step_patch(s, 16) for s in range(3)] == [(8, 16)] * 3   # off by default

    shapes = []
    original = Trainer.compute_loss

    def record(self, gt, lms, pan):
        shapes.append(tuple(gt.shape))
        return original(self, gt, lms, pan)

    monkeypatch.setattr(Trainer, "compute_loss", record)

    def run(out, **opts):
        p = _preset()
        p.train.patch_size, p.train.patch_sizes = 4, (4, 8)
        return Trainer(p, open_dataset(tiny_data["train"], p), None, RunOptions(out=str(out), progress=False, **opts))

    full = run(tmp_path / "a").fit()
    plan = [TrainConfig(patch_size=4, patch_sizes=(4, 8), seed=_preset().train.seed).step_patch(i, 4) for i in range(6)]
    assert {s for s, _ in plan} == {4, 8}                               # both sizes occur in 6 steps
    assert shapes == [(n, 4, s, s) for s, n in plan] and {n for s, n in plan if s == 8} == {1}
    shapes.clear()
    run(tmp_path / "b", stop_after=3).fit()
    rest = run(tmp_path / "b", resume=True).fit()
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[3:]]
