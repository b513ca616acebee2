"""Fixtures of the serving tests: real serialized Examples, the shipped model and a base
path of numbered versions for the local server.

Spectrum files become Examples in :func:`serialized_examples` only, the one place that
knows the reading and preparation API."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from make_test_data import real_spectrum_files

from stellarpop.schema import model_contract as contract
from stellarpop.serving import predict

SHIPPED = os.path.join(predict.REPO_MODELS, predict.DEFAULT_MODEL, "7")  # TF Serving layout: <base>/7/


def serialized_examples(paths: list[str], model_path: str = SHIPPED) -> list[bytes]:
    """Spectrum files -> serialized tf.Examples, prepared as the model's ``model_info`` says
    (the ``stellarpop predict`` path); files that cannot be prepared are left out."""
    with open(os.path.join(model_path, contract.MODEL_INFO_FILE)) as fh:
        preparation = predict.preparation_of(json.load(fh))
    return [s for _, s in (predict.prepare_file(str(p), preparation) for p in paths) if s is not None]


@pytest.fixture(scope="session")
def spectrum_files(tmp_path_factory) -> list[Path]:
    """Real SDSS spectrum files, at least 5 on any clone (see
    :func:`make_test_data.real_spectrum_files`)."""
    return real_spectrum_files(tmp_path_factory.mktemp("real-spectra"), at_least=5)


@pytest.fixture(scope="session")
def examples(spectrum_files) -> list[bytes]:
    """Serialized Examples of every real spectrum available (at least 5)."""
    found = serialized_examples([str(p) for p in spectrum_files])
    assert len(found) >= 5, "fewer than 5 real SDSS spectra could be prepared"
    return found


@pytest.fixture(scope="session")
def reference(examples) -> dict:
    """The shipped model's in-process outputs for ``examples`` (what serving must match)."""
    return predict.Predictor(SHIPPED).predict(examples)


def add_version(
    base: Path, version: int, source: str | Path = SHIPPED, warmup_examples: list[bytes] | None = None
) -> Path:
    """Copy a SavedModel in as ``<base>/<version>/`` the way a pusher should: into a temporary
    name first (where warmup records, if given, are written 2 Examples each), then one rename,
    so the server never sees half a version."""
    from stellarpop.pipeline.training import warmup

    target = base / str(version)
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    if warmup_examples:
        warmup.write_warmup(str(staging), warmup_examples, batch_size=2)
    os.rename(staging, target)
    return target


@pytest.fixture(name="add_version", scope="session")
def add_version_fixture():
    """:func:`add_version` (test modules take helpers as fixtures, not imports)."""
    return add_version


@pytest.fixture
def base_path(tmp_path) -> Path:
    """A model base path holding the shipped model as version 1."""
    base = tmp_path / "stellarpop"
    base.mkdir()
    add_version(base, 1)
    return base
