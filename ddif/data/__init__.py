"""Data: lazy HDF5 datasets (PanCollection, HISR), writers, GeoTIFF I/O, the Wald-protocol
simulator and dataset building from real MS + PAN scenes.

Names are imported lazily so that ``import ddif.data`` loads neither h5py nor rasterio.
"""
from __future__ import annotations

_LAZY = {
    # HDF5 datasets and writers
    "PanCollectionH5": "ddif.data.h5",
    "HISRH5": "ddif.data.h5",
    "FusionH5": "ddif.data.h5",
    "FusionH5Writer": "ddif.data.h5",
    "inspect_h5": "ddif.data.h5",
    "detect_layout": "ddif.data.h5",
    "open_h5": "ddif.data.h5",
    "open_dataset": "ddif.data.h5",
    "write_pancollection_h5": "ddif.data.h5",
    "write_hisr_h5": "ddif.data.h5",
    # augmentation
    "RandomDihedral": "ddif.data.augment",
    "dihedral": "ddif.data.augment",
    # GeoTIFF
    "Raster": "ddif.data.geotiff",
    "read_geotiff": "ddif.data.geotiff",
    "read_geotiff_stack": "ddif.data.geotiff",
    "write_geotiff": "ddif.data.geotiff",
    # Wald protocol / MTF filtering
    "simulate_reduced_resolution": "ddif.data.mtf",
    "upsample": "ddif.data.mtf",
    "interp23tap": "ddif.data.mtf",
    "SENSOR_MTF": "ddif.data.mtf",
    # building datasets from scenes
    "MakeDatasetConfig": "ddif.data.make_dataset",
    "make_dataset": "ddif.data.make_dataset",
    "synthesize_pan": "ddif.data.make_dataset",
    "bandpass_pan_weights": "ddif.data.make_dataset",
    "LANDSAT8_OLI_BANDPASS_NM": "ddif.data.make_dataset",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ddif.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
