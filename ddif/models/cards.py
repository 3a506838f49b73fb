"""Model cards: what a shipped model is for, said once, beside its weights.

A card is ``<name>.card.json`` next to ``<name>.pt`` (the checkpoint, whose preset carries the
configuration). It states the sensor, the bands in the model's order, the PAN, the ratio, the DN
range, the training data and its licence, the recipe, the default sampling steps and the measured
tables; ``ddif models`` lists the cards shipped with ddif, ``--model NAME`` resolves a name to
its checkpoint and card, and ``ddif fuse`` picks a model by what the card says it fuses
(:mod:`ddif.inference.selection`). Card format (``CARD_FORMAT``): JSON with the fields of
:class:`ModelCard`; unknown fields are kept in ``extra``.

torch-free (a leaf module): listing the models does not load any weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CARD_FORMAT = "ddif-model-card/1"
CARD_SUFFIX = ".card.json"
ASSETS = Path(__file__).resolve().parents[1] / "assets"  # the checkpoints shipped with ddif


@dataclass
class ModelCard:
    """What a model fuses and how it was made (see the module docstring)."""

    name: str
    checkpoint: str  # file name beside the card
    title: str = ""
    sensor: str = ""  # ddif.data.sensors key of the sensor it was trained on
    sensors: tuple[str, ...] = ()  # every sensor it is meant for (e.g. landsat8, landsat9)
    bands: tuple[str, ...] = ()  # the MS bands in the model's order (sensor band names)
    pan: str = ""  # the guide band(s): "B8", "PAN"
    ratio: int = 0
    dn: dict[str, Any] = field(default_factory=dict)  # dtype, max_dn, typical range, input_scale
    sha256: str = ""  # of the checkpoint file
    default_steps: int = 0  # sampling steps the entry points use (0: the checkpoint's preset)
    semi_synthetic: bool = False  # trained on a synthesised PAN
    training_data: dict[str, Any] = field(default_factory=dict)
    licence: str = ""  # of the weights (and the data they derive from)
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    limitations: tuple[str, ...] = ()
    format: str = CARD_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # where the card was read from (not stored)

    def __post_init__(self) -> None:
        self.sensors = tuple(self.sensors) or ((self.sensor,) if self.sensor else ())
        self.bands = tuple(self.bands)
        self.limitations = tuple(self.limitations)
        self.ratio = int(self.ratio)
        self.default_steps = int(self.default_steps)

    @property
    def checkpoint_path(self) -> Path:
        base = Path(self.path).parent if self.path else ASSETS
        return base / self.checkpoint

    def summary(self) -> str:
        """One line: name, sensor, bands + PAN, ratio, DN."""
        dn = self.dn.get("max_dn")
        dn_text = f", DN up to {dn:g}" if isinstance(dn, (int, float)) else ""
        synthetic = " (semi-synthetic PAN)" if self.semi_synthetic else ""
        bands = ", ".join(self.bands)
        return (
            f"{self.name}: {self.title or self.sensor} {bands} + {self.pan or 'PAN'}{synthetic}, "
            f"ratio {self.ratio}{dn_text}"
        )

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("path", None)
        extra = d.pop("extra", {}) or {}
        d.update(extra)
        return json.dumps(d, indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        from ddif.utils.io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path


def read_card(path: str | os.PathLike) -> ModelCard:
    """The card at ``path``; ValueError naming the file for anything malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"model card {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model card {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
        raise ValueError(f"model card {path}: expected a JSON object with format {CARD_FORMAT!r}")
    known = {f.name for f in fields(ModelCard)} - {"extra", "path"}
    extra = {k: v for k, v in data.items() if k not in known}
    values = {k: v for k, v in data.items() if k in known}
    for key in ("name", "checkpoint"):
        if not isinstance(values.get(key), str) or not values[key]:
            raise ValueError(f"model card {path}: field {key!r} must be a non-empty string")
    if Path(values["checkpoint"]).name != values["checkpoint"]:
        raise ValueError(f"model card {path}: checkpoint {values['checkpoint']!r} must be a file name beside the card")
    try:
        return ModelCard(**values, extra=extra, path=str(path))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model card {path}: {exc}") from None


def card_path_for(checkpoint: str | os.PathLike) -> Path:
    """Where the card of a checkpoint lives: ``<stem>.card.json`` beside it."""
    p = Path(checkpoint)
    return p.with_name(p.stem + CARD_SUFFIX)


def card_for(checkpoint: str | os.PathLike) -> ModelCard | None:
    """The card beside ``checkpoint``, or None when it has none."""
    path = card_path_for(checkpoint)
    return read_card(path) if path.is_file() else None


def shipped_cards(folder: str | os.PathLike | None = None) -> list[ModelCard]:
    """Every card shipped with ddif (``ddif/assets/*.card.json``), sorted by name."""
    base = Path(folder) if folder is not None else ASSETS
    return sorted((read_card(p) for p in base.glob("*" + CARD_SUFFIX)), key=lambda c: c.name)


def shipped_names(folder: str | os.PathLike | None = None) -> list[str]:
    return [c.name for c in shipped_cards(folder)]


def resolve_model(name: str | os.PathLike, folder: str | os.PathLike | None = None) -> tuple[Path, ModelCard | None]:
    """(checkpoint, card) of a model given by path (a checkpoint, an exported graph, or a card
    file) or by the name of a shipped model; FileNotFoundError naming the shipped ones otherwise."""
    path = Path(name)
    if path.name.endswith(CARD_SUFFIX) and path.is_file():
        card = read_card(path)
        return card.checkpoint_path, card
    if path.exists():
        return path, card_for(path) if path.suffix == ".pt" else None
    if path.name == str(name):
        for card in shipped_cards(folder):
            if card.name == str(name):
                return card.checkpoint_path, card
    names = shipped_names(folder)
    raise FileNotFoundError(
        f"model not found: {name} is no file and not the name of a model shipped with ddif (shipped: "
        f"{', '.join(names) or 'none'}; `ddif models` lists them)"
    )


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = [
    "CARD_FORMAT",
    "CARD_SUFFIX",
    "ModelCard",
    "read_card",
    "card_for",
    "card_path_for",
    "shipped_cards",
    "shipped_names",
    "resolve_model",
    "file_sha256",
]
