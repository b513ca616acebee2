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

Caching (``cfg.enable_cache``): TFX reuses a component's earlier outputs when its cache key
is unchanged: pipeline name, component id, executor spec (with the Beam arguments), input
artefacts and execution properties. Module code named by a dotted path and files named by
a path are not in it, so this module puts fingerprints there (:func:`code_fingerprint`:
the project source a component runs, its version and its libraries' versions;
:func:`files_fingerprint`: data files named in the configuration): a changed module re-runs
the components that import it, and their descendants, only.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable

import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from stellarpop.components import examples as examples_lib
from stellarpop.components import ppxf_fit, reference_data
from stellarpop.components.fits_example_gen.component import FitsExampleGen, default_input_config, static_span
from stellarpop.components.fits_example_gen.job import IngestConfig
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen.component import MockExampleGen
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler.component import PpxfLabeler
from stellarpop.pipeline import configs, eval_config, export, trainer
from stellarpop.pipeline.spans import latest_analyzer_cache, latest_blessed_model, span_window
from stellarpop.transforms import features as F
from stellarpop.transforms import preprocessing as P

SCHEMA_FILE = "schema.pbtxt"
CODE_FINGERPRINT = "code_fingerprint"
RESUME_DIR = "trainer_checkpoints"  # under the root: Trainer state of killed executions
PROJECT = "stellarpop"


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


def _imported_names(path: str, package: str) -> Iterable[str]:
    """Every module name an import statement of ``path`` may name (anywhere in the file:
    imports inside functions count); ``from a import b`` gives ``a`` and ``a.b``."""
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            relative = "." * node.level + (node.module or "")
            base = importlib.util.resolve_name(relative, package) if node.level else node.module
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _source_file(name: str) -> str | None:
    """The ``.py`` file of project module ``name``; None for an attribute (``a.b.func``).

    ``find_spec`` imports the parent packages only (their ``__init__``), never ``name``.
    """
    parent = name.rpartition(".")[0]
    parent_spec = importlib.util.find_spec(parent) if parent else None
    if parent and (parent_spec is None or parent_spec.submodule_search_locations is None):
        return None
    spec = importlib.util.find_spec(name)
    return spec.origin if spec and spec.origin and spec.origin.endswith(".py") else None


@functools.lru_cache(maxsize=None)
def code_fingerprint(module: str) -> str:
    """SHA-256 of the code that ``module`` runs, for a cache key.

    The source of every project module it imports, directly or not (and their packages'
    ``__init__``), the project's version, and the versions of the other distributions
    those modules import (a top-level name shared by several distributions, as
    ``google``, is left out). Pinned reference data (the template library's source SHA-256
    in ``reference_data``) is part of that source.
    """
    files, external, todo = {}, set(), [module]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _source_file(name)
        if path is None:
            continue
        files[name] = path
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        for imported in _imported_names(path, package):
            if imported.split(".")[0] == PROJECT:
                parts = imported.split(".")
                todo += [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
            else:
                external.add(imported.split(".")[0])
    owners = importlib_metadata.packages_distributions()
    dists = {owners[n][0] for n in external if len(set(owners.get(n, []))) == 1}
    versions = {PROJECT: export.package_version(), **{d: importlib_metadata.version(d) for d in dists}}
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + open(files[name], "rb").read())
    return digest.hexdigest()


def files_fingerprint(config: Any) -> dict[str, str]:
    """{path: SHA-256} of the local files that ``config`` (nested dicts, lists) names, such as
    a template library or instrument files: TFX would only see their paths."""
    if isinstance(config, dict):
        return {k: v for value in config.values() for k, v in files_fingerprint(value).items()}
    if isinstance(config, (list, tuple)):
        return {k: v for value in config for k, v in files_fingerprint(value).items()}
    if isinstance(config, str) and config and os.path.isfile(config):
        return {os.path.abspath(config): reference_data.sha256(Path(config))}
    return {}


def folder_fingerprint(folder: str) -> str:
    """SHA-256 of the names, sizes and modification times of the files under ``folder``."""
    paths = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    stats = sorted((os.path.relpath(p, folder), os.path.getsize(p), os.path.getmtime(p)) for p in paths)
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def stamp(node, *parts: Any):
    """Make ``node``'s cache key depend on ``parts`` (fingerprints): as the execution
    property ``code_fingerprint`` where the component's spec declares one, else in its
    executor spec's ``extra_flags``, which TFX hashes into the key and no executor reads
    (kept by local runs only: the Kubeflow V2 compiler drops them).
    """
    value = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    if CODE_FINGERPRINT in node.spec.PARAMETERS:
        node.exec_properties[CODE_FINGERPRINT] = value
    else:
        node.executor_spec.add_extra_flags([f"--{CODE_FINGERPRINT}={value}"])
    return node


def _examples_node(cfg: configs.PipelineConfig, span: int | None = None):
    """The example generator; with spans, FitsExampleGen reads span ``span`` (None: the
    latest, resolved by its driver when the run starts)."""
    ex = dict(cfg.examples)
    source = ex.pop("source", "simulate")
    preparation = cfg.preprocessing().preparation
    if source == "simulate":
        gen = MockExampleGen(sim_job.SimConfig(priors=configs.priors(ex), preparation=preparation, **ex))
        return stamp(gen, code_fingerprint(MockExampleGen.__module__), files_fingerprint(ex))
    if source == "ingest":  # the input files: FileBasedExampleGen's driver fingerprints them
        pattern = ex.pop("pattern", "*")
        gen = FitsExampleGen(
            ingest_config=IngestConfig(preparation=preparation), input_config=default_input_config(pattern),
            range_config=static_span(span) if cfg.spans and span is not None else None, **ex,
        )
        return stamp(gen, code_fingerprint(FitsExampleGen.__module__))
    if source == "import":
        # A new artefact (and new downstream results) when the folder's files change.
        uri = os.path.abspath(ex["uri"])
        return tfx.dsl.Importer(
            source_uri=uri,
            artifact_type=standard_artifacts.Examples,
            properties={"split_names": json.dumps(list(F.SPLIT_NAMES), separators=(",", ":"))},
            custom_properties={"file_format": "tfrecords_gzip", "payload_format": "FORMAT_TF_EXAMPLE",
                               "content_fingerprint": folder_fingerprint(uri)},
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
        custom_config={**preprocessing, CODE_FINGERPRINT: code_fingerprint(_module(configs.PREPROCESSING_FN))},
    )
    trainer_config = {
        "seed": cfg.seed, **cfg.trainer, **preprocessing,
        CODE_FINGERPRINT: code_fingerprint(_module(configs.RUN_FN)), trainer.RESUME_DIR_KEY: resume_dir(cfg),
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
    stamp(evaluator, code_fingerprint(eval_config.__name__))
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
        label_cfg = label_job.LabelConfig(fit=ppxf_fit.FitConfig(**cfg.label.get("fit", {})),
                                          **{k: v for k, v in cfg.label.items() if k != "fit"})
        labeler = PpxfLabeler(examples, label_cfg, checkpoint_dir=os.path.join(cfg.root, "ppxf_checkpoints"))
        stamp(labeler, code_fingerprint(PpxfLabeler.__module__), files_fingerprint(cfg.label))
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
    validator = tfx.components.ExampleValidator(statistics=stats.outputs["statistics"], schema=schema_gen.outputs["schema"])
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
