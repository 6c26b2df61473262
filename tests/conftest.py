import os
import sys

import pytest

# tests import their helper modules (golden.py) by name
sys.path.insert(0, os.path.dirname(__file__))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (CUDA PTX compiles, the uncached single-precision "
                          "kernel, DIALS on a CBF series); NANOBRAGG_RUNSLOW=1 does the same")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("NANOBRAGG_RUNSLOW") == "1":
        return
    if config.getoption("-m"):          # an explicit marker expression (e.g. -m slow) decides by itself
        return
    skip = pytest.mark.skip(reason="marked slow: run with --runslow or NANOBRAGG_RUNSLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
