"""The physics of ``physics.py`` in single precision, for the fast GPU kernel.

Not a second copy: this module re-executes the source of ``physics.py`` with
``F = np.float32`` and ``SINGLE = True``, so every constant, conversion and
temporary of the per-pixel loop is float32 (sums stay float64) and
``sincg_h`` uses its delta form.  ``-precision single`` selects it.
"""
import numpy as np

from . import physics as _physics


def _build():
    with open(_physics.__file__, "r") as fh:
        source = fh.read()
    namespace = {"__name__": __name__ + "._impl", "__file__": _physics.__file__}
    exec(compile(source, _physics.__file__, "exec"), namespace)
    # globals are read when a function is first compiled, i.e. after this
    namespace["F"] = np.float32
    namespace["SINGLE"] = True
    return namespace


_ns = _build()
render_pixel = _ns["render_pixel"]
render_pixel_inline = _ns["render_pixel_inline"]
pixel_is_rendered = _ns["pixel_is_rendered"]
store_result = _ns["store_result"]
clear_result = _ns["clear_result"]
sincg_h = _ns["sincg_h"]
make_kparams = _physics.make_kparams
