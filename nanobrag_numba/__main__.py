"""``python -m nanobrag_numba FLAGS``: the same as the ``nanobrag-numba`` command."""
import sys

from .cli import console_main

sys.exit(console_main())
