"""Batch prediction for users: spectrum files -> one table row per spectrum.

Files go through the ingest path's reader and resampler (``ingest.process_file``), become
the same tf.Examples as in training, and are sent serialized, in batches, to the exported
``serving_default`` signature, which returns the four parameters and their 1-sigma
uncertainties in physical units. Files that cannot be read or resampled get a row with an
``error`` and no values; the batch goes on.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass

import numpy as np

from stellarpop.components import examples
from stellarpop.components.fits_example_gen import ingest
from stellarpop.transforms import features as F

REPO_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
DEFAULT_MODEL = "default"
META_COLUMNS = ("file", "spec_id", "plate", "mjd", "fiber", "z", "snr_r", "class", "sdss_vdisp")


def model_dir(path: str | None = None) -> str:
    """A SavedModel folder: ``path`` itself, or the highest numbered version inside it (TF
    Serving layout, as the Pusher writes); default: the model shipped in serving/models."""
    path = path or os.path.join(REPO_MODELS, DEFAULT_MODEL)
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d for d in glob.glob(os.path.join(path, "*")) if os.path.basename(d).isdigit()
                and os.path.exists(os.path.join(d, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"{path}: neither a SavedModel nor a folder of numbered versions of one")
    return max(versions, key=lambda d: int(os.path.basename(d)))


def quality_flags(spec) -> str:
    """Why a prediction may be outside the training domain (empty: inside it)."""
    flags = []
    if not (F.Z_MIN <= spec.z <= F.Z_MAX):
        flags.append(f"z_outside_{F.Z_MIN}-{F.Z_MAX}")
    if not spec.snr_r >= F.SNR_R_MIN:
        flags.append(f"snr_r_below_{F.SNR_R_MIN:g}")
    if spec.spec_class and spec.spec_class != "GALAXY":
        flags.append(f"class_{spec.spec_class}")
    if spec.coverage < 0.95:
        flags.append(f"coverage_{spec.coverage:.2f}")
    return ",".join(flags)


@dataclass
class Predictor:
    """A loaded exported model; ``predict(serialized Examples)`` -> {output: ndarray}."""

    path: str

    def __post_init__(self):
        import tensorflow as tf

        self.path = model_dir(self.path)
        self._model = tf.saved_model.load(self.path)
        self._fn = self._model.signatures["serving_default"]

    def predict(self, serialized: list[bytes]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        out = self._fn(examples=tf.constant(serialized))
        return {k: v.numpy().reshape(len(serialized), -1)[:, 0] for k, v in out.items()}


def predict_files(files: list[str], predictor: Predictor, batch_size: int = 256, on_progress=None) -> list[dict]:
    """One row per file: metadata, the four values and their ``_err``, ``quality``, ``error``."""
    config = ingest.IngestConfig()
    rows: list[dict] = []
    pending: list[tuple[dict, bytes]] = []

    def flush():
        if pending:
            out = predictor.predict([s for _, s in pending])
            for i, (row, _) in enumerate(pending):
                for key in F.LABEL_KEYS + F.LABEL_ERR_KEYS:
                    row[key] = float(out[key][i]) if key in out else math.nan
            pending.clear()

    for path in files:
        spec, fail = ingest.process_file(path, config)
        if fail is not None:
            row = {c: None for c in META_COLUMNS}
            row.update({"file": path, "spec_id": fail.get("spec_id", ""), "quality": "", "error": fail["message"]})
            row.update({k: math.nan for k in F.LABEL_KEYS + F.LABEL_ERR_KEYS})
            rows.append(row)
        else:
            row = {
                "file": path, "spec_id": spec.spec_id, "plate": spec.plate, "mjd": spec.mjd, "fiber": spec.fiber,
                "z": spec.z, "snr_r": spec.snr_r, "class": spec.spec_class, "sdss_vdisp": spec.sdss_vdisp,
                "quality": quality_flags(spec), "error": "",
            }
            rows.append(row)
            pending.append((row, examples.to_example(spec).SerializeToString(deterministic=True)))
            if len(pending) >= batch_size:
                flush()
        if on_progress:
            on_progress(1)
    flush()
    return rows


def table_format(path: str) -> str:
    """``csv`` or ``parquet``, by the extension of ``path``.

    Raises
    ------
    ValueError
        For any other extension (check before predicting: the table is written last).
    """
    for fmt in ("csv", "parquet"):
        if path.endswith("." + fmt):
            return fmt
    raise ValueError(f"{path}: the output is a .csv or .parquet file")


def write_table(rows: list[dict], path: str) -> None:
    """CSV or Parquet by the file's extension (see :func:`table_format`)."""
    import pandas as pd

    fmt = table_format(path)
    columns = list(META_COLUMNS) + [c for k in F.LABEL_KEYS for c in (k, k + F.ERR_SUFFIX)] + ["quality", "error"]
    frame = pd.DataFrame(rows, columns=columns)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, float_format="%.6g")
