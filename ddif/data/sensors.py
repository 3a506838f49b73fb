"""The sensor registry: what ddif knows about each optical sensor in one place.

Per sensor: its bands (name, aliases, band pass), the PAN band pass, the DN range of its standard
product, its native MS / PAN ratio and how a delivery names itself (file-name patterns, metadata
files), and the MTF gains at Nyquist of every sensor the degradations know (:data:`SENSOR_MTF`, the
toolbox's table indexed by band position, with :data:`SENSOR_ALIASES`); :meth:`Sensor.mtf_gains`
maps named bands to them, :meth:`Sensor.band_passes` gives the band-pass table. Model cards
(:mod:`ddif.models.cards`) name their sensor and bands by the keys used here.

Band passes: Landsat-8/9 OLI and Landsat-7 ETM+ from USGS ("What are the band designations for the
Landsat satellites?"); WorldView-2 / -3 from Maxar's spectral response documentation (band
edges, 50 % points); QuickBird, IKONOS and GeoEye-1 from their operators' specifications.
numpy-free, torch-free: importable anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Band:
    name: str  # the canonical name ("B4", "red")
    passband_nm: tuple[float, float]
    aliases: tuple[str, ...] = ()  # other names a delivery may use ("red", "b4", "band 4")

    def matches(self, text: str) -> bool:
        key = normalise_band_name(text)
        return key == normalise_band_name(self.name) or key in {normalise_band_name(a) for a in self.aliases}


@dataclass(frozen=True)
class Sensor:
    key: str  # registry key, also the SENSOR_MTF key
    title: str
    bands: tuple[Band, ...]  # every MS band, in the order of SENSOR_MTF's gains
    pan_passband_nm: tuple[float, float] | None
    ratio: int  # native MS / PAN pixel-size ratio
    max_dn: float  # largest DN of its standard product (2**bits - 1)
    dn_bits: int
    aliases: tuple[str, ...] = ()
    # regular expressions matched (case-insensitively) against file names of a delivery
    file_patterns: tuple[str, ...] = ()
    # metadata values that identify it: (key, value) pairs as read from an _MTL.txt / .IMD file
    metadata_ids: tuple[tuple[str, str], ...] = ()
    mtf_key: str = ""  # key into SENSOR_MTF when it differs from ``key``
    notes: str = ""

    def band(self, name: str) -> Band | None:
        for b in self.bands:
            if b.matches(name):
                return b
        return None

    def band_index(self, name: str) -> int | None:
        for i, b in enumerate(self.bands):
            if b.matches(name):
                return i
        return None

    def canonical(self, names: Sequence[str]) -> tuple[str, ...] | None:
        """The canonical names of ``names`` (each a name or alias of one of this sensor's bands),
        or None when one of them is not a band of this sensor."""
        out = []
        for n in names:
            b = self.band(n)
            if b is None:
                return None
            out.append(b.name)
        return tuple(out)

    def mtf_gains(self, names: Sequence[str]) -> tuple[tuple[float, ...], float]:
        """(MS gains of the named bands, PAN gain) from :data:`SENSOR_MTF`."""
        gains, pan = SENSOR_MTF[self.mtf_key or self.key]
        out = []
        for n in names:
            i = self.band_index(n)
            if i is None:
                raise ValueError(f"sensor {self.key}: no band named {n!r} (bands: {[b.name for b in self.bands]})")
            out.append(float(gains[0] if len(gains) == 1 else gains[i]))
        return tuple(out), float(pan)

    def band_passes(self, pan_name: str | None = None) -> dict[str, tuple[float, float]]:
        """Band name -> (lower, upper) band edge in nm, every MS band; the PAN band's too under
        ``pan_name`` (e.g. "B8" for Landsat) when given."""
        table = {b.name: b.passband_nm for b in self.bands}
        if pan_name is not None:
            if self.pan_passband_nm is None:
                raise ValueError(f"sensor {self.key} has no PAN band")
            table[pan_name] = self.pan_passband_nm
        return table

    def pan_weights(self, names: Sequence[str]) -> tuple[float, ...]:
        """Band-pass overlap of the named bands with the PAN band, normalised to sum 1 (box
        approximation of the spectral responses): the nominal weights of a synthetic PAN."""
        if self.pan_passband_nm is None:
            raise ValueError(f"sensor {self.key} has no PAN band")
        lo_p, hi_p = self.pan_passband_nm
        overlaps = []
        for n in names:
            b = self.band(n)
            if b is None:
                raise ValueError(f"sensor {self.key}: no band named {n!r}")
            lo, hi = b.passband_nm
            overlaps.append(max(0.0, min(hi, hi_p) - max(lo, lo_p)))
        total = sum(overlaps)
        if total <= 0:
            raise ValueError(f"sensor {self.key}: none of the bands {list(names)} overlaps the PAN band")
        return tuple(o / total for o in overlaps)


# Per sensor: (MS gains of the MTF at the Nyquist frequency of the MS grid, one per band, or a
# single value that applies to every band; PAN gain at the same frequency).
# Values from the toolbox (genMTF.m / MTF_PAN.m, Vivone et al. 2015/2021; Aiazzi et al. 2006).
SENSOR_MTF: dict[str, tuple[tuple[float, ...], float]] = {
    # WorldView-3, 8 bands (coastal, blue, green, yellow, red, red edge, NIR1, NIR2). The toolbox's
    # MTF_PAN.m gives 0.14 for the WV3 PAN (0.15 is QuickBird's / the generic value).
    "wv3": ((0.325, 0.355, 0.360, 0.350, 0.365, 0.360, 0.335, 0.315), 0.14),
    # WorldView-2, 8 bands.
    "wv2": ((0.35, 0.35, 0.35, 0.35, 0.35, 0.35, 0.35, 0.27), 0.11),
    # QuickBird, 4 bands (B, G, R, NIR).
    "qb": ((0.34, 0.32, 0.30, 0.22), 0.15),
    # IKONOS, 4 bands (B, G, R, NIR).
    "ikonos": ((0.26, 0.28, 0.29, 0.28), 0.17),
    # GeoEye-1 and WorldView-4 (grouped together in the toolbox), 4 bands.
    "geoeye1": ((0.23, 0.23, 0.23, 0.23), 0.16),
    "wv4": ((0.23, 0.23, 0.23, 0.23), 0.16),
    # GaoFen-2: no published per-band values; the toolbox's default for unlisted sensors.
    "gf2": ((0.3,), 0.15),
    # Landsat. The toolbox has no Landsat entry (its genMTF.m lists QB, IKONOS, GeoEye1/WV4, WV2 and
    # WV3, everything else gets 0.3; MTF_PAN.m lists QB, IKONOS, GeoEye1, WV2, WV3 and 0.15 for
    # 'none'), and neither do the benchmark papers above (their data sets are VHR sensors). Measured
    # Landsat spatial responses exist: J. C. Storey, "Landsat 7 on-orbit modulation transfer
    # function estimation", Proc. SPIE 4540, 50-61, 2001 (ETM+ modulation at Nyquist from the Lake
    # Pontchartrain causeway; the degradation it trends is mainly in the 15 m PAN band), and for
    # OLI E. J. Knight and G. Kvaran, "Landsat-8 Operational Land Imager design, characterization
    # and performance", Remote Sens. 6(11), 10286-10305, 2014 (pre-launch and on-orbit
    # characterisation). Their per-band numbers were not available when these entries were written
    # (J. C. Storey et al., "Landsat 8 Operational Land Imager on-orbit geometric calibration and
    # performance", Remote Sens. 6(11), 11127-11152, 2014, is the geometric companion paper: its
    # abstract covers geolocation and band registration, not the MTF), so no measured value is
    # claimed here: all three entries use the toolbox's values for a sensor without a measured entry,
    # MS 0.3 (genMTF.m 'otherwise') and PAN 0.15 (MTF_PAN.m 'none'). Replace them with per-band
    # values from those papers once checked against the text.
    # Landsat-7 ETM+ (bands 1-5, 7 at 30 m; band 8 PAN at 15 m, ratio 2).
    "landsat7": ((0.3,), 0.15),
    # Landsat-8 OLI (bands 1-7, 9 at 30 m; band 8 PAN at 15 m, ratio 2).
    "landsat8": ((0.3,), 0.15),
    # Landsat-9 OLI-2: built to the OLI design, with the same bands and 15 m / 30 m sampling; same
    # values as Landsat-8 (no separate measurement is claimed).
    "landsat9": ((0.3,), 0.15),
    # Sentinel-2 MSI, the ten 10 m / 20 m bands in the registry's order (B02, B03, B04, B05, B06,
    # B07, B08, B8A, B11, B12), and for the "PAN" role the 10 m guide bands (B02, B03, B04, B08:
    # 0.26, 0.28, 0.24, 0.26, their mean). MTF at each band's Nyquist as used for Sentinel-2
    # sharpening by M. O. Ulfarsson et al., "Sentinel-2 sharpening using a reduced-rank method",
    # IEEE TGRS 57(9), 6408-6420, 2019 (S2Sharp), who take them from ESA's Sentinel-2 data quality
    # reports; recalled from that work, not re-checked here against the reports themselves.
    "sentinel2": ((0.26, 0.28, 0.24, 0.38, 0.34, 0.34, 0.26, 0.33, 0.23, 0.22), 0.26),
    # Any other sensor: the toolbox's default (genMTF 'otherwise' 0.3; MTF_PAN 0.15).
    "generic": ((0.3,), 0.15),
    # No filtering at all (gain 1 at Nyquist = all-pass, the kernel is a unit impulse); used for the
    # hyperspectral presets whose degradation is defined by the dataset, not by a sensor MTF.
    "none": ((1.0,), 1.0),
}

SENSOR_ALIASES: dict[str, str] = {
    "worldview3": "wv3",
    "worldview-3": "wv3",
    "wv-3": "wv3",
    "worldview2": "wv2",
    "worldview-2": "wv2",
    "wv-2": "wv2",
    "worldview4": "wv4",
    "worldview-4": "wv4",
    "quickbird": "qb",
    "geoeye": "geoeye1",
    "geoeye-1": "geoeye1",
    "ge1": "geoeye1",
    "gaofen2": "gf2",
    "gaofen-2": "gf2",
    "gf-2": "gf2",
    "landsat-7": "landsat7",
    "l7": "landsat7",
    "etm": "landsat7",
    "etm+": "landsat7",
    "landsat-8": "landsat8",
    "l8": "landsat8",
    "oli": "landsat8",
    "landsat-9": "landsat9",
    "l9": "landsat9",
    "oli2": "landsat9",
    "oli-2": "landsat9",
    "sentinel-2": "sentinel2",
    "s2": "sentinel2",
    "msi": "sentinel2",
}


def normalise_band_name(text: str) -> str:
    """Case, spaces, dashes, underscores and leading zeros of a band number do not matter:
    'B04', 'b4', 'Band 4', 'band_4' are all 'b4'; 'NIR-1' is 'nir1'."""
    t = re.sub(r"[\s_\-]+", "", str(text).strip().lower())
    m = re.fullmatch(r"(?:band|b)0*(\d+a?)", t)
    if m:
        return "b" + m.group(1)
    return t


def _oli_bands() -> tuple[Band, ...]:
    return (
        Band("B1", (430.0, 450.0), ("coastal", "coastal aerosol", "ultra blue")),
        Band("B2", (450.0, 510.0), ("blue",)),
        Band("B3", (530.0, 590.0), ("green",)),
        Band("B4", (640.0, 670.0), ("red",)),
        Band("B5", (850.0, 880.0), ("nir", "near infrared")),
        Band("B6", (1570.0, 1650.0), ("swir1", "swir 1")),
        Band("B7", (2110.0, 2290.0), ("swir2", "swir 2")),
    )


def _msi_bands() -> tuple[Band, ...]:
    """Sentinel-2 MSI bands at 10 m and 20 m (centre +- half the bandwidth, S2A)."""
    return (
        Band("B02", (458.0, 523.0), ("blue",)),
        Band("B03", (543.0, 578.0), ("green",)),
        Band("B04", (650.0, 680.0), ("red",)),
        Band("B05", (698.0, 713.0), ("red edge 1", "re1")),
        Band("B06", (733.0, 748.0), ("red edge 2", "re2")),
        Band("B07", (773.0, 793.0), ("red edge 3", "re3")),
        Band("B08", (785.0, 900.0), ("nir",)),
        Band("B8A", (855.0, 875.0), ("nir narrow", "narrow nir", "nir2")),
        Band("B11", (1565.0, 1655.0), ("swir1", "swir 1")),
        Band("B12", (2100.0, 2280.0), ("swir2", "swir 2")),
    )


#: Sentinel-2's 10 m bands (the guide) and 20 m bands (what is sharpened), and the order of a
#: sharpened 10 m product.
SENTINEL2_10M = ("B02", "B03", "B04", "B08")
SENTINEL2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
SENTINEL2_PRODUCT_ORDER = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


SENSORS: dict[str, Sensor] = {
    s.key: s
    for s in (
        Sensor(
            "sentinel2",
            "Sentinel-2 MSI",
            _msi_bands(),
            None,
            ratio=2,
            max_dn=10000.0,
            dn_bits=16,
            aliases=("sentinel-2", "s2", "msi", "s2a", "s2b", "s2c"),
            file_patterns=(r"^S2[ABC]?_", r"^T\d{2}[A-Z]{3}_\d{8}T\d{6}_B"),
            metadata_ids=(("SPACECRAFT_NAME", "Sentinel-2A"), ("SPACECRAFT_NAME", "Sentinel-2B")),
            notes="no PAN: the 20 m bands are sharpened with the 10 m bands as a 4-band guide; L1C / L2A "
            "DN = reflectance x 10000 (L2A from baseline 04.00 with BOA_ADD_OFFSET -1000); max_dn is the "
            "DN of reflectance 1",
        ),
        Sensor(
            "landsat8",
            "Landsat-8 OLI",
            _oli_bands(),
            (500.0, 680.0),
            ratio=2,
            max_dn=65535.0,
            dn_bits=16,
            aliases=("landsat-8", "l8", "oli", "lc08", "lc8"),
            file_patterns=(r"^LC08_", r"^LO08_", r"^LC8\d{13}", r"^LO8\d{13}"),
            metadata_ids=(("SPACECRAFT_ID", "LANDSAT_8"),),
            notes="Level-1 DN are 16-bit (Collection 1/2); PAN B8 at 15 m, MS at 30 m",
        ),
        Sensor(
            "landsat9",
            "Landsat-9 OLI-2",
            _oli_bands(),
            (500.0, 680.0),
            ratio=2,
            max_dn=65535.0,
            dn_bits=16,
            aliases=("landsat-9", "l9", "oli2", "oli-2", "lc09"),
            file_patterns=(r"^LC09_", r"^LO09_"),
            metadata_ids=(("SPACECRAFT_ID", "LANDSAT_9"),),
            notes="built to the OLI design: same bands and sampling as Landsat-8",
        ),
        Sensor(
            "landsat7",
            "Landsat-7 ETM+",
            (
                Band("B1", (450.0, 520.0), ("blue",)),
                Band("B2", (520.0, 600.0), ("green",)),
                Band("B3", (630.0, 690.0), ("red",)),
                Band("B4", (770.0, 900.0), ("nir",)),
                Band("B5", (1550.0, 1750.0), ("swir1",)),
                Band("B7", (2090.0, 2350.0), ("swir2",)),
            ),
            (520.0, 900.0),
            ratio=2,
            max_dn=255.0,
            dn_bits=8,
            aliases=("landsat-7", "l7", "etm", "etm+", "le07", "le7"),
            file_patterns=(r"^LE07_", r"^LE7\d{13}"),
            metadata_ids=(("SPACECRAFT_ID", "LANDSAT_7"),),
        ),
        Sensor(
            "wv2",
            "WorldView-2",
            (
                Band("coastal", (400.0, 450.0), ("c", "coastal blue")),
                Band("blue", (450.0, 510.0), ("b",)),
                Band("green", (510.0, 580.0), ("g",)),
                Band("yellow", (585.0, 625.0), ("y",)),
                Band("red", (630.0, 690.0), ("r",)),
                Band("rededge", (705.0, 745.0), ("red edge", "re")),
                Band("nir1", (770.0, 895.0), ("nir", "near infrared 1", "n1")),
                Band("nir2", (860.0, 1040.0), ("near infrared 2", "n2")),
            ),
            (450.0, 800.0),
            ratio=4,
            max_dn=2047.0,
            dn_bits=11,
            aliases=("worldview2", "worldview-2", "wv-2", "wv02"),
            file_patterns=(r"WV0?2[_\-.]", r"worldview-?2"),
            metadata_ids=(("satId", "WV02"),),
        ),
        Sensor(
            "wv3",
            "WorldView-3",
            (
                Band("coastal", (400.0, 450.0), ("c",)),
                Band("blue", (450.0, 510.0), ("b",)),
                Band("green", (510.0, 580.0), ("g",)),
                Band("yellow", (585.0, 625.0), ("y",)),
                Band("red", (630.0, 690.0), ("r",)),
                Band("rededge", (705.0, 745.0), ("red edge", "re")),
                Band("nir1", (770.0, 895.0), ("nir", "n1")),
                Band("nir2", (860.0, 1040.0), ("n2",)),
            ),
            (450.0, 800.0),
            ratio=4,
            max_dn=2047.0,
            dn_bits=11,
            aliases=("worldview3", "worldview-3", "wv-3", "wv03"),
            file_patterns=(r"WV0?3[_\-.]", r"worldview-?3"),
            metadata_ids=(("satId", "WV03"),),
        ),
        Sensor(
            "qb",
            "QuickBird",
            (
                Band("blue", (450.0, 520.0), ("b",)),
                Band("green", (520.0, 600.0), ("g",)),
                Band("red", (630.0, 690.0), ("r",)),
                Band("nir", (760.0, 900.0), ("n", "nir1")),
            ),
            (450.0, 900.0),
            ratio=4,
            max_dn=2047.0,
            dn_bits=11,
            aliases=("quickbird", "qb02"),
            file_patterns=(r"QB0?2[_\-.]", r"quickbird"),
            metadata_ids=(("satId", "QB02"),),
        ),
        Sensor(
            "ikonos",
            "IKONOS",
            (
                Band("blue", (445.0, 516.0), ("b",)),
                Band("green", (506.0, 595.0), ("g",)),
                Band("red", (632.0, 698.0), ("r",)),
                Band("nir", (757.0, 853.0), ("n", "nir1")),
            ),
            (526.0, 929.0),
            ratio=4,
            max_dn=2047.0,
            dn_bits=11,
            aliases=("ikonos-2",),
            file_patterns=(r"ikonos", r"^po_\d+"),
        ),
        Sensor(
            "geoeye1",
            "GeoEye-1",
            (
                Band("blue", (450.0, 510.0), ("b",)),
                Band("green", (510.0, 580.0), ("g",)),
                Band("red", (655.0, 690.0), ("r",)),
                Band("nir", (780.0, 920.0), ("n", "nir1")),
            ),
            (450.0, 800.0),
            ratio=4,
            max_dn=2047.0,
            dn_bits=11,
            aliases=("geoeye", "geoeye-1", "ge1", "ge01"),
            file_patterns=(r"GE0?1[_\-.]", r"geoeye-?1"),
            metadata_ids=(("satId", "GE01"),),
        ),
    )
}

_ALIASES: dict[str, str] = {}
for _s in SENSORS.values():
    _ALIASES[_s.key] = _s.key
    for _a in _s.aliases:
        _ALIASES[_a.lower()] = _s.key


def product_band_layout(sensor: str, fused: Sequence[str], guide: Sequence[str]) -> list[tuple[str, int, str]] | None:
    """The bands of a product that carries the guide bands beside the sharpened ones, in the
    sensor's own band order: ``[(kind, index, name)]`` with kind "fused" (index into the fused
    bands) or "guide" (index into the guide bands), names canonical. None when the model names no
    guide bands or the sensor does not list every band (then the product is the fused bands alone).
    Sentinel-2: B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12 from six sharpened 20 m bands and
    the four 10 m guide bands."""
    entry = find_sensor(sensor) if sensor else None
    if entry is None or not guide or not fused:
        return None
    placed = []
    for kind, names in (("fused", fused), ("guide", guide)):
        for i, name in enumerate(names):
            pos = entry.band_index(name)
            if pos is None:
                return None
            placed.append((pos, kind, i, entry.bands[pos].name))
    if len({p[0] for p in placed}) != len(placed):
        return None
    return [(kind, i, name) for _, kind, i, name in sorted(placed)]


def get_sensor(name: str) -> Sensor:
    """The registry entry of ``name`` (key or alias, case-insensitive); ``ValueError`` naming the
    known ones otherwise."""
    key = _ALIASES.get(str(name).strip().lower())
    if key is None:
        raise ValueError(f"unknown sensor {name!r}; known: {', '.join(sorted(SENSORS))}")
    return SENSORS[key]


def find_sensor(name: str) -> Sensor | None:
    key = _ALIASES.get(str(name).strip().lower())
    return None if key is None else SENSORS[key]


# --------------------------------------------------------------------------------------------
# what a delivery says about itself
# --------------------------------------------------------------------------------------------
@dataclass
class DeliveryFacts:
    """What the file names and metadata of an MS + PAN delivery tell: the sensor (when they say)
    and where it came from, and the MS band names in the order given."""

    sensor: Sensor | None = None
    sensor_source: str = ""  # "file name X", "metadata X"
    band_names: tuple[str, ...] = ()  # the MS bands in delivery order, () when unnamed
    band_source: str = ""
    notes: list[str] = field(default_factory=list)


# the band token just before the extension, or before a Sentinel-2 L2A resolution suffix (_B05_20m.jp2)
_BAND_IN_NAME = re.compile(r"[_\-.](B0?\d{1,2}A?)(?:_\d{2}m)?(?=\.[A-Za-z0-9]+$)", re.IGNORECASE)


def band_from_file_name(path: str | Path) -> str | None:
    """'B4' from '..._B4.TIF' / '..._B04.tif' / '..._B04_10m.jp2' (Landsat, Sentinel-2 style), else None."""
    m = _BAND_IN_NAME.search(Path(path).name)
    if not m:
        return None
    text = m.group(1).upper()
    num = re.fullmatch(r"B0*(\d+A?)", text)
    return f"B{num.group(1)}" if num else text


def read_metadata_file(path: str | Path) -> dict[str, str]:
    """``KEY = value`` pairs of a Landsat ``_MTL.txt`` or a Maxar ``.IMD`` (quotes and trailing
    semicolons stripped; the last value of a repeated key wins). Unreadable files give {}."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines()[:20000]:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        out[key.strip()] = value.strip().rstrip(";").strip().strip('"')
    return out


def metadata_files_near(paths: Iterable[str | Path]) -> list[Path]:
    """The ``*_MTL.txt`` / ``*.IMD`` files beside the given rasters (same folder)."""
    found: list[Path] = []
    for folder in sorted({Path(p).resolve().parent for p in paths}):
        try:
            for candidate in sorted(folder.iterdir()):
                name = candidate.name.lower()
                if (name.endswith("_mtl.txt") or name.endswith(".imd")) and candidate.is_file():
                    found.append(candidate)
        except OSError:
            continue
    return found


def sensor_from_metadata(meta: dict[str, str]) -> Sensor | None:
    for s in SENSORS.values():
        for key, value in s.metadata_ids:
            if meta.get(key, "").strip().upper() == value.upper():
                return s
    return None


def sensor_from_file_names(paths: Iterable[str | Path]) -> tuple[Sensor | None, str]:
    """The one sensor whose file patterns match the names, and the name that matched."""
    hits: dict[str, str] = {}
    for p in paths:
        name = Path(p).name
        for s in SENSORS.values():
            if any(re.search(pat, name, re.IGNORECASE) for pat in s.file_patterns):
                hits.setdefault(s.key, name)
    if len(hits) == 1:
        key, name = next(iter(hits.items()))
        return SENSORS[key], name
    return None, ""


def delivery_facts(
    ms_paths: Sequence[str | Path], pan_path: str | Path, descriptions: Sequence[str | None] = ()
) -> DeliveryFacts:
    """Sensor and MS band names of a delivery, from (in order of trust) a metadata file beside it
    (``_MTL.txt`` / ``.IMD``), its file names, and the raster's band descriptions."""
    facts = DeliveryFacts()
    all_paths = [*ms_paths, pan_path]
    for meta_path in metadata_files_near(all_paths):
        sensor = sensor_from_metadata(read_metadata_file(meta_path))
        if sensor is not None:
            facts.sensor, facts.sensor_source = sensor, f"metadata {meta_path.name}"
            break
    if facts.sensor is None:
        sensor, name = sensor_from_file_names(all_paths)
        if sensor is not None:
            facts.sensor, facts.sensor_source = sensor, f"file name {name}"
    if len(ms_paths) > 1:
        names = [band_from_file_name(p) for p in ms_paths]
        if all(names):
            facts.band_names = tuple(n for n in names if n)
            facts.band_source = "file names"
    if not facts.band_names:
        desc = tuple((d or "").strip() for d in descriptions)
        if desc and all(desc):
            facts.band_names = desc
            facts.band_source = "band descriptions"
    return facts


__all__ = [
    "Band",
    "Sensor",
    "SENSORS",
    "DeliveryFacts",
    "get_sensor",
    "find_sensor",
    "normalise_band_name",
    "band_from_file_name",
    "read_metadata_file",
    "metadata_files_near",
    "sensor_from_metadata",
    "sensor_from_file_names",
    "delivery_facts",
]
