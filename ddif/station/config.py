"""Configuration of the ground-station pipeline (one dataclass per job, every knob in one place).

:class:`StationConfig` says how one scene is fused and written (tiling, blending, output format,
quicklook, quality report); :class:`WatchConfig` how the unattended service finds scenes. Both
become command-line options (``ddif station run|watch --tile-size 256 ...``) through
:func:`ddif.cli.args.add_dataclass_args`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ddif.config import Preset
    from ddif.data.raster import Preprocessing
    from ddif.inference.tiling import Tiling

COMPRESSIONS = ("deflate", "lzw", "zstd", "none")
INTERPOLATIONS = ("interp23tap", "bicubic")
PADDINGS = ("symmetric", "replicate", "circular")
MAX_TILE_SIZE = 4096
# Tiles for models that sample whole images (the published presets): a scene must be cut somewhere.
WHOLE_IMAGE_MODEL_TILE = 256


@dataclass
class StationConfig:
    """How one scene is fused and written.

    Sizes are PAN-grid pixels. ``None`` means "as the model was trained": the checkpoint's tile
    size and overlap (:class:`ddif.inference.Tiling`; 256 / 32 px for models that sample whole
    images), its interpolation, boundary padding and hole filling (``preset.data``), so that the
    product equals ``ddif.Fuser``'s output. Everything that changes the product's bytes (tile
    geometry, batch size, seed, preprocessing, compression) is part of the journal's fingerprint,
    so a resume never mixes tiles computed under different settings.
    """

    tile_size: int | None = None  # side of a fused tile (None: the model's tile size)
    overlap: int | None = None  # pixels shared by neighbouring tiles, cross-faded (None: the model's)
    batch_size: int | None = None  # tiles per backend call (None: about 256 k pixels of tiles)
    seed: int = 0  # scene seed; tile k's x_T is drawn from (seed, 0, k), as in ddif.Fuser
    interpolation: str | None = None  # MS -> PAN grid (None: as the model was trained)
    padding: str | None = None  # interp23tap boundary at the scene edge (None: as trained)
    fill_iterations: int | None = None  # 3x3 dilations filling nodata holes before interpolating (None: as trained)
    input_nodata: float | None = None  # nodata of inputs that carry no nodata tag (e.g. 0 for zero-filled scenes)
    input_scale: float | None = None  # DN = file value x input_scale (e.g. 10000 for reflectance in [0, 1])
    # added after the scale (Sentinel-2 from processing baseline 04.00: -1000); the product is written
    # back in the file's convention (DN - offset)
    input_offset: float = 0.0
    block_size: int = 256  # GeoTIFF internal tile; the product is assembled one block at a time
    compress: str = "deflate"
    zlevel: int = 6
    overview_min_size: int = 64  # overviews x2, x4, ... while the overview's long side is >= this
    overview_resampling: str = "average"  # nodata-aware; nearest, bilinear, cubic, mode, ... (GDAL)
    quicklook_size: int = 1024  # long side of the quicklook PNG
    quicklook_percentiles: tuple[float, ...] = (2.0, 98.0)
    metric_tiles: int = 4  # tiles sampled for D_lambda / D_s / HQNR (0 = skip)
    metric_block: int = 32  # block size of the quality indices (toolbox: 32)
    gdal_cache_mb: int = 64  # GDAL block cache: part of the memory bound
    keep_journal: bool = False  # keep the per-tile journal after a successful product
    # MS-to-PAN registration beyond the geotransforms: "check" measures it on a few windows and
    # reports it (a warning when a consistent shift of 0.3 PAN px or more is found), "measure" also
    # corrects the MS placement by it when the windows agree, "off" skips it, "DY,DX" applies a
    # known shift (PAN px)
    registration: str = "check"
    # scenes with more PAN pixels are refused at once (a header can claim any size; planning reads
    # every block): 50,000 x 50,000 by default, above any delivered PAN scene (Landsat: 15,000 px)
    max_scene_pixels: int = 2_500_000_000

    def __post_init__(self) -> None:
        self.quicklook_percentiles = tuple(float(p) for p in self.quicklook_percentiles)
        if self.tile_size is not None and self.tile_size < 16:
            raise ValueError(f"tile_size must be >= 16 pixels, got {self.tile_size}")
        if self.overlap is not None and self.tile_size is not None and not 0 <= self.overlap <= self.tile_size // 2:
            raise ValueError(f"overlap must lie in [0, tile_size/2 = {self.tile_size // 2}], got {self.overlap}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {self.overlap}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.padding is not None and self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.fill_iterations is not None and self.fill_iterations < 0:
            raise ValueError(f"fill_iterations must be >= 0, got {self.fill_iterations}")
        from ddif.data.scale import check_input_scale

        check_input_scale(self.input_scale)
        if self.tile_size is not None and self.tile_size > MAX_TILE_SIZE:
            raise ValueError(
                f"tile_size {self.tile_size} is over {MAX_TILE_SIZE} px: a batch of such tiles would not fit in "
                "memory (the models are trained on 32-256 px tiles; leave --tile-size unset for the model's own)"
            )
        if self.registration.strip().lower() not in ("check", "measure", "off"):
            from ddif.data.dataset_config import parse_registration

            try:
                parse_registration(self.registration)
            except ValueError:
                raise ValueError(
                    f"registration must be check, measure, off or DY,DX (PAN px), got {self.registration!r}"
                ) from None
        if self.max_scene_pixels < 1:
            raise ValueError(f"max_scene_pixels must be >= 1, got {self.max_scene_pixels}")
        if self.block_size < 16 or self.block_size % 16:
            raise ValueError(f"block_size must be a positive multiple of 16 (GeoTIFF tiles), got {self.block_size}")
        if self.compress.lower() not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {COMPRESSIONS}, got {self.compress!r}")
        if not 1 <= self.zlevel <= 9:
            raise ValueError(f"zlevel must lie in [1, 9], got {self.zlevel}")
        if self.overview_min_size < 1 or self.quicklook_size < 16:
            raise ValueError("overview_min_size must be >= 1 and quicklook_size >= 16")
        from ddif.station.products import OVERVIEW_RESAMPLINGS

        if self.overview_resampling not in OVERVIEW_RESAMPLINGS:
            raise ValueError(
                f"overview_resampling must be one of {OVERVIEW_RESAMPLINGS}, got {self.overview_resampling!r}"
            )
        percentiles = self.quicklook_percentiles
        if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(
                f"quicklook_percentiles must be two values 0 <= lo < hi <= 100, got {self.quicklook_percentiles}"
            )
        if self.metric_tiles < 0 or self.metric_block < 2:
            raise ValueError("metric_tiles must be >= 0 and metric_block >= 2")
        if self.gdal_cache_mb < 1:
            raise ValueError(f"gdal_cache_mb must be >= 1, got {self.gdal_cache_mb}")

    def tiling_for(self, preset: Preset) -> Tiling:
        """The tiles a scene is cut into for ``preset``'s model: this config's tile size / overlap,
        else the model's own, else (whole-image models) 256 px tiles with 32 px overlap."""
        from ddif.inference.tiling import Tiling

        tile = self.tile_size
        if tile is None:
            tile = preset.diffusion.tile_size or WHOLE_IMAGE_MODEL_TILE
        return Tiling.for_preset(preset, tile, self.overlap)

    def resolved(self, tiling: Tiling, preprocessing: Preprocessing) -> StationConfig:
        """A copy with every "as the model was trained" (None) replaced by the value used."""
        from dataclasses import replace

        batch = self.batch_size or max(1, (1 << 18) // (tiling.tile_size * tiling.tile_size))
        return replace(
            self,
            tile_size=tiling.tile_size,
            overlap=tiling.overlap,
            batch_size=batch,
            interpolation=preprocessing.interpolation,
            padding=preprocessing.padding,
            fill_iterations=preprocessing.fill_iterations,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def product_fields(self) -> dict[str, Any]:
        """The settings that determine the product's bytes (for the journal fingerprint)."""
        keys = (
            "tile_size",
            "overlap",
            "batch_size",
            "seed",
            "interpolation",
            "padding",
            "fill_iterations",
            "input_nodata",
            "input_scale",
            "block_size",
            "compress",
            "zlevel",
            "overview_min_size",
            "overview_resampling",
            "registration",
        )
        fields = {k: getattr(self, k) for k in keys}
        if self.input_offset:  # only when set: journals written before the field existed still resume
            fields["input_offset"] = self.input_offset
        return fields


@dataclass
class WatchConfig:
    """How ``ddif station watch`` finds complete scenes in the inbox.

    A scene is either a pair ``<scene>_MS.tif`` + ``<scene>_PAN.tif`` (also .tiff, any case) or a
    manifest ``<scene>.manifest.json`` = ``{"ms": "a.tif", "pan": "b.tif"}`` (paths relative to the
    inbox). It is taken when complete: a manifest, or a ``<scene>.ready`` marker, says so at once
    (producers write it last); otherwise both files must keep the same size and mtime over
    ``stable_polls`` consecutive polls.
    """

    poll_interval_s: float = 5.0
    stable_polls: int = 2  # polls with unchanged (size, mtime) before a pair without marker is taken
    orphan_timeout_s: float = 3600.0  # a file whose partner never comes is quarantined after this long
    retry_backoff_s: float = 60.0  # wait before retrying a scene that failed on disk / permission errors
    max_attempts: int = 3  # processing errors (not bad input) before a scene is quarantined
    # scenes fused at once (each in its own thread; their tile batches share the backend): > 1 only
    # with a backend that takes concurrent scenes (Ray), so that one scene's product writing
    # overlaps with another scene's batches on the actors
    scenes_in_flight: int = 1

    def __post_init__(self) -> None:
        if self.poll_interval_s < 0 or self.stable_polls < 1 or self.max_attempts < 1 or self.scenes_in_flight < 1:
            raise ValueError(
                "poll_interval_s must be >= 0, stable_polls >= 1, max_attempts >= 1, scenes_in_flight >= 1"
            )
        if self.orphan_timeout_s < 0 or self.retry_backoff_s < 0:
            raise ValueError("orphan_timeout_s and retry_backoff_s must be >= 0")
