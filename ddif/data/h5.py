"""HDF5 datasets in the layouts the fusion literature ships, read lazily, validated on open.

Two layouts, both ``N x C x H x W``:

* **PanCollection** (pansharpening; Deng et al., "Machine learning in pansharpening: a benchmark,
  from shallow to deep networks", IEEE GRSM 2022, and its toolbox): datasets ``gt``, ``ms``,
  ``lms``, ``pan`` holding digital numbers (DN), divided by the sensor's maximum DN (2047 for
  WorldView-3 / QuickBird, 1023 for GaoFen-2) when read. Reduced-resolution files (Wald protocol)
  have ``gt``; full-resolution files do not.
* **HISR** (hyperspectral fusion, CAVE / Harvard): ``GT``, ``LRHSI``, ``RGB``, ``HSI_up``, already
  in [0, 1].

Items are dicts of float32 tensors ``(C, H, W)`` with the keys ``gt`` (when the file has it),
``ms`` (the coarse MS / HS image), ``lms`` (it upsampled to the guide grid) and ``pan`` (the guide:
PAN or RGB). HISR keys map as ``GT -> gt``, ``LRHSI -> ms``, ``HSI_up -> lms``, ``RGB -> pan``.

Reading is lazy: nothing but one item is ever in memory, and the HDF5 handle is opened on first
use in each process (so every DataLoader worker opens its own, and a pickled dataset carries no
handle). The writers (atomic, one item per chunk) are :mod:`ddif.data.h5_writer`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddif.data.augment import Sample, resolve_augment

if TYPE_CHECKING:
    from ddif.config import Preset

# canonical key -> dataset name in the file, per layout
PANCOLLECTION_KEYS = {"gt": "gt", "ms": "ms", "lms": "lms", "pan": "pan"}
HISR_KEYS = {"gt": "GT", "ms": "LRHSI", "lms": "HSI_up", "pan": "RGB"}
LAYOUTS = {"pancollection": PANCOLLECTION_KEYS, "hisr": HISR_KEYS}


def import_h5py() -> ModuleType:
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a core dependency
        raise ImportError("reading/writing .h5 datasets needs h5py: pip install h5py") from e
    return h5py


@dataclass(frozen=True)
class _Expectation:
    max_dn: float
    bands: int | None
    guide_bands: int | None
    ratio: int | None
    source: str  # for messages: "preset 'wv3'" or "max_dn=2047"


def _expectation(preset_or_max_dn, bands, guide_bands, ratio) -> _Expectation:
    from ddif.config import Preset, get_preset

    if isinstance(preset_or_max_dn, str):
        preset_or_max_dn = get_preset(preset_or_max_dn)
    if isinstance(preset_or_max_dn, Preset):
        p = preset_or_max_dn
        return _Expectation(
            max_dn=float(p.model.max_dn),
            bands=p.model.bands if bands is None else int(bands),
            guide_bands=p.model.guide_bands if guide_bands is None else int(guide_bands),
            ratio=p.data.ratio if ratio is None else int(ratio),
            source=f"preset '{p.name}'",
        )
    if isinstance(preset_or_max_dn, bool) or not isinstance(preset_or_max_dn, (int, float, np.number)):
        raise ValueError(
            "preset_or_max_dn must be a preset name, a ddif.config.Preset or a positive max DN, "
            f"got {preset_or_max_dn!r}"
        )
    max_dn = float(preset_or_max_dn)
    if not np.isfinite(max_dn) or max_dn <= 0:
        raise ValueError(f"max_dn must be a positive number, got {preset_or_max_dn!r}")
    return _Expectation(
        max_dn=max_dn,
        bands=None if bands is None else int(bands),
        guide_bands=None if guide_bands is None else int(guide_bands),
        ratio=None if ratio is None else int(ratio),
        source=f"max_dn={max_dn:g}",
    )


def is_numeric_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in "iuf"  # signed / unsigned integers, floats; not bool, complex, strings, compounds


@dataclass(frozen=True)
class FileInfo:
    """What validation found in a file."""

    path: Path
    layout: str
    length: int
    has_gt: bool
    bands: int
    guide_bands: int
    ratio: int
    size: tuple[int, int]  # H x W of gt / lms / pan
    ms_size: tuple[int, int]  # h x w of ms
    dtypes: dict[str, str]
    attrs: dict[str, Any]


def inspect_h5(
    path: str | os.PathLike,
    layout: str = "pancollection",
    *,
    bands: int | None = None,
    guide_bands: int | None = None,
    ratio: int | None = None,
    max_dn: float | None = None,
    require_gt: bool = False,
) -> FileInfo:
    """Open ``path``, check it is a well-formed fusion dataset of ``layout``, close it.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the
    problem for anything else: not HDF5 / truncated / corrupt, missing keys, wrong rank, non-numeric
    dtype, inconsistent item counts, band counts other than ``bands`` / ``guide_bands``, spatial
    sizes that do not match (``gt``, ``lms``, ``pan`` equal, ``ms`` smaller by ``ratio``), or a
    ``max_dn`` attribute that disagrees with ``max_dn``.
    """
    h5py = import_h5py()
    path = Path(path)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    keys = LAYOUTS[layout]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected an .h5 file")

    def fail(problem: str) -> ValueError:
        return ValueError(f"{path}: {problem}")

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        # h5py reports "file signature not found" for non-HDF5 bytes and "truncated file" when
        # the file is shorter than its superblock says.
        raise fail(f"not a readable HDF5 file (truncated or corrupt?): {e}") from None
    with f:
        present = {k: name for k, name in keys.items() if name in f}
        required = ["ms", "lms", "pan"] + (["gt"] if require_gt else [])
        missing = [keys[k] for k in required if k not in present]
        if missing:
            hint = ""
            for other, other_keys in LAYOUTS.items():
                if other != layout and all(n in f for k, n in other_keys.items() if k != "gt"):
                    hint = f"; it looks like the '{other}' layout ({', '.join(other_keys.values())})"
            what = (
                "a reduced-resolution file with ground truth is required here"
                if missing == [keys["gt"]]
                else f"expected the {layout} layout ({', '.join(keys.values())}; '{keys['gt']}' optional)"
            )
            raise fail(f"missing dataset(s) {missing}: {what}; found {sorted(f.keys())}{hint}")
        dsets = {}
        for k, name in present.items():
            obj = f[name]
            if not isinstance(obj, h5py.Dataset):
                raise fail(f"'{name}' is a {type(obj).__name__}, expected a dataset")
            if obj.ndim != 4:
                raise fail(f"'{name}' has rank {obj.ndim} (shape {obj.shape}), expected N x C x H x W")
            if not is_numeric_dtype(obj.dtype):
                raise fail(f"'{name}' has non-numeric dtype {obj.dtype}, expected integers or floats")
            dsets[k] = obj
        counts = {keys[k]: d.shape[0] for k, d in dsets.items()}
        if len(set(counts.values())) != 1:
            raise fail(f"datasets hold different numbers of items: {counts}")
        n = next(iter(counts.values()))
        if n == 0:
            raise fail("contains no items (N = 0)")

        for k in ("gt", "ms", "lms"):
            if k in dsets and bands is not None and dsets[k].shape[1] != bands:
                raise fail(f"'{keys[k]}' has {dsets[k].shape[1]} bands, expected {bands}")
        c = dsets["lms"].shape[1]
        for k in ("gt", "ms"):
            if k in dsets and dsets[k].shape[1] != c:
                raise fail(f"'{keys[k]}' has {dsets[k].shape[1]} bands but '{keys['lms']}' has {c}")
        p = dsets["pan"].shape[1]
        if guide_bands is not None and p != guide_bands:
            raise fail(f"'{keys['pan']}' has {p} bands, expected {guide_bands}")

        size = tuple(dsets["lms"].shape[2:])
        for k in ("gt", "pan"):
            if k in dsets and tuple(dsets[k].shape[2:]) != size:
                raise fail(
                    f"'{keys[k]}' is {shape_text(dsets[k].shape[2:])} but '{keys['lms']}' is {shape_text(size)}: "
                    "they must be on the same grid"
                )
        ms_size = tuple(dsets["ms"].shape[2:])
        if (
            min(ms_size) < 1
            or size[0] % ms_size[0]
            or size[1] % ms_size[1]
            or size[0] // ms_size[0] != size[1] // ms_size[1]
        ):
            raise fail(f"'{keys['ms']}' is {shape_text(ms_size)}, not {shape_text(size)} divided by one integer ratio")
        found_ratio = size[0] // ms_size[0]
        if ratio is not None and found_ratio != ratio:
            raise fail(
                f"'{keys['ms']}' is {shape_text(ms_size)} and '{keys['lms']}' {shape_text(size)}: ratio {found_ratio}, "
                f"expected {ratio}"
            )

        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        if max_dn is not None and "max_dn" in attrs:
            try:
                file_dn = float(attrs["max_dn"])
            except (TypeError, ValueError):
                raise fail(f"attribute max_dn={attrs['max_dn']!r} is not a number") from None
            if not np.isclose(file_dn, max_dn, rtol=1e-6):
                raise fail(
                    f"file says its images are DN with max_dn={file_dn:g}, but they would be divided by "
                    f"{max_dn:g}; use the matching preset or max_dn"
                )

        if max_dn is not None:
            _check_dn_scale(path, keys, dsets, n, max_dn)

        # Read one corner of the last item of each dataset: catches data cut off or mangled after
        # a valid header without reading the file.
        for k, d in dsets.items():
            try:
                d[n - 1, :, -1:, -1:]
            except Exception as e:  # h5py raises OSError / RuntimeError / KeyError for bad chunks
                raise fail(f"cannot read '{keys[k]}' (corrupt or truncated data): {e}") from None

        return FileInfo(
            path=path,
            layout=layout,
            length=n,
            has_gt="gt" in dsets,
            bands=c,
            guide_bands=p,
            ratio=found_ratio,
            size=size,
            ms_size=ms_size,
            dtypes={keys[k]: str(d.dtype) for k, d in dsets.items()},
            attrs=attrs,
        )


def _check_dn_scale(path: Path, keys: dict[str, str], dsets: dict[str, Any], n: int, max_dn: float) -> None:
    """Images are stored in DN and divided by ``max_dn`` when read: a file whose ``lms`` / ``pan``
    hold values of another scale (e.g. already divided to [0, 1]) is refused with the rule of the
    scene-ingestion layer (:func:`ddif.data.scene.scale_problem`), on up to 8 items spread over it."""
    from ddif.data.scale import array_stats, scale_problem

    picks = sorted({round(i * (n - 1) / 7) for i in range(8)}) if n > 1 else [0]
    for k in ("lms", "pan"):
        items = []
        for i in picks:
            try:
                items.append(np.asarray(dsets[k][i]))
            except Exception:  # noqa: BLE001 - a bad chunk is reported, naming the item, when it is read
                continue
        if not items:
            continue
        values = np.stack(items)
        problem = scale_problem(array_stats(values, max_dn), max_dn)
        if problem is not None:
            raise ValueError(
                f"{path}: '{keys[k]}' does not hold digital numbers for max_dn={max_dn:g}: {problem}. "
                "The files store DN (ddif.data.FusionH5Writer multiplies [0, 1] images by max_dn); "
                "rewrite it in DN, or open it with the max DN its values use"
            )


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


class FusionH5(torch.utils.data.Dataset):
    """Lazy, validated reader of one fusion ``.h5`` file (base of :class:`PanCollectionH5` and
    :class:`HISRH5`).

    Args:
        path: the ``.h5`` file.
        preset_or_max_dn: a preset name / :class:`ddif.config.Preset` (gives max DN, band counts,
            guide bands and ratio to check against), or just the max DN (a number; then only the
            file's internal consistency is checked unless ``bands`` etc. are given).
        train: kept for compatibility: ``train=True`` means ``require_gt=True`` and nothing else
            (it no longer turns augmentation on; see ``augment``).
        augment: what each item goes through: ``None`` / ``False`` (the default) -> nothing,
            ``True`` -> :class:`ddif.data.augment.RandomDihedral`, or a callable(sample) -> sample.
            Leave it off for :class:`ddif.training.Trainer`, which augments its batches itself
            (and refuses a dataset that would augment them a second time).
        require_gt: refuse a file without ``gt`` (training and reduced-resolution evaluation need
            it; full-resolution files have none).
        ratio, bands, guide_bands: override the preset's values (e.g. ``ratio=2`` for Landsat-8).
        check_finite: raise on NaN/Inf in an item (cheap: the item is in memory anyway).
        rdcc_nbytes: HDF5 chunk-cache size per dataset per worker.
    """

    layout = "pancollection"

    def __init__(
        self,
        path: str | os.PathLike,
        preset_or_max_dn: str | Preset | float | np.number,
        train: bool = False,
        augment: bool | Callable[[Sample], Sample] | None = None,
        *,
        require_gt: bool = False,
        ratio: int | None = None,
        bands: int | None = None,
        guide_bands: int | None = None,
        check_finite: bool = True,
        rdcc_nbytes: int = 4 << 20,
    ):
        self.path = Path(path)
        self.expect = _expectation(preset_or_max_dn, bands, guide_bands, ratio)
        self.max_dn = self.expect.max_dn
        self.require_gt = bool(require_gt or train)
        self.augment: Callable | None = resolve_augment(augment)
        self.check_finite = check_finite
        self.rdcc_nbytes = int(rdcc_nbytes)
        self.keys = LAYOUTS[self.layout]
        self.info = inspect_h5(
            self.path,
            self.layout,
            bands=self.expect.bands,
            guide_bands=self.expect.guide_bands,
            ratio=self.expect.ratio,
            max_dn=self.max_dn,
            require_gt=self.require_gt,
        )
        self.item_keys = tuple(k for k in ("gt", "ms", "lms", "pan") if k != "gt" or self.info.has_gt)
        self._file = None
        self._datasets: dict[str, Any] = {}
        self._owner_pid: int | None = None

    # -- facts -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.info.length

    @property
    def has_gt(self) -> bool:
        return self.info.has_gt

    @property
    def train(self) -> bool:
        """Compatibility alias of ``require_gt`` (what ``train=`` means now)."""
        return self.require_gt

    @property
    def ratio(self) -> int:
        return self.info.ratio

    @property
    def bands(self) -> int:
        return self.info.bands

    @property
    def guide_bands(self) -> int:
        return self.info.guide_bands

    @property
    def size(self) -> tuple[int, int]:
        return self.info.size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}('{self.path}', {len(self)} items, {self.bands}+{self.guide_bands} bands, "
            f"{shape_text(self.size)}, ratio {self.ratio}, gt={self.has_gt}, max_dn={self.max_dn:g}, "
            f"augment={self.augment!r})"
        )

    # -- lazy per-process handle ---------------------------------------------------------------
    def _open(self) -> dict[str, Any]:
        pid = os.getpid()
        if self._file is None or self._owner_pid != pid:
            # A handle inherited through fork() belongs to the parent: never use it here (HDF5
            # handles are not fork-safe); open our own.
            self._file = None
            self._datasets = {}
            h5py = import_h5py()
            try:
                f = h5py.File(self.path, "r", rdcc_nbytes=self.rdcc_nbytes)
            except OSError as e:
                raise ValueError(f"{self.path}: cannot open HDF5 file: {e}") from None
            self._file = f
            self._owner_pid = pid
            self._datasets = {k: f[self.keys[k]] for k in self.item_keys}
        return self._datasets

    def close(self) -> None:
        if self._file is not None and self._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                self._file.close()
        self._file = None
        self._datasets = {}
        self._owner_pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_datasets"] = {}
        state["_owner_pid"] = None
        return state

    # -- items ---------------------------------------------------------------------------------
    def read(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` without augmentation: float32 tensors (C, H, W) divided by max DN."""
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} items in {self.path}")
        dsets = self._open()
        item = {}
        for k in self.item_keys:
            try:
                arr = dsets[k][i]
            except Exception as e:
                raise ValueError(
                    f"{self.path}: cannot read item {i} of '{self.keys[k]}' (corrupt or truncated data): {e}"
                ) from None
            t = torch.from_numpy(np.asarray(arr, dtype=np.float32))
            if self.max_dn != 1.0:
                t = t / self.max_dn
            if self.check_finite and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{self.path}: item {i} of '{self.keys[k]}' contains NaN or Inf")
            item[k] = t
        return item

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.read(index)
        if self.augment is not None:
            item = self.augment(item)
        return item


class PanCollectionH5(FusionH5):
    """PanCollection layout: ``gt`` (optional), ``ms``, ``lms``, ``pan`` as DN; see :class:`FusionH5`."""

    layout = "pancollection"


class HISRH5(FusionH5):
    """CAVE / Harvard layout: ``GT`` (optional), ``LRHSI``, ``HSI_up``, ``RGB`` in [0, 1], served as
    ``gt``, ``ms``, ``lms``, ``pan``; see :class:`FusionH5`."""

    layout = "hisr"

    def __init__(
        self,
        path: str | os.PathLike,
        preset_or_max_dn: str | Preset | float | np.number = 1.0,
        train: bool = False,
        augment: bool | Callable[[Sample], Sample] | None = None,
        **kw: Any,
    ):
        super().__init__(path, preset_or_max_dn, train, augment, **kw)


def detect_layout(path: str | os.PathLike) -> str:
    """'pancollection' or 'hisr' from the dataset names in the file."""
    h5py = import_h5py()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            names = set(f.keys())
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None
    for layout, keys in LAYOUTS.items():
        if {keys["ms"], keys["lms"], keys["pan"]} <= names:
            return layout
    raise ValueError(
        f"{path}: neither the PanCollection layout (gt, ms, lms, pan) nor the HISR layout "
        f"(GT, LRHSI, HSI_up, RGB); found {sorted(names)}"
    )


def open_h5(
    path: str | os.PathLike,
    preset_or_max_dn: str | Preset | float | np.number,
    train: bool = False,
    augment: bool | Callable[[Sample], Sample] | None = None,
    *,
    require_gt: bool = False,
    **kw: Any,
) -> FusionH5:
    """A :class:`PanCollectionH5` or :class:`HISRH5`, whichever layout the file has; the arguments
    are :class:`FusionH5`'s (``require_gt`` refuses a file without ``gt``; ``train=True`` is its
    old name; ``augment`` is off unless asked for)."""
    kw["require_gt"] = require_gt
    cls = HISRH5 if detect_layout(path) == "hisr" else PanCollectionH5
    return cls(path, preset_or_max_dn, train, augment, **kw)


open_dataset = open_h5
