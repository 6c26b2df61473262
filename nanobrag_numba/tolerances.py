"""Pass/fail bars, stated once, for every comparison of images and traces.

Used by the parity tests (ours vs the C program's golden outputs), the
CPU-vs-CUDA tests and ``nanobrag-numba compare``.
"""

#: float image against C: Pearson correlation, max |diff| / max |ref|, |sum ratio - 1|
FLOAT_CORR_MIN = 0.99999
FLOAT_MAXREL = 1e-5
FLOAT_SUMREL = 1e-5
#: SMV int image against C: counts
INT_MAXDIFF = 1
#: noise image against C: fraction of identical pixels
NOISE_IDENTICAL_MIN = 0.9999
#: PGM against C: grey levels
PGM_MAXDIFF = 1
#: single precision against C on every non-quirk case
SINGLE_CORR_MIN = 0.9999
#: CPU kernel against the CUDA kernel (simulator) in float64
CUDA_SIM_RTOL = 1e-12
#: trace values against the instrumented C trace
TRACE_RTOL = 1e-9
#: default tolerance of ``compare`` trace mode
COMPARE_TRACE_RTOL = 1e-6
