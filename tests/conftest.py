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


def condition_matters(model, std: float = 0.05):
    """CSM's output conv is zero-initialised: give it random weights so that the condition path
    changes the output in tests (as it does in a trained model). Returns the model."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cond_inj.body.3" in name:
                p.normal_(0, std)
    return model


@pytest.fixture
def tiny_model():
    from ddif.models import DDIF

    torch.manual_seed(0)
    return condition_matters(DDIF(tiny_preset())).eval()


def synthetic_scene(bands: int = 4, size: int = 64, seed: int = 0, batch: int = 1, rectangles: int = 10):
    """Smooth multi-scale texture with sharp rectangles shared by all bands, a smooth band-specific
    component, and a PAN that is a positive weighted sum of the bands (float64, values in
    ~[0.1, 0.7]). Used by the metric and baseline tests."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)

    def field(scales, n):
        out = torch.zeros(batch, n, size, size, dtype=torch.float64)
        for s in scales:
            z = torch.rand(batch, n, size // s + 3, size // s + 3, generator=g, dtype=torch.float64)
            out += F.interpolate(z, scale_factor=s, mode="bicubic", align_corners=False)[..., s:s + size, s:s + size]
        return out / len(scales)

    base = field((2, 4, 8), 1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(rectangles):
        r = torch.randint(0, size, (4,), generator=g)
        (y0, y1), (x0, x1) = sorted(r[:2].tolist()), sorted(r[2:].tolist())
        mask = ((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)).to(torch.float64)
        base = base + 0.3 * (float(torch.rand(1, generator=g)) - 0.5) * mask
    a = 0.5 + torch.rand(bands, generator=g, dtype=torch.float64)
    ms = 0.2 + 0.25 * a.view(1, -1, 1, 1) * base + 0.1 * field((2, 4, 8), bands)
    w = torch.rand(bands, generator=g, dtype=torch.float64) + 0.5
    pan = (ms * (w / w.sum()).view(1, -1, 1, 1)).sum(1, keepdim=True)
    return ms, pan
