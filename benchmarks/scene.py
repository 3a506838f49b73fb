"""A whole PAN scene through the one inference path, in memory: every row side by side.

    python benchmarks/scene.py --size 4096 --device cuda           # the GPU check's row (GPU target: <= 2 s)
    python benchmarks/scene.py --size 2048 --rows null,pytorch      # this CPU

What ``ddif.Fuser`` / every backend does to a scene once it is in memory (no GeoTIFF, so it runs
without rasterio): pad, cut into the model's tiles, draw each tile's x_T from (seed, image, tile),
sample the tiles in batches, blend them and clamp, all on the backend's device. Model: a shipped
checkpoint (default ``landsat8``: 3 bands, 32 px tiles, 8 px overlap, 2 DDIM steps). Scene: a
smooth random field of the model's band count at ``--size`` x ``--size`` PAN pixels, values in
[0.2, 0.6] of the DN range (the content does not change the work), PAN the band mean.

Rows (those that cannot run here say why):
  null           the sampler returns zero residuals at once: tiling, noise, gather and blending
                 alone (the pipeline's own cost on this device)
  pytorch        ddif.Fuser, eager float32
  bf16           ... with bf16 autocast
  compile        ... torch.compile (inductor), weights frozen
  cuda-graphs    ... the fixed-step sampler of a tile batch captured once and replayed (CUDA)
  channels-last  ... NHWC memory layout
  onnxruntime    the exported tile sampler on ONNX Runtime (needs onnx and onnxruntime)

Each row: one warm-up fusion of the whole scene (compilation, graph capture, export happen there),
then ``--reps`` timed fusions, synchronised on a GPU; median with p20 / p80, megapixels / s, the
ratio to the pytorch row, and max |difference| from the pytorch row's image in DN. Prints a
Markdown table and appends CSV rows (device, dtype, shape, git commit) to ``--csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_csv, base_fields, bench, markdown_table  # noqa: E402

ROWS = ("null", "pytorch", "bf16", "compile", "cuda-graphs", "channels-last", "onnxruntime")


class NullSampler:
    """A tile sampler that returns zero residuals at once (on ``device``)."""

    stochastic = False

    def __init__(self, device: torch.device):
        self.device = device
        self._zeros: torch.Tensor | None = None

    def sample_batch(self, lms, pan, noise, generators=None):
        if self._zeros is None or self._zeros.shape != lms.shape:
            self._zeros = torch.zeros_like(lms)
        return self._zeros


def scene(size: int, bands: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random (1, bands, size, size) lms in [0.2, 0.6] and its band-mean PAN."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, bands, max(2, size // 64), max(2, size // 64), generator=g)
    lms = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    lms = 0.2 + 0.4 * (lms - lms.min()) / (lms.max() - lms.min())
    lms = lms + 0.01 * torch.rand(lms.shape, generator=g)
    return lms.to(device), lms.mean(1, keepdim=True).to(device)


def build(row: str, model_path: Path, device: torch.device, args):
    """(fuse(lms, pan) -> image, note) of a row, or (None, why it cannot run here)."""
    import ddif
    from ddif.models import load_model

    if row == "null":
        fuser = ddif.Fuser(load_model(str(model_path)).to(device))
        fuser.inference.sampler = NullSampler(device)
        return (lambda lms, pan: fuser.fuse(lms, pan, seed=0)), "tiling, noise, blending only"
    if row == "onnxruntime":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return None, f"needs onnx and onnxruntime ({exc.name} is missing)"
        from ddif.export import ensure_onnx
        from ddif.runtime import OnnxRuntimeBackend

        onnx_path = ensure_onnx(model_path, cache_dir=args.cache_dir)
        backend = OnnxRuntimeBackend(onnx_path, device=device, intra_op_threads=args.threads)
        return (lambda lms, pan: backend.fuse(lms, pan, seed=0)), backend.describe()
    fast = {
        "pytorch": {},
        "bf16": {"amp": "bf16"},
        "compile": {"compile": True},
        "cuda-graphs": {"cuda_graphs": True},
        "channels-last": {"channels_last": True},
    }[row]
    if row == "cuda-graphs" and device.type != "cuda":
        return None, "CUDA graphs need a CUDA device"
    if row == "compile" and device.type != "cuda" and not args.compile_on_cpu:
        return None, "skipped on a CPU (first compile ~40 s; --compile-on-cpu to run it)"
    model = load_model(str(model_path)).to(device)
    fuser = ddif.Fuser(model, **fast)
    return (lambda lms, pan: fuser.fuse(lms, pan, seed=0)), ", ".join(f"{k}={v}" for k, v in fast.items()) or "eager"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="landsat8", help="a shipped model's name or a checkpoint (default landsat8)")
    p.add_argument("--size", type=int, default=2048, help="PAN side in pixels (default 2048)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {list(ROWS)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=3, help="timed fusions per row (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch / ORT threads (default: theirs)")
    p.add_argument("--compile-on-cpu", action="store_true")
    p.add_argument("--cache-dir", default=None, help="export cache for the onnxruntime row")
    p.add_argument("--csv", default="benchmarks/results/scene.csv", help="append rows here ('' to skip)")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise SystemExit(f"unknown row(s) {bad}; choose from {list(ROWS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from ddif.models import load_model
    from ddif.models.cards import resolve_model

    model_path = Path(args.model) if Path(args.model).exists() else resolve_model(args.model)[0]
    model = load_model(str(model_path))
    bands, tiling = int(model.preset.model.bands), model.preset.diffusion
    lms, pan = scene(args.size, bands, device)
    mpix = args.size * args.size / 1e6
    max_dn = float(model.preset.model.max_dn)

    results, reference = [], None
    for row in rows:
        t0 = time.perf_counter()
        fn, note = build(row, model_path, device, args)
        if fn is None:
            results.append((row, None, None, note, 0.0))
            print(f"# {row}: skipped ({note})", flush=True)
            continue
        image = fn(lms, pan)  # warm-up (compile, capture, export happen here)
        warm = time.perf_counter() - t0
        timing = bench(lambda fn=fn: fn(lms, pan), device, warmup=0, reps=args.reps, flush_l2=False)
        if row == "pytorch":
            reference = image
        results.append((row, timing, image, note, warm))
        print(f"# {row}: median {timing.median:.3f} s per scene ({note}); warm-up {warm:.1f} s", flush=True)

    base = next((t.median for r, t, *_ in results if r == "pytorch" and t is not None), None)
    headers = ["row", "s / scene", "p20", "p80", "MP/s", "vs pytorch", "max |dDN| vs pytorch", "warm-up s", "notes"]
    table, csv_rows = [], []
    for row, timing, image, note, warm in results:
        if timing is None:
            table.append([row, "-", "-", "-", "-", "-", "-", "-", note])
            continue
        diff = "-"
        if reference is not None and row != "null":
            diff = f"{float((image - reference).abs().max()) * max_dn:.3g}"
        speed = f"{base / timing.median:.2f}x" if base else "-"
        table.append([row, timing.median, timing.p20, timing.p80, mpix / timing.median, speed, diff, warm, note])
        csv_rows.append({**base_fields(device, torch.float32), "benchmark": "scene", "row": row,
                         "shape": f"{bands}x{args.size}x{args.size}", "model": model_path.name,
                         "steps": tiling.sample_steps, "tile": f"{tiling.tile_size}/{tiling.tile_overlap}",
                         "s_median": timing.median, "s_p20": timing.p20, "s_p80": timing.p80,
                         "mpix_per_s": mpix / timing.median, "max_dn_diff_vs_pytorch": diff, "note": note})
    from benchmarks.common import device_name, git_commit

    print(f"\n## One {args.size} x {args.size} PAN scene in memory through the inference path "
          f"({model_path.name}: {bands} bands, {tiling.tile_size} px tiles / {tiling.tile_overlap} px overlap, "
          f"{tiling.sample_steps} steps)\n")
    print(f"- device: {device_name(device)}; torch {torch.__version__}; commit {git_commit()}; "
          f"median of {args.reps} after one warm-up fusion\n")
    print(markdown_table(headers, table))
    if args.csv and csv_rows:
        append_csv(args.csv, csv_rows)
        print(f"\nCSV rows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
