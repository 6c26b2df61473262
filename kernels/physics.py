"""Per-pixel physics of nanoBragg, written once for the CPU and CUDA kernels.

Every function here is a plain ``@njit(inline="always")`` function without
an explicit signature: Numba compiles it into the CPU kernel (``cpu.py``)
and numba-cuda recompiles it as a device function for the GPU kernel
(``cuda.py``).  So: vectors are scalars or tuples, tables are arrays, the
configuration is a NamedTuple of scalars (``KParams``, built by
``nanobrag_numba.simulator``), nothing allocates and nothing prints.

The loop in :func:`render_pixel` is the loop of ``nanoBragg.c`` (see
../shared/REFERENCE.md): detector layer, sub-pixel, source, phi step, mosaic
domain, with the same arithmetic in the same order, so that the float64 path
reproduces the C program to the last bits.  Only the work that does not
depend on the pixel is done elsewhere: the rotated cell vectors of every
(phi step, mosaic domain) pair arrive in the table ``rot`` and the unit
source directions in ``sources``.

Arguments shared by the kernels
-------------------------------
p : KParams
    Scalars (see ``KParams`` for the fields).
sources : float64[nsources, 5]
    Unit vector from the sample to each source (x, y, z), its wavelength
    (m) and its weight (1.0 unless the sources are weighted: see
    ``nanobrag_numba.sources.kernel_sources``; the ``-c_quirks`` sum does not
    read it).  The incident beam is minus that vector, as in C.
rot : float64[nrot, mosaic_domains, 9]
    Cell vectors a, b, c (m) after the spindle rotation of a phi step and the
    mosaic rotation of a domain.  Entry ``nrot - 1`` is the unrotated cell
    (used by the ``-c_quirks`` phi carry-over).
phi_map, phi_map_first : int32[phisteps]
    Row of ``rot`` used at each phi step (identity map unless ``-c_quirks``
    reproduces C's phi carry-over; ``phi_map_first`` is for the very first
    phi loop of the image).
Fhkl : float64[h_range+1, k_range+1, l_range+1]
    Structure factors; ``p.hkls == 0`` means no table.
trace : float64[ntrace, TRACE_FIELDS]
    Filled for pixel ``p.trace_pixel`` only (one row per evaluation).
"""
import math
from collections import namedtuple

import numpy as np
from numba import njit

# Precision of the physics.  This module is the float64 physics (C parity):
# F is the float type of every computed quantity, SINGLE selects the
# float32 forms (see ``physics32``, which re-executes this source with
# F = np.float32).  Accumulated sums are always float64 (ACC).
F = float
ACC = float
SINGLE = False

SQUARE, ROUND, GAUSS, TOPHAT = 0, 1, 2, 3

# Compile-time variant (see ``variants.py``).  Each option that selects a
# code path is read through :func:`option`, :func:`may` or :func:`fixed`
# from one of these globals.  Here every option is ANY: decided at run time
# from ``p`` (the CPU kernel, tracing, the generic CUDA kernel).  A variant
# re-executes this source with some of them fixed to OFF, ON (or a shape
# code); Numba freezes globals as constants, so the dead branches vanish.
ANY, OFF, ON = -1, 0, 1
# How the small helpers without ``p`` (pure arithmetic) are inlined.  "always": by Numba, in its IR
# (needed by CUDA's compile_ptx without a GPU; costs Numba's compile time per call site); the CPU
# variants set "never" before this source runs: each helper is compiled once and LLVM inlines it,
# which gives the same code at a fraction of the compile time.
LEAF_INLINE = globals().get("LEAF_INLINE", "always")
V_QUIRKS = ANY          # -c_quirks
V_TRACE = ANY           # trace rows (ANY or OFF)
V_SHAPE = ANY           # crystal shape code
V_INTERP = ANY          # tricubic interpolation of F
V_SENSOR = ANY          # OFF: one layer of a zero-thickness sensor; ON: detector_thick != 0
V_OVS_THICK = ANY       # -oversample_thick
V_OVS_POLAR = ANY       # -oversample_polar
V_OVS_OMEGA = ANY       # -oversample_omega
V_WATER = ANY           # water background
V_MASK = ANY            # OFF: no mask and the ROI is the whole detector (ANY or OFF)
V_CURVED = ANY          # curved detector
V_DMIN = ANY            # -dmin
V_PANELS = ANY          # OFF: one panel, the geometry of p; ON: the panel table (multi-panel detectors)
# CPU variants (``variants.physics(..., vector=True)``): the square crystal's lattice factors of all
# (phi step, mosaic domain) pairs of a source are computed first, in one loop that compiles to SIMD
# code (``lattice_factors_simd``), then the per-pair loop reads them.  Off for CUDA and tracing.
VECTOR = False
SHAPES_CODE = {"SQUARE": SQUARE, "ROUND": ROUND, "GAUSS": GAUSS, "TOPHAT": TOPHAT}

#: the detector fields every pixel kernel reads through :func:`subpixel_position` (and the ROI): the first
#: fields of KParams, and of nonBragg's BgParams (``background.py``)
DETECTOR_FIELDS = (
    "fpixels", "spixels", "oversample", "pixel_size", "subpixel_size",
    "pix0_x", "pix0_y", "pix0_z", "fdet_x", "fdet_y", "fdet_z",
    "sdet_x", "sdet_y", "sdet_z", "odet_x", "odet_y", "odet_z",
    "beam_x", "beam_y", "beam_z", "distance", "close_distance",
    "curved", "point_pixel",
    "roi_xmin", "roi_xmax", "roi_ymin", "roi_ymax",
)
#: their integer ones
DETECTOR_INTS = ("fpixels", "spixels", "oversample", "curved", "point_pixel", "roi_xmin", "roi_xmax", "roi_ymin",
                 "roi_ymax")

KPARAMS_FIELDS = DETECTOR_FIELDS + (
    "use_mask",
    # sensor
    "thicksteps", "thickstep", "detector_thick", "detector_mu",
    # sampling and factors
    "oversample_thick", "oversample_polar", "oversample_omega",
    "nsources", "phisteps", "mosaic_domains",
    "kahn", "nopolar", "polar_x", "polar_y", "polar_z", "dmin",
    # crystal
    "shape", "Na", "Nb", "Nc", "fudge",
    "astar_x", "astar_y", "astar_z", "bstar_x", "bstar_y", "bstar_z",
    "cstar_x", "cstar_y", "cstar_z",
    # structure factors
    "interpolate", "hkls", "default_F",
    "h_min", "h_max", "k_min", "k_max", "l_min", "l_max", "h_range", "k_range", "l_range",
    # background
    "I_bg", "water",
    # C behaviours (see docs/differences.md)
    "quirks", "first_phi_pixel", "interp_cut_pixel", "interp_cut_eval",
    # 1: C's arithmetic of sincg and polin3 without -c_quirks too (the bit-exact reference of the fast forms)
    "c_math",
    # trace
    "trace_pixel",
    # multi-panel detectors: image rows [k*panel_rows, (k+1)*panel_rows) are panel k (see PANEL_COLUMNS)
    "npanels", "panel_rows",
)
KParams = namedtuple("KParams", KPARAMS_FIELDS)

# fields passed as int64; every other field is float64 (a stable type keeps the on-disk cache valid)
KPARAMS_INTS = frozenset(DETECTOR_INTS + (
    "use_mask", "thicksteps",
    "oversample_thick", "oversample_polar", "oversample_omega",
    "nsources", "phisteps", "mosaic_domains", "nopolar", "shape", "interpolate", "hkls",
    "h_min", "h_max", "k_min", "k_max", "l_min", "l_max", "h_range", "k_range", "l_range",
    "quirks", "first_phi_pixel", "interp_cut_pixel", "interp_cut_eval", "c_math", "trace_pixel",
    "npanels", "panel_rows",
))

#: columns of the panel table ``panels[npanels, len(PANEL_COLUMNS)]``: the geometry of each panel
#: (the same quantities as the KParams fields of these names; one row for a one-panel detector)
PANEL_COLUMNS = (
    "pix0_x", "pix0_y", "pix0_z", "fdet_x", "fdet_y", "fdet_z", "sdet_x", "sdet_y", "sdet_z",
    "odet_x", "odet_y", "odet_z", "pixel_size", "subpixel_size", "close_distance", "thickstep", "detector_mu",
)
PanelGeom = namedtuple("PanelGeom", PANEL_COLUMNS)


# float fields that stay float64 in single precision (they start float64 sums)
KPARAMS_ACC = frozenset(("I_bg",))


def make_kparams(dtype=np.float64, **values):
    """Build a KParams with every field cast to its fixed type.

    Integer fields are int64; the others are ``dtype`` (float64, or float32
    for the single-precision kernel), except the float64 accumulator seeds
    in ``KPARAMS_ACC``.  Fixed types keep the compiled kernels (and their
    on-disk cache) valid from one image to the next.
    """
    missing = set(KPARAMS_FIELDS) - set(values)
    extra = set(values) - set(KPARAMS_FIELDS)
    if missing or extra:
        raise TypeError("KParams: missing %s, unknown %s" % (sorted(missing), sorted(extra)))

    def cast(k, v):
        if k in KPARAMS_INTS:
            return int(v)
        if k in KPARAMS_ACC or dtype == np.float64:
            return float(v)
        return dtype(v)
    return KParams(**{k: cast(k, v) for k, v in values.items()})

# columns of one trace row (one evaluation: layer, sub-pixel, source, phi, domain)
TRACE_COLUMNS = (
    "thick_tic", "subS", "subF", "source", "phi_tic", "mos_tic",
    "pixel_pos_x", "pixel_pos_y", "pixel_pos_z", "airpath", "omega_pixel",
    "diffracted_x", "diffracted_y", "diffracted_z",
    "incident_x", "incident_y", "incident_z", "lambda",
    "scattering_x", "scattering_y", "scattering_z",
    "a_x", "a_y", "a_z", "b_x", "b_y", "b_z", "c_x", "c_y", "c_z",
    "h", "k", "l", "h0", "k0", "l0",
    "F_latt_a", "F_latt_b", "F_latt_c", "F_latt", "F_cell",
    "I", "polar", "capture_fraction", "interpolated", "skipped",
)
TRACE_FIELDS = len(TRACE_COLUMNS)


@njit(inline=LEAF_INLINE)
def option(setting, runtime):
    """An on/off option: ``runtime`` (a bool) when the variant leaves it ANY, else the variant's value."""
    if setting == ANY:
        return runtime
    return setting == ON


@njit(inline=LEAF_INLINE)
def may(setting):
    """False only where the variant fixes the option OFF (its code can then be left out)."""
    return setting != OFF


@njit(inline=LEAF_INLINE)
def fixed(setting, runtime):
    """A coded option (the shape): ``runtime`` when the variant leaves it ANY, else the variant's code."""
    if setting == ANY:
        return runtime
    return setting


@njit(inline=LEAF_INLINE)
def unitize3(x, y, z):
    """Unit vector and length; a zero vector stays zero (C's ``unitize``)."""
    mag = math.sqrt(x * x + y * y + z * z)
    if mag != 0.0:
        return x / mag, y / mag, z / mag, mag
    return F(0.0) * x, F(0.0) * y, F(0.0) * z, mag


@njit(inline=LEAF_INLINE)
def rotate_axis3(vx, vy, vz, ax, ay, az, phi):
    """Rotate (vx, vy, vz) by ``phi`` about the unit axis (C's ``rotate_axis``)."""
    sinphi = math.sin(phi)
    cosphi = math.cos(phi)
    d = (ax * vx + ay * vy + az * vz) * (F(1.0) - cosphi)
    return (ax * d + vx * cosphi + (-az * vy + ay * vz) * sinphi,
            ay * d + vy * cosphi + (+az * vx - ax * vz) * sinphi,
            az * d + vz * cosphi + (-ay * vx + ax * vy) * sinphi)


@njit(inline=LEAF_INLINE)
def sincg(x, N):
    """Lattice transform of N cells along one axis, ``sin(N x)/sin(x)`` (C's form)."""
    if x == 0.0:
        return N
    return math.sin(x * N) / math.sin(x)


#: sin(pi x) = x (S0 + S1 x^2 + ... + S8 x^16) for |x| <= 1/2: a minimax fit of relative error
#: 3e-19 (4e-17 with the coefficients rounded to float64), i.e. as accurate as a libm sine there
_S0, _S1, _S2 = 3.141592653589793, -5.167712780049969, 2.5501640398772936
_S3, _S4, _S5 = -0.599264529318729, 0.08214588656975906, -0.007370430477694967
_S6, _S7, _S8 = 0.0004662996839901721, -2.1903174164272045e-05, 7.694618988322075e-07
#: 2^27 + 1: Veltkamp's splitting constant (a float64 in two halves of 26 and 27 bits)
_SPLIT = 134217729.0
#: the fast form needs N times the 27-bit half of f exact: N below 2^26
FAST_N_MAX = 67108864.0


@njit(inline=LEAF_INLINE)
def sinpi_small(x):
    """``sin(pi x)`` for |x| <= 1/2 (slightly beyond is fine), a polynomial: no range reduction, no call."""
    z = x * x
    return x * (_S0 + z * (_S1 + z * (_S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * (_S6 + z * (
        _S7 + z * _S8))))))))


@njit(inline=LEAF_INLINE)
def sincg_fast(h, N):
    """``sin(pi N h) / sin(pi h)`` for an integer-valued N below ``FAST_N_MAX``.

    With n the integer nearest to h, f = h - n (exact), m the integer
    nearest to N f and g = N f - m (exact but for one rounding: f is split
    in two halves that N multiplies exactly), the value is ``(-1)^((N-1) n + m)
    sin(pi g) / sin(pi f)``, both sines of arguments within pi/2 from one
    polynomial each; at an integer h the limit ``(-1)^((N-1) n) N``.  A few
    ulp everywhere (C's ``sin(N pi h)/sin(pi h)`` loses ~|h/f| ulp near an
    integer h), about 3x cheaper than two libm sines, and free of branches
    and calls so that a loop of it is SIMD code.  Not C's bits: ``-c_quirks``
    keeps C's form.
    """
    n = math.floor(h + F(0.5))
    f = h - n
    c = _SPLIT * f
    f_hi = c - (c - f)
    f_lo = f - f_hi
    t_hi = N * f_hi                 # exact: 26 x 26 bits
    t_lo = N * f_lo                 # exact: 26 x 27 bits
    m = math.floor(t_hi + F(0.5))
    g = (t_hi - m) + t_lo           # t_hi - m is exact
    den = sinpi_small(f)
    num = sinpi_small(g)
    at_integer = den == 0.0
    num = N if at_integer else num
    den = F(1.0) if at_integer else den
    q = (N - F(1.0)) * n + m        # an integer (exact below 2^53): its parity is the sign
    odd = q - F(2.0) * math.floor(q * F(0.5))
    return num / den * (F(1.0) - F(2.0) * odd)


@njit(inline="always")
def sincg_h(h, N, exact=True):
    """``sincg(pi h, N)`` for a fractional Miller index h.

    Float64 with ``exact``: C's ``sincg(M_PI*h, N)`` exactly (``-c_quirks``).
    Float64 otherwise: :func:`sincg_fast` (C's form for N >= ``FAST_N_MAX``).
    Float32: the "delta" form ``sin(pi N d) / sin(pi d)`` with ``d = h -
    rint(h)``, equal to C's value up to its sign (the square has none); it
    keeps float32 trigonometry accurate far from the origin.
    """
    if SINGLE:
        d = h - F(round(h))
        if d == 0.0:
            return N
        x = F(math.pi) * d
        return math.sin(x * N) / math.sin(x)
    if exact or N >= FAST_N_MAX:
        return sincg(F(math.pi) * h, N)
    return sincg_fast(h, N)


@njit(inline=LEAF_INLINE)
def sinc3(x):
    """Transform of a sphere, ``3 (sin x / x - cos x) / x^2``; 1 at x = 0."""
    if x == 0.0:
        return F(1.0)
    return F(3.0) * (math.sin(x) / x - math.cos(x)) / (x * x)


@njit(inline="always")
def polarization_factor(kahn, ix, iy, iz, dx, dy, dz, ax, ay, az, exact=True):
    """Polarization factor of a diffracted ray (C's ``polarization_factor``).

    Returns the factor and the diffracted unit vector as C leaves it: C
    re-normalises ``diffracted`` in place, and the next sources of the same
    sub-pixel use that vector.

    ``exact``: C's ``cos(2 psi)`` with ``psi = -atan2(b_out, e_out)``; else
    the same value without the two transcendental calls,
    ``(e_out^2 - b_out^2) / (e_out^2 + b_out^2)`` (1 where both are 0, as
    atan2(0, 0) = 0), within a few ulp of C's.
    """
    ix, iy, iz, _m = unitize3(ix, iy, iz)
    dx, dy, dz, _m = unitize3(dx, dy, dz)
    ax, ay, az, _m = unitize3(ax, ay, az)
    cos2theta = ix * dx + iy * dy + iz * dz
    cos2theta_sqr = cos2theta * cos2theta
    sin2theta_sqr = F(1.0) - cos2theta_sqr
    psi = F(0.0)
    if kahn != 0.0:
        bx = ay * iz - az * iy
        by = az * ix - ax * iz
        bz = ax * iy - ay * ix
        bx, by, bz, _m = unitize3(bx, by, bz)
        ex = iy * bz - iz * by
        ey = iz * bx - ix * bz
        ez = ix * by - iy * bx
        ex, ey, ez, _m = unitize3(ex, ey, ez)
        e_out = dx * ex + dy * ey + dz * ez
        b_out = dx * bx + dy * by + dz * bz
        if exact:
            psi = -math.atan2(b_out, e_out)
        else:
            e2 = e_out * e_out
            b2 = b_out * b_out
            cos2psi = (e2 - b2) / (e2 + b2) if e2 + b2 > 0.0 else F(1.0)
            return F(0.5) * (F(1.0) + cos2theta_sqr - kahn * cos2psi * sin2theta_sqr), dx, dy, dz
    return (F(0.5) * (F(1.0) + cos2theta_sqr - kahn * math.cos(F(2.0) * psi) * sin2theta_sqr),
            dx, dy, dz)


@njit(inline="always")
def source_scattering(sources, source, dx, dy, dz):
    """Incident beam, wavelength, scattering vector and stol of one source (C's source loop).

    ``sources[source]`` holds the unit vector from the sample to the source
    and the wavelength; the incident beam is minus that vector, as in C.
    Returns ``(ix, iy, iz, lam, sx, sy, sz, stol)``: ``s = (d - i) / lambda``
    for the diffracted unit vector (dx, dy, dz) and ``stol = |s| / 2``, in
    C's arithmetic order.  The one copy of these lines: the physics loop,
    nonBragg's loop (``background.py``) and the ``-dmin`` search of
    ``cpu.first_phi_loop_pixel`` all call it.
    """
    ix = -sources[source, 0]
    iy = -sources[source, 1]
    iz = -sources[source, 2]
    lam = sources[source, 3]
    sx = (dx - ix) / lam
    sy = (dy - iy) / lam
    sz = (dz - iz) / lam
    stol = F(0.5) * math.sqrt(sx * sx + sy * sy + sz * sz)
    return ix, iy, iz, lam, sx, sy, sz, stol


@njit(inline=LEAF_INLINE)
def polint(x0, x1, x2, x3, y0, y1, y2, y3, x):
    """Cubic Lagrange polynomial through four points, at x (C's ``polint``).

    The kernels use :func:`polint_unit`, which gives the same bits for the
    integer abscissae of the interpolation; this general form is its reference.
    """
    t0 = (x - x1) * (x - x2) * (x - x3) * y0 / ((x0 - x1) * (x0 - x2) * (x0 - x3))
    t1 = (x - x0) * (x - x2) * (x - x3) * y1 / ((x1 - x0) * (x1 - x2) * (x1 - x3))
    t2 = (x - x0) * (x - x1) * (x - x3) * y2 / ((x2 - x0) * (x2 - x1) * (x2 - x3))
    t3 = (x - x0) * (x - x1) * (x - x2) * y3 / ((x3 - x0) * (x3 - x1) * (x3 - x2))
    return t0 + t1 + t2 + t3


@njit(inline=LEAF_INLINE)
def polint_unit(x0, y0, y1, y2, y3, x):
    """``polint`` through x0, x0+1, x0+2, x0+3 (integers), as the interpolation uses it.

    With integer abscissae C's denominators are exactly -6, 2, -2 and 6, and
    the differences ``x - x_i`` are the same numbers each time, so computing
    them once gives C's bits with a third of the arithmetic.
    """
    d0 = x - x0
    d1 = x - (x0 + F(1))
    d2 = x - (x0 + F(2))
    d3 = x - (x0 + F(3))
    t0 = d1 * d2 * d3 * y0 / F(-6)
    t1 = d0 * d2 * d3 * y1 / F(2)
    t2 = d0 * d1 * d3 * y2 / F(-2)
    t3 = d0 * d1 * d2 * y3 / F(6)
    return t0 + t1 + t2 + t3


@njit(inline=LEAF_INLINE)
def _interp_row(Fhkl, hi, ki, li, l0, l):
    return polint_unit(F(l0 - 1), Fhkl[hi, ki, li], Fhkl[hi, ki, li + 1], Fhkl[hi, ki, li + 2],
                       Fhkl[hi, ki, li + 3], l)


@njit(inline=LEAF_INLINE)
def _interp_plane(Fhkl, hi, ki, li, k0, l0, k, l):
    return polint_unit(F(k0 - 1),
                       _interp_row(Fhkl, hi, ki, li, l0, l),
                       _interp_row(Fhkl, hi, ki + 1, li, l0, l),
                       _interp_row(Fhkl, hi, ki + 2, li, l0, l),
                       _interp_row(Fhkl, hi, ki + 3, li, l0, l), k)


@njit(inline=LEAF_INLINE)
def polin3(Fhkl, h_min, k_min, l_min, h, k, l):
    """Tricubic interpolation of F at fractional (h, k, l) (C's ``polin3``).

    Uses the 4x4x4 block of the table around (floor(h), floor(k), floor(l));
    the caller has checked that it lies inside the table.
    """
    h0 = int(math.floor(h))
    k0 = int(math.floor(k))
    l0 = int(math.floor(l))
    hi = h0 - 1 - h_min
    ki = k0 - 1 - k_min
    li = l0 - 1 - l_min
    return polint_unit(F(h0 - 1),
                       _interp_plane(Fhkl, hi, ki, li, k0, l0, k, l),
                       _interp_plane(Fhkl, hi + 1, ki, li, k0, l0, k, l),
                       _interp_plane(Fhkl, hi + 2, ki, li, k0, l0, k, l),
                       _interp_plane(Fhkl, hi + 3, ki, li, k0, l0, k, l), h)


@njit(inline=LEAF_INLINE)
def lagrange_weights(x0, x):
    """The four weights of :func:`polint_unit` (through x0 .. x0+3) at x: ``polint_unit = sum w_i y_i``."""
    d0 = x - x0
    d1 = x - (x0 + F(1))
    d2 = x - (x0 + F(2))
    d3 = x - (x0 + F(3))
    return d1 * d2 * d3 / F(-6), d0 * d2 * d3 / F(2), d0 * d1 * d3 / F(-2), d0 * d1 * d2 / F(6)


@njit(inline="always")
def polin3_fast(Fhkl, h_min, k_min, l_min, h, k, l):
    """:func:`polin3` with the Lagrange weights of each axis computed once (not C's bits).

    C's ``polint`` multiplies each value into the weight's numerator before
    dividing; here the 12 weights are formed first and the 21 one-dimensional
    interpolations are sums of four products, in C's order (within an ulp or
    two of C per term, 4x less arithmetic).  ``-c_quirks`` keeps :func:`polin3`.
    """
    h0 = math.floor(h)
    k0 = math.floor(k)
    l0 = math.floor(l)
    wh0, wh1, wh2, wh3 = lagrange_weights(F(h0 - 1), h)
    wk0, wk1, wk2, wk3 = lagrange_weights(F(k0 - 1), k)
    wl0, wl1, wl2, wl3 = lagrange_weights(F(l0 - 1), l)
    hi = int(h0) - 1 - h_min
    ki = int(k0) - 1 - k_min
    li = int(l0) - 1 - l_min
    result = F(0.0)
    for a in range(4):
        wh = wh0 if a == 0 else (wh1 if a == 1 else (wh2 if a == 2 else wh3))
        plane = F(0.0)
        for b in range(4):
            wk = wk0 if b == 0 else (wk1 if b == 1 else (wk2 if b == 2 else wk3))
            row = Fhkl[hi + a, ki + b]
            v = wl0 * row[li] + wl1 * row[li + 1] + wl2 * row[li + 2] + wl3 * row[li + 3]
            plane = wk * v if b == 0 else plane + wk * v
        result = wh * plane if a == 0 else result + wh * plane
    return result


@njit(inline="always")
def interp_out_of_range(p, h, k, l):
    """True where the 4x4x4 interpolation block leaves the hkl table (as C tests it)."""
    return (((h - F(p.h_min) + F(3)) > F(p.h_range)) or (h - F(2) < F(p.h_min))
            or ((k - F(p.k_min) + F(3)) > F(p.k_range)) or (k - F(2) < F(p.k_min))
            or ((l - F(p.l_min) + F(3)) > F(p.l_range)) or (l - F(2) < F(p.l_min)))


@njit(inline="always")
def nearest_F(p, Fhkl, h0, k0, l0):
    """Structure factor of the nearest hkl, ``default_F`` outside the table."""
    if (p.hkls != 0 and h0 <= p.h_max and h0 >= p.h_min and k0 <= p.k_max and k0 >= p.k_min
            and l0 <= p.l_max and l0 >= p.l_min):
        return Fhkl[h0 - p.h_min, k0 - p.k_min, l0 - p.l_min]
    return p.default_F


@njit(inline="always")
def lattice_factor(p, h, k, l, h0, k0, l0, exact=True):
    """F_latt and its three axis factors for the crystal shape of ``p``.

    ``exact``: C's arithmetic for the square shape's sincg (else :func:`sincg_fast`).
    """
    fa = F(1.0)
    fb = F(1.0)
    fc = F(1.0)
    shape = fixed(V_SHAPE, p.shape)
    if shape == SQUARE:
        F_latt = F(1.0)
        if p.Na > 1:
            fa = sincg_h(h, p.Na, exact)
            F_latt *= fa
        if p.Nb > 1:
            fb = sincg_h(k, p.Nb, exact)
            F_latt *= fb
        if p.Nc > 1:
            fc = sincg_h(l, p.Nc, exact)
            F_latt *= fc
        return F_latt, fa, fb, fc
    dh = h - F(h0)
    dk = k - F(k0)
    dl = l - F(l0)
    if shape == ROUND:
        hrad_sqr = dh * dh * p.Na * p.Na + dk * dk * p.Nb * p.Nb + dl * dl * p.Nc * p.Nc
        return (p.Na * p.Nb * p.Nc * F(0.723601254558268) * sinc3(F(math.pi) * math.sqrt(hrad_sqr * p.fudge)),
                fa, fb, fc)
    dx = dh * p.astar_x + dk * p.bstar_x + dl * p.cstar_x
    dy = dh * p.astar_y + dk * p.bstar_y + dl * p.cstar_y
    dz = dh * p.astar_z + dk * p.bstar_z + dl * p.cstar_z
    rad_star_sqr = (dx * dx + dy * dy + dz * dz) * p.Na * p.Na * p.Nb * p.Nb * p.Nc * p.Nc
    if shape == GAUSS:
        return p.Na * p.Nb * p.Nc * math.exp(-(rad_star_sqr / F(0.63) * p.fudge)), fa, fb, fc
    inside = F(1.0) if rad_star_sqr * p.fudge < F(0.3969) else F(0.0)
    return p.Na * p.Nb * p.Nc * inside, fa, fb, fc


@njit(inline="always")
def panel_position(p, g, fpixel, spixel, subF, subS, Odet):
    """Position (m) of a sub-pixel of a detector layer, and its Fdet, Sdet.

    ``g`` holds the panel's geometry (``PanelGeom``, or ``p`` itself for a
    one-panel detector); ``spixel`` is the row within the panel.
    """
    Fdet = g.subpixel_size * F(fpixel * p.oversample + subF) + g.subpixel_size / F(2.0)
    Sdet = g.subpixel_size * F(spixel * p.oversample + subS) + g.subpixel_size / F(2.0)
    px = Fdet * g.fdet_x + Sdet * g.sdet_x + Odet * g.odet_x + g.pix0_x
    py = Fdet * g.fdet_y + Sdet * g.sdet_y + Odet * g.odet_y + g.pix0_y
    pz = Fdet * g.fdet_z + Sdet * g.sdet_z + Odet * g.odet_z + g.pix0_z
    if option(V_CURVED, p.curved != 0):
        vx = p.distance * p.beam_x
        vy = p.distance * p.beam_y
        vz = p.distance * p.beam_z
        nx, ny, nz = rotate_axis3(vx, vy, vz, g.sdet_x, g.sdet_y, g.sdet_z, py / p.distance)
        px, py, pz = rotate_axis3(nx, ny, nz, g.fdet_x, g.fdet_y, g.fdet_z, pz / p.distance)
    return px, py, pz, Fdet, Sdet


@njit(inline="always")
def subpixel_position(p, fpixel, spixel, subF, subS, Odet):
    """Position (m) of a sub-pixel of a detector layer, and its Fdet, Sdet (one-panel geometry of ``p``)."""
    return panel_position(p, p, fpixel, spixel, subF, subS, Odet)


@njit(inline="always")
def panel_geometry(p, panels, spixel):
    """The geometry of the panel that holds image row ``spixel``, and the row within that panel.

    A multi-panel detector is rendered as one image whose rows are the
    panels' rows, panel after panel (all panels have ``p.fpixels`` x
    ``p.panel_rows`` pixels); ``panels`` holds each panel's geometry (see
    ``PANEL_COLUMNS``).  One panel: the geometry of ``p`` itself, the row unchanged.
    """
    if option(V_PANELS, p.npanels > 1):
        k = spixel // p.panel_rows
        return (PanelGeom(panels[k, 0], panels[k, 1], panels[k, 2], panels[k, 3], panels[k, 4], panels[k, 5],
                          panels[k, 6], panels[k, 7], panels[k, 8], panels[k, 9], panels[k, 10], panels[k, 11],
                          panels[k, 12], panels[k, 13], panels[k, 14], panels[k, 15], panels[k, 16]),
                spixel - k * p.panel_rows)
    return (PanelGeom(p.pix0_x, p.pix0_y, p.pix0_z, p.fdet_x, p.fdet_y, p.fdet_z, p.sdet_x, p.sdet_y, p.sdet_z,
                      p.odet_x, p.odet_y, p.odet_z, p.pixel_size, p.subpixel_size, p.close_distance,
                      p.thickstep, p.detector_mu),
            spixel)


@njit(inline="always")
def dmin_skips(p, stol):
    """True where ``-dmin`` drops a contribution (resolution finer than dmin)."""
    return option(V_DMIN, p.dmin > 0.0) and stol > 0.0 and p.dmin > F(0.5) / stol


@njit(inline="always")
def pixel_is_rendered(p, mask, spixel, fpixel):
    """C's test: inside the (inclusive) ROI and not zero in the mask."""
    if not may(V_MASK):
        return True
    if fpixel < p.roi_xmin or fpixel > p.roi_xmax or spixel < p.roi_ymin or spixel > p.roi_ymax:
        return False
    if p.use_mask != 0 and mask[spixel * p.fpixels + fpixel] == 0:
        return False
    return True


@njit(inline="always")
def store_result(out, out_oob, idx, result):
    """Write what ``render_pixel`` returned into the kernels' output rows."""
    I, cap, polar, omega, bg, omega_sum, oob = result
    out[0, idx] = I
    out[1, idx] = cap
    out[2, idx] = polar
    out[3, idx] = omega
    out[4, idx] = bg
    out[5, idx] = omega_sum
    out_oob[idx] = oob


@njit(inline="always")
def clear_result(out, out_oob, idx):
    """Outputs of a pixel that is not rendered (outside the ROI, masked)."""
    for row in range(6):
        out[row, idx] = 0.0
    out_oob[idx] = -1


@njit(inline="always")
def _trace_row(trace, n, start, values):
    """Write a tuple of floats into row ``n`` of the trace, from column ``start``."""
    for i in range(len(values)):
        trace[n, start + i] = values[i]


@njit(inline=LEAF_INLINE)
def lattice_factors_simd(Na, Nb, Nc, rot_t, nj, sx, sy, sz, scratch):
    """``scratch[j]`` = square-crystal F_latt of pair j (phi step * mosaic domains + domain), fast sincg.

    ``rot_t[c, j]`` is ``rot[phi step, domain, c]`` (transposed: contiguous
    SIMD loads).  h, k, l and the product are those of the per-pair loop,
    in the same order, so the values are those of :func:`lattice_factor`
    with the fast sincg; the loop has no branch and no call (SIMD code).
    """
    use_a = Na > 1
    use_b = Nb > 1
    use_c = Nc > 1
    for j in range(nj):
        h = rot_t[0, j] * sx + rot_t[1, j] * sy + rot_t[2, j] * sz
        k = rot_t[3, j] * sx + rot_t[4, j] * sy + rot_t[5, j] * sz
        l = rot_t[6, j] * sx + rot_t[7, j] * sy + rot_t[8, j] * sz
        fa = sincg_fast(h, Na)
        fb = sincg_fast(k, Nb)
        fc = sincg_fast(l, Nc)
        fa = fa if use_a else F(1.0)
        fb = fb if use_b else F(1.0)
        fc = fc if use_c else F(1.0)
        scratch[j] = fa * fb * fc


def _render_pixel(p, spixel, fpixel, sources, rot, phi_map, phi_map_first, Fhkl, trace, panels,
                  rot_t, scratch):
    """Photons at one pixel before the final scale, following nanoBragg.c.

    ``spixel`` is the image row (panel after panel for a multi-panel
    detector, see :func:`panel_geometry`); ``panels`` the panel table.

    Returns
    -------
    I : float
        Sum of F_cell^2 F_latt^2 (times the per-contribution factors that
        are applied inside the loops); with ``-c_quirks`` it starts at the
        water background as in C.
    cap, polar, omega : float
        The factors still to apply after ``r_e^2 fluence I / steps`` (1.0
        where they were applied per contribution).
    bg : float
        Factor of the water background photons ``I_bg`` for this pixel
        (0 with ``-c_quirks``, where the background is inside I).
    omega_sum : float
        Sum of the solid angle over sub-pixels and layers (C's statistics).
    first_oob : int
        Index of the first evaluation whose interpolation block left the
        hkl table, -1 if none (for ``-c_quirks`` and the warning).

    ``rot_t`` (float64[9, phisteps * mosaic_domains], ``rot`` transposed)
    and ``scratch`` (float64[phisteps * mosaic_domains]) serve the SIMD pass
    of the CPU variants (``VECTOR``); other builds never read them.
    """
    imgidx = spixel * p.fpixels + fpixel
    g, prow = panel_geometry(p, panels, spixel)
    quirks = option(V_QUIRKS, p.quirks != 0)
    ovs_thick = option(V_OVS_THICK, p.oversample_thick != 0)
    ovs_polar = option(V_OVS_POLAR, p.oversample_polar != 0)
    ovs_omega = option(V_OVS_OMEGA, p.oversample_omega != 0)
    thick = option(V_SENSOR, p.detector_thick != 0.0)
    nthick = 1 if V_SENSOR == OFF else p.thicksteps
    water = option(V_WATER, p.water != 0)
    interpolate = option(V_INTERP, p.interpolate != 0)
    # C's arithmetic (bits) of sincg and of the tricubic interpolation with -c_quirks or when asked
    # for (``p.c_math``); else the fast forms (sincg_fast, polin3_fast, the polarization's cos 2 psi)
    c_math = quirks or p.c_math != 0
    # the SIMD pass: compiled in for the CPU variants without -c_quirks or trace, square crystal
    simd = False
    if VECTOR and V_QUIRKS == OFF and V_TRACE == OFF and V_SHAPE == SQUARE:
        simd = ((not c_math) and (p.Na > 1 or p.Nb > 1 or p.Nc > 1)
                and p.Na < FAST_N_MAX and p.Nb < FAST_N_MAX and p.Nc < FAST_N_MAX)
    nmos = p.mosaic_domains
    I = ACC(p.I_bg) if quirks else ACC(0.0)
    polar = F(1.0) if p.nopolar != 0 else F(0.0)
    omega_pixel = F(0.0)
    capture = F(0.0)
    omega_sum = ACC(0.0)
    polar_bg = F(-1.0)
    omega_bg = F(0.0)
    capture_bg = F(0.0)
    first_oob = -1
    evaluation = 0
    ntrace = 0
    tracing = option(V_TRACE, imgidx == p.trace_pixel)
    loop_seen = imgidx != p.first_phi_pixel
    thick_weighted = (not quirks) and thick and p.detector_thick > 0.0 and not ovs_thick
    for thick_tic in range(nthick):
        Odet = F(thick_tic) * g.thickstep
        capture = F(0.0)
        if not thick:
            capture = F(1.0)
        for subS in range(p.oversample):
            for subF in range(p.oversample):
                px, py, pz, Fdet, Sdet = panel_position(p, g, fpixel, prow, subF, subS, Odet)
                dx, dy, dz, airpath = unitize3(px, py, pz)
                if omega_pixel == 0.0 or ovs_omega:
                    omega_pixel = g.pixel_size * g.pixel_size / airpath / airpath * g.close_distance / airpath
                    if p.point_pixel != 0:
                        omega_pixel = F(1.0) / airpath / airpath
                    if omega_bg == 0.0:
                        omega_bg = omega_pixel
                omega_sum += omega_pixel
                if capture == 0.0 or ovs_thick:
                    parallax = dx * g.odet_x + dy * g.odet_y + dz * g.odet_z
                    capture = (math.exp(-F(thick_tic) * g.thickstep * g.detector_mu / parallax)
                               - math.exp(-F(thick_tic + 1) * g.thickstep * g.detector_mu / parallax))
                    if subS == 0 and subF == 0:
                        capture_bg += capture
                for source in range(p.nsources):
                    ix, iy, iz, lam, sx, sy, sz, stol = source_scattering(sources, source, dx, dy, dz)
                    if dmin_skips(p, stol):
                        continue
                    if polar == 0.0 or ovs_polar:
                        polar, dx, dy, dz = polarization_factor(p.kahn, ix, iy, iz, dx, dy, dz,
                                                                p.polar_x, p.polar_y, p.polar_z, c_math)
                        if polar_bg < 0.0:
                            polar_bg = polar
                    if simd:
                        lattice_factors_simd(p.Na, p.Nb, p.Nc, rot_t, p.phisteps * nmos, sx, sy, sz, scratch)
                    for phi_tic in range(p.phisteps):
                        # the maps are the identity without -c_quirks (crystal.phi_maps)
                        r = phi_tic
                        if may(V_QUIRKS):
                            r = phi_map[phi_tic] if loop_seen else phi_map_first[phi_tic]
                        for mos_tic in range(p.mosaic_domains):
                            ax = rot[r, mos_tic, 0]
                            ay = rot[r, mos_tic, 1]
                            az = rot[r, mos_tic, 2]
                            bx = rot[r, mos_tic, 3]
                            by = rot[r, mos_tic, 4]
                            bz = rot[r, mos_tic, 5]
                            cx = rot[r, mos_tic, 6]
                            cy = rot[r, mos_tic, 7]
                            cz = rot[r, mos_tic, 8]
                            h = ax * sx + ay * sy + az * sz
                            k = bx * sx + by * sy + bz * sz
                            l = cx * sx + cy * sy + cz * sz
                            h0 = int(math.ceil(h - F(0.5)))
                            k0 = int(math.ceil(k - F(0.5)))
                            l0 = int(math.ceil(l - F(0.5)))
                            if simd:
                                F_latt = scratch[phi_tic * nmos + mos_tic]
                                fa = fb = fc = F(1.0)
                            else:
                                F_latt, fa, fb, fc = lattice_factor(p, h, k, l, h0, k0, l0, c_math)
                            skipped = F_latt == 0.0 and not water
                            F_cell = F(0.0)
                            interpolated = False
                            if not skipped:
                                # the cut (C's interpolation switched off at the first miss) is -c_quirks only
                                if interpolate and (
                                        not may(V_QUIRKS) or imgidx < p.interp_cut_pixel
                                        or (imgidx == p.interp_cut_pixel and evaluation < p.interp_cut_eval)):
                                    if interp_out_of_range(p, h, k, l):
                                        if first_oob < 0:
                                            first_oob = evaluation
                                        F_cell = nearest_F(p, Fhkl, h0, k0, l0)
                                    else:
                                        if c_math:
                                            F_cell = polin3(Fhkl, p.h_min, p.k_min, p.l_min, h, k, l)
                                        else:
                                            F_cell = polin3_fast(Fhkl, p.h_min, p.k_min, p.l_min, h, k, l)
                                        interpolated = True
                                else:
                                    F_cell = nearest_F(p, Fhkl, h0, k0, l0)
                                if quirks:
                                    I += F_cell * F_cell * F_latt * F_latt
                                    if ovs_thick:
                                        I *= capture
                                    if ovs_polar:
                                        I *= polar
                                    if ovs_omega:
                                        I *= omega_pixel
                                else:
                                    # the source's weight (sources[:, 4]: 1.0 unless weighted, kernel_sources)
                                    term = F_cell * F_cell * F_latt * F_latt * sources[source, 4]
                                    if thick_weighted or ovs_thick:
                                        term *= capture
                                    if ovs_polar:
                                        term *= polar
                                    if ovs_omega:
                                        term *= omega_pixel
                                    I += term
                            if V_TRACE != OFF and tracing and ntrace < trace.shape[0]:
                                _trace_row(trace, ntrace, 0,
                                           (F(thick_tic), F(subS), F(subF), F(source),
                                            F(phi_tic), F(mos_tic), px, py, pz, airpath, omega_pixel))
                                _trace_row(trace, ntrace, 11, (dx, dy, dz, ix, iy, iz, lam, sx, sy, sz))
                                _trace_row(trace, ntrace, 21, (ax, ay, az, bx, by, bz, cx, cy, cz))
                                _trace_row(trace, ntrace, 30, (h, k, l, F(h0), F(k0), F(l0),
                                                               fa, fb, fc, F_latt, F_cell))
                                _trace_row(trace, ntrace, 41, (F(I), polar, capture,
                                                               F(1.0) if interpolated else F(0.0),
                                                               F(1.0) if skipped else F(0.0)))
                                ntrace += 1
                            evaluation += 1
                    loop_seen = True
    cap_f = F(1.0)
    if not ovs_thick and (quirks or not thick):
        cap_f = capture
    polar_f = F(1.0) if ovs_polar else polar
    omega_f = F(1.0) if ovs_omega else omega_pixel
    bg = F(0.0)
    if not quirks and water:
        if polar_bg < 0.0:
            polar_bg = polar
        cap_bg = F(1.0) if not thick else capture_bg
        bg = polar_bg * omega_bg * cap_bg
    return I, cap_f, polar_f, omega_f, bg, omega_sum, first_oob


# one physics, two ways of compiling it: a called function for the CPU
# kernels (compiles in a third of the time), inlined for CUDA (where
# cuda.compile_ptx needs no GPU for inlined code)
render_pixel = njit(inline="never")(_render_pixel)
render_pixel_inline = njit(inline="always")(_render_pixel)
