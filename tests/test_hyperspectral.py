"""The hyperspectral path at any band count and integer ratio: 128 bands at ratio 3 (EO-1
Hyperion + ALI), with a PAN or a 9-band guide, through the model, the one inference path and the
classical anchors; and the real Hyperion + ALI scene's reduced-resolution case when the shared
data and scipy are there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import condition_matters, tiny_preset
from ddif.metrics import ergas

SHARED = Path(os.environ.get("DDIF_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.mark.parametrize("guide", [1, 9], ids=["pan", "9-band-ms"])
def test_128_bands_at_ratio_3_fuse_with_any_guide(guide):
    import ddif
    from ddif.models import DDIF

    preset = tiny_preset(bands=128, guide=guide)
    preset.data.ratio, preset.data.interpolation = 3, "bicubic"
    torch.manual_seed(0)
    model = condition_matters(DDIF(preset)).eval()
    g = torch.Generator().manual_seed(0)
    lms, pan = torch.rand(1, 128, 27, 21, generator=g), torch.rand(1, guide, 27, 21, generator=g)
    fused = ddif.Fuser(model, steps=2).fuse(lms, pan, seed=0)
    assert fused.shape == lms.shape and torch.isfinite(fused).all()
    other = ddif.Fuser(model, steps=2).fuse(lms, torch.rand(1, guide, 27, 21, generator=g), seed=0)
    assert not torch.allclose(fused, other)  # the guide is used


def test_classical_anchors_at_128_bands_ratio_3():
    """GSA, MTF-GLP-HPM and GLP-HS (per-band regressed guide) on a 128-band cube whose bands are
    affine in a 9-band guide, reduced by 3: all beat interpolation, GLP-HS by far."""
    from ddif.baselines import gsa, mtf_glp_hpm, mtf_glp_synthesized
    from ddif.data.mtf import decimate, mtf_filter, upsample

    g = torch.Generator().manual_seed(1)
    guide = mtf_filter(0.2 + 0.6 * torch.rand(1, 9, 36, 36, generator=g), [0.5] * 9, 3)
    weights = torch.rand(128, 9, generator=g) / 9
    gt = torch.einsum("kj,bjhw->bkhw", weights, guide) + 0.02
    ms = decimate(mtf_filter(gt, [0.3], 3), 3)
    lms = upsample(ms, 3, method="bicubic")
    base = float(ergas(lms, gt, 3).mean())
    assert float(ergas(gsa(lms, guide, ms, 3), gt, 3).mean()) < base
    assert float(ergas(mtf_glp_hpm(lms, guide, 3, [0.3] * 128), gt, 3).mean()) < base
    assert float(ergas(mtf_glp_synthesized(lms, guide, ms, 3, [0.3] * 128), gt, 3).mean()) < 0.5 * base


def test_real_hyperion_ali_reduced_cases():
    """The real scene through scripts/eval_hyperion.py's reduced cases: shapes, and GLP-HS ahead of
    interpolation on both guides (the full table, with DDIF adapted, is in the README)."""
    pytest.importorskip("scipy")
    if not (SHARED / "data" / "eo1-hyperion-ali").is_dir():
        pytest.skip("shared Hyperion + ALI data not found (set DDIF_SHARED)")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "eval_hyperion", Path(__file__).resolve().parents[1] / "scripts" / "eval_hyperion.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = mod.load()
    pan_case, ms_case = mod.reduced_pan_case(d), mod.reduced_ms_case(d)
    assert tuple(pan_case["gt"].shape) == (1, 128, 72, 57) and tuple(pan_case["ms"].shape) == (1, 128, 24, 19)
    assert tuple(ms_case["pan"].shape) == (1, 9, 72, 72)
    for case, is_pan in ((pan_case, True), (ms_case, False)):
        rows = {k: mod.metrics_row(v, case["gt"]) for k, v in mod.classical(case, is_pan).items()}
        exp = rows["EXP (bicubic)"]["ERGAS"]
        assert min(r["ERGAS"] for k, r in rows.items() if k != "EXP (bicubic)") < 0.85 * exp
