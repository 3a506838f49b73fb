"""The fast-path switches on every entry point (ddif fuse, ddif station run, ddif sample):
applied where they can be, refused with one line where they cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

ASSETS = Path(__file__).resolve().parents[1] / "ddif" / "assets"
MS, PAN = ASSETS / "landsat8_oli_demo_MS.tif", ASSETS / "landsat8_oli_demo_PAN.tif"


def _rc(argv):
    from ddif.cli.main import main

    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("flags,needle", [(["--compile", "--backend", "onnxruntime"], "do not apply"),
                                          (["--cuda-graphs", "--device", "cpu"], "CUDA"),
                                          (["--amp", "fp16", "--device", "cpu"], "CUDA")])
def test_switches_that_cannot_apply_are_refused(tmp_path, capsys, flags, needle):
    import torch

    if torch.cuda.is_available() and needle == "CUDA":
        pytest.skip("a CUDA device is present")
    for argv in (["fuse", str(MS), str(PAN), str(tmp_path / "o.tif")],
                 ["station", "run", "--ms", str(MS), "--pan", str(PAN), "--model", "landsat8",
                  "--out", str(tmp_path / "o.tif")]):
        assert _rc([*argv, *flags]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_bf16_and_channels_last_apply_and_stay_close(tmp_path):
    base, fast = tmp_path / "a.tif", tmp_path / "b.tif"
    assert _rc(["fuse", str(MS), str(PAN), str(base), "--backend", "pytorch", "--no-sidecars", "-q"]) == 0
    assert _rc(["fuse", str(MS), str(PAN), str(fast), "--amp", "bf16", "--channels-last", "--no-sidecars",
                "-q"]) == 0
    with rasterio.open(base) as a, rasterio.open(fast) as b:
        x, y = a.read().astype(np.float64), b.read().astype(np.float64)
    diff = np.abs(x - y) / 65535
    assert diff.max() <= 4e-3 and diff.mean() <= 1e-3  # the bf16 tolerance of the fast-path tests
    assert not np.array_equal(x, y)  # autocast was really on


def test_sample_takes_the_switches(tmp_path):
    out = tmp_path / "s.h5"
    assert _rc(["sample", "--ckpt", str(ASSETS / "landsat8.pt"), "--ms", str(MS), "--pan", str(PAN),
                "--out", str(out), "--channels-last"]) == 0
    assert out.is_file()
