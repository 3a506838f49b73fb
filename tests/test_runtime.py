"""ddif.runtime: every backend gives ddif.Fuser's image (tiled checkpoints like the shipped one,
and whole-image ones), one interface and attributes, bad inputs give ValueErrors, best_available's
choice and its one log line, the export cache, stale / corrupt / mismatched exports are refused."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import condition_matters, tiny_preset

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")

SHIPPED = Path(__file__).resolve().parents[1] / "ddif" / "assets" / "landsat_small.pt"


def _tiny_checkpoint(path, tile_size=16, overlap=4):
    from ddif.models import DDIF

    preset = tiny_preset()
    preset.data.rgb_bands = (2, 1, 0)
    preset.diffusion.tile_size, preset.diffusion.tile_overlap = tile_size, overlap
    torch.manual_seed(1)
    model = DDIF(preset)
    condition_matters(model)
    model.save(path, metadata={"note": "test"})
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A tiny tiled checkpoint (16 px tiles, 4 px overlap, like the shipped one samples 32 / 8)
    and its 2-step ONNX export (through the export cache)."""
    from ddif.export import ensure_onnx

    d = tmp_path_factory.mktemp("runtime")
    ckpt = _tiny_checkpoint(d / "tiny.pt")
    onnx_path = ensure_onnx(ckpt, steps=2, cache_dir=d / "cache")
    return ckpt, onnx_path, d


def _images(b=2, h=13, w=22, seed=0, bands=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, bands, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)


def _agree(backends, reference, lms, pan, seed=5, tol=1e-4):
    want = reference.fuse(lms, pan, seed=seed)
    for backend in backends:
        got = backend.fuse(lms, pan, seed=seed)
        assert got.shape == lms.shape and got.dtype == lms.dtype
        err = float((got - want).abs().max())
        assert err <= tol, (backend, err)
    return want


def test_backends_agree_with_each_other_and_with_fuser(artifacts):
    """A tiled checkpoint: inputs spanning many tiles with odd sizes, one smaller than a tile on
    one side, batched and unbatched: every backend gives ddif.Fuser's image within 1e-4."""
    import ddif
    from ddif.models import DDIF
    from ddif.runtime import OnnxRuntimeBackend, TorchBackend

    ckpt, onnx_path, _ = artifacts
    reference = ddif.Fuser(DDIF.load(ckpt), steps=2)
    assert (reference.tile_size, reference.tile_overlap) == (16, 4)
    backends = [TorchBackend(ckpt, steps=2), OnnxRuntimeBackend(onnx_path, intra_op_threads=1),
                OnnxRuntimeBackend(onnx_path, batch_size=1, graph_optimization="basic")]
    assert all(b.tiling == reference.tiling for b in backends)
    for b, h, w in ((2, 37, 53), (1, 13, 22), (1, 16, 16)):
        lms, pan = _images(b, h, w, seed=h)
        assert len(reference.tiling.grid(h, w)) > 1 or (h, w) == (16, 16)
        want = _agree(backends, reference, lms, pan)
        one = backends[1].fuse(lms[0], pan[0], seed=5)   # unbatched (C, H, W) in, (C, H, W) out
        assert one.shape == lms[0].shape and float((one - want[0]).abs().max()) <= 1e-4
    lms, pan = _images(2, 37, 53)
    want = reference.fuse(lms, pan, seed=5)
    assert torch.equal(backends[0].fuse(lms, pan, seed=5), want)     # PyTorch backend *is* ddif.Fuser
    assert float((backends[1].fuse(lms, pan, seed=6) - want).abs().max()) > 1e-3  # the seed matters
    assert torch.equal(backends[1].fuse(lms, pan, seed=5), backends[1].fuse(lms, pan, seed=5))


def test_whole_image_checkpoint_backends_agree(tmp_path):
    """A model without a tile size samples whole images: its graph has dynamic H and W."""
    import ddif
    from ddif.models import DDIF
    from ddif.runtime import OnnxRuntimeBackend
    from ddif.export import ensure_onnx

    ckpt = _tiny_checkpoint(tmp_path / "whole.pt", tile_size=0, overlap=0)
    onnx_path = ensure_onnx(ckpt, steps=2, cache_dir=tmp_path / "cache")
    backend = OnnxRuntimeBackend(onnx_path, intra_op_threads=1)
    assert not backend.tiling.tiled and "whole" in onnx_path.name
    reference = ddif.Fuser(DDIF.load(ckpt), steps=2)
    lms, pan = _images(2, 13, 22)
    _agree([backend], reference, lms, pan)


def test_onnx_artifact_cache_hits_and_refuses_a_foreign_spec(tmp_path, caplog, monkeypatch):
    """One artifact cache (ddif.runtime.artifacts): the second ensure_onnx is a hit that neither
    exports nor builds the network; a cached file whose spec records another key, or whose bytes
    changed, is exported again instead of trusted."""
    import json

    from ddif.export import ensure_onnx
    from ddif.models import DDIF
    from ddif.runtime.spec import spec_path_for

    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    first = ensure_onnx(ckpt, steps=2, cache_dir=tmp_path / "cache")
    assert first.parent == tmp_path / "cache" / "onnx"
    spec = json.loads(spec_path_for(first).read_text())
    assert spec["cache_key"]["timesteps"] and len(spec["cache_key"]["checkpoint_sha256"]) == 64

    def no_build(*args, **kwargs):
        raise AssertionError("a cache hit must not build the network")

    with monkeypatch.context() as m:
        m.setattr(DDIF, "from_pretrained", no_build)
        assert ensure_onnx(ckpt, steps=2, cache_dir=tmp_path / "cache") == first

    spec["cache_key"]["opset"] = -1  # a spec written for another key
    spec_path_for(first).write_text(json.dumps(spec))
    with caplog.at_level(logging.INFO, logger="ddif"):
        again = ensure_onnx(ckpt, steps=2, cache_dir=tmp_path / "cache")
    assert again == first and any("another key" in r.getMessage() for r in caplog.records)
    assert json.loads(spec_path_for(first).read_text())["cache_key"]["opset"] != -1

    first.write_bytes(first.read_bytes() + b"\0")  # bytes no longer match the spec
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ddif"):
        ensure_onnx(ckpt, steps=2, cache_dir=tmp_path / "cache")
    assert any("exporting" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["landsat_small", "landsat8", "worldview2"])
def test_shipped_checkpoint_every_backend_equals_fuser(tmp_path, caplog, name):
    """Every checkpoint users get (32 px tiles, 8 px overlap, the card's default steps), on a
    90 x 77 input (a 4 x 3 grid of tiles, odd sizes): ONNX Runtime (first use exports it, with the
    checkpoint's steps) and the PyTorch backend == ddif.Fuser within 1e-4."""
    import ddif
    from ddif.export import best_available
    from ddif.models import DDIF
    from ddif.models.cards import read_card
    from ddif.runtime import OnnxRuntimeBackend, TorchBackend

    ckpt = SHIPPED.with_name(f"{name}.pt")
    card = read_card(ckpt.with_name(f"{name}.card.json"))
    with caplog.at_level(logging.INFO, logger="ddif.runtime"):
        ort_backend = best_available(ckpt, device="cpu", cache_dir=tmp_path / "cache", ort_threads=1)
    assert isinstance(ort_backend, OnnxRuntimeBackend)
    assert any("exporting" in r.getMessage() for r in caplog.records)
    reference = ddif.Fuser(DDIF.load(ckpt))
    assert (reference.tile_size, reference.tile_overlap, reference.steps) == (32, 8, card.default_steps)
    assert ort_backend.steps == card.default_steps == 2
    lms, pan = _images(2, 90, 77, bands=len(card.bands))
    lms = 0.2 + 0.5 * lms
    pan = lms.mean(1, keepdim=True)
    want = _agree([ort_backend, TorchBackend(ckpt)], reference, lms, pan, seed=3)
    assert float(want.std()) > 0.05


def test_one_interface_and_attributes(artifacts):
    from ddif.runtime import RuntimeBackend, OnnxRuntimeBackend, TorchBackend

    ckpt, onnx_path, _ = artifacts
    for backend, name in ((TorchBackend(ckpt, steps=2), "pytorch"), (OnnxRuntimeBackend(onnx_path), "onnxruntime")):
        assert isinstance(backend, RuntimeBackend) and backend.name == name
        assert (backend.bands, backend.guide_bands, backend.max_dn) == (4, 1, 1.0)
        assert backend.rgb_bands == (2, 1, 0) and backend.ratio == 4
        assert backend.steps == 2 and backend.timesteps == (250, 0)
        assert name in repr(backend)


@pytest.mark.parametrize("make, match", [
    (lambda: (torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16)), "lms: expected 4 bands"),
    (lambda: (torch.rand(1, 4, 16, 16), torch.rand(1, 2, 16, 16)), "pan: expected 1 PAN band"),
    (lambda: (torch.rand(1, 4, 16, 16), torch.rand(1, 1, 16, 18)), "pan: expected spatial size 16x16"),
    (lambda: (torch.rand(2, 4, 16, 16), torch.rand(1, 1, 16, 16)), "pan: expected batch size 2"),
    (lambda: (torch.full((1, 4, 16, 16), float("nan")), torch.rand(1, 1, 16, 16)), "lms: contains non-finite"),
    (lambda: (torch.rand(1, 4, 16, 16), torch.full((1, 1, 16, 16), float("inf"))), "pan: contains non-finite"),
    (lambda: (torch.randint(0, 2047, (1, 4, 16, 16)), torch.rand(1, 1, 16, 16)), "lms: expected a floating"),
    (lambda: (torch.rand(1, 4, 16, 16) * 2047, torch.rand(1, 1, 16, 16)), "lms: values span"),
    (lambda: (torch.rand(16, 16), torch.rand(16, 16)), "lms: expected a 4-D tensor"),
    (lambda: ("lms", torch.rand(1, 1, 16, 16)), "lms: expected a torch.Tensor"),
])
def test_bad_inputs_raise_value_errors(artifacts, make, match):
    from ddif.runtime import OnnxRuntimeBackend, TorchBackend

    ckpt, onnx_path, _ = artifacts
    lms, pan = make()
    for backend in (TorchBackend(ckpt, steps=2), OnnxRuntimeBackend(onnx_path)):
        with pytest.raises(ValueError, match=match):
            backend.fuse(lms, pan, seed=0)


def test_noise_override_and_its_shape_check(artifacts):
    """A full x_T at the padded size replaces the per-tile draws: each tile takes its window."""
    from ddif.inference import tile_noise
    from ddif.runtime import OnnxRuntimeBackend

    _, onnx_path, _ = artifacts
    backend = OnnxRuntimeBackend(onnx_path)
    lms, pan = _images(1, 13, 22)                  # 13 < 16: padded to a tile's 16 rows; 22 -> 2 tiles
    grid = backend.tiling.grid(13, 22)
    assert (grid.height, grid.width, len(grid)) == (16, 22, 2)
    noise = torch.randn(1, 4, 16, 22)
    got = backend.fuse(lms, pan, noise=noise)
    assert not torch.equal(got, backend.fuse(lms, pan, seed=3))
    # where only the first tile reaches, the x_T of the second tile's columns cannot matter
    noise2 = noise.clone()
    noise2[..., 16:] = torch.randn(1, 4, 16, 6)
    same = backend.fuse(lms, pan, noise=noise2)
    t0, t1 = list(grid)
    assert t1.x == 6 and torch.equal(got[..., :t1.x], same[..., :t1.x])
    # the seeded path is this with the per-tile draws tile_noise(seed, image, tile)
    seeded = torch.zeros(1, 4, 16, 22)
    for t in reversed(list(grid)):                 # tile 0 written last: its window holds its own draw
        seeded[0, :, t.y:t.y + t.height, t.x:t.x + t.width] = tile_noise(3, 0, t.index, (4, 16, 16))
    overlap_free = slice(0, t1.x)                  # columns only tile 0 covers
    assert torch.equal(backend.fuse(lms, pan, noise=seeded)[..., overlap_free],
                       backend.fuse(lms, pan, seed=3)[..., overlap_free])
    with pytest.raises(ValueError, match="noise: expected shape"):
        backend.fuse(lms, pan, noise=torch.zeros(1, 4, 13, 22))


def test_best_available_onnx_falls_back_to_onnxruntime_with_one_message(artifacts, caplog):
    from ddif.runtime import OnnxRuntimeBackend
    from ddif.export import best_available

    _, onnx_path, _ = artifacts
    with caplog.at_level(logging.INFO, logger="ddif.runtime"):
        backend = best_available(onnx_path, device="cpu")
    assert isinstance(backend, OnnxRuntimeBackend)
    trt_lines = [r for r in caplog.records if "TensorRT" in r.getMessage()]
    assert len(trt_lines) == 1
    assert "using onnxruntime" in trt_lines[0].getMessage() and "TensorRT not used" in trt_lines[0].getMessage()


def test_best_available_checkpoint_uses_cached_export_or_torch(artifacts, caplog):
    from ddif.runtime import OnnxRuntimeBackend, TorchBackend
    from ddif.export import best_available

    ckpt, onnx_path, d = artifacts
    mtime = onnx_path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="ddif.runtime"):
        backend = best_available(ckpt, device="cpu", steps=2, cache_dir=d / "cache")
    assert isinstance(backend, OnnxRuntimeBackend) and backend.path == onnx_path
    assert onnx_path.stat().st_mtime_ns == mtime                       # cache hit: not exported again
    assert not any("exporting" in r.getMessage() for r in caplog.records)
    torch_backend = best_available(ckpt, device="cpu", steps=2, allow_export=False)
    assert isinstance(torch_backend, TorchBackend)


def test_best_available_plan_without_tensorrt_warns_once_and_uses_its_onnx(artifacts, caplog, tmp_path):
    from ddif.runtime import OnnxRuntimeBackend
    from ddif.export import best_available
    from ddif.runtime.spec import ExportSpec, sha256_file, spec_path_for

    _, onnx_path, _ = artifacts
    plan = tmp_path / "fuser.plan"
    plan.write_bytes(b"engine bytes")
    spec = ExportSpec.for_model(onnx_path)
    spec.kind, spec.model_file, spec.sha256 = "tensorrt", plan.name, sha256_file(plan)
    spec.tensorrt = {"onnx_file": str(onnx_path), "gpu": "NVIDIA H100 (sm_90)", "tensorrt_version": "10.9.0"}
    spec.save(spec_path_for(plan))
    with caplog.at_level(logging.INFO, logger="ddif.runtime"):
        backend = best_available(plan, device="cpu")
    assert isinstance(backend, OnnxRuntimeBackend)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    with pytest.raises(RuntimeError, match="no backend can run"):
        spec.tensorrt = {}
        spec.save(spec_path_for(plan))
        best_available(plan, device="cpu")


def test_exports_are_checked_before_use(artifacts, tmp_path):
    import shutil

    from ddif.runtime import OnnxRuntimeBackend
    from ddif.export import best_available
    from ddif.runtime.spec import spec_path_for

    _, onnx_path, _ = artifacts
    with pytest.raises(ValueError, match="exported for 2 steps"):
        OnnxRuntimeBackend(onnx_path, steps=4)
    with pytest.raises(ValueError, match="exported for 2 steps"):
        OnnxRuntimeBackend(onnx_path, timesteps="480,240")
    assert OnnxRuntimeBackend(onnx_path, steps=2).steps == 2
    # spec missing: the copy embedded in the model is used
    lone = tmp_path / "lone.onnx"
    shutil.copy(onnx_path, lone)
    assert OnnxRuntimeBackend(lone).timesteps == (250, 0)
    # file replaced after export: the spec's hash no longer matches
    stale = tmp_path / "stale.onnx"
    shutil.copy(onnx_path, stale)
    shutil.copy(spec_path_for(onnx_path), spec_path_for(stale))
    stale.write_bytes(stale.read_bytes()[:1000])
    with pytest.raises(ValueError, match="does not match its spec"):
        OnnxRuntimeBackend(stale)
    spec_path_for(stale).unlink()                                      # truncated, no spec at all
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxRuntimeBackend(stale)
    with pytest.raises(ValueError, match=r"expected a checkpoint \(.pt, .pth, .ckpt, .safetensors\), an .onnx or a .plan"):
        best_available(spec_path_for(onnx_path), device="cpu")
    with pytest.raises(FileNotFoundError):
        best_available(tmp_path / "nothing.onnx")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            best_available(onnx_path, device="cuda")


def test_import_is_lazy():
    code = ("import sys, ddif.runtime; "
            "assert not {'onnxruntime', 'tensorrt', 'onnx', 'torch'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_backend_registry_for_the_api_and_every_cli(tmp_path):
    """The CLIs' --backend choices are "auto" + the registry's names; a registry backend that
    cannot run here is refused in one line naming why; the registry builds the same backend the
    classes give."""
    from ddif.cli.common import STATION_BACKENDS
    from ddif.export.auto import BACKENDS, backend_options, build_backend
    from ddif.runtime import TorchBackend

    assert STATION_BACKENDS == ("auto", *BACKENDS)
    opts = backend_options("cpu", steps=2)
    built = build_backend("pytorch", SHIPPED, opts)
    assert isinstance(built, TorchBackend) and built.steps == 2
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="^TensorRT cannot run .*: .*"):
            build_backend("tensorrt", SHIPPED, opts)
    with pytest.raises(ValueError, match="backend must be one of"):
        build_backend("tflite", SHIPPED, opts)


def test_fuser_takes_plan_and_tiling_objects(tmp_path):
    """Fuser(plan=, tiling=) is the loose steps / tile_size path in object form: same image; mixing
    both forms, or a tiling for another size multiple, is refused."""
    import ddif
    from ddif.diffusion.sampling_plan import resolve_sampling_plan
    from ddif.inference.tiling import Tiling
    from ddif.models import DDIF

    model = DDIF.load(_tiny_checkpoint(tmp_path / "tiny.pt"))
    plan = resolve_sampling_plan(model.preset, model.metadata, steps=2)
    tiling = Tiling.for_preset(model.preset, 16, 4)
    lms, pan = _images(1, 21, 30)
    by_objects = ddif.Fuser(model, plan=plan, tiling=tiling)
    loose = ddif.Fuser(model, tile_size=16, tile_overlap=4, scheduler=plan.scheduler(model.preset))
    assert by_objects.tiling == loose.tiling and by_objects.steps == 2
    assert torch.equal(by_objects.fuse(lms, pan, seed=3), loose.fuse(lms, pan, seed=3))
    with pytest.raises(ValueError, match="not several"):
        ddif.Fuser(model, plan=plan, steps=2)
    with pytest.raises(ValueError, match="not both"):
        ddif.Fuser(model, tiling=tiling, tile_size=16)
    with pytest.raises(ValueError, match="multiples of"):
        ddif.Fuser(model, tiling=Tiling(0, 0, tiling.size_multiple * 3))
