"""The DDIF denoiser: an SR3-style U-Net whose encoder is modulated by CSM (coarse style from
cat[lms, pan]) and whose decoder is modulated by FWM (linear attention against the Haar wavelet
condition).

Cao et al., "Diffusion model with disentangled modulations for sharpening multispectral and
hyperspectral images", Information Fusion 104 (2024), arXiv:2304.04774.

The network predicts the clean residual ``x0 = gt - lms`` from a noisy residual ``x_t``.
Everything that depends only on the condition (lms, guide) is gathered by
:meth:`DDIF.encode_condition` into a :class:`ConditionCache`, so a sampler computes it once per
image rather than once per step; the uncached call is literally ``encode_condition`` followed
by the cached denoiser, so both give bit-identical results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ddif.config import ModelConfig, Preset, get_preset
from ddif.kernels.dispatch import tracing_or_capturing
from ddif.models.blocks import (
    DecoderBlock,
    Downsample,
    EncoderBlock,
    MidBlock,
    NormActConv,
    TimeFeatures,
    TimeShift,
    TimestepEncoding,
    Upsample,
    resize_to,
)
from ddif.models.checkpoint import (
    ENGINE_FORMAT,
    PUBLISHED,
    contents_of,
    load_state_dict_checked,
    read_contents,
    save_checkpoint,
)
from ddif.models.layers import WaveletCondition
from ddif.utils.validation import check_image, check_timesteps


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


_log = logging.getLogger("ddif.models")


_checked = threading.local()


@contextlib.contextmanager
def inputs_checked() -> Iterator[None]:
    """The inputs were checked once (at the sampler's entry): the network's per-call checks, which
    read values back to the host (a device synchronisation per check on a GPU), are skipped in the
    block. Thread-local and re-entrant."""
    depth = getattr(_checked, "depth", 0)
    _checked.depth = depth + 1
    try:
        yield
    finally:
        _checked.depth = depth


def checks_enabled() -> bool:
    """Data-dependent input checks are skipped while tracing/exporting a graph or capturing a CUDA
    graph (they read values back to the host, which capture forbids), and inside
    :func:`inputs_checked` (a sampler's fixed-step loop: its inputs were checked once at entry)."""
    if getattr(_checked, "depth", 0):
        return False
    return not tracing_or_capturing()


@dataclass
class ConditionCache:
    """Everything the denoiser needs from (lms, guide), computed once per image.

    styles:   per encoder block, the CSM (scale, shift) maps at the block's resolution;
    contexts: per decoder block, the FWM context (B, heads, d, d);
    wavelet:  the wavelet condition (B, C + 3P, H, W) they were computed from.
    """

    styles: list[tuple[torch.Tensor, torch.Tensor]]
    contexts: list[torch.Tensor]
    wavelet: torch.Tensor
    size: tuple[int, int] = field(default=(0, 0))

    @property
    def batch(self) -> int:
        return self.wavelet.shape[0]


class DDIF(nn.Module):
    """DDIF denoiser. Parameter names follow the published checkpoint layout."""

    # set by :meth:`from_pretrained`: the checkpoint's metadata and what kind of checkpoint it was
    metadata: dict[str, Any]
    checkpoint_kind: str

    def __init__(self, preset: Preset | ModelConfig | str = "wv3"):
        super().__init__()
        if isinstance(preset, str):
            preset = get_preset(preset)
        elif isinstance(preset, ModelConfig):
            preset = Preset(name="custom", model=preset)
        self.preset = preset
        cfg = self.config = preset.model
        width, groups, time_dim = cfg.base_width, cfg.norm_groups, cfg.base_width

        self.noise_level_mlp = nn.Sequential(
            TimestepEncoding(time_dim),
            nn.Linear(time_dim, time_dim * 4),
            nn.SiLU(),
            nn.Linear(time_dim * 4, time_dim),
        )

        in_ch = cfg.bands * (2 if cfg.self_condition else 1)
        downs: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, padding=1)]
        skip_dims = [width]
        dim = width
        res = cfg.image_size
        for level, mult in enumerate(cfg.channel_mults):
            dim_out = width * mult
            with_attn = res in cfg.attn_resolutions
            for _ in range(cfg.res_blocks):
                downs.append(
                    EncoderBlock(
                        cfg.coarse_channels, dim, dim_out, time_dim, groups, cfg.dropout, cfg.attn_heads, with_attn
                    )
                )
                skip_dims.append(dim_out)
                dim = dim_out
            if level != cfg.num_levels - 1:
                downs.append(Downsample(dim))
                skip_dims.append(dim)
                res //= 2
        self.downs = nn.ModuleList(downs)

        self.mid = nn.ModuleList(
            [
                MidBlock(dim, time_dim, groups, cfg.dropout, cfg.attn_heads, with_attn=True),
                MidBlock(dim, time_dim, groups, cfg.dropout, cfg.attn_heads, with_attn=False),
            ]
        )

        ups: list[nn.Module] = []
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            dim_out = width * mult
            with_attn = res in cfg.attn_resolutions
            for _ in range(cfg.res_blocks + 1):
                ups.append(
                    DecoderBlock(
                        cfg.wavelet_channels,
                        dim + skip_dims.pop(),
                        dim_out,
                        time_dim,
                        groups,
                        cfg.dropout,
                        cfg.drop_path,
                        cfg.attn_heads,
                        cfg.fwm_heads,
                        with_attn,
                    )
                )
                dim = dim_out
            if level != 0:
                ups.append(Upsample(dim))
                res *= 2
        self.ups = nn.ModuleList(ups)
        self.final_conv = NormActConv(dim, cfg.bands, groups)
        self.wavelet = WaveletCondition(cfg.detail_order)

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def from_preset(cls, name: str, **model_overrides: Any) -> DDIF:
        preset = get_preset(name)
        for key, value in model_overrides.items():
            if not hasattr(preset.model, key):
                raise ValueError(f"unknown model option {key!r}")
            setattr(preset.model, key, value)
        preset.model.__post_init__()
        return cls(preset)

    def set_fused_kernels(self, enabled: bool = True) -> DDIF:
        """Route the hot paths (wavelet condition, FWM attention, CSM conv) through the fused
        kernels where they are live (see ``kernels.available()``); references otherwise."""
        for module in self.modules():
            if hasattr(module, "fused") and module is not self:
                # nn.Module's stubs type unknown attributes as Tensor | Module; `fused` is a bool flag
                module.fused = bool(enabled)  # type: ignore[assignment]
        return self

    @property
    def fused_kernels(self) -> bool:
        return any(getattr(m, "fused", False) for m in self.modules() if m is not self)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Write weights + config + metadata atomically (``.pt`` engine checkpoint, or
        ``.safetensors``), and the config as JSON beside it."""
        save_checkpoint(path, self.state_dict(), self.preset, metadata)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | Mapping[str, Any],
        preset: str | Preset | None = None,
        *,
        use_ema: bool = True,
        prefer: str | None = None,
        map_location: str | torch.device = "cpu",
    ) -> DDIF:
        """The one loader: a model from any checkpoint this project meets (engine checkpoint,
        distilled student, training state (EMA weights unless ``use_ema=False``), safetensors,
        published-layout state dict), a path read once with ``weights_only=True`` or an in-memory
        dict. Published weights carry no configuration: give ``preset`` (name or Preset) then;
        for the others the checkpoint's own configuration is used, and a ``preset`` that names
        another one is an error. ``prefer`` picks a wrapper entry of a published checkpoint.
        Logs one line saying what was found; ``model.checkpoint_kind`` keeps it."""
        if isinstance(source, (str, os.PathLike)):
            contents = read_contents(source, use_ema=use_ema, prefer=prefer, map_location=map_location)
        else:
            contents = contents_of(source, "state dict", use_ema=use_ema, prefer=prefer)
        wanted = get_preset(preset) if isinstance(preset, str) else preset
        if contents.preset is None:
            if wanted is None:
                raise ValueError(
                    f"{contents.source}: a checkpoint in the published layout carries no configuration; "
                    "give the preset it was trained for (e.g. --preset wv3)"
                )
            model_preset = wanted
        else:
            model_preset = contents.preset
            if wanted is not None and wanted.name != model_preset.name:
                raise ValueError(
                    f"{contents.source}: the checkpoint is {_article(contents.kind)} {contents.kind} for preset "
                    f"'{model_preset.name}', not '{wanted.name}'; leave the preset out"
                )
        model = cls(model_preset)
        load_state_dict_checked(model, contents.state_dict, contents.source)
        model.metadata = dict(contents.metadata)
        model.checkpoint_kind = contents.kind
        _log.info("%s: %s", contents.source, contents.describe())
        return model.eval()

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> DDIF:
        """Alias of :meth:`from_pretrained` for engine checkpoints (kept for compatibility)."""
        model = cls.from_pretrained(path, map_location=map_location)
        if model.checkpoint_kind == PUBLISHED:
            raise ValueError(
                f"{path}: not a ddif checkpoint (no 'format': '{ENGINE_FORMAT}' entry); "
                "for checkpoints of the published code use DDIF.from_pretrained(path, preset=...)"
            )
        return model

    # ------------------------------------------------------------------ condition
    def check_condition(self, lms: torch.Tensor, pan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        guide_what = "PAN band(s)" if cfg.guide_bands == 1 else "guide bands"
        lms = check_image("lms", lms, channels=cfg.bands, channel_what=f"bands for preset '{self.preset.name}'")
        pan = check_image(
            "pan",
            pan,
            channels=cfg.guide_bands,
            channel_what=guide_what,
            batch=lms.shape[0],
            spatial=lms.shape[-2:],
            spatial_of="lms",
        )
        self.check_size(lms.shape[-2:], "lms")
        return lms, pan

    def check_size(self, size: Sequence[int], name: str) -> None:
        m = self.config.size_multiple
        if size[0] % m or size[1] % m:
            raise ValueError(
                f"{name}: spatial size {size[0]}x{size[1]} is not a multiple of {m} (the network "
                f"halves it {self.config.num_levels - 1} times); pad it, or use ddif.Fuser which pads "
                "and crops"
            )

    def _param_dtype(self) -> torch.dtype:
        first = self.downs[0]
        assert isinstance(first, nn.Conv2d)  # the input convolution, built in __init__
        return first.weight.dtype

    def wavelet_condition(self, lms: torch.Tensor, pan: torch.Tensor) -> torch.Tensor:
        return self.wavelet(lms, pan)

    def encode_condition(self, lms: torch.Tensor, pan: torch.Tensor) -> ConditionCache:
        """Compute every condition-only tensor once: CSM styles, FWM contexts, wavelet condition."""
        if checks_enabled():
            lms, pan = self.check_condition(lms, pan)
        dtype = self._param_dtype()
        lms, pan = lms.to(dtype), pan.to(dtype)
        coarse = torch.cat([lms, pan], dim=1)
        wavelet = self.wavelet_condition(lms, pan)
        h, w = lms.shape[-2:]

        # Resized conditions are shared by the blocks of one level. They are keyed by the level
        # index, not by the size: under torch.export the sizes are symbolic (unhashable) ints.
        styles = []
        coarse_at: dict[int, torch.Tensor] = {}
        size, level = (h, w), 0
        for block in self.downs[1:]:
            if isinstance(block, Downsample):
                size, level = ((size[0] + 1) // 2, (size[1] + 1) // 2), level + 1
                continue
            assert isinstance(block, EncoderBlock)  # downs[1:] holds encoder blocks and Downsamples
            if level not in coarse_at:
                coarse_at[level] = resize_to(coarse, size)
            # contiguous once here: the scale / shift are chunks of one map, and the fused CSM op
            # would otherwise copy both on every sampling step
            scale, shift = block.cond_inj.style(coarse_at[level])
            styles.append((scale.contiguous(), shift.contiguous()))

        contexts = []
        wavelet_at: dict[int, torch.Tensor] = {}
        for block in self.ups:
            if isinstance(block, Upsample):
                size, level = (size[0] * 2, size[1] * 2), level - 1
                continue
            assert isinstance(block, DecoderBlock)  # ups holds decoder blocks and Upsamples
            if level not in wavelet_at:
                wavelet_at[level] = resize_to(wavelet, size)
            contexts.append(block.cond_inj.context(wavelet_at[level]))
        return ConditionCache(styles, contexts, wavelet, (h, w))

    # ------------------------------------------------------------------ denoiser
    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        lms: torch.Tensor | None = None,
        pan: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
        cache: ConditionCache | None = None,
        time_features: TimeFeatures | None = None,
    ) -> torch.Tensor:
        """Predict the clean residual x0 from the noisy residual ``x_t`` at training timesteps ``t``.

        Give either (lms, pan) or a ``cache`` from :meth:`encode_condition`. Without
        ``self_cond`` the network is fed ``x_t`` in its place (as the published network does).
        ``time_features`` (:meth:`time_features` of ``t``) replaces the time embedding and every
        block's time projection: a sampler computes them once per timestep of its grid.
        """
        if cache is None:
            if lms is None or pan is None:
                raise ValueError("forward needs either (lms, pan) or cache=model.encode_condition(lms, pan)")
            cache = self.encode_condition(lms, pan)
        cfg = self.config
        if checks_enabled():
            x_t = check_image(
                "x_t", x_t, channels=cfg.bands, batch=cache.batch, spatial=cache.size, spatial_of="the condition (lms)"
            )
            t = check_timesteps("t", t, x_t.shape[0], self.preset.diffusion.timesteps)
            if self_cond is not None:
                self_cond = check_image(
                    "self_cond", self_cond, channels=cfg.bands, batch=cache.batch, spatial=cache.size, spatial_of="x_t"
                )
        dtype = self._param_dtype()
        x_t = x_t.to(dtype)
        if cfg.self_condition:
            x = torch.cat([x_t if self_cond is None else self_cond.to(dtype), x_t], dim=1)
        else:
            x = x_t
        t_emb: torch.Tensor | TimeFeatures = time_features if time_features is not None else self._time_embedding(t)
        return self._denoise(x, t_emb, cache)

    def _time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.noise_level_mlp[1:](self.noise_level_mlp[0](t).to(self._param_dtype()))

    @property
    def _time_shifts(self) -> list[TimeShift]:
        shifts = getattr(self, "_time_shift_modules", None)
        if shifts is None:  # the TimeShift projections in call order (the blocks' order)
            shifts = [m for m in self.modules() if isinstance(m, TimeShift)]
            for i, m in enumerate(shifts):
                m.index = i
            object.__setattr__(self, "_time_shift_modules", shifts)
        return shifts

    def time_features(self, t: torch.Tensor) -> TimeFeatures:
        """Everything of one denoiser call that depends on the timesteps ``t`` (B,) only: the time
        embedding (its MLP) and every block's projection of it (the ``TimeShift`` linears), to be
        computed once per timestep of a sampling grid and passed to :meth:`forward`."""
        t_emb = self._time_embedding(t)
        return TimeFeatures(t_emb, tuple(m.projection(t_emb) for m in self._time_shifts))

    def _denoise(self, x: torch.Tensor, t_emb: torch.Tensor | TimeFeatures, cache: ConditionCache) -> torch.Tensor:
        x = self.downs[0](x)
        skips = [x]
        styles = iter(cache.styles)
        for block in self.downs[1:]:
            x = block(x) if isinstance(block, Downsample) else block(x, t_emb, next(styles))
            skips.append(x)
        for block in self.mid:
            x = block(x, t_emb)
        contexts = iter(cache.contexts)
        for block in self.ups:
            if isinstance(block, Upsample):
                x = block(x)
            else:
                x = block(torch.cat([x, skips.pop()], dim=1), t_emb, next(contexts))
        return self.final_conv(x)
