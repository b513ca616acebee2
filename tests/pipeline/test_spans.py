"""Streaming by spans: FitsExampleGen reads one span, the config and runner checks, the DAG
(span window, analyzer cache, warm start) for the local and the Kubeflow runner with its
schedule, the resolver that picks what earlier spans left, the warm start itself, and one
end-to-end run of two spans under LocalDagRunner (slow)."""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from astropy.io import fits
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.compiler import compiler
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from stellarpop.components import spans
from stellarpop.components.fits_example_gen import component as fits_component
from stellarpop.components.fits_example_gen import job as ingest_job
from stellarpop.pipeline import configs, kubeflow_runner, local_runner
from stellarpop.pipeline import pipeline as pipeline_lib
from stellarpop.pipeline.training import export, models, trainer
from stellarpop.schema import model_contract as contract

PATTERN = "span-{SPAN}/*"


def _span_config(root, input_base, spans: int = 2, **kw) -> configs.PipelineConfig:
    return configs.PipelineConfig(
        name="spans",
        root=str(root),
        spans=spans,
        examples={"source": "ingest", "input_base": str(input_base), "pattern": PATTERN},
        **kw,
    )


def _observations(folder, source, fibers) -> None:
    """Copies of a real SDSS file with other fibre numbers (distinct spectra) in ``folder``."""
    folder.mkdir(parents=True)
    with fits.open(source) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul[:4]])
    for fiber in fibers:
        hdul[2].data["FIBERID"] = fiber
        hdul.writeto(folder / f"spec-{fiber}.fits", overwrite=True)


@pytest.fixture
def span_folders(tmp_path, bundled):
    """input_base/span-1 (2 spectra) and span-2 (3 spectra)."""
    base = tmp_path / "nightly"
    _observations(base / "span-1", bundled["NGC3522"], (1, 2))
    _observations(base / "span-2", bundled["NGC3522"], (3, 4, 5))
    return base


# --- configuration ------------------------------------------------------------------------------


def test_config_checks_spans_and_schedule(tmp_path):
    ok = _span_config(tmp_path, tmp_path, schedule="0 2 * * *")
    ok.check_spans()
    dataclasses.replace(ok, schedule="TZ=Europe/Madrid 0 2 * * *").check_spans()
    dataclasses.replace(ok, examples={**ok.examples, "pattern": "{YYYY}-{MM}-{DD}/*"}).check_spans()
    configs.PipelineConfig().check_spans()  # no spans: today's pipeline
    bad = {
        "source ingest": dataclasses.replace(ok, examples={"source": "simulate", "n": 10}),
        "{SPAN}": dataclasses.replace(ok, examples={**ok.examples, "pattern": "*"}),
        "five-field cron": dataclasses.replace(ok, schedule="every night"),
        "window": dataclasses.replace(ok, spans=-1),
    }
    for message, cfg in bad.items():
        with pytest.raises(ValueError, match=message):
            cfg.check_spans()
    path = tmp_path / "c.yaml"
    path.write_text("spans: two\n")
    with pytest.raises(ValueError, match="spans is 'two'"):
        configs.PipelineConfig.from_yaml(str(path))


def test_the_runner_resolves_the_span_as_the_driver_does(tmp_path, span_folders):
    cfg = _span_config(tmp_path / "root", span_folders)
    assert local_runner.resolve_span(cfg) == 2  # the latest
    assert local_runner.resolve_span(cfg, 1) == 1
    with pytest.raises(ValueError, match="span 7"):
        local_runner.resolve_span(cfg, 7)
    with pytest.raises(ValueError, match="--span needs `spans`"):
        local_runner.run(configs.PipelineConfig(root=str(tmp_path / "r")), span=1)
    assert spans.parse_span("12") == 12 and spans.parse_span("1970-01-11") == 10
    with pytest.raises(ValueError, match="neither a number nor a date"):
        spans.parse_span("yesterday")


# --- FitsExampleGen -----------------------------------------------------------------------------


def _do(tmp_path, input_base, range_config=None) -> standard_artifacts.Examples:
    """The executor without the driver (as a test or a standalone run calls it)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / f"examples-{range_config is not None}")
    props = {
        "input_base": str(input_base),
        "input_config": proto_utils.proto_to_json(fits_component.default_input_config(PATTERN)),
        "output_config": proto_utils.proto_to_json(fits_component.default_output_config()),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        "range_config": range_config and proto_utils.proto_to_json(range_config),
        fits_component.INGEST_CONFIG_KEY: ingest_job.IngestConfig().to_json(),
    }
    fits_component.Executor().Do({}, {"examples": [examples]}, props)
    return examples


def test_fits_example_gen_reads_the_latest_span_or_the_one_named(tmp_path, span_folders):
    latest = _do(tmp_path, span_folders)
    assert latest.span == 2 and latest.get_int_custom_property("span") == 2
    assert latest.get_int_custom_property("num_examples") == 3
    read = ingest_job.read_ids(os.path.join(latest.uri, ingest_job.IDS_DIR, "*"))
    assert sorted(os.path.basename(f) for f in read.values()) == ["spec-3.fits", "spec-4.fits", "spec-5.fits"]
    first = _do(tmp_path, span_folders, spans.static_span(1))
    assert first.span == 1 and first.get_int_custom_property("num_examples") == 2
    assert artifact_utils.decode_split_names(first.split_names) == ["train", "eval", "test"]


def test_the_component_passes_range_config_through(tmp_path):
    gen = fits_component.FitsExampleGen(
        input_base=str(tmp_path),
        input_config=fits_component.default_input_config(PATTERN),
        range_config=spans.static_span(4),
    )
    stored = tfx.proto.RangeConfig()
    proto_utils.json_to_proto(gen.exec_properties["range_config"], stored)
    assert stored.static_range.start_span_number == stored.static_range.end_span_number == 4


# --- the DAG ------------------------------------------------------------------------------------


def _ir_nodes(cfg, span):
    ir = compiler.Compiler().compile(pipeline_lib.create_pipeline(cfg.resolved(), "schema.pbtxt", span=span))
    return {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}


def test_a_span_run_reads_a_window_the_cache_and_the_blessed_model(tmp_path):
    cfg = dataclasses.replace(_span_config(tmp_path / "root", tmp_path / "in", spans=3), label_source="ppxf")
    nodes = _ir_nodes(cfg, span=7)
    gen = tfx.proto.RangeConfig()
    proto_utils.json_to_proto(
        nodes["FitsExampleGen"].parameters.parameters["range_config"].field_value.string_value, gen
    )
    assert gen == spans.static_span(7)
    # Transform, Trainer and Evaluator read spans 5..7 of the labeller's output from MLMD.
    for name in ("Transform", "Trainer", "Evaluator"):
        graph = nodes[name].inputs.input_graphs[nodes[name].inputs.inputs["examples"].input_graph_ref.graph_id]
        text = str(graph)
        assert "StaticSpanRange" in text and "PpxfLabeler" in str(nodes[name].inputs), name
        assert [
            v.value.field_value.int_value
            for n in graph.nodes.values()
            if n.op_node.op_type.endswith("StaticSpanRange")
            for k, v in sorted(n.op_node.kwargs.items())
            if k in ("end_span", "start_span")
        ] == [7, 5]
        assert "PpxfLabeler" in nodes[name].upstream_nodes
    assert "analyzer_cache" in nodes["Transform"].inputs.inputs
    assert "base_model" in nodes["Trainer"].inputs.inputs
    assert "LatestBlessedModel" in nodes["Trainer"].upstream_nodes
    assert "LatestBlessedModel" in nodes["Evaluator"].upstream_nodes
    # Without spans, today's DAG: no window, no cache, no warm start.
    plain = _ir_nodes(configs.PipelineConfig(root=str(tmp_path / "plain")), span=None)
    assert "base_model" not in plain["Trainer"].inputs.inputs and "LatestAnalyzerCache" not in plain
    assert "analyzer_cache" not in plain["Transform"].inputs.inputs


def test_kubeflow_spec_and_schedule(tmp_path):
    cfg = _span_config(tmp_path, "gs://data/nightly", schedule="0 2 * * *")
    out = str(tmp_path / "stellarpop_kfp.json")
    kubeflow_runner.compile_pipeline(cfg, "my-project", "europe-west4", str(tmp_path / "bucket"), "gcr.io/p/sp:1", out)
    spec = json.load(open(out))
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {"FitsExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= set(tasks)
    assert "base_model" in tasks["Trainer"]["inputs"]["artifacts"]  # warm start from the latest blessed model
    assert "span-{SPAN}/*" in json.dumps(tasks["FitsExampleGen"])  # the driver resolves the latest span
    schedule = json.load(open(kubeflow_runner.schedule_path(out)))
    assert schedule["cron"] == "0 2 * * *" and schedule["maxConcurrentRunCount"] == 1
    assert schedule["createPipelineJobRequest"]["parent"] == "projects/my-project/locations/europe-west4"
    assert schedule["createPipelineJobRequest"]["pipelineJob"] == spec
    no_schedule = str(tmp_path / "once.json")
    kubeflow_runner.compile_pipeline(
        dataclasses.replace(cfg, schedule=""), "p", "r", str(tmp_path / "b"), "i", no_schedule
    )
    assert not os.path.exists(kubeflow_runner.schedule_path(no_schedule))


# --- what earlier spans left: LatestBeforeSpanStrategy on a hand-built MLMD ----------------------


class _Store:
    """An in-memory MLMD with executions that read Examples of given spans."""

    def __init__(self):
        config = metadata_store_pb2.ConnectionConfig()
        config.fake_database.SetInParent()
        self.store = metadata_store.MetadataStore(config)

    def artifact(self, cls, **custom):
        artifact = cls()
        artifact.type_id = self.store.put_artifact_type(cls._get_artifact_type())
        for key, value in custom.items():
            artifact.set_int_custom_property(key, value)
        [artifact.id] = self.store.put_artifacts([artifact.mlmd_artifact])
        return artifact

    def execution(self, inputs, outputs) -> None:
        type_id = self.store.put_execution_type(metadata_store_pb2.ExecutionType(name="Component"))
        pairs = []
        for kind, key, artifacts in (
            (metadata_store_pb2.Event.INPUT, "examples", inputs),
            (metadata_store_pb2.Event.OUTPUT, "out", outputs),
        ):
            for i, artifact in enumerate(artifacts):
                event = metadata_store_pb2.Event(type=kind)
                event.path.steps.add().key = key
                event.path.steps.add().index = i
                pairs.append((artifact.mlmd_artifact, event))
        self.store.put_execution(metadata_store_pb2.Execution(type_id=type_id), pairs, [])

    def model(self, spans, blessed: bool):
        model = self.artifact(standard_artifacts.Model)
        self.execution([self.examples[s] for s in spans], [model])
        blessing = self.artifact(standard_artifacts.ModelBlessing, blessed=int(blessed), current_model_id=model.id)
        return model, blessing


def test_the_resolver_picks_what_earlier_spans_left():
    db = _Store()
    db.examples = {s: db.artifact(standard_artifacts.Examples, span=s) for s in (1, 2, 3)}
    m1, b1 = db.model([1], blessed=True)
    m12, b12 = db.model([1, 2], blessed=True)
    m23, b23 = db.model([2, 3], blessed=True)  # span 3's own model, blessed
    later_unblessed, b_no = db.model([1, 2], blessed=False)
    caches = [db.artifact(standard_artifacts.TransformCache) for _ in range(2)]
    db.execution([db.examples[1]], [caches[0]])
    db.execution([db.examples[1], db.examples[2]], [caches[1]])
    models = {"model": [m1, m12, m23, later_unblessed], "model_blessing": [b1, b12, b23, b_no]}

    def blessed(span):
        out = spans.LatestBeforeSpanStrategy(span=span, blessed=True).resolve_artifacts(db.store, models)
        return [a.id for a in out["model"]], [a.id for a in out["model_blessing"]]

    # A run of span 3 (the first or a re-run) starts from the model of span 2's run, never its own.
    assert blessed(3) == ([m12.id], [b12.id]) and blessed(2) == ([m1.id], [b1.id]) and blessed(1) == ([], [])
    latest = tfx.dsl.experimental.LatestBlessedModelStrategy().resolve_artifacts(db.store, dict(models))
    assert latest["model"][0].id == m23.id  # what TFX's strategy would give a re-run of span 3
    for span, want in ((3, [caches[1].id]), (2, [caches[0].id]), (1, [])):
        out = spans.LatestBeforeSpanStrategy(span=span).resolve_artifacts(db.store, {"cache": caches})
        assert [a.id for a in out["cache"]] == want


# --- warm start ---------------------------------------------------------------------------------


def _fake_export(model: keras.Model, folder: str, architecture: str = "default") -> str:
    """The layout export.export_model gives the weights (a tf.Module's model_weights) and
    model_info.json, without a transform graph."""
    module = tf.Module()
    setattr(module, export.WEIGHTS_ATTR, list(model.weights))
    tf.saved_model.save(module, folder)
    os.makedirs(os.path.join(folder, "assets.extra"))
    with open(os.path.join(folder, contract.MODEL_INFO_FILE), "w") as fh:
        json.dump({"architecture": architecture, "hparams": {}}, fh)
    return folder


def test_warm_start_restores_the_exported_weights(tmp_path):
    keras.utils.set_random_seed(1)
    first = models.build("default")
    base = _fake_export(first, str(tmp_path / "base"))
    assert export.weights_digest(export.exported_weights(base)) == export.weights_digest(
        [w.numpy() for w in first.weights]
    )
    keras.utils.set_random_seed(2)
    fresh = models.build("default")
    before = [w.numpy() for w in fresh.weights]
    assert trainer.warm_start(fresh, trainer.TrainConfig(hparams={"width": 8}), base)[0] is None  # other hparams
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, fresh.weights))
    assert trainer.warm_start(fresh, trainer.TrainConfig(), base) == (base, None)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first.weights, fresh.weights))
    small = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2)])
    other = _fake_export(small, str(tmp_path / "other"))  # says "default", is not
    used, reason = trainer.warm_start(models.build("default"), trainer.TrainConfig(), other)
    assert used is None and "do not fit" in reason
    assert trainer.warm_start(fresh, trainer.TrainConfig(), None) == (None, None)


# --- two spans end to end -----------------------------------------------------------------------


def _simulated_span(folder, n: int, seed: int) -> None:
    """``n`` simulated SDSS spec-lite files (the simulator's FITS output) in ``folder``."""
    from stellarpop.components.mock_example_gen import job as sim_job

    out = str(folder.parent / f"sim-{seed}")
    shard = sim_job.SimulateShard(sim_job.SimConfig(n=n, seed=seed, shard_size=n, write_fits=True), out)
    shard.setup()
    list(shard.process(0))
    folder.mkdir()
    for path in glob.glob(os.path.join(out, sim_job.FITS_DIR, "*", "*.fits")):  # a flat nightly drop
        os.rename(path, folder / os.path.basename(path))


def _mlmd(cfg):
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(local_runner.metadata_path(cfg))
    return metadata_store.MetadataStore(config)


def _node_executions(store, component: str) -> list:
    """The executions of the component class named ``component``, oldest first."""
    types = {t.id: t.name.rpartition(".")[2] for t in store.get_execution_types()}
    return sorted((e for e in store.get_executions() if types[e.type_id] == component), key=lambda e: e.id)


def _inputs(store, execution, key: str) -> list:
    ids = [
        e.artifact_id
        for e in store.get_events_by_execution_ids([execution.id])
        if e.type == e.INPUT and e.path.steps[0].key == key
    ]
    return store.get_artifacts_by_id(ids)


def _output(store, execution, key: str):
    [artifact_id] = [
        e.artifact_id
        for e in store.get_events_by_execution_ids([execution.id])
        if e.type == e.OUTPUT and e.path.steps[0].key == key
    ]
    return store.get_artifacts_by_id([artifact_id])[0]


@pytest.mark.slow
@pytest.mark.e2e
def test_two_spans_window_cache_warm_start_and_baseline(tmp_path, monkeypatch):
    """Span 1, then span 2 (the latest), then span 2 again, under LocalDagRunner.

    Real ingestion: the simulator's SDSS spec-lite files in span-1/ and span-2/, read by
    FitsExampleGen and labelled by pPXF (no gas, for speed), as a nightly feed would be;
    simulated Examples with truth (MockExampleGen) have no spans to resolve."""
    import tensorflow_transform.beam.analysis_graph_builder as graph_builder

    base = tmp_path / "nightly"
    base.mkdir()
    _simulated_span(base / "span-1", 32, seed=41)
    _simulated_span(base / "span-2", 32, seed=42)
    analysed = []  # the datasets each Transform analysed (not taken from the cache)
    real = graph_builder.get_analysis_dataset_keys

    def recording(preprocessing_fn, specs, dataset_keys, input_cache, *args, **kwargs):
        keys = real(preprocessing_fn, specs, dataset_keys, input_cache, *args, **kwargs)
        analysed.append(sorted(str(k.key) for k in keys))
        return keys

    monkeypatch.setattr(graph_builder, "get_analysis_dataset_keys", recording)
    cfg = _span_config(
        tmp_path / "run",
        base,
        spans=2,
        label_source="ppxf",
        label={"fit": {"gas_components": 0}},
        trainer={"model": "default", "epochs": 2, "batch_size": 16},
        thresholds={"log_age": 10.0, "mh": 10.0, "ebv": 10.0, "vd": 10000.0},
        workers=1,
    )
    beam = ["--runner=DirectRunner"]
    cfg = local_runner.run(cfg, span=1, beam_pipeline_args=beam)
    local_runner.run(cfg, beam_pipeline_args=beam)  # the latest: span 2
    store = _mlmd(cfg)

    def span(a):
        return a.custom_properties["span"].int_value

    first, second = _node_executions(store, "Trainer")
    assert sorted(span(a) for a in _inputs(store, first, "examples")) == [1]
    assert sorted(span(a) for a in _inputs(store, second, "examples")) == [1, 2]  # the rolling window
    labelled = {span(a): a for a in store.get_artifacts_by_type("Examples") if "PpxfLabeler" in a.uri}
    assert {a.id for a in _inputs(store, second, "examples")} == {labelled[1].id, labelled[2].id}

    # The labeller fitted span 2's spectra only (its checkpoints keep span 1's fits).
    ingested = {
        span(a): a.custom_properties["num_examples"].int_value
        for a in store.get_artifacts_by_type("Examples")
        if "FitsExampleGen" in a.uri
    }
    summary = json.load(open(os.path.join(labelled[2].uri, "label_summary.json")))
    assert summary["fitted_before"] == ingested[1] and summary["fitted"] - summary["fitted_before"] == ingested[2]

    # Transform read the first one's analyzer cache and analysed span 2 alone.
    t1, t2 = _node_executions(store, "Transform")
    assert [a.id for a in _inputs(store, t2, "analyzer_cache")] == [_output(store, t1, "updated_analyzer_cache").id]
    assert sorted(span(a) for a in _inputs(store, t2, "examples")) == [1, 2]
    span2_train = f"labelled_examples-{os.path.basename(labelled[2].uri)}-Split-train"
    assert len(analysed) == 2 and len(analysed[1]) == 1 and span2_train in analysed[1][0], analysed

    # Warm start: the second model started from the first model's exported weights.
    model1 = _output(store, first, "model")
    assert [a.id for a in _inputs(store, second, "base_model")] == [model1.id]
    serving1 = os.path.join(model1.uri, "Format-Serving")
    info2 = export.read_model_info(os.path.join(_output(store, second, "model").uri, "Format-Serving"))
    assert info2["warm_start_from"] == serving1
    assert info2["training"]["initial_weights_sha256"] == export.weights_digest(export.exported_weights(serving1))
    assert export.read_model_info(serving1)["warm_start_from"] is None

    # Blessed against the first model, and pushed.
    e1, e2 = _node_executions(store, "Evaluator")
    assert [a.id for a in _inputs(store, e2, "baseline_model")] == [model1.id]
    blessing = _output(store, e2, "blessing")
    assert blessing.custom_properties["blessed"].int_value == 1
    assert blessing.custom_properties["baseline_model_id"].int_value == model1.id
    assert len([d for d in os.listdir(cfg.serving_dir) if d.isdigit()]) == 2

    # Span 2 again: every component reused (TFX's cache), no new model.
    n_models, done = len(store.get_artifacts_by_type("Model")), {e.id for e in store.get_executions()}
    local_runner.run(cfg, span=2, beam_pipeline_args=beam)
    store = _mlmd(cfg)
    again = [e for e in store.get_executions() if e.id not in done]
    states = {
        store.get_execution_types_by_id([e.type_id])[0].name.rpartition(".")[2]: e.last_known_state for e in again
    }
    assert states.pop("Resolver") == metadata_store_pb2.Execution.COMPLETE  # resolvers always run
    assert len(states) == 9 and set(states.values()) == {metadata_store_pb2.Execution.CACHED}, states
    assert len(store.get_artifacts_by_type("Model")) == n_models
