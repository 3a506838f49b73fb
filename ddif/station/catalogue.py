"""The outbox as a catalogue: product folders put in place whole, and ``collection.json`` (a STAC
Collection) kept equal to the products on disk.

A product is staged in ``outbox/.<scene>.partial/`` and renamed into place when complete. A scene
re-delivered with other content takes the name; the previous folder is kept as ``<scene>.1``
(``.2``, ...), never destroyed or merged into. The collection is an index of the products rebuilt
from their items: a failure to write it is logged, leaves the products as they are and is repaired
by the next update.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ddif.station.events import EventLog
from ddif.station.products import product_items, update_collection
from ddif.station.quarantine import unique_dir
from ddif.utils.io import exchange_paths, fsync_dir


def place_product(staging: Path, final: Path, outbox: Path, log: EventLog) -> None:
    """Rename the whole product folder ``staging`` to ``final`` (in ``outbox``). A folder already
    there (a product of other inputs: a re-delivery with new content, or a folder from an older
    version) is kept under a new name: the new folder goes to that name, then the two swap in one
    step (renameat2 RENAME_EXCHANGE), so ``final`` always holds a whole product; without it, three
    renames."""
    if final.exists() or final.is_symlink():
        name = final.name
        previous = unique_dir(outbox, name)
        os.rename(staging, previous)
        if not exchange_paths(previous, final):
            tmp = outbox / f".{name}.superseded"
            os.rename(final, tmp)
            os.rename(previous, final)
            os.rename(tmp, previous)
        log.warning(
            "product_superseded",
            scene=name,
            previous=str(previous),
            note="the scene was fused again from inputs with other content",
        )
    else:
        os.rename(staging, final)
    fsync_dir(outbox)


class Catalogue:
    """``outbox/collection.json`` brought up to the products on disk: after a product is put in
    place, at start, and at the next poll after a failed update (:attr:`behind`)."""

    def __init__(self, outbox: Path, log: EventLog):
        self.outbox = outbox
        self.log = log
        self.behind = True  # checked (and repaired) at start

    def update(self, name: str | None = None) -> None:
        """Rebuild the collection (``name``: the scene whose product was just put in place)."""
        try:
            if not (self.outbox / "collection.json").exists() and (
                not self.outbox.is_dir() or not product_items(self.outbox)
            ):
                self.behind = False
                return  # no product yet: no collection
            update_collection(self.outbox)
        except (OSError, ValueError) as exc:
            self.behind = True
            self.log.warning("collection_not_updated", scene=name, error=f"{type(exc).__name__}: {exc}")
        else:
            if self.behind and name is None:
                self.log.info("collection_repaired", collection=str(self.outbox / "collection.json"))
            self.behind = False

    def is_current(self) -> bool:
        """Whether collection.json lists exactly the products on disk (readable, not behind)."""
        try:
            data = json.loads((self.outbox / "collection.json").read_text())
            listed = {lk.get("href") for lk in data.get("links", []) if lk.get("rel") == "item"}
        except (OSError, ValueError, AttributeError):
            return not product_items(self.outbox) if self.outbox.is_dir() else True
        return listed == {os.path.relpath(p, self.outbox) for p in product_items(self.outbox)}
