"""TensorRT logic that can be checked without TensorRT: shape profiles, the import / availability
messages, the builder's call sequence against a stand-in ``tensorrt`` module, the engine cache and
its keys, the CLI's fallback message. (A real engine build is checked by export/check_tensorrt.py
where TensorRT and a GPU exist: NOT on the development machines.)"""
from __future__ import annotations

import sys
import types

import pytest

from conftest import tiny_preset


# ------------------------------------------------------------------------------ stand-in module
def fake_tensorrt(version: str = "10.9.0", *, fp16_flag: bool = True, parse_ok: bool = True,
                  serialized: bytes | None = b"FAKE-ENGINE", inputs=("lms", "pan", "noise")):
    """A stand-in for the tensorrt module recording every call of the documented build API."""
    calls: list[tuple] = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls
    trt.float32 = "float32"

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            calls.append(("Logger", severity))

    class Input:
        def __init__(self, name):
            self.name = name

    class Network:
        num_inputs = len(inputs)

        def get_input(self, i):
            return Input(inputs[i])

    class Parser:
        num_errors = 0 if parse_ok else 2

        def __init__(self, network, logger):
            calls.append(("OnnxParser",))

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return parse_ok

        def get_error(self, i):
            return f"node {i}: unsupported operator"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            calls.append(("create_builder_config",))
            return Config()

        def create_optimization_profile(self):
            calls.append(("create_optimization_profile",))
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return serialized

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.BuilderFlag = types.SimpleNamespace(**({"FP16": "FP16"} if fp16_flag else {}))
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return trt


@pytest.fixture
def fake_onnx(tmp_path):
    """An .onnx file with a valid spec beside it (the stand-in parser never reads the bytes)."""
    from ddif.diffusion.sampling_plan import resolve_sampling_plan
    from ddif.runtime.spec import ExportSpec, ShapeProfile, sha256_file, spec_path_for

    path = tmp_path / "fuser.onnx"
    path.write_bytes(b"not really onnx")
    preset = tiny_preset()
    spec = ExportSpec(kind="onnx", model_file=path.name, sha256=sha256_file(path), preset=preset.to_dict(),
                      sampling=resolve_sampling_plan(preset, steps=2).to_dict(), size_multiple=2,
                      profile=ShapeProfile.default(2).to_dict())
    spec.save(spec_path_for(path))
    return path


# ------------------------------------------------------------------------------------ profiles
def test_shape_profile_parsing_and_validation():
    from ddif.runtime.spec import ShapeProfile

    p = ShapeProfile.parse("1x64x64/2x256x128/4x1024x1024", 8)
    assert p.min == (1, 64, 64) and p.opt == (2, 256, 128) and p.max == (4, 1024, 1024)
    assert str(p) == "1x64x64/2x256x128/4x1024x1024" and ShapeProfile.parse(str(p), 8) == p
    assert ShapeProfile.parse("64x64/256x256/512x512", 8).max == (1, 512, 512)        # HxW: batch 1
    assert ShapeProfile.from_dict(p.to_dict(), 8) == p
    assert p.contains(3, 512, 64) and not p.contains(5, 64, 64) and not p.contains(1, 32, 64)
    shapes = p.input_shapes(8, 1)
    assert shapes["lms"]["opt"] == (2, 8, 256, 128) and shapes["pan"]["max"] == (4, 1, 1024, 1024)
    assert shapes["noise"]["min"] == (1, 8, 64, 64)
    assert ShapeProfile.default(8).opt == (1, 256, 256) and ShapeProfile.default(3).min == (1, 66, 66)
    for bad, match in [("1x64x64/1x256x256", "min/opt/max"), ("1x64x64x2/1x256x256/1x512x512", "BxHxW"),
                       ("1x60x64/1x256x256/1x512x512", "multiple of 8"), ("1x64x64/1x32x32/1x512x512", "height"),
                       ("2x64x64/1x256x256/1x512x512", "batch"), ("0x64x64/1x256x256/1x512x512", "< 1"),
                       ("ax64x64/1x256x256/1x512x512", "BxHxW")]:
        with pytest.raises(ValueError, match=match):
            ShapeProfile.parse(bad, 8)


# ------------------------------------------------------------------------------ availability
def test_tensorrt_absent_gives_one_clear_reason(monkeypatch):
    from ddif.runtime.tensorrt import TensorRTUnavailable, import_tensorrt, tensorrt_unavailable_reason

    monkeypatch.setitem(sys.modules, "tensorrt", None)          # import tensorrt -> ImportError
    with pytest.raises(TensorRTUnavailable, match="tensorrt package is not installed.*ddif\\[tensorrt\\]"):
        import_tensorrt()
    reason = tensorrt_unavailable_reason("cpu")
    assert "not installed" in reason and "CUDA" in reason


def test_tensorrt_broken_or_old(monkeypatch):
    import ddif.runtime.tensorrt as rt_trt

    def broken(name):
        raise OSError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.setattr(rt_trt.importlib, "import_module", broken)
    with pytest.raises(rt_trt.TensorRTUnavailable, match="failed to import.*libnvinfer"):
        rt_trt.import_tensorrt()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.6.1"))
    with pytest.raises(rt_trt.TensorRTUnavailable, match="too old"):
        rt_trt.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))   # e.g. a shadowing file
    with pytest.raises(rt_trt.TensorRTUnavailable, match="not NVIDIA TensorRT"):
        rt_trt.import_tensorrt()


def test_tensorrt_fuser_refuses_cpu(monkeypatch, fake_onnx):
    from ddif.runtime import TensorRTBackend, TensorRTUnavailable

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    with pytest.raises(TensorRTUnavailable, match="CUDA"):
        TensorRTBackend(fake_onnx, device="cpu")


# ------------------------------------------------------------------------------------- builder
def test_build_engine_call_sequence(tmp_path, fake_onnx):
    from ddif.runtime.spec import ShapeProfile
    from ddif.runtime.tensorrt import build_engine

    trt = fake_tensorrt()
    profile = ShapeProfile.parse("1x2x2/2x32x48/4x256x256", 2)
    out = build_engine(fake_onnx, tmp_path / "e.plan", profile, fp16=True, workspace_gib=0.5, trt=trt)
    assert out.read_bytes() == b"FAKE-ENGINE"
    names = [c[0] for c in trt.calls]
    assert names.index("parse_from_file") < names.index("set_flag") < names.index("set_shape")
    assert names.index("set_shape") < names.index("add_optimization_profile") < names.index("build_serialized_network")
    assert ("create_network", 0) in trt.calls and ("parse_from_file", str(fake_onnx)) in trt.calls
    assert ("set_flag", "FP16") in trt.calls
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 29) in trt.calls
    shapes = {c[1]: c[2:] for c in trt.calls if c[0] == "set_shape"}
    assert shapes == {"lms": ((1, 4, 2, 2), (2, 4, 32, 48), (4, 4, 256, 256)),
                      "pan": ((1, 1, 2, 2), (2, 1, 32, 48), (4, 1, 256, 256)),
                      "noise": ((1, 4, 2, 2), (2, 4, 32, 48), (4, 4, 256, 256))}
    trt32 = fake_tensorrt()
    build_engine(fake_onnx, tmp_path / "f.plan", profile, fp16=False, trt=trt32)
    assert not any(c[0] == "set_flag" for c in trt32.calls)
    assert not list(tmp_path.glob(".*partial"))                 # atomic write left nothing behind


@pytest.mark.parametrize("case, match", [
    ("trt11", "modelopt"), ("parse", "ONNX parser failed: node 0: unsupported operator"),
    ("serialize", "failed to build"), ("inputs", "expected inputs"),
])
def test_build_engine_failures_are_clear_and_write_nothing(tmp_path, fake_onnx, case, match):
    from ddif.runtime.spec import ShapeProfile
    from ddif.runtime.tensorrt import TensorRTBuildError, build_engine

    trt = {"trt11": lambda: fake_tensorrt("11.1.0", fp16_flag=False),
           "parse": lambda: fake_tensorrt(parse_ok=False),
           "serialize": lambda: fake_tensorrt(serialized=None),
           "inputs": lambda: fake_tensorrt(inputs=("x",))}[case]()
    with pytest.raises(TensorRTBuildError, match=match):
        build_engine(fake_onnx, tmp_path / "e.plan", ShapeProfile.default(2), fp16=True, trt=trt)
    assert not (tmp_path / "e.plan").exists() and not list(tmp_path.glob(".*partial"))


# --------------------------------------------------------------------------------------- cache
def test_engine_cache_keys_paths_hits_and_misses(tmp_path, fake_onnx):
    from dataclasses import replace

    from ddif.runtime.spec import ExportSpec, ShapeProfile, spec_path_for
    from ddif.runtime.tensorrt import EngineCache, engine_key

    profile = ShapeProfile.default(2)
    key = engine_key(fake_onnx, profile, fp16=True, gpu="NVIDIA H100 (sm_90)", tensorrt_version="10.9.0")
    assert key.precision == "fp16" and key.profile == str(profile) and len(key.onnx_sha256) == 64
    cache = EngineCache(tmp_path / "cache")
    path = cache.path_for(key)
    assert path == cache.path_for(key) and path.parent == tmp_path / "cache" / "tensorrt" and path.suffix == ".plan"
    variants = [replace(key, onnx_sha256="0" * 64), replace(key, gpu="NVIDIA A100 (sm_80)"),
                replace(key, tensorrt_version="10.10.0"), replace(key, precision="fp32"),
                replace(key, profile="1x2x2/1x4x4/1x8x8")]
    assert len({cache.path_for(k) for k in variants} | {path}) == 6          # every field is in the key

    builds = []

    def build(src, dst):
        builds.append(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(b"engine for " + key.gpu.encode())

    assert cache.lookup(key) is None
    got, hit = cache.get_or_build(fake_onnx, key, profile, build)
    assert (got, hit, len(builds)) == (path.with_name(f"fuser-{key.digest()}.plan"), False, 1)
    spec = ExportSpec.for_model(got)
    assert spec.kind == "tensorrt" and spec.tensorrt["gpu"] == key.gpu and spec.tensorrt["precision"] == "fp16"
    assert spec.tensorrt["onnx_sha256"] == key.onnx_sha256 and spec.sampling["steps"] == 2
    got2, hit2 = cache.get_or_build(fake_onnx, key, profile, build)
    assert (got2, hit2, len(builds)) == (got, True, 1)                          # hit: no rebuild
    other = replace(key, gpu="NVIDIA A100 (sm_80)")
    _, hit3 = cache.get_or_build(fake_onnx, other, profile, build)
    assert not hit3 and len(builds) == 2                                        # other GPU: miss
    got.write_bytes(b"truncated")                                              # corrupt -> hash mismatch
    assert cache.lookup(key) is None
    _, hit4 = cache.get_or_build(fake_onnx, key, profile, build)
    assert not hit4 and len(builds) == 3
    spec_path_for(got).unlink()
    assert cache.lookup(key) is None


def test_build_plan_cli_function_writes_engine_and_spec(tmp_path, fake_onnx):
    from ddif.runtime.spec import ExportSpec
    from ddif.export.tensorrt import build_plan

    trt = fake_tensorrt()
    out, hit = build_plan(fake_onnx, tmp_path / "fuser.plan", shapes="1x2x2/1x16x16/2x64x64", fp16=True,
                          gpu="Fake GPU (sm_90)", trt=trt)
    assert not hit and out.read_bytes() == b"FAKE-ENGINE"
    spec = ExportSpec.for_model(out)
    assert spec.profile == {"min": [1, 2, 2], "opt": [1, 16, 16], "max": [2, 64, 64]}
    assert spec.tensorrt["tensorrt_version"] == "10.9.0" and spec.tensorrt["gpu"] == "Fake GPU (sm_90)"
    cached, hit = build_plan(fake_onnx, None, shapes="1x2x2/1x16x16/2x64x64", gpu="Fake GPU (sm_90)",
                             cache_dir=tmp_path / "c", trt=trt)
    again, hit2 = build_plan(fake_onnx, None, shapes="1x2x2/1x16x16/2x64x64", gpu="Fake GPU (sm_90)",
                             cache_dir=tmp_path / "c", trt=trt)
    assert (hit, hit2, again) == (False, True, cached)


def test_cli_without_tensorrt_says_so_once(tmp_path, fake_onnx, monkeypatch, capsys):
    from ddif.export.tensorrt import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["--onnx", str(fake_onnx), "--fp16", "--out", str(tmp_path / "x.plan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT is not available here" in err[0] and "ONNX Runtime" in err[0]
    assert not (tmp_path / "x.plan").exists()
    for argv in (["--onnx", str(fake_onnx), "--shapes", "1x3x3/1x4x4/1x8x8"],
                 ["--onnx", str(tmp_path / "missing.onnx")],
                 ["--onnx", str(fake_onnx), "--out", str(tmp_path / "x.txt")]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    fake_onnx.write_bytes(b"changed after export")                             # spec hash no longer matches
    with pytest.raises(SystemExit):
        main(["--onnx", str(fake_onnx)])


def test_check_script_exits_cleanly_without_tensorrt(monkeypatch, capsys):
    import torch

    from ddif.export.check_tensorrt import main, psnr

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["--preset", "wv3", "--steps", "2"]) == 2
    assert "cannot check TensorRT here" in capsys.readouterr().err
    a = torch.zeros(2, 3, 8, 8)
    assert psnr(a, a) == float("inf")
    assert abs(psnr(a, a + 0.01) - 40.0) < 1e-5          # MSE 1e-4 over a data range of 1 (float32 0.01)
