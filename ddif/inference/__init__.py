"""The one inference path shared by ``ddif.Fuser``, every ``ddif.runtime`` backend and the ground
station: tiling, padding, per-tile noise, batching of tiles and blending, over a *tile sampler*
(the backend) that only runs the fixed-step sampler on a batch of tiles.

    from ddif.inference import InferencePath, Tiling, TorchTileSampler
"""

from __future__ import annotations

from ddif.utils.lazy import lazy_exports

_LAZY = {
    "InferencePath": "ddif.inference.engine",
    "TileSampler": "ddif.inference.engine",
    "TorchTileSampler": "ddif.inference.engine",
    "check_fusion_inputs": "ddif.inference.engine",
    "blend_tiles": "ddif.inference.engine",
    "Tiling": "ddif.inference.tiling",
    "pad_to": "ddif.inference.tiling",
    "tile_noise": "ddif.inference.tiling",
    "step_generator": "ddif.inference.tiling",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
