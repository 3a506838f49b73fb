"""Bad input gives a ValueError naming the tensor, what was expected and what came."""
from __future__ import annotations

import pytest
import torch

from ddif.fuser import Fuser


def _good():
    return torch.rand(1, 4, 16, 16), torch.rand(1, 1, 16, 16)


BAD_CASES = {
    "wrong band count": (lambda: (torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16)), r"lms: expected 4 bands.*got 3"),
    "wrong guide bands": (lambda: (torch.rand(1, 4, 16, 16), torch.rand(1, 3, 16, 16)), r"pan: expected 1 PAN.*got 3"),
    "size mismatch": (lambda: (torch.rand(1, 4, 16, 16), torch.rand(1, 1, 16, 24)), r"pan: expected spatial size 16x16.*lms.*16x24"),
    "batch mismatch": (lambda: (torch.rand(2, 4, 16, 16), torch.rand(1, 1, 16, 16)), r"pan: expected batch size 2, got 1"),
    "NaN": (lambda: (torch.rand(1, 4, 16, 16).index_put_((torch.tensor([0]),) * 4, torch.tensor(float("nan"))),
                     torch.rand(1, 1, 16, 16)), r"lms: contains non-finite values \(1 NaN"),
    "Inf": (lambda: (torch.rand(1, 4, 16, 16), torch.full((1, 1, 16, 16), float("inf"))), r"pan: contains non-finite.*Inf"),
    "wrong rank": (lambda: (torch.rand(4, 16), torch.rand(1, 1, 16, 16)), r"lms: expected a 4-D tensor.*got 2-D"),
    "5-D": (lambda: (torch.rand(1, 1, 4, 16, 16), torch.rand(1, 1, 16, 16)), r"lms: expected a 4-D.*got 5-D"),
    "integer dtype": (lambda: (torch.randint(0, 2047, (1, 4, 16, 16), dtype=torch.int16), torch.rand(1, 1, 16, 16)),
                      r"lms: expected a floating-point tensor.*int16"),
    "empty": (lambda: (torch.rand(0, 4, 16, 16), torch.rand(0, 1, 16, 16)), r"lms: tensor is empty"),
    "empty spatial": (lambda: (torch.rand(1, 4, 0, 16), torch.rand(1, 1, 0, 16)), r"lms: tensor is empty"),
    "not a tensor": (lambda: ([[0.0]], torch.rand(1, 1, 16, 16)), r"lms: expected a torch.Tensor, got list"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_fuser_rejects(case, tiny_model):
    make, pattern = BAD_CASES[case]
    lms, pan = make()
    with pytest.raises(ValueError, match=pattern):
        Fuser(tiny_model, steps=2).fuse(lms, pan)


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_model_rejects(case, tiny_model):
    make, pattern = BAD_CASES[case]
    lms, pan = make()
    x_t = torch.randn(1, 4, 16, 16)
    with pytest.raises(ValueError, match=pattern):
        tiny_model(x_t, torch.tensor([1]), lms, pan)


def test_raw_digital_numbers_rejected(tiny_model):
    lms, pan = _good()
    with pytest.raises(ValueError, match=r"lms: values span .* \(divide digital numbers by the sensor.s max DN"):
        Fuser(tiny_model, steps=2).fuse(lms * 2047, pan)


def test_model_rejects_bad_x_t_and_t(tiny_model):
    lms, pan = _good()
    with pytest.raises(ValueError, match=r"x_t: expected 4 bands, got 5"):
        tiny_model(torch.randn(1, 5, 16, 16), torch.tensor([1]), lms, pan)
    with pytest.raises(ValueError, match=r"x_t: expected spatial size 16x16"):
        tiny_model(torch.randn(1, 4, 8, 8), torch.tensor([1]), lms, pan)
    with pytest.raises(ValueError, match=r"t: expected integer training timesteps.*float32"):
        tiny_model(torch.randn(1, 4, 16, 16), torch.tensor([1.0]), lms, pan)
    with pytest.raises(ValueError, match=r"t: timesteps must lie in \[0, 500\)"):
        tiny_model(torch.randn(1, 4, 16, 16), torch.tensor([500]), lms, pan)
    with pytest.raises(ValueError, match=r"t: expected shape \(1,\)"):
        tiny_model(torch.randn(1, 4, 16, 16), torch.tensor([1, 2]), lms, pan)
    with pytest.raises(ValueError, match=r"self_cond: expected 4 bands"):
        tiny_model(torch.randn(1, 4, 16, 16), torch.tensor([1]), lms, pan, self_cond=torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"lms: spatial size 13x13 is not a multiple of 2 .*ddif.Fuser"):
        tiny_model(torch.randn(1, 4, 13, 13), torch.tensor([1]), torch.rand(1, 4, 13, 13), torch.rand(1, 1, 13, 13))
    with pytest.raises(ValueError, match=r"needs either \(lms, pan\) or cache"):
        tiny_model(torch.randn(1, 4, 16, 16), torch.tensor([1]))


def test_fuser_pads_any_size(tiny_model):
    lms, pan = torch.rand(2, 4, 13, 7), torch.rand(2, 1, 13, 7)
    assert Fuser(tiny_model, steps=2).fuse(lms, pan).shape == (2, 4, 13, 7)
    lms, pan = torch.rand(1, 4, 1, 1), torch.rand(1, 1, 1, 1)
    assert Fuser(tiny_model, steps=2).fuse(lms, pan).shape == (1, 4, 1, 1)


@pytest.mark.parametrize("scale,shift", [(2.5, 0.0), (1.0, -0.4)])
def test_values_out_of_the_unit_range_are_rejected(tiny_model, scale, shift):
    """Images scaled to [1, 3] (DN / max DN of another sensor) or shifted negative are refused."""
    lms, pan = _good()
    with pytest.raises(ValueError, match=r"values span"):
        Fuser(tiny_model, steps=2).fuse(lms * scale + shift, pan)
    with pytest.raises(ValueError, match=r"pan: values span"):
        Fuser(tiny_model, steps=2).fuse(lms, pan * scale + shift)


def test_one_tiling_check_names_what_samples_which_tiles():
    from ddif.inference.tiling import Tiling, check_tiling

    t = Tiling(32, 8, 8)
    check_tiling(t, 32, 8, what="x", fix="y")
    check_tiling(t, None, None, what="x", fix="y")  # nothing asked: nothing to refuse
    with pytest.raises(ValueError, match=r"^fuser.onnx samples 32 px tiles, 8 px overlap, not 48 px tiles: export"):
        check_tiling(t, 48, what="fuser.onnx", fix="export it again with --tile-size")
    with pytest.raises(ValueError, match="not 32 px tiles with 4 px overlap"):
        check_tiling(t, 32, 4, what="the backend", fix="build it with the station's tiles")
