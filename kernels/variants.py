"""Compile-time variants of the physics (issue 10): one source, many kernels.

``physics.py`` reads every option that selects a code path (``-c_quirks``,
trace rows, crystal shape, interpolation, sensor layers, the three
``-oversample_*`` factors, water, mask/ROI, curved detector, ``-dmin``, multi-panel geometry) from
a module global ``V_<OPTION>`` through small predicates (``option``, ``may``,
``fixed``).  In ``physics.py`` itself they are all ``ANY`` (run time): that
build is the CPU kernel, tracing and the generic CUDA kernel, unchanged.

:func:`physics` re-executes the source of ``physics.py`` (as ``physics32``
does for float32) with the globals of a :class:`Variant` fixed; Numba
freezes globals as constants when it compiles, so the branches of the other
settings are removed and the common case is straight-line code.
:func:`variant_of` picks the variant of a prepared run from its ``KParams``:
every option is fixed to its value in that run, except where the run itself
leaves something to decide per pixel (then ``ANY``).
"""
from collections import namedtuple
import sys
import types

import numpy as np

from . import physics as _physics
from .physics import ANY, OFF, ON, SQUARE

#: the options of a variant, in the order of the key (field -> global of physics.py)
OPTION_GLOBALS = (
    ("quirks", "V_QUIRKS"), ("trace", "V_TRACE"), ("shape", "V_SHAPE"), ("interpolate", "V_INTERP"),
    ("sensor", "V_SENSOR"), ("oversample_thick", "V_OVS_THICK"), ("oversample_polar", "V_OVS_POLAR"),
    ("oversample_omega", "V_OVS_OMEGA"), ("water", "V_WATER"), ("mask", "V_MASK"), ("curved", "V_CURVED"),
    ("dmin", "V_DMIN"), ("panels", "V_PANELS"),
)
Variant = namedtuple("Variant", [name for name, _ in OPTION_GLOBALS])

#: every option decided at run time (the kernel of physics.py as it is)
GENERIC = Variant(*([ANY] * len(OPTION_GLOBALS)))
#: the common case (G1): square shape and every other option off
COMMON = Variant(quirks=OFF, trace=OFF, shape=SQUARE, interpolate=OFF, sensor=OFF, oversample_thick=OFF,
                 oversample_polar=OFF, oversample_omega=OFF, water=OFF, mask=OFF, curved=OFF, dmin=OFF, panels=OFF)


def _onoff(flag):
    return ON if flag else OFF


def variant_of(p) -> Variant:
    """The variant that renders a run with these ``KParams`` (the common case gives :data:`COMMON`)."""
    if p.detector_thick == 0.0 and p.thicksteps == 1:
        sensor = OFF
    elif p.detector_thick != 0.0:
        sensor = ON
    else:
        sensor = ANY
    whole = (p.roi_xmin <= 0 and p.roi_xmax >= p.fpixels - 1 and p.roi_ymin <= 0 and p.roi_ymax >= p.spixels - 1)
    return Variant(quirks=_onoff(p.quirks != 0),
                   trace=OFF if p.trace_pixel < 0 else ANY,
                   shape=int(p.shape),
                   interpolate=_onoff(p.interpolate != 0),
                   sensor=sensor,
                   oversample_thick=_onoff(p.oversample_thick != 0),
                   oversample_polar=_onoff(p.oversample_polar != 0),
                   oversample_omega=_onoff(p.oversample_omega != 0),
                   water=_onoff(p.water != 0),
                   mask=OFF if (p.use_mask == 0 and whole) else ANY,
                   curved=_onoff(p.curved != 0),
                   dmin=_onoff(p.dmin > 0.0),
                   panels=_onoff(p.npanels > 1))


def describe(v: Variant) -> str:
    """A short name of a variant: ``generic``, ``common`` or the options that differ from the common case."""
    if v == GENERIC:
        return "generic"
    words = {ANY: "any", OFF: "off", ON: "on"}
    diff = ["%s=%s" % (k, words.get(x, x) if k != "shape" else
                       {0: "square", 1: "round", 2: "gauss", 3: "tophat", ANY: "any"}[x])
            for k, x, c in zip(Variant._fields, v, COMMON) if x != c]
    return "common" + ("+" + ",".join(diff) if diff else "")


_BUILT = {}


def physics(variant: Variant = GENERIC, single: bool = False, vector: bool = False):
    """The physics functions of a variant and precision (a namespace, built once per process).

    ``physics(GENERIC)`` is ``physics.py`` itself; every other one is a
    re-execution of its source with the variant's globals (and ``F =
    float32``, ``SINGLE = True`` for single precision; ``VECTOR = True``
    with ``vector``: the SIMD pass of the CPU kernels).
    """
    key = (Variant(*variant), bool(single), bool(vector))
    if key == (GENERIC, False, False):
        return _physics
    if key not in _BUILT:
        with open(_physics.__file__, "r") as fh:
            source = fh.read()
        # a real module under a name that is the same in every process: Numba's on-disk cache of a
        # kernel that calls these functions imports it by that name when it loads the kernel
        mod = types.ModuleType(module_name(*key))
        mod.__file__ = _physics.__file__
        if vector:
            mod.LEAF_INLINE = "never"      # read by the source's decorators: LLVM inlines the small helpers
        exec(compile(source, _physics.__file__, "exec"), mod.__dict__)
        # globals are read when a function is first compiled, i.e. after this
        if single:
            mod.F = np.float32
            mod.SINGLE = True
        if vector:
            mod.VECTOR = True
        for (field, name), value in zip(OPTION_GLOBALS, key[0]):
            setattr(mod, name, int(value))
        sys.modules[mod.__name__] = mod
        _BUILT[key] = mod
    return _BUILT[key]


def module_name(variant: Variant, single: bool = False, vector: bool = False) -> str:
    """The stable module name of a variant's physics (one code per option: 0 any, 1 off, 2 on or shape + 1)."""
    return "%s.physics_%s%s%s" % (__name__, "".join("%d" % (int(x) + 1) for x in variant),
                                  "_single" if single else "", "_vector" if vector else "")
