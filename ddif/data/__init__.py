"""Data: lazy HDF5 datasets (PanCollection, HISR), writers, GeoTIFF I/O, the Wald-protocol
simulator and dataset building from real MS + PAN scenes.

Names are imported lazily so that ``import ddif.data`` loads neither h5py nor rasterio (nor
torch). The one exception is :mod:`ddif.data.make_dataset` (numpy only at import, as are the
modules it is built from: ``synthetic_pan``, ``sources``, ``splits``, ``wald_writer``): its function
shares the submodule's name, and binding it here, after the submodule import, is what makes
``from ddif.data import make_dataset`` the function rather than the module.

Datasets (``open_dataset`` / ``open_h5`` / ``FusionH5``) do not augment unless asked
(``augment=True`` or a callable): :class:`ddif.training.Trainer` augments its batches itself.
``require_gt=True`` (old name ``train=True``, which no longer turns augmentation on) refuses a
file without ground truth.
"""

from __future__ import annotations

from ddif.data.make_dataset import (
    LANDSAT8_OLI_BANDPASS_NM,
    MakeDatasetConfig,
    bandpass_pan_weights,
    make_dataset,
    synthesize_pan,
)
from ddif.utils.lazy import lazy_exports

_LAZY = {
    # HDF5 datasets and writers
    "PanCollectionH5": "ddif.data.h5",
    "HISRH5": "ddif.data.h5",
    "FusionH5": "ddif.data.h5",
    "FusionH5Writer": "ddif.data.h5_writer",
    "inspect_h5": "ddif.data.h5",
    "detect_layout": "ddif.data.h5",
    "open_h5": "ddif.data.h5",
    "open_dataset": "ddif.data.h5",
    "write_pancollection_h5": "ddif.data.h5_writer",
    "write_hisr_h5": "ddif.data.h5_writer",
    # augmentation
    "RandomDihedral": "ddif.data.augment",
    "dihedral": "ddif.data.augment",
    # rasters: the one ingestion layer (GeoTIFF / VRT / one-band files stacked as a VRT)
    "Raster": "ddif.data.raster",
    "read_raster": "ddif.data.raster",
    "write_raster": "ddif.data.raster",
    "nodata_mask": "ddif.data.raster",
    # Wald protocol / MTF filtering
    "simulate_reduced_resolution": "ddif.data.mtf",
    "upsample": "ddif.data.mtf",
    "interp23tap": "ddif.data.mtf",
    "SENSOR_MTF": "ddif.data.sensors",
}

__all__ = list(_LAZY) + [
    "MakeDatasetConfig",
    "make_dataset",
    "synthesize_pan",
    "bandpass_pan_weights",
    "LANDSAT8_OLI_BANDPASS_NM",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
