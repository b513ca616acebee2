"""The TFX component: its executor on hand-made artefacts and the component under LocalDagRunner."""

from __future__ import annotations

from tfx.types import artifact_utils, standard_artifacts

from stellarpop.components.ppxf_labeler import component, job
from stellarpop.components.scratch import scratch_tempdir


def test_executor_labels_an_examples_artefact(mocks, tmp_path, n_mocks, fast_config):
    source = standard_artifacts.Examples()
    source.uri = mocks
    source.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
    labelled = standard_artifacts.Examples()
    labelled.uri = str(tmp_path / "labelled")
    ckpt = str(tmp_path / "ckpt")
    with scratch_tempdir():  # TFX builds a 42 MB package of itself there
        ex = component.Executor(
            component.base_beam_executor.BaseBeamExecutor.Context(
                beam_pipeline_args=["--runner=DirectRunner"], tmp_dir=str(tmp_path / "tmp")
            )
        )
        ex.Do(
            {component.EXAMPLES_KEY: [source]},
            {component.LABELLED_KEY: [labelled]},
            {component.LABEL_CONFIG_KEY: fast_config.to_json(), component.CHECKPOINT_DIR_KEY: ckpt},
        )
    assert artifact_utils.decode_split_names(labelled.split_names) == ["train", "eval", "test"]
    n = labelled.get_int_custom_property("num_examples")
    assert (
        n + labelled.get_int_custom_property("num_below_min_vd") + labelled.get_int_custom_property("num_failed_fits")
        == n_mocks
    )
    assert len(job.read_checkpoints(ckpt)) == n_mocks
