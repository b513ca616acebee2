"""Re-runs of the whole pipeline under LocalDagRunner: a run killed (SIGKILL) during the
Trainer reuses the finished components and resumes training; a changed configuration value
or module re-runs the components that depend on it, and only those."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from stellarpop.pipeline import configs, local_runner
from stellarpop.pipeline import pipeline as pipeline_lib

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

BEAM_ARGS = ["--runner=DirectRunner"]
DATA_NODES = {"MockExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator"}
MODEL_NODES = {"Trainer", "Evaluator", "Pusher"}
RUN_IN_SUBPROCESS = (
    "import json, sys\n"
    "from stellarpop.pipeline import configs, local_runner\n"
    f"local_runner.run(configs.PipelineConfig(**json.load(open(sys.argv[1]))), beam_pipeline_args={BEAM_ARGS!r})\n"
)


def _config(root: str, epochs: int) -> configs.PipelineConfig:
    return configs.PipelineConfig(
        name="tiny",
        root=root,
        examples={"source": "simulate", "n": 80, "seed": 5, "mode": "sdss", "shard_size": 40},
        trainer={"model": "default", "epochs": epochs, "batch_size": 16, "patience": epochs},
        thresholds={"log_age": 10.0, "mh": 10.0, "ebv": 10.0, "vd": 10000.0},  # blessed after any training
        workers=1,
    )


def _last_run_states(cfg: configs.PipelineConfig) -> dict[str, str]:
    """{node id: execution state name} of the newest pipeline run in MLMD."""
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(local_runner.metadata_path(cfg))
    )
    run = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    in_run = {e.id for e in store.get_executions_by_context(run.id)}
    states = {}
    for node in store.get_contexts_by_type("node"):
        for execution in store.get_executions_by_context(node.id):
            if execution.id in in_run:
                states[node.name.split(".", 1)[1]] = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
    return states


def _saved_epochs(cfg: configs.PipelineConfig) -> int:
    """Epochs in the Trainer's resume state (0 if none)."""
    for path in glob.glob(os.path.join(pipeline_lib.resume_dir(cfg), "*", "state.json")):
        try:
            return len(json.load(open(path))["history"].get("loss", []))
        except (ValueError, OSError):  # being renamed into place
            pass
    return 0


def _run_killed_during_training(cfg: configs.PipelineConfig, log_path: str) -> int:
    """Run the pipeline in a subprocess and SIGKILL its process group once the Trainer has
    saved an epoch; returns the epochs saved."""
    cfg_path = cfg.root + "-config.json"
    with open(cfg_path, "w") as fh:
        json.dump(cfg.__dict__, fh)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN_IN_SUBPROCESS, cfg_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + 900
    while _saved_epochs(cfg) < 1:
        assert proc.poll() is None and time.time() < deadline, open(log_path).read()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return _saved_epochs(cfg)


def test_a_run_killed_during_training_resumes(tmp_path):
    cfg = _config(str(tmp_path / "root"), epochs=6).resolved()
    saved = _run_killed_during_training(cfg, str(tmp_path / "killed.log"))
    assert 1 <= saved < 6
    assert _last_run_states(cfg)["Trainer"] == "RUNNING"  # as the kill left it

    local_runner.run(cfg, beam_pipeline_args=BEAM_ARGS)
    states = _last_run_states(cfg)
    assert {n: states[n] for n in DATA_NODES | {"Transform"}} == dict.fromkeys(DATA_NODES | {"Transform"}, "CACHED")
    assert {n: states[n] for n in MODEL_NODES} == dict.fromkeys(MODEL_NODES, "COMPLETE")
    (history_file,) = glob.glob(os.path.join(cfg.root, "artifacts", "Trainer", "model_run", "*", "history.json"))
    record = json.load(open(history_file))
    assert record["resumed_from_epoch"] == saved
    assert len(record["history"]["loss"]) == len(record["history"]["val_loss"]) == 6
    assert not glob.glob(os.path.join(pipeline_lib.resume_dir(cfg), "*", "state.json"))  # done: removed
    versions = [d for d in os.listdir(cfg.serving_dir) if d.isdigit()]
    assert len(versions) == 1 and os.path.exists(os.path.join(cfg.serving_dir, versions[0], "saved_model.pb"))


def test_a_change_re_runs_what_depends_on_it(tmp_path, edit_source):
    cfg = _config(str(tmp_path / "root"), epochs=2)
    local_runner.run(cfg, beam_pipeline_args=BEAM_ARGS)

    # The preprocessing module edited: Transform and, since the Trainer imports it too and
    # reads Transform's graph, everything after it re-runs.
    edit_source("stellarpop.transforms.preprocessing")
    local_runner.run(cfg, beam_pipeline_args=BEAM_ARGS)
    states = _last_run_states(cfg)
    assert {n: states[n] for n in DATA_NODES} == dict.fromkeys(DATA_NODES, "CACHED")
    assert {n: states[n] for n in MODEL_NODES | {"Transform"}} == dict.fromkeys(MODEL_NODES | {"Transform"}, "COMPLETE")

    # The module back as it was and one training setting changed: Transform's first result
    # is reused; the Trainer and what reads its model run.
    edit_source("stellarpop.transforms.preprocessing", "")
    cfg.trainer["batch_size"] = 8
    local_runner.run(cfg, beam_pipeline_args=BEAM_ARGS)
    states = _last_run_states(cfg)
    assert {n: states[n] for n in DATA_NODES | {"Transform"}} == dict.fromkeys(DATA_NODES | {"Transform"}, "CACHED")
    assert {n: states[n] for n in MODEL_NODES} == dict.fromkeys(MODEL_NODES, "COMPLETE")
