"""Export the fixed-step DDIF sampler for a batch of tiles to one ONNX graph.

    python -m ddif.export.onnx --ckpt model.pt --out fuser.onnx                    # the model's steps and tiles
    python -m ddif.export.onnx --ckpt student.pt --steps 2 --out fuser.onnx
    python -m ddif.export.onnx --preset wv3 --steps 2 --tile-size 256 --out fuser.onnx   # random weights (testing)
    python -m ddif.export.onnx --preset gf2 --published ddif_gf2.pth --timesteps 480,240 --out fuser.onnx

The graph is :func:`ddif.diffusion.sample_residual` itself, traced: the condition branch is
encoded once (``model.encode_condition``), then the DDIM steps (eta 0; Song et al., ICLR 2021)
are unrolled, each feeding the network the previous step's x0 estimate as self-conditioning
(Chen et al., "Analog Bits", ICLR 2023). It outputs the sampled ``residual`` (the fused tile is
``lms + residual``): tiling, noise, blending and clamping are done by the one inference path
above every backend (:mod:`ddif.inference`), exactly as for the PyTorch backend.

Inputs ``lms`` (B, C, T, T), ``pan`` (B, P, T, T) and ``noise`` (B, C, T, T) (the tiles' x_T, so
the graph is deterministic), output ``residual`` (B, C, T, T); all float32. ``T`` is the model's
tile size (``preset.diffusion.tile_size``, or ``--tile-size``) and the batch axis is dynamic. A
model that samples whole images (tile size 0) gets dynamic H and W instead (multiples of its
``size_multiple``). The fused kernels are switched off for export (their plain-PyTorch
references are traced), so the graph needs no custom op.

Exporters: ``torchscript`` (default: about 5 s for the shipped 10-step sampler on a 2-core CPU)
or ``dynamo`` (``torch.export``; about 110 s for the same graph). ``auto`` takes TorchScript
where this torch still has it, else dynamo.

Beside ``fuser.onnx`` goes ``fuser.onnx.json`` (:class:`ddif.runtime.spec.ExportSpec`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ddif.diffusion.sampling_plan import SamplingPlan, resolve_sampling_plan
from ddif.runtime.spec import (  # noqa: F401
    INPUT_NAMES,
    METADATA_KEY,
    OUTPUT_NAMES,
    ExportSpec,
    ShapeProfile,
    read_embedded_spec,
    sha256_file,
    spec_path_for,
)

if TYPE_CHECKING:
    from ddif.models.ddif import DDIF

log = logging.getLogger("ddif.export")

MIN_OPSET = 17
DEFAULT_OPSET = 18
EXPORTERS = ("auto", "torchscript", "dynamo")
DEFAULT_EXPORTER = "auto"


class FixedStepSampler(torch.nn.Module):
    """``(lms, pan, noise) -> residual`` over a fixed list of DDIM timesteps.

    Runs :func:`ddif.diffusion.sample_residual` unchanged (condition cache, self-conditioning with
    the previous x0 estimate), so PyTorch, ONNX and TensorRT all execute the same sampler.
    """

    def __init__(self, model: DDIF, plan: SamplingPlan):
        super().__init__()
        self.model = model
        self.plan = plan
        self.scheduler = plan.scheduler(model.preset)

    def forward(self, lms: torch.Tensor, pan: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        from ddif.diffusion.sampling import sample_residual

        return sample_residual(self.model, lms, pan, self.scheduler, noise=noise, use_cache=True, self_condition=True)


@dataclass
class ExportResult:
    path: Path
    spec: ExportSpec
    max_abs_error: float | None  # onnxruntime vs PyTorch on the check inputs (None: not checked)
    seconds: float


def export_model(
    model,
    out: str | Path,
    plan: SamplingPlan,
    *,
    tiling=None,
    profile: ShapeProfile | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = DEFAULT_EXPORTER,
    check: bool = True,
    check_tolerance: float = 1e-4,
    source: dict[str, Any] | None = None,
) -> ExportResult:
    """Export ``model`` (a :class:`ddif.DDIF`, left untouched) sampling over ``plan`` to ``out``,
    for the tiles of ``tiling`` (:class:`ddif.inference.Tiling`; default: the model's own).

    Writes ``out`` and its spec atomically; checks the graph with ``onnx.checker``; with ``check``,
    compares onnxruntime (CPU) against PyTorch on small random inputs of two shapes and raises
    ``RuntimeError`` when they differ by more than ``check_tolerance``.
    """
    onnx = _require("onnx")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    from ddif.inference.tiling import Tiling

    t0 = time.perf_counter()
    out = Path(out)
    cfg = model.config
    mult = cfg.size_multiple
    tiling = tiling or Tiling.for_preset(model.preset)
    if tiling.size_multiple != mult:
        raise ValueError(f"tiling is for size multiple {tiling.size_multiple}, the model needs {mult}")
    tile = tiling.tile_size
    profile = (profile or ShapeProfile.default(mult, tile)).validated(mult)
    if tile and (profile.min[1:] != (tile, tile) or profile.max[1:] != (tile, tile)):
        raise ValueError(f"profile {profile}: the graph samples {tile}x{tile} tiles, so H and W must be {tile}")

    # A float32 CPU copy in eval mode, fused kernels off: the caller's model is not modified.
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    net.set_fused_kernels(False)
    for p in net.parameters():
        p.requires_grad_(False)
    sampler = FixedStepSampler(net, plan).eval()

    # Batch 2 (torch.export specialises dimensions that are 0 or 1 in the example); whole-image
    # graphs: >= 2 blocks per axis and H != W (equal example sizes invite a guard H == W).
    h, w = (tile, tile) if tile else (4 * mult, 6 * mult)
    example = _random_inputs(cfg.bands, cfg.guide_bands, 2, h, w, seed=0)

    from ddif.utils.io import atomic_path

    with atomic_path(out, suffix=".onnx") as tmp:
        exporter = _export(sampler, example, tmp, opset, mult, exporter, spatial_dynamic=not tile)
        proto = onnx.load(str(tmp))
        spec = _make_spec(proto, out, plan, net, profile, opset, exporter, source or {}, tiling)
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, spec.to_json()
        proto.producer_name, proto.doc_string = "ddif", f"DDIF fixed-step sampler, {plan.steps} DDIM steps"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, str(tmp))
    spec.sha256 = sha256_file(out)
    spec.save(spec_path_for(out))

    err = None
    if check:
        err = check_against_torch(out, sampler, cfg, mult, tile)
        if not err <= check_tolerance:
            raise RuntimeError(
                f"{out}: onnxruntime differs from PyTorch by max abs {err:.3g} "
                f"(> {check_tolerance:g}); the export is wrong, do not use it"
            )
    return ExportResult(out, spec, err, time.perf_counter() - t0)


def _export(sampler, example, path: Path, opset: int, mult: int, exporter: str, spatial_dynamic: bool) -> str:
    """Run the chosen exporter; returns the one used (``auto``: TorchScript where torch has it)."""
    if exporter in ("auto", "torchscript"):
        try:
            _export_torchscript(sampler, example, path, opset, spatial_dynamic)
            return "torchscript"
        except Exception as exc:  # noqa: BLE001 - removed from this torch, or cannot trace: dynamo still can
            if exporter == "torchscript":
                raise
            log.warning(
                "the TorchScript exporter failed in torch %s (%s: %s); exporting with dynamo instead (slower)",
                torch.__version__,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
    _export_dynamo(sampler, example, path, opset, mult, spatial_dynamic)
    return "dynamo"


def _export_dynamo(sampler, example, path: Path, opset: int, mult: int, spatial_dynamic: bool) -> None:
    """torch.export (non-strict) with a dynamic batch (and derived dims H = mult * h_blocks for
    whole-image graphs), then the ONNX translation."""
    from torch.export import Dim

    batch = Dim("batch", min=1)
    axes: dict[int, Any] = {0: batch}
    if spatial_dynamic:
        h_blocks, w_blocks = Dim("h_blocks", min=1), Dim("w_blocks", min=1)
        axes.update({2: mult * h_blocks, 3: mult * w_blocks} if mult > 1 else {2: h_blocks, 3: w_blocks})
    dynamic_shapes = {name: dict(axes) for name in INPUT_NAMES}
    program = torch.export.export(sampler, example, dynamic_shapes=dynamic_shapes, strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (axis renaming notes, deprecations)
        torch.onnx.export(
            program,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            external_data=False,
            dynamo=True,
            verbose=False,
        )


def _export_torchscript(sampler, example, path: Path, opset: int, spatial_dynamic: bool) -> None:
    """The tracing exporter: about 20x faster than dynamo on this sampler (steps are unrolled)."""
    axes = {0: "batch", 2: "height", 3: "width"} if spatial_dynamic else {0: "batch"}
    with warnings.catch_warnings():
        # Python-side shape decisions (resize identity, odd-size padding) are constant for sizes
        # that are multiples of size_multiple, which the runtime guarantees.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            sampler,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamic_axes={n: dict(axes) for n in INPUT_NAMES + OUTPUT_NAMES},
            dynamo=False,
        )


def _make_spec(
    proto,
    out: Path,
    plan: SamplingPlan,
    net,
    profile: ShapeProfile,
    opset: int,
    exporter: str,
    source: dict[str, Any],
    tiling,
) -> ExportSpec:
    import onnx

    def describe(values) -> list[dict[str, Any]]:
        rows = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in t.shape.dim]
            rows.append(
                {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}
            )
        return rows

    labels = {"0": "batch", "2": "height", "3": "width"} if not tiling.tiled else {"0": "batch"}
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "exporter": exporter}
    try:
        from ddif import __version__ as ddif_version

        versions["ddif"] = ddif_version
    except ImportError:  # pragma: no cover
        pass
    return ExportSpec(
        kind="onnx",
        model_file=out.name,
        sha256="",
        preset=net.preset.to_dict(),
        sampling=plan.to_dict(),
        size_multiple=int(net.config.size_multiple),
        profile=profile.to_dict(),
        inputs=describe(proto.graph.input),
        outputs=describe(proto.graph.output),
        dynamic_axes={n: dict(labels) for n in INPUT_NAMES + OUTPUT_NAMES},
        opset=opset,
        source=source,
        producer=versions,
        tiling=tiling.to_dict(),
    )


def _random_inputs(bands: int, guide: int, batch: int, h: int, w: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, bands, h, w, generator=g),
        torch.rand(batch, guide, h, w, generator=g),
        torch.randn(batch, bands, h, w, generator=g),
    )


def check_against_torch(path: Path, sampler: FixedStepSampler, cfg, mult: int, tile: int = 0) -> float:
    """Max abs difference of onnxruntime (CPU) vs PyTorch over two shapes (dynamic axes exercised)."""
    ort = _require("onnxruntime")
    cases = []
    shapes = [(1, tile, tile), (3, tile, tile)] if tile else [(1, 2 * mult, 2 * mult), (3, 3 * mult, 5 * mult)]
    for seed, (b, h, w) in enumerate(shapes):
        inputs = _random_inputs(cfg.bands, cfg.guide_bands, b, h, w, seed=100 + seed)
        with torch.no_grad():
            cases.append((inputs, sampler(*inputs)))
    # PyTorch first, then one single-threaded, non-spinning session: the inputs are small, and
    # ONNX Runtime's spinning worker threads would otherwise slow PyTorch down on a busy CPU.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for (lms, pan, noise), want in cases:
        got = session.run(None, {"lms": lms.numpy(), "pan": pan.numpy(), "noise": noise.numpy()})[0]
        worst = max(worst, float((torch.from_numpy(got) - want).abs().max()))
    return worst


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(
            f"{module} is not installed: pip install 'ddif[onnx]' (onnx, onnxruntime, onnxscript) ({exc})"
        ) from exc


# ------------------------------------------------------------------------------------------- CLI
def load_model_for_export(
    ckpt: str | None = None, preset: str | None = None, published: str | None = None, seed: int = 0
):
    """(model, metadata, source) from an engine checkpoint, published weights or random weights."""
    from ddif.models import DDIF, load_published

    if ckpt:
        if published:
            raise ValueError("give either --ckpt (engine checkpoint) or --published (published layout), not both")
        model = DDIF.load(ckpt)
        return (
            model,
            dict(getattr(model, "metadata", {}) or {}),
            {"weights": "engine checkpoint", "checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt)},
        )
    if not preset:
        raise ValueError("give --ckpt CKPT, or --preset NAME (random weights) optionally with --published PATH")
    if published:
        model = load_published(published, preset=preset)
        return (
            model,
            {},
            {"weights": "published layout", "checkpoint": str(published), "checkpoint_sha256": sha256_file(published)},
        )
    torch.manual_seed(seed)
    model = DDIF.from_preset(preset).eval()
    return model, {}, {"weights": f"random (seed {seed})", "preset": preset}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ddif.export.onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("weights")
    src.add_argument("--ckpt", help="engine checkpoint (DDIF.save), e.g. a distilled student")
    src.add_argument("--preset", help="preset name, for --published or random weights")
    src.add_argument("--published", help="checkpoint in the published code's layout (with --preset)")
    src.add_argument("--seed", type=int, default=0, help="seed of random weights (--preset alone)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's, else the preset's)")
    p.add_argument("--timesteps", default=None, help="explicit training timesteps, noisiest first, e.g. 480,240")
    p.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="side of the tiles the graph samples (default: the model's tile size; 0 = whole images, dynamic H and W)",
    )
    p.add_argument("--out", required=True, help="output .onnx path (the spec goes to OUT.json)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument(
        "--shapes",
        default=None,
        help="profile recorded in the spec for TensorRT, 'BxHxW/BxHxW/BxHxW' (min/opt/max); default "
        "for tiles of T: 1xTxT / (1 Mpx of tiles)xTxT / (4 Mpx)xTxT; for whole images "
        "1x64x64/1x256x256/4x1024x1024 rounded to the size multiple",
    )
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default=DEFAULT_EXPORTER,
        help="auto (default: TorchScript where torch has it, else dynamo), torchscript or dynamo",
    )
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs error allowed by the check")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        model, metadata, source = load_model_for_export(args.ckpt, args.preset, args.published, args.seed)
        from ddif.inference.tiling import Tiling

        plan = resolve_sampling_plan(model.preset, metadata, steps=args.steps, timesteps=args.timesteps)
        mult = model.config.size_multiple
        tiling = Tiling.for_preset(model.preset, args.tile_size)
        profile = ShapeProfile.parse(args.shapes, mult) if args.shapes else ShapeProfile.default(mult, tiling.tile_size)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    print(
        f"exporting {model.preset.name} ({model.num_parameters():,} parameters), {plan.steps} DDIM steps at "
        f"timesteps {list(plan.timesteps)} ({plan.source}), {tiling.describe()}, opset {args.opset}, "
        f"{args.exporter} exporter"
    )
    result = export_model(
        model,
        args.out,
        plan,
        tiling=tiling,
        profile=profile,
        opset=args.opset,
        exporter=args.exporter,
        check=not args.no_check,
        check_tolerance=args.tolerance,
        source=source,
    )
    print(
        f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB, sha256 {result.spec.sha256[:16]}...) "
        f"and {spec_path_for(result.path)} in {result.seconds:.1f} s"
    )
    size = f"{tiling.tile_size} x {tiling.tile_size}" if tiling.tiled else f"H x W (multiples of {mult})"
    print(f"inputs lms/pan/noise (B, C|P|C, {size}) float32, dynamic batch; output residual")
    if result.max_abs_error is not None:
        print(f"onnxruntime (CPU) vs PyTorch: max abs error {result.max_abs_error:.3g} (tolerance {args.tolerance:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
