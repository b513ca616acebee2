"""The whole pipeline on tiny data under LocalDagRunner (every component, MLMD, the push),
prediction with the pushed model, the Kubeflow V2 compilation of the same DAG, and what
goes into the components' cache keys."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time

import pytest
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx
from typer.testing import CliRunner

from stellarpop.components import cache_key
from stellarpop.pipeline import configs, fingerprint, kubeflow_runner, local_runner
from stellarpop.pipeline import pipeline as pipeline_lib
from stellarpop.pipeline.cli import app

COMPONENTS = {
    "MockExampleGen",
    "ImportSchemaGen",
    "StatisticsGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "Evaluator",
    "Pusher",
}


def _tiny(root: str) -> configs.PipelineConfig:
    return configs.PipelineConfig(
        name="tiny",
        root=root,
        examples={"source": "simulate", "n": 80, "seed": 5, "mode": "sdss", "shard_size": 40},
        trainer={"model": "default", "epochs": 2, "batch_size": 16},
        # Loose bounds: two epochs on 64 spectra only have to beat these.
        thresholds={"log_age": 10.0, "mh": 10.0, "ebv": 10.0, "vd": 10000.0},
        workers=1,
    )


@pytest.fixture(scope="module")
def system_tmp(tmp_path_factory):
    """The temporary folder of the run in ``pushed``, a folder of the test's own."""
    return tmp_path_factory.mktemp("system-tmp")


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, system_tmp):
    root = str(tmp_path_factory.mktemp("pipeline"))
    saved, tempfile.tempdir = tempfile.tempdir, str(system_tmp)
    try:
        return local_runner.run(_tiny(root), beam_pipeline_args=["--runner=DirectRunner"])
    finally:
        tempfile.tempdir = saved


def test_a_run_leaves_nothing_in_the_temporary_folder(pushed, system_tmp):
    # TFX builds a 42 MB package of itself in a new temporary folder at each Beam component.
    assert os.listdir(system_tmp) == []


def test_every_component_ran_and_the_model_was_pushed(pushed):
    cfg = pushed
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(local_runner.metadata_path(cfg))
    )
    executions = store.get_executions()
    ran = {
        e.custom_properties["tfx_node_id"].string_value if "tfx_node_id" in e.custom_properties else ""
        for e in executions
    }
    types = {store.get_execution_types_by_id([e.type_id])[0].name.split(".")[-1] for e in executions}
    assert COMPONENTS <= ran | types, (ran, types)
    assert all(e.last_known_state in (e.COMPLETE, e.CACHED) for e in executions)
    blessings = store.get_artifacts_by_type("ModelBlessing")
    assert len(blessings) == 1 and blessings[0].custom_properties["blessed"].int_value == 1
    versions = [d for d in os.listdir(cfg.serving_dir) if d.isdigit()]
    assert len(versions) == 1
    assert os.path.exists(os.path.join(cfg.serving_dir, versions[0], "saved_model.pb"))
    pushed_models = store.get_artifacts_by_type("PushedModel")
    assert pushed_models[0].custom_properties["pushed"].int_value == 1


def test_predict_with_the_pushed_model(pushed, bundled, tmp_path):
    out = tmp_path / "results.csv"
    missing = str(tmp_path / "nope.fits")
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(bundled["NGC3522"]),
            str(bundled["NGC3073"]),
            missing,
            "--model",
            pushed.serving_dir,
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output  # the missing file is an error row
    import pandas as pd

    table = pd.read_csv(out)
    assert len(table) == 3
    ok = table[table["spec_id"] == "2488-54149-0001"].iloc[0]
    assert all(math.isfinite(ok[k]) and ok[k + "_err"] > 0 for k in ("log_age", "mh", "ebv", "vd"))
    star = table[table["spec_id"] == "0945-52652-0470"].iloc[0]
    assert star["quality"] == "class"  # the selection cut it fails (SDSS calls it a STAR)
    assert "nope.fits" in table["error"].fillna("").str.cat()


def test_serve_the_pushed_model_and_its_next_version(pushed, bundled, tmp_path):
    """The pipeline's push, served by `stellarpop serve`'s server: the client and a bare
    tensorflow_serving stub get the local values; a second push is served without a restart;
    the push carries warmup records, replayed before it was AVAILABLE."""
    import shutil

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from stellarpop.serving import predict as pred
    from stellarpop.serving.client import Client
    from stellarpop.serving.server import LocalServer

    base = tmp_path / "stellarpop"
    shutil.copytree(pushed.serving_dir, base)
    (version,) = [int(d) for d in os.listdir(base) if d.isdigit()]
    local = pred.Predictor(str(base))
    serialized = [pred.prepare_file(str(p), local.preparation)[1] for p in bundled.values()]
    want = local.predict(serialized)
    with LocalServer(str(base), port=0, rest_port=None, poll_s=0.2) as server:
        client = Client(server.target)
        assert client.wait_until_available(30) == version and server.store.warmup_replayed[version] >= 1
        got = client.predict(serialized)
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "stellarpop", "serving_default"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
        with grpc.insecure_channel(server.target) as channel:
            bare = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5)
            np.testing.assert_allclose(tf.make_ndarray(bare.outputs[key]).reshape(-1), want[key], rtol=1e-5)
        shutil.copytree(base / str(version), base / f".staging-{version + 1}")
        os.rename(base / f".staging-{version + 1}", base / str(version + 1))
        deadline = time.monotonic() + 60
        while client.model_version() != version + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.model_version() == version + 1
        client.predict(serialized)
        assert client.last_versions == [version + 1]


def test_kubeflow_v2_spec_compiles(tmp_path):
    out = str(tmp_path / "stellarpop_kfp.json")
    kubeflow_runner.compile_pipeline(
        _tiny(str(tmp_path)),
        "my-project",
        "europe-west4",
        str(tmp_path / "bucket"),
        "gcr.io/my-project/stellarpop:1",
        out,
    )
    spec = json.load(open(out))
    text = json.dumps(spec)
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {"MockExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= set(tasks)
    assert "DataflowRunner" in text and "my-project" in text and "gcr.io/my-project/stellarpop:1" in text
    assert all(tasks[t]["cachingOptions"] == {"enableCache": True} for t in ("MockExampleGen", "Transform", "Trainer"))
    # Transform's and Trainer's custom_config, and MockExampleGen's own execution property
    # (declared by its spec, so that it reaches Kubeflow: extra_flags would not).
    assert json.dumps(tasks["Transform"]).count(cache_key.CODE_FINGERPRINT) == 1
    assert json.dumps(tasks["Trainer"]).count(cache_key.CODE_FINGERPRINT) == 1
    assert cache_key.CODE_FINGERPRINT in json.dumps(tasks["MockExampleGen"])


def test_code_fingerprints_follow_the_imports(edit_source):
    modules = {
        "transform": pipeline_lib._module(configs.PREPROCESSING_FN),
        "trainer": pipeline_lib._module(configs.RUN_FN),
        "evaluator": "stellarpop.pipeline.evaluation.eval_config",
        "examples": "stellarpop.components.mock_example_gen.component",
    }

    def changed(module: str) -> set[str]:
        before = {k: fingerprint.code_fingerprint(m) for k, m in modules.items()}
        edit_source(module)
        return {k for k, m in modules.items() if fingerprint.code_fingerprint(m) != before[k]}

    assert changed("stellarpop.pipeline.training.models") == {"trainer"}
    assert changed("stellarpop.transforms.preprocessing") == {"transform", "trainer"}
    assert changed("stellarpop.components.templates") == {"examples"}  # the template library
    assert changed("stellarpop.schema.features") == set(modules)


def test_simulate_source_takes_the_priors_mode_and_sdss_fraction(tmp_path):
    cfg = dataclasses.replace(
        _tiny(str(tmp_path)), examples={**_tiny("").examples, "mode": "wide", "sdss_fraction": 0.25}
    )
    cfg.check_examples()
    gen = {n.id: n for n in pipeline_lib.create_pipeline(cfg, "schema.pbtxt").components}["MockExampleGen"]
    priors = json.loads(gen.exec_properties["sim_config"])["priors"]
    assert priors["mode"] == "wide" and priors["sdss_fraction"] == 0.25


def test_cache_keys_hold_code_files_and_schema(tmp_path):
    library = tmp_path / "library.npz"
    library.write_bytes(b"templates")
    cfg = dataclasses.replace(_tiny(str(tmp_path)), examples={**_tiny("").examples, "library": str(library)})
    nodes = {n.id: n for n in pipeline_lib.create_pipeline(cfg, "schema.pbtxt").components}
    assert pipeline_lib.create_pipeline(cfg, "schema.pbtxt").enable_cache
    assert not pipeline_lib.create_pipeline(dataclasses.replace(cfg, enable_cache=False), "schema.pbtxt").enable_cache
    assert cache_key.CODE_FINGERPRINT in json.loads(nodes["Transform"].exec_properties["custom_config"])
    trainer_config = json.loads(nodes["Trainer"].exec_properties["custom_config"])
    assert trainer_config[cache_key.CODE_FINGERPRINT] and trainer_config["resume_dir"] == pipeline_lib.resume_dir(cfg)
    # The project's components declare the property (so it reaches Kubeflow too).
    stamped = nodes["MockExampleGen"].exec_properties[cache_key.CODE_FINGERPRINT]
    library.write_bytes(b"other templates")
    again = {n.id: n for n in pipeline_lib.create_pipeline(cfg, "schema.pbtxt").components}
    assert again["MockExampleGen"].exec_properties[cache_key.CODE_FINGERPRINT] != stamped
    assert nodes["Evaluator"].executor_spec.extra_flags
    # ImportSchemaGen sees a path only: another schema, another path.
    truth, ppxf = (pipeline_lib.write_schema(str(tmp_path), s) for s in ("truth", "ppxf"))
    assert truth != ppxf and truth == pipeline_lib.write_schema(str(tmp_path), "truth")


def test_create_pipeline_writes_nothing(tmp_path):
    """Compiling (for Kubeflow too) must not write to the root: the schema is the runner's."""
    cfg = dataclasses.replace(_tiny(str(tmp_path / "root")), preparation={"norm_centre": 5200.0}).resolved()
    nodes = {n.id: n for n in pipeline_lib.create_pipeline(cfg, str(tmp_path / "schema.pbtxt")).components}
    assert not os.path.exists(cfg.root) and not os.listdir(tmp_path)
    # One preprocessing config reaches Transform, the Trainer and the example generator.
    transform = json.loads(nodes["Transform"].exec_properties["custom_config"])["preprocessing"]
    trained = json.loads(nodes["Trainer"].exec_properties["custom_config"])["preprocessing"]
    sim = json.loads(nodes["MockExampleGen"].exec_properties["sim_config"])
    assert transform == trained and transform["preparation"]["norm_centre"] == 5200.0
    assert transform["label_source"] == cfg.label_source and sim["preparation"] == transform["preparation"]


@pytest.mark.parametrize("enable_cache", [True, False])
def test_no_cache_also_forgets_the_trainers_epochs(tmp_path, monkeypatch, enable_cache):
    cfg = dataclasses.replace(_tiny(str(tmp_path)), enable_cache=enable_cache).resolved()
    state = os.path.join(pipeline_lib.resume_dir(cfg), "0123", "state.json")
    os.makedirs(os.path.dirname(state))
    open(state, "w").write("{}")
    ran = []
    monkeypatch.setattr(tfx.orchestration.LocalDagRunner, "run", lambda self, p: ran.append(p.enable_cache))
    local_runner.run(cfg, beam_pipeline_args=["--runner=DirectRunner"])
    assert ran == [enable_cache] and os.path.exists(state) == enable_cache
