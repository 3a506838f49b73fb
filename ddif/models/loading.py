"""Load a model from any checkpoint this project meets: an engine checkpoint (``DDIF.save``), a
training state (``ddif train``: the EMA weights are used), or a published-layout state dict."""
from __future__ import annotations

import os

import torch

from ddif.config import Preset


def load_model(path: str | os.PathLike, preset: str | Preset | None = None, *, use_ema: bool = True,
               map_location: str | torch.device = "cpu"):
    from ddif.models.ddif import CHECKPOINT_FORMAT, DDIF, read_checkpoint
    from ddif.models.published import load_published, load_state_dict_checked

    obj = read_checkpoint(path, map_location)
    fmt = obj.get("format")
    if fmt == CHECKPOINT_FORMAT:
        return DDIF.load(path, map_location)
    if fmt == "ddif-train-state":
        model = DDIF(Preset.from_json(obj["config"]))
        weights = obj["ema"]["shadow"] if use_ema else obj["model"]
        load_state_dict_checked(model, weights, str(path))
        model.metadata = {"step": int(obj["step"]), "kind": "ema" if use_ema else "raw"}
        return model.eval()
    if preset is None:
        raise ValueError(f"{path}: a checkpoint in the published layout carries no configuration; "
                         "give the preset it was trained for (e.g. --preset wv3)")
    return load_published(obj, preset)
