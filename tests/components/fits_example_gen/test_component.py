"""FitsExampleGen: executor Do on hand-built artefacts, and the component in a pipeline."""

from __future__ import annotations

import glob
import json
import os
import shutil

import pytest
import tensorflow as tf
from astropy.io import fits
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.types import artifact_utils

from stellarpop.components import examples as ex_lib
from stellarpop.components.fits_example_gen import component, job, run
from stellarpop.components.scratch import scratch_tempdir
from stellarpop.schema import features as F


def _read_split(uri: str, split: str) -> list[dict]:
    files = glob.glob(os.path.join(uri, f"Split-{split}", "*.gz"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    return [ex_lib.parse(r) for r in records]


def _repeat_observations(folder, bundled, n=12):
    """n copies of NGC3522 with distinct fibers: n spectra of one object (same BESTOBJID)."""
    with fits.open(bundled["NGC3522"]) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul[:4]])
    for fiber in range(1, n + 1):
        hdul[2].data["FIBERID"] = fiber
        hdul.writeto(folder / f"obs{fiber}.fits", overwrite=True)


def test_executor_do_writes_splits_failures_and_properties(tmp_path, bundled, broken, dr7_file):
    folder, expected = broken
    data = tmp_path / "data"
    data.mkdir()
    _repeat_observations(data, bundled)
    for name in ("truncated.fits", "nan_flux.fits"):
        shutil.copy(folder / name, data / name)
    shutil.copy(dr7_file, data / dr7_file.name)
    summary = run.run_standalone(str(tmp_path / "out"), job.IngestConfig(), input_base=str(data))
    uri = str(tmp_path / "out" / "examples")
    splits = {s: _read_split(uri, s) for s in ("train", "eval", "test")}
    ids = sorted(p[F.SPEC_ID] for recs in splits.values() for p in recs)
    assert ids == sorted([f"2488-54149-{f:04d}" for f in range(1, 13)] + ["0266-51630-0012"])
    # Repeat observations of one object never straddle splits.
    with_ngc = [s for s, recs in splits.items() if any(p[F.SPEC_ID].startswith("2488") for p in recs)]
    assert len(with_ngc) == 1
    assert summary["examples"] == 13 and summary["errors"] == 2
    assert summary["failures"] == {"read": {"truncated": 1}, "validate": {"nonfinite_flux": 1}}


def test_executor_sets_custom_properties(tmp_path, bundled):
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    cfg = job.IngestConfig(inputs=tuple(str(p) for p in bundled.values()))
    props = {
        "input_base": "",
        "input_config": proto_utils.proto_to_json(component.default_input_config()),
        "output_config": proto_utils.proto_to_json(component.default_output_config()),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        component.INGEST_CONFIG_KEY: cfg.to_json(),
    }
    component.Executor().Do({}, {"examples": [examples]}, props)
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval", "test"]
    assert examples.get_int_custom_property("num_examples") == 1
    assert examples.get_int_custom_property("num_rejected") == 1  # NGC3073: CLASS STAR
    assert examples.get_int_custom_property("num_errors") == 0
    assert json.loads(examples.get_string_custom_property("failures_by_reason")) == {"select": {"class": 1}}


@pytest.mark.e2e
def test_component_in_local_dag_runner(tmp_path, bundled, dr7_file):
    """The component runs under TFX's driver and launcher, and MLMD records its output."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(bundled["NGC3522"], data)
    shutil.copy(dr7_file, data)
    gen = component.FitsExampleGen(input_base=str(data))
    db = str(tmp_path / "mlmd.sqlite")
    p = tfx_pipeline.Pipeline(
        pipeline_name="ingest-test",
        pipeline_root=str(tmp_path / "root"),
        components=[gen],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=["--direct_num_workers=1"],
    )
    with scratch_tempdir():  # TFX builds a 42 MB package of itself there
        LocalDagRunner().run(p)
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(db)) as m:
        arts = m.store.get_artifacts_by_type("Examples")
        assert len(arts) == 1
        art = arts[0]
        assert art.custom_properties["num_examples"].int_value == 2
        assert json.loads(art.properties["split_names"].string_value) == ["train", "eval", "test"]
        execs = m.store.get_executions()
        assert len(execs) == 1 and execs[0].last_known_state == execs[0].COMPLETE
    records = [r for s in ("train", "eval", "test") for r in _read_split(art.uri, s)]
    assert sorted(r[F.SPEC_ID] for r in records) == ["0266-51630-0012", "2488-54149-0001"]
    assert os.path.exists(os.path.join(art.uri, job.SUMMARY_FILE))
