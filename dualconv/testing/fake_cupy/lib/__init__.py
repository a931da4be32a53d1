"""cupy.lib: the stand-in's stride_tricks (CuPy's cupy/lib/stride_tricks.py)."""
from . import stride_tricks

__all__ = ["stride_tricks"]
