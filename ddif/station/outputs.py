"""The one output-path planner: every file a scene's fusion writes, decided and checked up front.

A product ``S.tif`` comes with side-cars: ``S_quicklook.png``, ``S_report.json``, the STAC item
``S.json``, the tile journal ``.S.tif.journal/`` (and, for ``ddif fuse``, the band stacks
``S_MS.vrt`` / ``S_PAN.vrt`` and an adapted model ``S_adapted.pt``). :func:`plan_outputs` names
them all; :func:`check_outputs` refuses, before anything is read or written, a set where two
outputs are the same file, an output is an input (or a file an input reads, such as a VRT's
source), or the product is not a GeoTIFF path (``ddif fuse MS PAN S.json`` would make the STAC
item overwrite the product). Used by :func:`ddif.station.run.run_scene` and ``ddif fuse``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PRODUCT_SUFFIXES = (".tif", ".tiff")


def default_journal_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.journal"


@dataclass
class OutputPaths:
    product: Path
    quicklook: Path
    report: Path
    stac_item: Path | None
    journal: Path
    extra: dict[str, Path] = field(default_factory=dict)  # e.g. band stacks, an adapted model

    def files(self) -> dict[str, Path]:
        out = {"product": self.product, "quicklook": self.quicklook, "report": self.report, "journal": self.journal}
        if self.stac_item is not None:
            out["STAC item"] = self.stac_item
        out.update(self.extra)
        return out


def plan_outputs(
    product: str | os.PathLike,
    *,
    quicklook: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    stac_item: str | os.PathLike | None = None,
    journal: str | os.PathLike | None = None,
    write_stac: bool = True,
    extra: Mapping[str, str | os.PathLike] | None = None,
) -> OutputPaths:
    """The product's side-car paths (defaults beside it, named from its stem)."""
    out = Path(product)
    return OutputPaths(
        product=out,
        quicklook=Path(quicklook) if quicklook else out.with_name(out.stem + "_quicklook.png"),
        report=Path(report) if report else out.with_name(out.stem + "_report.json"),
        stac_item=(Path(stac_item) if stac_item else out.with_suffix(".json")) if write_stac else None,
        journal=Path(journal) if journal else default_journal_dir(out),
        extra={k: Path(v) for k, v in (extra or {}).items()},
    )


def _key(p: Path) -> str:
    return os.path.realpath(p)


def read_by(inputs: Iterable[str | os.PathLike]) -> dict[str, str]:
    """realpath -> description of every file the inputs make GDAL read (the inputs themselves
    and, for VRTs, their sources)."""
    from ddif.data.raster import SceneError, raster_references

    out: dict[str, str] = {}
    for p in inputs:
        path = Path(p)
        out.setdefault(_key(path), f"input {path}")
        try:
            refs = raster_references(path) if path.is_file() else []
        except (SceneError, OSError):
            refs = []
        for ref in refs:
            if not ref.startswith("/vsi"):
                out.setdefault(_key(Path(ref)), f"{ref} (read by {path.name})")
    return out


def check_outputs(outputs: OutputPaths, inputs: Iterable[str | os.PathLike]) -> None:
    """ValueError (one line, naming the paths) when the outputs collide with each other or with
    what the inputs are read from, or the product is not a GeoTIFF path / is a folder."""
    product = outputs.product
    if product.suffix.lower() not in PRODUCT_SUFFIXES:
        raise ValueError(
            f"output {product}: a product is a GeoTIFF, its name must end in .tif (its STAC item is "
            f"{product.with_suffix('.json').name}, its report {product.stem}_report.json)"
        )
    if product.is_dir():
        raise ValueError(f"output {product} is a folder; give the product's file name (e.g. {product / 'scene.tif'})")
    taken: dict[str, str] = {}
    for what, path in outputs.files().items():
        key = _key(path)
        if key in taken:
            raise ValueError(
                f"output {path}: the {what} and the {taken[key]} would be the same file; rename the output"
            )
        taken[key] = what
    sources = read_by(inputs)
    for what, path in outputs.files().items():
        hit = sources.get(_key(path))
        if hit is not None:
            raise ValueError(f"output {path}: the {what} would overwrite {hit}; give the output another name")


__all__ = ["OutputPaths", "plan_outputs", "check_outputs", "default_journal_dir", "read_by"]
