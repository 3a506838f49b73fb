"""Checkpoint files: the one place that knows their formats (a leaf module: it imports only torch
and :mod:`ddif.config`).

Formats a ddif model can be loaded from (:meth:`ddif.DDIF.from_pretrained` reads any of them,
once, with ``weights_only=True`` or through safetensors, and says what it found):

- **engine checkpoint** (``DDIF.save``, ``.pt``): ``{"format": ENGINE_FORMAT, "config": preset
  JSON, "metadata": JSON, "state_dict": ...}``; a **distilled student** is one whose preset has
  ``diffusion.sample_timesteps`` (the grid it was distilled for);
- **training state** (``ddif train`` checkpoints): ``{"format": TRAIN_STATE_FORMAT, "config",
  "model", "ema": {"shadow"}, "step", ...}``; the EMA weights are used unless asked otherwise;
- **safetensors** (``DDIF.save("model.safetensors")``): the weights, with the preset JSON and the
  metadata in the file's string metadata (or a ``<stem>.json`` config beside it);
- **published state dict**: the published DDIF code's tensors, bare or wrapped (``state_dict``,
  ``model``, ``ema`` entries; ``module.`` / ``_orig_mod.`` prefixes); carries no configuration,
  so the preset must be given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddif.config import Preset

ENGINE_FORMAT = "ddif-checkpoint"
ENGINE_VERSION = 1
TRAIN_STATE_FORMAT = "ddif-train-state"
SAFETENSORS_SUFFIXES = (".safetensors",)
WRAPPER_KEYS = ("ema", "ema_model", "model_ema", "model", "state_dict", "net", "network", "params")
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")

# what a file turned out to be
ENGINE = "engine checkpoint"
STUDENT = "distilled student (engine checkpoint)"
TRAIN_STATE = "training state"
SAFETENSORS = "safetensors weights"
PUBLISHED = "published-layout state dict"


@dataclass
class CheckpointContents:
    """What a checkpoint holds: weights, the preset they are for (None for the published layout)
    and metadata, and which format it was."""

    source: str
    kind: str
    state_dict: dict[str, torch.Tensor]
    preset: Preset | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        preset = f"preset '{self.preset.name}'" if self.preset is not None else "no configuration"
        n = sum(int(v.numel()) for v in self.state_dict.values() if v.is_floating_point())
        extra = ""
        if self.kind == STUDENT and self.preset is not None:
            extra = f", samples at timesteps {list(self.preset.diffusion.sample_timesteps)}"
        if "step" in self.metadata:
            extra += f", step {self.metadata['step']}"
        return f"{self.kind} ({preset}, {n:,} parameters{extra})"


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load`` with ``weights_only=True`` and errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: checkpoint file is empty")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, wrong format, pickled code objects...
        raise ValueError(
            f"{path}: cannot read checkpoint (corrupt, truncated or not a torch file): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict in the checkpoint, got {type(obj).__name__}")
    return obj


def _read_safetensors(path: Path, map_location) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise ImportError(
            f"{path}: reading safetensors needs the safetensors package: pip install safetensors ({exc})"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    device = str(torch.device(map_location))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises SafetensorError for malformed headers
        raise ValueError(
            f"{path}: cannot read as safetensors (corrupt or truncated): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return tensors, meta


def read_contents(
    path: str | os.PathLike,
    *,
    use_ema: bool = True,
    prefer: str | None = None,
    map_location: str | torch.device = "cpu",
) -> CheckpointContents:
    """Read a checkpoint file once and recognise its format (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        tensors, meta = _read_safetensors(path, map_location)
        config = meta.get("config")
        if config is None and path.with_suffix(".json").is_file():
            config = path.with_suffix(".json").read_text()
        preset = _preset_from_json(config, path) if config else None
        metadata = json.loads(meta.get("metadata") or "{}")
        return CheckpointContents(
            str(path),
            SAFETENSORS if preset is not None else PUBLISHED,
            unwrap_state_dict(tensors, None, str(path)),
            preset,
            metadata,
        )
    return contents_of(read_checkpoint(path, map_location), str(path), use_ema=use_ema, prefer=prefer)


def contents_of(
    obj: Mapping[str, Any], source: str, *, use_ema: bool = True, prefer: str | None = None
) -> CheckpointContents:
    """Recognise an in-memory checkpoint (a loaded dict)."""
    fmt = obj.get("format") if isinstance(obj, Mapping) else None
    if fmt == ENGINE_FORMAT:
        if "state_dict" not in obj or "config" not in obj:
            raise ValueError(f"{source}: engine checkpoint without 'state_dict' / 'config'")
        preset = _preset_from_json(obj["config"], source)
        metadata = json.loads(obj.get("metadata") or "{}")
        kind = STUDENT if preset.diffusion.sample_timesteps else ENGINE
        return CheckpointContents(source, kind, dict(obj["state_dict"]), preset, metadata)
    if fmt == TRAIN_STATE_FORMAT:
        preset = _preset_from_json(obj["config"], source)
        weights = obj["ema"]["shadow"] if use_ema else obj["model"]
        kind = f"{TRAIN_STATE} ({'EMA' if use_ema else 'raw'} weights)"
        return CheckpointContents(
            source, kind, dict(weights), preset, {"step": int(obj.get("step", 0)), "kind": "ema" if use_ema else "raw"}
        )
    if fmt is not None:
        raise ValueError(
            f"{source}: unknown checkpoint format {fmt!r} (this ddif reads {ENGINE_FORMAT!r}, "
            f"{TRAIN_STATE_FORMAT!r}, safetensors and published state dicts)"
        )
    return CheckpointContents(source, PUBLISHED, unwrap_state_dict(obj, prefer, source), None)


def _preset_from_json(text: str, source) -> Preset:
    try:
        return Preset.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{source}: checkpoint configuration is unreadable: {exc}") from exc


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
        raise ValueError(
            f"{source}: no state dict found: not all entries are tensors ({non_tensor} are not) "
            f"and none of the wrapper entries {list(WRAPPER_KEYS)} is present"
        )
    sd = dict(obj)
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected and
    mis-shaped tensor (and guesses the preset the checkpoint was made for)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
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


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    preset: Preset,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write an engine checkpoint (``.pt``) or safetensors weights (``.safetensors``, the preset
    and metadata as its string metadata) atomically, and the preset as JSON beside it."""
    from ddif.utils.io import atomic_path, atomic_torch_save

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        try:
            from safetensors.torch import save_file
        except ImportError as exc:
            raise ImportError(
                f"writing {path} needs the safetensors package: pip install safetensors ({exc})"
            ) from None
        meta = {
            "format": ENGINE_FORMAT,
            "version": str(ENGINE_VERSION),
            "config": preset.to_json(),
            "metadata": json.dumps(dict(metadata or {})),
        }
        with atomic_path(path, suffix=".partial") as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    else:
        payload = {
            "format": ENGINE_FORMAT,
            "version": ENGINE_VERSION,
            "config": preset.to_json(),
            "metadata": json.dumps(dict(metadata or {})),
            "state_dict": tensors,
        }
        atomic_torch_save(payload, path)
    preset.save_json(path.with_suffix(".json"))
    return path


__all__ = [
    "CheckpointContents",
    "ENGINE_FORMAT",
    "ENGINE_VERSION",
    "TRAIN_STATE_FORMAT",
    "read_checkpoint",
    "read_contents",
    "contents_of",
    "unwrap_state_dict",
    "load_state_dict_checked",
    "save_checkpoint",
]
