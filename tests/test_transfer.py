"""--init across band counts: a 4-band model started from a 3-band one computes, for its first
three bands, exactly what the 3-band model computes, and for the new band its source band's
prediction (its own input starts at zero weight)."""

from __future__ import annotations

import pytest
import torch

from ddif.config import get_preset
from ddif.models.ddif import DDIF
from ddif.models.transfer import transfer_weights


def _model(name: str, bands: int) -> DDIF:
    p = get_preset(name)
    p.model.bands = bands
    p.data.band_names = ()
    return DDIF(p)


def test_three_to_four_bands_keeps_the_three_band_function():
    torch.manual_seed(0)
    src = _model("landsat8", 3)
    with torch.no_grad():
        for v in src.parameters():
            v.add_(0.05 * torch.randn_like(v))  # not the zero-initialised output of a fresh model
    dst = _model("landsat8", 4)
    mapped = transfer_weights(src, dst)
    assert "final_conv.block.3.weight" in mapped and "downs.0.weight" in mapped
    lms3, pan = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32)
    x3 = torch.randn(2, 3, 32, 32)
    lms4 = torch.cat([lms3, torch.rand(2, 1, 32, 32)], 1)
    x4 = torch.cat([x3, torch.randn(2, 1, 32, 32)], 1)
    t = torch.tensor([10, 300])
    src.eval(), dst.eval()
    with torch.no_grad():
        y3 = src(x3, t, lms3, pan)
        y4 = dst(x4, t, lms4, pan)
    torch.testing.assert_close(y4[:, :3], y3, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y4[:, 3], y3[:, 2], rtol=1e-5, atol=1e-5)


def test_other_architectures_are_refused():
    src = _model("landsat8", 3)
    other = get_preset("landsat8")
    other.model.base_width = 8
    with pytest.raises(ValueError, match="base_width"):
        transfer_weights(src, DDIF(other))


def test_a_pan_model_started_for_a_nine_band_guide_sees_the_guide_mean():
    """PAN -> 9-band guide (the Hyperion + ALI MS case; 3 -> 5 bands at the same time): with every
    guide band equal to the PAN, the new model computes the PAN model's function for the first
    three bands; with a varied guide it differs (the guide bands are all used)."""
    torch.manual_seed(0)
    src = _model("landsat8", 3)
    with torch.no_grad():
        for v in src.parameters():
            v.add_(0.05 * torch.randn_like(v))
    p = get_preset("landsat8")
    p.model.bands, p.model.guide_bands, p.data.band_names = 5, 9, ()
    dst = DDIF(p)
    mapped = transfer_weights(src, dst)
    assert "downs.1.cond_inj.body.0.weight" in mapped and "ups.0.cond_inj.kv.1.weight" in mapped
    lms3, pan = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32)
    x3 = torch.randn(2, 3, 32, 32)
    lms5 = torch.cat([lms3, torch.rand(2, 2, 32, 32)], 1)
    x5 = torch.cat([x3, torch.randn(2, 2, 32, 32)], 1)
    t = torch.tensor([10, 300])
    src.eval(), dst.eval()
    with torch.no_grad():
        y3 = src(x3, t, lms3, pan)
        y5 = dst(x5, t, lms5, pan.expand(-1, 9, -1, -1))
        varied = dst(x5, t, lms5, torch.rand(2, 9, 32, 32))
    torch.testing.assert_close(y5[:, :3], y3, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(varied[:, :3], y3, atol=1e-3)
    with pytest.raises(ValueError, match="guide_map"):
        transfer_weights(src, DDIF(p), guide_map=[1] * 9)
