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
5. per tile ``lms + residual`` (or the residual), blended with the weights of
   :func:`ddif.utils.tile_grid.blend_window`, cropped, clamped to [0, 1].

Steps 2-5 run on the sampler's device (a GPU model's tiles never travel to the host): tiles are
cut by stacking views, x_T comes from the counter-based generator for a whole batch at once, and
the blend is separable (a few large operations per tile row and column).

The ground station does steps 2-5 on a scene read by windows with the same functions, so its
product equals ``ddif.Fuser``'s output for the same scene.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ddif.diffusion.sampling import sample_residual
from ddif.inference.driver import drive_tiles, sequential
from ddif.inference.tiling import DEFAULT_BATCH_PIXELS, Tiling, pad_to, step_generator, tile_noise_batch
from ddif.utils.tile_grid import Tile, TileGrid, blend_window
from ddif.utils.validation import check_image

if TYPE_CHECKING:
    from ddif.diffusion.samplers import RespacedScheduler
    from ddif.models.ddif import DDIF

# Images are DN / max_DN; values far outside [0, 1] mean the caller forgot to normalise.
# Inputs are DN / max DN: [0, 1], plus the over- and undershoot of the interpolators at sharp
# edges (interp23tap rings by up to ~10 % of the local contrast next to saturated or zero pixels:
# -0.11 measured on WorldView-2). Values beyond PLAUSIBLE_RANGE, or more than OUT_OF_RANGE_FRACTION
# of them outside [0, 1] by more than 2 % (an image scaled to [1, 3], or shifted negative), are
# another scale, not images of this model.
PLAUSIBLE_RANGE = (-0.25, 1.25)
OUT_OF_RANGE_FRACTION = 0.01


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


AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class TorchTileSampler:
    """The PyTorch network under a scheduler (:func:`ddif.diffusion.sample_residual`).

    Fast-path options (all off by default; the result is the fp32 eager result up to the stated
    tolerance):

    - ``amp``: ``"bf16"`` / ``"fp16"`` autocast of the network (convolutions and attention in
      half precision, accumulation, normalisation and the sampler's update in fp32);
    - ``channels_last``: the network and its inputs in NHWC memory layout;
    - ``compile``: the denoiser under ``torch.compile`` (inductor with weight freezing, for
      inference; CPU and CUDA; compiling costs tens of seconds on first use);
    - ``cuda_graphs``: on CUDA, the whole fixed-step sampler for a batch of tiles captured once in
      a CUDA graph and replayed (the last, partial batch is padded to the captured size); on a
      CPU, or for a stochastic sampler, it falls back to eager with one warning.
    """

    name = "pytorch"

    def __init__(
        self,
        model: DDIF,
        scheduler: RespacedScheduler,
        *,
        use_cache: bool = True,
        self_condition: bool = True,
        legacy_published_sampler: bool = False,
        amp: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        cuda_graphs: bool = False,
    ):
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}")
        self.model = model
        self.scheduler = scheduler
        self.use_cache = use_cache
        self.self_condition = self_condition
        self.legacy_published_sampler = legacy_published_sampler
        self.amp = amp
        self.channels_last = channels_last
        if channels_last:
            # nn.Module.to accepts memory_format at run time; torch's stubs omit it
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.network: DDIF = torch.compile(model, dynamic=False) if compile else model  # type: ignore[assignment]
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        self._graph_fallback_said = False

    @property
    def stochastic(self) -> bool:
        return self.scheduler.adds_noise()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if self.amp is not None:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.amp]))
        if self.network is not self.model:
            import torch._inductor.config as inductor_config

            # inference-only graphs: weights folded in as constants (CPU: 1.16x -> 1.28x per step at 256^2)
            stack.enter_context(inductor_config.patch(freezing=True))
        return stack

    def _sample(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: list[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        with self._autocast():
            return sample_residual(
                self.network,
                lms,
                pan,
                self.scheduler,
                noise=noise,
                generator=generators,
                use_cache=self.use_cache,
                self_condition=self.self_condition,
                legacy_published_sampler=self.legacy_published_sampler,
            )

    @torch.no_grad()
    def sample_batch(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        lms_d, pan_d, noise_d = self._prepare(lms), self._prepare(pan), noise.to(self.device, torch.float32)
        if self.cuda_graphs and self._graphs_apply():
            residual = self._replay(lms_d, pan_d, noise_d)
        else:
            gens = None if generators is None else list(generators)
            residual = self._sample(lms_d, pan_d, noise_d, gens)
        return residual.float()  # on the model's device: the inference path blends there

    # ---- CUDA graphs
    def _graphs_apply(self) -> bool:
        reason = None
        if self.device.type != "cuda":
            reason = f"the model is on {self.device}, CUDA graphs need a CUDA device"
        elif self.stochastic:
            reason = "the sampler draws per-step noise"
        if reason is not None and not self._graph_fallback_said:
            warnings.warn(f"cuda_graphs=True: sampling eagerly ({reason})", RuntimeWarning, stacklevel=3)
            self._graph_fallback_said = True
        return reason is None

    def _replay(self, lms: torch.Tensor, pan: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The fixed-step sampler captured once per (batch, tile) shape and replayed: inputs are
        copied into the graph's static buffers; a smaller batch is padded to the captured one."""
        n = lms.shape[0]
        cap = max((k[0][0] for k in self._graphs if k[0][1:] == tuple(lms.shape[1:])), default=0)
        if 0 < n < cap:
            pad = cap - n
            lms, pan, noise = (torch.cat([t, t[-1:].expand(pad, *t.shape[1:])]) for t in (lms, pan, noise))
        key = (tuple(lms.shape), tuple(pan.shape), lms.dtype, lms.is_contiguous(memory_format=torch.channels_last))
        if key not in self._graphs:
            static = [lms.clone(), pan.clone(), noise.clone()]
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: allocator pools, cuDNN / Triton autotuning
                    self._sample(static[0], static[1], static[2])
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._sample(static[0], static[1], static[2])
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        for buf, src in zip(static, (lms, pan, noise)):
            buf.copy_(src)
        graph.replay()
        return out[:n].clone()

    def preferred_batch(self, tile_shape: tuple[int, int]) -> int | None:
        """Tiles per call that fill the GPU: measured with one and two tiles (peak memory),
        scaled to 80 % of the free memory (at most 4096); None off CUDA (the caller's pixel
        budget then applies)."""
        if self.device.type != "cuda":
            return None
        bands, guide = self.model.config.bands, self.model.config.guide_bands
        peaks = []
        for b in (1, 2):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            shape = (b, bands, *tile_shape)
            with torch.no_grad():
                self._sample(
                    self._prepare(torch.zeros(shape)),
                    self._prepare(torch.zeros((b, guide, *tile_shape))),
                    torch.zeros(shape, device=self.device),
                )
            torch.cuda.synchronize(self.device)
            peaks.append(torch.cuda.max_memory_allocated(self.device) - base)
        per_tile = max(peaks[1] - peaks[0], 1)
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(1, min(4096, (0.8 * free - peaks[0]) // per_tile)))


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
        outside = float(((x < -0.02) | (x > 1.02)).float().mean()) if lo < -0.02 or hi > 1.02 else 0.0
        if lo < PLAUSIBLE_RANGE[0] or hi > PLAUSIBLE_RANGE[1] or outside > OUT_OF_RANGE_FRACTION:
            raise ValueError(
                f"{name}: values span [{lo:g}, {hi:g}], expected images scaled to [0, 1] "
                f"(divide digital numbers by the sensor's max DN, {max_dn:g} for this preset)"
            )
    return lms, pan, unbatched


class InferencePath:
    """``fuse(lms, pan, seed)`` over any :class:`TileSampler` (see the module docstring).

    ``batch_size`` is the number of tiles per sampler call (default: what the sampler says fills its
    device, else about 32 k pixels of tiles, :data:`ddif.inference.tiling.DEFAULT_BATCH_PIXELS`).
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
        residual_mean: str = "free",
    ):
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if residual_mean not in ("free", "zero"):
            raise ValueError(f"residual_mean must be 'free' or 'zero', got {residual_mean!r}")
        self.residual_mean = residual_mean
        self.sampler = sampler
        self.bands, self.guide_bands, self.max_dn = int(bands), int(guide_bands), float(max_dn)
        self.preset_name = preset_name
        self.tiling = tiling
        self.batch_size = None if batch_size is None else int(batch_size)
        self._auto_batch: dict[tuple[int, ...], int] = {}

    def check_inputs(self, lms: object, pan: object) -> tuple[torch.Tensor, torch.Tensor, bool]:
        return check_fusion_inputs(lms, pan, self.bands, self.guide_bands, self.max_dn, self.preset_name)

    def _batch_for(self, tile_shape: tuple[int, ...]) -> int:
        """Tiles per sampler call: ``batch_size``, else what the sampler says fills its device,
        else about 32 k pixels of tiles (small batches stay in a CPU's caches)."""
        if self.batch_size:
            return self.batch_size
        key = tuple(tile_shape)
        if key not in self._auto_batch:
            preferred = getattr(self.sampler, "preferred_batch", None)
            chosen = preferred((int(key[0]), int(key[1]))) if callable(preferred) else None
            self._auto_batch[key] = int(chosen) if chosen else max(1, DEFAULT_BATCH_PIXELS // (key[0] * key[1]))
        return self._auto_batch[key]

    def sample_tiles(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        """The sampler on tiles, ``batch_size`` at a time: float32 CPU residuals (N, C, h, w)."""
        step = self._batch_for(tuple(lms.shape[-2:]))
        parts = []
        for i in range(0, lms.shape[0], step):
            gens = None if generators is None else generators[i : i + step]
            residual = self.sampler.sample_batch(lms[i : i + step], pan[i : i + step], noise[i : i + step], gens)
            parts.append(self.constrain(residual).to("cpu", torch.float32))
        return torch.cat(parts)

    def constrain(self, residual: torch.Tensor) -> torch.Tensor:
        """The model's residual constraint (``preset.diffusion.residual_mean``): "zero" removes each
        tile's per-band mean, so a tile's fusion keeps its interpolated MS's mean."""
        if self.residual_mean == "zero":
            return residual - residual.mean(dim=(-2, -1), keepdim=True)
        return residual

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
        first_image: int = 0,
    ) -> torch.Tensor:
        """Fused image clamp(lms + residual, 0, 1) (or the residual), shaped like ``lms`` ((C, H, W)
        or (B, C, H, W)), on ``lms``'s device and dtype. Image i's tiles draw their noise from
        ``(seed, first_image + i, tile)``: a set fused in chunks (``first_image`` = the chunk's
        start) gives what it gives fused at once.

        ``noise`` (B, C, Hp, Wp) at the padded size replaces the per-tile x_T (each tile takes its
        window of it); ``generator`` draws such a ``noise`` instead of the seed. ``callback(done,
        total)`` is called with the number of tiles done after every sampler call.
        """
        lms4, pan4, unbatched = self.check_inputs(lms, pan)
        b, c, h, w = lms4.shape
        grid = self.tiling.grid(h, w)
        hp, wp = grid.height, grid.width
        device = self._device()
        lms_p = pad_to(lms4.detach().to(device, torch.float32), hp, wp)
        pan_p = pad_to(pan4.detach().to(device, torch.float32), hp, wp)
        if generator is not None and noise is None:
            noise = torch.randn((b, c, hp, wp), generator=generator, dtype=torch.float32, device=generator.device)
        if noise is not None and tuple(noise.shape) != (b, c, hp, wp):
            raise ValueError(
                f"noise: expected shape {(b, c, hp, wp)} (the input padded for "
                f"{self.tiling.describe()}), got {tuple(noise.shape)}"
            )
        layout = _TileLayout(grid, b, device)
        step = self._batch_for(self.tiling.tile_shape(h, w))
        th, tw = grid.tile_h, grid.tile_w
        values = torch.empty((layout.jobs, c, th, tw), dtype=torch.float32, device=device)
        x_noise = None if noise is None else noise.detach().to(device, torch.float32)
        source = _ImageTiles(layout, lms_p, pan_p, x_noise, seed, first_image, step)
        stochastic = bool(getattr(self.sampler, "stochastic", False))

        def sample(key: int, lms_t: torch.Tensor, pan_t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
            gens = source.generators(key, len(lms_t)) if stochastic else None
            return self.constrain(self.sampler.sample_batch(lms_t, pan_t, x_t, gens).to(device, torch.float32))

        drive_tiles(source, _BlendBuffer(values, return_residual, callback), sequential(sample))
        result = layout.blend(values, c)[:, :, :h, :w]  # our own buffer: clamped in place
        if not return_residual:
            result = result.clamp_(0, 1)
        result = result.contiguous().to(lms4.device, lms4.dtype)
        return result[0] if unbatched else result

    def _device(self) -> torch.device:
        """Where tiles are cut, noised and blended: the sampler's device (a GPU model's tiles never
        travel to the host), else the CPU."""
        device = getattr(self.sampler, "device", None)
        return device if isinstance(device, torch.device) else torch.device("cpu")


PREP_PIXELS = 1 << 20  # tile pixels whose inputs and noise InferencePath.fuse prepares at once
BLEND_STRIP_BYTES = 32 << 20  # x-blended tile-row bands held at once by _TileLayout.blend


class _ImageTiles:
    """The tile source of :meth:`InferencePath.fuse`: jobs (image-major, tiles in index order) cut
    from the padded images and noised for groups of whole sampler batches of about PREP_PIXELS
    (fewer, larger tensor operations: the noise of 1024 tiles in one draw), then handed out a
    batch at a time (key: the batch's first job). A tile's noise is keyed by (seed, image, tile),
    so the grouping changes nothing."""

    def __init__(
        self,
        layout: _TileLayout,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor | None,
        seed: int | None,
        first_image: int,
        step: int,
    ):
        self.layout, self.lms, self.pan, self.noise = layout, lms, pan, noise
        self.seed, self.first_image, self.step = seed, first_image, step
        th, tw = layout.grid.tile_h, layout.grid.tile_w
        self.group = step * max(1, PREP_PIXELS // (step * th * tw))
        self._lms: dict[int, torch.Tensor] = {}

    def jobs(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        layout, c = self.layout, self.lms.shape[1]
        shape = (c, layout.grid.tile_h, layout.grid.tile_w)
        for g0 in range(0, layout.jobs, self.group):
            g_jobs = slice(g0, min(g0 + self.group, layout.jobs))
            lms_g, pan_g = layout.cut(self.lms, g_jobs), layout.cut(self.pan, g_jobs)
            if self.noise is not None:
                x_g = layout.cut(self.noise, g_jobs)
            else:  # one counter-based draw for the group's tiles, on the device
                images = [self.first_image + i for i in layout.image_list(g_jobs)]
                x_g = tile_noise_batch(self.seed, images, layout.tile_list(g_jobs), shape, device=layout.device)
            for start in range(0, g_jobs.stop - g0, self.step):
                part = slice(start, min(start + self.step, g_jobs.stop - g0))
                self._lms[g0 + start] = lms_g[part]
                yield g0 + start, lms_g[part], pan_g[part], x_g[part]

    def take(self, key: int) -> torch.Tensor:
        return self._lms.pop(key)

    def generators(self, key: int, n: int) -> list[torch.Generator | None]:
        """Per-step generators of a stochastic sampler for the batch starting at job ``key``."""
        jobs = slice(key, key + n)
        images, tiles = self.layout.image_list(jobs), self.layout.tile_list(jobs)
        return [step_generator(self.seed, self.first_image + i, t) for i, t in zip(images, tiles)]


class _BlendBuffer:
    """The tile sink of :meth:`InferencePath.fuse`: each batch's ``lms + residual`` (or the
    residual) written into its rows of the jobs' buffer, blended once every batch is in."""

    def __init__(self, values: torch.Tensor, residual_only: bool, callback: Callable[[int, int], None] | None):
        self.values, self.residual_only, self.callback = values, residual_only, callback

    def put(self, key: int, lms: torch.Tensor, residual: torch.Tensor) -> None:
        rows = slice(key, key + len(residual))
        if self.residual_only:
            self.values[rows] = residual
        else:  # lms + residual written straight into the batch's rows
            torch.add(lms, residual, out=self.values[rows])
        if self.callback is not None:
            self.callback(rows.stop, len(self.values))


class _TileLayout:
    """Every (image, tile) job of a batch of images on one tile grid, cut and blended on the
    device (the blend with a few large tensor operations per tile row and column, not per tile).

    Jobs run image-major, tiles in index order (the noise key of job k is (image, tile)). A chunk
    of jobs is cut by one stacking copy of its windows. The blend uses that the weights are
    separable (``TileGrid.weights`` = w_row(y) x w_col(x)): each tile row is first blended along
    x into a band of the image's width, then the bands along y, and the result divided by the
    summed weights, the product of the two axes' sums. So it is
    :func:`ddif.utils.tile_grid.blend_window`'s blend up to float rounding, with a fixed order of
    additions: deterministic on every device and independent of the batch size."""

    def __init__(self, grid: TileGrid, images: int, device: torch.device):
        self.grid, self.images, self.device = grid, images, device
        self.nr, self.nc = grid.shape
        self.jobs = images * self.nr * self.nc
        self._col_index: torch.Tensor | None = None  # every tile's PAN columns, tile after tile

    def image_list(self, jobs: slice) -> list[int]:
        return [j // (self.nr * self.nc) for j in range(jobs.start, jobs.stop)]

    def tile_list(self, jobs: slice) -> list[int]:
        return [j % (self.nr * self.nc) for j in range(jobs.start, jobs.stop)]

    def cut(self, x: torch.Tensor, jobs: slice) -> torch.Tensor:
        """(n, C, th, tw): the windows of the jobs' tiles in ``x`` (B, C, H, W). Per run of the
        jobs' tiles in one tile row: one ``index_select`` of the row band's columns (every tile's
        columns, side by side) viewed as tiles, so the work per tile row is a few tensor
        operations whatever its number of tiles (the origins are evenly spread, not on one
        stride, so ``unfold`` does not apply)."""
        g, per_image = self.grid, self.nr * self.nc
        th, tw = g.tile_h, g.tile_w
        if self._col_index is None or self._col_index.device != x.device:
            cols = torch.tensor(g.cols, dtype=torch.int64)
            self._col_index = (cols[:, None] + torch.arange(tw)[None, :]).reshape(-1).to(x.device)
        parts = []
        j = jobs.start
        while j < jobs.stop:
            image, tile = divmod(j, per_image)
            r, c0 = divmod(tile, self.nc)
            c1 = min(self.nc, c0 + (jobs.stop - j))  # this run: tiles c0 .. c1 - 1 of row r
            y0 = g.rows[r]
            band = x[image, :, y0 : y0 + th]  # (C, th, W), a view
            picked = band.index_select(-1, self._col_index[c0 * tw : c1 * tw])  # (C, th, n * tw)
            parts.append(picked.view(x.shape[1], th, c1 - c0, tw).permute(2, 0, 1, 3))
            j += c1 - c0
        return torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()

    def blend(self, values: torch.Tensor, bands: int) -> torch.Tensor:
        """(B, C, H, W) blend of ``values`` (jobs, C, th, tw)."""
        g, dev = self.grid, self.device
        th, tw = g.tile_h, g.tile_w
        wy = torch.from_numpy(np.stack(g._wy)).to(dev)  # (nr, th) float32
        wx = torch.from_numpy(np.stack(g._wx)).to(dev)  # (nc, tw)
        v = values.view(self.images, self.nr, self.nc, bands, th, tw)
        den_x = torch.zeros(g.width, dtype=torch.float32, device=dev)
        for c, x0 in enumerate(g.cols):
            den_x[x0 : x0 + tw] += wx[c]
        out = torch.zeros((self.images, bands, g.height, g.width), dtype=torch.float32, device=dev)
        den_y = torch.zeros(g.height, dtype=torch.float32, device=dev)
        # tile rows in groups whose x-blended bands take about BLEND_STRIP_BYTES (one buffer,
        # reused): the same additions in the same order as all rows at once
        row_bytes = self.images * bands * th * g.width * 4
        per = max(1, min(self.nr, BLEND_STRIP_BYTES // max(1, row_bytes)))
        strip = torch.empty((self.images, per, bands, th, g.width), dtype=torch.float32, device=dev)
        for r0 in range(0, self.nr, per):
            n = min(per, self.nr - r0)
            band = strip[:, :n].zero_()
            for c, x0 in enumerate(g.cols):  # along x: each tile row into a band of the image's width
                band[..., x0 : x0 + tw] += v[:, r0 : r0 + n, c] * wx[c]
            for r in range(r0, r0 + n):  # along y: the bands into the image
                y0 = g.rows[r]
                out[:, :, y0 : y0 + th] += band[:, r - r0] * wy[r][:, None]
                den_y[y0 : y0 + th] += wy[r]
        den = den_y[:, None] * den_x[None, :]
        if bool((den > 0).all()):  # every pixel of the grid is under a tile of positive weight
            return out.div_(den)
        covered = den > 0
        return torch.where(covered, out / torch.where(covered, den, torch.ones_like(den)), torch.zeros_like(out))


def blend_tiles(grid: TileGrid, bands: int, load: Callable[[Tile, slice, slice], np.ndarray | None]) -> np.ndarray:
    """The whole grid blended (bands, H, W) float32 from ``load(tile, rows, cols)``."""
    blended, _ = blend_window(grid, 0, 0, grid.height, grid.width, bands, load)
    return blended


__all__ = ["TileSampler", "TorchTileSampler", "InferencePath", "check_fusion_inputs", "blend_tiles", "PLAUSIBLE_RANGE"]
