"""Building blocks of the DDIF denoiser.

Module and parameter names follow the published checkpoint layout
(``../shared/reference/ddif_*_state_dict.tsv``) so that published weights load as they are.
The network lineage is SR3 (Saharia et al., "Image Super-Resolution via Iterative Refinement",
2021); the two condition injections are DDIF's CSM and FWM (Cao et al., Information Fusion 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddif.models.layers import FWMAttention, StyleModulatedConv


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False); the identity when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class TimestepEncoding(nn.Module):
    """Sinusoidal encoding of the training timestep: sin half, then cos half."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        k = torch.arange(half, dtype=torch.float32, device=t.device) / half
        freqs = torch.exp(-math.log(1e4) * k)
        arg = t.to(torch.float32)[:, None] * freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al., 2016): identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


@dataclass
class TimeFeatures:
    """A denoiser call's timestep-only work, computed once per timestep of a sampling grid: the
    time embedding and each ``TimeShift``'s projection of it, in the modules' order."""

    embedding: torch.Tensor
    shifts: tuple[torch.Tensor, ...]


class TimeShift(nn.Module):
    """Adds a per-channel projection of the time embedding (published name ``noise_func``)."""

    index: int = -1  # position among the network's TimeShifts (set by DDIF.time_features)

    def __init__(self, time_dim: int, dim: int):
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(time_dim, dim))

    def projection(self, t_emb: torch.Tensor) -> torch.Tensor:
        return self.noise_func(t_emb)[:, :, None, None]

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | TimeFeatures) -> torch.Tensor:
        if isinstance(t_emb, TimeFeatures):  # precomputed for this timestep
            return x + t_emb.shifts[self.index]
        return x + self.projection(t_emb)


class NormActConv(nn.Module):
    """GroupNorm -> SiLU -> (Dropout) -> conv3x3 (published name ``block`` with indices 0 and 3)."""

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, dim),
            nn.SiLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int, groups: int, dropout: float):
        super().__init__()
        self.noise_func = TimeShift(time_dim, dim_out)
        self.block1 = NormActConv(dim, dim_out, groups)
        self.block2 = NormActConv(dim_out, dim_out, groups, dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.noise_func(self.block1(x), t_emb)
        return self.block2(h) + self.res_conv(x)


class SelfAttention(nn.Module):
    """Multi-head softmax self-attention over all positions.

    As published, the logits are scaled by 1/sqrt(channels) (the full width), not by the
    head width.
    """

    def __init__(self, dim: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, dim)
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        # q, k, v are split inside each head's slice of the qkv channels
        qkv = self.qkv(self.norm(x)).reshape(b, self.heads, 3 * d, h * w)
        # (b, heads, hw, d) each; contiguous so the CPU flash kernel is used (6x faster than the
        # math fallback that strided views fall into)
        q, k, v = (part.contiguous() for part in qkv.transpose(-1, -2).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(c))
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return self.out(out) + x


class CoarseStyleModulation(nn.Module):
    """CSM: ``x_conv(x) * (1 + scale) + shift`` with ``scale, shift`` computed from the coarse
    condition cat[lms, pan] resized to the block's size."""

    def __init__(self, cond_dim: int, dim_in: int, dim_out: int, groups: int):
        super().__init__()
        hidden = 4 * dim_out
        self.body = nn.Sequential(
            nn.Conv2d(cond_dim, hidden, 3, padding=1, bias=False),
            nn.GroupNorm(groups, hidden),
            nn.SiLU(),
            nn.Conv2d(hidden, 2 * dim_out, 1),
        )
        last = self.body[3]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.x_conv = StyleModulatedConv(dim_in, dim_out)

    def style(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.body(cond).chunk(2, dim=1)
        return scale, shift

    def forward(self, x: torch.Tensor, style: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale, shift = style
        return self.x_conv(x, scale, shift)


class WaveletModulation(nn.Module):
    """FWM: linear attention between the decoder features (queries) and the wavelet condition
    (keys, values), then a convolutional feed-forward branch."""

    def __init__(self, wavelet_dim: int, dim_in: int, dim_out: int, heads: int, groups: int, drop_path: float):
        super().__init__()
        if dim_in % heads:
            raise ValueError(f"FWM width {dim_in} is not divisible by {heads} heads")
        self.heads = heads
        self.prenorm_x = nn.GroupNorm(groups, dim_in)
        self.q = nn.Sequential(
            nn.Conv2d(dim_in, dim_in, 3, padding=1, groups=dim_in, bias=False),
            nn.Conv2d(dim_in, dim_in, 1),
        )
        self.kv = nn.Sequential(
            nn.Conv2d(wavelet_dim, wavelet_dim, 3, padding=1, groups=wavelet_dim, bias=False),
            nn.Conv2d(wavelet_dim, 2 * dim_in, 1),
        )
        self.attn_out = nn.Conv2d(dim_in, dim_out, 1)
        self.attn_res = nn.Conv2d(dim_in, dim_out, 1)
        self.ffn = nn.Sequential(
            nn.Conv2d(dim_out, 2 * dim_out, 3, padding=1, bias=False),
            nn.SiLU(),
            nn.Conv2d(2 * dim_out, dim_out, 3, padding=1, bias=False),
            nn.Conv2d(dim_out, dim_out, 1),
        )
        self.drop_path = DropPath(drop_path)
        self.attention = FWMAttention(heads)

    def context(self, wavelet: torch.Tensor) -> torch.Tensor:
        """(B, heads, d, d) context from the wavelet condition at this block's size."""
        k, v = self.kv(wavelet).chunk(2, dim=1)
        return self.attention.context(k, v)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.prenorm_x(x)
        out = self.attention(self.q(x), context)
        y = self.attn_out(out) + self.attn_res(x)
        return y + self.drop_path(self.ffn(y))


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EncoderBlock(nn.Module):
    """CSM -> residual block -> (attention)."""

    def __init__(
        self,
        cond_dim: int,
        dim_in: int,
        dim_out: int,
        time_dim: int,
        groups: int,
        dropout: float,
        attn_heads: int,
        with_attn: bool,
    ):
        super().__init__()
        self.cond_inj = CoarseStyleModulation(cond_dim, dim_in, dim_out, groups)
        self.res_block = ResBlock(dim_out, dim_out, time_dim, groups, dropout)
        self.attn = SelfAttention(dim_out, attn_heads, groups) if with_attn else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, style: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = self.res_block(self.cond_inj(x, style), t_emb)
        return self.attn(x) if self.attn is not None else x


class DecoderBlock(nn.Module):
    """FWM -> residual block -> (attention); the input is cat[x, skip]."""

    def __init__(
        self,
        wavelet_dim: int,
        dim_in: int,
        dim_out: int,
        time_dim: int,
        groups: int,
        dropout: float,
        drop_path: float,
        attn_heads: int,
        fwm_heads: int,
        with_attn: bool,
    ):
        super().__init__()
        self.cond_inj = WaveletModulation(wavelet_dim, dim_in, dim_out, fwm_heads, groups, drop_path)
        self.res_block = ResBlock(dim_out, dim_out, time_dim, groups, dropout)
        self.attn = SelfAttention(dim_out, attn_heads, groups) if with_attn else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.res_block(self.cond_inj(x, context), t_emb)
        return self.attn(x) if self.attn is not None else x


class MidBlock(nn.Module):
    def __init__(self, dim: int, time_dim: int, groups: int, dropout: float, attn_heads: int, with_attn: bool):
        super().__init__()
        self.res_block = ResBlock(dim, dim, time_dim, groups, dropout)
        self.attn = SelfAttention(dim, attn_heads, groups) if with_attn else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, t_emb)
        return self.attn(x) if self.attn is not None else x
