"""Sentinel-2 deliveries: find the ten 10 m / 20 m band files of a scene, as the provider ships
them, for 20 m -> 10 m sharpening.

Accepted layouts (:func:`find_bands`):

- a folder of band files named ``..._B02.tif`` ... ``..._B12.tif`` (GeoTIFF or JPEG 2000; Level-2A
  names with a resolution suffix, ``..._B05_20m.jp2``, too);
- a ``.SAFE`` product: ``GRANULE/*/IMG_DATA/*_Bxx.jp2`` (Level-1C) or
  ``GRANULE/*/IMG_DATA/R10m|R20m/*_Bxx_10m|20m.jp2`` (Level-2A; each band at its native
  resolution);
- a GDAL VRT whose sources are the band files (e.g. ``gdalbuildvrt -separate``): the band files it
  names are read at their own resolution (the VRT's own grid, which resamples the 20 m bands, is
  not used). Its sources must lie inside the VRT's folder.

The 20 m bands (B05, B06, B07, B8A, B11, B12) are what is sharpened, the 10 m bands (B02, B03,
B04, B08) are the guide (:data:`ddif.data.sensors.SENTINEL2_20M` / ``SENTINEL2_10M``). Where the
two grids sit relative to each other comes from the files' geotransforms and is handled by the
scene layer's placement (:func:`ddif.data.raster.placement`), as for any MS / PAN pair.

DN convention: L1C / L2A DN = reflectance x 10000. Products of processing baseline 04.00 and later
(from January 2022) add an offset (``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET``, -1000 DN); it is read
from the product's ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` where present and reported in
:attr:`Sentinel2Delivery.dn_offset`.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ddif.data.raster import MISSING_PARTNER, SceneError
from ddif.data.sensors import SENTINEL2_10M, SENTINEL2_20M, band_from_file_name, normalise_band_name

__all__ = [
    "Sentinel2Delivery",
    "canonical_band",
    "check_band_resolutions",
    "find_bands",
    "is_sentinel2_input",
    "offset_warning",
]

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
_WANTED = {normalise_band_name(b): b for b in (*SENTINEL2_10M, *SENTINEL2_20M)}


@dataclass(frozen=True)
class Sentinel2Delivery:
    """The band files of one Sentinel-2 scene."""

    source: Path  # the folder, .SAFE or VRT given
    layout: str  # "folder", "safe" or "vrt"
    bands: dict[str, Path]  # canonical name ("B02", "B8A", ...) -> file
    level: str | None = None  # "L1C" / "L2A" when the product says
    dn_offset: float = 0.0  # added to the DN before / 10000 (baseline >= 04.00: -1000)
    notes: list[str] = field(default_factory=list)

    @property
    def guide_files(self) -> list[Path]:
        return [self.bands[b] for b in SENTINEL2_10M]

    @property
    def sharpened_files(self) -> list[Path]:
        return [self.bands[b] for b in SENTINEL2_20M]


def canonical_band(path: str | Path) -> str | None:
    """'B05' for '..._B05.tif' / '..._B5.tif' / '..._B05_20m.jp2' when it is a 10 m or 20 m band."""
    name = band_from_file_name(path)
    return _WANTED.get(normalise_band_name(name)) if name else None


def is_sentinel2_input(path: str | Path) -> bool:
    """Whether ``path`` looks like a Sentinel-2 delivery (a .SAFE, a folder or a VRT holding the
    10 m and 20 m band files); cheap, nothing is opened but folder listings and the VRT text."""
    p = Path(path)
    try:
        return len(_candidates(p)[0]) > 0
    except (OSError, SceneError, ET.ParseError):
        return False


def _candidates(path: Path) -> tuple[dict[str, list[Path]], str]:
    if path.is_dir() and path.suffix.upper() == ".SAFE":
        files = sorted(path.glob("GRANULE/*/IMG_DATA/*")) + sorted(path.glob("GRANULE/*/IMG_DATA/R*m/*"))
        layout = "safe"
    elif path.is_dir():
        files = sorted(path.iterdir())
        layout = "folder"
    elif path.is_file() and path.suffix.lower() == ".vrt":
        files = _vrt_sources(path)
        layout = "vrt"
    else:
        return {}, "none"
    found: dict[str, list[Path]] = {}
    for f in files:
        if f.suffix.lower() in RASTER_SUFFIXES and f.is_file():
            band = canonical_band(f)
            if band is not None:
                found.setdefault(band, []).append(f)
    return found, layout


def _vrt_sources(vrt: Path) -> list[Path]:
    """The source files a VRT names, relative to it, required to stay in its folder. The check is
    on the path the VRT writes (``..`` or an absolute path elsewhere is refused); a symbolic link
    placed in the folder is the user's own choice and is followed."""
    root = ET.parse(vrt).getroot()
    base = Path(os.path.abspath(vrt.parent))
    out = []
    for node in root.iter("SourceFilename"):
        text = (node.text or "").strip()
        relative = node.get("relativeToVRT", "0") == "1"
        src = (base / text) if relative or not Path(text).is_absolute() else Path(text)
        lexical = Path(os.path.normpath(os.path.abspath(src)))
        if base not in (lexical, *lexical.parents):
            raise SceneError(MISSING_PARTNER, f"{vrt}: source {text!r} lies outside the VRT's folder {base}; refused")
        out.append(lexical)
    return out


def _pick(band: str, files: list[Path]) -> Path:
    """One file per band: a band at its native resolution wins (L2A ships resampled copies)."""
    native = "_10m" if band in SENTINEL2_10M else "_20m"
    for f in files:
        if native in f.stem.lower():
            return f
    if len(files) > 1:
        listed = ", ".join(str(f) for f in files)
        raise SceneError(MISSING_PARTNER, f"{band}: several files ({listed}); give a folder with one file per band")
    return files[0]


def _product_metadata(path: Path, layout: str) -> tuple[str | None, float, list[str]]:
    """(level, DN offset, notes) from MTD_MSIL1C.xml / MTD_MSIL2A.xml (a .SAFE, or beside the files)."""
    folder = path if path.is_dir() else path.parent
    for name, level in (("MTD_MSIL2A.xml", "L2A"), ("MTD_MSIL1C.xml", "L1C")):
        mtd = folder / name
        if mtd.is_file():
            text = mtd.read_text(encoding="utf-8", errors="replace")
            offsets = [float(v) for v in re.findall(r"<(?:BOA|RADIO)_ADD_OFFSET[^>]*>\s*(-?\d+(?:\.\d+)?)\s*<", text)]
            if offsets and len(set(offsets)) > 1:
                return level, offsets[0], [f"{name}: band offsets differ ({sorted(set(offsets))}); the first is used"]
            return level, (offsets[0] if offsets else 0.0), []
    return None, 0.0, []


# processing baseline 04.00 (DN offset -1000) was introduced on 25 January 2022
BASELINE_0400_DATE = "20220125"


def check_band_resolutions(delivery: Sentinel2Delivery) -> None:
    """Each band file at its band's resolution (10 m or 20 m, one grid per resolution), read from
    the headers: a 20 m band delivered at 10 m (or the reverse) is named, before any model check
    would report it as a wrong ratio."""
    from ddif.data.raster import BAD_GRID, open_raster

    expected = {b: 10.0 for b in SENTINEL2_10M} | {b: 20.0 for b in SENTINEL2_20M}
    for band, path in delivery.bands.items():
        info = open_raster(path, f"Sentinel-2 {band}")
        res = abs(float(info.transform.a))
        if abs(res - expected[band]) > 1e-3 * expected[band]:
            raise SceneError(
                BAD_GRID,
                f"{path}: band {band} has {res:g} m pixels, expected {expected[band]:g} m "
                f"({'a 10 m guide band' if band in SENTINEL2_10M else 'a 20 m band to sharpen'})",
            )


def offset_warning(delivery: Sentinel2Delivery) -> str | None:
    """A warning when the DN offset is unknown but the acquisition date in the file names is on or
    after processing baseline 04.00 (its products add 1000 to every DN) and no MTD file says."""
    if delivery.level is not None or delivery.dn_offset:
        return None
    dates = {m for f in delivery.bands.values() for m in re.findall(r"(?<!\d)(20\d{6})(?!\d)", f.name)}
    late = sorted(d for d in dates if d >= BASELINE_0400_DATE)
    if not late:
        return None
    return (
        f"{delivery.source}: acquired {late[0]} (processing baseline 04.00 or later adds 1000 to every DN) and no "
        "MTD_MSIL1C.xml / MTD_MSIL2A.xml says which baseline: the DN are taken as reflectance x 10000; give "
        "--input-offset -1000 if the product is of baseline 04.00 or later"
    )


def find_bands(path: str | Path) -> Sentinel2Delivery:
    """The ten 10 m / 20 m band files of the Sentinel-2 delivery at ``path``; :class:`SceneError`
    naming the missing bands (and what was found) when any is absent."""
    path = Path(path)
    if not path.exists():
        raise SceneError(MISSING_PARTNER, f"{path}: no such folder, .SAFE or VRT")
    found, layout = _candidates(path)
    if layout == "none":
        raise SceneError(MISSING_PARTNER, f"{path}: expected a folder of band files, a .SAFE product or a VRT")
    wanted = (*SENTINEL2_10M, *SENTINEL2_20M)
    missing = [b for b in wanted if b not in found]
    if missing:
        have = ", ".join(sorted(found)) or "none"
        raise SceneError(
            MISSING_PARTNER,
            f"{path}: Sentinel-2 bands {', '.join(missing)} not found (found: {have}); 20 m -> 10 m sharpening "
            f"needs the 10 m bands {', '.join(SENTINEL2_10M)} and the 20 m bands {', '.join(SENTINEL2_20M)}, "
            "as files named ..._B02.tif ... ..._B12.tif (or .jp2)",
        )
    bands = {b: _pick(b, found[b]) for b in wanted}
    level, offset, notes = _product_metadata(path, layout)
    return Sentinel2Delivery(path, layout, bands, level, offset, notes)
