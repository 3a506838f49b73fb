"""The one tile driver: batches of tiles from a *source*, through a sampling *strategy*, into a
*sink*.

- a source yields jobs ``(key, lms, pan, noise)`` lazily (reading, cutting and the noise draw
  happen when the strategy asks for the next batch) and hands a batch's ``lms`` back by its key
  once its residual is there: the in-memory scene of :meth:`ddif.inference.InferencePath.fuse`, or
  the windowed scene reader of the ground station;
- a strategy maps jobs to ``(key, residual)``: :func:`sequential` (one batch at a time on the
  calling thread) or a backend's own ``map_batches`` (e.g. Ray actors, several batches in flight,
  results in completion order);
- a sink takes ``(key, lms, residual)``: the in-memory blend buffer, or the station's tile journal.

``fields`` given to :func:`drive_tiles` go to the strategy (e.g. ``log=``, ``scene=``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

Job = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]  # (key, lms, pan, noise)
MapBatches = Callable[..., Iterator[tuple[int, torch.Tensor]]]


class TileSource(Protocol):
    def jobs(self) -> Iterator[Job]: ...

    def take(self, key: int) -> torch.Tensor:
        """The ``lms`` of batch ``key`` (released by the source)."""
        ...


class TileSink(Protocol):
    def put(self, key: int, lms: torch.Tensor, residual: torch.Tensor) -> None: ...


def sequential(sample: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> MapBatches:
    """The one-batch-at-a-time strategy over ``sample(key, lms, pan, noise) -> residual``; a
    batch's inputs are not kept alive while the next one is read."""

    def map_batches(jobs: Iterator[Job], **_: Any) -> Iterator[tuple[int, torch.Tensor]]:
        for key, lms, pan, noise in jobs:
            residual = sample(key, lms, pan, noise)
            del lms, pan, noise
            yield key, residual

    return map_batches


def drive_tiles(source: TileSource, sink: TileSink, map_batches: MapBatches, **fields: Any) -> None:
    """Every job of ``source`` through ``map_batches`` into ``sink``."""
    for key, residual in map_batches(source.jobs(), **fields):
        sink.put(key, source.take(key), residual)
        del residual
