"""The export spec written beside an exported model, and TensorRT-style shape profiles.

``fuser.onnx`` gets ``fuser.onnx.json`` (and ``fuser.plan`` gets ``fuser.plan.json``): input and
output names, dtypes, dynamic axes, min/opt/max shapes, the sampling timesteps, the full preset
configuration and the model file's SHA-256. A runtime needs nothing else to use the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddif.config import Preset
from ddif.diffusion.sampling_plan import SamplingPlan

if TYPE_CHECKING:
    from ddif.inference.tiling import Tiling

SPEC_FORMAT = "ddif-export-spec"
# 2: the graph samples a batch of tiles (static tile size for tiled models) and outputs the residual;
# version-1 graphs sampled whole images and output the clamped fused image.
SPEC_VERSION = 2
INPUT_NAMES = ("lms", "pan", "noise")
OUTPUT_NAMES = ("residual",)
DEFAULT_PROFILE = ((1, 64, 64), (1, 256, 256), (4, 1024, 1024))  # (batch, H, W) of whole-image graphs
TILE_BATCH_PIXELS = (1 << 20, 1 << 22)  # opt / max pixels per batch of tiles
METADATA_KEY = "ddif.export_spec"  # ONNX metadata_props entry holding the spec (without the file hash)


def spec_path_for(model_path: str | os.PathLike) -> Path:
    """``fuser.onnx`` -> ``fuser.onnx.json`` (not ``fuser.json``: that name is a checkpoint's config)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- shapes
_DIMS = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*(?:[x×]\s*(\d+))?\s*$")


@dataclass(frozen=True)
class ShapeProfile:
    """Min / opt / max (batch, H, W) of one optimization profile; H and W multiples of the model's
    ``size_multiple``. Written ``BxHxW/BxHxW/BxHxW`` (``HxW`` means batch 1)."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str, size_multiple: int = 1) -> ShapeProfile:
        parts = [p for p in str(text).split("/")]
        if len(parts) != 3:
            raise ValueError(f"shapes: expected 'min/opt/max' like '1x64x64/1x256x256/4x1024x1024', got {text!r}")
        dims = []
        for label, part in zip(("min", "opt", "max"), parts):
            m = _DIMS.match(part)
            if not m:
                raise ValueError(f"shapes: {label} shape {part!r} is not 'BxHxW' or 'HxW' (positive integers)")
            a, b, c = m.groups()
            dims.append((int(a), int(b), int(c)) if c is not None else (1, int(a), int(b)))
        return cls(*dims).validated(size_multiple)

    @classmethod
    def default(cls, size_multiple: int = 1, tile_size: int = 0) -> ShapeProfile:
        """Whole-image graphs: :data:`DEFAULT_PROFILE` rounded to the size multiple. Tile graphs
        (``tile_size`` > 0): H = W = tile_size, batch 1 / ~1 Mpx / ~4 Mpx of tiles."""
        if tile_size:
            opt, hi = (max(1, p // (tile_size * tile_size)) for p in TILE_BATCH_PIXELS)
            t = int(tile_size)
            return cls((1, t, t), (opt, t, t), (hi, t, t)).validated(size_multiple)

        def up(v: int) -> int:
            return -(-v // size_multiple) * size_multiple

        return cls(*[(b, up(h), up(w)) for b, h, w in DEFAULT_PROFILE]).validated(size_multiple)

    def validated(self, size_multiple: int = 1) -> ShapeProfile:
        for label, (b, h, w) in self.items():
            if min(b, h, w) < 1:
                raise ValueError(f"shapes: {label} shape {b}x{h}x{w} has a dimension < 1")
            if h % size_multiple or w % size_multiple:
                raise ValueError(
                    f"shapes: {label} size {h}x{w} is not a multiple of {size_multiple} (the model's "
                    "size_multiple); the runtime pads images to it"
                )
        for axis, name in enumerate(("batch", "height", "width")):
            lo, mid, hi = self.min[axis], self.opt[axis], self.max[axis]
            if not lo <= mid <= hi:
                raise ValueError(f"shapes: {name} must satisfy min <= opt <= max, got {lo}, {mid}, {hi}")
        return self

    def items(self) -> list[tuple[str, tuple[int, int, int]]]:
        return [("min", self.min), ("opt", self.opt), ("max", self.max)]

    def contains(self, batch: int, height: int, width: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, height, width), self.max))

    def input_shapes(self, bands: int, guide_bands: int) -> dict[str, dict[str, tuple[int, ...]]]:
        """Per input name: {"min": (B, C, H, W), "opt": ..., "max": ...}."""
        channels = {"lms": bands, "pan": guide_bands, "noise": bands}
        return {name: {label: (b, c, h, w) for label, (b, h, w) in self.items()} for name, c in channels.items()}

    def __str__(self) -> str:
        return "/".join("x".join(map(str, s)) for _, s in self.items())

    def to_dict(self) -> dict[str, list[int]]:
        return {label: list(s) for label, s in self.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], size_multiple: int = 1) -> ShapeProfile:
        try:
            return cls(*(_dims(d[k]) for k in ("min", "opt", "max"))).validated(size_multiple)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"profile: expected {{'min': [B, H, W], 'opt': ..., 'max': ...}}, got {d!r}") from exc


def _dims(values: Iterable[Any]) -> tuple[int, int, int]:
    """(B, H, W) as ints; ValueError unless there are three (as :meth:`ShapeProfile.validated`)."""
    b, h, w = (int(v) for v in values)
    return b, h, w


# ------------------------------------------------------------------------------------------ spec
@dataclass
class ExportSpec:
    """What a runtime needs to know about an exported fixed-step sampler."""

    kind: str  # "onnx" or "tensorrt"
    model_file: str  # file name, relative to the spec
    sha256: str
    preset: dict[str, Any]
    sampling: dict[str, Any]
    size_multiple: int
    profile: dict[str, list[int]]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)
    opset: int | None = None
    source: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    tensorrt: dict[str, Any] = field(default_factory=dict)
    tiling: dict[str, int] = field(default_factory=dict)  # Tiling.to_dict(): the tiles the graph samples
    cache_key: dict[str, Any] = field(default_factory=dict)  # ddif.runtime.artifacts: what it was built for
    format: str = SPEC_FORMAT
    version: int = SPEC_VERSION

    # ---- derived views
    def preset_obj(self) -> Preset:
        return Preset.from_dict(self.preset)

    def plan(self) -> SamplingPlan:
        s = self.sampling
        return SamplingPlan(tuple(s["timesteps"]), int(s["num_train_timesteps"]), s.get("source", "export spec"))

    def shape_profile(self) -> ShapeProfile:
        return ShapeProfile.from_dict(self.profile, self.size_multiple)

    def tiling_obj(self) -> Tiling:
        from ddif.inference.tiling import Tiling

        t = self.tiling
        return Tiling(
            int(t.get("tile_size", 0)), int(t.get("overlap", 0)), int(t.get("size_multiple", self.size_multiple))
        )

    # ---- io
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        from ddif.utils.io import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "spec") -> ExportSpec:
        if not isinstance(d, dict) or d.get("format") != SPEC_FORMAT:
            raise ValueError(f"{source}: not a ddif export spec (no 'format': '{SPEC_FORMAT}' entry)")
        if int(d.get("version", 0)) > SPEC_VERSION:
            raise ValueError(
                f"{source}: spec version {d.get('version')} is newer than this ddif reads ({SPEC_VERSION})"
            )
        if int(d.get("version", 0)) < SPEC_VERSION:
            raise ValueError(
                f"{source}: exported by an older ddif (spec version {d.get('version')}: the graph samples "
                f"whole images, this ddif feeds graphs batches of tiles, spec version {SPEC_VERSION}); "
                "export it again (python -m ddif.export.onnx, or delete the export cache)"
            )
        known = set(cls.__dataclass_fields__)
        missing = [
            k for k in ("kind", "model_file", "sha256", "preset", "sampling", "size_multiple", "profile") if k not in d
        ]
        if missing:
            raise ValueError(f"{source}: export spec lacks {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExportSpec:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"export spec not found: {path}")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: export spec is not valid JSON ({exc})") from exc
        return cls.from_dict(d, str(path))

    @classmethod
    def for_model(cls, model_path: str | os.PathLike, verify: bool = True) -> ExportSpec:
        """The spec beside ``model_path``; with ``verify`` its SHA-256 must match the file."""
        model_path = Path(model_path)
        spec = cls.load(spec_path_for(model_path))
        if verify:
            digest = sha256_file(model_path)
            if digest != spec.sha256:
                raise ValueError(
                    f"{model_path}: SHA-256 {digest[:12]}... does not match its spec "
                    f"{spec_path_for(model_path).name} ({spec.sha256[:12]}...): the model file was "
                    "replaced or corrupted; export it again"
                )
        return spec


def read_embedded_spec(path: str | os.PathLike) -> ExportSpec | None:
    """The spec stored in an exported model's ONNX metadata (used when the JSON beside it is
    missing); None when there is none. Needs the ``onnx`` package."""
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeError(f"onnx is not installed: pip install 'ddif[onnx]' ({exc})") from None
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return ExportSpec.from_dict(json.loads(entry.value), f"{path} metadata")
    return None
