"""Fixtures of the ppxf_labeler tests (shared by test_component, test_job and test_run)."""

from __future__ import annotations

import glob
import os

import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from stellarpop.components import examples, ppxf_fit
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.ppxf_labeler import job, run
from stellarpop.schema import features as F

N = 24
FAST = job.LabelConfig(fit=ppxf_fit.FitConfig(gas_components=0))


@pytest.fixture(scope="session")
def mocks(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("mocks"))
    with BeamTestPipeline() as p:
        sim_job.run(p, sim_job.SimConfig(n=N, seed=7, shard_size=8), out)
    return out


@pytest.fixture(scope="session")
def reference(mocks, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("reference"))
    summary = run.run_standalone([mocks], out, FAST, ["--runner=DirectRunner"])
    return out, summary


def _labels(out: str) -> dict[str, str]:
    return {k: r.to_json() for k, r in job.read_checkpoints(os.path.join(out, job.CHECKPOINT_DIR)).items()}


def _records(examples_dir: str) -> dict[str, dict]:
    out = {}
    for path in glob.glob(os.path.join(examples_dir, "Split-*", "*.gz")):
        split = os.path.basename(os.path.dirname(path))
        for raw in tf.data.TFRecordDataset([path], compression_type="GZIP"):
            parsed = examples.parse(raw.numpy(), labels=True, truth=True)
            out[parsed[F.SPEC_ID]] = (split, raw.numpy())
    return out


@pytest.fixture(name="labels", scope="session")
def labels_fixture():
    """:func:`_labels` (test modules take helpers as fixtures, not imports)."""
    return _labels


@pytest.fixture(name="records", scope="session")
def records_fixture():
    """:func:`_records` (test modules take helpers as fixtures, not imports)."""
    return _records


@pytest.fixture(scope="session")
def n_mocks() -> int:
    """How many mocks ``mocks`` holds."""
    return N


@pytest.fixture(scope="session")
def fast_config() -> job.LabelConfig:
    """The labeller's settings of these tests: no gas components (fast fits)."""
    return FAST
