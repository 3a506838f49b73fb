"""Writing fusion ``.h5`` files (PanCollection or HISR layout): :class:`FusionH5Writer` appends
images in DN (floats in [0, 1] times ``max_dn``) atomically; :func:`write_pancollection_h5` /
:func:`write_hisr_h5` write whole arrays. Reading them is :mod:`ddif.data.h5`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddif.data.h5 import LAYOUTS, import_h5py, is_numeric_dtype, shape_text

if TYPE_CHECKING:
    import h5py

# images as given to the writers: floats in [0, 1] (DN / max_dn), (N, C, H, W) or (C, H, W)
Images = torch.Tensor | np.ndarray

# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _as_array(name: str, x: Images) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected floating-point images (DN / max_dn), got dtype {x.dtype}")
        x = x.float().numpy()
    else:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise ValueError(f"{name}: expected floating-point images (DN / max_dn), got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name}: expected N x C x H x W (or C x H x W), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name}: empty array of shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return x


class FusionH5Writer:
    """Append items to a new fusion ``.h5`` file, written atomically (visible only once complete).

    Images come in as floats in [0, 1] (DN / ``max_dn``) and are stored as ``value * max_dn`` in
    ``dtype`` (float32 by default; integer dtypes are rounded and clipped), one item per chunk, so
    that readers fetch exactly one item per read. Use as a context manager::

        with FusionH5Writer("train.h5", max_dn=2047) as w:
            for batch in batches:
                w.append(gt=..., ms=..., lms=..., pan=...)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_dn: float,
        layout: str = "pancollection",
        dtype: str | np.dtype = "float32",
        compression: str | None = None,
        compression_level: int | None = None,
        attrs: Mapping[str, Any] | None = None,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
        max_dn = float(max_dn)
        if not np.isfinite(max_dn) or max_dn <= 0:
            raise ValueError(f"max_dn must be a positive number, got {max_dn}")
        self.dtype = np.dtype(dtype)
        if not is_numeric_dtype(self.dtype):
            raise ValueError(f"dtype must be an integer or float type, got {self.dtype}")
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"compression must be None, 'gzip' or 'lzf', got {compression!r}")
        self.path = Path(path)
        self.layout = layout
        self.keys = LAYOUTS[layout]
        self.max_dn = max_dn
        self.compression = compression
        self.compression_level = compression_level if compression == "gzip" else None
        self.attrs = dict(attrs or {})
        self.length = 0
        self._stack: contextlib.ExitStack | None = None
        self._file: h5py.File | None = None
        self._layout_seen: tuple[tuple[str, ...], dict[str, tuple[int, ...]]] | None = None
        self._extra_names: tuple[str, ...] = ()

    def __enter__(self) -> FusionH5Writer:
        from ddif.utils.io import atomic_path

        h5py = import_h5py()
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._file = h5py.File(tmp, "w")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        stack, f = self._stack, self._file
        assert stack is not None and f is not None  # set by __enter__
        self._stack, self._file = None, None
        error: BaseException | None = None
        try:
            if exc_type is None:
                if self.length == 0:
                    error = ValueError(f"{self.path}: nothing was appended; refusing to write an empty dataset")
                else:
                    f.attrs["max_dn"] = self.max_dn
                    f.attrs["layout"] = self.layout
                    for k, v in self.attrs.items():
                        f.attrs[k] = _attr_value(v)
        except Exception as e:
            error = e
        finally:
            f.close()
        if exc_type is not None:  # atomic_path deletes the temporary file; the exception propagates
            return bool(stack.__exit__(exc_type, exc, tb))
        if error is None:
            stack.close()  # atomic_path renames the temporary file onto the target
            return False
        stack.__exit__(type(error), error, error.__traceback__)
        raise error

    def append(
        self, *, ms: Images, lms: Images, pan: Images, gt: Images | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Append one item (C, H, W) or a batch (N, C, H, W) of each image.

        ``extra`` maps further dataset names to per-item numeric arrays (N, ...) stored alongside,
        e.g. patch coordinates; readers ignore them."""
        if self._file is None:
            raise RuntimeError("FusionH5Writer.append() outside its `with` block")
        arrays = {"ms": _as_array("ms", ms), "lms": _as_array("lms", lms), "pan": _as_array("pan", pan)}
        if gt is not None:
            arrays = {"gt": _as_array("gt", gt), **arrays}
        n = arrays["lms"].shape[0]
        for k, a in arrays.items():
            if a.shape[0] != n:
                raise ValueError(f"{k}: {a.shape[0]} items but lms has {n}")
        c, size = arrays["lms"].shape[1], arrays["lms"].shape[2:]
        for k in ("gt", "ms"):
            if k in arrays and arrays[k].shape[1] != c:
                raise ValueError(f"{k}: {arrays[k].shape[1]} bands but lms has {c}")
        for k in ("gt", "pan"):
            if k in arrays and arrays[k].shape[2:] != size:
                raise ValueError(
                    f"{k}: spatial size {shape_text(arrays[k].shape[2:])} differs from lms {shape_text(size)}"
                )
        ms_size = arrays["ms"].shape[2:]
        if size[0] % ms_size[0] or size[1] % ms_size[1] or size[0] // ms_size[0] != size[1] // ms_size[1]:
            raise ValueError(
                f"ms: spatial size {shape_text(ms_size)} is not lms {shape_text(size)} divided by an integer ratio"
            )
        signature = (tuple(arrays), {k: a.shape[1:] for k, a in arrays.items()})
        if self._layout_seen is None:
            self._layout_seen = signature
            for k, a in arrays.items():
                shape = a.shape[1:]
                chunk = (1, shape[0], min(shape[1], 256), min(shape[2], 256))
                self._file.create_dataset(
                    self.keys[k],
                    shape=(0, *shape),
                    maxshape=(None, *shape),
                    dtype=self.dtype,
                    chunks=chunk,
                    compression=self.compression,
                    compression_opts=self.compression_level,
                    shuffle=self.compression is not None,
                )
        elif signature != self._layout_seen:
            raise ValueError(f"appended images {signature} differ from the first ones {self._layout_seen}")
        extras = {}
        for name, value in (extra or {}).items():
            a = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
            if name in self.keys.values():
                raise ValueError(f"extra dataset name {name!r} clashes with an image dataset")
            if a.ndim < 1 or a.shape[0] != n or not is_numeric_dtype(a.dtype):
                raise ValueError(f"extra {name!r}: expected a numeric array with {n} rows, got {a.dtype} {a.shape}")
            extras[name] = a
        if self.length == 0:
            self._extra_names = tuple(extras)
            for name, a in extras.items():
                self._file.create_dataset(
                    name, shape=(0, *a.shape[1:]), maxshape=(None, *a.shape[1:]), dtype=a.dtype, chunks=True
                )
        elif tuple(extras) != self._extra_names:
            raise ValueError(f"extra datasets {tuple(extras)} differ from the first append's {self._extra_names}")
        for k, a in arrays.items():
            d = self._file[self.keys[k]]
            d.resize(self.length + n, axis=0)
            d[self.length :] = _to_storage(a * self.max_dn, self.dtype)
        for name, a in extras.items():
            d = self._file[name]
            d.resize(self.length + n, axis=0)
            d[self.length :] = a
        self.length += n


def _to_storage(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _attr_value(v: Any) -> Any:
    if isinstance(v, dict):  # nested records (e.g. a registration report) are stored as JSON text
        import json

        return json.dumps(v, default=str)
    if isinstance(v, (list, tuple)):
        if all(isinstance(e, (int, float, np.number)) and not isinstance(e, bool) for e in v):
            return np.asarray(v, dtype=np.float64)
        return [str(e) for e in v]
    if v is None:
        return ""
    if isinstance(v, Path):
        return str(v)
    return v


def _write(path, layout, *, gt, ms, lms, pan, max_dn, dtype, compression, attrs) -> Path:
    with FusionH5Writer(path, max_dn=max_dn, layout=layout, dtype=dtype, compression=compression, attrs=attrs) as w:
        w.append(gt=gt, ms=ms, lms=lms, pan=pan)
    return Path(path)


def write_pancollection_h5(
    path: str | os.PathLike,
    *,
    ms: Images,
    lms: Images,
    pan: Images,
    max_dn: float,
    gt: Images | None = None,
    dtype: str = "float32",
    compression: str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a PanCollection file (``gt`` optional, ``ms``, ``lms``, ``pan``) atomically.

    Inputs are float arrays / tensors (N, C, H, W) or (C, H, W) scaled to [0, 1] (DN / ``max_dn``);
    the file stores DN (``value * max_dn``) as the layout's convention, in ``dtype``, plus a
    ``max_dn`` attribute that readers check.
    """
    return _write(
        path,
        "pancollection",
        gt=gt,
        ms=ms,
        lms=lms,
        pan=pan,
        max_dn=max_dn,
        dtype=dtype,
        compression=compression,
        attrs=attrs,
    )


def write_hisr_h5(
    path: str | os.PathLike,
    *,
    ms: Images,
    lms: Images,
    pan: Images,
    gt: Images | None = None,
    max_dn: float = 1.0,
    dtype: str = "float32",
    compression: str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a CAVE / Harvard-layout file atomically: ``gt -> GT``, ``ms -> LRHSI``,
    ``lms -> HSI_up``, ``pan -> RGB`` (values in [0, 1] unless ``max_dn`` says otherwise)."""
    return _write(
        path, "hisr", gt=gt, ms=ms, lms=lms, pan=pan, max_dn=max_dn, dtype=dtype, compression=compression, attrs=attrs
    )
