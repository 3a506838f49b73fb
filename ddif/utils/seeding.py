"""Deterministic seeds derived from a user seed and positions (image, tile, stream).

The inference path draws each tile's initial noise from ``derive_seed(seed, image, tile)`` (and a
stochastic sampler's per-step noise from ``derive_seed(seed, image, tile, 1)``), so a tile's noise
depends on where it is, never on how tiles were batched, scheduled or resumed. (The trainer's
per-epoch shuffle keeps its own ``seed * 1_000_003 + epoch`` so that runs started with earlier
versions resume exactly.)
"""

from __future__ import annotations

import hashlib
import struct

import torch


def derive_seed(seed: int, *indices: int) -> int:
    """A 63-bit seed that is a fixed function of ``(seed, *indices)`` (BLAKE2b of the integers):
    platform-independent, and distinct tuples give unrelated streams."""
    values = (int(seed),) + tuple(int(i) for i in indices)
    data = b"".join(struct.pack("<q", v) if -(2**63) <= v < 2**63 else str(v).encode() + b";" for v in values)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def generator_for(seed: int, *indices: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` (CPU: the same draws on every device)."""
    return torch.Generator().manual_seed(derive_seed(seed, *indices))
