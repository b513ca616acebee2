"""The exported model's contract with everything that reads it: the Trainer's export writes
it; the Evaluator, the report, ``stellarpop predict``, the gRPC client, the local server and
the streaming job read it. One owner for each name, so that a rename is one edit.

- Signatures: ``serving_default`` (serialized raw tf.Examples in, physical units out),
  ``transform_features`` (what TFMA runs before the model) and ``metadata`` (the export's
  self-description, as JSON in its ``model_info`` output).
- Files inside an export: ``assets.extra/model_info.json`` and TF Serving's warmup records.
- The TF Serving layout of a base path: numbered version folders holding ``saved_model.pb``,
  in numeric order (version 10 after 9), found by :func:`versions` for every reader.
"""

from __future__ import annotations

import glob as _glob
import os
import posixpath
from collections.abc import Callable, Iterable

SERVING_SIGNATURE = "serving_default"
TRANSFORM_SIGNATURE = "transform_features"
METADATA_SIGNATURE = "metadata"
METADATA_OUTPUT = "model_info"  # the metadata signature's one output: model_info.json's text
INPUT_KEY = "examples"  # the input of serving_default and transform_features: string (B,)
MODEL_NAME = "stellarpop"  # the model's name in TF Serving (models.config, requests)

SAVED_MODEL_FILE = "saved_model.pb"
MODEL_INFO_FILE = "assets.extra/model_info.json"  # relative to an export
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"  # where TF Serving looks for them
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit (servables/tensorflow/saved_model_warmup_util.cc)


def is_export(path: str) -> bool:
    """Whether the local folder ``path`` is one SavedModel (holds ``saved_model.pb``)."""
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def versions(base_path: str, glob: Callable[[str], Iterable[str]] = _glob.glob) -> dict[int, str]:
    """``{version: folder}`` of the complete versions under ``base_path``, in numeric order.

    A version is a folder named by a non-negative integer that holds ``saved_model.pb`` (TF
    Serving's rule; a folder still being copied in has none yet). ``glob`` lists
    ``<base>/*/saved_model.pb`` matches: the local default, or e.g. Beam's ``FileSystems``
    for ``gs://`` paths.
    """
    join = posixpath.join if "://" in base_path else os.path.join
    found = {}
    for match in glob(join(base_path, "*", SAVED_MODEL_FILE)):
        folder = posixpath.dirname(match) if "://" in match else os.path.dirname(match)
        name = posixpath.basename(folder) if "://" in folder else os.path.basename(folder)
        if name.isdigit():
            found[int(name)] = folder
    return dict(sorted(found.items()))


def export_dir(path: str) -> str:
    """``path`` itself if it is a SavedModel, else its newest numbered version.

    Raises
    ------
    FileNotFoundError
        Neither (one line naming ``path``).
    """
    if is_export(path):
        return path
    found = versions(path)
    if not found:
        raise FileNotFoundError(f"{path}: neither a SavedModel nor a folder of numbered versions of one")
    return found[max(found)]
