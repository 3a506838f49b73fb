"""Ground-station pipeline: MS + PAN GeoTIFF scenes in, georeferenced fused products out,
unattended and crash-safe.

    from ddif.station import StationConfig, run_scene, plan_scene, StationService
    import ddif.export
    backend = ddif.export.best_available("model.pt")
    report = run_scene("S_MS.tif", "S_PAN.tif", "S_fused.tif", backend, StationConfig())  # the model's tiles

Command line: ``ddif station run ...`` and ``ddif station watch ...`` (:mod:`ddif.cli.station`).
Modules: :mod:`~ddif.station.io` (product writer, read-back check, quicklook; the scenes are read by
the one ingestion layer :mod:`ddif.data.scene`), :mod:`ddif.inference` and :mod:`~ddif.utils.tile_grid`
(tiles, noise, blending; shared with ddif.Fuser), :mod:`~ddif.station.journal` (per-tile journal),
:mod:`~ddif.station.run` (one scene), :mod:`~ddif.station.watch` (the service),
:mod:`~ddif.station.quarantine`, :mod:`~ddif.station.events` (JSON-lines logs),
:mod:`~ddif.station.distributed` (scale-out on Ray: ``RayBackend``, optional ``ddif[ray]``).
Nothing heavy is imported until used.
"""

from __future__ import annotations

from ddif.utils.lazy import lazy_exports

_LAZY = {
    "StationConfig": "ddif.station.config",
    "WatchConfig": "ddif.station.config",
    "SceneError": "ddif.station.errors",
    "EventLog": "ddif.station.events",
    "plan_scene": "ddif.station.plan",
    "run_scene": "ddif.station.run",
    "ScenePlan": "ddif.station.plan",
    "StationService": "ddif.station.watch",
    "TileGrid": "ddif.utils.tile_grid",
    "Journal": "ddif.station.journal",
    "RayBackend": "ddif.station.distributed",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
