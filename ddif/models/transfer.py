"""Initialising a model from another one's weights (``ddif train --init``), also across band counts.

Fine-tuning a model for a sensor with another band set (a 4-band WorldView-2 model from a 3-band
Landsat one) keeps every weight whose shape agrees and maps the band channels of the others. In
DDIF every tensor that depends on the band count C has its band channels as contiguous blocks
followed by the guide's channels (the network input ``[self_cond, x_t]`` = 2 blocks of C; the
coarse condition ``[lms, pan]`` = C + P; the wavelet condition = C + 3P; the output = C), so a
dimension of size ``a C_src + b P_src`` maps to ``a C_dst + b P_dst``. A destination band copies
the *output* weights of its source band (``band_map``) and gets zero *input* weights when it is
new (not the first use of its source band): the initial network ignores the new band's input and
predicts its residual like its source band's, and fine-tuning takes it from there. The guide's
bands may change too (a PAN model started for a 9-band guide): a destination guide band copies
its source guide band's weights (``guide_map``, default every band from band 0), its *input*
weights divided by how many destination bands share that source band, so that the initial network
sees their mean where the source model saw its guide band (the same function when they are equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ddif.models.ddif import DDIF


def _block_layout(n_src: int, n_dst: int, c_src: int, c_dst: int, p_src: int, p_dst: int) -> tuple[int, int] | None:
    """(a, b) with n_src = a c_src + b p_src and n_dst = a c_dst + b p_dst, or None."""
    for a in range(1, 5):
        for b in range(0, 4):
            if n_src == a * c_src + b * p_src and n_dst == a * c_dst + b * p_dst:
                return a, b
    return None


def transfer_weights(
    source: DDIF, target: DDIF, band_map: Sequence[int] | None = None, guide_map: Sequence[int] | None = None
) -> list[str]:
    """Copy ``source``'s weights into ``target`` (same architecture up to the band and guide band
    counts); returns the names of the tensors whose band or guide channels were mapped.
    ``band_map[k]``: the source band that target band k starts from (default: band k, the last one
    for extra bands); ``guide_map[j]``: the source guide band of target guide band j (default: band
    j, the last one for extra bands)."""
    c_src, c_dst = source.config.bands, target.config.bands
    p_src, p_dst = source.config.guide_bands, target.config.guide_bands
    mine, theirs = source.config, target.config
    for field in ("base_width", "channel_mults", "res_blocks", "attn_resolutions", "norm_groups"):
        if getattr(mine, field) != getattr(theirs, field):
            raise ValueError(
                f"--init: the initial model's {field} is {getattr(mine, field)}, this model's "
                f"{getattr(theirs, field)}: only the band and guide band counts may differ"
            )
    mapping = list(band_map) if band_map is not None else [min(k, c_src - 1) for k in range(c_dst)]
    if len(mapping) != c_dst or not all(0 <= m < c_src for m in mapping):
        raise ValueError(f"band_map must give one source band in 0..{c_src - 1} for each of {c_dst} bands")
    guides = list(guide_map) if guide_map is not None else [min(j, p_src - 1) for j in range(p_dst)]
    if len(guides) != p_dst or not all(0 <= m < p_src for m in guides):
        raise ValueError(f"guide_map must give one source guide band in 0..{p_src - 1} for each of {p_dst}")
    first_use = [mapping.index(m) == k for k, m in enumerate(mapping)]
    sharing = [guides.count(m) for m in guides]  # destination guide bands drawn from the same source band
    src_state = source.state_dict()
    dst_state = target.state_dict()
    mapped = []
    for name, dst in dst_state.items():
        src = src_state.get(name)
        if src is None:
            raise ValueError(f"--init: the initial model has no tensor {name!r}")
        if src.shape == dst.shape:
            dst.copy_(src)
            continue
        out = src
        for dim in range(src.dim()):
            if src.shape[dim] == dst.shape[dim]:
                continue
            layout = _block_layout(src.shape[dim], dst.shape[dim], c_src, c_dst, p_src, p_dst)
            if layout is None:
                raise ValueError(f"--init: {name} has shape {tuple(src.shape)}, this model {tuple(dst.shape)}")
            a, b = layout
            is_input = dim == 1  # conv weights (out, in, ...): dim 1 sums over the input channels
            pieces = []
            for block in range(a):
                for k, m in enumerate(mapping):
                    piece = out.narrow(dim, block * c_src + m, 1)
                    if is_input and not first_use[k]:
                        piece = torch.zeros_like(piece)
                    pieces.append(piece)
            for block in range(b):  # the guide's channels (e.g. the wavelet condition's 3 detail groups)
                for j, m in enumerate(guides):
                    piece = out.narrow(dim, a * c_src + block * p_src + m, 1)
                    pieces.append(piece / sharing[j] if is_input else piece)
            out = torch.cat(pieces, dim=dim)
        dst.copy_(out)
        mapped.append(name)
    target.load_state_dict(dst_state)
    return mapped


__all__ = ["transfer_weights"]
