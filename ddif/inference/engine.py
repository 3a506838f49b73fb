"""The one inference path: input checks, padding, tiling, per-tile noise, batching, blending.

A *tile sampler* (the backend) only runs the fixed-step sampler on a batch of equally sized tiles:
``sample_batch(lms, pan, noise) -> residual``, float32 (N, C, h, w). :class:`TorchTileSampler`
does it with the PyTorch network (any scheduler, condition cache, self-conditioning); the ONNX
Runtime and TensorRT backends of :mod:`ddif.runtime` run an exported graph of the same sampler.
:class:`InferencePath` does everything else, identically for every backend:

1. check the inputs (bands, sizes, NaN/Inf, scale) and give them a batch dimension;
2. lay each image out with :class:`ddif.inference.tiling.Tiling` (pad, cut into tiles);
3. draw each tile's x_T from ``(seed, image, tile)``;
4. send tiles to the sampler ``batch_size`` at a time;
5. per tile ``lms + residual`` (or the residual), blended with
   :func:`ddif.utils.tiling.blend_window`, cropped, clamped to [0, 1].

The ground station does steps 2-5 on a scene read by windows with the same functions, so its
product equals ``ddif.Fuser``'s output for the same scene.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ddif.diffusion.sampling import sample_residual
from ddif.inference.tiling import Tiling, pad_to, step_generator, tile_noise
from ddif.utils.tiling import Tile, TileGrid, blend_window
from ddif.utils.validation import check_image

if TYPE_CHECKING:
    from ddif.diffusion.samplers import _RespacedScheduler
    from ddif.models.ddif import DDIF

# Images are DN / max_DN; values far outside [0, 1] mean the caller forgot to normalise.
PLAUSIBLE_RANGE = (-0.5, 3.0)


class TileSampler(Protocol):
    """A backend: the fixed-step sampler on a batch of tiles (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def stochastic(self) -> bool:
        """Whether a tile's result depends on per-step noise (then ``generators`` are passed)."""
        ...

    def sample_batch(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor: ...


class TorchTileSampler:
    """The PyTorch network under a scheduler (:func:`ddif.diffusion.sample_residual`)."""

    name = "pytorch"

    def __init__(
        self,
        model: DDIF,
        scheduler: _RespacedScheduler,
        *,
        use_cache: bool = True,
        self_condition: bool = True,
        legacy_published_sampler: bool = False,
    ):
        self.model = model
        self.scheduler = scheduler
        self.use_cache = use_cache
        self.self_condition = self_condition
        self.legacy_published_sampler = legacy_published_sampler

    @property
    def stochastic(self) -> bool:
        return self.scheduler.adds_noise()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def sample_batch(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        dev, dt = self.device, self.dtype
        residual = sample_residual(
            self.model,
            lms.to(dev, dt),
            pan.to(dev, dt),
            self.scheduler,
            noise=noise.to(dev, dt),
            generator=None if generators is None else list(generators),
            use_cache=self.use_cache,
            self_condition=self.self_condition,
            legacy_published_sampler=self.legacy_published_sampler,
        )
        return residual.to("cpu", torch.float32)


def check_fusion_inputs(
    lms: object, pan: object, bands: int, guide_bands: int, max_dn: float, preset_name: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """ValueErrors naming the tensor: wrong bands, mismatched sizes, NaN/Inf, integer or unscaled
    images. Returns (lms, pan) with a batch dimension and whether the input had none."""
    unbatched = isinstance(lms, torch.Tensor) and lms.dim() == 3
    lms = check_image(
        "lms", lms, channels=bands, allow_unbatched=True, channel_what=f"bands for preset '{preset_name}'"
    )
    pan = check_image(
        "pan",
        pan,
        channels=guide_bands,
        allow_unbatched=True,
        batch=lms.shape[0],
        spatial=lms.shape[-2:],
        spatial_of="lms",
        channel_what="PAN band(s)" if guide_bands == 1 else "guide bands",
    )
    for name, x in (("lms", lms), ("pan", pan)):
        lo, hi = float(x.min()), float(x.max())
        if lo < PLAUSIBLE_RANGE[0] or hi > PLAUSIBLE_RANGE[1]:
            raise ValueError(
                f"{name}: values span [{lo:g}, {hi:g}], expected images scaled to [0, 1] "
                f"(divide digital numbers by the sensor's max DN, {max_dn:g} for this preset)"
            )
    return lms, pan, unbatched


class InferencePath:
    """``fuse(lms, pan, seed)`` over any :class:`TileSampler` (see the module docstring).

    ``batch_size`` is the number of tiles per sampler call (default: about 1 Mpx of tiles).
    """

    def __init__(
        self,
        sampler: TileSampler,
        *,
        bands: int,
        guide_bands: int,
        max_dn: float,
        preset_name: str,
        tiling: Tiling,
        batch_size: int | None = None,
    ):
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.bands, self.guide_bands, self.max_dn = int(bands), int(guide_bands), float(max_dn)
        self.preset_name = preset_name
        self.tiling = tiling
        self.batch_size = None if batch_size is None else int(batch_size)

    def check_inputs(self, lms: object, pan: object) -> tuple[torch.Tensor, torch.Tensor, bool]:
        return check_fusion_inputs(lms, pan, self.bands, self.guide_bands, self.max_dn, self.preset_name)

    def sample_tiles(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        """The sampler on tiles, ``batch_size`` at a time: float32 CPU residuals (N, C, h, w)."""
        step = self.batch_size or self.tiling.default_batch(*lms.shape[-2:])
        parts = []
        for i in range(0, lms.shape[0], step):
            gens = None if generators is None else generators[i : i + step]
            parts.append(self.sampler.sample_batch(lms[i : i + step], pan[i : i + step], noise[i : i + step], gens))
        return torch.cat(parts)

    @torch.no_grad()
    def fuse(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        seed: int | None = 0,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_residual: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Fused image clamp(lms + residual, 0, 1) (or the residual), shaped like ``lms`` ((C, H, W)
        or (B, C, H, W)), on ``lms``'s device and dtype.

        ``noise`` (B, C, Hp, Wp) at the padded size replaces the per-tile x_T (each tile takes its
        window of it); ``generator`` draws such a ``noise`` instead of the seed. ``callback(done,
        total)`` is called with the number of tiles done after every sampler call.
        """
        lms4, pan4, unbatched = self.check_inputs(lms, pan)
        b, c, h, w = lms4.shape
        grid = self.tiling.grid(h, w)
        hp, wp = grid.height, grid.width
        lms_p = pad_to(lms4.detach().to("cpu", torch.float32), hp, wp)
        pan_p = pad_to(pan4.detach().to("cpu", torch.float32), hp, wp)
        if generator is not None and noise is None:
            noise = torch.randn((b, c, hp, wp), generator=generator, dtype=torch.float32, device=generator.device).cpu()
        if noise is not None and tuple(noise.shape) != (b, c, hp, wp):
            raise ValueError(
                f"noise: expected shape {(b, c, hp, wp)} (the input padded for "
                f"{self.tiling.describe()}), got {tuple(noise.shape)}"
            )
        tiles = list(grid)
        jobs = [(i, t) for i in range(b) for t in tiles]
        step = self.batch_size or self.tiling.default_batch(h, w)
        stochastic = bool(getattr(self.sampler, "stochastic", False))
        values: dict[tuple[int, int], np.ndarray] = {}
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            lms_t, pan_t = _cut(lms_p, chunk), _cut(pan_p, chunk)
            if noise is not None:
                x_t = _cut(noise.detach().to("cpu", torch.float32), chunk)
            else:
                x_t = torch.stack([tile_noise(seed, i, t.index, (c, t.height, t.width)) for i, t in chunk])
            gens = [step_generator(seed, i, t.index) for i, t in chunk] if stochastic else None
            residual = self.sampler.sample_batch(lms_t, pan_t, x_t, gens)
            out = residual if return_residual else lms_t + residual
            for k, (i, t) in enumerate(chunk):
                values[(i, t.index)] = out[k].numpy()
            if callback is not None:
                callback(min(start + step, len(jobs)), len(jobs))

        def image_tiles(i: int) -> Callable[[Tile, slice, slice], np.ndarray]:
            return lambda t, rows, cols: values[(i, t.index)][:, rows, cols]

        images = [blend_tiles(grid, c, image_tiles(i))[:, :h, :w] for i in range(b)]
        result = torch.from_numpy(np.stack(images))
        if not return_residual:
            result = result.clamp(0, 1)
        result = result.to(lms4.device, lms4.dtype)
        return result[0] if unbatched else result


def _cut(x: torch.Tensor, chunk: Sequence[tuple[int, Tile]]) -> torch.Tensor:
    """The windows of ``chunk``'s (image, tile) pairs in ``x`` (B, C, H, W), stacked."""
    return torch.stack([x[i, :, t.y : t.y + t.height, t.x : t.x + t.width] for i, t in chunk])


def blend_tiles(grid: TileGrid, bands: int, load: Callable[[Tile, slice, slice], np.ndarray | None]) -> np.ndarray:
    """The whole grid blended (bands, H, W) float32 from ``load(tile, rows, cols)``."""
    blended, _ = blend_window(grid, 0, 0, grid.height, grid.width, bands, load)
    return blended


__all__ = ["TileSampler", "TorchTileSampler", "InferencePath", "check_fusion_inputs", "blend_tiles", "PLAUSIBLE_RANGE"]
