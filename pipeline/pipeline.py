"""create_pipeline(): the stellarpop DAG. Runners inject paths, metadata, Beam args, the span.

    examples (MockExampleGen | FitsExampleGen | Importer) [-> PpxfLabeler]
      -> StatisticsGen -> ExampleValidator (against the schema of components/examples.py)
      -> Transform (flux normalisation, min-max label scaling, S/N and z buckets; in graph)
      -> Trainer (run_fn: the Keras CNN; exports raw-Example signatures in physical units)
      -> Evaluator (TFMA, sliced by S/N, z, BPT class; blessing vs thresholds and the latest
         blessed model) -> Pusher (TF Serving layout: serving_dir/<version>/)

Spans (``cfg.spans`` > 0, :func:`create_pipeline`'s ``span``): each run ingests (and labels)
one span; Transform, the Trainer and the Evaluator read the last ``cfg.spans`` spans from
MLMD (TFX's ``static_range`` resolver function). What the runs of earlier spans left
(``spans.LatestBeforeSpanStrategy``) starts the next: Transform reuses their analyzer cache,
the Trainer starts from their latest blessed model, which is the Evaluator's baseline.

Caching (``cfg.enable_cache``): every node is stamped with fingerprints of the code and
files it runs (:mod:`stellarpop.pipeline.fingerprint`), so a changed module re-runs the
components that import it, and their descendants, only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from stellarpop.components import cache_key, ppxf_fit, spans
from stellarpop.components import examples as examples_lib
from stellarpop.components.fits_example_gen.component import FitsExampleGen, default_input_config
from stellarpop.components.fits_example_gen.job import IngestConfig
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen.component import MockExampleGen
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler.component import PpxfLabeler
from stellarpop.components.spans import latest_analyzer_cache, latest_blessed_model, span_window
from stellarpop.pipeline import configs, fingerprint
from stellarpop.pipeline.evaluation import eval_config
from stellarpop.pipeline.training import resume
from stellarpop.schema import features as F
from stellarpop.transforms import preprocessing as P

SCHEMA_FILE = "schema.pbtxt"
RESUME_DIR = "trainer_checkpoints"  # under the root: Trainer state of killed executions


def write_schema(folder: str, label_source: str) -> str:
    """The raw-data schema, from the one feature spec (labels or truth as the config says).

    Written to ``schema/<hash of its content>/``: ImportSchemaGen's cache key holds the
    path, not the content, so another schema must have another path.
    """
    spec = examples_lib.feature_spec(labels=label_source == "ppxf", truth=label_source == "truth")
    spec.pop(F.SIM_TRUTH, None)  # analysis only; optional in the data
    schema = schema_utils.schema_from_feature_spec(spec)
    digest = hashlib.sha256(schema.SerializeToString(deterministic=True)).hexdigest()[:16]
    path = os.path.join(folder, "schema", digest, SCHEMA_FILE)
    if not tf.io.gfile.exists(path):
        tf.io.gfile.makedirs(os.path.dirname(path))
        io_utils.write_pbtxt_file(path, schema)
    return path


def _examples_node(cfg: configs.PipelineConfig, span: int | None = None):
    """The example generator; with spans, FitsExampleGen reads span ``span`` (None: the
    latest, resolved by its driver when the run starts)."""
    ex = dict(cfg.examples)
    source = ex.pop("source", "simulate")
    preparation = cfg.preprocessing().preparation
    if source == "simulate":
        gen = MockExampleGen(sim_job.SimConfig(priors=configs.priors(ex), preparation=preparation, **ex))
        return fingerprint.stamp(
            gen, fingerprint.code_fingerprint(MockExampleGen.__module__), fingerprint.files_fingerprint(ex)
        )
    if source == "ingest":  # the input files: FileBasedExampleGen's driver fingerprints them
        pattern = ex.pop("pattern", "*")
        gen = FitsExampleGen(
            ingest_config=IngestConfig(preparation=preparation),
            input_config=default_input_config(pattern),
            range_config=spans.static_span(span) if cfg.spans and span is not None else None,
            **ex,
        )
        return fingerprint.stamp(gen, fingerprint.code_fingerprint(FitsExampleGen.__module__))
    if source == "import":
        # A new artefact (and new downstream results) when the folder's files change.
        uri = os.path.abspath(ex["uri"])
        return tfx.dsl.Importer(
            source_uri=uri,
            artifact_type=standard_artifacts.Examples,
            properties={"split_names": json.dumps(list(F.SPLIT_NAMES), separators=(",", ":"))},
            custom_properties={
                "file_format": "tfrecords_gzip",
                "payload_format": "FORMAT_TF_EXAMPLE",
                "content_fingerprint": fingerprint.folder_fingerprint(uri),
            },
        ).with_id("ImportExamples")
    raise ValueError(f"examples.source is simulate, ingest or import, not {source!r}")


def _module(dotted_function: str) -> str:
    return dotted_function.rpartition(".")[0]


def resume_dir(cfg: configs.PipelineConfig) -> str:
    """Where a killed Trainer execution leaves its epochs for the next (``trainer.run_fn``)."""
    return os.path.join(cfg.root, RESUME_DIR)


def _training_nodes(cfg: configs.PipelineConfig, examples, schema, analyzer_cache=None, base_model=None) -> tuple:
    """Transform and Trainer; their ``custom_config`` carries their module code's fingerprint
    and the Trainer's its resume folder. ``analyzer_cache``: a TransformCache channel that
    Transform starts from; ``base_model``: a Model channel the Trainer warm-starts from."""
    preprocessing = {P.CONFIG_KEY: dataclasses.asdict(cfg.preprocessing())}  # one owner, given to both
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema,
        preprocessing_fn=configs.PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,  # StatisticsGen has them (sampled); over all 80k mocks: 17 GB, killed
        analyzer_cache=analyzer_cache,
        custom_config={
            **preprocessing,
            cache_key.CODE_FINGERPRINT: fingerprint.code_fingerprint(_module(configs.PREPROCESSING_FN)),
        },
    )
    trainer_config = {
        "seed": cfg.seed,
        **cfg.trainer,
        **preprocessing,
        cache_key.CODE_FINGERPRINT: fingerprint.code_fingerprint(_module(configs.RUN_FN)),
        resume.RESUME_DIR_KEY: resume_dir(cfg),
    }
    train = tfx.components.Trainer(
        run_fn=configs.RUN_FN,
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        train_args=tfx.proto.TrainArgs(splits=[F.TRAIN], num_steps=cfg.train_steps),
        eval_args=tfx.proto.EvalArgs(splits=[F.EVAL], num_steps=cfg.eval_steps),
        base_model=base_model,
        custom_config=trainer_config,
    )
    return transform, train


def _evaluation_nodes(cfg: configs.PipelineConfig, examples, model, baseline: tfx.dsl.Resolver) -> tuple:
    """The Evaluator (against ``baseline``'s model, stamped with its custom metrics' code)
    and the Pusher."""
    label_keys = F.label_features(cfg.label_source)
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=model,
        baseline_model=baseline.outputs["model"],
        example_splits=[F.TEST],
        eval_config=eval_config.make_eval_config(
            label_keys=label_keys, thresholds=cfg.thresholds or None, change_thresholds=cfg.change_thresholds or None
        ),
    )
    fingerprint.stamp(evaluator, fingerprint.code_fingerprint(eval_config.__name__))
    pusher = tfx.components.Pusher(
        model=model,
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=cfg.serving_dir)
        ),
    )
    return evaluator, pusher


def create_pipeline(
    cfg: configs.PipelineConfig,
    schema_file: str,
    metadata_connection_config=None,
    beam_pipeline_args=None,
    span: int | None = None,
) -> tfx.dsl.Pipeline:
    """The whole DAG for one configuration (paths already resolved by the runner); builds
    objects only, writes nothing.

    ``schema_file``: the raw-data schema (:func:`write_schema`, which the runner calls).
    Caching follows ``cfg.enable_cache``.

    ``span`` (with ``cfg.spans`` > 0): the span this run ingests, known before the run
    (the local runner resolves it: :func:`~stellarpop.pipeline.local_runner.resolve_span`).
    Transform, Trainer and Evaluator then read spans ``span - cfg.spans + 1 .. span`` from
    MLMD (those that exist; the latest version of each), Transform starts from the analyzer
    cache and the Trainer from the blessed model of the runs of earlier spans. ``span`` None
    (Kubeflow: the span is resolved when the scheduled run starts) keeps to what TFX 1.16's
    Kubeflow V2 compiler compiles: the ExampleGen reads the latest span, Transform and Trainer
    read that span alone, the Trainer starts from TFX's latest blessed model.
    """
    gen = _examples_node(cfg, span)
    examples = gen.outputs["result"] if isinstance(gen, tfx.dsl.Importer) else gen.outputs["examples"]
    nodes, producer, output_key = [gen], gen, "examples"
    if cfg.label_source == "ppxf":
        label_cfg = label_job.LabelConfig(
            fit=ppxf_fit.FitConfig(**cfg.label.get("fit", {})), **{k: v for k, v in cfg.label.items() if k != "fit"}
        )
        labeler = PpxfLabeler(examples, label_cfg, checkpoint_dir=os.path.join(cfg.root, "ppxf_checkpoints"))
        fingerprint.stamp(
            labeler, fingerprint.code_fingerprint(PpxfLabeler.__module__), fingerprint.files_fingerprint(cfg.label)
        )
        examples = labeler.outputs["labelled_examples"]
        nodes.append(labeler)
        producer, output_key = labeler, "labelled_examples"

    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    stats = tfx.components.StatisticsGen(examples=examples)
    if cfg.statistics_sample_rate < 1.0:
        from tensorflow_data_validation import StatsOptions

        stats = tfx.components.StatisticsGen(
            examples=examples, stats_options=StatsOptions(sample_rate=cfg.statistics_sample_rate)
        )
    validator = tfx.components.ExampleValidator(
        statistics=stats.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    windowed = cfg.spans > 0 and span is not None
    baseline = latest_blessed_model(span if windowed else None)
    nodes += [schema_gen, stats, validator, baseline]
    training_examples, cache, base_model = examples, None, None
    if windowed:
        training_examples = span_window(producer.id, output_key, span - cfg.spans + 1, span)
        cache_resolver = latest_analyzer_cache(span)
        nodes.append(cache_resolver)
        cache, base_model = cache_resolver.outputs["cache"], baseline.outputs["model"]
    elif cfg.spans > 0:
        base_model = baseline.outputs["model"]
    transform, train = _training_nodes(
        cfg, training_examples, schema_gen.outputs["schema"], analyzer_cache=cache, base_model=base_model
    )
    evaluator, pusher = _evaluation_nodes(cfg, training_examples, train.outputs["model"], baseline)
    if windowed:  # the window is read from MLMD: it must follow this run's span
        for node in (transform, train, evaluator):
            node.add_upstream_node(producer)
    nodes += [transform, train, evaluator, pusher]
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.name,
        pipeline_root=os.path.join(cfg.root, "artifacts"),
        components=nodes,
        enable_cache=cfg.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
