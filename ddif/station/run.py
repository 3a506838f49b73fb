"""One scene, start to finish: check, plan, fuse tiles through the backend (journaled), assemble
and write the product, quicklook, quality report.

The scene is read by windows through the one ingestion layer (:mod:`ddif.data.scene`: checks,
MS-to-PAN placement, nodata, hole filling, interpolation, scale) and laid out in the model's
tiles (:class:`ddif.inference.Tiling`: the checkpoint's tile size and overlap, the same grid
``ddif.Fuser`` uses); each tile's x_T is drawn from ``(seed, 0, tile index)`` and its values
``lms + residual`` are blended with :func:`ddif.utils.tile_grid.blend_window`, as in the Fuser, so
the product equals ``ddif.Fuser``'s output for the whole scene (up to rounding to DN).

Determinism (what makes a resumed product byte-identical to an uninterrupted one):

- Tiles are fused in fixed batches: the non-empty tiles in row-major order, cut into groups of
  ``batch_size``. A batch is skipped on resume only when all its tiles are in the journal;
  otherwise it is recomputed whole (the same batch composition, the same floating-point values).
- The product is assembled only from the journaled float32 tiles, block by block in raster order
  (each GeoTIFF block written exactly once), tile contributions summed in tile-index order.
- GeoTIFF settings are fixed (compression, predictor, block size, single-threaded GDAL) and no
  time stamp is written into the file; the report (which has timings) is a separate file.
- The journal's fingerprint covers inputs, model, backend and settings (a mismatch discards it).

Memory bound: see :func:`memory_bound_bytes` (independent of the scene size).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddif.data.raster import gdal_errors
from ddif.data.scene import (
    ALL_NODATA,
    SceneError,
    SceneReader,
    gdal_env,
)
from ddif.inference.driver import MapBatches, drive_tiles, sequential
from ddif.inference.tiling import check_tiling, tile_noise_batch
from ddif.station.config import StationConfig
from ddif.station.errors import OutputWriteError, StopRequested
from ddif.station.events import EventLog, NullLog
from ddif.station.io import overview_factors, product_profile, to_dn, verify_product, write_quicklook
from ddif.station.journal import Journal, file_identity
from ddif.station.outputs import (  # noqa: F401 (re-exported)
    OutputPaths,
    check_outputs,
    default_journal_dir,
    plan_outputs,
)
from ddif.station.plan import (  # noqa: F401 (re-exported: the station's planning API)
    PIPELINE_VERSION,
    ScenePlan,
    StationBackend,
    memory_bound_bytes,
    model_facts,
    plan_scene,
    read_band_pixels,
)
from ddif.station.products import (
    BandStatistics,
    cog_creation_options,
    stac_item,
    validate_cog,
    write_cog,
    write_stac_item,
)
from ddif.utils.tile_grid import blend_window

if TYPE_CHECKING:
    import torch


def _band_names(plan: ScenePlan) -> list[str]:
    return [name for _, _, name in plan.product_bands]


def _product_rgb(plan: ScenePlan) -> tuple[int, ...]:
    """The model's preview bands (indices into the fused bands) as product band indices."""
    where = {i: k for k, (kind, i, _) in enumerate(plan.product_bands) if kind == "fused"}
    return tuple(where.get(int(b), int(b)) for b in plan.backend["rgb_bands"])


READ_CHUNK_COLS = 1024  # PAN columns interpolated at a time (see TileRowBands._band)


class TileRowBands:
    """The read windows of a scene's batches: bands of whole tile rows, each read and interpolated
    once (:meth:`SceneReader.window_inputs`, which gives a window the values the whole scene would)
    and kept until the batches have taken all their tiles.

    A band holds as many consecutive tile rows of the scene's width as fit in ``budget_px`` PAN
    pixels (:func:`ddif.station.plan.read_band_pixels`); where one tile row is wider than that, a band is one
    tile row cut into column segments of at most ``budget_px`` pixels. Batches (consecutive in
    raster order) therefore never re-read nor re-interpolate the rows that tile rows share inside a
    band, nor the MS margins of each window, and a batch ending inside a tile row leaves the rest of
    its band to the next batch. At most two bands are alive at a time (a batch spanning two), so
    the memory is bounded by the batch size, not the scene. A tile reaching beyond the scene (a
    scene side shorter than a tile) is read on its own by the caller."""

    def __init__(self, plan: ScenePlan, reader: SceneReader, batches: Sequence[Sequence[int]], budget_px: int):
        self.plan, self.reader = plan, reader
        tiles = plan.tiles
        H, W = plan.grid.shape
        h, w = tiles.tile_h, tiles.tile_w
        n_rows, n_cols = tiles.shape
        step = tiles.rows[1] - tiles.rows[0] if n_rows > 1 else h
        self._rows_per_band = 1
        while self._rows_per_band < n_rows and (h + self._rows_per_band * step) * W <= budget_px:
            self._rows_per_band += 1
        # one tile row wider than the budget: column segments of whole tiles
        cols_per_seg = n_cols
        if self._rows_per_band == 1:
            col_step = tiles.cols[1] - tiles.cols[0] if n_cols > 1 else w
            cols_per_seg = max(1, min(n_cols, (budget_px // h - w) // col_step + 1))
        self._cols_per_seg = cols_per_seg
        self._H, self._W = H, W
        self._remaining: dict[tuple[int, int], int] = {}
        for batch in batches:
            for i in batch:
                key = self._key(tiles.tile(i))
                if key is not None:
                    self._remaining[key] = self._remaining.get(key, 0) + 1
        self._bands: dict[tuple[int, int], tuple[int, int, np.ndarray, np.ndarray]] = {}

    def _key(self, t: Any) -> tuple[int, int] | None:
        if t.y + t.height > self._H or t.x + t.width > self._W:
            return None
        return t.grid_row // self._rows_per_band, t.grid_col // self._cols_per_seg

    def _band(self, key: tuple[int, int]) -> tuple[int, int, np.ndarray, np.ndarray]:
        band = self._bands.get(key)
        if band is None:
            tiles = self.plan.tiles
            n_rows, n_cols = tiles.shape
            r0, c0 = key[0] * self._rows_per_band, key[1] * self._cols_per_seg
            r1 = min(n_rows, r0 + self._rows_per_band) - 1
            c1 = min(n_cols, c0 + self._cols_per_seg) - 1
            # the band's last row / column may be a tile reaching beyond the scene: not in the band
            y1 = min(self._H, tiles.rows[r1] + tiles.tile_h)
            x1 = min(self._W, tiles.cols[c1] + tiles.tile_w)
            y0, x0 = tiles.rows[r0], tiles.cols[c0]
            # read and interpolated in column chunks: the same values as one window (a window
            # gets the values the whole scene would), at a window shape that stays in cache
            # (measured on the 2-core CPU, 128 rows: 17.6 MP/s for 1024 columns, 10.6 for 2048;
            # 56 x 4096: 5.7)
            lms = np.empty((self.plan.grid.bands, y1 - y0, x1 - x0), dtype=np.float32)
            pan = np.empty((self.plan.grid.pan.count, y1 - y0, x1 - x0), dtype=np.float32)
            for cx in range(x0, x1, READ_CHUNK_COLS):
                cw = min(READ_CHUNK_COLS, x1 - cx)
                lms[:, :, cx - x0 : cx - x0 + cw], pan[:, :, cx - x0 : cx - x0 + cw] = self.reader.window_inputs(
                    y0, cx, y1 - y0, cw
                )
            band = self._bands[key] = (y0, x0, lms, pan)
        return band

    def fill(self, batch: Sequence[int], lms_out: np.ndarray, pan_out: np.ndarray) -> list[int]:
        """Cut the batch's tiles into ``lms_out`` / ``pan_out`` (in place); returns the positions
        of the tiles reaching beyond the scene, left to the caller."""
        outside: list[int] = []
        for j, i in enumerate(batch):
            t = self.plan.tiles.tile(i)
            key = self._key(t)
            if key is None:
                outside.append(j)
                continue
            y0, x0, lms, pan = self._band(key)
            rows, cols = slice(t.y - y0, t.y - y0 + t.height), slice(t.x - x0, t.x - x0 + t.width)
            lms_out[j], pan_out[j] = lms[:, rows, cols], pan[:, rows, cols]
            self._remaining[key] -= 1
            if self._remaining[key] == 0:  # every tile of the band taken: freed
                del self._bands[key]
        return outside


def _batch_inputs(
    plan: ScenePlan, bands: TileRowBands, reader: SceneReader, batch: Sequence[int], shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lms, pan and x_T (``(seed, 0, tile index)``) of one batch of tiles, as float32 tensors:
    the tiles are cut from the :class:`TileRowBands` of the scene; a tile reaching beyond the scene
    (a scene side shorter than a tile) is read on its own and padded as the Fuser pads it."""
    import torch

    lms_np = np.empty((len(batch),) + shape, dtype=np.float32)
    pan_np = np.empty((len(batch), plan.grid.pan.count) + shape[1:], dtype=np.float32)
    for j in bands.fill(batch, lms_np, pan_np):
        t = plan.tiles.tile(batch[j])
        lms_np[j], pan_np[j] = reader.tile_inputs(t.y, t.x, t.height, t.width)
    noise = tile_noise_batch(plan.config.seed, 0, batch, shape)
    return torch.from_numpy(lms_np), torch.from_numpy(pan_np), noise  # sharing the arrays' memory


class _SceneBatches:
    """The station's tile source: the batches not yet in the journal, read from the scene's bands
    of tile rows (:class:`TileRowBands`) when the strategy asks for them; a stop request ends
    them (``stopped`` says after how many)."""

    def __init__(
        self,
        plan: ScenePlan,
        reader: SceneReader,
        pending: Sequence[tuple[int, Sequence[int]]],
        should_stop: Callable[[], bool] | None,
    ):
        self.plan, self.reader, self.pending, self.should_stop = plan, reader, pending, should_stop
        self.shape = (plan.grid.bands, plan.tiles.tile_h, plan.tiles.tile_w)
        self.bands = TileRowBands(
            plan,
            reader,
            [b for _, b in pending],
            read_band_pixels(int(plan.config.batch_size or 1), plan.tiles.tile_h, plan.tiles.tile_w),
        )
        self.read_s = 0.0
        self.stopped: int | None = None
        self._lms: dict[int, torch.Tensor] = {}

    def jobs(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        for n, (k, batch) in enumerate(self.pending):
            if self.should_stop is not None and self.should_stop():
                self.stopped = n
                return
            t0 = time.perf_counter()
            lms, pan, noise = _batch_inputs(self.plan, self.bands, self.reader, batch, self.shape)
            self.read_s += time.perf_counter() - t0
            self._lms[k] = lms
            yield k, lms, pan, noise
            del lms, pan, noise

    def take(self, key: int) -> torch.Tensor:
        return self._lms.pop(key)


class _JournalSink:
    """The station's tile sink: each batch's ``lms + residual`` saved to the tile journal (one
    file per tile: any order), with the progress bar and ``tiles_progress`` events."""

    def __init__(self, plan: ScenePlan, journal: Journal, log: EventLog, progress: bool, skipped: int, pending: int):
        from tqdm import tqdm

        self.plan, self.journal, self.log = plan, journal, log
        self.skipped, self.pending = skipped, pending
        self.scene = Path(plan.pan_path).name
        self.done = self.computed = 0
        self.save_s = 0.0
        self.next_report = 0.1
        self.bar = tqdm(
            total=len(plan.batches),
            initial=skipped,
            unit="batch",
            desc=Path(plan.pan_path).stem,
            disable=not progress,
            leave=False,
        )

    def put(self, key: int, lms: torch.Tensor, residual: torch.Tensor) -> None:
        import torch

        t0 = time.perf_counter()
        lms += residual.detach().to("cpu", torch.float32)  # lms + residual: blended, then clamped (the Fuser's)
        self.journal.save_batch(key, lms.numpy())
        self.save_s += time.perf_counter() - t0
        self.computed += len(self.plan.batches[key])
        self.bar.update(1)
        total = len(self.plan.batches)
        frac = (self.skipped + self.done + 1) / max(1, total)
        if frac >= self.next_report or self.done == self.pending - 1:
            self.log.info(
                "tiles_progress",
                scene=self.scene,
                batches_done=self.skipped + self.done + 1,
                batches=total,
                fraction=round(frac, 3),
            )
            self.next_report = math.floor(frac * 10 + 1e-9) / 10 + 0.1
        self.done += 1


def sequential_batches(backend: StationBackend) -> MapBatches:
    """The one-batch-at-a-time strategy for a backend without its own ``map_batches``."""
    return sequential(lambda key, lms, pan, noise: backend.sample_tiles(lms, pan, noise))


def _fuse_tiles(
    plan: ScenePlan,
    backend: StationBackend,
    journal: Journal,
    reader: SceneReader,
    log: EventLog,
    progress: bool,
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    """Fuse the batches not yet in the journal and journal their tiles: the one tile driver
    (:func:`ddif.inference.driver.drive_tiles`) from the scene's bands into the journal, through
    the backend's ``map_batches`` strategy (several batches in flight, e.g.
    :class:`ddif.station.distributed.RayBackend`) or :func:`sequential_batches`. The strategy
    pulls batches as it has room, so only those batches' inputs are held here; each batch's tiles
    are journaled as its residual comes back (in any order). A stop request ends the submissions;
    the batches in flight are still journaled, then :class:`StopRequested` is raised."""
    shape = (plan.grid.bands, plan.tiles.tile_h, plan.tiles.tile_w)
    pending = [(k, b) for k, b in enumerate(plan.batches) if not journal.batch_done(k, shape)]
    journal.close()
    skipped = len(plan.batches) - len(pending)
    source = _SceneBatches(plan, reader, pending, should_stop)
    sink = _JournalSink(plan, journal, log, progress, skipped, len(pending))
    map_batches = getattr(backend, "map_batches", None) or sequential_batches(backend)
    extra: dict[str, Any] = {}
    t_start = time.perf_counter()
    try:
        drive_tiles(source, sink, map_batches, log=log, scene=sink.scene)
        pool_info = getattr(backend, "pool_info", None)
        if pool_info is not None:
            extra["executor"] = pool_info()
        if source.stopped is not None:
            raise StopRequested(f"stop requested after {sink.done} of {len(pending)} pending batches")
    finally:
        sink.bar.close()
    return {
        "batches_from_journal": skipped,
        "tiles_computed": sink.computed,
        "tiles_from_journal": len(plan.fused_tiles) - sink.computed,
        **extra,
        "read_s": source.read_s,
        "fuse_s": time.perf_counter() - t_start - source.read_s - sink.save_s,  # waiting for the backend
        "journal_write_s": sink.save_s,
    }


def _write_product(
    plan: ScenePlan, journal: Journal, reader: SceneReader, path: Path, tags: dict[str, str]
) -> BandStatistics:
    """Assemble the product block by block into a tiled GeoTIFF with overviews at ``path`` (the
    stage of the COG copy: fast compression) and return its per-band statistics. A failure to
    write it (disk full or a file-size limit show as libtiff write / seek errors; the errno only
    reaches GDAL's stderr) is an :class:`OutputWriteError`, not the scene's fault."""
    from ddif.data.raster import import_rasterio

    rasterio = import_rasterio()
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    cfg, g = plan.config, plan.grid
    dtype = np.dtype(g.ms.dtype)
    nodata = plan.nodata
    # the stage is read once by the COG copy and deleted: written uncompressed (no compression
    # pass twice; it is never larger than the tile journal beside it)
    layout = plan.product_bands
    guide_used = any(kind == "guide" for kind, _, _ in layout)
    profile = product_profile(g, nodata, cfg.block_size, "none", 0, count=len(layout))
    stats = BandStatistics(len(layout))

    def load(tile, rows, cols):
        arr = journal.load(tile.index) if plan.tile_valid[tile.index] else None
        return None if arr is None else np.asarray(arr[:, rows, cols], dtype=np.float32)

    k = cfg.block_size
    try:
        with rasterio.open(path, "w", **profile) as dst:
            for i, name in enumerate(_band_names(plan), start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**tags)
            if guide_used:
                dst.update_tags(
                    DDIF_SHARPENED_BANDS=",".join(n for kind, _, n in layout if kind == "fused"),
                    DDIF_PASSED_THROUGH_BANDS=",".join(n for kind, _, n in layout if kind == "guide"),
                )
            for y0 in range(0, g.pan.height, k):
                for x0 in range(0, g.pan.width, k):
                    h, w = min(k, g.pan.height - y0), min(k, g.pan.width - x0)
                    guide, valid = reader.pan_and_valid(y0, x0, h, w)  # one PAN read: mask and pass-through
                    if valid.any():
                        fused, den = blend_window(plan.tiles, y0, x0, h, w, g.bands, load)
                        valid &= den > 0
                    else:
                        fused = np.zeros((g.bands, h, w), dtype=np.float32)
                    block = to_dn(fused, valid, plan.backend["max_dn"], dtype, nodata, cfg.input_offset)
                    if guide_used:
                        block = _with_guide_bands(layout, block, guide, valid, dtype, nodata)
                    stats.add(block, valid)
                    dst.write(block, window=Window(x0, y0, w, h))
            journal.close()
            factors = overview_factors(g.pan.height, g.pan.width, cfg.overview_min_size)
            if factors:
                # nodata-aware: GDAL leaves nodata pixels out of every overview pixel's resampling
                dst.build_overviews(factors, getattr(Resampling, cfg.overview_resampling))
                dst.update_tags(ns="rio_overview", resampling=cfg.overview_resampling)
    except gdal_errors() as exc:
        if isinstance(exc, OutputWriteError):
            raise
        raise OutputWriteError(
            f"{path}: writing the product failed (disk full, file-size limit or I/O error?): {exc}"
        ) from exc
    return stats


def _mtf_gains(plan: ScenePlan) -> str | list[float]:
    """The MS bands' MTF gains for the quality indices: by band name where the model names its
    bands (a band subset of a sensor, e.g. Sentinel-2's 20 m bands), else the sensor's by position."""
    from ddif.data.degradation import sensor_band_gains

    facts = plan.backend
    names = facts.get("band_names") or ()
    if len(names) == plan.grid.bands:
        return list(sensor_band_gains(facts["sensor"], list(names))[0])
    return str(facts["sensor"])


def _with_guide_bands(
    layout: list[tuple[str, int, str]],
    fused: np.ndarray,
    guide: np.ndarray,
    valid: np.ndarray,
    dtype: np.dtype,
    nodata: float,
) -> np.ndarray:
    """A product block in ``layout``'s band order: the fused bands and the guide's own DN (the
    window's PAN read) passed through unchanged (nodata where the product is not valid)."""
    info = np.iinfo(dtype) if dtype.kind in "ui" else None
    block = np.empty((len(layout), *fused.shape[1:]), dtype=dtype)
    for k, (kind, i, _) in enumerate(layout):
        if kind == "fused":
            block[k] = fused[i]
        else:
            band = guide[i] if info is None else np.clip(guide[i], info.min, info.max)
            block[k] = np.where(valid, band, nodata).astype(dtype)
    return block


def _quality(plan: ScenePlan, journal: Journal, reader: SceneReader) -> dict[str, Any]:
    """D_lambda, D_s, HQNR on up to ``metric_tiles`` fully valid tiles (spread over the scene),
    each cropped to whole MS pixels and whole metric blocks."""
    import torch

    from ddif.metrics import full_resolution_metrics

    cfg, g = plan.config, plan.grid
    if cfg.metric_tiles == 0:
        return {"skipped": "metric_tiles = 0"}
    full = [i for i in plan.fused_tiles if plan.tile_valid[i] == plan.tiles.tile_h * plan.tiles.tile_w]
    if not full:
        return {"skipped": "no tile is free of nodata"}
    r = g.ratio
    unit = r * cfg.metric_block // math.gcd(r, cfg.metric_block)

    def window(index: int) -> tuple[int, int, int, int, int, int] | None:
        """The tile's largest crop of whole MS pixels and whole metric blocks, or None."""
        t = plan.tiles.tile(index)
        py = t.y + (g.shift[0] - t.y) % r
        px = t.x + (g.shift[1] - t.x) % r
        ny = (t.y + t.height - py) // unit * unit
        nx = (t.x + t.width - px) // unit * unit
        j0, i0 = (py - g.shift[0]) // r, (px - g.shift[1]) // r
        if ny == 0 or nx == 0 or j0 < 0 or i0 < 0 or j0 + ny // r > g.ms.height or i0 + nx // r > g.ms.width:
            return None
        return py, px, ny, nx, j0, i0

    # up to metric_tiles tiles spread over the scene: from each spread position, the first tile whose
    # crop holds a whole block (an MS grid offset by one PAN pixel leaves some tiles one pixel short)
    n = min(cfg.metric_tiles, len(full))
    starts = sorted({round(i * (len(full) - 1) / max(1, n - 1)) for i in range(n)})
    picks: list[tuple[int, tuple[int, int, int, int, int, int]]] = []
    for start in starts:
        for index in full[start:] + full[:start]:
            found = window(index)
            if found is not None and index not in {p[0] for p in picks}:
                picks.append((index, found))
                break
    per_tile = []
    for index, (py, px, ny, nx, j0, i0) in picks:
        t = plan.tiles.tile(index)
        values = journal.load(index)
        if values is None:
            raise RuntimeError(f"tile {index}: missing from the tile journal {journal.directory} after fusing")
        fused = torch.from_numpy(
            np.clip(np.array(values[:, py - t.y : py - t.y + ny, px - t.x : px - t.x + nx], np.float32), 0, 1)
        )
        ms = torch.from_numpy(reader.ms_lowres(j0, i0, ny // r, nx // r))
        pan = torch.from_numpy(reader.pan_normalised(py, px, ny, nx))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # unknown sensor -> generic MTF, said in the report
            m = full_resolution_metrics(fused, ms, pan, ratio=r, sensor=_mtf_gains(plan), block_size=cfg.metric_block)
        per_tile.append({"tile": index, "pan_window": [py, px, ny, nx], **{key: float(v) for key, v in m.items()}})
    if not per_tile:
        return {"skipped": f"tiles too small for {cfg.metric_block}-pixel metric blocks at ratio {r}"}
    mean = {key: float(np.mean([p[key] for p in per_tile])) for key in ("D_lambda", "D_s", "HQNR")}
    return {
        "sensor": plan.backend["sensor"],
        "block_size": cfg.metric_block,
        "tiles": per_tile,
        "mean": mean,
        "note": "full-resolution indices of single fused tiles (before blending, clamped to [0, 1]), inputs "
        "scaled by max DN",
    }


def write_product_item(
    plan: ScenePlan,
    report: dict[str, Any],
    product: Path,
    quicklook: Path,
    report_path: Path,
    item_path: Path,
    model_id: dict[str, Any] | None,
    inputs: Sequence[Path],
) -> Path:
    """The product's STAC Item (:func:`ddif.station.products.stac_item`), written atomically."""
    from ddif import __version__

    cfg, facts = plan.config, plan.backend
    processing = {
        "software": {"ddif": __version__},
        "level": "L2-pansharpened",
        "lineage": f"DDIF diffusion pansharpening ({facts['preset']}), ddif.station pipeline v{PIPELINE_VERSION}",
        "model_sha256": (model_id or {}).get("sha256"),
        "model": (model_id or {}).get("name"),
        "preset": facts["preset"],
        "steps": facts["steps"],
        "backend": facts["describe"],
        "seed": cfg.seed,
        "tiling": {"tile_size": cfg.tile_size, "overlap": cfg.overlap},
        "ratio": plan.grid.ratio,
        "max_dn": facts["max_dn"],
        "hqnr": report["quality"].get("mean", {}).get("HQNR"),
    }
    item = stac_item(
        product,
        item_id=product.stem,
        assets={"product": product, "quicklook": quicklook, "report": report_path},
        statistics=report["product"]["band_statistics"],
        processing=processing,
        inputs=inputs,
        band_names=_band_names(plan),
        scale=1.0,
    )
    return write_stac_item(item, item_path)


@dataclass
class SceneJob:
    """One scene through the station: what :func:`run_scene` was given, and what each stage adds
    (plan, journal, fusion statistics, band statistics, quicklook, quality, COG validation, times).
    The stages run in order: :func:`_plan_stage`, :func:`_journal_stage`, :func:`_fuse_stage`,
    :func:`_product_stage`, the quality indices, the COG validation, :func:`_report_stage`."""

    ms_path: Path
    pan_path: Path
    outputs: OutputPaths
    backend: StationBackend
    config: StationConfig
    log: EventLog
    model_id: dict[str, Any] | None
    inputs_linked: list[Path]  # where the STAC item's derived_from links point
    progress: bool = False
    should_stop: Callable[[], bool] | None = None
    plan: ScenePlan = None  # type: ignore[assignment]  # set by _plan_stage
    times: dict[str, float] = field(default_factory=dict)
    journal: Journal = None  # type: ignore[assignment]  # set by _journal_stage
    journal_state: dict[str, Any] = field(default_factory=dict)
    fuse_stats: dict[str, Any] = field(default_factory=dict)
    band_stats: BandStatistics | None = None
    quicklook: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    cog: dict[str, Any] = field(default_factory=dict)

    @property
    def scene(self) -> str:
        return self.pan_path.name


def _plan_stage(job: SceneJob) -> None:
    """The plan (made here unless given; a plan made before the backend existed gets its facts),
    refused when no pixel is valid."""
    if job.plan is None:
        job.plan = plan_scene(job.ms_path, job.pan_path, job.backend, job.config, log=job.log)
        job.config = job.plan.config
    elif job.plan.backend["name"] == "not loaded":  # planned (checked) before the backend existed
        facts = model_facts(job.backend, job.config)
        check_tiling(
            facts["tiling"],
            job.plan.config.tile_size,
            job.plan.config.overlap,
            what="the backend",
            fix="the tiles the plan was made for: plan the scene with this backend",
        )
        job.plan.backend = facts
    if job.plan.valid_pixels == 0:
        raise SceneError(
            ALL_NODATA,
            f"scene {job.ms_path} + {job.pan_path}: no pixel is valid in both MS and PAN "
            "(all nodata, or nodata wherever they overlap)",
        )
    keys = ("tiles", "ratio", "ms_shift_pan_px", "subpixel_offset_pan_px", "valid_fraction")
    job.log.info("scene_plan", scene=job.scene, **{k: v for k, v in job.plan.to_dict().items() if k in keys})


def _journal_stage(job: SceneJob) -> None:
    """Open the tile journal: resumed when a run with the same fingerprint was interrupted."""
    plan = job.plan
    fingerprint = {
        "pipeline_version": PIPELINE_VERSION,
        "ms": file_identity(job.ms_path),
        "pan": file_identity(job.pan_path),
        "model": job.model_id or {"backend_preset": plan.backend["preset"]},
        "backend": plan.backend["describe"],
        "steps": plan.backend["steps"],
        "settings": job.config.product_fields(),
    }
    journal_dir = job.outputs.journal
    job.journal = Journal(journal_dir, fingerprint, plan.batches)
    job.journal_state = state = job.journal.open()
    if state["discarded"]:
        job.log.warning("journal_discarded", scene=job.scene, journal=str(journal_dir), reason=state["discarded"])
    job.log.info(
        "journal_open",
        scene=job.scene,
        journal=str(journal_dir),
        resumed=state["resumed"],
        tiles_done=state["tiles_done"],
    )


def _fuse_stage(job: SceneJob, reader: SceneReader) -> None:
    t0 = time.perf_counter()
    job.fuse_stats = _fuse_tiles(job.plan, job.backend, job.journal, reader, job.log, job.progress, job.should_stop)
    job.times["fuse_total_s"] = time.perf_counter() - t0
    job.times.update({k: v for k, v in job.fuse_stats.items() if k.endswith("_s")})


def _product_stage(job: SceneJob, reader: SceneReader) -> None:
    """The product (assembled into a stage GeoTIFF, copied into a COG, verified) and its
    quicklook, the product written atomically under its name."""
    from ddif.utils.io import atomic_path

    plan, config, g = job.plan, job.config, job.plan.grid
    tags = {
        "DDIF_PIPELINE": f"ddif.station v{PIPELINE_VERSION}",
        "DDIF_BACKEND": plan.backend["name"],
        "DDIF_PRESET": str(plan.backend["preset"]),
        "DDIF_STEPS": str(plan.backend["steps"]),
        "DDIF_RATIO": str(g.ratio),
        "DDIF_MAX_DN": f"{plan.backend['max_dn']:g}",
        "DDIF_TILING": f"{config.tile_size}/{config.overlap}/{config.batch_size}/seed{config.seed}",
    }
    t0 = time.perf_counter()
    stage = job.outputs.journal / "product.stage.tif"
    with atomic_path(job.outputs.product) as tmp:
        try:  # the stage (the assembled GeoTIFF before its COG copy) never outlives this block
            job.band_stats = _write_product(plan, job.journal, reader, stage, tags)
            write_cog(
                stage,
                tmp,
                cog_creation_options(
                    config.compress, config.zlevel, config.block_size, g.ms.dtype, config.overview_resampling
                ),
            )
        finally:
            stage.unlink(missing_ok=True)
        verify_product(
            tmp,
            bands=len(plan.product_bands),
            height=g.pan.height,
            width=g.pan.width,
            dtype=g.ms.dtype,
            overviews=overview_factors(g.pan.height, g.pan.width, config.overview_min_size),
        )
        job.times["write_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        lo, hi = config.quicklook_percentiles  # two values (checked by StationConfig)
        job.quicklook = write_quicklook(tmp, job.outputs.quicklook, _product_rgb(plan), config.quicklook_size, (lo, hi))
        job.times["quicklook_s"] = time.perf_counter() - t0


def _report_stage(job: SceneJob) -> dict[str, Any]:
    """The report and the STAC item (each written atomically), the journal removed unless kept."""
    import json

    from ddif.utils.io import atomic_write_text

    plan, config, times, out = job.plan, job.config, job.times, job.outputs
    assert job.band_stats is not None  # set by _product_stage
    tiles_info = dict(plan.to_dict()["tiles"])
    tiles_info.update({k: v for k, v in job.fuse_stats.items() if not k.endswith("_s")})
    report: dict[str, Any] = {
        "scene": {k: v for k, v in plan.to_dict().items() if k not in ("tiles", "backend")},
        "backend": plan.backend_json(),
        "model": job.model_id,
        "config": config.to_dict(),
        "tiles": tiles_info,
        "timing_s": {k: round(v, 4) for k, v in times.items()},
        "throughput": {
            "scene_megapixels": plan.pixels / 1e6,
            "megapixels_per_s": plan.pixels / 1e6 / max(times["total_s"], 1e-9),
            "fused_megapixels_per_s": plan.pixels / 1e6 / max(times["fuse_s"], 1e-9),
        },
        "quality": job.quality,
        "quicklook": job.quicklook,
        "product": {"format": "COG", "cog_validation": job.cog, "band_statistics": job.band_stats.to_list()},
        # relative to the report's folder, so the names stay right when a staging folder is renamed
        "outputs": {
            k: os.path.relpath(p, out.report.parent)
            for k, p in (("product", out.product), ("quicklook", out.quicklook), ("report", out.report))
        },
        "journal": {"path": str(out.journal), "resumed": job.journal_state["resumed"], "kept": config.keep_journal},
    }
    if out.stac_item is not None:
        report["outputs"]["stac_item"] = os.path.relpath(out.stac_item, out.report.parent)
    atomic_write_text(out.report, json.dumps(report, indent=2, default=str) + "\n")
    if out.stac_item is not None:
        write_product_item(
            plan, report, out.product, out.quicklook, out.report, out.stac_item, job.model_id, job.inputs_linked
        )
    if not config.keep_journal:
        job.journal.remove()
    job.log.info(
        "scene_written",
        scene=job.scene,
        product=str(out.product),
        seconds=round(times["total_s"], 3),
        tiles_computed=job.fuse_stats["tiles_computed"],
        tiles_from_journal=job.fuse_stats["tiles_from_journal"],
        hqnr=job.quality.get("mean", {}).get("HQNR"),
    )
    return report


def run_scene(
    ms_path: str | os.PathLike,
    pan_path: str | os.PathLike,
    out_path: str | os.PathLike,
    backend: StationBackend,
    config: StationConfig | None = None,
    *,
    quicklook_path: str | os.PathLike | None = None,
    report_path: str | os.PathLike | None = None,
    journal_dir: str | os.PathLike | None = None,
    log: EventLog | None = None,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    model_id: dict[str, Any] | None = None,
    plan: ScenePlan | None = None,
    stac_path: str | os.PathLike | None = None,
    write_stac: bool = True,
    input_links: Sequence[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Fuse one scene into ``out_path`` (Cloud-Optimized GeoTIFF), ``quicklook_path`` (PNG),
    ``report_path`` (JSON) and a STAC Item (``stac_path``, default ``<out>.json``; its
    ``derived_from`` links point to ``input_links`` when the inputs are about to move, e.g. to an
    archive, else to the inputs), each written atomically. Resumes from ``journal_dir`` (default
    ``.<out>.journal`` beside the output) when a previous run with the same fingerprint was
    interrupted. Returns the report.

    Raises :class:`SceneError` for a bad scene, :class:`StopRequested` when ``should_stop()``
    became true (journal kept), and OSError / rasterio errors from the file system as they are
    (nothing half-written is left under the output names)."""
    if plan is not None:
        config = plan.config  # the plan's tiles and batches were laid out with its config
    config = config or StationConfig()
    outputs = plan_outputs(
        out_path,
        quicklook=quicklook_path,
        report=report_path,
        stac_item=stac_path,
        journal=journal_dir,
        write_stac=write_stac,
    )
    check_outputs(outputs, [ms_path, pan_path])  # before anything is read or written
    job = SceneJob(
        ms_path=Path(ms_path),
        pan_path=Path(pan_path),
        outputs=outputs,
        backend=backend,
        config=config,
        log=log or NullLog(),
        model_id=model_id,
        inputs_linked=[Path(p) for p in (input_links or (ms_path, pan_path))],
        progress=progress,
        should_stop=should_stop,
        plan=plan,  # type: ignore[arg-type]  # planned below when None
    )
    t_start = time.perf_counter()
    _plan_stage(job)
    job.times["plan_s"] = time.perf_counter() - t_start
    _journal_stage(job)
    with (
        gdal_env(job.config.gdal_cache_mb),
        SceneReader(
            job.plan.grid, job.plan.backend["preprocessing"], job.config.input_scale, job.config.input_offset
        ) as reader,
    ):
        _fuse_stage(job, reader)
        _product_stage(job, reader)
        t0 = time.perf_counter()
        job.quality = _quality(job.plan, job.journal, reader)
        job.times["quality_s"] = time.perf_counter() - t0
    job.cog = validate_cog(outputs.product)
    if not job.cog["valid"]:  # GDAL's COG driver wrote it: a failure here is a bug, not a bad scene
        raise RuntimeError(f"{outputs.product}: not a valid Cloud-Optimized GeoTIFF: {job.cog['errors']}")
    job.times["total_s"] = time.perf_counter() - t_start
    return _report_stage(job)
