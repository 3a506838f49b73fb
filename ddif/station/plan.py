"""Planning one scene: what the model is (a backend, or its preset before any backend exists),
the pair checked against it through the scene-ingestion layer, the tiles laid out in the model's
tiling, all-nodata tiles skipped, the fixed batches, the value range, and the memory bound.
:func:`ddif.station.run.run_scene` executes a plan."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ddif.data.scene import (
    ALL_NODATA,
    BAD_GRID,
    Preprocessing,
    SceneError,
    SceneGrid,
    SceneReader,
    check_scene_scale,
    gdal_env,
    open_pair,
    scan_scene,
)
from ddif.inference.tiling import Tiling, check_tiling
from ddif.station.config import StationConfig
from ddif.station.events import EventLog
from ddif.station.io import output_nodata, overview_factors
from ddif.utils.tile_grid import TileGrid

if TYPE_CHECKING:
    import torch

    from ddif.config import Preset

# 2: tiles in the model's tiling with per-tile noise, journal holds lms + residual
PIPELINE_VERSION = 3  # 3: counter-based tile noise, batch-window reads
BACKEND_INTERFACE = ("name", "bands", "guide_bands", "max_dn", "rgb_bands", "ratio", "preset", "tiling", "sample_tiles")


class StationBackend(Protocol):
    """What the station uses of a backend (the ``ddif.runtime`` interface, e.g.
    :class:`ddif.runtime.TorchBackend`; :func:`model_facts` checks every name of
    ``BACKEND_INTERFACE``; ``describe()`` and ``steps`` are used where present)."""

    @property
    def name(self) -> str: ...

    @property
    def preset(self) -> Preset: ...

    @property
    def tiling(self) -> Tiling: ...

    def sample_tiles(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor: ...


def model_facts(model: StationBackend | Preset, config: StationConfig | None = None) -> dict[str, Any]:
    """What the station needs to know about the model, from a backend (the ``ddif.runtime``
    interface) or, before any backend exists (no ONNX export yet), from its preset."""
    from ddif.config import Preset

    config = config or StationConfig()
    if isinstance(model, Preset):
        preset, name, describe, steps = model, "not loaded", "not loaded (checks only)", None
        tiling = config.tiling_for(preset)
    else:
        missing = [a for a in BACKEND_INTERFACE if not hasattr(model, a)]
        if missing:
            raise ValueError(f"backend {model!r} lacks {missing} (expected the ddif.runtime backend interface)")
        preset, name = model.preset, str(model.name)
        describe = model.describe() if hasattr(model, "describe") else name
        steps = getattr(model, "steps", None)
        tiling = model.tiling
        if not tiling.tiled:  # a whole-image backend (PyTorch, dynamic graph) samples any tile
            tiling = config.tiling_for(preset)
        else:
            check_tiling(
                tiling,
                config.tile_size,
                config.overlap,
                what="the backend",
                fix="the station's tile size / overlap: build the backend with the same ones",
            )
    pre = Preprocessing.for_preset(
        preset, interpolation=config.interpolation, padding=config.padding, fill_iterations=config.fill_iterations
    )
    return {
        "name": name,
        "describe": describe,
        "preset": preset.name,
        "bands": int(preset.model.bands),
        "guide_bands": int(preset.model.guide_bands),
        "max_dn": float(preset.model.max_dn),
        "rgb_bands": [int(b) for b in preset.data.rgb_bands],
        "band_names": list(preset.data.band_names),
        "guide_names": list(preset.data.guide_names),
        "ratio": int(preset.data.ratio),
        "sensor": str(preset.data.sensor or "generic"),
        "steps": steps,
        "tiling": tiling,
        "model_tiling": Tiling.for_preset(preset),
        "preprocessing": pre,
    }


@dataclass
class ScenePlan:
    ms_path: str
    pan_path: str
    grid: SceneGrid
    tiles: TileGrid
    config: StationConfig  # resolved: every None replaced by the model's value
    backend: dict[str, Any]  # model_facts()
    tile_valid: np.ndarray  # valid PAN pixels per tile (int64, one per tile of the grid)
    valid_pixels: int
    fused_tiles: list[int] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)
    value_stats: dict[str, Any] = field(default_factory=dict)
    registration: dict[str, Any] = field(default_factory=dict)  # measured / applied MS-to-PAN shift

    @property
    def nodata(self) -> float:
        return output_nodata(self.grid.ms, self.grid.pan, np.dtype(self.grid.ms.dtype))

    @property
    def product_bands(self) -> list[tuple[str, int, str]]:
        """The product's bands in order, ``(kind, index, name)``: the fused bands, and with a model
        whose guide is a set of the sensor's bands (Sentinel-2's 10 m bands) the guide bands passed
        through, in the sensor's band order (:func:`ddif.data.sensors.product_band_layout`)."""
        from ddif.data.sensors import product_band_layout

        facts = self.backend
        guide = facts.get("guide_names") or ()
        if len(guide) == self.grid.pan.count:
            layout = product_band_layout(facts.get("sensor", ""), facts.get("band_names") or (), guide)
            if layout is not None and sum(k == "fused" for k, _, _ in layout) == self.grid.bands:
                return layout
        names = []
        for i in range(self.grid.bands):
            d = (self.grid.ms.descriptions or ())[i] if i < len(self.grid.ms.descriptions or ()) else None
            names.append(f"{d} (pansharpened)" if d else f"band {i + 1} (pansharpened)")
        return [("fused", i, n) for i, n in enumerate(names)]

    @property
    def pixels(self) -> int:
        return self.grid.pan.width * self.grid.pan.height

    def memory_bound_bytes(self) -> dict[str, int]:
        return memory_bound_bytes(self.grid, self.tiles, self.config)

    def journal_bytes(self) -> int:
        return len(self.fused_tiles) * (4 * self.grid.bands * self.tiles.tile_h * self.tiles.tile_w + 128)

    def to_dict(self) -> dict[str, Any]:
        g = self.grid
        return {
            "ms": {
                "path": self.ms_path,
                "size": [g.ms.height, g.ms.width],
                "bands": g.ms.count,
                "dtype": g.ms.dtype,
                "nodata": g.ms.nodata,
            },
            "pan": {
                "path": self.pan_path,
                "size": [g.pan.height, g.pan.width],
                "bands": g.pan.count,
                "dtype": g.pan.dtype,
                "nodata": g.pan.nodata,
            },
            "crs": g.pan.crs.to_string() if g.pan.crs else None,
            "transform": list(g.pan.transform)[:6],
            "ratio": g.ratio,
            "ms_shift_pan_px": list(g.shift),
            "subpixel_offset_pan_px": list(g.subpixel),
            "ms_coverage_pan_window": list(g.coverage),
            "registration": self.registration,
            "halo_ms_px": g.halo,
            "interpolation": g.interpolation,
            "values": self.value_stats,
            "backend": self.backend_json(),
            "product": {
                "dtype": g.ms.dtype,
                "nodata": self.nodata,
                "bands": g.bands,
                "size": [g.pan.height, g.pan.width],
                "block": self.config.block_size,
                "compress": self.config.compress,
                "overviews": overview_factors(g.pan.height, g.pan.width, self.config.overview_min_size),
            },
            "tiles": {
                "grid": list(self.tiles.shape),
                "size": [self.tiles.tile_h, self.tiles.tile_w],
                "overlap": self.config.overlap,
                "model_tiling": self.backend["model_tiling"].to_dict(),
                "total": len(self.tiles),
                "fused": len(self.fused_tiles),
                "skipped_nodata": len(self.tiles) - len(self.fused_tiles),
                "batches": len(self.batches),
                "batch_size": self.config.batch_size,
            },
            "valid_pixels": self.valid_pixels,
            "valid_fraction": self.valid_pixels / max(1, self.pixels),
            "memory_bound_bytes": self.memory_bound_bytes(),
            "journal_disk_bytes": self.journal_bytes(),
        }

    def backend_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.backend.items() if k not in ("tiling", "model_tiling", "preprocessing")}
        out["preprocessing"] = dict(vars(self.backend["preprocessing"]))
        return out

    def describe(self) -> str:
        d = self.to_dict()
        mem = d["memory_bound_bytes"]
        sub = ", ".join(f"{v:+.2f}" for v in self.grid.subpixel)
        lines = [
            f"scene      MS  {self.ms_path}: {d['ms']['bands']} bands {d['ms']['size'][0]}x{d['ms']['size'][1]} "
            f"{d['ms']['dtype']} nodata={d['ms']['nodata']}",
            f"           PAN {self.pan_path}: {d['pan']['size'][0]}x{d['pan']['size'][1]} {d['pan']['dtype']} "
            f"nodata={d['pan']['nodata']}",
            f"grid       ratio {self.grid.ratio}, CRS {d['crs']}, MS placed at PAN shift {tuple(self.grid.shift)} "
            f"(residual {sub} PAN px, resampled), MS covers PAN window {tuple(self.grid.coverage)}",
            f"register   {_registration_text(self.registration)}",
            f"backend    {self.backend['describe']} (preset {self.backend['preset']}, {self.backend['bands']} bands, "
            f"max DN {self.backend['max_dn']:g}, steps {self.backend['steps']})",
            f"tiles      {d['tiles']['grid'][0]}x{d['tiles']['grid'][1]} grid of "
            f"{self.tiles.tile_h}x{self.tiles.tile_w} "
            f"(overlap {self.config.overlap}; the model samples {self.backend['model_tiling'].describe()}): "
            f"{len(self.fused_tiles)} to fuse, "
            f"{d['tiles']['skipped_nodata']} all-nodata skipped, {len(self.batches)} batches of "
            f"<= {self.config.batch_size}",
            f"valid      {self.valid_pixels} of {self.pixels} PAN pixels ({100 * d['valid_fraction']:.1f}%); "
            f"values MS {_range(self.value_stats.get('ms'))}, PAN {_range(self.value_stats.get('pan'))} "
            f"(model max DN {self.backend['max_dn']:g}"
            f"{', input scale ' + format(self.config.input_scale, 'g') if self.config.input_scale else ''})",
            f"product    {d['product']['bands']} bands {d['product']['dtype']} nodata={d['product']['nodata']}, "
            f"{self.config.compress} tiled {self.config.block_size}, overviews {d['product']['overviews']}",
            f"memory     <= {mem['total'] / 2**20:.1f} MiB held by the pipeline (+ the backend's weights and one "
            f"batch of activations), whatever the scene size",
            f"journal    <= {self.journal_bytes() / 2**20:.1f} MiB of tiles on disk until the product is written",
        ]
        return "\n".join(lines)


def read_band_pixels(batch_size: int, tile_h: int, tile_w: int) -> int:
    """PAN pixels of one read band of :class:`ddif.station.run.TileRowBands`: two station batches
    of tiles (enough for bands of several tile rows of a 4096 px scene at the default batch; at
    most two bands are alive, as the memory bound counts)."""
    return 2 * batch_size * tile_h * tile_w


def memory_bound_bytes(grid: SceneGrid, tiles: TileGrid, config: StationConfig) -> dict[str, int]:
    """Upper bound of what the pipeline holds at once, in bytes, by stage (the largest counts).

    With C bands, P guide bands, tile h x w, batch B, block K, ratio r, halo a (MS px):
    - fusing: B tiles of lms + pan + fused (float32, twice for the torch copies), and the read
      bands (:class:`ddif.station.run.TileRowBands`: at most two alive, each at most 2 B tiles'
      area, lms + pan float32) with the one chunk being read into them: its MS window (the chunk
      over r^2 plus the 2a + 3 px margins along its rows and columns; raw + normalised + filled +
      float64), the MS interpolated onto it and the PAN window (raw, float32 and float64 for the
      sub-pixel shift);
    - assembling: the block's blend accumulators and output (C x K x K), one tile slice, the
      validity reads of the block;
    - the quicklook: a decimated read of the product, at most ``quicklook_size`` on its long side;
    - GDAL's block cache (``gdal_cache_mb``);
    - per-tile bookkeeping: 8 bytes per tile of the grid (the only term that grows with the scene:
      8 bytes per (tile_size - overlap)^2 pixels).
    Not included: the backend's weights and its activations for one batch (model-dependent, fixed
    by batch_size and tile_size).
    """
    c, p = grid.bands, grid.pan.count
    h, w = tiles.tile_h, tiles.tile_w
    b, k, r, a = int(config.batch_size or 1), config.block_size, grid.ratio, grid.halo
    itemsize = np.dtype(grid.ms.dtype).itemsize
    msh, msw = h // r + 2 * a + 3, w // r + 2 * a + 3
    ms_window = c * msh * msw * (itemsize + 4 * 3) + c * (r * msh) * (r * msw) * 4 * 2
    band_px = read_band_pixels(b, h, w)
    perimeter = band_px // min(h, w) + max(h, w)  # a chunk's rows + columns, at most
    m = 2 * a + 3
    chunk_ms_px = band_px // (r * r) + m * perimeter // r + m * m
    chunk = (
        c * chunk_ms_px * (itemsize + 4 * 3 + 8) + c * chunk_ms_px * r * r * 4 * 3 + p * band_px * (itemsize + 4 + 8)
    )
    bands = 2 * band_px * (c + p) * 4 + chunk
    fusing = 2 * b * (2 * c + p) * h * w * 4 + bands
    kk = k * k
    assembling = c * kk * 4 * 3 + kk * 4 * 3 + c * kk * itemsize + kk * (p * itemsize + 4) + ms_window
    q = min(config.quicklook_size, max(grid.pan.height, grid.pan.width))
    quicklook = 3 * q * q * (itemsize + 4 * 3 + 1) + q * q * 8
    gdal = config.gdal_cache_mb * 2**20
    bookkeeping = 8 * len(tiles)
    stage = max(fusing, assembling, quicklook)
    return {
        "fusing": int(fusing),
        "assembling": int(assembling),
        "quicklook": int(quicklook),
        "gdal_cache": int(gdal),
        "bookkeeping": int(bookkeeping),
        "total": int(stage + gdal + bookkeeping),
    }


def _range(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("max") is None:
        return "-"
    return f"{stats['min']:g}..{stats['max']:g} {stats['dtype']}"


REGISTRATION_WARNING_PX = 0.3


def _registration_text(rec: dict[str, Any]) -> str:
    mode = rec.get("mode", "off")
    if mode == "off":
        return "not checked (--registration off)"
    if mode == "given":
        return f"MS placed {rec['applied_pan_px']} PAN px from its geotransform (--registration given)"
    shift = rec.get("shift_pan_px")
    if shift is None:
        return f"not measurable ({rec.get('windows', 0)} windows, no fit of the PAN by the MS bands)"
    agree = "consistent" if rec.get("consistent") else f"inconsistent (spread {rec.get('spread_pan_px')})"
    done = f", corrected by {rec['applied_pan_px']}" if rec.get("applied_pan_px") else ""
    return f"measured {shift} PAN px over {len(rec.get('estimates', []))} windows, {agree}{done}"


def _registration(
    grid: SceneGrid, pre: Preprocessing, config: StationConfig, log: EventLog | None
) -> tuple[SceneGrid, dict[str, Any]]:
    """Check (and with ``config.registration``, correct) the MS-to-PAN registration
    (:func:`ddif.data.scene.measure_registration`); returns the grid to fuse on and the record."""
    from ddif.data.dataset_config import parse_registration
    from ddif.data.scene import measure_registration

    mode = config.registration.strip().lower()
    if mode == "off":
        return grid, {"mode": "off"}
    given = None if mode in ("check", "measure") else parse_registration(config.registration)
    if given is not None:
        return grid.registered(given), {"mode": "given", "applied_pan_px": list(given)}
    with SceneReader(grid, pre, config.input_scale, config.input_offset) as reader:
        found = measure_registration(reader)
    record: dict[str, Any] = {"mode": mode, **found, "applied_pan_px": None}
    shift = found["shift_pan_px"]
    if shift is not None and found["consistent"]:
        big = max(abs(v) for v in shift) >= REGISTRATION_WARNING_PX
        if mode == "measure" and max(abs(v) for v in shift) >= 0.05:
            grid = grid.registered((shift[0], shift[1]))
            record["applied_pan_px"] = shift
        elif big and log is not None:
            log.warning(
                "misregistration",
                message=f"the MS sits {shift[0]:+.2f}, {shift[1]:+.2f} PAN px (rows, cols) from where its "
                "geotransform puts it on the PAN (consistent over "
                f"{len(found['estimates'])} windows); --registration measure corrects the placement",
            )
    return grid, record


def check_product_grid(grid: SceneGrid, config: StationConfig) -> None:
    """What a product needs beyond what the scene layer checks: a CRS (the product and its STAC
    item are georeferenced: without one, the footprint would be projected metres read as
    longitude / latitude) and a size the service accepts (``config.max_scene_pixels``: a header
    can claim any size, and planning reads every block)."""
    for info, what in ((grid.ms, "MS"), (grid.pan, "PAN")):
        if info.crs is None:
            raise SceneError(
                BAD_GRID,
                f"{what} {info.path}: no CRS; a product is georeferenced (assign the CRS the geotransform is in, "
                "e.g. gdal_edit.py -a_srs EPSG:32632)",
            )
    pixels = int(grid.pan.height) * int(grid.pan.width)
    if pixels > config.max_scene_pixels:
        raise SceneError(
            BAD_GRID,
            f"PAN {grid.pan.path}: {grid.pan.width} x {grid.pan.height} px ({pixels / 1e6:,.0f} Mpx) is over the "
            f"station's limit of {config.max_scene_pixels / 1e6:,.0f} Mpx (max_scene_pixels; --max-scene-pixels)",
        )


def plan_scene(
    ms_path: str | os.PathLike,
    pan_path: str | os.PathLike,
    model: StationBackend | Preset,
    config: StationConfig | None = None,
    *,
    log: EventLog | None = None,
) -> ScenePlan:
    """Check the pair against the model (a backend, or a :class:`ddif.config.Preset` before any
    backend exists) and lay out the tiles. Reads the scene once, by blocks, to find all-nodata
    tiles and the value range; raises :class:`SceneError`."""
    config = config or StationConfig()
    facts = model_facts(model, config)
    tiling: Tiling = facts["tiling"]
    config = config.resolved(tiling, facts["preprocessing"])
    pre = facts["preprocessing"]
    with gdal_env(config.gdal_cache_mb):
        grid = open_pair(
            ms_path,
            pan_path,
            bands=facts["bands"],
            guide_bands=facts["guide_bands"],
            ratio=facts["ratio"],
            preprocessing=pre,
            input_nodata=config.input_nodata,
        )
        check_product_grid(grid, config)
        grid, registration = _registration(grid, pre, config, log)
        tiles = tiling.grid(grid.pan.height, grid.pan.width)
        tile_valid = np.zeros(len(tiles), dtype=np.int64)

        def count(y0: int, x0: int, valid: np.ndarray) -> None:
            h, w = valid.shape
            for t in tiles.tiles_in(y0, x0, h, w):
                ys = slice(max(y0, t.y) - y0, min(y0 + h, t.y + t.height) - y0)
                xs = slice(max(x0, t.x) - x0, min(x0 + w, t.x + t.width) - x0)
                tile_valid[t.index] += int(valid[ys, xs].sum())

        with SceneReader(grid, pre, config.input_scale, config.input_offset) as reader:
            scan = scan_scene(reader, config.block_size, count)
        warn = (lambda msg: log.warning("input_scale_override", message=msg)) if log is not None else None
        check_scene_scale(grid, scan, pre.max_dn, config.input_scale, warn)
    if scan.valid_pixels == 0:  # refused here, so that a dry run says what the run would
        raise SceneError(
            ALL_NODATA,
            f"scene {ms_path} + {pan_path}: no pixel is valid in both MS and PAN "
            "(all nodata, or nodata wherever they overlap)",
        )
    fused = [int(i) for i in np.flatnonzero(tile_valid)]
    step = config.batch_size
    assert step is not None  # set by config.resolved()
    batches = [fused[i : i + step] for i in range(0, len(fused), step)]
    return ScenePlan(
        str(ms_path),
        str(pan_path),
        grid,
        tiles,
        config,
        facts,
        tile_valid,
        scan.valid_pixels,
        fused,
        batches,
        {"ms": scan.ms.to_dict(), "pan": scan.pan.to_dict()},
        registration,
    )
