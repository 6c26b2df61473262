"""``nanobrag-numba batch``: many images from one base command line, resumable.

::

    nanobrag-numba batch --random-orientations 200 --seed 1 --out run1 -- \\
        -hkl example.hkl -cell 79.1 79.1 38.4 90 90 90 -N 5 -detpixels 64
    nanobrag-numba batch --jobs jobs.jsonl --out run2 --workers 2 -- FLAGS
    nanobrag-numba batch --phi-series 0 0.1 50 --out run3 --scheduler tcp://host:8786 -- FLAGS

Every image is the base configuration (the nanoBragg flags after ``--``)
with some :class:`~nanobrag_numba.config.Config` fields changed.  The jobs
come from a JSON Lines file (one object of changes per line, keys are Config
field names in SI units, plus ``misset_deg``, ``phi_deg``, ``id`` and
``name``), from ``--random-orientations N`` or from ``--phi-series``.

Each finished image is one file in the output folder (float32 TIFF, raw
float or SMV; optionally the Poisson-noise SMV image) and one line of
``manifest.jsonl`` with everything needed to render it again.  Files are
written atomically and a manifest line is appended (and fsynced) only after
its files are in place, so a rerun with the same arguments skips exactly the
images that are finished and redoes the rest.

Images are rendered in this process, on a local Dask cluster started for the
batch (``--workers N``, optionally one per GPU with ``--gpus``) or on an
existing Dask cluster (``--scheduler ADDRESS``).  Each worker builds its
:class:`~nanobrag_numba.api.Simulator` once (the HKL table is read once per
process) and writes its images to the output folder; the client appends
the manifest lines.  See docs/batch.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import socket
import sys
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .config import RTD, Config
from .errors import NanoBraggError

PROG = "nanobrag-numba batch"
MANIFEST = "manifest.jsonl"
SETTINGS = "batch.json"
LOCK = ".batch.lock"
FORMATS = {"tiff": ".tif", "smv": ".img", "float": ".bin", "cbf": ".cbf", "nxs": ".nxs"}
# --format nxs: besides each job's one-image file, ONE NXmx file with the stack of the whole series
NXS_SERIES = "series.nxs"
NOISE_DIR = "noise"            # the noise images: noise/NAME.img (the frame number stays last)
MAX_JOB_MEMORY_SHARE = 0.5     # the job list may use at most this share of the available memory
JOB_BYTES = 8192               # memory per job while a batch runs (job, payload, record), measured ~4 KB
CONVENIENCE_KEYS = ("misset_deg", "phi_deg", "spectrum_A")
LABEL_KEYS = ("id", "name")
ORIENTATION_METHODS = ("uniform", "c")
DEFAULT_CHUNK = 4
NOISE_GENERATORS = ("c", "counter")     # see nanobrag_numba/noise.py

# Config fields a job may not change: the batch chooses the outputs, and the
# reporting fields would only print into the workers' logs.
NOT_PER_JOB = {
    "floatfile": "the batch writes its own files (--format, --noise)",
    "intfile": "the batch writes its own files (--format, --noise)",
    "pgmfile": "the batch writes its own files (--format, --noise)",
    "noisefile": "the batch writes its own files (--format, --noise)",
    "write_pgm": "the batch writes its own files (--format, --noise)",
    "calculate_noise": "the batch writes its own files (--format, --noise)",
    "dumpfile": "the structure factors come from the base flags (-hkl, or -dump without -hkl)",
    "progress": "the batch prints its own progress line",
    "printout": "pixel printouts are not available in a batch",
    "printout_pixel": "pixel printouts are not available in a batch",
    "trace_pixel": "tracing is not available in a batch (use -trace_pixel on one image)",
    "noop_flags": "internal field",
    "quirk_hits": "internal field",
    "parse_notes": "internal field",
    "command_line": "internal field",
    "cbffile": "the batch writes its own files (--format, --noise)",
    "cbfnoisefile": "the batch writes its own files (--format, --noise)",
    "nxsfile": "the batch writes its own files (--format, --noise)",
    "nxsnoisefile": "the batch writes its own files (--format, --noise)",
}
# Flags of the base command line that have no meaning in a batch.
NOT_IN_BASE = ("-floatfile", "-intfile", "-noisefile", "-cbffile", "-cbfnoisefile", "-nxsfile", "-nxsnoisefile",
               "-pgmfile", "-pgmscale", "-printout",
               "-printout_pixel", "-trace_pixel")
# the main command's flags of noisify's detector model (--noise-model)
NOISE_MODEL_FLAGS = ("-readout_noise", "-flicker", "-calibration", "-calib_seed", "-psf", "-psf_fwhm", "-psf_radius")


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


# Config fields that name input files: made absolute so that workers in
# other folders find them.
PATH_FIELDS = ("hklfile", "matfile", "stolfile", "sourcefile", "spectrumfile", "imgfile", "maskfile",
               "background_stol", "detector_json", "expt")

_FIELDS = tuple(f.name for f in dataclasses.fields(Config))


# ---------------------------------------------------------------- jobs

class JobError(Exception):
    """A job that cannot be rendered (bad line, unknown key, bad value)."""


@dataclass
class Job:
    """One image of the batch.

    Attributes
    ----------
    index : int
        Position in the job list (0-based; blank lines of a jobs file are not counted).
    source : dict
        The job as given: the parsed JSON object, or the generated one
        (``{"misset_deg": [...]}``, ``{"phi_deg": x}``).
    line : int or None
        Line number in the jobs file (1-based), None for generated jobs.
    id : object
        The optional ``"id"`` of the job (any JSON value), recorded as is.
    name : str
        Stem of the output file names (``"name"``, default ``img_NNNNNN``).
    overrides : dict
        Config fields (SI units) passed to ``Simulator.render``; tuples for vectors.
    noise_seed : int
        ``-seed`` of this image's noise image (also set as the ``seed`` field).
    extra : dict
        What generated the job (e.g. the orientation method and seed), recorded in the manifest.
    error : str or None
        Why the job cannot run (it is then reported and skipped).
    key : str
        Fingerprint of everything that makes this image's files (base flags,
        overrides, name, format, noise); a manifest entry counts for a rerun
        only when its key is the same.
    """

    index: int
    source: Any
    line: Optional[int] = None
    id: Any = None
    name: str = ""
    overrides: Dict[str, Any] = field(default_factory=dict)
    noise_seed: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    key: str = ""

    def where(self, jobs_label: Optional[str]) -> str:
        """How error messages name this job: ``FILE line N (id ID)`` or ``job N (NAME, id ID)``."""
        ident = "id %s" % _show_id(self.id) if self.id is not None else ""
        if self.line is not None:
            return "%s line %d%s" % (jobs_label or "jobs", self.line, " (%s)" % ident if ident else "")
        label = ", ".join(x for x in (self.name, ident) if x)
        return "job %d%s" % (self.index, " (%s)" % label if label else "")


def _show_id(value) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_json(value) -> str:
    return json.dumps(value)


def coerce_value(name: str, value: Any, tp=None) -> Any:
    """Check a JSON value against the type of Config field ``name`` and convert it.

    The check is the Python API's (:func:`nanobrag_numba.api.coerce_field`,
    the one place that reads the Config annotations), with the bad value
    shown as JSON.

    Parameters
    ----------
    name : str
        Config field name (for messages and to look up the type).
    value : object
        The value from JSON (numbers, strings, booleans, lists, null).
    tp : type, optional
        The annotation to check against (default: the field's own).

    Returns
    -------
    object
        The value as the Config holds it: lists become tuples, integral
        floats become ints for integer fields.

    Raises
    ------
    JobError
        If the value does not fit the field (e.g. a string for a number, two
        numbers for a 3-vector, NaN).
    """
    from .api import coerce_field
    try:
        return coerce_field(name, value, tp, show=_show_json)
    except NanoBraggError as exc:
        raise JobError(str(exc)) from None


def _angles(key: str, value: Any, n: int):
    """A number (n=1) or a list of n numbers, in degrees, from a job object."""
    if n == 1:
        return coerce_value(key, value, float)
    return coerce_value(key, value, typing.Tuple[float, float, float])


def resolve_job(obj: Any) -> Tuple[Dict[str, Any], Any, Optional[str]]:
    """The Config changes of one job object, its ``id`` and its ``name``.

    Parameters
    ----------
    obj : object
        A parsed JSON value; it must be an object whose keys are Config
        field names (SI units), ``misset_deg`` (three angles in degrees, as
        ``-misset``), ``phi_deg`` (degrees, as ``-phi``), ``spectrum_A``
        (``[[wavelength A, weight], ...]``, converted as ``-spectrum`` converts
        its file), ``id`` or ``name``.

    Returns
    -------
    overrides : dict
        Config fields to change.  ``misset_deg`` becomes ``misset`` in
        radians, converted exactly as the command line converts ``-misset``
        (so the same numbers give bit-identical images), and a job that sets
        the misset also sets ``misset_random`` to false unless it gives it.
    id : object
        The job's ``id`` (None if absent).
    name : str or None
        The job's ``name`` (None if absent).

    Raises
    ------
    JobError
        For anything but an object, an unknown or forbidden key, a key given
        twice in two spellings (``misset`` and ``misset_deg``), or a bad value.
    """
    if not isinstance(obj, dict):
        raise JobError("a job must be a JSON object of Config fields, got %s" % type(obj).__name__)
    out: Dict[str, Any] = {}
    unknown = [k for k in obj if k not in _FIELDS and k not in CONVENIENCE_KEYS and k not in LABEL_KEYS]
    if unknown:
        import difflib
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(_FIELDS) + list(CONVENIENCE_KEYS), n=1)
            hints.append("%r%s" % (k, " (did you mean %r?)" % close[0] if close else ""))
        raise JobError("unknown key %s: keys are Config field names (SI units), misset_deg, phi_deg, "
                       "spectrum_A, id and name" % ", ".join(hints))
    for k, v in obj.items():
        if k in LABEL_KEYS or k in CONVENIENCE_KEYS:
            continue
        if k in NOT_PER_JOB:
            raise JobError("%s cannot be set per job: %s" % (k, NOT_PER_JOB[k]))
        out[k] = coerce_value(k, v)
    if "misset_deg" in obj:
        if "misset" in obj:
            raise JobError("give misset (radians) or misset_deg (degrees), not both")
        out["misset"] = tuple(float(d) / RTD for d in _angles("misset_deg", obj["misset_deg"], 3))
    if "phi_deg" in obj:
        if "phi0" in obj:
            raise JobError("give phi0 (radians) or phi_deg (degrees), not both")
        out["phi0"] = float(_angles("phi_deg", obj["phi_deg"], 1)) / RTD
    if "spectrum_A" in obj:
        if "spectrum" in obj:
            raise JobError("give spectrum (metres) or spectrum_A (Angstrom), not both")
        pairs = coerce_value("spectrum", obj["spectrum_A"])
        if pairs is not None:       # converted as -spectrum converts its file: the same numbers, the same image
            pairs = tuple((lam / 1.0e10, w) for lam, w in pairs)
        out["spectrum"] = pairs
    if out.get("misset") is not None and "misset_random" not in obj:
        out["misset_random"] = False
    name = obj.get("name")
    if name is not None:
        if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name \
                or name != name.strip() or any(ord(c) < 32 for c in name):
            raise JobError("name must be a plain file name (no folders, not starting with '.'), got %s"
                           % json.dumps(name))
    return out, obj.get("id"), name


def read_jobs(path: str) -> Tuple[List[Job], str]:
    """Jobs from a JSON Lines file (``-`` reads standard input).

    Blank lines are skipped; every other line must be one JSON object.  A
    malformed line gives a job with ``error`` set and its line number, so
    that it is reported without stopping the other jobs.

    Parameters
    ----------
    path : str
        The jobs file.

    Returns
    -------
    jobs : list of Job
        One per non-blank line, ``index`` counting from 0.
    label : str
        How messages name the file.

    Raises
    ------
    NanoBraggError
        If the file cannot be read (a usage error).
    """
    label = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        raise NanoBraggError("cannot read the jobs file %s: %s" % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError as exc:
        raise NanoBraggError("the jobs file %s is not UTF-8 text: %s" % (path, exc)) from None
    jobs: List[Job] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        job = Job(index=len(jobs), source=None, line=lineno)
        try:
            job.source = json.loads(line)
        except json.JSONDecodeError as exc:
            job.error = "not valid JSON: %s" % exc.msg + (" (column %d)" % exc.colno)
        except RecursionError:
            job.error = "not valid JSON: nested too deeply"
        jobs.append(job)
    return jobs, label


def uniform_rotations(n: int, seed: int):
    """``n`` rotation matrices uniformly distributed over SO(3) (Haar measure).

    Method (Shoemake, "Uniform random rotations", Graphics Gems III, 1992):
    ``u = numpy.random.Generator(numpy.random.PCG64(seed)).random((n, 3))``;
    row i gives the unit quaternion
    ``(sqrt(1-u0) sin 2 pi u1, sqrt(1-u0) cos 2 pi u1, sqrt(u0) sin 2 pi u2, sqrt(u0) cos 2 pi u2)``,
    which is uniform on the 3-sphere, hence a uniform rotation.  Row i
    depends only on ``seed`` and i, so the first rotations do not change
    when ``n`` grows.

    Returns
    -------
    numpy.ndarray
        float64 ``(n, 3, 3)`` rotation matrices.
    """
    import numpy as np
    chunks = list(_uniform_rotation_chunks(n, seed, max(1, int(n))))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros((0, 3, 3))


def _uniform_rotation_chunks(n: int, seed: int, chunk: int = 65536):
    """:func:`uniform_rotations` in blocks of ``chunk`` rows (the same rotations, bounded memory).

    One generator draws the blocks one after the other, so the rows are
    those of one ``random((n, 3))`` call.
    """
    import numpy as np
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    left = int(n)
    while left > 0:
        m = min(chunk, left)
        left -= m
        yield _quaternion_matrices(rng.random((m, 3)))


def _quaternion_matrices(u):
    import numpy as np
    a, b = np.sqrt(1.0 - u[:, 0]), np.sqrt(u[:, 0])
    x, y = a * np.sin(2 * np.pi * u[:, 1]), a * np.cos(2 * np.pi * u[:, 1])
    z, w = b * np.sin(2 * np.pi * u[:, 2]), b * np.cos(2 * np.pi * u[:, 2])
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=1)


def random_orientations(n: int, seed: int, method: str = "uniform") -> List[Tuple[float, float, float]]:
    """Misset angles (degrees) of ``n`` random crystal orientations.

    Parameters
    ----------
    n : int
        Number of orientations.
    seed : int
        ``uniform``: the seed of numpy's PCG64 generator (see
        :func:`uniform_rotations`).  ``c``: orientation i is the C program's
        ``-misset random -misset_seed seed+i`` (``seed`` >= 1).
    method : str
        ``uniform`` (Haar-uniform rotations) or ``c`` (the C program's own
        generator, reproducible in C; its rotations are *not* uniform: they
        favour small rotation angles).

    Returns
    -------
    list of tuple
        ``(rotx, roty, rotz)`` in degrees for ``-misset`` (rotations about x,
        then y, then z, as C's ``rotate``).  ``misset_deg`` of the jobs:
        ``value / RTD`` is exactly what ``-misset`` with these numbers gives.
    """
    import numpy as np
    from .kernels import crand as kc
    out = []
    if method == "uniform":
        miss = np.zeros(3, dtype=np.float64)
        for block in _uniform_rotation_chunks(n, seed):
            for umat in block:
                kc.umat2misset(np.ascontiguousarray(umat.reshape(9)), miss)
                out.append(tuple(float(v) * RTD for v in miss))
    elif method == "c":
        from .crand import CRandom
        rng = CRandom()
        for i in range(int(n)):
            _umat, angles = rng.random_misset(int(seed) + i)
            out.append(tuple(float(v) * RTD for v in angles))
    else:
        raise NanoBraggError("unknown orientation method %r (use %s)" % (method, " or ".join(ORIENTATION_METHODS)))
    return out


# ---------------------------------------------------------------- options

class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line NanoBraggErrors (exit status 2)."""

    def error(self, message):
        raise NanoBraggError(message)


def available_memory() -> Optional[int]:
    """Bytes of memory available to this process now (the set-up's own probe)."""
    from .simulator import memory_bytes
    return memory_bytes()


def max_jobs(memory: Optional[int] = None) -> Optional[int]:
    """The most jobs one batch may hold: MAX_JOB_MEMORY_SHARE of the available memory at JOB_BYTES each."""
    memory = available_memory() if memory is None else memory
    return None if memory is None else max(1, int(memory * MAX_JOB_MEMORY_SHARE) // JOB_BYTES)


def check_job_count(n: int, what: str, memory: Optional[int] = None) -> None:
    """Refuse, before anything is generated, a batch whose job list cannot fit in memory.

    Every job is held in memory while the batch runs (about JOB_BYTES each,
    with its payload and manifest record), so the limit is
    ``MAX_JOB_MEMORY_SHARE`` x available memory / ``JOB_BYTES``.
    """
    limit = max_jobs(memory)
    if limit is not None and n > limit:
        raise NanoBraggError("%s: the job list would need about %.1f GiB of memory, more than half of the "
                             "%.1f GiB available; at most %d jobs fit in one batch (split the work over "
                             "several batches, each with its own --out)"
                             % (what, n * JOB_BYTES / 2 ** 30,
                                (available_memory() if memory is None else memory) / 2 ** 30, limit))


def build_parser() -> argparse.ArgumentParser:
    """The option parser of ``nanobrag-numba batch`` (the base flags follow ``--``)."""
    p = _Parser(
        prog=PROG, add_help=False, allow_abbrev=False,
        usage="%(prog)s (--jobs FILE | --random-orientations N | --phi-series START STEP N) --out DIR "
              "[options] -- NANOBRAGG FLAGS",
        description="Render many images from one base nanoBragg command line (given after --), each with "
                    "some Config fields changed; resumable, in this process or on a Dask cluster. "
                    "See docs/batch.md.",
        epilog="Exit status: 0 when every image is done, 1 when some job failed (each failure is one "
               "line on stderr), 2 for usage errors.")
    p.add_argument("-h", "--help", action="help", help="show this help and exit")
    src = p.add_argument_group("jobs (exactly one)")
    src.add_argument("--jobs", metavar="FILE",
                     help="JSON Lines, one object per image: Config field names (SI units), misset_deg, "
                          "phi_deg, id, name ('-': standard input)")
    src.add_argument("--random-orientations", type=int, metavar="N", help="N random crystal orientations")
    src.add_argument("--seed", type=int, metavar="S",
                     help="seed of --random-orientations (default 1)")
    src.add_argument("--orientations", choices=ORIENTATION_METHODS, default="uniform",
                     help="uniform: Haar-uniform rotations from numpy's PCG64(S) (default); c: the C "
                          "program's -misset random with -misset_seed S+i (not uniform)")
    src.add_argument("--phi-series", nargs=3, metavar=("START", "STEP", "N"),
                     help="N images at phi = START + i*STEP (degrees)")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", required=False, help="output folder (created; required)")
    out.add_argument("--format", choices=tuple(FORMATS), default="tiff",
                     help="image file format: tiff (float32, default), smv (C's int image), cbf (the int image as "
                          "imgCIF with full geometry, for DIALS), nxs (the int image as NeXus/NXmx, plus ONE file "
                          "series.nxs with the stack of all images) or float (raw float32)")
    out.add_argument("--noise", action="store_true",
                     help="also write C's Poisson-noise image (or the --noise-model's) as noise/NAME.img (noise/NAME.cbf, noise/NAME.nxs with --format "
                          "cbf, nxs), "
                          "seed = the job's seed "
                          "field, else the base -seed (default 1) + job index")
    out.add_argument("--noise-model", metavar="FLAGS",
                     help="detector noise of the noise images, as noisify: one quoted string of "
                          + " ".join(NOISE_MODEL_FLAGS) + " (e.g. '-readout_noise 3 -psf gauss'); "
                          "implies --noise; the same as giving them in the base flags")
    out.add_argument("--noise-generator", choices=NOISE_GENERATORS, default="c",
                     help="with --noise: c (default) = C's serial generator, the C program's noise image bit for "
                          "bit, one image at a time on the CPU; counter = Philox4x32-10 keyed by (noise seed, "
                          "pixel index) with Poisson deviates by inversion (mean < 10) or Hoermann's PTRS "
                          "(mean >= 10): every pixel drawn independently, all images of a launch at once, on "
                          "the GPU when rendering there; the same seed gives the same image on any device and "
                          "any --images-per-launch, but not C's numbers; with --noise-model its read-out "
                          "noise, flicker, calibration error (Box-Muller Gaussians, one Philox stream each) "
                          "and PSF also run per pixel, on the GPU when rendering there (docs/differences.md)")
    out.add_argument("--background", metavar="FILE.stol",
                     help="add to every image the amorphous background (nonBragg's physics) of this table of "
                          "sin(theta)/lambda (1/A) and F; the same as -background in the base flags, where "
                          "-background_thick/-background_density/-background_MW set the layer")
    out.add_argument("--quiet", action="store_true", help="no progress line (errors are still printed)")
    run = p.add_argument_group("where to render (default: in this process)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="start a local Dask cluster of N single-threaded worker processes")
    run.add_argument("--gpus", metavar="LIST",
                     help="comma-separated GPU ids: one local worker per GPU, each seeing only its GPU "
                          "(CUDA_VISIBLE_DEVICES); implies --workers")
    run.add_argument("--scheduler", metavar="ADDRESS", help="send the jobs to this running Dask scheduler")
    run.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="K",
                     help="jobs per Dask task (default %d)" % DEFAULT_CHUNK)
    run.add_argument("--images-per-launch", type=int, metavar="K",
                     help="render K consecutive jobs in one kernel launch (Simulator.render_many; jobs that "
                          "differ in more than orientation, phi and fluence get launches of their own) and "
                          "write the finished images in a background thread while the next launch runs. "
                          "Default: 1 on the CPU (today's one-image path: every core already works on each "
                          "image); on a GPU 2^22/pixels, at most %d (64 for 256x256, 4 for 1024x1024). The "
                          "images are the same for every K" % MAX_DEFAULT_IMAGES)
    run.add_argument("--numba-threads", type=int, metavar="N",
                     help="Numba CPU threads per process (default: all cores in this process; "
                          "cores/workers with --workers)")
    return p


def split_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    """The batch options and the base nanoBragg flags (the words after the first ``--``)."""
    if "--" not in argv:
        if any(a in ("-h", "--help") for a in argv):
            return argv, []
        raise NanoBraggError("give the base nanoBragg flags after --, e.g. %s --random-orientations 8 --out DIR "
                             "-- -hkl example.hkl -cell 79.1 79.1 38.4 90 90 90 -N 5 -detpixels 64 "
                             "(nanobrag-numba example --hkl-only writes example.hkl)" % PROG)
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def parse_options(argv: List[str]):
    """Parse the batch options; checks their combinations (NanoBraggError on misuse)."""
    mine, base = split_argv(list(argv))
    opts = build_parser().parse_args(mine)
    opts.base = base
    if opts.noise_model is not None:
        import shlex
        words = shlex.split(opts.noise_model)
        for w in words:
            if w.startswith("-") and w not in NOISE_MODEL_FLAGS and not _is_number(w):
                raise NanoBraggError("--noise-model takes only %s, got %s" % (", ".join(NOISE_MODEL_FLAGS), w))
        opts.base = list(base) + words
        opts.noise = True
    sources = [o for o in ("jobs", "random_orientations", "phi_series") if getattr(opts, o) is not None]
    if len(sources) != 1:
        raise NanoBraggError("give exactly one of --jobs, --random-orientations, --phi-series")
    if opts.seed is not None and opts.random_orientations is None:
        raise NanoBraggError("--seed seeds --random-orientations (the noise seeds come from -seed in the "
                             "base flags or the jobs' seed field)")
    if opts.random_orientations is not None:
        if opts.random_orientations < 0:
            raise NanoBraggError("--random-orientations must be 0 or more")
        opts.seed = 1 if opts.seed is None else opts.seed
        if opts.orientations == "c" and opts.seed < 1:
            raise NanoBraggError("--orientations c needs --seed 1 or more (C's seeds are positive)")
        if opts.orientations == "uniform" and opts.seed < 0:
            raise NanoBraggError("--seed must be 0 or more")
    if opts.random_orientations is not None:
        check_job_count(opts.random_orientations, "--random-orientations %d" % opts.random_orientations)
    if opts.phi_series is not None:
        start, step, n = opts.phi_series
        try:
            opts.phi_series = (float(start), float(step), int(n))
        except ValueError:
            raise NanoBraggError("--phi-series takes START STEP (degrees) and a whole number N, got %s"
                                 % " ".join(opts.phi_series)) from None
        if not (math.isfinite(opts.phi_series[0]) and math.isfinite(opts.phi_series[1])) or opts.phi_series[2] < 0:
            raise NanoBraggError("--phi-series needs finite START and STEP and N >= 0")
        check_job_count(opts.phi_series[2], "--phi-series with N = %d" % opts.phi_series[2])
    if not opts.out:
        raise NanoBraggError("--out DIR is required (the folder of the images and manifest.jsonl)")
    if opts.scheduler and (opts.workers is not None or opts.gpus):
        raise NanoBraggError("--scheduler sends the jobs to a running cluster; --workers/--gpus start a "
                             "local one: give one or the other")
    if opts.gpus is not None:
        gpus = [g.strip() for g in opts.gpus.split(",")]
        if not gpus or any(not g for g in gpus):
            raise NanoBraggError("--gpus takes a comma-separated list of GPU ids, e.g. --gpus 0,1,2,3")
        if opts.workers is not None and opts.workers != len(gpus):
            raise NanoBraggError("--gpus %s starts one worker per GPU (%d); --workers %d disagrees"
                                 % (opts.gpus, len(gpus), opts.workers))
        opts.gpus = gpus
        opts.workers = len(gpus)
    if opts.workers is not None and opts.workers < 1:
        raise NanoBraggError("--workers must be at least 1")
    if opts.chunk < 1:
        raise NanoBraggError("--chunk must be at least 1")
    if opts.images_per_launch is not None and opts.images_per_launch < 1:
        raise NanoBraggError("--images-per-launch must be at least 1")
    if opts.noise_generator != "c" and not opts.noise:
        raise NanoBraggError("--noise-generator %s chooses the generator of --noise images; add --noise"
                             % opts.noise_generator)
    if opts.numba_threads is not None and opts.numba_threads < 1:
        raise NanoBraggError("--numba-threads must be at least 1")
    return opts


def base_config(words: List[str]) -> Config:
    """The base Config from the flags after ``--``, with input paths made absolute.

    Raises
    ------
    NanoBraggError
        For bad flags, flags that make no sense in a batch (output files,
        printouts, tracing), and input files that do not exist.
    """
    from .flags import ALIASES
    for w in words:
        if ALIASES.get(w) in NOT_IN_BASE:
            raise NanoBraggError("%s has no meaning in a batch: the batch writes its own files (--format, "
                                 "--noise); remove it from the base flags" % w)
    if not words:
        raise NanoBraggError("no base flags after --: at least -hkl FILE (or -default_F) and -cell or -mat")
    cfg = Config.from_args(words)
    return absolute_paths(cfg, check=True)


def absolute_paths(cfg: Config, check: bool = False) -> Config:
    """``cfg`` with its input file names absolute (and, with ``check``, existing)."""
    changes = {}
    for name in PATH_FIELDS:
        path = getattr(cfg, name)
        if path is None:
            continue
        if check and not os.path.isfile(path):
            raise NanoBraggError("cannot open %s: no such file" % path)
        changes[name] = os.path.abspath(path)
    changes["dumpfile"] = os.path.abspath(cfg.dumpfile)     # read (never written) when there is no -hkl
    return cfg.replace(**changes)


def build_jobs(opts, base: Config) -> Tuple[List[Job], Optional[str]]:
    """All jobs of the batch, resolved and checked (bad ones carry ``error``).

    Returns
    -------
    jobs : list of Job
    jobs_label : str or None
        The jobs file name for messages (None for generated jobs).
    """
    label = None
    if opts.jobs is not None:
        jobs, label = read_jobs(opts.jobs)
    elif opts.random_orientations is not None:
        angles = random_orientations(opts.random_orientations, opts.seed, opts.orientations)
        jobs = []
        for i, deg in enumerate(angles):
            extra = {"orientation": {"method": opts.orientations, "seed": opts.seed}}
            if opts.orientations == "c":
                extra["orientation"]["misset_seed"] = opts.seed + i
            else:
                extra["orientation"]["draw"] = i
            jobs.append(Job(index=i, source={"misset_deg": list(deg)}, extra=extra))
    else:
        start, step, n = opts.phi_series
        jobs = [Job(index=i, source={"phi_deg": start + i * step}) for i in range(n)]
    names = {}
    base_seed = base.seed if base.seed is not None else 1
    for job in jobs:
        if isinstance(job.source, dict):
            job.id = job.source.get("id")     # named in the job's error messages, even for a bad line
        if job.error is None:
            try:
                overrides, job.id, name = resolve_job(job.source)
                for k in PATH_FIELDS:
                    if overrides.get(k) is not None:
                        overrides[k] = os.path.abspath(overrides[k])
                job.name = name or "img_%06d" % job.index
                if "seed" not in overrides or overrides["seed"] is None:
                    overrides["seed"] = base_seed + job.index
                job.noise_seed = overrides["seed"]
                cfg = base.replace(**overrides)
                cfg.validate()
                if cfg.misset_random and cfg.misset_seed is None:
                    raise JobError("misset_random without misset_seed would take the orientation from the "
                                   "clock; give misset_seed (or use --random-orientations)")
                for k in PATH_FIELDS:
                    if overrides.get(k) is not None and not os.path.isfile(overrides[k]):
                        raise JobError("cannot open %s: no such file" % overrides[k])
                job.overrides = overrides
            except (JobError, NanoBraggError) as exc:
                job.error = str(exc)
            except Exception as exc:     # a check we lack: still one line naming the problem
                from .api import describe_unexpected
                job.error = describe_unexpected(exc)
        if job.error is None:
            if job.name in names:
                job.error = "name %r is already used by %s" % (job.name, jobs[names[job.name]].where(label))
            else:
                names[job.name] = job.index
        if job.error is None:
            job.key = job_key(opts, job)
    return jobs, label


def job_key(opts, job: Job) -> str:
    """Fingerprint of everything that decides a job's files (see :class:`Job`)."""
    doc = {"flags": list(opts.base), "overrides": _jsonable(job.overrides), "name": job.name,
           "format": opts.format, "noise": bool(opts.noise)}
    if opts.noise and getattr(opts, "noise_generator", "c") != "c":
        doc["noise_generator"] = opts.noise_generator       # (absent for C's generator: older keys stay valid)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def output_names(name: str, fmt: str, noise: bool) -> Dict[str, str]:
    """The file names (relative to the output folder) of one image: ``image`` and, with noise, ``noise``.

    ``NAME.tif`` (``.bin``, ``.img``, ``.cbf``) and ``noise/NAME.img`` (``.cbf``): a name ending in
    the frame number (``img_000005``) keeps it last before the extension in
    both, so that image readers (dxtbx, ADXV) find the series by template.
    """
    files = {"image": name + FORMATS[fmt]}
    if noise:
        files["noise"] = NOISE_DIR + "/" + name + (FORMATS[fmt] if fmt in ("cbf", "nxs") else ".img")
    return files


# ---------------------------------------------------------------- manifest

def read_manifest(path: str) -> Tuple[Dict[int, dict], int]:
    """The last manifest entry of every job index, and the number of unreadable lines.

    A line cut short by a crash (no newline, bad JSON) is ignored.
    """
    entries: Dict[int, dict] = {}
    bad = 0
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return entries, 0
    except OSError as exc:
        raise NanoBraggError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            entries[int(rec["index"])] = rec
        except (ValueError, KeyError, TypeError):
            bad += 1
    return entries, bad


def is_done(entry: Optional[dict], job: Job, out_dir: str, names: Optional[Dict[str, str]] = None) -> bool:
    """Whether a manifest entry finishes ``job``: same key, every file present with its recorded size.

    With ``names`` (:func:`output_names` of the job) the entry must also
    name exactly those files: an image written under an older naming
    (``NAME_noise.img`` before 0.1.1) is rendered again under the current one.
    """
    if not entry or entry.get("key") != job.key:
        return False
    files, sizes = entry.get("files") or {}, entry.get("bytes") or {}
    if not files or (names is not None and files != names):
        return False
    for kind, name in files.items():
        try:
            if os.path.getsize(os.path.join(out_dir, name)) != sizes.get(kind):
                return False
        except OSError:
            return False
    return True


class Manifest:
    """Appends one JSON line per finished image, flushed and fsynced before returning."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise NanoBraggError("cannot write %s: %s" % (path, exc.strerror or exc)) from None
        size = os.fstat(self.fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":      # a line cut short by a crash: start a fresh line
                    self._write(b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def append(self, record: dict) -> None:
        """Write ``record`` as one line (one write call) and fsync the file.

        Raises
        ------
        NanoBraggError
            If the line cannot be written (disk full...): the batch stops.
        """
        try:
            self._write((json.dumps(record, separators=(",", ":")) + "\n").encode())
        except OSError as exc:
            raise NanoBraggError("cannot append to %s: %s" % (self.path, exc.strerror or exc)) from None

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)


def lock_folder(out_dir: str):
    """Hold an exclusive lock on the output folder for this process (one batch per folder)."""
    import fcntl
    path = os.path.join(out_dir, LOCK)
    fh = open(path, "a")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise NanoBraggError("another batch is writing to %s (one batch per output folder at a time)"
                             % out_dir) from None
    return fh


def remove_stale_temporaries(out_dir: str, names: Iterable[str]) -> int:
    """Remove the hidden temporaries a killed run left for our files (``.NAME.<pid>.<random>.tmp``).

    Called while this batch holds the folder's lock, so no other batch writes
    here: every temporary of these names is stale (a worker on another
    machine has a pid that means nothing here), whatever its pid.
    """
    from .io.atomic import remove_stale_temporaries as remove
    return remove(out_dir, names, only_dead=False)


# ---------------------------------------------------------------- rendering (runs on the workers)

_SIMULATORS: Dict[tuple, Any] = {}
_SIMULATORS_MAX = 4


def get_simulator(cfg: Config, device: str):
    """The process's Simulator for this base Config (built once per process and Config)."""
    from .api import Simulator
    key = (repr(cfg), device)
    sim = _SIMULATORS.get(key)
    if sim is None:
        while len(_SIMULATORS) >= _SIMULATORS_MAX:
            _SIMULATORS.pop(next(iter(_SIMULATORS)))
        sim = _SIMULATORS[key] = Simulator(cfg, device=device)
    return sim


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def render_job(ctx: dict, job: dict) -> dict:
    """Render one job and write its files; returns its manifest record (or an error record).

    Parameters
    ----------
    ctx : dict
        The batch: ``config`` (base Config), ``device``, ``out`` (absolute
        folder), ``format``, ``noise``, ``flags`` (the base words, recorded),
        ``noise_generator`` (``c`` by default).
    job : dict
        ``index``, ``name``, ``id``, ``line``, ``key``, ``overrides``,
        ``noise_seed``, ``source``, ``extra`` (see :class:`Job`).

    Returns
    -------
    dict
        The manifest record (``ok`` true), or ``ok`` false with ``error``.
    """
    t0 = time.perf_counter()
    try:
        sim = get_simulator(ctx["config"], ctx["device"])
        res = sim.render(**job["overrides"])
        noise = None
        if ctx["noise"] and ctx.get("noise_generator", "c") == "counter":
            noise = _counter_noise(ctx, [res], [job["noise_seed"]])[0]
    except Exception as exc:  # one broken image must not stop the batch
        return _error_record(job, exc)
    t1 = time.perf_counter()
    return write_job(ctx, job, res, noise, t1 - t0)


def _error_text(exc: BaseException) -> str:
    """One line naming the problem of an exception raised while rendering or writing a job."""
    if isinstance(exc, NanoBraggError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError):
        return "cannot write the image files: %s" % (exc.strerror or exc)
    from .api import describe_unexpected
    return describe_unexpected(exc)


def _error_record(job: dict, exc: BaseException) -> dict:
    """The record of a job that failed (one line naming the problem)."""
    rec = {"index": job["index"], "id": job["id"], "name": job["name"]}
    if job.get("line") is not None:
        rec["line"] = job["line"]
    rec.update(ok=False, error=_error_text(exc))
    if job.get(LAUNCH_FALLBACK):
        rec[LAUNCH_FALLBACK] = job[LAUNCH_FALLBACK]
    return rec


def _counter_noise(ctx: dict, results: list, seeds: List[int]) -> list:
    """The counter-based noise images of rendered results (one launch per shape, ROI and ADC offset)."""
    from .noise import counter_noise_images
    from .noise_models import detector_model_on, detector_noise
    out: list = [None] * len(results)
    groups: Dict[tuple, List[int]] = {}
    for i, res in enumerate(results):
        cfg = res.prep.cfg
        if detector_model_on(cfg):
            # noisify's model (--noise-model): one image at a time, every pixel in parallel on its device
            out[i] = detector_noise(res.floatimage, cfg, res.prep.det.roi, res.prep.det.pixel_size, seeds[i],
                                    generator="counter", device=res.image.backend)[0]
            res.image.device_image = None
            continue
        groups.setdefault((res.floatimage.shape, tuple(res.prep.det.roi), res.prep.cfg.adc_offset,
                           res.image.backend), []).append(i)
    for (_shape, roi, adc, backend), members in groups.items():
        device = [results[i].image.device_image for i in members] if backend == "cuda" else None
        noise = counter_noise_images([results[i].floatimage for i in members], [seeds[i] for i in members],
                                     roi, adc, backend=backend, device_images=device)
        for n, i in enumerate(members):
            out[i] = noise[n]
            results[i].image.device_image = None      # the GPU copy is not needed any more
    return out


def write_job(ctx: dict, job: dict, res, noise, render_s: float) -> dict:
    """Write one rendered job's files; returns its manifest record (or an error record, with no file left).

    ``noise`` is the job's noise image when it was drawn already (the
    counter generator), else None (C's generator draws it here).
    """
    from . import api
    t1 = time.perf_counter()
    rec = {"index": job["index"], "id": job["id"], "name": job["name"]}
    if job.get("line") is not None:
        rec["line"] = job["line"]
    written: List[str] = []
    try:
        files = output_names(job["name"], ctx["format"], ctx["noise"])
        paths = {k: os.path.join(ctx["out"], v) for k, v in files.items()}
        fmt = ctx["format"]
        # everything that can fail on the job's values happens before the first file is written
        stats = res.stats
        smv = res.int_image(res.prep.cfg.intfile_scale) if fmt in ("smv", "cbf", "nxs") else None
        if ctx["noise"] and noise is None:
            noise = res.noise_image(job["noise_seed"])
        if fmt == "tiff":
            api.write_tiff(paths["image"], res)
        elif fmt == "float":
            api.write_float(paths["image"], res)
        elif fmt == "cbf":
            api.write_cbf(paths["image"], res, data=smv)
        elif fmt == "nxs":
            from .io.nxmx import write_nxmx
            write_nxmx(paths["image"], res.prep, [smv], noise=False, command_line=res.prep.cfg.command_line,
                       float_images=[res.floatimage])
        else:
            api.write_smv(paths["image"], res, data=smv)
        written.append(paths["image"])
        if noise is not None:
            os.makedirs(os.path.dirname(paths["noise"]), exist_ok=True)
            if fmt == "cbf":
                api.write_cbf(paths["noise"], res, data=noise, noise=True, noise_seed=job["noise_seed"])
            elif fmt == "nxs":
                from .io.nxmx import write_nxmx
                write_nxmx(paths["noise"], res.prep, [noise], noise=True, command_line=res.prep.cfg.command_line,
                           noise_seed=job["noise_seed"])
            else:
                api.write_smv(paths["noise"], res, data=noise, noise=True)
            written.append(paths["noise"])
        for p in paths.values():
            _fsync_file(p)
        sizes = {k: os.path.getsize(p) for k, p in paths.items()}
        t2 = time.perf_counter()
    except Exception as exc:  # one broken image must not stop the batch
        # a failed job leaves no file of its own: remove what this attempt wrote
        for p in written:
            try:
                os.unlink(p)
            except OSError:
                pass
        return _error_record(job, exc)
    rec.update(
        ok=True, key=job["key"], flags=list(ctx["flags"]), overrides=_jsonable(job["overrides"]),
        job=job["source"], files=files, bytes=sizes,
        format=fmt, max_I=stats.max_I, mean=stats.mean,
        seconds=round(render_s + t2 - t1, 6), render_s=round(render_s, 6), kernel_s=round(res.image.kernel_seconds, 6),
        write_s=round(t2 - t1, 6), backend=res.image.backend, worker="%s:%d" % (socket.gethostname(), os.getpid()),
        finished=round(time.time(), 3))
    if ctx["noise"]:
        rec["noise_seed"] = job["noise_seed"]
        if ctx.get("noise_generator", "c") != "c":
            rec["noise_generator"] = ctx["noise_generator"]
    if job.get("extra"):
        rec.update(job["extra"])
    if job.get(LAUNCH_FALLBACK):
        rec[LAUNCH_FALLBACK] = job[LAUNCH_FALLBACK]
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:
        rec["cuda_visible_devices"] = gpu
    return rec


#: field of the records of a launch group whose launch failed, so that its images were rendered one by one:
#: ``{"jobs": [index of each of its jobs], "error": "<the launch's error>"}`` (manifest and error records)
LAUNCH_FALLBACK = "launch_group_failed"


def launch_fallback_note(fallback: dict) -> str:
    """The note printed once per launch group that failed and was rendered one by one."""
    jobs = fallback["jobs"]
    shown = ", ".join(str(i) for i in jobs[:8]) + (", ..." if len(jobs) > 8 else "")
    one = len(jobs) == 1
    return ("launch group of %d image%s (job%s %s) failed (%s); rendered %s"
            % (len(jobs), "" if one else "s", "" if one else "s", shown, fallback["error"],
               "it again alone" if one else "them one by one"))


#: --images-per-launch by default on a GPU: launches of about this many pixels (at most MAX_DEFAULT_IMAGES)
DEFAULT_LAUNCH_PIXELS = 2 ** 22
MAX_DEFAULT_IMAGES = 64
#: finished groups waiting for the writer thread (the renderer blocks beyond this)
WRITE_QUEUE = 2


def images_per_launch(ctx: dict, npix: int, backend: str) -> int:
    """``--images-per-launch``, or its default: 1 on the CPU; on a GPU, images of about 4 Mpixel per launch.

    On the CPU every core already works on every image (the kernel's
    ``prange`` is over pixels), so the default keeps one image per launch
    (today's path).  On a GPU a 256x256 image fills a few percent of the
    threads; the default groups ``2^22 // pixels`` images (1 for 2048x2048
    and larger, 4 for 1024x1024, 64 for 256x256 and smaller).
    """
    k = ctx.get("images_per_launch")
    if k:
        return int(k)
    if backend != "cuda":
        return 1
    return max(1, min(MAX_DEFAULT_IMAGES, DEFAULT_LAUNCH_PIXELS // max(1, npix)))


class _Writer:
    """One background thread that writes finished images while the next launch renders.

    ``put`` hands it a list of (job, result, noise, render seconds) or an
    error record; it calls ``sink`` with each record, in order.  The queue
    is bounded (``WRITE_QUEUE`` groups), so rendering never runs far ahead
    of the disk.  An exception in the writer (e.g. the manifest cannot be
    appended) stops the batch: it is raised again by the next ``put`` or by
    ``close``.  When the rendering stops (Ctrl-C, SIGTERM, an error), the
    images already rendered are still written (at most ``WRITE_QUEUE`` + 1
    groups), so no finished work is lost.
    """

    def __init__(self, ctx: dict, sink: Callable[[dict], None]):
        import queue
        import threading
        self.ctx, self.sink = ctx, sink
        self.queue: "queue.Queue" = queue.Queue(maxsize=WRITE_QUEUE)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="nanobrag-batch-writer", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                for entry in item:
                    if isinstance(entry, dict):
                        self.sink(entry)
                    else:
                        job, res, noise, render_s = entry
                        self.sink(write_job(self.ctx, job, res, noise, render_s))
            except BaseException as exc:      # raised again in the rendering thread
                self.error = exc

    def put(self, item: list) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def close(self, failing: bool = False) -> None:
        """Wait for the queued images to be written; raise the writer's error (unless ``failing``: the
        renderer's own exception is on its way)."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and not failing:
            raise self.error


def render_pipeline(ctx: dict, jobs: List[dict], sink: Callable[[dict], None]) -> None:
    """Render jobs K at a time through ``render_many`` and write them in a background thread.

    Consecutive jobs are taken ``images_per_launch`` at a time and prepared
    together (``Simulator.prepare_many``'s shared set-up; a job that cannot
    be set up gets its error record, as in :func:`render_job`), the
    prepared ones are rendered together (``Simulator.render_prepared``: one launch per compatible group), their
    counter-based noise images drawn in one launch, and the finished images
    go to the writer thread while the next group renders.  The files and
    records are those of :func:`render_job`.
    """
    from . import backends
    if not jobs:
        return
    sim = get_simulator(ctx["config"], ctx["device"])
    counter = ctx["noise"] and ctx.get("noise_generator", "c") == "counter"
    writer = _Writer(ctx, sink)
    k = ctx.get("images_per_launch") or None      # the default needs the image size: set by the first job
    i = 0
    try:
        while i < len(jobs):
            t0 = time.perf_counter()
            group = jobs[i:i + (k or 1)]
            i += len(group)
            errors: List[dict] = []
            ready = []
            # one shared set-up for the group's orientations (Simulator.prepare_many); errors per job
            try:
                preps = sim._prepare_each([job["overrides"] for job in group])
            except Exception as exc:
                preps = [exc] * len(group)
            for job, prep in zip(group, preps):
                if isinstance(prep, BaseException):
                    errors.append(_error_record(job, prep))
                else:
                    ready.append((job, prep))
            if k is None and ready:
                prep = ready[0][1]
                k = images_per_launch(ctx, prep.det.fpixels * prep.det.spixels,
                                      backends.choose(prep.cfg.device))
            entries: list = list(errors)
            done = []
            if ready:
                try:
                    results = sim.render_prepared([p for _, p in ready], keep_device=counter)
                    done = list(zip([j for j, _ in ready], results))
                except Exception as launch_exc:
                    # one image spoils the launch: render each alone, so each job gets its own record.  Every
                    # record says so (LAUNCH_FALLBACK; the batch prints a note), so that a launch that keeps
                    # failing is seen, not hidden behind the one-by-one renders that succeed
                    fallback = {"jobs": [job["index"] for job, _ in ready], "error": _error_text(launch_exc)}
                    for job, prep in ready:
                        job = dict(job, **{LAUNCH_FALLBACK: fallback})
                        try:
                            done.append((job, sim.render_prepared([prep])[0]))
                        except Exception as exc:
                            entries.append(_error_record(job, exc))
            noises: list = [None] * len(done)
            if counter and done:
                try:
                    noises = _counter_noise(ctx, [r for _, r in done], [j["noise_seed"] for j, _ in done])
                except Exception as exc:
                    entries.extend(_error_record(j, exc) for j, _ in done)
                    done = []
            render_s = (time.perf_counter() - t0) / max(1, len(group))
            entries.extend((job, res, noise, render_s) for (job, res), noise in zip(done, noises))
            writer.put(entries)
    except BaseException:
        writer.close(failing=True)
        raise
    writer.close()


def render_chunk(ctx: dict, jobs: List[dict]) -> List[dict]:
    """Render a list of jobs in this process (the Dask task); one record per job.

    With ``images_per_launch`` other than 1 (explicitly, or by default on a
    GPU) the jobs go through :func:`render_pipeline`.
    """
    threads = ctx.get("numba_threads")
    if threads:
        import numba
        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    if _one_per_launch(ctx):
        return [render_job(ctx, job) for job in jobs]
    records: List[dict] = []
    render_pipeline(ctx, jobs, records.append)
    order = {job["index"]: n for n, job in enumerate(jobs)}
    return sorted(records, key=lambda r: order[r["index"]])      # in job order, as one job after the other


def _one_per_launch(ctx: dict) -> bool:
    """True for today's path (one render and one write after the other): ``--images-per-launch 1``, or
    its default on the CPU."""
    k = ctx.get("images_per_launch")
    if k is not None:
        return int(k) == 1
    from . import backends
    try:
        return backends.choose(ctx["device"]) != "cuda"
    except NanoBraggError:
        return True         # the render reports it, job by job


def job_payload(job: Job) -> dict:
    """What a worker needs of a job (plain data)."""
    return {"index": job.index, "name": job.name, "id": job.id, "line": job.line, "key": job.key,
            "overrides": job.overrides, "noise_seed": job.noise_seed, "source": job.source, "extra": job.extra}


# ---------------------------------------------------------------- progress

class Progress:
    """One progress line on stderr: rewritten in place on a terminal, else printed every ``every`` s."""

    def __init__(self, total: int, skipped: int, stream=None, quiet: bool = False, every: float = 10.0):
        self.total, self.skipped = total, skipped
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.done = self.failed = 0
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.shown = False

    def line(self) -> str:
        """The current progress text."""
        dt = time.perf_counter() - self.t0
        rate = self.done / dt if dt > 0 else 0.0
        left = self.total - self.done - self.failed
        eta = " ETA %s" % _duration(left / rate) if rate > 0 and left else ""
        return ("batch: %d/%d images, %.2f images/s%s%s%s"
                % (self.done + self.failed, self.total, rate,
                   ", %d failed" % self.failed if self.failed else "",
                   " (%d already done)" % self.skipped if self.skipped else "", eta))

    def update(self, ok: bool) -> None:
        """Count one finished job and refresh the line when due."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
        now = time.perf_counter()
        if self.quiet:
            return
        if self.tty:
            if now - self.last >= 0.2 or self.done + self.failed == self.total:
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
                self.shown, self.last = True, now
        elif now - self.last >= self.every:
            print(self.line(), file=self.stream, flush=True)
            self.last = now

    def message(self, text: str) -> None:
        """Print a line (an error) without breaking the progress line."""
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.shown = False
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the progress line."""
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _duration(s: float) -> str:
    s = int(round(s))
    return "%dh%02dm" % (s // 3600, s % 3600 // 60) if s >= 3600 else (
        "%dm%02ds" % (s // 60, s % 60) if s >= 60 else "%ds" % s)


# ---------------------------------------------------------------- engines

def run_in_process(ctx: dict, todo: List[Job], sink: Callable[[dict], None]) -> None:
    """Render every job here, one after the other."""
    threads = ctx.get("numba_threads")
    if threads:
        import numba
        numba.set_num_threads(threads)
    if _one_per_launch(ctx):
        for job in todo:
            sink(render_job(ctx, job_payload(job)))
        return
    render_pipeline(ctx, [job_payload(j) for j in todo], sink)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise NanoBraggError("--scheduler and --workers need Dask: pip install 'nanobrag-numba[cluster]' "
                             "(dask[distributed])") from None
    return distributed


def start_local_cluster(workers: int, gpus: Optional[List[str]], numba_threads: Optional[int]):
    """A local Dask cluster: ``workers`` single-threaded worker processes.

    Each worker gets ``NUMBA_NUM_THREADS`` = ``numba_threads`` (default:
    cores / workers), and with ``gpus`` the worker for GPU g gets
    ``CUDA_VISIBLE_DEVICES=g`` (so every worker renders on its own GPU).
    """
    import logging
    distributed = _distributed()
    threads = numba_threads or max(1, (os.cpu_count() or 1) // workers)
    env = {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": "1"}
    if not gpus:
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR, env=env)
    from distributed import Nanny, Scheduler, SpecCluster
    spec = {"gpu%s" % g: {"cls": Nanny,
                          "options": {"nthreads": 1, "env": dict(env, CUDA_VISIBLE_DEVICES=g),
                                      "silence_logs": logging.ERROR}}
            for g in gpus}
    return SpecCluster(workers=spec, scheduler={"cls": Scheduler,
                                                "options": {"host": "127.0.0.1", "dashboard_address": None}},
                       silence_logs=logging.ERROR, name="nanobrag-batch")


def run_dask(ctx: dict, todo: List[Job], sink: Callable[[dict], None], opts) -> None:
    """Render the jobs on a Dask cluster, ``opts.chunk`` jobs per task.

    Tasks are submitted in a window (4 per worker, at least 16) so that a
    long batch does not hold every future at once.  A chunk whose task fails
    as a whole (e.g. its workers kept dying) gives one error record per job.
    """
    distributed = _distributed()
    cluster = None
    try:
        if opts.workers:
            cluster = start_local_cluster(opts.workers, opts.gpus, opts.numba_threads)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(opts.scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise NanoBraggError("cannot connect to the Dask scheduler %s: %s" % (opts.scheduler, exc)) from None
        try:
            nworkers = max(1, len(client.scheduler_info().get("workers", {})))
            window = max(16, 4 * nworkers)
            chunks = iter([todo[i:i + opts.chunk] for i in range(0, len(todo), opts.chunk)])
            token = "%d-%d" % (os.getpid(), int(time.time() * 1000))
            pending = {}
            done = distributed.as_completed()

            def submit():
                chunk = next(chunks, None)
                if chunk is None:
                    return
                fut = client.submit(render_chunk, ctx, [job_payload(j) for j in chunk], pure=False,
                                    key="nanobrag-batch-%s-%d" % (token, chunk[0].index))
                pending[fut.key] = chunk
                done.add(fut)

            for _ in range(window):
                submit()
            for fut in done:
                chunk = pending.pop(fut.key)
                try:
                    records = fut.result()
                except Exception as exc:   # KilledWorker, lost connection, ...
                    records = [{"index": j.index, "id": j.id, "name": j.name, "line": j.line, "ok": False,
                                "error": "the cluster lost this task (%s: %s); rerun to retry"
                                         % (type(exc).__name__, exc)} for j in chunk]
                fut.release()
                for rec in records:
                    sink(rec)
                submit()
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------- main

def run(argv: List[str], stderr=None) -> int:
    """The whole ``batch`` subcommand; returns the exit status (usage errors raise NanoBraggError)."""
    stderr = stderr or sys.stderr
    opts = parse_options(argv)
    base = base_config(opts.base)
    if (base.detector_json or base.expt) and opts.format in ("smv", "cbf"):
        from .panels import check_panel_flags, load_panels
        check_panel_flags(base)
        if len(load_panels(base)) > 1:
            raise NanoBraggError("--format %s holds one panel: the detector of %s has several (use --format tiff, "
                                 "float or nxs)" % (opts.format, base.detector_json or base.expt))
    if opts.background is not None:
        if not os.path.isfile(opts.background):
            raise NanoBraggError("cannot open %s: no such file (--background)" % opts.background)
        base = base.replace(background_stol=os.path.abspath(opts.background))
    for text in base.parse_notes:       # spellings read as C reads them, words C ignores
        print("%s: note: %s" % (PROG, text), file=stderr)
    jobs, label = build_jobs(opts, base)
    ctx = {"config": base, "device": base.device, "out": os.path.abspath(opts.out), "format": opts.format,
           "noise": bool(opts.noise), "flags": list(opts.base), "numba_threads": opts.numba_threads,
           "images_per_launch": opts.images_per_launch, "noise_generator": opts.noise_generator}
    if opts.numba_threads and not (opts.workers or opts.scheduler):
        import numba
        if opts.numba_threads > numba.config.NUMBA_NUM_THREADS:
            raise NanoBraggError("--numba-threads %d is more than this process's %d (NUMBA_NUM_THREADS)"
                                 % (opts.numba_threads, numba.config.NUMBA_NUM_THREADS))
    if opts.workers or opts.scheduler:
        _distributed()                  # no Dask: say so before anything is created
    good = [j for j in jobs if j.error is None]
    if good:
        _preflight(ctx, good[0])
    out_dir = ctx["out"]
    created = not os.path.isdir(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise NanoBraggError("cannot create %s: %s" % (opts.out, exc.strerror or exc)) from None
    try:
        lock = lock_folder(out_dir)
        try:
            return _run_locked(opts, ctx, jobs, label, stderr)
        finally:
            lock.close()
    except BaseException:
        if created:
            _remove_if_unused(out_dir)
        raise


def _remove_if_unused(out_dir: str) -> None:
    """Remove an output folder this run created if it holds nothing but the batch's own bookkeeping."""
    own = {LOCK, SETTINGS, MANIFEST}
    try:
        entries = os.listdir(out_dir)
        if not set(entries) <= own:
            return
        manifest_path = os.path.join(out_dir, MANIFEST)
        if os.path.exists(manifest_path) and os.path.getsize(manifest_path):
            return
        for entry in entries:
            os.unlink(os.path.join(out_dir, entry))
        os.rmdir(out_dir)
    except OSError:
        pass


def _run_locked(opts, ctx: dict, jobs: List[Job], label, stderr) -> int:
    from .io.atomic import atomic_write_bytes
    base, out_dir = ctx["config"], ctx["out"]
    manifest_path = os.path.join(out_dir, MANIFEST)
    entries, bad_lines = read_manifest(manifest_path)
    good = [j for j in jobs if j.error is None]
    done = [j for j in good if is_done(entries.get(j.index), j, out_dir,
                                       output_names(j.name, opts.format, opts.noise))]
    done_ids = {j.index for j in done}
    todo = [j for j in good if j.index not in done_ids]
    our_files = [n for j in good for n in output_names(j.name, opts.format, opts.noise).values()] + [SETTINGS]
    if opts.format == "nxs":
        series = _nxs_series_names(opts)
        if set(series) & set(our_files):
            raise NanoBraggError("a job named %s would overwrite the series file %s of --format nxs; rename it"
                                 % (NXS_SERIES[:-4], NXS_SERIES))
        our_files += series
    _remove_stale(out_dir, our_files)
    mode = ("scheduler %s" % opts.scheduler if opts.scheduler else
            "local Dask cluster, %d workers%s" % (opts.workers, " on GPUs " + ",".join(opts.gpus) if opts.gpus else "")
            if opts.workers else "in-process")
    settings = {"flags": list(opts.base), "cwd": os.getcwd(), "device": base.device,
                "jobs": (opts.jobs if opts.jobs is not None else
                         {"random_orientations": opts.random_orientations, "seed": opts.seed,
                          "method": opts.orientations} if opts.random_orientations is not None else
                         {"phi_series_deg": list(opts.phi_series)}),
                "count": len(jobs), "format": opts.format, "noise": bool(opts.noise), "mode": mode,
                "chunk": opts.chunk, "images_per_launch": opts.images_per_launch,
                "noise_generator": opts.noise_generator, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "version": _version()}
    atomic_write_bytes(os.path.join(out_dir, SETTINGS), [(json.dumps(settings, indent=1) + "\n").encode()])

    progress = Progress(len(todo), len(done), stderr, quiet=opts.quiet)
    if not opts.quiet:
        progress.message("batch: %d jobs, %d already done, %d to render (%s), output %s"
                         % (len(jobs), len(done), len(todo), mode, out_dir))
    if bad_lines:
        progress.message("%s: note: %d unreadable line(s) in %s were ignored (cut short by a crash?)"
                         % (PROG, bad_lines, manifest_path))
    failed = []
    for job in jobs:
        if job.error is not None:
            failed.append(job.index)
            progress.message("%s: %s: %s" % (PROG, job.where(label), job.error))
    if not todo:
        if not failed:
            _write_nxs_series(out_dir, good, opts)
        return 1 if failed else 0

    by_index = {j.index: j for j in todo}
    manifest = Manifest(manifest_path)

    fallbacks_noted = set()

    def sink(rec: dict) -> None:
        fallback = rec.get(LAUNCH_FALLBACK)
        if fallback and tuple(fallback["jobs"]) not in fallbacks_noted:
            # once per failed group, when its first record arrives (from this process or a Dask worker)
            fallbacks_noted.add(tuple(fallback["jobs"]))
            progress.message("%s: note: %s" % (PROG, launch_fallback_note(fallback)))
        if rec.pop("ok"):
            manifest.append(rec)
            progress.update(True)
        else:
            failed.append(rec["index"])
            job = by_index.get(rec["index"])
            where = job.where(label) if job else "job %d" % rec["index"]
            progress.message("%s: %s: %s" % (PROG, where, rec["error"]))
            progress.update(False)

    t0 = time.perf_counter()
    try:
        if opts.workers or opts.scheduler:
            run_dask(ctx, todo, sink, opts)
        else:
            run_in_process(ctx, todo, sink)
    finally:
        manifest.close()
        progress.close()
        _remove_stale(out_dir, our_files)    # left by workers that died mid-write
    if not failed:
        _write_nxs_series(out_dir, good, opts)
    dt = time.perf_counter() - t0
    rendered = progress.done
    if not opts.quiet:
        print("batch: %d images in %.1f s (%.2f images/s)%s%s; manifest %s"
              % (rendered, dt, rendered / dt if dt > 0 else 0.0,
                 ", %d already done" % len(done) if done else "",
                 ", %d FAILED" % len(failed) if failed else "", manifest_path), file=stderr, flush=True)
    return 1 if failed else 0


def _nxs_series_names(opts) -> List[str]:
    """The series files of --format nxs (relative to the output folder)."""
    return [NXS_SERIES] + ([NOISE_DIR + "/" + NXS_SERIES] if opts.noise else [])


def _write_nxs_series(out_dir: str, jobs: List[Job], opts) -> None:
    """--format nxs: ONE NXmx file with the stack of every job's image (and one of the noise images).

    Built in this process from the jobs' one-image files, in job order, once
    every job is done (also after a resumed run that had nothing left to render).
    """
    if opts.format != "nxs" or not jobs:
        return
    from .io.nxmx import assemble_series
    ordered = sorted(jobs, key=lambda j: j.index)
    for key, series in zip(("image", "noise"), _nxs_series_names(opts)):
        frames = [os.path.join(out_dir, output_names(j.name, "nxs", opts.noise)[key]) for j in ordered]
        assemble_series(os.path.join(out_dir, series), frames)


def _remove_stale(out_dir: str, names: List[str]) -> None:
    """:func:`remove_stale_temporaries` in the output folder and in its noise/ folder."""
    top = [n for n in names if "/" not in n]
    remove_stale_temporaries(out_dir, top)
    sub = os.path.join(out_dir, NOISE_DIR)
    if os.path.isdir(sub):
        remove_stale_temporaries(sub, [n.split("/", 1)[1] for n in names if n.startswith(NOISE_DIR + "/")])


def _preflight(ctx: dict, job: Job) -> None:
    """Stop with a usage error when the base flags cannot make an image at all.

    The first job is prepared here (no kernel; in-process this also reads
    the HKL table the rendering then reuses).  If that fails and the base
    configuration alone fails with the same message, the base flags are at
    fault (exit status 2) and nothing is rendered.  Otherwise the job's own
    failure is reported when it runs.
    """
    try:
        sim = get_simulator(ctx["config"], ctx["device"])
    except NanoBraggError as exc:
        raise NanoBraggError(_base_fault(exc)) from None
    try:
        sim.prepare(**job.overrides)
    except NanoBraggError as exc:
        try:
            sim.prepare(seed=1)
        except NanoBraggError as exc2:
            if str(exc2) == str(exc):
                raise NanoBraggError(_base_fault(exc)) from None


def _base_fault(exc: Exception) -> str:
    from .api import UNEXPECTED_PREFIX
    text = str(exc)
    if text.startswith(UNEXPECTED_PREFIX):
        text = text[len(UNEXPECTED_PREFIX):]
    return "the base flags cannot make an image: %s" % text


def _version() -> str:
    from . import __version__
    return __version__


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``nanobrag-numba batch``; returns the exit status.

    0: every job's image is done (now or by an earlier run); 1: some job
    failed (each reported on one line of stderr); 2: usage error (one line,
    ``nanobrag-numba batch: error: ...``); 130: interrupted (Ctrl-C); 143:
    terminated (SIGTERM).  Interrupted or terminated, the batch removes its
    temporary files; a rerun finishes it.
    """
    from .entry import guarded
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: run(argv), oom_hint="fewer jobs, or a smaller detector", sigterm=True,
                   broken_pipe=False, stop_hint="rerun the same command to finish the batch", help_exit=True)
