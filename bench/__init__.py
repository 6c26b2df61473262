"""Benchmark suite of nanobrag-numba against the C nanoBragg (issue 4).

``python -m bench`` (or ``python bench/run.py``) runs the named cases of
``bench/cases.py`` and writes ``bench/results/<name>.md`` and ``.json``;
see ``bench/README.md``.  Nothing here is imported by the package or asserts
a speed.
"""
