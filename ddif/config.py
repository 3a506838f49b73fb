"""Dataclass configurations and the published presets.

Every knob of the model, the diffusion process and the training recipe lives here, so that a
checkpoint can carry its full configuration as JSON and the CLI can be generated from the
fields (see :mod:`ddif.cli`). Published values follow Cao et al., "Diffusion model with
disentangled modulations for sharpening multispectral and hyperspectral images",
Information Fusion 104 (2024), arXiv:2304.04774.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    """Architecture of the DDIF denoiser (SR3-style U-Net with CSM and FWM injections)."""

    bands: int = 8  # C: bands of the MS / HS image
    guide_bands: int = 1  # P: 1 for PAN, 3 for RGB
    detail_order: str = "HDV"  # order of the guide's Haar detail bands in the condition
    max_dn: float = 2047.0  # sensor maximum digital number (images are DN / max_dn)
    base_width: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)
    res_blocks: int = 3  # per encoder level; the decoder has res_blocks + 1
    image_size: int = 64  # nominal size that attn_resolutions refers to
    attn_resolutions: tuple[int, ...] = (8,)
    attn_heads: int = 8
    fwm_heads: int = 8
    norm_groups: int = 1
    dropout: float = 0.2
    drop_path: float = 0.2
    self_condition: bool = True

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.bands < 1 or self.guide_bands < 1:
            raise ValueError(f"bands and guide_bands must be >= 1, got {self.bands}, {self.guide_bands}")
        if sorted(self.detail_order) != ["D", "H", "V"]:
            raise ValueError(f"detail_order must be a permutation of 'HDV', got {self.detail_order!r}")
        if self.max_dn <= 0:
            raise ValueError(f"max_dn must be positive, got {self.max_dn}")

    @property
    def num_levels(self) -> int:
        return len(self.channel_mults)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (one stride-2 conv between levels)."""
        return 2 ** (self.num_levels - 1)

    @property
    def coarse_channels(self) -> int:
        return self.bands + self.guide_bands

    @property
    def wavelet_channels(self) -> int:
        return self.bands + 3 * self.guide_bands


@dataclass
class DiffusionConfig:
    """Noise schedule and default sampler."""

    timesteps: int = 500
    schedule: str = "cosine"
    cosine_s: float = 0.008
    max_beta: float = 0.999
    sampler: str = "ddim"
    sample_steps: int = 25
    eta: float = 0.0
    timestep_spacing: str = "leading"  # leading: {0, T/n, 2T/n, ...}, as guided-diffusion's "ddimN"
    # explicit training timesteps of the sampler, descending (e.g. a distilled student's grid);
    # when given, they replace sample_steps / timestep_spacing
    sample_timesteps: tuple[int, ...] = ()
    # Tiled inference: fuse images larger than tile_size in overlapping tiles blended with a
    # smooth partition of unity (0 = whole image). GroupNorm with one group normalises over the
    # whole input, so a model sees different statistics on a large image than on its training
    # patches; sampling in tiles near the training patch size keeps them as trained.
    tile_size: int = 0
    tile_overlap: int = 0
    # What the sampled residual of a tile may carry: "free" (the published sampler: whatever the
    # network gives) or "zero" (its mean per band is removed, tile by tile, before blending). A
    # reduced-resolution reference has the mean of its interpolated MS (the MTF filters keep the
    # mean), so a residual's mean is an error; on scenes unlike its training data a model drifts
    # by a few percent there (WorldView-2, measured: -2.5 % in every band on a held-out tile),
    # and the constraint removes that drift without touching the detail.
    residual_mean: str = "free"

    def __post_init__(self) -> None:
        if self.residual_mean not in ("free", "zero"):
            raise ValueError(f"residual_mean must be 'free' or 'zero', got {self.residual_mean!r}")
        if self.tile_size < 0 or self.tile_overlap < 0 or (self.tile_size and self.tile_overlap >= self.tile_size):
            raise ValueError(
                f"need 0 <= tile_overlap < tile_size (or tile_size 0), got {self.tile_size}, {self.tile_overlap}"
            )
        self.sample_timesteps = tuple(int(t) for t in self.sample_timesteps)
        ts = self.sample_timesteps
        if ts:
            if any(b >= a for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or ts[0] >= self.timesteps:
                raise ValueError(f"sample_timesteps must be strictly descending within [0, {self.timesteps}), got {ts}")
            self.sample_steps = len(ts)


@dataclass
class TrainConfig:
    """Published training recipe (values from the DDIF paper / code)."""

    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 64
    iterations: int = 300_000
    lr_milestones: tuple[int, ...] = (100_000, 200_000, 350_000)
    lr_gamma: float = 0.2
    grad_clip: float = 0.003
    ema_decay: float = 0.995
    ema_start: int = 20_000
    patch_size: int = 64
    # Mixed crop sizes (ddif's tile-size remedy): each step crops the batch to one of these sizes,
    # drawn from (seed, step) so that every rank and every resume agrees, with the batch cut to
    # keep about batch_size x patch_size^2 pixels (patch_size is then the smallest size; at least
    # one crop per step). DDIF's one-group GroupNorm normalises over the whole input, so a model
    # that saw one crop size drifts on others; () = off. The data's patches must be at least as
    # large as the largest size.
    patch_sizes: tuple[int, ...] = ()
    self_cond_prob: float = 0.5
    val_every: int = 5_000
    ckpt_every: int = 5_000
    log_every: int = 100
    num_workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        self.patch_sizes = tuple(int(s) for s in self.patch_sizes)
        if any(s < 1 for s in self.patch_sizes):
            raise ValueError(f"patch_sizes must be positive, got {self.patch_sizes}")

    def step_patch(self, step: int, local_batch: int) -> tuple[int, int]:
        """(crop size, batch) of training step ``step`` (see ``patch_sizes``)."""
        if not self.patch_sizes:
            return self.patch_size, local_batch
        from ddif.utils.seeding import derive_seed

        size = self.patch_sizes[derive_seed(self.seed, step, 2) % len(self.patch_sizes)]
        return size, min(local_batch, max(1, round(local_batch * (self.patch_size / size) ** 2)))


@dataclass
class DataConfig:
    """What the data look like on disk."""

    ratio: int = 4  # MS / PAN resolution ratio
    layout: str = "pancollection"  # "pancollection" (gt/ms/lms/pan) or "hisr" (GT/LRHSI/RGB/HSI_up)
    sensor: str = "wv3"  # for MTF-matched degradation (Wald protocol)
    rgb_bands: tuple[int, ...] = (4, 2, 1)  # true-colour bands for quicklooks (0-based)
    # How the model's inputs were made from DN rasters (ddif.data.scene.Preprocessing): every entry
    # point that reads scenes applies the same. lms = upsample(ms, ratio, interpolation, interp_padding)
    # after nodata holes are filled by fill_iterations 3x3 dilations; images are DN / model.max_dn.
    interpolation: str = "interp23tap"  # or "bicubic" (interp23tap needs a power-of-2 ratio)
    interp_padding: str = "symmetric"  # interp23tap boundary: symmetric, replicate or circular
    fill_iterations: int = 4
    band_names: tuple[str, ...] = ()  # the MS bands in the model's order (e.g. "B2", "B3", "B4"), if known
    # the guide's bands when it is a set of the sensor's own bands (Sentinel-2: "B02", "B03", "B04",
    # "B08"); a product then carries them too, in the sensor's band order (sensors.product_band_layout)
    guide_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.rgb_bands = tuple(int(b) for b in self.rgb_bands)
        self.band_names = tuple(str(b) for b in self.band_names)
        self.guide_names = tuple(str(b) for b in self.guide_names)
        if self.interpolation not in ("interp23tap", "bicubic"):
            raise ValueError(f"interpolation must be interp23tap or bicubic, got {self.interpolation!r}")
        if self.interp_padding not in ("symmetric", "replicate", "circular"):
            raise ValueError(f"interp_padding must be symmetric, replicate or circular, got {self.interp_padding!r}")
        if self.fill_iterations < 0:
            raise ValueError(f"fill_iterations must be >= 0, got {self.fill_iterations}")


@dataclass
class Preset:
    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preset:
        return cls(
            name=d.get("name", "custom"),
            model=_build(ModelConfig, d.get("model", {})),
            diffusion=_build(DiffusionConfig, d.get("diffusion", {})),
            train=_build(TrainConfig, d.get("train", {})),
            data=_build(DataConfig, d.get("data", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> Preset:
        return cls.from_dict(json.loads(text))

    def save_json(self, path: str | Path) -> None:
        from ddif.utils.io import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")


def _build(dc_type, values: dict[str, Any]):
    known = {f.name for f in fields(dc_type)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {dc_type.__name__} fields: {sorted(unknown)}")
    return dc_type(**values)


def _pansharpening(name: str, bands: int, max_dn: float, sensor: str, rgb: tuple[int, ...]) -> Preset:
    return Preset(
        name=name,
        model=ModelConfig(bands=bands, guide_bands=1, detail_order="HDV", max_dn=max_dn),
        data=DataConfig(ratio=4, layout="pancollection", sensor=sensor, rgb_bands=rgb),
    )


def _hyperspectral(name: str) -> Preset:
    # 31 bands 400-700 nm in 10 nm steps: true colour ~ 650 / 550 / 450 nm
    return Preset(
        name=name,
        model=ModelConfig(bands=31, guide_bands=3, detail_order="HVD", max_dn=1.0),
        data=DataConfig(ratio=4, layout="hisr", sensor="none", rgb_bands=(25, 15, 5)),
    )


def _small_rgb() -> Preset:
    """A small 3-band model for the shipped demo (Landsat-8 B2-B4 + synthesised PAN)."""
    return Preset(
        name="landsat_small",
        model=ModelConfig(
            bands=3,
            guide_bands=1,
            detail_order="HDV",
            max_dn=32767.0,
            base_width=16,
            channel_mults=(1, 2, 2),
            res_blocks=1,
            image_size=64,
            attn_resolutions=(),
            dropout=0.0,
            drop_path=0.0,
        ),
        # Sampled in 32 px tiles with 8 px overlap (see DiffusionConfig.tile_size). The shipped
        # checkpoint is fine-tuned on mixed crops of 32-256 px (train.patch_sizes), after which 32,
        # 64, 128 px tiles and whole 256 px images agree within 0.003 ERGAS; 32 px tiles are the
        # cheapest on CPUs (ONNX Runtime, 512^2 scene: 1.2 GiB peak and 14.7 s at 1 thread, against
        # 2.9 GiB and 16.2 s with 128 px tiles, whose FWM attention grows with the tile's area).
        # 2 DDIM steps: within 0.24 DN of 25 steps on five held-out 256 px crops (1 step: 43 DN;
        # the steps study in its model card).
        diffusion=DiffusionConfig(timesteps=500, sample_steps=2, tile_size=32, tile_overlap=8),
        train=TrainConfig(
            lr=5e-4,
            batch_size=16,
            iterations=8000,
            lr_milestones=(6000,),
            grad_clip=1.0,
            ema_decay=0.999,
            ema_start=500,
            patch_size=32,
            val_every=1000,
            ckpt_every=500,
            log_every=50,
            num_workers=0,
        ),
        data=DataConfig(
            ratio=4, layout="pancollection", sensor="landsat8", rgb_bands=(2, 1, 0), band_names=("B2", "B3", "B4")
        ),
    )


def _real_sensor(
    name: str,
    bands: tuple[str, ...],
    max_dn: float,
    ratio: int,
    sensor: str,
    rgb: tuple[int, ...],
    iterations: int,
    lr: float,
    milestone: int,
    guide_bands: int = 1,
    guide_names: tuple[str, ...] = (),
) -> Preset:
    """The shipped models for real sensors: ``landsat_small``'s network (the published architecture
    at a width that samples a scene in seconds on a CPU), trained on a real PAN + MS pair
    degraded many ways (``ddif make-dataset --variants``) in 32 / 64 px crops."""
    p = _small_rgb()
    p.name = name
    p.model.bands = len(bands)
    p.model.guide_bands = guide_bands
    p.model.max_dn = max_dn
    p.diffusion.residual_mean = "zero"
    p.train = TrainConfig(
        lr=lr,
        batch_size=16,
        iterations=iterations,
        lr_milestones=(milestone,),
        grad_clip=1.0,
        ema_decay=0.999,
        ema_start=200,
        patch_size=32,
        patch_sizes=(32, 64),
        val_every=2000,
        ckpt_every=500,
        log_every=50,
        num_workers=0,
    )
    p.data = DataConfig(
        ratio=ratio, layout="pancollection", sensor=sensor, rgb_bands=rgb, band_names=bands, guide_names=guide_names
    )
    return p


_PRESET_FACTORIES = {
    # WorldView-3: 8 bands (coastal, blue, green, yellow, red, red edge, NIR1, NIR2)
    "wv3": lambda: _pansharpening("wv3", 8, 2047.0, "wv3", (4, 2, 1)),
    "gf2": lambda: _pansharpening("gf2", 4, 1023.0, "gf2", (2, 1, 0)),
    "qb": lambda: _pansharpening("qb", 4, 2047.0, "qb", (2, 1, 0)),
    "cave": lambda: _hyperspectral("cave"),
    "harvard": lambda: _hyperspectral("harvard"),
    "landsat_small": _small_rgb,
    # Landsat-8/9 OLI B2, B3, B4 with the real B8 PAN (15 m / 30 m), 16-bit DN
    "landsat8": lambda: _real_sensor(
        "landsat8", ("B2", "B3", "B4"), 65535.0, 2, "landsat8", (2, 1, 0), 8000, 2e-4, 6500
    ),
    # the same with NIR B5 (the PAN does not cover it: its detail is inferred)
    "landsat8_nir": lambda: _real_sensor(
        "landsat8_nir", ("B2", "B3", "B4", "B5"), 65535.0, 2, "landsat8", (2, 1, 0), 8000, 2e-4, 6500
    ),
    # WorldView-2 blue, green, red, NIR1 with its PAN (0.5 m / 2 m), 11-bit DN; fine-tuned
    "worldview2": lambda: _real_sensor(
        "worldview2", ("blue", "green", "red", "nir1"), 2047.0, 4, "wv2", (2, 1, 0), 3000, 1e-4, 2400
    ),
    # Sentinel-2 MSI: the six 20 m bands sharpened to 10 m with the four 10 m bands (B02, B03, B04,
    # B08) as a 4-band guide, ratio 2; DN = reflectance x 10000 (max_dn: reflectance 1); preview
    # bands B11, B8A, B05 (false colour)
    "sentinel2": lambda: _real_sensor(
        "sentinel2",
        ("B05", "B06", "B07", "B8A", "B11", "B12"),
        10000.0,
        2,
        "sentinel2",
        (4, 3, 0),
        6000,
        5e-4,  # trained from scratch (--init transfers a band count, not a guide's)
        5000,
        guide_bands=4,
        guide_names=("B02", "B03", "B04", "B08"),
    ),
}

PUBLISHED_PRESETS = ("wv3", "gf2", "qb", "cave", "harvard")


def preset_names() -> list[str]:
    return list(_PRESET_FACTORIES)


def get_preset(name: str) -> Preset:
    """A fresh copy of a named preset (mutating it does not affect later calls)."""
    try:
        return _PRESET_FACTORIES[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}") from None
