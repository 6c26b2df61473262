"""The hot code of nanobrag-numba (installed as ``nanobrag_numba.kernels``).

``physics`` holds the per-pixel physics written once; ``cpu`` and ``cuda``
only hand out pixels; ``crand`` and ``noise`` are the C random generators and
the noise-image loop.  No I/O here.  Import through ``nanobrag_numba.kernels``
only (never as a top-level ``kernels`` module: that would compile twice).
"""
from . import _cache

_cache.install()
