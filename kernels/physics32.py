"""The physics of ``physics.py`` in single precision, for the fast GPU kernel.

Not a second copy: this module re-executes the source of ``physics.py`` with
``F = np.float32`` and ``SINGLE = True`` (``variants.physics(single=True)``),
so every constant, conversion and temporary of the per-pixel loop is float32
(sums stay float64) and ``sincg_h`` uses its delta form.  ``-precision
single`` selects it.  Every option stays decided at run time here (the
generic variant); the CUDA kernel picks a specialised variant per run.
"""
from . import physics as _physics
from .variants import GENERIC, physics as _variant_physics

_ns = _variant_physics(GENERIC, single=True)
render_pixel = _ns.render_pixel
render_pixel_inline = _ns.render_pixel_inline
pixel_is_rendered = _ns.pixel_is_rendered
store_result = _ns.store_result
clear_result = _ns.clear_result
sincg_h = _ns.sincg_h
make_kparams = _physics.make_kparams
