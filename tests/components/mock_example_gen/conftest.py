"""Fixtures of the mock_example_gen tests (shared by test_component, test_job and test_run)."""

from __future__ import annotations

import glob
import os

import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from stellarpop.components import examples, instrument, readers, templates
from stellarpop.components.mock_example_gen import job
from stellarpop.schema import features as F


@pytest.fixture(scope="session")
def inst_prep() -> tuple[instrument.Instrument, templates.Prepared]:
    inst = readers.instrument_from_files()
    return inst, templates.prepare(templates.load_library(), inst)


def _records(uri: str) -> dict[str, bytes]:
    out = {}
    for path in glob.glob(os.path.join(uri, "Split-*", "*.gz")):
        for raw in tf.data.TFRecordDataset([path], compression_type="GZIP"):
            raw = raw.numpy()
            out[examples.parse(raw)[F.SPEC_ID]] = raw
    return out


def _run(config: job.SimConfig, out: str) -> dict:
    with BeamTestPipeline() as p:
        job.run(p, config, out)
    return job.read_summary(out)


@pytest.fixture(name="records", scope="session")
def records_fixture():
    """:func:`_records` (test modules take helpers as fixtures, not imports)."""
    return _records


@pytest.fixture(name="run", scope="session")
def run_fixture():
    """:func:`_run` (test modules take helpers as fixtures, not imports)."""
    return _run
