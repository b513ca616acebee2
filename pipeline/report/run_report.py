"""A static report of a pipeline run: what was trained, how well it does, whether it was
blessed and pushed (``write_report(run_root, out_dir)``).

The run root is the one ``local_runner.run`` fills (``metadata.sqlite``, ``artifacts/``).
From MLMD (opened read-only) the report takes the latest completed or cached Evaluator
execution and follows its events: its ``evaluation`` (TFMA output: per-slice metrics of the
candidate and of the baseline when there was one, the validation result) and ``blessing``;
its input ``model`` and ``examples``; the Trainer execution that wrote that model (its
``model_run``: ``history.json``); the Pusher execution that read that blessing (its
``pushed_model``). The exported model is run on the test split (at most ``max_examples``,
in batches) for the per-example figures; the per-slice numbers are the Evaluator's own.

Written to ``out_dir``: ``index.html`` (inline CSS; no script, font or URL: it opens from
the disk, offline) and its PNG figures beside it. Benchmark results of ``benchmarks/*.py``
(``real_sdss.json``, ``model_vs_truth.py --out``) found in ``<run_root>/benchmarks/`` or
passed by path are added as tables (:mod:`stellarpop.pipeline.report.tables`).
"""

from __future__ import annotations

import datetime
import glob
import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd_pb2
from tensorflow_model_analysis.writers import eval_config_writer
from tfx import v1 as tfx

from stellarpop.pipeline.evaluation import metrics
from stellarpop.pipeline.report import tables
from stellarpop.pipeline.report.records import Evaluation, RunArtifacts
from stellarpop.schema import features as F
from stellarpop.schema import model_contract as contract
from stellarpop.transforms import preprocessing as P

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.sqlite"
BENCHMARKS_DIR = "benchmarks"
SERVING_DIR = "Format-Serving"  # the Trainer's Model artefact holds the SavedModel here
MAX_EXAMPLES = 5000
PREDICT_BATCH = 256
DONE = (mlmd_pb2.Execution.COMPLETE, mlmd_pb2.Execution.CACHED)
# How the report names each feature the Evaluator slices by (features.SLICE_KEYS), and the
# stem of its figure's file; a slice key not here is named after itself.
SLICE_NAMES = {P.SNR_BIN_XF: ("S/N_r", "snr"), P.Z_BIN_XF: ("redshift", "z"), F.BPT_CLASS: ("BPT class", "bpt")}


class ReportError(ValueError):
    """A run root the report cannot be made of (no MLMD, no finished Evaluator)."""


def _local(uri: str, run_root: str) -> str:
    """An artefact URI as a path under ``run_root``: MLMD stores absolute URIs, which point to
    the old place when a run root has been copied or moved. The run root's own copy wins."""
    _, sep, rest = uri.rpartition("/artifacts/")
    moved = os.path.join(run_root, "artifacts", rest)
    return moved if sep and os.path.exists(moved) else uri


def open_store(run_root: str) -> metadata_store.MetadataStore:
    """The run's MLMD store, read-only (a report never writes to a run)."""
    path = os.path.join(run_root, METADATA_FILE)
    if not os.path.isfile(path):
        raise ReportError(f"{run_root}: no {METADATA_FILE} (not the root of a pipeline run)")
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(path)
    config.sqlite.connection_mode = mlmd_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _events(store, execution_id: int) -> tuple[dict, dict]:
    """({input key: artefact id}, {output key: artefact id}) of one execution.

    One event can name several keys: when a model is its own baseline (the first re-run
    after a push) its path is ``model, 0, baseline_model, 0``.
    """
    inputs, outputs = {}, {}
    for event in store.get_events_by_execution_ids([execution_id]):
        side = {mlmd_pb2.Event.INPUT: inputs, mlmd_pb2.Event.OUTPUT: outputs}.get(event.type)
        for step in event.path.steps if side is not None else ():
            if step.HasField("key"):
                side[step.key] = event.artifact_id
    return inputs, outputs


def _latest_executions(store) -> dict[str, mlmd_pb2.Execution]:
    """Component name (the execution type's last dotted part) -> its latest finished execution."""
    names = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
    latest = {}
    for e in store.get_executions():
        name = names.get(e.type_id, "?")
        if e.last_known_state in DONE and (name not in latest or e.id > latest[name].id):
            latest[name] = e
    return latest


def find_run(run_root: str) -> RunArtifacts:
    """The latest evaluated model of a run and everything the report shows about it.

    Raises
    ------
    ReportError
        No ``metadata.sqlite`` or no finished Evaluator execution in it.
    """
    store = open_store(run_root)
    latest = _latest_executions(store)
    if "Evaluator" not in latest:
        raise ReportError(f"{run_root}: no completed Evaluator execution in {METADATA_FILE}")
    inputs, outputs = _events(store, latest["Evaluator"].id)
    arts = {a.id: a for a in store.get_artifacts_by_id([*inputs.values(), *outputs.values()])}
    blessing = arts[outputs["blessing"]]
    blessed = "blessed" in blessing.custom_properties and blessing.custom_properties["blessed"].int_value == 1
    run = RunArtifacts(
        run_root=run_root,
        evaluation=_local(arts[outputs["evaluation"]].uri, run_root),
        blessing=_local(blessing.uri, run_root),
        blessed=blessed,
        model=_local(arts[inputs["model"]].uri, run_root),
        examples=_local(arts[inputs["examples"]].uri, run_root),
        baseline_model=_local(arts[inputs["baseline_model"]].uri, run_root) if "baseline_model" in inputs else "",
    )
    for event in store.get_events_by_artifact_ids([inputs["model"]]):
        if event.type == mlmd_pb2.Event.OUTPUT:  # the Trainer execution that wrote the model
            run_id = _events(store, event.execution_id)[1].get("model_run")
            run.model_run = _local(store.get_artifacts_by_id([run_id])[0].uri, run_root) if run_id else ""
    pusher = latest.get("Pusher")
    if pusher is not None and _events(store, pusher.id)[0].get("model_blessing") == blessing.id:
        pushed_id = _events(store, pusher.id)[1].get("pushed_model")
        props = store.get_artifacts_by_id([pushed_id])[0].custom_properties if pushed_id else {}
        run.pushed = {k: v.string_value or v.int_value for k, v in props.items() if k.startswith("pushed")}
    run.executions = [
        (name, e.id, mlmd_pb2.Execution.State.Name(e.last_known_state), _utc(e.create_time_since_epoch))
        for name, e in sorted(latest.items(), key=lambda item: item[1].id)
    ]
    return run


def _utc(milliseconds: int) -> str:
    return datetime.datetime.fromtimestamp(milliseconds / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# --- The evaluation --------------------------------------------------------------------------


def read_evaluation(evaluation: str) -> Evaluation:
    """Metrics, EvalConfig and validation result of a TFMA output folder."""
    config = eval_config_writer.load_eval_run(evaluation)[0]
    has_baseline = any(s.is_baseline for s in config.model_specs)
    return Evaluation(
        candidate=metrics.read_metrics(evaluation),
        baseline=metrics.read_metrics(evaluation, tfma.BASELINE_KEY) if has_baseline else {},
        config=config,
        validation=tfma.load_validation_result(evaluation),
    )


def threshold_checks(evaluation: Evaluation) -> list[dict]:
    """Every threshold of the EvalConfig with the value it was checked on and its outcome.

    Returns
    -------
    list of dict
        ``output``, ``metric`` (result name), ``kind`` ("value" or "change"), ``bound``
        (text), ``value`` (candidate's overall value, or candidate - baseline for a change
        threshold; NaN without baseline), ``passed`` (False where TFMA's validation result
        lists a failure for that metric key), ``message`` (TFMA's, for failures).
    """
    result_names = {cls: name for cls, _, name in metrics.METRIC_CLASSES.values()}
    failures = {}
    for per_slice in evaluation.validation.metric_validations_per_slice:
        for f in per_slice.failures:
            failures[(f.metric_key.name, f.metric_key.output_name, f.metric_key.is_diff)] = f.message
    cand, base, rows = evaluation.candidate.get((), {}), evaluation.baseline.get((), {}), []
    for spec in evaluation.config.metrics_specs:
        for config in spec.metrics:
            name = result_names.get(config.class_name, config.class_name)
            for per_slice in config.per_slice_thresholds:
                for output in spec.output_names:
                    rows += _checks(per_slice.threshold, output, name, cand, base, failures)
    return rows


def _checks(threshold, output: str, name: str, cand: dict, base: dict, failures: dict) -> list[dict]:
    key, rows = f"{output}/{name}", []
    if threshold.HasField("value_threshold"):
        bounds = threshold.value_threshold
        text = " and ".join(
            [f"<= {bounds.upper_bound.value:g}"] * bounds.HasField("upper_bound")
            + [f">= {bounds.lower_bound.value:g}"] * bounds.HasField("lower_bound")
        )
        message = failures.get((name, output, False))
        rows.append(
            dict(
                output=output,
                metric=name,
                kind="value",
                bound=text,
                value=cand.get(key, math.nan),
                passed=message is None,
                message=message or "",
            )
        )
    if threshold.HasField("change_threshold"):
        change = threshold.change_threshold
        sign = "<=" if change.direction == tfma.MetricDirection.LOWER_IS_BETTER else ">="
        bound = f"{sign} {'+' if sign == '<=' else '-'}{change.absolute.value:g} vs baseline"
        message = failures.get((name, output, True))
        rows.append(
            dict(
                output=output,
                metric=name,
                kind="change",
                bound=bound,
                value=cand.get(key, math.nan) - base.get(key, math.nan),
                passed=message is None,
                message=message or "",
            )
        )
    return rows


# --- Per-example predictions on the test split -----------------------------------------------
def predict_test_split(
    model_dir: str,
    examples: str,
    label_keys: dict[str, str],
    max_examples: int = MAX_EXAMPLES,
    batch_size: int = PREDICT_BATCH,
) -> dict[str, np.ndarray]:
    """The exported model's predictions on the first ``max_examples`` of the test split.

    Parameters
    ----------
    model_dir : SavedModel folder (``serving_default`` on serialized raw tf.Examples)
    examples : Examples artefact folder (``Split-test/*.gz``, gzipped TFRecords)
    label_keys : output -> label feature (``true_*`` for simulated truth, else pPXF's)
    max_examples, batch_size : int

    Returns
    -------
    dict
        Shape (N,) arrays: ``label/<key>``, ``pred/<key>``, ``err/<key>`` for each output
        (physical units), ``z``, ``snr_r``, ``bpt_class`` (str).
    """
    files = sorted(tf.io.gfile.glob(os.path.join(examples, f"Split-{F.TEST}", "*.gz")))
    if not files:
        raise ReportError(f"{examples}: no Split-test/*.gz")
    serve = tf.saved_model.load(model_dir).signatures[contract.SERVING_SIGNATURE]
    spec = {
        k: tf.io.FixedLenFeature([], tf.float32, default_value=math.nan) for k in (F.Z, F.SNR_R, *label_keys.values())
    }
    spec[F.BPT_CLASS] = tf.io.FixedLenFeature([], tf.string, default_value="")
    parts: dict[str, list] = {}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(max_examples).batch(batch_size)
    for batch in dataset:
        out, cols = serve(examples=batch), tf.io.parse_example(batch, spec)
        for key, label in label_keys.items():
            parts.setdefault(f"label/{key}", []).append(cols[label].numpy())
            parts.setdefault(f"pred/{key}", []).append(out[key].numpy())
            parts.setdefault(f"err/{key}", []).append(out[key + F.ERR_SUFFIX].numpy())
        for key in (F.Z, F.SNR_R):
            parts.setdefault(key, []).append(cols[key].numpy())
        parts.setdefault(F.BPT_CLASS, []).append(np.char.decode(cols[F.BPT_CLASS].numpy().astype(bytes), "utf-8"))
    return {
        k: np.concatenate(v).astype(np.float64) if k != F.BPT_CLASS else np.concatenate(v) for k, v in parts.items()
    }


def example_statistics(predictions: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per output: N, clipped mean and std of the residuals, 68% coverage and the mean and
    standard deviation of z = residual / error (0 and 1 when the errors are calibrated)."""
    out = {}
    for key in (k.split("/", 1)[1] for k in predictions if k.startswith("pred/")):
        r, e = predictions[f"pred/{key}"] - predictions[f"label/{key}"], predictions[f"err/{key}"]
        mean, std, _ = metrics.sigma_clipped_mean_std(r)
        ok = np.isfinite(r) & np.isfinite(e) & (e > 0)
        z = r[ok] / e[ok]
        out[key] = dict(
            n=int(np.isfinite(r).sum()),
            clipped_mean=mean,
            clipped_std=std,
            coverage68=float(np.mean(np.abs(z) <= 1)) if ok.any() else math.nan,
            z_mean=float(np.mean(z)) if ok.any() else math.nan,
            z_std=float(np.std(z)) if ok.any() else math.nan,
        )
    return out


# --- The report ------------------------------------------------------------------------------
def find_benchmarks(run_root: str, benchmarks: Sequence[str] = ()) -> list[str]:
    """``<run_root>/benchmarks/*.json`` and the paths given, each once, in that order."""
    found = sorted(glob.glob(os.path.join(run_root, BENCHMARKS_DIR, "*.json"))) + list(benchmarks)
    return list(dict.fromkeys(os.path.abspath(p) for p in found))


def _model_info(model: str) -> dict:
    path = os.path.join(model, SERVING_DIR, contract.MODEL_INFO_FILE)
    return _read_json(path) if os.path.exists(path) else {}


def _history(model_run: str) -> dict | None:
    path = os.path.join(model_run, "history.json") if model_run else ""
    return _read_json(path) if path and os.path.exists(path) else None


def write_report(
    run_root: str,
    out_dir: str,
    benchmarks: Sequence[str] = (),
    max_examples: int = MAX_EXAMPLES,
) -> str:
    """Write the static report of a pipeline run.

    Parameters
    ----------
    run_root : str
        A pipeline run's root (``metadata.sqlite``, ``artifacts/``; ``PipelineConfig.root``).
    out_dir : str
        Created if needed; ``index.html`` and the PNG figures are (over)written there.
    benchmarks : sequence of str
        Benchmark result JSON files to show besides ``<run_root>/benchmarks/*.json``.
    max_examples : int
        Test examples run through the exported model for the per-example figures.

    Returns
    -------
    str
        The path of ``index.html``.

    Raises
    ------
    ReportError
        The run has no MLMD store or no finished Evaluator execution.
    """
    run = find_run(run_root)
    evaluation = read_evaluation(run.evaluation)
    os.makedirs(out_dir, exist_ok=True)
    model_dir = os.path.join(run.model, SERVING_DIR)
    log.info("predicting up to %d test examples with %s", max_examples, model_dir)
    predictions = predict_test_split(model_dir, run.examples, evaluation.label_keys, max_examples)
    stats = example_statistics(predictions)
    sections = [
        tables.blessing_section(run, threshold_checks(evaluation), evaluation.validation),
        tables.model_section(run, _model_info(run.model), evaluation),
        tables.training_section(_history(run.model_run), out_dir),
        tables.accuracy_section(evaluation, predictions, out_dir),
        *(tables.slice_section(evaluation, key, *SLICE_NAMES.get(key, (key, key)), out_dir) for key in F.SLICE_KEYS),
        tables.uncertainty_section(predictions, stats, out_dir),
        tables.benchmark_section(find_benchmarks(run_root, benchmarks), run_root),
        tables.executions_section(run),
    ]
    page = tables.page(f"stellarpop run report: {os.path.basename(os.path.abspath(run_root))}", sections)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)
    log.info("wrote %s", path)
    return path


def _read_json(path: str):
    with open(path) as fh:
        return json.load(fh)
