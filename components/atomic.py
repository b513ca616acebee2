"""Files written whole or not at all, from inside a Beam transform.

The jobs write their outputs from their own ParDos instead of Beam's file sinks: on the
DaskRunner of Beam 2.59 ``WriteToText``/``WriteToTFRecord`` fail and leave ``beam-temp-*``
folders (their finalisation never runs). A file is written under a temporary name beside
its target and renamed, so a reader (or a resumed run) never sees a partial file.
"""

from __future__ import annotations

import os

import tensorflow as tf


def temporary_name(path: str) -> str:
    """A name beside ``path`` that no other process writing ``path`` uses."""
    return f"{path}.tmp-{os.getpid()}"


def write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically (temporary name, then rename); returns ``path``."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    tmp = temporary_name(path)
    with tf.io.gfile.GFile(tmp, "w") as fh:
        fh.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path


def write_tfrecords(path: str, records, compression: str = "GZIP") -> int:
    """Write serialized records to a TFRecord file atomically; returns their number."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    tmp = temporary_name(path)
    n = 0
    with tf.io.TFRecordWriter(tmp, tf.io.TFRecordOptions(compression)) as writer:
        for record in records:
            writer.write(record)
            n += 1
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return n
