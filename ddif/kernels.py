"""``ddif.kernels.available()``: which fused backends are live (re-exported from :mod:`kernels`)."""
from kernels import available

__all__ = ["available"]
