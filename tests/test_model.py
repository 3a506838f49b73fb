"""Faithfulness of the DDIF network to the published model, checkpoints and the condition cache."""
from __future__ import annotations

import json

import pytest
import torch

from ddif.config import PUBLISHED_PRESETS, get_preset
from ddif.models import DDIF, load_published
from ddif.kernels.haar_dwt import haar_dwt2_ref, haar_idwt2_ref, wavelet_condition_ref

FIXTURE_TOL = 1e-4


@pytest.fixture(scope="module")
def gf2_published(stand_in_state_dict):
    return load_published(stand_in_state_dict("gf2"), "gf2")


@pytest.mark.parametrize("case,key", [("self_cond_none", "x0_self_cond_none"),
                                      ("self_cond_given", "x0_self_cond_given")])
def test_fixture_reproduced(gf2_published, gf2_fixture, case, key):
    f = gf2_fixture
    sc = f["self_cond"] if case == "self_cond_given" else None
    with torch.no_grad():
        out = gf2_published(f["x_t"], f["t"], f["lms"], f["pan"], self_cond=sc)
    err = (out - f[key]).abs().max().item()
    assert err <= FIXTURE_TOL, f"max abs error {err:.3e}"


def test_fixture_wavelet_condition(gf2_published, gf2_fixture):
    w = gf2_published.wavelet_condition(gf2_fixture["lms"], gf2_fixture["pan"])
    assert (w - gf2_fixture["wavelet_condition"]).abs().max().item() <= 1e-5


def test_self_cond_none_feeds_x_t(gf2_published, gf2_fixture):
    f = gf2_fixture
    with torch.no_grad():
        a = gf2_published(f["x_t"], f["t"], f["lms"], f["pan"])
        b = gf2_published(f["x_t"], f["t"], f["lms"], f["pan"], self_cond=f["x_t"])
    assert torch.equal(a, b)


def test_wv3_parameter_count():
    assert DDIF.from_preset("wv3").num_parameters() == 10_397_208


@pytest.mark.parametrize("preset", PUBLISHED_PRESETS)
def test_every_preset_loads_its_published_layout(preset, stand_in_state_dict):
    sd = stand_in_state_dict(preset)
    model = load_published(sd, preset)
    assert not model.training
    own = model.state_dict()
    assert set(own) == set(sd)
    assert all(torch.equal(own[k], sd[k]) for k in sd)


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "ema", "module_prefix", "nested_module"])
def test_load_published_wrapped(wrap, stand_in_state_dict, tmp_path):
    sd = stand_in_state_dict("gf2")
    obj = {
        "bare": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {"lr": 1.0}},
        "ema": {"ema": sd, "iteration": 10},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "nested_module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[wrap]
    path = tmp_path / "published.pth"
    torch.save(obj, path)
    model = load_published(path, "gf2")
    assert torch.equal(model.state_dict()["final_conv.block.3.weight"], sd["final_conv.block.3.weight"])


def test_load_published_errors_name_the_keys(stand_in_state_dict):
    sd = stand_in_state_dict("gf2")
    del sd["downs.1.cond_inj.x_conv.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["ups.0.cond_inj.q.1.bias"] = torch.zeros(3)
    with pytest.raises(ValueError) as e:
        load_published(sd, "gf2")
    msg = str(e.value)
    assert "downs.1.cond_inj.x_conv.bias" in msg and "extra.weight" in msg and "ups.0.cond_inj.q.1.bias" in msg
    assert "missing" in msg and "unexpected" in msg and "wrong shapes" in msg


def test_load_published_wrong_preset_hint(stand_in_state_dict):
    with pytest.raises(ValueError, match="8 bands, the model 4"):
        load_published(stand_in_state_dict("wv3"), "gf2")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoint_file(tmp_path, content, stand_in_state_dict):
    path = tmp_path / "bad.pth"
    if content == "truncated":
        torch.save(stand_in_state_dict("gf2"), path)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.pth"):
        load_published(path, "gf2")
    with pytest.raises(ValueError, match="bad.pth"):
        DDIF.load(path)


def test_save_load_roundtrip(tiny_model, tmp_path):
    path = tmp_path / "ckpt" / "model.pt"
    tiny_model.save(path, metadata={"step": 7})
    assert path.exists() and path.with_suffix(".json").exists()
    assert json.loads(path.with_suffix(".json").read_text())["model"]["bands"] == 4
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    payload = torch.load(path, weights_only=True)     # must load without pickled code
    assert payload["format"] == "ddif-checkpoint"
    loaded = DDIF.load(path)
    assert loaded.metadata == {"step": 7}
    assert loaded.preset.to_dict() == tiny_model.preset.to_dict()
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_load_rejects_published_file_for_engine_loader(stand_in_state_dict, tmp_path):
    path = tmp_path / "pub.pth"
    torch.save(stand_in_state_dict("gf2"), path)
    with pytest.raises(ValueError, match="published layout carries no configuration; give the preset"):
        DDIF.load(path)


@pytest.mark.parametrize("self_cond", [False, True])
def test_condition_cache_equals_uncached(tiny_model, self_cond):
    g = torch.Generator().manual_seed(1)
    lms, pan = torch.rand(2, 4, 32, 24, generator=g), torch.rand(2, 1, 32, 24, generator=g)
    x_t, sc = torch.randn(2, 4, 32, 24, generator=g), torch.randn(2, 4, 32, 24, generator=g)
    t = torch.tensor([3, 400])
    with torch.no_grad():
        cache = tiny_model.encode_condition(lms, pan)
        a = tiny_model(x_t, t, lms, pan, self_cond=sc if self_cond else None)
        b = tiny_model(x_t, t, cache=cache, self_cond=sc if self_cond else None)
    assert torch.equal(a, b)
    # and the cache really holds what depends on the condition: every CSM style, every FWM context
    n_enc = sum(1 for m in tiny_model.downs if hasattr(m, "cond_inj"))
    n_dec = sum(1 for m in tiny_model.ups if hasattr(m, "cond_inj"))
    assert len(cache.styles) == n_enc and len(cache.contexts) == n_dec
    other = tiny_model.encode_condition(torch.rand_like(lms), pan)
    with torch.no_grad():
        c = tiny_model(x_t, t, cache=other)
    assert not torch.allclose(a, c)


def test_published_cache_matches_fixture(gf2_published, gf2_fixture):
    f = gf2_fixture
    with torch.no_grad():
        cache = gf2_published.encode_condition(f["lms"], f["pan"])
        out = gf2_published(f["x_t"], f["t"], self_cond=f["self_cond"], cache=cache)
    assert (out - f["x0_self_cond_given"]).abs().max().item() <= FIXTURE_TOL


def test_config_json_roundtrip():
    from ddif.config import Preset

    for name in PUBLISHED_PRESETS:
        p = get_preset(name)
        assert Preset.from_json(p.to_json()).to_dict() == p.to_dict()
    assert get_preset("gf2").model.max_dn == 1023 and get_preset("wv3").model.max_dn == 2047
    assert get_preset("cave").model.detail_order == "HVD" and get_preset("qb").model.detail_order == "HDV"


# ---------------------------------------------------------------- Haar DWT convention
def test_haar_hand_computed():
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0]])[None, None]       # a=1 b=2 c=3 d=5
    ll, h, v, d = haar_dwt2_ref(x)
    assert ll.item() == pytest.approx((1 + 2 + 3 + 5) / 2)
    assert h.item() == pytest.approx((1 + 2 - 3 - 5) / 2)
    assert v.item() == pytest.approx((1 - 2 + 3 - 5) / 2)
    assert d.item() == pytest.approx((1 - 2 - 3 + 5) / 2)


def test_haar_odd_sizes_repeat_last():
    x = torch.arange(15.0).reshape(1, 1, 3, 5)
    ll, h, v, d = haar_dwt2_ref(x)
    assert ll.shape[-2:] == (2, 3)
    # last column block: columns 4 and (repeated) 4 -> horizontal-difference terms vanish there
    assert torch.all(v[..., -1] == 0) and torch.all(d[..., -1] == 0)
    assert torch.all(h[..., -1, :] == 0)


def test_haar_inverse_roundtrip():
    x = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    assert torch.allclose(haar_idwt2_ref(*haar_dwt2_ref(x)), x)


def test_wavelet_condition_order():
    lms, pan = torch.rand(1, 4, 8, 8), torch.rand(1, 3, 8, 8)
    hdv = wavelet_condition_ref(lms, pan, "HDV")
    hvd = wavelet_condition_ref(lms, pan, "HVD")
    assert hdv.shape == (1, 4 + 9, 8, 8)
    assert torch.allclose(hdv[:, 4:7], hvd[:, 4:7], atol=1e-6)          # H first in both
    assert torch.allclose(hdv[:, 7:10], hvd[:, 10:13], atol=1e-6)       # D and V swapped
    assert not torch.allclose(hdv[:, 7:10], hvd[:, 7:10], atol=1e-3)


def test_cached_styles_are_contiguous(tiny_model):
    """The CSM scale / shift maps are cached contiguous (chunks of one map otherwise: the fused op
    would copy both on every sampling step for batch >= 2)."""
    cache = tiny_model.encode_condition(torch.rand(3, 4, 16, 16), torch.rand(3, 1, 16, 16))
    assert cache.styles and all(t.is_contiguous() for pair in cache.styles for t in pair)
    assert not tiny_model.downs[1].cond_inj.style(torch.rand(3, 5, 16, 16))[0].is_contiguous()   # what it fixes
