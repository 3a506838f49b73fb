"""GDAL's own pansharpening, as operators run it (``gdal_pansharpen.py``, the VRT pansharpening
driver): weighted Brovey with the pseudo-PAN ``sum_k w_k MS_k`` (GDAL's default weights 1/N),
the MS resampled onto the PAN grid with GDAL's cubic kernel (its default), no bit-depth clipping.
Computed by GDAL itself through rasterio: a ``VRTPansharpenedDataset`` over in-memory GeoTIFFs
(``/vsimem/``) is built per image and read back, so the numbers are GDAL's, not a re-implementation.

The MS and PAN are georeferenced on the toolbox grid that the Wald simulation uses (MS pixel i
centred on PAN pixel ``ratio * i + ratio // 2``), so GDAL places the MS where ddif's interpolators
do. Needs rasterio (the ``geo`` extra).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
import torch

from ddif.utils.validation import check_image

RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubicspline", "lanczos", "average")


def _vrt_xml(
    pan_path: str, ms_path: str, bands: int, size: tuple[int, int], weights: Sequence[float], resampling: str
) -> str:
    h, w = size
    spectral = "".join(
        f'<SpectralBand dstBand="{k + 1}"><SourceFilename relativeToVRT="0">{ms_path}</SourceFilename>'
        f"<SourceBand>{k + 1}</SourceBand></SpectralBand>"
        for k in range(bands)
    )
    out_bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{k + 1}" subClass="VRTPansharpenedRasterBand">'
        f"<SpectralBandIndex>{k}</SpectralBandIndex></VRTRasterBand>"
        for k in range(bands)
    )
    return (
        f'<VRTDataset subClass="VRTPansharpenedDataset" rasterXSize="{w}" rasterYSize="{h}">{out_bands}'
        "<PansharpeningOptions><Algorithm>WeightedBrovey</Algorithm>"
        f"<AlgorithmOptions><Weights>{','.join(repr(float(v)) for v in weights)}</Weights></AlgorithmOptions>"
        f"<Resampling>{resampling}</Resampling><NumThreads>1</NumThreads>"
        f'<PanchroBand><SourceFilename relativeToVRT="0">{pan_path}</SourceFilename><SourceBand>1</SourceBand>'
        f"</PanchroBand>{spectral}</PansharpeningOptions></VRTDataset>"
    )


def gdal_weighted_brovey(
    ms: torch.Tensor,
    pan: torch.Tensor,
    ratio: int,
    weights: Sequence[float] | None = None,
    resampling: str = "cubic",
) -> torch.Tensor:
    """GDAL's weighted Brovey pansharpening of ``ms`` (B, C, h, w), the coarse MS, with ``pan``
    (B, 1, ratio h, ratio w); returns (B, C, ratio h, ratio w) float32 (ms's dtype). ``weights``:
    the pseudo-PAN weights (default GDAL's 1/N)."""
    import rasterio
    from rasterio.transform import from_origin

    if resampling not in RESAMPLINGS:
        raise ValueError(f"resampling must be one of {RESAMPLINGS}, got {resampling!r}")
    m = check_image("ms", ms)
    p = check_image("pan", pan, batch=m.shape[0])
    b, c, h, w = m.shape
    if tuple(p.shape[-2:]) != (ratio * h, ratio * w) or p.shape[1] != 1:
        raise ValueError(f"pan: expected (B, 1, {ratio * h}, {ratio * w}) for ratio {ratio}, got {tuple(p.shape)}")
    wts = [1.0 / c] * c if weights is None else [float(v) for v in weights]
    if len(wts) != c:
        raise ValueError(f"weights: {len(wts)} given for {c} bands")
    # toolbox grid: MS pixel i centred on PAN pixel r i + r // 2 -> MS origin offset by (r//2 + 1/2 - r/2) PAN px
    offset = (ratio // 2 + 0.5 - ratio / 2.0) * 1.0
    x0, y0 = 1000.0, 1000.0  # any origin but (0, 0): GDAL drops a geotransform that looks like the identity
    pan_t = from_origin(x0, y0, 1.0, 1.0)
    ms_t = from_origin(x0 + offset, y0 - offset, float(ratio), float(ratio))
    out = np.empty((b, c, ratio * h, ratio * w), dtype=np.float32)
    tag = uuid.uuid4().hex
    for i in range(b):
        pan_path, ms_path, vrt_path = (f"/vsimem/ddif_{tag}_{i}_{n}" for n in ("pan.tif", "ms.tif", "ps.vrt"))
        try:
            with rasterio.open(
                pan_path,
                "w",
                driver="GTiff",
                width=ratio * w,
                height=ratio * h,
                count=1,
                dtype="float32",
                transform=pan_t,
                crs="EPSG:3857",
            ) as dst:
                dst.write(p[i].detach().cpu().numpy().astype(np.float32))
            with rasterio.open(
                ms_path,
                "w",
                driver="GTiff",
                width=w,
                height=h,
                count=c,
                dtype="float32",
                transform=ms_t,
                crs="EPSG:3857",
            ) as dst:
                dst.write(m[i].detach().cpu().numpy().astype(np.float32))
            xml = _vrt_xml(pan_path, ms_path, c, (ratio * h, ratio * w), wts, resampling)
            with rasterio.open(xml) as src:
                out[i] = src.read().astype(np.float32)
        finally:
            for path in (pan_path, ms_path, vrt_path):
                try:
                    rasterio.shutil.delete(path)
                except Exception:  # noqa: BLE001 - a /vsimem file that was never created
                    pass
    return torch.from_numpy(out).to(ms.dtype)


def gdal_available() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["gdal_weighted_brovey", "gdal_available", "RESAMPLINGS"]
