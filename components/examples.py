"""Spectrum <-> tf.train.Example: the one feature spec that every writer and reader uses.

Training data (ingested SDSS files, simulated spectra, pPXF-labelled records) and the
requests the serving client sends are all built by :func:`to_example`, and parsed with
:func:`feature_spec`, so the network sees identical inputs in training and in serving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from stellarpop.components.spectra import Spectrum
from stellarpop.schema import features as F


def to_example(
    spec: Spectrum,
    labels: Mapping[str, float] | None = None,
    truth: Mapping[str, float] | None = None,
    sim_truth: str | None = None,
) -> tf.train.Example:
    """Encode a spectrum on the model grid (see ``spectra.to_model_grid``).

    Parameters
    ----------
    spec : Spectrum with ``len(spec.flux) == features.N_PIXELS``
    labels : optional {log_age, mh, ebv, vd} (pPXF or chosen truth), physical units
    truth : optional {log_age, mh, ebv, vd} of a simulated spectrum; written as ``true_*``
    sim_truth : optional JSON of everything else the simulator knows (with ``truth``)
    """
    if len(spec.flux) != F.N_PIXELS:
        raise ValueError(f"{spec.spec_id}: {len(spec.flux)} pixels, expected {F.N_PIXELS} (resample first)")
    for given, name in ((labels, "label"), (truth, "truth")):
        unknown = set(given or ()) - set(F.LABEL_KEYS)
        if unknown:
            raise KeyError(f"unknown {name} {sorted(unknown)}; keys are {F.LABEL_KEYS}")
    # Filled in place: building Feature messages and copying them into the map costs 3x more
    # (this runs once per spectrum in every ingest and simulation job).
    example = tf.train.Example()
    feats = example.features.feature
    feats[F.FLUX].float_list.value.extend(np.asarray(spec.flux, np.float32).tolist())
    feats[F.IVAR].float_list.value.extend(np.asarray(spec.ivar, np.float32).tolist())
    feats[F.MASK].int64_list.value.extend(np.asarray(spec.bad, np.int64).tolist())
    ints = {F.PLATE: spec.plate, F.MJD: spec.mjd, F.FIBER: spec.fiber, F.ZWARNING: spec.zwarning}
    floats = {
        F.RA: spec.ra,
        F.DEC: spec.dec,
        F.Z: spec.z,
        F.Z_ERR: spec.z_err,
        F.SNR_R: spec.snr_r,
        F.SDSS_VDISP: spec.sdss_vdisp,
        F.SDSS_VDISP_ERR: spec.sdss_vdisp_err,
        F.COVERAGE: spec.coverage,
    }
    floats.update(labels or {})
    floats.update({F.TRUTH_PREFIX + k: v for k, v in (truth or {}).items()})
    strings = {
        F.SPEC_ID: spec.spec_id,
        F.OBJECT_ID: spec.object_id or spec.spec_id,
        F.SPEC_CLASS: spec.spec_class,
        F.SUBCLASS: spec.subclass,
        F.BPT_CLASS: spec.bpt_class,
        F.SELECTION: ",".join(spec.selection),
        F.SOURCE_FILE: spec.source_file,
    }
    for key, value in ints.items():
        feats[key].int64_list.value.append(int(value))
    for key, value in floats.items():
        feats[key].float_list.value.append(float(value))
    if sim_truth is not None:
        strings[F.SIM_TRUTH] = sim_truth
    for key, value in strings.items():
        feats[key].bytes_list.value.append(value.encode("utf-8"))
    return example


def feature_spec(labels: bool = False, truth: bool = False) -> dict[str, tf.io.FixedLenFeature]:
    """The parsing spec of :func:`to_example` records (for tf.io.parse_example and TFT)."""
    spec = {
        F.FLUX: tf.io.FixedLenFeature([F.N_PIXELS], tf.float32),
        F.IVAR: tf.io.FixedLenFeature([F.N_PIXELS], tf.float32),
        F.MASK: tf.io.FixedLenFeature([F.N_PIXELS], tf.int64),
    }
    spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in F.INT_META_KEYS})
    spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in F.FLOAT_META_KEYS})
    spec.update({k: tf.io.FixedLenFeature([], tf.string) for k in F.STRING_META_KEYS})
    if labels:
        spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in F.LABEL_KEYS})
    if truth:
        spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in F.TRUTH_KEYS})
        spec[F.SIM_TRUTH] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def parse(serialized: bytes | list[bytes], labels: bool = False, truth: bool = False) -> dict[str, np.ndarray]:
    """Parse serialized Examples into numpy arrays (a leading batch axis when given a list)."""
    single = isinstance(serialized, bytes)
    batch = tf.constant([serialized] if single else list(serialized))
    parsed = tf.io.parse_example(batch, feature_spec(labels, truth))
    out = {}
    for key, value in parsed.items():
        arr = value.numpy()
        if arr.dtype == object:
            arr = np.array([v.decode("utf-8") for v in arr.ravel()]).reshape(arr.shape)
        out[key] = arr[0] if single else arr
    return out


def split_of(object_id: str) -> str:
    """The split (``features.SPLITS``) of a spectrum, exactly as TFX's ExampleGen assigns it
    with ``partition_feature_name=object_id``: SHA-256 of the deterministic serialization of
    the ``object_id`` Feature proto, modulo the total number of buckets, then cumulative
    buckets. So a mock re-ingested from its FITS file keeps its split."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[object_id.encode()]))
    bucket = int(hashlib.sha256(feature.SerializeToString(deterministic=True)).hexdigest(), 16)
    bucket %= sum(n for _, n in F.SPLITS)
    for name, buckets in F.SPLITS:
        if bucket < buckets:
            return name
        bucket -= buckets
    raise AssertionError("unreachable")
