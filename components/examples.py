"""Spectrum <-> tf.train.Example: the one feature spec that every writer and reader uses.

Training data (ingested SDSS files, simulated spectra, pPXF-labelled records) and the
requests the serving client sends are all built by :func:`to_example`, and parsed with
:func:`feature_spec`, so the network sees identical inputs in training and in serving.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from stellarpop.components.spectra import Spectrum
from stellarpop.transforms import features as F


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64).ravel()))


def _bytes(value: str) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))


def to_example(
    spec: Spectrum,
    labels: Mapping[str, float] | None = None,
    truth: Mapping[str, float] | None = None,
) -> tf.train.Example:
    """Encode a spectrum on the model grid (see ``spectra.to_model_grid``).

    Parameters
    ----------
    spec : Spectrum with ``len(spec.flux) == features.N_PIXELS``
    labels : optional {log_age, mh, ebv, vd} (pPXF or chosen truth), physical units
    truth : optional {log_age, mh, ebv, vd} of a simulated spectrum; written as ``true_*``
    """
    if len(spec.flux) != F.N_PIXELS:
        raise ValueError(f"{spec.spec_id}: {len(spec.flux)} pixels, expected {F.N_PIXELS} (resample first)")
    feats = {
        F.FLUX: _floats(spec.flux),
        F.IVAR: _floats(spec.ivar),
        F.MASK: _ints(np.asarray(spec.bad, np.int64)),
        F.SPEC_ID: _bytes(spec.spec_id),
        F.OBJECT_ID: _bytes(spec.object_id or spec.spec_id),
        F.PLATE: _ints([spec.plate]),
        F.MJD: _ints([spec.mjd]),
        F.FIBER: _ints([spec.fiber]),
        F.ZWARNING: _ints([spec.zwarning]),
        F.RA: _floats([spec.ra]),
        F.DEC: _floats([spec.dec]),
        F.Z: _floats([spec.z]),
        F.Z_ERR: _floats([spec.z_err]),
        F.SNR_R: _floats([spec.snr_r]),
        F.SDSS_VDISP: _floats([spec.sdss_vdisp]),
        F.SDSS_VDISP_ERR: _floats([spec.sdss_vdisp_err]),
        F.COVERAGE: _floats([spec.coverage]),
        F.SPEC_CLASS: _bytes(spec.spec_class),
        F.SUBCLASS: _bytes(spec.subclass),
        F.BPT_CLASS: _bytes(spec.bpt_class),
        F.SELECTION: _bytes(",".join(spec.selection)),
        F.SOURCE_FILE: _bytes(spec.source_file),
    }
    for key, value in (labels or {}).items():
        if key not in F.LABEL_KEYS:
            raise KeyError(f"unknown label {key!r}; labels are {F.LABEL_KEYS}")
        feats[key] = _floats([value])
    for key, value in (truth or {}).items():
        if key not in F.LABEL_KEYS:
            raise KeyError(f"unknown truth {key!r}; truth keys are {F.LABEL_KEYS}")
        feats[F.TRUTH_PREFIX + key] = _floats([value])
    return tf.train.Example(features=tf.train.Features(feature=feats))


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
