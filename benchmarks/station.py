"""Ground-station scene throughput (scene megapixels per second, end to end) per backend.

    python benchmarks/station.py                                  # synthetic WV3-like scene, CPU defaults
    python benchmarks/station.py --ms S_MS.tif --pan S_PAN.tif --model model.pt --backends pytorch,onnxruntime

Each backend fuses the same scene with ``ddif.station.run_scene`` (plan, windowed reads, tiled
fusion, journal, blending, GeoTIFF with overviews, quicklook, quality indices): one warm-up run,
then timed runs (median, p20, p80 via benchmarks/common.bench). Without ``--model`` a random-weight
model of ``--preset`` is saved once (throughput does not depend on the weights). Backends:
  pytorch       ddif.runtime.TorchFuser (the engine, eager)
  onnxruntime   ddif.runtime.OnnxRuntimeFuser on the checkpoint exported once (not timed)
  tensorrt      ddif.runtime.TensorRTFuser (skipped, with its reason, without a GPU / TensorRT)
Prints a Markdown table and appends CSV rows (device, backend, scene, tiles, commit).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import append_csv, base_fields, bench, markdown_table  # noqa: E402

BACKENDS = ("pytorch", "onnxruntime", "tensorrt")


def synthetic_scene(folder: Path, bands: int, ms_size: int, ratio: int, max_dn: float) -> tuple[Path, Path]:
    """A georeferenced uint16 MS + PAN pair (smooth field + edges, MS = box average of the truth)."""
    import rasterio
    from rasterio.transform import from_origin

    h = ratio * ms_size
    yy, xx = np.mgrid[0:h, 0:h].astype(np.float64) / h
    rng = np.random.default_rng(0)
    base = 0.45 + 0.2 * np.sin(6 * xx + 3 * yy) + 0.12 * ((((xx * 9).astype(int) + (yy * 7).astype(int)) % 2))
    truth = np.stack([np.clip(base * (0.7 + 0.04 * b) + 0.01 * rng.standard_normal(base.shape), 0.02, 0.98)
                      for b in range(bands)])
    ms = truth.reshape(bands, ms_size, ratio, ms_size, ratio).mean(axis=(2, 4))
    pan = truth.mean(axis=0, keepdims=True)
    paths = (folder / "bench_MS.tif", folder / "bench_PAN.tif")
    for path, arr, res in ((paths[0], ms, 2.0 * ratio), (paths[1], pan, 2.0)):
        dn = np.rint(arr * max_dn).clip(1, max_dn).astype("uint16")
        with rasterio.open(path, "w", driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=dn.shape[0],
                           dtype="uint16", crs="EPSG:32632", transform=from_origin(500000.0, 4200000.0, res, res),
                           nodata=0) as dst:
            dst.write(dn)
    return paths


def make_backend(name: str, model_path: Path, args):
    import ddif.runtime as runtime

    if name == "pytorch":
        return runtime.TorchFuser(model_path, steps=args.steps, device=args.device)
    if name == "onnxruntime":
        reason = runtime.backends.onnxruntime_unavailable_reason(torch.device(args.device))
        if reason:
            raise RuntimeError(reason)
        onnx = runtime.ensure_onnx(model_path, steps=args.steps)
        return runtime.OnnxRuntimeFuser(onnx, device=args.device, steps=args.steps,
                                        intra_op_threads=args.ort_threads)
    if name == "tensorrt":
        reason = runtime.tensorrt_unavailable_reason(torch.device(args.device))
        if reason:
            raise RuntimeError(reason)
        return runtime.TensorRTFuser(runtime.ensure_onnx(model_path, steps=args.steps), device=args.device,
                                     steps=args.steps)
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="engine checkpoint (.pt); default: random weights of --preset")
    p.add_argument("--preset", default="wv3")
    p.add_argument("--ms", default=None, help="MS GeoTIFF (default: a synthetic scene)")
    p.add_argument("--pan", default=None)
    p.add_argument("--ms-size", type=int, default=64, help="synthetic MS side (PAN side = ratio x this)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 10 on CPU, the model's on GPU)")
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list of {list(BACKENDS)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--ort-threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--csv", default="benchmarks/results/station.csv", help="append rows here ('' to skip)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps is None and args.model is None:
        args.steps = 10 if args.device == "cpu" else None

    from ddif.station import StationConfig, plan_scene, run_scene

    work = Path(tempfile.mkdtemp(prefix="ddif-station-bench-"))
    if args.model is None:
        from ddif.models import DDIF

        torch.manual_seed(0)
        model = DDIF.from_preset(args.preset)
        model_path = work / f"{args.preset}_random.pt"
        model.save(model_path)
    else:
        model_path = Path(args.model)
    config = StationConfig(tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                           metric_tiles=2)

    rows, csv_rows = [], []
    scene = None
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        try:
            backend = make_backend(name, model_path, args)
        except (RuntimeError, ValueError, ImportError, FileNotFoundError) as exc:
            rows.append([name, "skipped", "", "", "", "", "", f"{type(exc).__name__}: {exc}"[:90]])
            continue
        if scene is None:
            scene = (Path(args.ms), Path(args.pan)) if args.ms else synthetic_scene(
                work, backend.bands, args.ms_size, backend.ratio, backend.max_dn)
        plan = plan_scene(*scene, backend, config)
        reports = []

        def once():
            reports.append(run_scene(*scene, work / f"out_{name}.tif", backend, config, plan=plan))

        timing = bench(once, args.device, warmup=args.warmup, reps=args.reps)
        last = reports[-1]
        mpix = plan.pixels / 1e6
        fuse_s = float(np.median([r["timing_s"]["fuse_s"] for r in reports[args.warmup:]]))
        rows.append([name, backend.describe(), f"{plan.grid.pan.height}x{plan.grid.pan.width}x{plan.grid.bands}",
                     len(plan.fused_tiles), timing.median, mpix / timing.median, mpix / fuse_s,
                     f"p20 {timing.p20:.3g} s, p80 {timing.p80:.3g} s, HQNR {last['quality']['mean']['HQNR']:.3f}"])
        csv_rows.append({**base_fields(args.device, torch.float32), "benchmark": "station", "backend": name,
                         "torch_threads": torch.get_num_threads(), "ort_threads": args.ort_threads,
                         "describe": backend.describe(), "scene": rows[-1][2], "tiles": len(plan.fused_tiles),
                         "tile_size": args.tile_size, "overlap": args.overlap, "batch_size": args.batch_size,
                         "steps": backend.steps, "scene_s_median": timing.median, "scene_s_p20": timing.p20,
                         "scene_s_p80": timing.p80, "scene_mpix_per_s": mpix / timing.median,
                         "fuse_only_mpix_per_s": mpix / fuse_s})
    print(f"\nddif station throughput, {args.preset if args.model is None else model_path.name}, "
          f"{args.steps or 'model default'} steps, tiles {args.tile_size}/{args.overlap}, batch {args.batch_size}, "
          f"{base_fields(args.device, torch.float32)['device']}\n")
    print(markdown_table(["backend", "path", "scene", "tiles", "s/scene", "scene MP/s", "fusion-only MP/s", "notes"],
                         rows))
    if args.csv and csv_rows:
        append_csv(args.csv, csv_rows)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
