"""The models shipped with ddif, and their cards.

    ddif models                 # one line per model: name, sensor, bands + PAN, ratio, DN range, steps
    ddif models landsat8        # that model's card (JSON): training data and licence, recipe, tables
    ddif models --json          # every card as a JSON list

Use a name wherever a model is asked for (``ddif fuse --model landsat8``, ``ddif station run
--model worldview2``); ``ddif fuse`` without ``--model`` picks the one that fits the inputs.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, help="show this model's card")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")


def run(args: argparse.Namespace) -> int:
    from ddif.models.cards import resolve_model, shipped_cards

    if args.name:
        path, card = resolve_model(args.name)
        if card is None:
            raise ValueError(f"{path}: has no model card beside it ({path.stem}.card.json)")
        print(card.to_json(), end="")
        return 0
    cards = shipped_cards()
    if args.json:
        print(json.dumps([json.loads(c.to_json()) for c in cards], indent=2))
        return 0
    rows = [("name", "sensor", "bands + guide", "ratio", "DN", "steps", "trained on")]
    for c in cards:
        dn = c.dn.get("max_dn")
        data = c.training_data.get("summary", "")
        rows.append(
            (
                c.name,
                ", ".join(c.sensors) or "-",
                ", ".join(c.bands) + f" + {c.pan or 'PAN'}",
                str(c.ratio),
                f"0-{dn:g}" if isinstance(dn, (int, float)) else "-",
                str(c.default_steps or "-"),
                data + (" (semi-synthetic PAN)" if c.semi_synthetic else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print("\n`ddif models NAME` prints a model's card; `ddif fuse` picks the model that fits the inputs.")
    return 0
