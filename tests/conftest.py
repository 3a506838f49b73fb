"""Shared test fixtures: the faithfulness material in ../shared and small models."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDIF_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """The tests run small tensors: one intra-op thread is fastest for them, and immune to a CPU
    shared with other jobs (two OpenMP threads spinning at barriers on a busy 2-core machine made
    tiny ops 10-100x slower here). DDIF_TEST_THREADS overrides."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DDIF_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (set DDIF_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE)


@pytest.fixture(scope="session")
def published_weights_module(reference_dir):
    spec = importlib.util.spec_from_file_location("published_weights", reference_dir / "published_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def stand_in_state_dict(published_weights_module, reference_dir):
    """preset -> stand-in weights (bit-exact regeneration of the published layout)."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(preset: str) -> dict[str, torch.Tensor]:
        if preset not in cache:
            layout = published_weights_module.read_layout(reference_dir / f"ddif_{preset}_state_dict.tsv")
            cache[preset] = {k: torch.from_numpy(v) for k, v in
                             published_weights_module.stand_in_weights(layout).items()}
        return {k: v.clone() for k, v in cache[preset].items()}
    return get


@pytest.fixture(scope="session")
def gf2_fixture(reference_dir):
    import numpy as np

    data = np.load(_require(reference_dir / "ddif_gf2_fixture_64x64.npz"))
    return {k: torch.from_numpy(data[k]) for k in data.files}


def tiny_preset(bands: int = 4, guide: int = 1):
    """A small model with every kind of block (CSM, FWM, attention) for fast tests."""
    from ddif.config import DataConfig, ModelConfig, Preset

    return Preset(name="tiny", data=DataConfig(rgb_bands=(2, 1, 0), sensor="generic"), model=ModelConfig(bands=bands, guide_bands=guide, max_dn=1.0, base_width=16,
                                                 channel_mults=(1, 2), res_blocks=1, image_size=16,
                                                 attn_resolutions=(8,), dropout=0.0, drop_path=0.0))


@pytest.fixture
def tiny_model():
    from ddif.models import DDIF

    torch.manual_seed(0)
    model = DDIF(tiny_preset())
    # CSM's output conv is zero-initialised; give it weights so the condition path matters in tests.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cond_inj.body.3" in name:
                p.normal_(0, 0.05)
    return model.eval()
