"""Batch prediction for users: spectrum files -> one table row per spectrum.

Files are read by the reader registry and prepared by ``spectra.prepare`` with the settings
the model recorded (its ``preparation``: coverage, normalisation window, selection), the
one path every spectrum takes into the network. They become the same tf.Examples as in
training and are sent serialized, in batches, to the exported ``serving_default``
signature (in process, or over gRPC through ``serving.client``), which returns the four
parameters and their calibrated 1-sigma uncertainties in physical units, ``ood_score`` and
``ood_flag`` (``pipeline/training/calibration.py``; NaN and None from an export without them).
``quality`` lists the
selection cuts a spectrum fails (empty: inside the paper's sample, which the model was
judged on). Files that cannot be read or prepared get a row with an ``error`` and no
values; the batch goes on.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stellarpop.components import examples, readers, resolution
from stellarpop.components.spectra import SpectrumError, prepare
from stellarpop.schema import config_codec
from stellarpop.schema import features as F
from stellarpop.schema import model_contract as contract
from stellarpop.schema.preparation import Preparation

REPO_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
DEFAULT_MODEL = "default"
META_COLUMNS = (
    "file",
    "spec_id",
    "plate",
    "mjd",
    "fiber",
    "z",
    "snr_r",
    "class",
    "bpt_class",
    "sdss_vdisp",
    "coverage",
)


# Below its spectrum's resolution (components.resolution) vd is an upper limit, flagged.
VD_UNRESOLVED, VD_LIMIT = "vd_unresolved", "vd_limit"

# The columns of a prediction table, in order (also the streaming job's, which adds its own).
TABLE_COLUMNS = (
    list(META_COLUMNS)
    + [c for k in F.LABEL_KEYS for c in (k, k + F.ERR_SUFFIX)]
    + [F.OOD_SCORE, F.OOD_FLAG, VD_UNRESOLVED, VD_LIMIT, "quality", "error"]
)
FLOAT_OUTPUTS = F.LABEL_KEYS + F.LABEL_ERR_KEYS + (F.OOD_SCORE,)


def output_values(out: Mapping[str, np.ndarray], i: int, snr_r: float | None = None) -> dict:
    """Row ``i``'s values of a model's outputs: NaN (flag None) for what the model lacks (an
    export older than the out-of-domain score) or a failed batch. With the spectrum's
    ``snr_r``, a vd below its resolution limit becomes the upper limit, ``vd_unresolved``."""
    row = {k: float(out[k][i]) if k in out else math.nan for k in FLOAT_OUTPUTS}
    row[F.OOD_FLAG] = bool(out[F.OOD_FLAG][i]) if F.OOD_FLAG in out else None
    row[VD_UNRESOLVED], row[VD_LIMIT] = None, math.nan
    if snr_r is not None and F.VD in out:
        row[F.VD], row[VD_UNRESOLVED], row[VD_LIMIT] = resolution.mark(
            row[F.VD], row[F.VD + F.ERR_SUFFIX], float(snr_r)
        )
    return row


def model_dir(path: str | None = None) -> str:
    """A SavedModel folder: ``path`` itself, or the highest numbered version inside it (TF
    Serving layout, as the Pusher writes); default: the model shipped in serving/models."""
    return contract.export_dir(path or os.path.join(REPO_MODELS, DEFAULT_MODEL))


def preparation_of(info: dict) -> Preparation:
    """The preparation a model was trained with, from its ``model_info``. Models exported
    before it was recorded carry only their normalisation window; the rest is the default."""
    if "preparation" in info:
        return config_codec.from_dict(Preparation, info["preparation"], "model_info.preparation")
    window = info.get("normalisation_window", {})
    return Preparation(
        norm_centre=window.get("centre", F.NORM_CENTRE), norm_half_width=window.get("half_width", F.NORM_HALF_WIDTH)
    )


class Model(Protocol):
    """What prediction needs of a model, local or served: its preparation and ``predict``."""

    preparation: Preparation

    def predict(self, serialized: list[bytes]) -> dict[str, np.ndarray]: ...


@dataclass
class Predictor:
    """A loaded exported model; ``predict(serialized Examples)`` -> {output: ndarray}."""

    path: str
    info: dict = field(init=False)
    preparation: Preparation = field(init=False)

    def __post_init__(self):
        import tensorflow as tf

        self.path = model_dir(self.path)
        self._model = tf.saved_model.load(self.path)
        self._fn = self._model.signatures[contract.SERVING_SIGNATURE]
        with open(os.path.join(self.path, contract.MODEL_INFO_FILE)) as fh:
            self.info = json.load(fh)
        self.preparation = preparation_of(self.info)

    def predict(self, serialized: list[bytes]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        out = self._fn(examples=tf.constant(serialized))
        return {k: v.numpy().reshape(len(serialized), -1)[:, 0] for k, v in out.items()}


class ServedModel:
    """A model behind TF Serving (or ``stellarpop serve``): its preparation from the served
    ``metadata`` signature, ``predict`` over gRPC (:class:`~stellarpop.serving.client.Client`)."""

    def __init__(self, client, batch_size: int = 256):
        self.client, self.batch_size = client, batch_size
        self.info = client.model_info()
        self.preparation = preparation_of(self.info)

    def predict(self, serialized: list[bytes]) -> dict[str, np.ndarray]:
        return self.client.predict(serialized, self.batch_size)


def prepare_file(path: str, preparation: Preparation) -> tuple[dict, bytes | None]:
    """One file -> (its table row without values, the serialized Example or None on error)."""
    row: dict = {c: None for c in META_COLUMNS}
    row.update({"file": path, "spec_id": "", "quality": "", "error": ""})
    try:
        native = readers.read_spectrum(path)
        row["spec_id"] = native.spec_id  # kept when the spectrum cannot be prepared
        spec = prepare(native, preparation)
    except SpectrumError as exc:
        row["error"] = f"{path}: {exc}"
        return row, None
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop the batch
        row["error"] = f"{path}: {type(exc).__name__}: {exc}"
        return row, None
    row.update(
        {
            "spec_id": spec.spec_id,
            "plate": spec.plate,
            "mjd": spec.mjd,
            "fiber": spec.fiber,
            "z": spec.z,
            "snr_r": spec.snr_r,
            "class": spec.spec_class,
            "bpt_class": spec.bpt_class,
            "sdss_vdisp": spec.sdss_vdisp,
            "coverage": spec.coverage,
            "quality": ",".join(spec.selection),
        }
    )
    return row, examples.to_example(spec).SerializeToString(deterministic=True)


def predict_files(files: list[str], model: Model, batch_size: int = 256, on_progress=None) -> list[dict]:
    """One row per file: metadata, the four values and their ``_err``, ``ood_score`` and
    ``ood_flag`` (``pipeline/training/calibration.py``), ``quality``, ``error``."""
    rows: list[dict] = []
    pending: list[tuple[dict, bytes]] = []

    def flush():
        if pending:
            try:
                out = model.predict([s for _, s in pending])
            except Exception as exc:  # noqa: BLE001 - a failed batch (a server's deadline) becomes error rows
                out, failed = {}, " ".join(str(exc).split())
                for row, _ in pending:
                    row["error"] = f"{row['file']}: prediction failed: {failed}"
            for i, (row, _) in enumerate(pending):
                row.update(output_values(out, i, row["snr_r"]))
            pending.clear()

    for path in files:
        row, serialized = prepare_file(path, model.preparation)
        row.update(output_values({}, 0))
        rows.append(row)
        if serialized is not None:
            pending.append((row, serialized))
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
    frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, float_format="%.6g")
