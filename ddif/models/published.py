"""Loading checkpoints in the layout of the published DDIF code.

The tensor names and shapes are those of ``../shared/reference/ddif_<preset>_state_dict.tsv``.
Checkpoints come bare or wrapped (``state_dict``, ``model``, ``ema`` entries, ``module.`` prefixes
from DistributedDataParallel, ``_orig_mod.`` from torch.compile); all are accepted.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from ddif.config import Preset, get_preset

WRAPPER_KEYS = ("ema", "ema_model", "model_ema", "model", "state_dict", "net", "network", "params")
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, prefer: str | None = None, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a (possibly wrapped) checkpoint and strip wrapper prefixes.

    ``prefer`` names the wrapper entry to use when several are present (default: ``ema`` weights
    first, as they are the ones evaluated in the published recipe).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict (mapping of name -> tensor), got {type(obj).__name__}")
    if prefer is not None:
        if prefer not in obj:
            raise ValueError(f"{source}: no {prefer!r} entry; entries are {sorted(map(str, obj))[:20]}")
        return unwrap_state_dict(obj[prefer], None, f"{source}[{prefer!r}]")
    if not _is_tensor_dict(obj):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return unwrap_state_dict(obj[key], None, f"{source}[{key!r}]")
        non_tensor = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
        raise ValueError(f"{source}: no state dict found: not all entries are tensors ({non_tensor} are not) "
                         f"and none of the wrapper entries {list(WRAPPER_KEYS)} is present")
    sd = dict(obj)
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected and
    mis-shaped tensor (and guesses the preset the checkpoint was made for)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mis_shaped:
        def fmt(items):
            head = ", ".join(items[:8])
            return head + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {fmt(unexpected)}")
        if mis_shaped:
            parts.append(f"wrong shapes: {fmt(mis_shaped)}")
        hint = _band_hint(state_dict, model)
        raise ValueError(f"{source}: checkpoint does not match the model: " + "; ".join(parts) + hint)
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{source}: checkpoint has non-finite values in {bad[:5]}")
    model.load_state_dict(state_dict, strict=True)


def _band_hint(state_dict: Mapping[str, torch.Tensor], model) -> str:
    w = state_dict.get("final_conv.block.3.weight")
    cfg = getattr(model, "config", None)
    if w is None or cfg is None or w.dim() != 4:
        return ""
    bands = w.shape[0]
    if bands != cfg.bands:
        return f" (the checkpoint predicts {bands} bands, the model {cfg.bands}: wrong preset?)"
    return ""


def load_published(path_or_state_dict: str | os.PathLike | Mapping[str, Any], preset: str | Preset = "wv3",
                   prefer: str | None = None, map_location: str | torch.device = "cpu"):
    """Build the model for ``preset`` and load published-layout weights; returns it in eval() mode."""
    from ddif.models.ddif import DDIF, read_checkpoint

    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = str(path_or_state_dict)
        obj = read_checkpoint(path_or_state_dict, map_location)
    else:
        source, obj = "state dict", path_or_state_dict
    sd = unwrap_state_dict(obj, prefer, source)
    model = DDIF(get_preset(preset) if isinstance(preset, str) else preset)
    load_state_dict_checked(model, sd, source)
    return model.eval()
