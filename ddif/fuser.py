"""High-level entry point: ``ddif.Fuser(model).fuse(lms, pan)`` -> fused image in [0, 1]."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ddif.diffusion.samplers import make_scheduler
from ddif.diffusion.sampling import _as_generator, sample_residual
from ddif.diffusion.schedule import NoiseSchedule
from ddif.utils.validation import check_image

# Images are DN / max_DN; values far outside [0, 1] mean the caller forgot to normalise.
PLAUSIBLE_RANGE = (-0.5, 3.0)


class Fuser:
    """Fuse an upsampled MS/HS image ``lms`` with its guide ``pan`` (PAN or RGB).

    Any H x W is accepted: inputs are padded (reflect) to the network's multiple and cropped
    back. Batches are processed ``batch_size`` images at a time; the initial noise is drawn for
    the whole batch up front from ``seed`` so that the result does not depend on ``batch_size``
    or on the device.
    """

    def __init__(self, model, sampler: str | None = None, steps: int | None = None, *, eta: float | None = None,
                 use_cache: bool = True, self_condition: bool = True, legacy_published_sampler: bool = False,
                 batch_size: int | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, clip_sample: float | None = None,
                 tile_size: int | None = None, tile_overlap: int | None = None):
        dcfg = model.preset.diffusion
        self.model = model
        if device is not None or dtype is not None:
            self.model = model.to(device=device, dtype=dtype)
        self.model.eval()
        self.schedule = NoiseSchedule.from_config(dcfg)
        self.scheduler = make_scheduler(sampler or dcfg.sampler, self.schedule,
                                        eta=dcfg.eta if eta is None else eta, spacing=dcfg.timestep_spacing,
                                        clip_sample=clip_sample)
        if dcfg.sample_timesteps and steps in (None, len(dcfg.sample_timesteps)):
            self.scheduler.set_timesteps(timesteps=dcfg.sample_timesteps)   # e.g. a distilled student's grid
        else:
            self.scheduler.set_timesteps(int(steps or dcfg.sample_steps))
        self.steps = len(self.scheduler.timesteps)
        self.use_cache = use_cache
        self.self_condition = self_condition
        self.legacy_published_sampler = legacy_published_sampler
        self.batch_size = batch_size
        self.tile_size = dcfg.tile_size if tile_size is None else int(tile_size)
        self.tile_overlap = dcfg.tile_overlap if tile_overlap is None else int(tile_overlap)
        m = model.config.size_multiple
        if self.tile_size and (self.tile_size % m or not 0 <= self.tile_overlap < self.tile_size):
            raise ValueError(f"tile_size must be a multiple of {m} and 0 <= tile_overlap < tile_size, got "
                             f"{self.tile_size}, {self.tile_overlap}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def check_inputs(self, lms: torch.Tensor, pan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        cfg = self.model.config
        return check_fusion_inputs(lms, pan, cfg.bands, cfg.guide_bands, cfg.max_dn, self.model.preset.name)

    @torch.no_grad()
    def fuse(self, lms: torch.Tensor, pan: torch.Tensor, seed: int | None = 0,
             generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
             return_residual: bool = False, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Fused image clamp(lms + residual, 0, 1) with the input's shape ((C,H,W) or (B,C,H,W))."""
        lms, pan, unbatched = self.check_inputs(lms, pan)
        h, w = lms.shape[-2:]
        m = self.model.config.size_multiple
        out_dtype = lms.dtype
        lms_d = pad_to_multiple(lms.to(self.device, self.dtype), m)
        pan_d = pad_to_multiple(pan.to(self.device, self.dtype), m)
        noise = initial_noise(lms_d.shape, m, seed, generator, noise).to(self.device, self.dtype)
        hp, wp = lms_d.shape[-2:]
        if self.tile_size and (hp > self.tile_size or wp > self.tile_size):
            residual = self._sample_tiled(lms_d, pan_d, noise, seed, callback)
        else:
            residual = self._sample(lms_d, pan_d, noise, seed, callback)
        residual = residual[..., :h, :w].to(lms.device, out_dtype)
        result = residual if return_residual else (lms + residual).clamp(0, 1)
        return result[0] if unbatched else result

    def _sample(self, lms, pan, noise, seed, callback) -> torch.Tensor:
        """Residuals of a batch, ``batch_size`` images per network batch."""
        step = self.batch_size or lms.shape[0]
        residuals = []
        for start in range(0, lms.shape[0], step):
            sl = slice(start, start + step)
            residuals.append(sample_residual(
                self.model, lms[sl], pan[sl], self.scheduler, noise=noise[sl], generator=gen_for_steps(seed, start),
                use_cache=self.use_cache, self_condition=self.self_condition,
                legacy_published_sampler=self.legacy_published_sampler, callback=callback))
        return torch.cat(residuals)

    def _sample_tiled(self, lms, pan, noise, seed, callback) -> torch.Tensor:
        """Residuals sampled in overlapping tiles (each with its slice of the image's noise),
        blended with the smooth partition of unity of :class:`ddif.utils.tiling.TileGrid`."""
        from ddif.utils.tiling import TileGrid

        b, _, hp, wp = lms.shape
        grid = TileGrid(hp, wp, self.tile_size, self.tile_overlap)
        tiles = list(grid)
        crop = lambda x: torch.cat([x[..., t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles])  # noqa: E731
        # tile-major stacking: entry k * b + i is tile k of image i
        res = self._sample(crop(lms), crop(pan), crop(noise), seed, callback)
        num = torch.zeros_like(lms, dtype=torch.float32)
        den = torch.zeros((1, 1, hp, wp), dtype=torch.float32, device=lms.device)
        for k, t in enumerate(tiles):
            wgt = torch.from_numpy(grid.weights(t)).to(lms.device)
            num[..., t.y:t.y + t.height, t.x:t.x + t.width] += res[k * b:(k + 1) * b].float() * wgt
            den[..., t.y:t.y + t.height, t.x:t.x + t.width] += wgt
        return (num / den).to(lms.dtype)


def check_fusion_inputs(lms, pan, bands: int, guide_bands: int, max_dn: float,
                        preset_name: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """ValueErrors naming the tensor: wrong bands, mismatched sizes, NaN/Inf, integer or unscaled
    images. Returns (lms, pan) with a batch dimension and whether the input had none."""
    unbatched = isinstance(lms, torch.Tensor) and lms.dim() == 3
    lms = check_image("lms", lms, channels=bands, allow_unbatched=True,
                      channel_what=f"bands for preset '{preset_name}'")
    pan = check_image("pan", pan, channels=guide_bands, allow_unbatched=True, batch=lms.shape[0],
                      spatial=lms.shape[-2:], spatial_of="lms",
                      channel_what="PAN band(s)" if guide_bands == 1 else "guide bands")
    for name, x in (("lms", lms), ("pan", pan)):
        lo, hi = float(x.min()), float(x.max())
        if lo < PLAUSIBLE_RANGE[0] or hi > PLAUSIBLE_RANGE[1]:
            raise ValueError(f"{name}: values span [{lo:g}, {hi:g}], expected images scaled to [0, 1] "
                             f"(divide digital numbers by the sensor's max DN, {max_dn:g} for this preset)")
    return lms, pan, unbatched


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad bottom / right to a multiple of ``m``: reflect where possible, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if (ph < h and pw < w) else "replicate")
    return x


def initial_noise(padded_shape, m: int, seed: int | None = 0, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """x_T for a padded batch: ``noise`` when given (shape-checked), else float32 drawn from
    ``generator`` or a CPU generator seeded with ``seed`` (so every device and backend draws the
    same)."""
    if noise is not None:
        if tuple(noise.shape) != tuple(padded_shape):
            raise ValueError(f"noise: expected shape {tuple(padded_shape)} (padded to a multiple of {m}), "
                             f"got {tuple(noise.shape)}")
        return noise
    gen = generator if generator is not None else _as_generator(seed)
    return torch.randn(tuple(padded_shape), generator=gen, dtype=torch.float32,
                       device=gen.device if gen is not None else "cpu")


def gen_for_steps(seed: int | None, offset: int) -> torch.Generator | None:
    """Generator for the per-step noise of stochastic samplers (DDPM, DDIM with eta > 0)."""
    if seed is None:
        return None
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + offset + 1)
    return g

