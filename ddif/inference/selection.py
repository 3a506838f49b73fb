"""Which model fuses a delivery, and in which band order.

``ddif fuse`` without ``--model`` picks the one shipped model whose card fits the inputs (band
count, resolution ratio, sensor from a metadata file or the file names, band names) and says
which and why; when none fits it names the models that would fuse what. With ``--model`` the card
is checked the same way. Bands named by the delivery (Landsat's ``..._B4.TIF`` files, band
descriptions such as ``blue`` / ``nir1``) are matched by name to the model's bands: delivered in
another order they are reordered, more bands than the model's are narrowed to its own, and names
that are not the model's bands are refused, so a scene is never fused with its bands swapped.
Unnamed bands are taken in the order given, and the choice says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ddif.data.raster import open_raster
from ddif.data.sensors import DeliveryFacts, Sensor, delivery_facts, find_sensor
from ddif.models.cards import ModelCard, shipped_cards


@dataclass
class SceneFacts:
    """What the headers and names of an MS + PAN delivery say (nothing is read but headers)."""

    bands: int
    guide_bands: int
    ratio: float | None  # MS / PAN pixel size ratio, None without georeferencing
    dtype: str
    delivery: DeliveryFacts

    def describe(self) -> str:
        ratio = f"ratio {self.ratio:g}" if self.ratio else "no georeferencing (ratio unknown)"
        sensor = (
            f"sensor {self.delivery.sensor.key} ({self.delivery.sensor_source})"
            if self.delivery.sensor
            else "sensor not named"
        )
        names = f"bands {', '.join(self.delivery.band_names)}" if self.delivery.band_names else "bands unnamed"
        return f"{self.bands} MS bands ({names}), {self.guide_bands}-band PAN, {ratio}, {self.dtype}, {sensor}"


def scene_facts(ms_paths: Sequence[str | os.PathLike], pan_path: str | os.PathLike) -> SceneFacts:
    infos = [open_raster(p, "MS band file" if len(ms_paths) > 1 else "MS") for p in ms_paths]
    pan = open_raster(pan_path, "PAN")
    bands = sum(i.count for i in infos)
    descriptions: tuple[str | None, ...] = infos[0].descriptions if len(infos) == 1 else ()
    ratio = None
    t, pt = infos[0].transform, pan.transform
    if not t.is_identity and not pt.is_identity and pt.a:
        ratio = abs(t.a / pt.a)
    facts = delivery_facts([Path(p) for p in ms_paths], Path(pan_path), descriptions)
    return SceneFacts(bands, pan.count, ratio, infos[0].dtype, facts)


@dataclass
class BandMatch:
    """How the delivered MS bands map onto a model's."""

    order: tuple[int, ...] | None  # 0-based delivered band per model band; None: as delivered
    problem: str | None = None  # why the delivery does not fit, or None
    note: str = ""  # what was assumed or done, for the user


def _sensor_for(card: ModelCard, facts: SceneFacts) -> Sensor | None:
    detected = facts.delivery.sensor
    if detected is not None and detected.key in card.sensors:
        return detected
    return find_sensor(card.sensor) if card.sensor else None


def match_bands(card: ModelCard, facts: SceneFacts) -> BandMatch:
    model = tuple(card.bands)
    names = facts.delivery.band_names
    if not names:
        if model and facts.bands != len(model):
            return BandMatch(None, f"has {facts.bands} MS bands, the model fuses {len(model)} ({', '.join(model)})")
        if model:
            return BandMatch(None, note=f"bands unnamed: taken as {', '.join(model)} in that order")
        return BandMatch(None)
    sensor = _sensor_for(card, facts)
    canon: list[str | None] = []
    for n in names:
        b = sensor.band(n) if sensor is not None else None
        canon.append(b.name if b is not None else (n if n in model else None))
    if not model:
        return BandMatch(None)
    missing = [m for m in model if m not in canon]
    if missing:
        return BandMatch(
            None,
            f"its MS bands are {', '.join(names)} ({facts.delivery.band_source}); the model fuses "
            f"{', '.join(model)}, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not among them",
        )
    order = tuple(canon.index(m) for m in model)
    if order == tuple(range(len(names))):
        return BandMatch(None)
    delivered = ", ".join(names)
    if len(names) == len(model):
        note = f"MS bands delivered as {delivered} ({facts.delivery.band_source}): reordered to {', '.join(model)}"
    else:
        note = f"MS bands delivered as {delivered} ({facts.delivery.band_source}): {', '.join(model)} used"
    return BandMatch(order, note=note)


def card_problem(card: ModelCard, facts: SceneFacts) -> tuple[str | None, BandMatch]:
    """Why ``card``'s model does not fit the delivery (None when it does), and the band match."""
    if facts.ratio is not None and card.ratio and abs(facts.ratio - card.ratio) > 1e-3 * card.ratio:
        return f"ratio is {facts.ratio:g}, the model fuses ratio {card.ratio}", BandMatch(None)
    sensor = facts.delivery.sensor
    if sensor is not None and card.sensors and sensor.key not in card.sensors:
        return (
            f"the delivery is {sensor.title} ({facts.delivery.sensor_source}), the model is for "
            f"{', '.join(card.sensors)}",
            BandMatch(None),
        )
    want = int(card.extra.get("guide_bands", 1))  # cards before multi-band guides: a PAN
    if facts.guide_bands != want:
        taken = "one" if want == 1 else f"a {want}-band guide"
        return f"the PAN has {facts.guide_bands} bands, the model takes {taken}", BandMatch(None)
    match = match_bands(card, facts)
    return match.problem, match


@dataclass
class Selection:
    card: ModelCard
    checkpoint: Path
    match: BandMatch
    reason: str
    others: list[str] = field(default_factory=list)


def choose_model(
    ms_paths: Sequence[str | os.PathLike],
    pan_path: str | os.PathLike,
    cards: Sequence[ModelCard] | None = None,
) -> Selection:
    """The one model (of ``cards``, default the shipped ones) that fits the delivery; ValueError
    naming every model and why it does not fit when none does, or the candidates when several do
    equally well."""
    cards = list(shipped_cards() if cards is None else cards)
    facts = scene_facts(ms_paths, pan_path)
    fitting: list[tuple[ModelCard, BandMatch]] = []
    refusals: list[str] = []
    for card in cards:
        problem, match = card_problem(card, facts)
        if problem is None:
            fitting.append((card, match))
        else:
            refusals.append(f"{card.summary()}: {problem}")
    if not fitting:
        raise ValueError(
            f"no shipped model fits {Path(ms_paths[0]).name} + {Path(pan_path).name} ({facts.describe()}); "
            + "; ".join(refusals)
            + ". Give --model with a checkpoint trained for this sensor (ddif train)"
        )
    if len(fitting) > 1:
        # the sensor named by the delivery first, then the model that uses every delivered band
        sensor = facts.delivery.sensor
        if sensor is not None and any(sensor.key in c.sensors for c, _ in fitting):
            fitting = [(c, m) for c, m in fitting if sensor.key in c.sensors]
        exact = [(c, m) for c, m in fitting if len(c.bands) == facts.bands]
        if exact:
            fitting = exact
    if len(fitting) > 1:
        raise ValueError(
            f"several shipped models fit {Path(ms_paths[0]).name} + {Path(pan_path).name} ({facts.describe()}): "
            + "; ".join(c.summary() for c, _ in fitting)
            + ". Choose one with --model"
        )
    card, match = fitting[0]
    reason = f"model {card.name} ({card.summary().split(': ', 1)[1]}) picked for {facts.describe()}"
    return Selection(card, card.checkpoint_path, match, reason, refusals)


def check_card(card: ModelCard, ms_paths: Sequence[str | os.PathLike], pan_path: str | os.PathLike) -> BandMatch:
    """For a model given by the user: its band match with the delivery; ValueError when the card
    says it does not fit."""
    facts = scene_facts(ms_paths, pan_path)
    problem, match = card_problem(card, facts)
    if problem is not None:
        raise ValueError(f"model {card.name} does not fit {Path(ms_paths[0]).name} + {Path(pan_path).name}: {problem}")
    return match


__all__ = [
    "SceneFacts",
    "BandMatch",
    "Selection",
    "scene_facts",
    "match_bands",
    "card_problem",
    "choose_model",
    "check_card",
]
