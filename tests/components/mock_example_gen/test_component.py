"""The TFX component: its executor on hand-made artefacts and the component under LocalDagRunner."""

from __future__ import annotations

import json

import pytest
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from stellarpop.components.mock_example_gen import component, job
from stellarpop.components.scratch import scratch_tempdir


@pytest.mark.e2e
def test_component_in_local_dag_runner(tmp_path, records):
    gen = component.MockExampleGen(job.SimConfig(n=6, seed=4, shard_size=3))
    db = str(tmp_path / "mlmd.sqlite")
    p = tfx_pipeline.Pipeline(
        pipeline_name="mock-test",
        pipeline_root=str(tmp_path / "root"),
        components=[gen],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=["--direct_num_workers=1"],
    )
    with scratch_tempdir():  # TFX builds a 42 MB package of itself there
        LocalDagRunner().run(p)
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(db)) as m:
        [art] = m.store.get_artifacts_by_type("Examples")
        assert art.custom_properties["num_examples"].int_value == 6
        assert art.custom_properties["seed"].int_value == 4
        assert json.loads(art.properties["split_names"].string_value) == ["train", "eval", "test"]
    assert len(records(art.uri)) == 6
