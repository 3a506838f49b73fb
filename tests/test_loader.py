"""The one loader, ``DDIF.from_pretrained``: every checkpoint format this project meets (engine
checkpoint, distilled student, training state with EMA or raw weights, safetensors with its config
inside or beside it, published state dict bare or wrapped), each file read once with
``weights_only=True``, one log line saying what was found, clear refusals."""
from __future__ import annotations

import logging
import pickle

import pytest
import torch

from conftest import condition_matters, tiny_preset
from ddif.models import DDIF, load_model, load_published
from ddif.models.checkpoint import ENGINE_FORMAT, TRAIN_STATE_FORMAT


class Payload:
    """Any class: unpickling it is what weights_only=True refuses."""


def _model(seed=0, grid=()):
    preset = tiny_preset()
    if grid:
        preset.diffusion.sample_timesteps = tuple(grid)
        preset.diffusion.__post_init__()
    torch.manual_seed(seed)
    return condition_matters(DDIF(preset)).eval()


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def count_loads(monkeypatch):
    """Counts torch.load calls and checks every one uses weights_only=True."""
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_engine_checkpoint_and_student(tmp_path, count_loads, caplog):
    model = _model()
    model.save(tmp_path / "m.pt", metadata={"note": "x"})
    with caplog.at_level(logging.INFO, logger="ddif.models"):
        loaded = DDIF.from_pretrained(tmp_path / "m.pt")
    assert _same(model, loaded) and loaded.metadata == {"note": "x"} and loaded.checkpoint_kind == "engine checkpoint"
    assert count_loads == [True]                                       # read once, weights only
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "engine checkpoint (preset 'tiny'" in lines[0] and "parameters" in lines[0]
    assert (tmp_path / "m.json").is_file()                            # config as JSON beside the weights
    student = _model(grid=(480, 240))
    student.save(tmp_path / "s.pt")
    got = DDIF.from_pretrained(str(tmp_path / "s.pt"))
    assert got.checkpoint_kind.startswith("distilled student") and got.preset.diffusion.sample_timesteps == (480, 240)
    assert _same(DDIF.load(tmp_path / "m.pt"), model) and _same(load_model(tmp_path / "m.pt"), model)


def test_training_state_ema_or_raw_weights(tmp_path, count_loads):
    raw, ema = _model(1), _model(2)
    state = {"format": TRAIN_STATE_FORMAT, "config": raw.preset.to_json(), "model": raw.state_dict(),
             "ema": {"shadow": ema.state_dict()}, "step": 7, "optimizer": {}}
    torch.save(state, tmp_path / "step_7.pt")
    got = DDIF.from_pretrained(tmp_path / "step_7.pt")
    assert _same(got, ema) and got.metadata == {"step": 7, "kind": "ema"} and "EMA" in got.checkpoint_kind
    assert _same(DDIF.from_pretrained(tmp_path / "step_7.pt", use_ema=False), raw)
    assert count_loads == [True, True]


def test_safetensors_with_config_inside_or_beside(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    model = _model(3)
    model.save(tmp_path / "m.safetensors", metadata={"step": 3})
    got = DDIF.from_pretrained(tmp_path / "m.safetensors")
    assert _same(got, model) and got.checkpoint_kind == "safetensors weights" and got.metadata == {"step": 3}
    # weights written by another tool, the config JSON beside them (diffusers' habit)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model.preset.save_json(tmp_path / "w.json")
    assert _same(DDIF.from_pretrained(tmp_path / "w.safetensors"), model)
    (tmp_path / "w.json").unlink()                                    # no config anywhere: a preset is needed
    with pytest.raises(ValueError, match="carries no configuration"):
        DDIF.from_pretrained(tmp_path / "w.safetensors")
    assert _same(DDIF.from_pretrained(tmp_path / "w.safetensors", tiny_preset()), model)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match="bad.safetensors: cannot read as safetensors"):
        DDIF.from_pretrained(tmp_path / "bad.safetensors")


def test_published_layout_needs_the_preset(stand_in_state_dict, tmp_path):
    sd = stand_in_state_dict("gf2")
    for name, obj in (("bare.pth", sd), ("wrapped.pth", {"state_dict": {f"module.{k}": v for k, v in sd.items()}})):
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match="published layout carries no configuration; give the preset"):
            DDIF.from_pretrained(tmp_path / name)
        got = DDIF.from_pretrained(tmp_path / name, "gf2")
        assert got.checkpoint_kind == "published-layout state dict" and got.preset.name == "gf2"
    assert _same(load_published(sd, "gf2"), DDIF.from_pretrained(sd, "gf2"))      # in-memory dicts too


def test_refusals_name_the_file(tmp_path):
    model = _model()
    model.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m\.pt: the checkpoint is an engine checkpoint for preset 'tiny', not 'gf2'"):
        DDIF.from_pretrained(tmp_path / "m.pt", "gf2")
    torch.save({"format": "something-else", "state_dict": {}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd\.pt: unknown checkpoint format 'something-else'"):
        DDIF.from_pretrained(tmp_path / "odd.pt")

    with open(tmp_path / "code.pt", "wb") as f:                     # a pickle that would run code
        pickle.dump({"format": ENGINE_FORMAT, "obj": Payload()}, f)
    with pytest.raises(ValueError, match=r"code\.pt: cannot read checkpoint"):
        DDIF.from_pretrained(tmp_path / "code.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        DDIF.from_pretrained(tmp_path / "nope.pt")
