"""The hot code of nanobrag-numba (installed as ``nanobrag_numba.kernels``).

``physics`` holds the per-pixel physics written once; ``cpu`` and ``cuda``
only hand out pixels (one image, or many images per launch); ``crand`` and
``noise`` are the C random generators and the noise-image loop;
``noise_counter`` is the counter-based (Philox) Poisson noise of
``batch --noise-generator counter``, written once for the CPU and CUDA.  No I/O here.  Import through ``nanobrag_numba.kernels``
only (never as a top-level ``kernels`` module: that would compile twice).
"""
from . import _cache

_cache.install()
