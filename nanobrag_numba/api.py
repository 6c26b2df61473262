"""Python API: many images in one process, no files unless asked.

    import nanobrag_numba as nb
    sim = nb.Simulator("-hkl example.hkl -cell 79.1 79.1 38.4 90 90 90 -N 5 -detpixels 256")
    for angle in range(0, 90, 5):
        res = sim.render(misset=(0.0, 0.0, angle / nb.config.RTD))   # Config fields, SI units
        frames.append(res.floatimage)

The kernels compile once per process (and are cached on disk); the HKL table
is read once per file.  ``Result`` gives the C outputs on demand
(``int_image``, ``noise_image``, ``pgm_image``) and ``write`` writes C's
files.

Bad input (an unknown setting, a value of the wrong type, settings that
make no image, a path that cannot be written) raises
:class:`~nanobrag_numba.errors.NanoBraggError` with a one-line message, the
message the command line prints after ``nanobrag-numba: error:``.  The
settings given to ``render``, ``prepare`` and ``config_from_flags`` are
checked against the annotations of :class:`~nanobrag_numba.config.Config`
in one place, :func:`check_settings`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np

from .config import Config
from .errors import NanoBraggError

Flags = Union[str, Sequence[str]]

#: Config field names and their annotations (the one source of the settings' types)
FIELDS = tuple(f.name for f in dataclasses.fields(Config))
FIELD_TYPES = typing.get_type_hints(Config)
DEVICES = ("cpu", "cuda", "auto")
INT64_MAX = 2 ** 63 - 1
UNEXPECTED_PREFIX = "these settings cannot make an image: "
OUT_OF_MEMORY = "out of memory (make the detector, -oversample or the HKL table smaller)"


# ---------------------------------------------------------------- checking settings

def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _shown(value, show=repr) -> str:
    """A bad value for a one-line message: arrays by shape, long values cut."""
    if isinstance(value, np.ndarray):
        return "a %s array of shape %s" % (value.dtype, value.shape)
    try:
        text = show(value)
    except (TypeError, ValueError):
        text = repr(value)
    text = " ".join(str(text).split())
    return text if len(text) <= 80 else text[:77] + "..."


def coerce_field(name: str, value: Any, tp=None, show: Callable[[Any], str] = repr, finite: bool = True) -> Any:
    """Check ``value`` against the annotation of Config field ``name``; return it as a Config holds it.

    Parameters
    ----------
    name : str
        The field (for the message and to look up the annotation).
    value : object
        What the caller gave: Python or numpy numbers, strings, ``os.PathLike``
        for strings, booleans, lists/tuples/1-D arrays for vectors, None for
        the optional fields.
    tp : type, optional
        The annotation to check against (default: the field's own).
    show : callable
        How the message shows a bad value (``repr``; the batch uses ``json.dumps``).
    finite : bool
        Refuse NaN and infinities for number fields.

    Returns
    -------
    object
        Lists and arrays become tuples, numpy scalars become Python numbers,
        integral floats become ints for integer fields, paths become strings;
        Python ints and floats are returned as given.

    Raises
    ------
    NanoBraggError
        One line naming the field, what it takes and what was given.
    """
    tp = FIELD_TYPES[name] if tp is None else tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_field(name, value, inner[0], show, finite)

    def bad(what):
        return NanoBraggError("%s must be %s, got %s" % (name, what, _shown(value, show)))

    if tp is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise bad("true or false")
    if tp is int:
        if _is_whole(value):
            v = int(value)
        elif _is_number(value) and math.isfinite(value) and float(value).is_integer():
            v = int(value)
        else:
            raise bad("a whole number")
        if abs(v) > INT64_MAX:
            raise bad("a whole number between -(2^63-1) and 2^63-1")
        return v
    if tp is float:
        if not _is_number(value):
            raise bad("a number")
        if finite and not math.isfinite(value):
            raise bad("a finite number")
        return value if type(value) in (int, float) else float(value)
    if tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return value
        raise bad("a string")
    if origin is tuple:
        many = len(args) == 2 and args[1] is Ellipsis
        kinds = {args[0]} if many else set(args)
        noun = "whole numbers" if kinds == {int} else ("strings" if kinds == {str} else "numbers")
        # a 2-D array only for a list of lists (the (wavelength, weight) pairs of ``spectrum``)
        if isinstance(value, np.ndarray) and (value.ndim == 1 or (value.ndim == 2 and many
                                                                   and typing.get_origin(args[0]) is tuple)):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise bad("a list of %s" % noun if many else "a list of %d %s" % (len(args), noun))
        if many:
            return tuple(coerce_field(name, v, args[0], show, finite) for v in value)
        if len(value) != len(args):
            raise NanoBraggError("%s must be a list of %d %s, got %d" % (name, len(args), noun, len(value)))
        return tuple(coerce_field(name, v, a, show, finite) for v, a in zip(value, args))
    raise NanoBraggError("%s cannot be set (type %s)" % (name, _type_name(tp)))  # pragma: no cover


def _plain_kind(tp):
    """(kind, optional) of an annotation that :func:`_coerce_plain` handles, else (None, False)."""
    optional = False
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) != 1:
            return None, False
        tp, optional = inner[0], True
    if tp in (float, int, bool):
        return tp, optional
    if typing.get_origin(tp) is tuple and typing.get_args(tp) == (float, float, float):
        return "vec3", optional
    return None, False


#: field name -> (kind, optional) for the values that need no conversion (see _coerce_plain)
_PLAIN = {name: _plain_kind(tp) for name, tp in FIELD_TYPES.items()}
_NOT_PLAIN = object()


def _coerce_plain(name: str, value: Any) -> Any:
    """What :func:`coerce_field` returns for a value already of the field's exact Python type, finite
    (a float, an int in range, a bool, a tuple of 3 floats, None where allowed); ``_NOT_PLAIN`` otherwise.

    The common case of ``render_many``'s per-image settings, without coerce_field's walk of the annotation.
    """
    kind, optional = _PLAIN.get(name, (None, False))
    t = type(value)
    if kind is None:
        return _NOT_PLAIN
    if value is None:
        return None if optional else _NOT_PLAIN
    if kind is float:
        return value if t is float and math.isfinite(value) else _NOT_PLAIN
    if kind is int:
        return value if t is int and -INT64_MAX <= value <= INT64_MAX else _NOT_PLAIN
    if kind is bool:
        return value if t is bool else _NOT_PLAIN
    if t is tuple and len(value) == 3 and all(type(x) is float and math.isfinite(x) for x in value):
        return value
    return _NOT_PLAIN


def unknown_settings_message(unknown, extra=()) -> str:
    """``unknown setting 'x' (did you mean 'y'?)``, for one or more names."""
    import difflib
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(str(k), list(FIELDS) + list(extra), n=1)
        hints.append("%r%s" % (k, " (did you mean %r?)" % close[0] if close else ""))
    return "unknown setting%s %s" % ("s" if len(hints) > 1 else "", ", ".join(hints))


def check_settings(changes: Dict[str, Any], show: Callable[[Any], str] = repr) -> Dict[str, Any]:
    """Config changes checked against the field annotations (see :func:`coerce_field`).

    Raises
    ------
    NanoBraggError
        For an unknown field name (with the closest known one) or a value of
        the wrong type.
    """
    unknown = [k for k in changes if k not in FIELD_TYPES]
    if unknown:
        raise NanoBraggError(unknown_settings_message(unknown)
                             + ": settings are the fields of nanobrag_numba.Config (SI units)")
    out = {}
    for k, v in changes.items():
        plain = _coerce_plain(k, v)
        out[k] = coerce_field(k, v, show=show) if plain is _NOT_PLAIN else plain
    return out


def _check_device(device) -> str:
    if device not in DEVICES:
        raise NanoBraggError("unknown device %s (use cpu, cuda or auto)" % _shown(device))
    return device


def _check_config(cfg: Config) -> Config:
    """A Config built by the caller, every field type-checked (non-finite numbers allowed, as the parser)."""
    changes = {}
    for name in FIELDS:
        value = getattr(cfg, name)
        new = coerce_field(name, value, finite=False)
        if new is not value:
            changes[name] = new
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _flag_words(flags) -> list:
    if isinstance(flags, str):
        import shlex
        try:
            return shlex.split(flags)
        except ValueError as exc:
            raise NanoBraggError("cannot split the flags into words: %s" % exc) from None
    if isinstance(flags, (list, tuple)) and all(isinstance(w, str) for w in flags):
        return list(flags)
    if isinstance(flags, (list, tuple)):
        bad = next(w for w in flags if not isinstance(w, str))
        raise NanoBraggError("nanoBragg flags must be strings, got %s (%s) in the list"
                             % (_shown(bad), type(bad).__name__))
    raise NanoBraggError("expected a Config or nanoBragg flags (a string or a list of strings), got %s"
                         % type(flags).__name__)


def describe_unexpected(exc: BaseException) -> str:
    """One line for an exception that no check anticipated (a defect of ours, or an input we miss).

    Names the problem text and where it arose, never just the exception's class.
    """
    import traceback
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        frame = tb[-1]
        where = " in %s line %d" % (os.path.basename(frame.filename), frame.lineno)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ("%s%s (%s%s, an input our checks missed; please report it)"
            % (UNEXPECTED_PREFIX, text, type(exc).__name__, where))


def _guard(call, *args, **kwargs):
    """Run a set-up or kernel call; anything but our own error becomes a one-line NanoBraggError."""
    try:
        return call(*args, **kwargs)
    except NanoBraggError:
        raise
    except MemoryError:
        raise NanoBraggError(OUT_OF_MEMORY) from None
    except Exception as exc:
        raise NanoBraggError(describe_unexpected(exc)) from exc


def config_from_flags(flags: Flags, **changes) -> Config:
    """A Config from a nanoBragg command line (string or list of words).

    Keyword arguments then change Config fields (SI units), e.g.
    ``config_from_flags("-hkl example.hkl -cell 79.1 79.1 38.4 90 90 90", device="cpu")``.
    Unknown fields and values of the wrong type raise NanoBraggError.
    """
    cfg = Config.from_args(_flag_words(flags))
    return cfg.replace(**check_settings(changes)) if changes else cfg


# ---------------------------------------------------------------- results

def _check_scale(scale, what):
    if scale is None:
        return None
    if not _is_number(scale) or not math.isfinite(scale):
        raise NanoBraggError("%s must be a finite number or None, got %s" % (what, _shown(scale)))
    return float(scale)


def _check_seed(seed):
    if seed is None:
        return None
    return coerce_field("seed", seed)


@dataclass
class Result:
    """One simulated image and C's derived outputs.

    ``floatimage`` is float32 (slow, fast), or (panels, slow, fast) for a
    multi-panel detector (``-detector_json``, ``-expt``; docs/multipanel.md).
    """

    floatimage: np.ndarray
    prep: object = field(repr=False)
    image: object = field(repr=False)

    def __post_init__(self):
        det = getattr(self.prep, "det", None)
        if det is not None and det.panels and self.floatimage.ndim == 2:
            self.floatimage = self.floatimage.reshape(len(det.panels), det.panels[0].spixels, det.fpixels)

    @property
    def _image2d(self):
        """The image as the kernels render it: (slow, fast), panels stacked along slow."""
        return self.floatimage.reshape(self.prep.det.spixels, self.prep.det.fpixels)

    def _single_panel(self, what):
        if self.prep.det.panels:
            raise NanoBraggError("%s writes one panel: this detector has %d (use write_nxs, or write each "
                                 "panel's image)" % (what, len(self.prep.det.panels)))

    @property
    def stats(self):
        """C's max_I, mean, rms and rmsd of the float image."""
        from .simulator import image_stats
        return image_stats(self.prep, self._image2d)

    def int_image(self, scale: Optional[float] = None) -> np.ndarray:
        """The SMV integer image (C's default scale 55000/max_I unless given)."""
        from .simulator import int_image
        scale = _check_scale(scale, "scale")
        if scale is None or scale <= 0:
            m = self.stats.max_I
            scale = 55000.0 / m if m > 0 else 1.0
        return self._shaped(int_image(self.prep, self._image2d, scale))

    def _shaped(self, arr):
        return arr.reshape(self.floatimage.shape)

    def noise_image(self, seed: Optional[int] = None) -> np.ndarray:
        """The Poisson-noise image with C's generator (same seed, same image as C)."""
        from .crand import CRandom
        from .noise_models import detector_model_on, detector_noise
        seed = _check_seed(seed)
        cfg = self.prep.cfg
        seed = cfg.seed if seed is None else seed
        if detector_model_on(cfg):     # -readout_noise, -flicker, -calibration, -psf: noisify's model
            noise, _photons, _over, _notes = detector_noise(self._image2d, cfg, self.prep.det.roi,
                                                            self.prep.det.pixel_size, seed)
            return self._shaped(noise)
        noise, _photons, _over = CRandom().noise(self._image2d, self.prep.det.roi, cfg.adc_offset, seed)
        return self._shaped(noise)

    def write(self, directory: str = ".", log=None):
        """Write C's files (names from the Config) into ``directory``."""
        from .simulator import write_outputs
        directory = _path(directory, "directory")
        if not os.path.isdir(directory):
            raise NanoBraggError("cannot write into %s: no such directory" % directory)
        cfg = self.prep.cfg
        names = {}
        for key in ("floatfile", "intfile", "pgmfile", "noisefile", "cbffile", "cbfnoisefile", "nxsfile",
                    "nxsnoisefile"):
            name = getattr(cfg, key)
            names[key] = os.path.join(directory, name) if name else None
        prep = _with_cfg(self.prep, cfg.replace(**names))
        return write_outputs(prep, self.image, _check_log(log) or (lambda s: None))


def _with_cfg(prep, cfg):
    import copy
    new = copy.copy(prep)
    new.cfg = cfg
    return new


def _check_log(log):
    if log is not None and not callable(log):
        raise NanoBraggError("log must be a function taking one line of text, got %s" % type(log).__name__)
    return log


class Simulator:
    """Renders images from one base configuration, reusing compiled kernels and tables.

    Parameters
    ----------
    base : Config or flags
        The configuration (or a nanoBragg command line) every image starts from.
    device : str, optional
        ``cpu``, ``cuda`` or ``auto``; default: the base's (``-device``, else ``auto``).
        ``render(device=...)`` chooses per image.
    log : callable, optional
        Receives C's set-up lines (silent by default).
    """

    def __init__(self, base: Union[Config, Flags], device: Optional[str] = None, log=None):
        self.base = _check_config(base) if isinstance(base, Config) else config_from_flags(base)
        self.device = self.base.device if device is None else _check_device(device)
        self.log = _check_log(log) or (lambda s: None)
        self._quiet = log is None  # no set-up lines to print: prepare_many may share the set-up of images
        self._hkl_cache = {}       # HKL tables read, by file
        self._hkl_device = {}      # and their copies on the GPU

    @classmethod
    def from_expt(cls, path, flags: Flags = (), device: Optional[str] = None, log=None, **changes) -> "Simulator":
        """A Simulator whose detector, beam, goniometer and crystal come from a DIALS experiment list.

        ``path`` is the JSON that ``dials.import`` (or indexing) writes; its
        panels become the detector (docs/multipanel.md), its beam the
        wavelength, direction and polarization, its goniometer the spindle,
        and its crystal, where present, the orientation and cell (Config
        ``dials_A``).  ``flags`` (nanoBragg flags, read after the file) and
        keyword changes (Config fields) override them, e.g.
        ``Simulator.from_expt("imported.expt", "-hkl P1.hkl -N 10", fluence=1e24)``;
        ``render(dials_A=A)`` changes the crystal per image (A = UB in DIALS's frame, 1/A).
        """
        path = _path(path, "experiment list")
        cfg = config_from_flags(["-expt", path] + _flag_words(list(flags) if isinstance(flags, tuple) else flags),
                                **changes)
        return cls(cfg, device=device, log=log)

    def prepare(self, *positional, **changes):
        """The prepared tables for the base Config with some fields changed.

        The HKL table is read (and uploaded to the GPU) once per file and
        Simulator; compiled kernels are shared by the whole process.
        ``device`` may be among the changes (default: the Simulator's).
        """
        if positional:
            raise NanoBraggError("settings are given by name, e.g. render(distance=0.1) or render(misset=(0, 0, 0.1)); "
                                 "got %d positional argument(s)" % len(positional))
        changes = check_settings(changes)
        changes.setdefault("device", self.device)
        return self._prepare_checked(changes)

    def _prepare_checked(self, changes):
        """:meth:`prepare` of settings already checked (``check_settings``, ``device`` set)."""
        from .simulator import prepare
        # a spectrum given one way replaces the base's spectrum given the other way (file or pairs)
        if changes.get("spectrum") is not None and "spectrumfile" not in changes:
            changes = dict(changes, spectrumfile=None)
        if changes.get("spectrumfile") is not None and "spectrum" not in changes:
            changes = dict(changes, spectrum=None)
        cfg = self.base.replace(**changes)
        return _guard(prepare, cfg, self.log, hkl_cache=self._hkl_cache, write_dump=False,
                      hkl_device=self._hkl_device)

    def prepare_many(self, overrides_list, device: Optional[str] = None) -> list:
        """:meth:`prepare` of many images at once: a list of prepared images, in order.

        Each item equals ``prepare(**overrides)`` (tests/test_prepare_many.py),
        but images that differ only in orientation, phi0, seeds or fluence
        (``nanobrag_numba.prepare_many.FAST_FIELDS``) share one full set-up
        and get their crystals and rotation tables computed together with
        numpy (the same bits), so the set-up costs tens of microseconds per
        image instead of milliseconds (``python -m bench.setup_many``).  A
        Simulator with a ``log`` sets up every image in full (C's lines for
        each).  Errors as in :meth:`render_many`, named
        ``prepare_many: item N: ...``.
        """
        return self._prepare_list(overrides_list, device, "prepare_many")

    def _prepare_each(self, overrides_list) -> list:
        """``prepare(**overrides)`` of each dict: a Prepared or the NanoBraggError it raises, in order.

        For the batch, whose jobs fail one by one; the set-up is shared as in
        :meth:`prepare_many`.
        """
        from .prepare_many import prepare_checked
        out: list = [None] * len(overrides_list)
        checked, where = [], []
        for i, changes in enumerate(overrides_list):
            try:
                changes = check_settings(changes)
            except NanoBraggError as exc:
                out[i] = exc
                continue
            changes.setdefault("device", self.device)
            checked.append(changes)
            where.append(i)
        for i, prep in zip(where, prepare_checked(self, checked) if checked else []):
            out[i] = prep
        return out

    def _prepare_list(self, overrides_list, device, what):
        """The Prepared images of a list of settings; the first bad item (in order) raises its error."""
        from .prepare_many import prepare_checked
        if isinstance(overrides_list, (str, bytes, dict)) or not isinstance(overrides_list, (list, tuple)):
            raise NanoBraggError("%s takes a list of dicts of settings (one per image), got %s"
                                 % (what, type(overrides_list).__name__))
        if not overrides_list:
            raise NanoBraggError("%s needs at least one image: the list of settings is empty" % what)
        if device is not None:
            _check_device(device)
        checked = []
        first_bad = None          # the error of the first item that cannot even be checked, after which none is
        for i, changes in enumerate(overrides_list):
            if not isinstance(changes, dict):
                first_bad = NanoBraggError("%s: item %d must be a dict of settings, got %s"
                                           % (what, i, type(changes).__name__))
                break
            bad = [k for k in changes if not isinstance(k, str)]
            if bad:
                first_bad = NanoBraggError("%s: item %d: settings are named by strings, got %s"
                                           % (what, i, _shown(bad[0])))
                break
            try:
                if device is not None:
                    changes = dict(changes, device=device)
                changes = check_settings(changes)
            except NanoBraggError as exc:
                first_bad = NanoBraggError("%s: item %d: %s" % (what, i, exc))
                break
            changes.setdefault("device", self.device)
            checked.append(changes)
        preps = prepare_checked(self, checked) if checked else []
        for i, prep in enumerate(preps):
            if isinstance(prep, NanoBraggError):
                raise NanoBraggError("%s: item %d: %s" % (what, i, prep)) from None
        if first_bad is not None:
            raise first_bad
        return preps

    def render(self, *positional, **changes) -> Result:
        """Render one image; keyword arguments change Config fields (SI units), ``device`` included."""
        from .simulator import render
        prep = self.prepare(*positional, **changes)
        image = _guard(render, prep, prep.cfg.device)
        return Result(floatimage=image.floatimage, prep=prep, image=image)


    def render_many(self, overrides_list, device: Optional[str] = None) -> list:
        """Render K images, as K calls of :meth:`render`, in as few kernel launches as possible.

        Parameters
        ----------
        overrides_list : list of dict
            One dict of settings per image (Config fields, SI units, as
            :meth:`render` takes them; ``{}`` is the base image).
        device : str, optional
            ``cpu``, ``cuda`` or ``auto`` for every image (default: each
            image's ``device`` setting, else the Simulator's).

        Returns
        -------
        list of Result
            In the order of ``overrides_list``; each equal to
            ``render(**overrides)``: on the CPU the float images are
            bit-identical (the same kernel code per pixel and the same
            scaling; tests/test_render_many.py); on the GPU they are those
            of the CUDA kernel of :meth:`render`.

        Images that differ only in what the kernel reads per image, the
        crystal orientation (``misset``, ``matrix``/``matfile``, ``phi0``,
        ``mosaic_seed``, ``misset_seed``) and the fluence (``fluence``,
        ``flux``, ``exposure``; ``beamsize`` while it clips no sample), share
        ONE launch: their rotation tables and phi maps are stacked, the
        sources, HKL table and mask are shared, and each image is scaled by
        its own fluence (on the device with cupy).  Images that differ in
        anything else the kernel reads (detector, beam, sampling, crystal
        size or shape, options, sources, mask, HKL file, device, precision)
        are never merged: they are grouped into compatible groups, one
        launch each (:func:`nanobrag_numba.simulator.launch_groups`), and
        the results come back in input order.  GAUSS and TOPHAT crystals
        read the reciprocal cell, which turns with the crystal, so their
        orientations do not share a launch.  ``-c_quirks`` is exact too:
        C's phi carry-over is in each image's own phi maps, and an image
        whose interpolation left the HKL table gets C's switch-off second
        pass as a launch of its own, as :meth:`render` does.

        The images are set up by :meth:`prepare_many`: those that differ
        only in orientation, ``phi0``, seeds and fluence share one full
        set-up (``beamsize`` and ``matfile`` changes get their own).

        Raises
        ------
        NanoBraggError
            One line naming the problem: not a list, an empty list, an item
            that is not a dict (with its index), an unknown setting or a bad
            value (with the index of the image), or any error of
            :meth:`render` for one image.
        """
        preps = self._prepare_list(overrides_list, device, "render_many")
        return self.render_prepared(preps)

    def render_prepared(self, preps, device: Optional[str] = None, keep_device: bool = False) -> list:
        """Render images already prepared by :meth:`prepare` (as :meth:`render_many` does); a list of Result.

        ``keep_device`` (CUDA with cupy): each ``Result.image.device_image``
        keeps the float image on the GPU (for noise drawn there).
        """
        from .simulator import Prepared, render_many
        preps = list(preps)
        for i, prep in enumerate(preps):
            if not isinstance(prep, Prepared):
                raise NanoBraggError("render_prepared: item %d is not a prepared image (Simulator.prepare), got %s"
                                     % (i, type(prep).__name__))
        if device is not None:
            _check_device(device)
        images = _guard(render_many, preps, device, keep_device=bool(keep_device))
        return [Result(floatimage=img.floatimage, prep=prep, image=img) for prep, img in zip(preps, images)]


def simulate(cfg: Union[Config, Flags], device: Optional[str] = None, log=None) -> Result:
    """Render one image from a Config or a nanoBragg command line."""
    return Simulator(cfg, device=device, log=log).render()


# ---------------------------------------------------------------- writers

def _path(path, what="path") -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise NanoBraggError("the %s must be a non-empty string or os.PathLike, got %s" % (what, _shown(path)))
    return path


def _image(result_or_array) -> np.ndarray:
    if isinstance(result_or_array, Result):
        return result_or_array.floatimage
    arr = result_or_array
    if isinstance(arr, (list, tuple)):
        try:
            arr = np.asarray(arr)
        except (TypeError, ValueError):
            pass
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf" or arr.ndim != 2 or arr.size == 0:
        shown = ("a %s array of shape %s" % (arr.dtype, arr.shape) if isinstance(arr, np.ndarray)
                 else type(result_or_array).__name__)
        raise NanoBraggError("the image must be a Result or a non-empty 2-D array of numbers, got %s" % shown)
    return arr


def _result(result, what) -> Result:
    if not isinstance(result, Result):
        raise NanoBraggError("%s needs a Result of Simulator.render (its geometry makes the file), got %s"
                             % (what, type(result).__name__))
    return result


def write_float(path, image) -> None:
    """Write a float image (a Result or an array) as C's raw float32 ``floatimage.bin``."""
    from .io.images import write_float_image
    write_float_image(_path(path), _image(image))


def write_tiff(path, image) -> None:
    """Write a float image (a Result or an array) as a float32 TIFF (tifffile)."""
    from .io.images import write_tiff as _write_tiff
    _write_tiff(_path(path), _image(image))


def write_smv(path, result: Result, data: Optional[np.ndarray] = None, noise: bool = False) -> None:
    """Write an SMV image with C's header for ``result``'s geometry.

    ``data`` defaults to ``result.int_image()``; pass ``result.noise_image()``
    (and ``noise=True``, which only changes C's DENZO header line) for the
    noise image.  ``data`` must be whole numbers 0..65535 of the image's shape.
    """
    from .geometry import smv_header_values
    from .io.smv import format_smv_header, write_smv as _write_smv
    path = _path(path)
    prep = _result(result, "write_smv").prep
    result._single_panel("write_smv")
    if data is None:
        data = result.int_image()
    else:
        arr = np.asarray(data) if not isinstance(data, np.ndarray) else data
        shape = result.floatimage.shape
        if arr.shape != shape or arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 65535)):
            raise NanoBraggError("SMV data must be whole numbers 0..65535 of shape %s (as int_image() or "
                                 "noise_image() give), got %s %s" % (shape, arr.dtype, arr.shape))
        data = arr.astype(np.uint16, copy=False)
    if not isinstance(noise, (bool, np.bool_)):
        raise NanoBraggError("noise must be true or false, got %s" % _shown(noise))
    header = format_smv_header(**smv_header_values(prep.det, prep.cfg.lambda0, prep.cfg.phi0,
                                                   prep.sampling.osc, bool(noise)))
    _write_smv(path, data, header)


def write_cbf(path, result: Result, data: Optional[np.ndarray] = None, noise: bool = False,
              noise_seed: Optional[int] = None) -> None:
    """Write an imgCIF/CBF image with ``result``'s full geometry (for dxtbx/DIALS, see docs/dials.md).

    The pixels are ``result.int_image()`` by default, or ``result.noise_image()``
    with ``noise=True`` (or the ``data`` given: whole numbers of the image's
    shape that fit in 32 bits).  The header carries the detector, beam and
    spindle as imgCIF axes and the ground truth (real-space vectors, cell,
    misset, seeds, command line) as ``_nanobrag_truth`` items.
    """
    from .io.cbf import write_cbf as _write_cbf
    path = _path(path)
    prep = _result(result, "write_cbf").prep
    result._single_panel("write_cbf")
    if not isinstance(noise, (bool, np.bool_)):
        raise NanoBraggError("noise must be true or false, got %s" % _shown(noise))
    if noise_seed is not None:
        noise_seed = _check_seed(noise_seed)
    if data is None:
        data = result.noise_image(noise_seed) if noise else result.int_image()
    else:
        arr = np.asarray(data) if not isinstance(data, np.ndarray) else data
        shape = result.floatimage.shape
        if (arr.shape != shape or arr.dtype.kind not in "iu"
                or (arr.size and (int(arr.min()) < -2 ** 31 or int(arr.max()) >= 2 ** 31))):
            raise NanoBraggError("CBF data must be whole numbers of shape %s that fit in 32 bits (as "
                                 "int_image() or noise_image() give), got %s %s" % (shape, arr.dtype, arr.shape))
        data = arr
    _write_cbf(path, prep, data, noise=bool(noise), command_line=prep.cfg.command_line,
               noise_seed=noise_seed if noise else None)


def write_nxs(path, results, noise: bool = False, noise_seed: Optional[int] = None,
              float_images: bool = True) -> None:
    """Write one NeXus/NXmx HDF5 file with full geometry (for dxtbx/DIALS, see docs/dials.md).

    ``results`` is a Result, or a list of Results of one series (a rotation
    series or stills rendered in this process with the same detector and
    beam; each image's spindle angle is its own ``-phi``).  The image stack
    ``/entry/data/data`` holds their ``int_image()`` (or ``noise_image()``
    with ``noise=True``), ``/entry/data/float_data`` the float images unless
    ``float_images=False``; the ground truth of the first result is in
    ``/entry/sample/ground_truth``.
    """
    from .io.cbf import lab_geometry
    from .io.nxmx import write_nxmx
    path = _path(path)
    many = isinstance(results, (list, tuple))
    results = list(results) if many else [results]
    if not results:
        raise NanoBraggError("write_nxs needs at least one Result")
    for r in results:
        _result(r, "write_nxs")
    if not isinstance(noise, (bool, np.bool_)):
        raise NanoBraggError("noise must be true or false, got %s" % _shown(noise))
    if not isinstance(float_images, (bool, np.bool_)):
        raise NanoBraggError("float_images must be true or false, got %s" % _shown(float_images))
    if noise_seed is not None:
        noise_seed = _check_seed(noise_seed)
    geos = [lab_geometry(r.prep) for r in results]
    g0 = geos[0]
    for i, g in enumerate(geos[1:], 1):
        same = (g.fpixels == g0.fpixels and g.spixels == g0.spixels and g.pixel_size_mm == g0.pixel_size_mm
                and np.allclose(g.origin, g0.origin, rtol=0, atol=1e-9) and np.allclose(g.fast, g0.fast, atol=1e-12)
                and np.allclose(g.slow, g0.slow, atol=1e-12) and np.allclose(g.spindle, g0.spindle, atol=1e-12)
                and g.wavelength_A == g0.wavelength_A and g.osc_range_deg == g0.osc_range_deg)
        if not same:
            raise NanoBraggError("write_nxs: result %d has another detector, beam, spindle or oscillation than "
                                 "result 0 (one NXmx file holds one series)" % i)
    images = [r.noise_image(noise_seed) if noise else r.int_image() for r in results]
    prep = results[0].prep
    write_nxmx(path, prep, images, [g.phi_start_deg for g in geos], noise=bool(noise),
               command_line=prep.cfg.command_line, noise_seed=noise_seed if noise else None,
               float_images=[r.floatimage for r in results] if float_images else None)


def write_pgm(path, result: Result, scale: Optional[float] = None) -> None:
    """Write C's 8-bit PGM of ``result`` (scale 250/(5 rmsd) unless given)."""
    from .io.images import write_pgm as _write_pgm
    from .simulator import pgm_image
    path = _path(path)
    _result(result, "write_pgm")._single_panel("write_pgm")
    scale = _check_scale(scale, "scale")
    if scale is None or scale <= 0:
        rmsd = result.stats.rmsd
        scale = 250.0 / (5.0 * rmsd) if rmsd > 0 else 1.0
    _write_pgm(path, pgm_image(result.prep, result._image2d, scale), scale)


def noise_image(result: Result, seed: Optional[int] = None) -> np.ndarray:
    """C's Poisson-noise image of ``result`` (same seed as C: same image)."""
    return _result(result, "noise_image").noise_image(seed)
