"""create_pipeline(): the stellarpop DAG. Runners inject paths, metadata and Beam args only.

    examples (MockExampleGen | FitsExampleGen | Importer) [-> PpxfLabeler]
      -> StatisticsGen -> ExampleValidator (against the schema of components/examples.py)
      -> Transform (flux normalisation, min-max label scaling, S/N and z buckets; in graph)
      -> Trainer (run_fn: the Keras CNN; exports raw-Example signatures in physical units)
      -> Evaluator (TFMA, sliced by S/N, z, BPT class; blessing vs thresholds and the latest
         blessed model) -> Pusher (TF Serving layout: serving_dir/<version>/)
"""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from stellarpop.components import examples as examples_lib
from stellarpop.components import ppxf_fit
from stellarpop.components.fits_example_gen.component import FitsExampleGen
from stellarpop.components.mock_example_gen import job as sim_job
from stellarpop.components.mock_example_gen.component import MockExampleGen
from stellarpop.components.ppxf_labeler import job as label_job
from stellarpop.components.ppxf_labeler.component import PpxfLabeler
from stellarpop.components import simulate
from stellarpop.pipeline import configs, eval_config
from stellarpop.transforms import features as F

SCHEMA_FILE = "schema.pbtxt"


def write_schema(folder: str, label_source: str) -> str:
    """The raw-data schema, from the one feature spec (labels or truth as the config says)."""
    spec = examples_lib.feature_spec(labels=label_source == "ppxf", truth=label_source == "truth")
    spec.pop(F.SIM_TRUTH, None)  # analysis only; optional in the data
    path = os.path.join(folder, "schema", SCHEMA_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    io_utils.write_pbtxt_file(path, schema_utils.schema_from_feature_spec(spec))
    return path


def _examples_node(cfg: configs.PipelineConfig):
    ex = dict(cfg.examples)
    source = ex.pop("source", "simulate")
    if source == "simulate":
        priors = simulate.Priors(mode=ex.pop("mode", "sdss"))
        return MockExampleGen(sim_job.SimConfig(priors=priors, **ex))
    if source == "ingest":
        return FitsExampleGen(**ex)
    if source == "import":
        return tfx.dsl.Importer(
            source_uri=os.path.abspath(ex["uri"]),
            artifact_type=standard_artifacts.Examples,
            properties={"split_names": '["train","eval","test"]'},
            custom_properties={"file_format": "tfrecords_gzip", "payload_format": "FORMAT_TF_EXAMPLE"},
        ).with_id("ImportExamples")
    raise ValueError(f"examples.source is simulate, ingest or import, not {source!r}")


def create_pipeline(cfg: configs.PipelineConfig, metadata_connection_config=None, beam_pipeline_args=None) -> tfx.dsl.Pipeline:
    """The whole DAG for one configuration (paths already resolved by the runner)."""
    if cfg.label_source not in ("truth", "ppxf"):
        raise ValueError(f"label_source is 'truth' or 'ppxf', not {cfg.label_source!r}")
    gen = _examples_node(cfg)
    examples = gen.outputs["result"] if isinstance(gen, tfx.dsl.Importer) else gen.outputs["examples"]
    nodes = [gen]
    if cfg.label_source == "ppxf":
        label_cfg = label_job.LabelConfig(fit=ppxf_fit.FitConfig(**cfg.label.get("fit", {})),
                                          **{k: v for k, v in cfg.label.items() if k != "fit"})
        labeler = PpxfLabeler(examples, label_cfg, checkpoint_dir=os.path.join(cfg.root, "ppxf_checkpoints"))
        examples = labeler.outputs["labelled_examples"]
        nodes.append(labeler)

    schema_gen = tfx.components.ImportSchemaGen(schema_file=write_schema(cfg.root, cfg.label_source))
    stats = tfx.components.StatisticsGen(examples=examples)
    if cfg.statistics_sample_rate < 1.0:
        from tensorflow_data_validation import StatsOptions

        stats = tfx.components.StatisticsGen(
            examples=examples, stats_options=StatsOptions(sample_rate=cfg.statistics_sample_rate)
        )
    validator = tfx.components.ExampleValidator(statistics=stats.outputs["statistics"], schema=schema_gen.outputs["schema"])
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=configs.PREPROCESSING_FN,
        materialize=False,
        custom_config={"label_source": cfg.label_source},
    )
    trainer_config = {"label_source": cfg.label_source, "seed": cfg.seed, **cfg.trainer}
    trainer = tfx.components.Trainer(
        run_fn=configs.RUN_FN,
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"], num_steps=cfg.train_steps),
        eval_args=tfx.proto.EvalArgs(splits=["eval"], num_steps=cfg.eval_steps),
        custom_config=trainer_config,
    )
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("LatestBlessedModel")
    label_keys = {k: (F.TRUTH_PREFIX + k if cfg.label_source == "truth" else k) for k in F.LABEL_KEYS}
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=["test"],
        eval_config=eval_config.make_eval_config(
            label_keys=label_keys, thresholds=cfg.thresholds or None, change_thresholds=cfg.change_thresholds or None
        ),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=cfg.serving_dir)
        ),
    )
    nodes += [schema_gen, stats, validator, transform, trainer, baseline, evaluator, pusher]
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.name,
        pipeline_root=os.path.join(cfg.root, "artifacts"),
        components=nodes,
        enable_cache=False,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
