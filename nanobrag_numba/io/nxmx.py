"""NeXus/NXmx (HDF5) images with full geometry, readable by dxtbx's NXmx reader.

One file holds a stack of images (``/entry/data/data``, shape (n, slow,
fast)) taken with the same detector and beam, at the spindle angles in
``/entry/sample/transformations/omega`` (start of each image) and
``omega_end``.  The geometry is :func:`~nanobrag_numba.io.cbf.lab_geometry`'s
(imgCIF frame) turned into NeXus' McStas frame (z along the beam, y up:
x -> -x, z -> -z), as NXtransformations chains:

* detector: ``det_z`` (translation along the detector normal by the
  distance) <- ``module_offset`` (the rest of the way to the first pixel's
  outer corner) <- ``fast_pixel_direction`` / ``slow_pixel_direction``
  (translations of one pixel along the fast and slow directions);
* sample: ``omega``, a rotation about the spindle (right-handed).

The ground truth (real-space a, b, c in this file's McStas frame, cell,
misset, seeds, command line) is in ``/entry/sample/unit_cell`` and the
NXnote ``/entry/sample/ground_truth``.  With several source wavelengths the
NXbeam keeps the central ``incident_wavelength`` (dxtbx reads an array there
as one wavelength per image) and the spectrum in the NXdata
``incident_wavelength_spectrum`` (wavelength, weight).
"""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np

from .atomic import atomic_write_bytes
from .cbf import lab_geometry, truth_items

MCSTAS = np.diag([-1.0, 1.0, -1.0])     # imgCIF lab frame -> McStas (and back)


def _mc(v) -> np.ndarray:
    return MCSTAS @ np.asarray(v, dtype=np.float64)


def _str(group, name, text):
    import h5py
    return group.create_dataset(name, data=str(text), dtype=h5py.string_dtype("utf-8"))


def _group(parent, name, nx_class):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _axis(group, name, value, ttype, vector, units, depends_on, offset=(0.0, 0.0, 0.0)):
    ds = group.create_dataset(name, data=np.asarray(value, dtype=np.float64))
    ds.attrs["transformation_type"] = ttype
    ds.attrs["vector"] = np.asarray(vector, dtype=np.float64)
    ds.attrs["offset"] = np.asarray(offset, dtype=np.float64)
    ds.attrs["offset_units"] = "mm"
    ds.attrs["units"] = units
    ds.attrs["depends_on"] = depends_on
    return ds


def format_nxmx(prep, images: Sequence, phi_starts_deg: Optional[Sequence[float]] = None, noise: bool = False,
                command_line: Optional[str] = None, noise_seed: Optional[int] = None,
                float_images: Optional[Sequence] = None) -> bytes:
    """The bytes of an NXmx file holding ``images`` (each (slow, fast) integers) of ``prep``'s geometry."""
    import h5py
    geo = lab_geometry(prep)
    # a multi-panel detector: one NXdetector_module per panel, the panels stacked along slow in the data
    panel_geos = [lab_geometry(prep, d) for d in prep.det.panels] or [geo]
    shape2d = (prep.det.spixels, prep.det.fpixels)
    images = [np.asarray(im).reshape(shape2d) if np.asarray(im).size == shape2d[0] * shape2d[1] else im
              for im in images]
    if float_images is not None:
        float_images = [np.asarray(im).reshape(shape2d) if np.asarray(im).size == shape2d[0] * shape2d[1] else im
                        for im in float_images]
    stack = np.stack([np.asarray(im) for im in images])
    if stack.ndim != 3 or stack.dtype.kind not in "iu":
        raise ValueError("NXmx images must be 2-D integer arrays (slow, fast), got %s %s" % (stack.dtype, stack.shape))
    if stack.shape[1:] != (geo.spixels, geo.fpixels):
        raise ValueError("NXmx images must have shape %s, got %s" % ((geo.spixels, geo.fpixels), stack.shape[1:]))
    if stack.size and (int(stack.min()) < -2 ** 31 or int(stack.max()) >= 2 ** 31):
        raise ValueError("NXmx pixels must fit in signed 32 bits")
    dtype = np.uint16 if stack.dtype.itemsize <= 2 and stack.dtype.kind == "u" else np.int32
    n = stack.shape[0]
    starts = np.asarray([geo.phi_start_deg] * n if phi_starts_deg is None else phi_starts_deg, dtype=np.float64)
    if starts.shape != (n,):
        raise ValueError("one spindle angle per image: %d images, %d angles" % (n, starts.size))
    truth = truth_items(prep, geo, noise, command_line, noise_seed)
    for key in ("real_space_a", "real_space_b", "real_space_c"):
        truth[key] = tuple(float(c) for c in _mc(truth[key]))
    truth["frame"] = "NeXus McStas frame of this file (z along the beam, y up); Angstrom; crystal at phi = 0 after the misset"

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = "nanobrag-numba"
        entry = _group(f, "entry", "NXentry")
        f.attrs["default"] = "entry"
        _str(entry, "definition", "NXmx")
        _str(entry, "start_time", "1970-01-01T00:00:00Z")
        _str(entry, "end_time", "1970-01-01T00:00:00Z")
        data = _group(entry, "data", "NXdata")
        data.attrs["signal"] = "data"
        ds = data.create_dataset("data", data=stack.astype(dtype, copy=False),
                                 chunks=(1,) + stack.shape[1:], compression="gzip", shuffle=True)
        ds.attrs["units"] = "counts"
        if float_images is not None:
            fl = np.stack([np.asarray(im, dtype=np.float32) for im in float_images])
            if fl.shape != stack.shape:
                raise ValueError("float images must have the shape of the images, %s vs %s" % (fl.shape, stack.shape))
            data.create_dataset("float_data", data=fl, chunks=(1,) + fl.shape[1:], compression="gzip",
                                shuffle=True).attrs["units"] = "photons"

        inst = _group(entry, "instrument", "NXinstrument")
        _str(inst, "name", "nanoBragg simulation")
        source = _group(inst, "source", "NXsource")
        _str(source, "name", "nanoBragg simulation")
        src2 = _group(entry, "source", "NXsource")
        _str(src2, "name", "nanoBragg simulation")

        beam = _group(inst, "beam", "NXbeam")
        wl = beam.create_dataset("incident_wavelength", data=float(geo.wavelength_A))
        wl.attrs["units"] = "angstrom"
        src = np.asarray(prep.sources)
        lam = np.round(src[:, 3] * 1e10, 12)
        values, where = np.unique(lam, return_inverse=True)
        # each wavelength's share: its sources' weights (1 each unless weighted, see sources.kernel_sources)
        counts = np.bincount(where.ravel(), weights=src[:, 4] if src.shape[1] > 4 else None,
                             minlength=values.size)
        if values.size > 1:
            spec = _group(beam, "incident_wavelength_spectrum", "NXdata")
            spec.attrs["signal"] = "weight"
            spec.attrs["axes"] = "wavelength"
            spec.create_dataset("wavelength", data=values).attrs["units"] = "angstrom"
            spec.create_dataset("weight", data=counts / counts.sum())
        beam.create_dataset("incident_beam_direction", data=_mc(geo.beam))

        det = _group(inst, "detector", "NXdetector")
        tr = _group(det, "transformations", "NXtransformations")
        base = "/entry/instrument/detector/transformations/"
        normal = _mc(geo.normal)
        _axis(tr, "det_z", geo.distance_mm, "translation", normal, "mm", ".")
        several = len(panel_geos) > 1
        for k, pg in enumerate(panel_geos):
            rest = _mc(pg.origin) - geo.distance_mm * normal
            rest_len = float(np.linalg.norm(rest))
            _axis(tr, "module_offset_p%02d" % k if several else "module_offset", rest_len, "translation",
                  rest / rest_len if rest_len > 0 else (1.0, 0.0, 0.0), "mm", base + "det_z")
        _str(det, "depends_on", base + "det_z")
        _str(det, "description", "nanoBragg simulated detector")
        _str(det, "type", "simulated")
        _str(det, "sensor_material", "Si")
        # nanoBragg's default sensor has no thickness; dxtbx needs one > 0: 1 nm makes its parallax nil
        # (a panel description gives its own thickness: the one the run rendered, panel 0's)
        thick_m = (prep.sampling.thick if (prep.cfg.detector_json or prep.cfg.expt) else prep.cfg.detector_thick)
        thick = det.create_dataset("sensor_thickness", data=max(float(thick_m * 1e3), 1e-6))
        thick.attrs["units"] = "mm"
        det.create_dataset("x_pixel_size", data=geo.pixel_size_mm).attrs["units"] = "mm"
        det.create_dataset("y_pixel_size", data=geo.pixel_size_mm).attrs["units"] = "mm"
        det.create_dataset("distance", data=geo.distance_mm).attrs["units"] = "mm"
        det.create_dataset("beam_center_x", data=geo.beam_center_fast_mm / geo.pixel_size_mm).attrs["units"] = "pixel"
        det.create_dataset("beam_center_y", data=geo.beam_center_slow_mm / geo.pixel_size_mm).attrs["units"] = "pixel"
        det.create_dataset("saturation_value", data=int(truth.get("overload", 65535)))
        det.create_dataset("underload_value", data=-1)
        det.create_dataset("count_time", data=1.0).attrs["units"] = "s"
        det.create_dataset("frame_time", data=1.0).attrs["units"] = "s"
        for k, pg in enumerate(panel_geos):
            mod = _group(det, "module_p%02d" % k if several else "module", "NXdetector_module")
            mod.create_dataset("data_origin", data=np.array([k * pg.spixels, 0], dtype=np.int64))
            mod.create_dataset("data_size", data=np.array([pg.spixels, pg.fpixels], dtype=np.int64))
            mod.create_dataset("data_stride", data=np.array([1, 1], dtype=np.int64))
            offset = base + ("module_offset_p%02d" % k if several else "module_offset")
            _axis(mod, "fast_pixel_direction", pg.pixel_size_mm, "translation", _mc(pg.fast), "mm", offset)
            _axis(mod, "slow_pixel_direction", pg.pixel_size_mm, "translation", _mc(pg.slow), "mm", offset)

        sample = _group(entry, "sample", "NXsample")
        _str(sample, "name", "nanoBragg crystal")
        _str(sample, "depends_on", "/entry/sample/transformations/omega")
        st = _group(sample, "transformations", "NXtransformations")
        _axis(st, "omega", starts, "rotation", _mc(geo.spindle), "deg", ".")
        end = st.create_dataset("omega_end", data=starts + geo.osc_range_deg)
        end.attrs["units"] = "deg"
        st.create_dataset("omega_increment_set", data=float(geo.osc_range_deg)).attrs["units"] = "deg"
        sample.create_dataset("unit_cell", data=np.asarray(truth["cell"], dtype=np.float64)[None, :])
        note = _group(sample, "ground_truth", "NXnote")
        _str(note, "type", "text/plain")
        _str(note, "description", "ground truth of the nanoBragg simulation (nanobrag-numba)")
        for key, value in truth.items():
            if value is None:
                continue
            if isinstance(value, str):
                _str(note, key, value)
            elif isinstance(value, (tuple, list)):
                note.create_dataset(key, data=np.asarray(value, dtype=np.float64))
            else:
                note.create_dataset(key, data=value)
        for key in ("real_space_a", "real_space_b", "real_space_c"):
            note[key].attrs["units"] = "angstrom"
    return buf.getvalue()


def write_nxmx(path, prep, images: Sequence, phi_starts_deg: Optional[Sequence[float]] = None, noise: bool = False,
               command_line: Optional[str] = None, noise_seed: Optional[int] = None,
               float_images: Optional[Sequence] = None) -> None:
    """Write ``images`` (int or noise images of ``prep``'s run) as one NXmx file, atomically."""
    atomic_write_bytes(path, (format_nxmx(prep, images, phi_starts_deg, noise, command_line, noise_seed,
                                          float_images),))


def assemble_series(path, frame_paths: Sequence) -> None:
    """Write ONE NXmx file holding the image stack of single-image NXmx files (a batch series), atomically.

    The geometry, beam and ground truth come from the first frame; the
    frames' images (and float images when every frame has them) are stacked
    in the order given, with each frame's spindle angles, and each frame's
    real-space vectors, misset and noise seed are kept per image in
    ``ground_truth`` (``*_per_image``).  The frames must share the detector.
    """
    import h5py
    frames = list(frame_paths)
    if not frames:
        raise ValueError("no frames to assemble")
    stack, floats, starts, ends, per = [], [], [], [], {}
    keys = ("real_space_a", "real_space_b", "real_space_c", "misset_deg", "noise_seed")
    for p in frames:
        with h5py.File(p, "r") as f:
            stack.append(f["entry/data/data"][()])
            floats.append(f["entry/data/float_data"][()] if "float_data" in f["entry/data"] else None)
            starts.append(f["entry/sample/transformations/omega"][()])
            ends.append(f["entry/sample/transformations/omega_end"][()])
            for k in keys:
                if k in f["entry/sample/ground_truth"]:
                    per.setdefault(k, []).append(f["entry/sample/ground_truth"][k][()])
    data = np.concatenate(stack)
    buf = io.BytesIO()
    with h5py.File(frames[0], "r") as src, h5py.File(buf, "w") as f:
        for k, v in src.attrs.items():
            f.attrs[k] = v
        src.copy(src["entry"], f, "entry")
        g = f["entry/data"]
        attrs = dict(g["data"].attrs)
        del g["data"]
        ds = g.create_dataset("data", data=data, chunks=(1,) + data.shape[1:], compression="gzip", shuffle=True)
        ds.attrs.update(attrs)
        if "float_data" in g:
            del g["float_data"]
        if all(x is not None for x in floats):
            fl = np.concatenate(floats)
            g.create_dataset("float_data", data=fl, chunks=(1,) + fl.shape[1:], compression="gzip",
                             shuffle=True).attrs["units"] = "photons"
        st = f["entry/sample/transformations"]
        for name, values in (("omega", starts), ("omega_end", ends)):
            attrs = dict(st[name].attrs)
            del st[name]
            st.create_dataset(name, data=np.concatenate([np.atleast_1d(v) for v in values])).attrs.update(attrs)
        note = f["entry/sample/ground_truth"]
        for k, values in per.items():
            note.create_dataset(k + "_per_image", data=np.asarray(values))
    atomic_write_bytes(path, (buf.getvalue(),))
