"""ONNX export of the fixed-step tile sampler: CLI on an engine checkpoint, onnx.checker, opset,
dynamic axes (batch only for tiled models, + H / W for whole-image ones), onnxruntime == the
PyTorch sampler (fp32, <= 1e-4), the spec file, both exporters, timestep resolution."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import condition_matters, tiny_preset

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")

STUDENT_GRID = (480, 240)


def _tiny_model(grid=(), tile_size=0, overlap=0):
    from ddif.models import DDIF

    preset = tiny_preset()
    preset.diffusion.tile_size, preset.diffusion.tile_overlap = tile_size, overlap
    preset.diffusion.sample_timesteps = tuple(grid)
    preset.diffusion.__post_init__()
    torch.manual_seed(0)
    model = DDIF(preset)
    condition_matters(model)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 2-step 'student' checkpoint (its own timestep grid) exported by the CLI, default exporter."""
    from ddif.export.onnx import main

    d = tmp_path_factory.mktemp("export")
    ckpt = d / "student.pt"
    _tiny_model(STUDENT_GRID).save(ckpt, metadata={"timesteps": list(STUDENT_GRID), "student_steps": 2})
    out = d / "fuser.onnx"
    assert main(["--ckpt", str(ckpt), "--out", str(out), "--shapes", "1x2x2/1x32x32/4x256x256"]) == 0
    return ckpt, out


def test_graph_passes_checker_with_standard_ops_and_dynamic_axes(exported):
    _, out = exported
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # no custom op: every node is a standard ONNX operator
    domains = {n.domain for n in proto.graph.node} | {f.domain for f in proto.functions}
    assert domains <= {"", "ai.onnx"} or not proto.functions, domains
    assert [i.name for i in proto.graph.input] == ["lms", "pan", "noise"]
    assert [o.name for o in proto.graph.output] == ["residual"]
    for value in list(proto.graph.input) + list(proto.graph.output):
        t = value.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        dims = t.shape.dim
        assert dims[0].HasField("dim_param") and dims[2].HasField("dim_param") and dims[3].HasField("dim_param")
        assert dims[1].dim_value in (4, 1)


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 10, 22)])
def test_onnxruntime_equals_fuser_fp32(exported, shape):
    """Same noise into the graph and into ddif.Fuser (the student's own grid, whole images): the
    graph's residual equals the Fuser's, max abs <= 1e-4."""
    import ddif
    from ddif.models import DDIF

    ckpt, out = exported
    b, h, w = shape
    g = torch.Generator().manual_seed(7)
    lms, pan = torch.rand(b, 4, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)
    noise = torch.randn(b, 4, h, w, generator=g)
    fuser = ddif.Fuser(DDIF.load(ckpt))
    assert fuser.scheduler.timesteps.tolist() == list(STUDENT_GRID)
    want = fuser.fuse(lms, pan, noise=noise, return_residual=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"lms": lms.numpy(), "pan": pan.numpy(), "noise": noise.numpy()})[0]
    assert got.shape == (b, 4, h, w)
    err = float((torch.from_numpy(got) - want).abs().max())
    assert err <= 1e-4, err
    assert float(want.std()) > 1e-3     # not a trivial (constant) output


def test_spec_file_contents(exported):
    from ddif.models import DDIF
    from ddif.runtime.spec import ExportSpec, sha256_file, spec_path_for

    ckpt, out = exported
    raw = json.loads(spec_path_for(out).read_text())
    spec = ExportSpec.for_model(out)          # hash verified
    assert raw["sha256"] == sha256_file(out) and spec.kind == "onnx" and spec.model_file == "fuser.onnx"
    assert [i["name"] for i in spec.inputs] == ["lms", "pan", "noise"]
    assert [i["dtype"] for i in spec.inputs + spec.outputs] == ["float32"] * 4
    assert spec.inputs[0]["shape"][1] == 4 and spec.inputs[1]["shape"][1] == 1
    assert spec.dynamic_axes["lms"] == {"0": "batch", "2": "height", "3": "width"}
    assert set(spec.dynamic_axes) == {"lms", "pan", "noise", "residual"}
    assert spec.tiling == {"tile_size": 0, "overlap": 0, "size_multiple": 2} and spec.version == 2
    assert spec.profile == {"min": [1, 2, 2], "opt": [1, 32, 32], "max": [4, 256, 256]}
    assert spec.sampling["timesteps"] == list(STUDENT_GRID) and spec.sampling["steps"] == 2
    assert spec.sampling["eta"] == 0.0 and spec.opset >= 17 and spec.size_multiple == 2
    assert spec.preset == json.loads(json.dumps(DDIF.load(ckpt).preset.to_dict()))
    assert spec.source["checkpoint_sha256"] == sha256_file(ckpt)
    assert spec.producer["exporter"] == "torchscript"      # the default ("auto") where torch has it
    # the same spec rides inside the model, for when the JSON gets separated from it
    from ddif.export.onnx import read_embedded_spec

    embedded = read_embedded_spec(out)
    assert embedded.sampling == spec.sampling and embedded.preset == spec.preset


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_tiled_graph_static_tiles_dynamic_batch_and_model_left_untouched(tmp_path, exporter):
    """A tiled model's graph samples tiles of its tile size (static H / W, dynamic batch) with
    both exporters; it equals the PyTorch sampler; the caller's model keeps its fused flags."""
    from ddif.diffusion.sampling_plan import resolve_sampling_plan
    from ddif.runtime.spec import ShapeProfile
    from ddif.export.onnx import export_model

    model = _tiny_model(tile_size=16, overlap=4)
    model.set_fused_kernels(True)
    plan = resolve_sampling_plan(model.preset, timesteps="300,150,0")
    result = export_model(model, tmp_path / "t.onnx", plan, exporter=exporter)
    assert result.max_abs_error is not None and result.max_abs_error <= 1e-4   # batches 1 and 3
    assert result.spec.producer["exporter"] == exporter and result.spec.tiling["tile_size"] == 16
    assert result.spec.profile == ShapeProfile.default(2, 16).to_dict() == {
        "min": [1, 16, 16], "opt": [4096, 16, 16], "max": [16384, 16, 16]}
    assert model.fused_kernels and all(m.fused for m in model.modules() if hasattr(m, "fused") and m is not model)
    proto = onnx.load(str(result.path))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].HasField("dim_param") and (dims[2].dim_value, dims[3].dim_value) == (16, 16)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    lms, pan, noise = torch.rand(5, 4, 16, 16, generator=g), torch.rand(5, 1, 16, 16, generator=g), \
        torch.randn(5, 4, 16, 16, generator=g)
    from ddif.export.onnx import FixedStepSampler

    want = FixedStepSampler(_tiny_model(tile_size=16, overlap=4), plan)(lms, pan, noise)
    got = session.run(None, {"lms": lms.numpy(), "pan": pan.numpy(), "noise": noise.numpy()})[0]
    assert float((torch.from_numpy(got) - want).abs().max()) <= 1e-4        # batch 5: the batch axis is dynamic
    with pytest.raises(Exception, match="(?i)dimension|shape"):                 # static tile size
        session.run(None, {"lms": lms[..., :8].contiguous().numpy(), "pan": pan[..., :8].contiguous().numpy(),
                           "noise": noise[..., :8].contiguous().numpy()})
    with pytest.raises(ValueError, match="H and W must be 16"):
        export_model(model, tmp_path / "bad.onnx", plan, profile=ShapeProfile((1, 8, 8), (1, 16, 16), (2, 16, 16)))


def test_export_rejects_bad_arguments(tmp_path):
    from ddif.diffusion.sampling_plan import resolve_sampling_plan
    from ddif.export.onnx import export_model, main

    model = _tiny_model()
    plan = resolve_sampling_plan(model.preset, steps=2)
    with pytest.raises(ValueError, match="opset"):
        export_model(model, tmp_path / "x.onnx", plan, opset=16)
    with pytest.raises(ValueError, match="exporter"):
        export_model(model, tmp_path / "x.onnx", plan, exporter="jit")
    with pytest.raises(ValueError, match="multiple of 2"):
        from ddif.runtime.spec import ShapeProfile
        export_model(model, tmp_path / "x.onnx", plan, profile=ShapeProfile((1, 3, 4), (1, 4, 4), (1, 8, 8)))
    assert not (tmp_path / "x.onnx").exists()
    for argv in (["--out", str(tmp_path / "y.onnx")],                                   # no weights
                 ["--preset", "wv3", "--steps", "0", "--out", str(tmp_path / "y.onnx")],
                 ["--preset", "wv3", "--timesteps", "240,480", "--out", str(tmp_path / "y.onnx")],
                 ["--preset", "wv3", "--shapes", "1x8x8/1x9x9/1x16x16", "--out", str(tmp_path / "y.onnx")],
                 ["--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "y.onnx")]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert not (tmp_path / "y.onnx").exists()


# ----------------------------------------------------------------------- timestep resolution
def test_sampling_plan_precedence_and_validation(caplog):
    from ddif.diffusion import respace
    from ddif.diffusion.sampling_plan import SamplingPlan, resolve_sampling_plan

    plain = tiny_preset()
    assert resolve_sampling_plan(plain, steps=2).timesteps == tuple(respace(500, 2).tolist())
    assert resolve_sampling_plan(plain).steps == plain.diffusion.sample_steps
    assert resolve_sampling_plan(plain, {"sample_steps": 4}).steps == 4
    assert resolve_sampling_plan(plain, timesteps="480, 240").timesteps == (480, 240)
    assert resolve_sampling_plan(plain, timesteps=[480, 240], steps=2).timesteps == (480, 240)
    assert resolve_sampling_plan(plain, {"timesteps": [400, 100]}).timesteps == (400, 100)
    assert resolve_sampling_plan(plain, {"timesteps": 500}).steps == plain.diffusion.sample_steps  # not a grid

    student = tiny_preset()
    student.diffusion.sample_timesteps = STUDENT_GRID
    student.diffusion.__post_init__()
    assert resolve_sampling_plan(student).timesteps == STUDENT_GRID
    assert resolve_sampling_plan(student, steps=2).timesteps == STUDENT_GRID      # same count: its own grid
    with caplog.at_level("WARNING", logger="ddif.diffusion.sampling_plan"):
        assert resolve_sampling_plan(student, steps=4).timesteps == tuple(respace(500, 4).tolist())
    assert any("distilled" in r.getMessage() for r in caplog.records)

    for bad in ("240,480", "480,480", "500,0", "-1", "", "4.5", "a,b", [1.5]):
        with pytest.raises(ValueError, match="timesteps"):
            resolve_sampling_plan(plain, timesteps=bad)
    with pytest.raises(ValueError, match="contradicts"):
        resolve_sampling_plan(plain, timesteps="480,240", steps=3)
    with pytest.raises(ValueError, match="steps"):
        resolve_sampling_plan(plain, steps=0)
    with pytest.raises(ValueError):
        SamplingPlan((10, 20), 500)
