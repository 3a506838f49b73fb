"""Ground station on one process vs on a local Ray cluster, side by side.

    python benchmarks/station_ray.py                      # defaults below (about 3 minutes on 2 cores)
    python benchmarks/station_ray.py --scenes 2 --ms-size 32 --repeats 1      # quick smoke check

What runs: ``--scenes`` synthetic scenes (tests/test_station_support.py ``synthetic_scene``: smooth
fields with sharp edges, 3 bands, uint16, a nodata border; MS ``--ms-size`` px, PAN 4x) fused by
``ddif.station.run_scene`` one after another (what ``ddif station watch`` does per scene: plan,
windowed reads, tiles, journal, COG, quicklook, quality indices) with the shipped checkpoint
``ddif/assets/landsat_small.pt`` (PyTorch eager, its own tiles, 10 DDIM
steps) in batches of ``--batch-size`` tiles, in four configurations:

1. one process, torch at 1 thread (``ddif station run`` with ``OMP_NUM_THREADS=1``);
2. one process, torch at ``--threads`` threads (all cores of this machine);
3. a local Ray cluster on loopback: a head that schedules nothing + ``--workers`` nodes of 1 CPU,
   each started with ``ray start`` (the test's ``LocalRayCluster``), one actor per node at 1 torch
   thread; the driver (this process) reads the tiles, keeps 2 batches in flight per actor and
   journals the results (``ddif.station.distributed.RayBackend``);
4. the same cluster with ``--scenes-in-flight`` scenes fused at once (threads sharing the actor
   pool, as ``ddif station watch --scenes-in-flight`` does): one scene's product writing overlaps
   with another's batches on the actors.

Each configuration fuses a warm-up scene first (first torch calls, actor start-up), then the
scenes ``--repeats`` times; the table has the median wall seconds for all scenes (min-max when
repeats > 1), seconds per scene, the speed-up over row 1, and whether every product (.tif) is
byte-identical to row 1's, and the "other load": the CPU the rest of the machine used meanwhile
(/proc/stat minus this process and the cluster's processes), in busy cores. Cluster start
(``ray start`` of all nodes until their CPUs are registered) and actor-pool start (ship the
checkpoint, load it in every actor) are timed separately, not in the rows. Needs ray (``pip install 'ddif[ray]'``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _jiffies(pids: set[int] | None) -> tuple[int, int]:
    """(busy jiffies of the whole machine, utime + stime of ``pids`` and this process)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for v in fields) - int(fields[3]) - int(fields[4])  # minus idle and iowait
    ours = 0
    for pid in {os.getpid(), *(pids or ())}:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ours += int(stat[11]) + int(stat[12])
        except (OSError, IndexError):
            pass
    return busy, ours


def fuse_all(scenes, out: Path, backend, config, at_once: int = 1) -> float:
    """Wall seconds to fuse ``scenes`` with ``run_scene``, ``at_once`` scenes at a time (threads
    sharing ``backend``, as ``ddif station watch --scenes-in-flight`` runs them)."""
    from concurrent.futures import ThreadPoolExecutor

    from ddif.station import run_scene

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def one(scene) -> None:
        ms, pan = scene
        name = pan.name.replace("_PAN.tif", "")
        run_scene(ms, pan, out / f"{name}.tif", backend, config, journal_dir=out / f".{name}.journal")

    t0 = time.perf_counter()
    if at_once <= 1:
        for scene in scenes:
            one(scene)
    else:
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            list(pool.map(one, scenes))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "ddif" / "assets" / "landsat_small.pt"))
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--ms-size", type=int, default=64, help="MS side in px (PAN: 4x)")
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per batch (one actor call)")
    parser.add_argument("--workers", type=int, default=2, help="Ray worker nodes (1 CPU each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="row 2's torch threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scenes-in-flight", type=int, default=2, help="last row: scenes fused at once on the cluster (1: no row)"
    )
    args = parser.parse_args(argv)

    import functools

    import ray
    import torch
    from test_station_ray import LocalRayCluster
    from test_station_support import synthetic_scene

    from ddif.runtime import TorchBackend
    from ddif.station import StationConfig
    from ddif.station.distributed import RayBackend

    work = Path(tempfile.mkdtemp(prefix="ddif-bench-ray-"))
    try:
        scenes = [
            synthetic_scene(work / "in", f"s{i}", bands=3, ms_size=args.ms_size, max_dn=32767.0, seed=i)
            for i in range(args.scenes)
        ]
        warm = [synthetic_scene(work / "in", "warm", bands=3, ms_size=16, max_dn=32767.0, seed=99)]
        config = StationConfig(batch_size=args.batch_size, metric_tiles=1)
        factory = functools.partial(TorchBackend)  # the checkpoint's own tiles and steps
        rows: list[dict] = []

        hz = os.sysconf("SC_CLK_TCK")

        def measure(label: str, workers: str, backend, cluster=None, at_once: int = 1) -> None:
            fuse_all(warm, work / "warm", backend, config)
            times, other = [], []
            for _ in range(args.repeats):
                pids = set(cluster.leftovers()) if cluster is not None else None  # the cluster's processes
                b0, o0 = _jiffies(pids)
                times.append(fuse_all(scenes, work / f"out{len(rows)}", backend, config, at_once))
                b1, o1 = _jiffies(pids)
                other.append(max(0.0, ((b1 - b0) - (o1 - o0)) / hz / times[-1]))
            rows.append(
                {"label": label, "workers": workers, "times": times, "other": other, "out": work / f"out{len(rows)}"}
            )
            print(f"  {label}: {[round(t, 2) for t in times]} s, other load {[round(o, 2) for o in other]}", flush=True)

        for threads in sorted({1, args.threads}):  # --threads 1: no second row
            torch.set_num_threads(threads)
            measure(
                f"one process, torch {threads} thread{'s' if threads > 1 else ''}",
                f"1 x {threads}",
                factory(args.model),
            )
        torch.set_num_threads(1)

        cluster = LocalRayCluster(workers=args.workers, cpus=1)
        try:
            cluster.start()
            t0 = time.perf_counter()
            backend = RayBackend(args.model, factory, threads=1)
            pool_s = time.perf_counter() - t0
            try:
                measure(f"local Ray cluster, {args.workers} worker nodes", f"{args.workers} x 1", backend, cluster)
                if args.scenes_in_flight > 1:
                    measure(
                        f"local Ray cluster, {args.workers} worker nodes, {args.scenes_in_flight} scenes at once",
                        f"{args.workers} x 1",
                        backend,
                        cluster,
                        at_once=args.scenes_in_flight,
                    )
            finally:
                backend.close()
        finally:
            cluster.stop()
        assert not ray.is_initialized()

        plan_tiles = None
        from ddif.station import plan_scene

        plan = plan_scene(*scenes[0], factory(args.model), config)
        plan_tiles = (len(plan.fused_tiles), len(plan.batches), plan.config.tile_size)

        def same(a: Path, b: Path) -> bool:
            return all((a / f"s{i}.tif").read_bytes() == (b / f"s{i}.tif").read_bytes() for i in range(args.scenes))

        base = statistics.median(rows[0]["times"])
        print()
        print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, ray {ray.__version__}")
        print(
            f"Scenes: {args.scenes} x PAN {4 * args.ms_size}^2 (3 bands), {plan_tiles[0]} tiles of "
            f"{plan_tiles[2]} px in "
            f"{plan_tiles[1]} batches of <= {args.batch_size} per scene; checkpoint {Path(args.model).name}, "
            f"10 DDIM steps; median of {args.repeats}"
        )
        print(
            f"Local cluster start (head + {args.workers} workers, until their CPUs are registered): "
            f"{cluster.start_s:.1f} s; actor pool start (checkpoint shipped and loaded): {pool_s:.1f} s"
        )
        print()
        print(
            "| configuration | workers x threads | s / all scenes | s / scene | vs row 1 | .tif bytes = row 1 "
            "| other load (cores) |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            t = statistics.median(row["times"])
            spread = f" ({min(row['times']):.2f}-{max(row['times']):.2f})" if len(row["times"]) > 1 else ""
            print(
                f"| {row['label']} | {row['workers']} | {t:.2f}{spread} | {t / args.scenes:.2f} | "
                f"{base / t:.2f}x | {'yes' if same(rows[0]['out'], row['out']) else 'NO'} | "
                f"{statistics.median(row['other']):.2f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
