"""Write a DIALS experiment list with a 4-panel detector (gaps, small tilts) and a crystal.

Run with DIALS's Python (dxtbx): ``/usr/bin/python3 make_4panel_expt.py OUT.expt [NPIX [THICK_MM]]``.
Panels of NPIX x NPIX pixels (0.172 mm) in a 2 x 2 grid around the beam at
100 mm, 1.5 mm gaps, each tilted by a degree or two about its own axes; the
crystal: cubic 50 A (P 1) in a general orientation.
"""
import math
import sys

from dxtbx.model import BeamFactory, Crystal, Detector, Panel, ExperimentList, Experiment
from scitbx import matrix

out = sys.argv[1]
npix = int(sys.argv[2]) if len(sys.argv) > 2 else 64
thick = float(sys.argv[3]) if len(sys.argv) > 3 else 0.45
ps = 0.172
size = npix * ps
gap = 1.5
beam = BeamFactory.simple_directional((0.0, 0.0, 1.0), 1.0)
beam.set_polarization_normal((0.0, 1.0, 0.0))
beam.set_polarization_fraction(0.999)
det = Detector()
root = det.hierarchy()
root.set_frame((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -100.0))
tilts = [(1.0, -0.5), (-1.5, 0.8), (0.7, 1.2), (-0.9, -1.1)]
for k, (ix, iy) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
    p = root.add_panel()
    p.set_name("module%d" % k)
    p.set_type("SENSOR_PAD")
    p.set_pixel_size((ps, ps))
    p.set_image_size((npix, npix))
    p.set_trusted_range((-1, 1e6))
    p.set_thickness(thick)
    p.set_material("Si")
    ax, ay = (math.radians(t) for t in tilts[k])
    fast = matrix.col((1.0, 0.0, 0.0)).rotate_around_origin(matrix.col((0.0, 1.0, 0.0)), ay)
    slow = matrix.col((0.0, 1.0, 0.0)).rotate_around_origin(matrix.col((1.0, 0.0, 0.0)), ax)
    slow = (slow - fast * fast.dot(slow)).normalize()
    # local frame: origin in the group's (fast, slow, normal) coordinates
    ox = -size - gap / 2 + ix * (size + gap) + 0.3 * k
    oy = -size - gap / 2 + iy * (size + gap) - 0.2 * k
    p.set_local_frame(fast.elems, slow.elems, (ox, oy, 0.05 * k))
real = matrix.sqr((50.0, 0.0, 0.0, 0.0, 50.0, 0.0, 0.0, 0.0, 50.0))
U = (matrix.col((1, 0, 0)).axis_and_angle_as_r3_rotation_matrix(0.4)
     * matrix.col((0, 1, 0)).axis_and_angle_as_r3_rotation_matrix(0.9)
     * matrix.col((0, 0, 1)).axis_and_angle_as_r3_rotation_matrix(0.2))
a, b, c = (U * matrix.col(real.elems[3 * i:3 * i + 3]) for i in range(3))
crystal = Crystal(a.elems, b.elems, c.elems, space_group_symbol="P 1")
el = ExperimentList([Experiment(beam=beam, detector=det, crystal=crystal)])
el.as_file(out)
