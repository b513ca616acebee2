"""The Trainer's input pipeline: raw gzipped tf.Examples through the Transform graph (the TFT
layer, in ``tf.data``) into batches of model inputs and scaled labels, and the label ranges
the graph holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from stellarpop.schema import features as F
from stellarpop.transforms import preprocessing as P

TRANSFORM_BATCH = 256  # examples per TFT-layer call when caching


def matching_files(file_pattern: str | Sequence[str]) -> list[str]:
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no files match {patterns}")
    return files


def split_labels(
    transformed: Mapping[str, tf.Tensor], feature_keys: Sequence[str] | None = None
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """(model inputs, labels (B, 4) in ``LABEL_KEYS`` order) from the TFT layer's output.

    ``feature_keys`` None keeps every transformed feature that is not a label.
    """
    labels = tf.stack([transformed[k] for k in P.LABEL_XF_KEYS], axis=1)
    keys = feature_keys or [k for k in transformed if k not in P.LABEL_XF_KEYS]
    return {k: transformed[k] for k in keys}, labels


def input_fn(
    file_pattern: str | Sequence[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    feature_keys: Sequence[str] | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    shuffle_buffer: int = 2048,
    cache: bool = False,
    file_seed: int | None = None,
) -> tf.data.Dataset:
    """Raw gzipped tf.Examples -> batches of (transformed inputs, scaled labels).

    Parameters
    ----------
    file_pattern : glob(s) of GZIP TFRecord files of raw examples (TFX ``train_files``)
    tf_transform_output : the Transform component's graph
    batch_size : examples per batch (the last batch may be smaller)
    feature_keys : transformed features to keep (default: all but the labels)
    shuffle, seed, repeat, shuffle_buffer : ordering of the examples
    cache : transform once and keep the kept features in memory (about 61 kB per spectrum
        for the three transformed channels the default model reads); then shuffling acts on transformed
        examples. Only a full first pass fills the cache (``train_steps`` None).
    file_seed : read the files in an order shuffled with this seed (not sorted): the first
        N examples are then a sample of every file, e.g. of every span (calibration)

    Returns
    -------
    Dataset of ({key: Tensor (B, ...)}, Tensor (B, 4) float32)
    """
    files = matching_files(file_pattern)
    if file_seed is not None:
        files = [files[i] for i in np.random.default_rng(file_seed).permutation(len(files))]
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    raw_spec = tf_transform_output.raw_feature_spec()
    tft_layer = tf_transform_output.transform_features_layer()

    def transform(serialized):
        return split_labels(tft_layer(tf.io.parse_example(serialized, raw_spec)), feature_keys)

    if cache:
        records = records.batch(TRANSFORM_BATCH).map(transform, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    batches = records.batch(batch_size)
    if not cache:
        batches = batches.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def read_label_ranges(
    file_pattern: str | Sequence[str], tf_transform_output: tft.TFTransformOutput
) -> dict[str, list[float]]:
    """{label: [min, max]} of the transform graph, read off one example's TFT outputs."""
    serialized = next(iter(tf.data.TFRecordDataset(matching_files(file_pattern), compression_type="GZIP").batch(1)))
    raw = tf.io.parse_example(serialized, tf_transform_output.raw_feature_spec())
    out = tf_transform_output.transform_features_layer()(raw)
    return {k: [float(out[key][0]) for key in P.range_keys(k)] for k in F.LABEL_KEYS}
