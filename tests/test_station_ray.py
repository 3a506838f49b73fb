"""Scale-out on Ray (ddif.station.distributed): a local cluster on loopback (a head that schedules
nothing + 2 one-CPU worker nodes, started with ``ray start`` in their own process groups), 4 scenes
through the watch service on a RayBackend, one worker node SIGKILLed in the middle of the second
scene: the lost actor's batches go to the surviving one, and all 4 products are byte-identical to
a single-machine run with the same checkpoint and thread count. Skipped when ray is not installed
(``pip install 'ddif[ray]'``; .ci/run installs it). Timings are printed (``-s``) and checked by
benchmarks/station_ray.py for the README."""
from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from test_station_support import save_station_model, small_config, synthetic_scene

try:
    import ray
except ImportError:  # the refusal test below still runs
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'ddif[ray]')")

RAY_CLI = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """A Ray cluster on this machine: ``ray start --head --num-cpus 0`` (schedules nothing) and
    ``workers`` nodes of ``cpus`` CPUs each, every one a ``ray start --block`` process in its own
    process group (kill_worker SIGKILLs a whole node: raylet, agents, workers). Short health
    checks on the head, so a dead node is noticed in about 2 s instead of Ray's default ~30 s.
    stop() kills every process of every group it started (by process group / session id, never by
    name) and removes its temp folder."""

    def __init__(self, workers: int = 2, cpus: int = 1):
        self.n_workers, self.cpus = workers, cpus
        self.head: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.tmp = tempfile.mkdtemp(prefix="ddif-ray-", dir="/tmp")  # short: Ray's socket paths are limited
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.start_s: float | None = None

    def _popen(self, args: list[str], name: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            # a loopback test cluster without token auth, also where ~/.ray/auth_token exists (Ray
            # would then enable it on the head only, and the workers and the driver are refused)
            "RAY_AUTH_MODE": "disabled",
            "RAY_health_check_initial_delay_ms": "0",
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "3",
            "TMPDIR": str(Path(self.tmp) / "tmp"),  # the actors' checkpoint copies: removed by stop()
        }
        (Path(self.tmp) / "tmp").mkdir(exist_ok=True)
        with open(Path(self.tmp) / f"{name}.log", "wb") as out:
            return subprocess.Popen([RAY_CLI, "start", *args, "--disable-usage-stats", "--block"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout_s: float = 120.0) -> LocalRayCluster:
        t0 = time.perf_counter()
        self.head = self._popen(["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                                 "--num-cpus", "0", "--include-dashboard", "false", "--temp-dir", self.tmp,
                                 "--dashboard-port", str(_free_port()),
                                 # the client server only starts where ray[client] (grpc) is installed;
                                 # asking for its port without grpc is refused
                                 *(["--ray-client-server-port", str(_free_port())]
                                   if importlib.util.find_spec("grpc") is not None else []),
                                 "--dashboard-agent-listen-port", str(_free_port()),
                                 "--object-store-memory", str(200 * 2**20)], "head")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Ray head did not start: {self.log('head')}") from None
                time.sleep(0.1)
        for i in range(self.n_workers):
            self.workers.append(self._popen(["--address", self.address, "--node-ip-address", "127.0.0.1",
                                             "--num-cpus", str(self.cpus),
                                             "--dashboard-agent-listen-port", str(_free_port()),
                                             # a temp dir per node: two raylets started at once in
                                             # one session folder may pick the same socket names
                                             "--temp-dir", f"{self.tmp}/w{i}",
                                             "--object-store-memory", str(100 * 2**20)], f"worker{i}"))
        # the driver attaches to the head's raylet (matched by its temp dir), never to a worker node
        # that the test kills; like the nodes, without token auth (restored by stop())
        self._auth_mode = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(address=self.address, _temp_dir=self.tmp, log_to_driver=False, logging_level=logging.WARNING)
        while ray.cluster_resources().get("CPU", 0) < self.n_workers * self.cpus:
            if time.monotonic() > deadline or any(w.poll() is not None for w in self.workers):
                raise RuntimeError(f"Ray workers did not join: {[self.log(f'worker{i}') for i in range(2)]}")
            time.sleep(0.1)
        self.start_s = time.perf_counter() - t0
        return self

    def log(self, name: str) -> str:
        path = Path(self.tmp) / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill_worker(self, i: int) -> None:
        os.killpg(self.workers[i].pid, signal.SIGKILL)

    def _groups(self) -> set[int]:
        return {p.pid for p in [self.head, *self.workers] if p is not None}

    def leftovers(self) -> list[int]:
        """Processes still alive in the sessions this cluster started (zombies aside)."""
        groups, pids = self._groups(), []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.getsid(int(entry)) in groups:
                    state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        pids.append(int(entry))
            except (OSError, IndexError):
                continue
        return pids

    def stop(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        if hasattr(self, "_auth_mode"):
            if self._auth_mode is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = self._auth_mode
        for p in [*self.workers, self.head]:
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.leftovers():  # what SIGTERM left: by pid, found by our sessions
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in [*self.workers, self.head]:
            if p is not None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def backend_factory(tile_size: int = 64, overlap: int = 16, steps: int | None = None):
    """What each actor (and the single-machine reference) builds: the engine on a checkpoint path."""
    from ddif.runtime import TorchBackend

    return functools.partial(TorchBackend, steps=steps, tile_size=tile_size, tile_overlap=overlap)


def make_inbox(inbox: Path, n: int, ms_size: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"s{i}"
        synthetic_scene(inbox, name, ms_size=ms_size, seed=i)
        (inbox / f"{name}.ready").write_text("")
        t = time.time() - 100 + i  # arrival order s0, s1, ...
        for suffix in ("_MS.tif", "_PAN.tif", ".ready"):
            os.utime(inbox / f"{name}{suffix}", (t, t))
        names.append(name)
    return names


class KillOnProgress:
    """An EventLog hook: on the first ``tiles_progress`` of ``scene`` (its first batch journaled,
    others in flight on both actors), SIGKILL worker node 0."""

    def __init__(self, cluster: LocalRayCluster, scene: str):
        self.cluster, self.scene, self.killed_at = cluster, scene, None

    def __call__(self, record: dict) -> None:
        if self.killed_at is None and record["event"] == "tiles_progress" and record.get("scene") == self.scene:
            self.cluster.kill_worker(0)
            self.killed_at = time.perf_counter()


def hooked_log(hook):
    from ddif.station.events import EventLog

    class HookedLog(EventLog):
        def emit(self, event, level="info", **fields):
            record = super().emit(event, level, **fields)
            hook(record)
            return record

    return HookedLog(stream=None)


@pytest.fixture
def cluster():
    c = LocalRayCluster(workers=2, cpus=1)
    try:
        yield c.start()
    finally:
        c.stop()
        assert not c.leftovers(), "Ray processes left behind"


@needs_ray
@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenes_in_flight", [1, 2])
def test_watch_on_ray_cluster_survives_a_killed_node_byte_identical(tmp_path, cluster, scenes_in_flight):
    """scenes_in_flight 2: scenes s0 and s1 share the pool when the node dies; every scene that had
    batches on the lost actor resubmits its own, and only one replacement is asked for."""
    import torch

    from ddif.station import StationService, WatchConfig
    from ddif.station.distributed import RayBackend
    from ddif.station.events import EventLog

    assert torch.get_num_threads() == 1  # conftest: the reference runs with the actors' thread count
    model = save_station_model(tmp_path / "model.pt")
    factory = backend_factory()
    config = small_config(batch_size=2, metric_tiles=1)
    names = make_inbox(tmp_path / "in_ref", 4, ms_size=64)
    shutil.copytree(tmp_path / "in_ref", tmp_path / "in_ray")

    t0 = time.perf_counter()
    ref = StationService(tmp_path / "in_ref", tmp_path / "out_ref", factory(str(model)), config,
                         WatchConfig(poll_interval_s=0.01), log=EventLog(stream=None))
    assert ref.run(once=True) == 0
    single_s = time.perf_counter() - t0

    hook = KillOnProgress(cluster, scene="s1_PAN.tif")
    log = hooked_log(hook)
    t0 = time.perf_counter()
    backend = RayBackend(model, factory, threads=1, log=log)
    pool_s = time.perf_counter() - t0
    try:
        assert backend.actors == 2 and backend.name == "pytorch"
        nodes = {a.facts["node"] for a in backend.pool.live}
        assert len(nodes) == 2  # one actor per worker node
        head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and not n["Resources"].get("CPU")]
        assert head == [ray.get_runtime_context().get_node_id()]  # the driver is on the head
        t0 = time.perf_counter()
        service = StationService(tmp_path / "in_ray", tmp_path / "out_ray", backend, config,
                                 WatchConfig(poll_interval_s=0.01, scenes_in_flight=scenes_in_flight), log=log)
        assert service.run(once=True) == 0
        ray_s = time.perf_counter() - t0
        assert backend.actors == 1  # the replacement cannot be placed: the head has no CPU
        assert backend.lost == 1
    finally:
        backend.close()

    assert hook.killed_at is not None
    events = [e for e in log.events]
    lost = [e for e in events if e["event"] == "ray_actor_lost"]
    written = [e["scene"] for e in events if e["event"] == "scene_written"]
    if scenes_in_flight == 1:
        assert len(lost) == 1, lost
        assert lost[0]["scene"] == "s1_PAN.tif"
        assert written == [f"{n}_PAN.tif" for n in names]
    else:
        # one event per scene that had batches on the dead actor (s1, and s0 if it was still fusing)
        assert 1 <= len(lost) <= 2 and len({e["scene"] for e in lost}) == len(lost), lost
        assert sorted(written) == sorted(f"{n}_PAN.tif" for n in names)
    assert all(e["batches_resubmitted"] and e["actors_left"] == 1 for e in lost)
    assert sum(e["replacement"] is not None for e in lost) == 1  # one replacement for one lost actor
    for e in lost:
        name = e["scene"].replace("_PAN.tif", "")
        report = json.loads((tmp_path / "out_ray" / name / f"{name}_report.json").read_text())
        assert report["tiles"]["executor"]["actors_lost"] == 1
        assert report["tiles"]["executor"]["resubmitted_batches"] == len(e["batches_resubmitted"])
        assert report["tiles"]["tiles_computed"] == report["tiles"]["fused"]
    for name in names:
        for suffix in (".tif", "_quicklook.png"):
            a = (tmp_path / "out_ref" / name / f"{name}{suffix}").read_bytes()
            b = (tmp_path / "out_ray" / name / f"{name}{suffix}").read_bytes()
            assert a == b, f"{name}{suffix} differs from the single-machine run"
    detect = next(e for e in events if e["event"] == "ray_actor_lost")
    print(f"\nlocal cluster start {cluster.start_s:.1f} s, actor pool {pool_s:.1f} s; 4 scenes: 1 process "
          f"{single_s:.1f} s, cluster (1 node killed) {ray_s:.1f} s; lost actor: {detect['error']}, "
          f"batches {detect['batches_resubmitted']} resubmitted; loss seen by {[e['scene'] for e in lost]}")


def test_ray_backend_refuses_clearly_without_ray(monkeypatch):
    import builtins

    from ddif.station import distributed

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RuntimeError, match=r"pip install 'ddif\[ray\]'"):
        distributed.RayBackend("model.pt", backend_factory())


# ------------------------------------------------------------------ the in-flight path without Ray
class OutOfOrder:
    """A backend with ``map_batches`` (the path RayBackend takes through run_scene): takes up to
    ``window`` batches, answers them last-first; without Ray, so it runs everywhere."""

    def __init__(self, inner, window: int = 3):
        self.inner, self.window, self.calls = inner, window, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def map_batches(self, jobs, log=None, **fields):
        held = []
        for job in jobs:
            held.append(job)
            if len(held) == self.window:
                while held:
                    k, lms, pan, noise = held.pop()
                    self.calls += 1
                    yield k, self.inner.sample_tiles(lms, pan, noise)
        while held:
            k, lms, pan, noise = held.pop()
            self.calls += 1
            yield k, self.inner.sample_tiles(lms, pan, noise)


def test_in_flight_path_out_of_order_byte_identical_and_stop_resume(tmp_path):
    from ddif.station import run_scene
    from ddif.station.errors import StopRequested
    from test_station_support import shared_backend

    backend = shared_backend()
    ms, pan = synthetic_scene(tmp_path / "in", "s", ms_size=48, seed=3)
    config = small_config(batch_size=2, metric_tiles=1)
    ref = run_scene(ms, pan, tmp_path / "ref.tif", backend, config)
    out = run_scene(ms, pan, tmp_path / "ooo.tif", OutOfOrder(backend), config)
    assert (tmp_path / "ref.tif").read_bytes() == (tmp_path / "ooo.tif").read_bytes()
    assert out["tiles"]["tiles_computed"] == ref["tiles"]["tiles_computed"] == ref["tiles"]["fused"]

    # a stop request ends the submissions; the batches already taken are journaled, then the stop
    # is raised; a sequential rerun resumes from the journal into the same bytes
    asked = iter(range(100))
    wrapper = OutOfOrder(backend, window=3)
    journal = tmp_path / "journal"
    with pytest.raises(StopRequested):
        run_scene(ms, pan, tmp_path / "stopped.tif", wrapper, config, journal_dir=journal,
                  should_stop=lambda: next(asked) >= 2)
    assert wrapper.calls == 2 and not (tmp_path / "stopped.tif").exists()
    resumed = run_scene(ms, pan, tmp_path / "stopped.tif", backend, config, journal_dir=journal)
    assert resumed["tiles"]["batches_from_journal"] == 2
    assert (tmp_path / "stopped.tif").read_bytes() == (tmp_path / "ref.tif").read_bytes()


# ------------------------------------------------------------------ several scenes at once
class ConcurrentScenes:
    """A backend that takes several scenes at once (what RayBackend declares), without Ray: calls
    from the scene threads are serialised on the wrapped backend, and each call records whether
    another scene's call was under way (so overlap is observed, not assumed)."""

    concurrent_scenes = True

    def __init__(self, inner):
        import threading

        self.inner, self._lock, self.active, self.overlapped = inner, threading.Lock(), set(), 0
        self._state = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def map_batches(self, jobs, log=None, **fields):
        import threading

        me = threading.get_ident()
        for k, lms, pan, noise in jobs:
            with self._state:
                self.active.add(me)
                self.overlapped += len(self.active) > 1
            with self._lock:
                residual = self.inner.sample_tiles(lms, pan, noise)
            yield k, residual
        with self._state:
            self.active.discard(me)


def _scene_overlap(events) -> bool:
    """Whether some scene started before an earlier one was done (from the service's log)."""
    open_scenes = set()
    for e in events:
        if e["event"] == "scene_start":
            if open_scenes:
                return True
            open_scenes.add(e["scene"])
        elif e["event"] in ("scene_done", "scene_failed"):
            open_scenes.discard(e["scene"])
    return False


def test_scenes_in_flight_overlap_and_give_the_same_bytes(tmp_path):
    from ddif.station import StationService, WatchConfig
    from ddif.station.events import EventLog
    from test_station_support import shared_backend

    backend = shared_backend()
    config = small_config(batch_size=2, metric_tiles=1)
    names = make_inbox(tmp_path / "in_ref", 4, ms_size=32)
    shutil.copytree(tmp_path / "in_ref", tmp_path / "in_par")
    ref = StationService(tmp_path / "in_ref", tmp_path / "out_ref", backend, config,
                         WatchConfig(poll_interval_s=0.01), log=EventLog(stream=None))
    assert ref.run(once=True) == 0 and not _scene_overlap(ref.log.events)

    wrapped = ConcurrentScenes(backend)
    log = EventLog(stream=None)
    par = StationService(tmp_path / "in_par", tmp_path / "out_par", wrapped, config,
                         WatchConfig(poll_interval_s=0.01, scenes_in_flight=2), log=log)
    assert par.run(once=True) == 0
    assert sorted(par.processed) == names and _scene_overlap(log.events) and wrapped.overlapped > 0
    for name in names:
        for suffix in (".tif", "_quicklook.png"):
            a = (tmp_path / "out_ref" / name / f"{name}{suffix}").read_bytes()
            b = (tmp_path / "out_par" / name / f"{name}{suffix}").read_bytes()
            assert a == b, f"{name}{suffix} differs from one scene at a time"
    assert sorted(p.name for p in (tmp_path / "in_par" / "processed").iterdir()) == names
    collection = json.loads((tmp_path / "out_par" / "collection.json").read_text())
    assert sorted(lk["href"] for lk in collection["links"] if lk["rel"] == "item") == [f"{n}/{n}.json" for n in names]


def test_scenes_in_flight_needs_a_backend_that_takes_them(tmp_path):
    from ddif.cli.station import main as station_main
    from ddif.station import StationService, WatchConfig
    from test_station_support import shared_backend

    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match="scenes_in_flight = 2 needs a backend that fuses several scenes"):
        StationService(tmp_path / "in", tmp_path / "out", shared_backend(), small_config(),
                       WatchConfig(scenes_in_flight=2))
    # the CLI says so before loading any model
    assert station_main(["watch", "--inbox", str(tmp_path / "in"), "--outbox", str(tmp_path / "out"),
                         "--model", str(tmp_path / "absent.pt"), "--scenes-in-flight", "2", "--once"]) == 2


@needs_ray
@pytest.mark.timeout(300)
def test_ray_pool_shared_by_scenes_in_flight_byte_identical(tmp_path, monkeypatch):
    """A local Ray (2 CPUs) and 2 actors: 4 scenes through the watch service, 2 at a time; each
    scene's report counts its own batches; every product equals one process's, byte for byte."""
    import torch

    from ddif.station import StationService, WatchConfig
    from ddif.station.distributed import RayBackend
    from ddif.station.events import EventLog

    assert torch.get_num_threads() == 1
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the actors' checkpoint copies
    # no token auth: a new local ray.init() would otherwise create ~/.ray/auth_token and set
    # RAY_AUTH_MODE=token in this process, for every later test cluster too
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    model = save_station_model(tmp_path / "model.pt")
    factory = backend_factory()
    config = small_config(batch_size=2, metric_tiles=1)
    names = make_inbox(tmp_path / "in_ref", 4, ms_size=48)
    shutil.copytree(tmp_path / "in_ref", tmp_path / "in_ray")
    ref = StationService(tmp_path / "in_ref", tmp_path / "out_ref", factory(str(model)), config,
                         WatchConfig(poll_interval_s=0.01), log=EventLog(stream=None))
    assert ref.run(once=True) == 0

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ddif-ray-", dir="/tmp"))
    try:
        log = EventLog(stream=None)
        backend = RayBackend(model, factory, threads=1, log=log)
        assert backend.actors == 2
        service = StationService(tmp_path / "in_ray", tmp_path / "out_ray", backend, config,
                                 WatchConfig(poll_interval_s=0.01, scenes_in_flight=2), log=log)
        assert service.run(once=True) == 0
        backend.close()
    finally:
        ray.shutdown()
    assert _scene_overlap(log.events)
    for name in names:
        report = json.loads((tmp_path / "out_ray" / name / f"{name}_report.json").read_text())
        executor = report["tiles"]["executor"]
        assert executor["executor"] == "ray" and executor["actors_lost"] == 0
        # this scene's own batches, though another scene used the pool at the same time
        assert executor["batches"] == report["tiles"]["batches"] > 1
        for suffix in (".tif", "_quicklook.png"):
            a = (tmp_path / "out_ref" / name / f"{name}{suffix}").read_bytes()
            b = (tmp_path / "out_ray" / name / f"{name}{suffix}").read_bytes()
            assert a == b, f"{name}{suffix} differs from the single-machine run"
