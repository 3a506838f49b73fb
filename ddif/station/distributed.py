"""Scale-out on Ray: the station's tile batches run on a pool of Ray actors, on as many machines
as the cluster has.

:class:`RayBackend` is a station backend (:class:`ddif.station.plan.StationBackend`: ``name``,
``preset``, ``tiling``, ``sample_tiles``), so planning, the tile journal, the product writer and
the watch service do not change. It owns a pool of actors (:class:`TileActor`), each of which
builds the backend once from a picklable factory and a local copy of the checkpoint (its bytes
are shipped through Ray's object store: the workers need no view of the driver's file system)
and answers "sample these tiles". :meth:`RayBackend.map_batches` keeps up to
``in_flight_per_actor`` batches queued on every actor and yields each batch's residuals as soon
as it is done, in whatever order; :func:`ddif.station.run.run_scene` saves each batch's tiles to
the journal as they come (per-tile files: order does not matter), so a product is assembled from
the same float32 tiles as on one machine.

Fault tolerance: when an actor (its worker process or its whole node) dies, the batches it held
are submitted again to the surviving actors (event ``ray_actor_lost`` with their batch indices),
and a replacement actor is requested; it joins the pool once Ray can place it (event
``ray_actor_started``), never blocking the others. Only when no actor is left, and no
replacement started within ``replace_timeout_s``, does fusing stop with an error. Tiles already
in the journal are never recomputed.

Several scenes at once: :meth:`RayBackend.map_batches` may be called from several threads (the
watch service's ``scenes_in_flight``), one scene each. The pool's state is shared under a lock; the
actors' capacity (``in_flight_per_actor`` x actors) is split evenly between the scenes being fused,
so one scene's product writing (COG, quicklook, quality indices: the driver's own work) overlaps
with another scene's batches on the actors. An actor takes one call at a time; each call keeps its
own queue, batches in flight and statistics (:meth:`pool_info` answers for the calling thread).

Determinism: a batch's residuals depend only on the batch (tiles, per-tile noise) and on how the
backend computes: the product is byte-identical to a single-machine run with the same backend,
the same torch / ONNX Runtime intra-op thread count (``threads``, set explicitly in every actor),
the same library versions and the same kind of device and CPU instruction set.

``ray`` is an optional dependency (``pip install 'ddif[ray]'``), imported only when a
:class:`RayBackend` is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ddif.station.errors import ComputeUnavailable
from ddif.station.events import EventLog, NullLog

if TYPE_CHECKING:
    import torch

    from ddif.config import Preset
    from ddif.inference.tiling import Tiling
    from ddif.station.plan import StationBackend

INSTALL_HINT = "pip install 'ddif[ray]'"

# what a factory gets: the path of the actor's local copy of the checkpoint
BackendFactory = Callable[[str], "StationBackend"]

# one batch as the station hands it over: (batch index, lms, pan, noise)
Job = tuple[int, "torch.Tensor", "torch.Tensor", "torch.Tensor"]


def import_ray() -> ModuleType:
    """The ``ray`` module, or a RuntimeError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(f"scale-out on Ray needs the ray package: {INSTALL_HINT} ({exc})") from exc
    return ray


def _lost_errors(ray: ModuleType) -> tuple[type[BaseException], ...]:
    """Errors that mean "the actor (or the node holding its result) is gone", not "the backend
    failed on this batch" (those arrive as RayTaskError and are raised as they are)."""
    names = ("RayActorError", "ObjectLostError", "WorkerCrashedError", "NodeDiedError", "OwnerDiedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def local_model_copy(data: bytes, name: str, sha256: str) -> Path:
    """The checkpoint's bytes as a file on this machine (``$TMPDIR/ddif-ray-models-<uid>/``, named
    by content and original name, written atomically once and shared by the actors of a machine)."""
    from ddif.utils.io import atomic_write_bytes

    folder = Path(tempfile.gettempdir()) / f"ddif-ray-models-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha256[:16]}-{Path(name).name}"
    if not path.is_file() or path.stat().st_size != len(data):
        atomic_write_bytes(path, data)
    return path


class TileActor:
    """One Ray actor (one worker process): the backend, built once by ``factory`` from a local
    copy of the shipped checkpoint with ``threads`` intra-op threads, sampling batches of tiles."""

    def __init__(self, model: bytes, name: str, sha256: str, factory: BackendFactory, threads: int):
        import torch

        torch.set_num_threads(int(threads))  # explicit: the products' bytes depend on it
        self.path = local_model_copy(model, name, sha256)
        self.backend = factory(str(self.path))

    def facts(self) -> dict[str, Any]:
        """What the driver needs to stand in for the backend, and where this actor runs."""
        import ray
        import torch

        import ddif

        b = self.backend
        return {
            "name": str(b.name),
            "describe": b.describe() if hasattr(b, "describe") else str(b.name),
            "steps": getattr(b, "steps", None),
            "batch_size": getattr(b, "batch_size", None),
            "preset": b.preset,
            "tiling": b.tiling,
            "node": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "versions": {"ddif": ddif.__version__, "torch": torch.__version__},
        }

    def sample_tiles(self, lms: np.ndarray, pan: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """``backend.sample_tiles`` on one batch; float32 residuals on the CPU."""
        import torch

        # copies: the object store hands out read-only arrays
        lms_t, pan_t, noise_t = (torch.from_numpy(np.array(a)) for a in (lms, pan, noise))
        residual = self.backend.sample_tiles(lms_t, pan_t, noise_t)
        return residual.detach().to("cpu", torch.float32).numpy()


@dataclass(eq=False)
class _Actor:
    id: int
    handle: Any
    busy: int = 0
    facts: dict[str, Any] | None = None

    def where(self) -> dict[str, Any]:
        f = self.facts or {}
        return {"actor": self.id, "node": f.get("node"), "ip": f.get("ip"), "pid": f.get("pid")}


@dataclass(eq=False)
class _Batch:
    key: int
    refs: tuple[Any, Any, Any]  # lms, pan, noise in the object store (kept until the batch is done)


class ActorPool:
    """The actors of a :class:`RayBackend`: spawning (one checkpoint shipped once through the object
    store), joining (an actor that built another backend than the first is refused), losing and
    replacing, and the capacity shared by the scenes in flight. Its state (``live``, ``starting``,
    busy counts, ``empty_since``, ``lost``) is changed under ``lock``; ``freed`` wakes a scene
    waiting for capacity."""

    def __init__(
        self,
        ray: ModuleType,
        model: Path,
        factory: BackendFactory,
        *,
        threads: int,
        gpus_per_actor: float,
        in_flight_per_actor: int,
        replace_timeout_s: float,
        log: EventLog,
    ):
        self.ray = ray
        self.lost_errors = _lost_errors(ray)
        self.log = log
        self.threads = threads
        self.gpus_per_actor = gpus_per_actor
        self.in_flight_per_actor = in_flight_per_actor
        self.replace_timeout_s = replace_timeout_s
        data = model.read_bytes()
        self.model_sha256 = hashlib.sha256(data).hexdigest()
        self._model_ref = ray.put(data)
        del data
        self._model_name = model.name
        self._factory = factory
        options: dict[str, Any] = {"max_restarts": 0, "max_task_retries": 0}
        if gpus_per_actor > 0:
            options.update(num_gpus=gpus_per_actor, num_cpus=1)
        else:
            options.update(num_cpus=threads)
        self._actor_class = ray.remote(TileActor).options(**options)
        self._next_id = 0
        self.live: list[_Actor] = []
        self.starting: dict[Any, _Actor] = {}  # facts() ref -> actor not yet known to be up
        self.empty_since: float | None = None
        self.facts: dict[str, Any] | None = None  # the first actor's backend facts
        self.lost = 0
        self.resubmitted = 0
        self.lock = threading.RLock()
        self.freed = threading.Condition(self.lock)
        self.active_calls = 0

    def default_actors(self) -> int:
        res = self.ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        n = int(gpus // self.gpus_per_actor) if self.gpus_per_actor > 0 else int(cpus // self.threads)
        if n < 1:
            need = f"{self.gpus_per_actor:g} GPU" if self.gpus_per_actor > 0 else f"{self.threads} CPU"
            raise RuntimeError(
                f"the Ray cluster offers {cpus:g} CPUs and {gpus:g} GPUs: not enough for one actor ({need} each)"
            )
        return n

    def spawn(self) -> _Actor:
        handle = self._actor_class.remote(
            self._model_ref, self._model_name, self.model_sha256, self._factory, self.threads
        )
        actor = _Actor(self._next_id, handle)
        self._next_id += 1
        self.starting[handle.facts.remote()] = actor
        return actor

    def join(self, ref: Any, log: EventLog, fields: dict[str, Any], strict: bool = False) -> BaseException | None:
        """A starting actor answered: add it to the pool, or return why it could not start. One
        that built another backend than the first is refused: an error at start (``strict``),
        later (a replacement on another kind of machine) a logged ``ray_actor_refused``."""
        actor = self.starting.pop(ref)
        try:
            facts = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a failed start is reported, not fatal while others live
            with contextlib.suppress(Exception):
                self.ray.kill(actor.handle, no_restart=True)
            log.warning("ray_actor_start_failed", actor=actor.id, error=_short(exc), **fields)
            return exc
        if self.facts is None:
            self.facts = facts
        else:
            same = ("name", "describe", "steps", "batch_size", "tiling")
            diff = {k: (self.facts[k], facts[k]) for k in same if facts[k] != self.facts[k]}
            if diff:
                with contextlib.suppress(Exception):
                    self.ray.kill(actor.handle, no_restart=True)
                message = (
                    f"Ray actor {actor.id} on {facts['ip']} built another backend than the first ({diff}): "
                    "the product would mix two computations; name the backend and device explicitly"
                )
                if strict:
                    raise RuntimeError(message)
                log.error("ray_actor_refused", actor=actor.id, ip=facts["ip"], error=message, **fields)
                return RuntimeError(message)
            if facts["versions"] != self.facts["versions"]:
                log.warning(
                    "ray_version_mismatch",
                    actor=actor.id,
                    versions=facts["versions"],
                    first=self.facts["versions"],
                    note="products may differ in the last bits from a single-machine run",
                )
        actor.facts = facts
        self.live.append(actor)
        self.empty_since = None
        return None

    def start(self, actors: int, timeout_s: float) -> None:
        """Spawn ``actors`` and wait up to ``timeout_s`` for them: an error when none started."""
        for _ in range(actors):
            self.spawn()
        deadline = time.monotonic() + timeout_s
        errors: list[BaseException] = []
        while self.starting and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.starting), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            for ref in ready:
                exc = self.join(ref, self.log, {}, strict=True)
                if exc is not None:
                    errors.append(exc)
        if not self.live:
            why = f": {_short(errors[0])}" if errors else f" within {timeout_s:g} s (not enough resources?)"
            raise RuntimeError(f"no Ray actor could be started{why}")
        if self.starting:
            self.log.warning(
                "ray_actors_pending",
                pending=len(self.starting),
                actors=len(self.live),
                note="not placed yet: they join the pool when Ray can place them",
            )

    def lose(
        self,
        actor: _Actor,
        exc: BaseException,
        first: _Batch,
        inflight: dict[Any, tuple[_Batch, _Actor]],
        queue: deque[_Batch],
        log: EventLog,
        fields: dict[str, Any],
    ) -> int:
        """``actor`` is gone: queue the calling scene's batches on it again (ahead of new ones); the
        first call to notice (several scenes may have had batches on it) asks for a replacement.
        Returns the number of batches queued again."""
        moved = [first] + [inflight.pop(ref)[0] for ref in [r for r, (_, a) in inflight.items() if a is actor]]
        moved.sort(key=lambda b: b.key)
        queue.extendleft(reversed(moved))
        replacement = None
        with self.lock:
            if actor in self.live:
                self.live.remove(actor)
                self.lost += 1
                with contextlib.suppress(Exception):
                    self.ray.kill(actor.handle, no_restart=True)
                if not self.live and self.empty_since is None:
                    self.empty_since = time.monotonic()
                replacement = self.spawn()
            self.resubmitted += len(moved)
            self.freed.notify_all()
        log.warning(
            "ray_actor_lost",
            **actor.where(),
            error=_short(exc),
            batches_resubmitted=[b.key for b in moved],
            actors_left=len(self.live),
            replacement=replacement.id if replacement is not None else None,
            **fields,
        )
        return len(moved)

    def has_room(self, mine: int) -> bool:
        """Whether a call with ``mine`` batches in flight may submit one more (under ``lock``): the
        pool is below its capacity (``in_flight_per_actor`` x actors) and the call below its share,
        the capacity split evenly between the calls running now."""
        capacity = self.in_flight_per_actor * len(self.live)
        share = max(1, -(-capacity // max(1, self.active_calls)))
        return bool(self.live) and sum(a.busy for a in self.live) < capacity and mine < share

    def close(self) -> None:
        for actor in [*self.live, *self.starting.values()]:
            with contextlib.suppress(Exception):
                self.ray.kill(actor.handle, no_restart=True)
        self.live.clear()
        self.starting.clear()


class RayBackend:
    """A station backend whose ``sample_tiles`` runs on a pool of Ray actors (module docstring):
    the backend's facts (those of the first actor's backend) and the batch scheduler
    (:meth:`map_batches`) over an :class:`ActorPool`.

    ``model``: the checkpoint (any single file ``factory`` accepts: engine ``.pt``, self-contained
    ``.onnx``, ...); its bytes are shipped to the actors. ``factory(path)`` builds the backend in
    each actor (picklable: a module-level function or ``functools.partial`` of one, e.g.
    ``partial(ddif.runtime.TorchBackend, tile_size=..., tile_overlap=..., batch_size=...)``).
    ``address``: the cluster (``"auto"``, ``"host:port"``; None: ``$RAY_ADDRESS`` or a new local
    Ray) unless Ray is initialised already. ``actors``: default as many as the cluster's CPUs
    (divided by ``threads``) or, with ``gpus_per_actor``, its GPUs (divided by that) allow.
    ``threads``: torch intra-op threads of every actor and the CPUs each reserves.
    """

    concurrent_scenes = True  # map_batches may run for several scenes at once (one thread each)

    def __init__(
        self,
        model: str | os.PathLike,
        factory: BackendFactory,
        *,
        address: str | None = None,
        actors: int | None = None,
        threads: int = 1,
        gpus_per_actor: float = 0.0,
        in_flight_per_actor: int = 2,
        start_timeout_s: float = 300.0,
        replace_timeout_s: float = 120.0,
        log: EventLog | None = None,
    ):
        for name, value, low in (("threads", threads, 1), ("gpus_per_actor", gpus_per_actor, 0)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if in_flight_per_actor < 1:
            raise ValueError(f"in_flight_per_actor must be >= 1, got {in_flight_per_actor}")
        if actors is not None and actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        ray = import_ray()
        self._ray = ray
        self.log = log or NullLog()
        self.threads = int(threads)
        t0 = time.perf_counter()
        self._owns_ray = False
        if not ray.is_initialized():
            # the station's stderr is JSON lines: Ray's own messages stay in the cluster's logs
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except Exception as exc:  # ConnectionError, a wrong address, a version mismatch ...
                raise RuntimeError(f"cannot connect to the Ray cluster at {address or 'RAY_ADDRESS'}: {exc}") from exc
            self._owns_ray = True
        self.pool = ActorPool(
            ray,
            Path(model),
            factory,
            threads=self.threads,
            gpus_per_actor=float(gpus_per_actor),
            in_flight_per_actor=int(in_flight_per_actor),
            replace_timeout_s=float(replace_timeout_s),
            log=self.log,
        )
        self.model_sha256 = self.pool.model_sha256
        self._per_thread = threading.local()  # this thread's map_batches statistics
        try:
            self.pool.start(actors if actors is not None else self.pool.default_actors(), start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.log.info(
            "ray_pool_started",
            actors=len(self.pool.live),
            pending=len(self.pool.starting),
            nodes=len({a.where()["node"] for a in self.pool.live}),
            backend=self.describe(),
            threads=self.threads,
            gpus_per_actor=self.pool.gpus_per_actor or None,
            seconds=round(time.perf_counter() - t0, 3),
        )

    # ------------------------------------------------------------------ the backend interface
    def _fact(self, key: str) -> Any:
        assert self.pool.facts is not None  # set once the first actor started (__init__)
        return self.pool.facts[key]

    @property
    def name(self) -> str:
        """The wrapped backend's name (it is written into the product: the bytes stay the same)."""
        return str(self._fact("name"))

    def describe(self) -> str:
        """The wrapped backend's description: the tiles are the same computation, so a journal
        started on one machine resumes on the cluster and the other way round."""
        return str(self._fact("describe"))

    @property
    def steps(self) -> int | None:
        return self._fact("steps")

    @property
    def batch_size(self) -> int | None:
        return self._fact("batch_size")

    @property
    def preset(self) -> Preset:
        return self._fact("preset")

    @property
    def tiling(self) -> Tiling:
        return self._fact("tiling")

    @property
    def bands(self) -> int:
        return int(self.preset.model.bands)

    @property
    def guide_bands(self) -> int:
        return int(self.preset.model.guide_bands)

    @property
    def max_dn(self) -> float:
        return float(self.preset.model.max_dn)

    @property
    def rgb_bands(self) -> tuple[int, ...]:
        return tuple(int(b) for b in self.preset.data.rgb_bands)

    @property
    def ratio(self) -> int:
        return int(self.preset.data.ratio)

    @property
    def actors(self) -> int:
        """Actors up now."""
        return len(self.pool.live)

    @property
    def lost(self) -> int:
        """Actors lost so far."""
        return self.pool.lost

    def sample_tiles(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Any = None,
    ) -> torch.Tensor:
        """Residuals of one batch of tiles, on one actor (with the pool's fault tolerance)."""
        if generators is not None and any(g is not None for g in generators):
            raise ValueError("RayBackend: per-tile generators cannot be shipped to Ray actors")
        for _, residual in self.map_batches([(0, lms, pan, noise)]):
            return residual
        raise RuntimeError("RayBackend: no result")  # pragma: no cover - map_batches yields or raises

    @property
    def last_run(self) -> dict[str, Any]:
        """The calling thread's last :meth:`map_batches` run (batches, actors lost, resubmitted)."""
        run = getattr(self._per_thread, "run", None)
        if run is None:
            run = self._per_thread.run = {}
        return run

    def pool_info(self) -> dict[str, Any]:
        """The calling thread's last :meth:`map_batches` run, for the scene's report."""
        return {"executor": "ray", "actors": len(self.pool.live), "threads_per_actor": self.threads, **self.last_run}

    # ------------------------------------------------------------------ the batch scheduler
    def map_batches(
        self, jobs: Iterable[Job], log: EventLog | None = None, **fields: Any
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Sample every ``(key, lms, pan, noise)`` of ``jobs`` on the pool and yield ``(key,
        residual)`` as each batch is done, in completion order. ``jobs`` is read lazily: at most
        ``in_flight_per_actor`` x actors batches are out at once (the memory bound). ``fields``
        are added to the pool's events (e.g. ``scene=``)."""
        import torch

        ray, pool = self._ray, self.pool
        log = log or self.log
        source = iter(jobs)
        queue: deque[_Batch] = deque()  # batches of lost actors, submitted again first
        inflight: dict[Any, tuple[_Batch, _Actor]] = {}
        exhausted = False
        run = self._per_thread.run = {"batches": 0, "actors_lost": 0, "resubmitted_batches": 0, "max_in_flight": 0}
        with pool.lock:
            pool.active_calls += 1
        try:
            while True:
                # submit while this call has room: reading a batch (next(source)) is done outside the lock
                while True:
                    with pool.lock:
                        if not pool.has_room(len(inflight)):
                            break
                    if queue:
                        batch = queue.popleft()
                    elif not exhausted:
                        item = next(source, None)
                        if item is None:
                            exhausted = True
                            continue
                        key, lms, pan, noise = item
                        batch = _Batch(int(key), tuple(ray.put(t.detach().cpu().numpy()) for t in (lms, pan, noise)))
                    else:
                        break
                    with pool.lock:
                        if not pool.has_room(len(inflight)):
                            queue.appendleft(batch)  # another scene took the room meanwhile
                            break
                        actor = min(pool.live, key=lambda a: a.busy)
                        ref = actor.handle.sample_tiles.remote(*batch.refs)
                        actor.busy += 1
                    inflight[ref] = (batch, actor)
                    run["max_in_flight"] = max(run["max_in_flight"], len(inflight))
                if exhausted and not inflight and not queue:
                    return
                with pool.lock:
                    if not pool.live:
                        waited = time.monotonic() - (pool.empty_since or time.monotonic())
                        if not pool.starting or waited > pool.replace_timeout_s:
                            raise ComputeUnavailable(
                                f"no Ray actor left ({pool.lost} lost) and no replacement started within "
                                f"{pool.replace_timeout_s:g} s: {len(queue) + len(inflight)} batches not fused "
                                "(the tiles done are in the journal: rerun to resume)"
                            )
                    starting = list(pool.starting)
                    if not inflight and not starting:
                        # the whole capacity is with other scenes: wait until one of their batches returns
                        pool.freed.wait(timeout=1.0)
                        continue
                ready, _ = ray.wait(list(inflight) + starting, num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref not in inflight:
                        with pool.lock:
                            if ref in pool.starting and pool.join(ref, log, fields) is None:
                                started = pool.live[-1].where()
                                log.info("ray_actor_started", **started, actors=len(pool.live), **fields)
                                pool.freed.notify_all()
                        continue  # an actor that started (or was already joined by another scene)
                    batch, actor = inflight.pop(ref)
                    with pool.lock:
                        actor.busy -= 1
                        pool.freed.notify_all()
                    try:
                        residual = ray.get(ref)
                    except pool.lost_errors as exc:
                        moved = pool.lose(actor, exc, batch, inflight, queue, log, fields)
                        run["resubmitted_batches"] += moved
                        run["actors_lost"] += 1
                        continue
                    run["batches"] += 1
                    yield batch.key, torch.from_numpy(np.array(residual))  # a writable copy
        finally:
            with pool.lock:
                for ref, (_, actor) in inflight.items():  # abandoned (an error, or the consumer stopped early)
                    with contextlib.suppress(Exception):
                        ray.cancel(ref)
                    actor.busy -= 1
                pool.active_calls -= 1
                pool.freed.notify_all()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Kill the actors (and disconnect from Ray when this backend connected)."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        backend = self.describe() if self.pool.facts else "not started"
        return f"RayBackend({backend}, actors={len(self.pool.live)}, threads={self.threads})"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
