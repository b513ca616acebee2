"""The TFMA EvalConfig of the stellar-population regressor: label keys, slices, metrics, blessing.

For each labelled output the Evaluator computes the statistics of ``metrics`` (the paper's
3-sigma-clipped mean and standard deviation of the residuals, MAE, RMSE, example count and
the coverage of the model's 1-sigma errors), overall and by S/N_r bin, redshift bin and BPT
class, and blesses the model on the overall clipped std. ``make_eval_config`` builds the
``tfma.EvalConfig`` it runs:

- one ModelSpec on the ``serving_default`` signature (serialized tf.Examples in, a dict
  ``{log_age, mh, ebv, vd, log_age_err, ...}`` out), labels read from the features named in
  ``label_keys`` (the pipeline's label source: ``true_*`` for simulated spectra, the pPXF
  labels otherwise);
- ``preprocessing_function_names=["transform_features"]``: TFMA runs that signature of the
  exported model and can slice on its outputs (``snr_bin_xf``, ``z_bin_xf``) exactly as on
  raw features (``bpt_class``);
- one MetricsSpec per output, so each output has its own thresholds; thresholds apply to the
  overall slice only and are in label units (dex, dex, mag, km/s).

Passing the config to TFX::

    Evaluator(examples=..., model=trainer.outputs["model"],
              baseline_model=resolver.outputs["model"],  # latest blessed model; optional
              eval_config=make_eval_config(...))

The config names one candidate ModelSpec and no baseline. The TFX 1.16 Evaluator executor
calls ``tfma.utils.update_eval_config_with_defaults(eval_config, has_baseline=...,
rubber_stamp=True)``: with a ``baseline_model`` input it copies the ModelSpec into a second
one (``name="baseline"``, ``is_baseline=True``) and renames the first ``"candidate"``; without
one it drops every change threshold (the first model is blessed on value thresholds alone).
Change thresholds are checked on the diff keys (candidate - baseline) TFMA computes.
"""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from stellarpop.pipeline.evaluation.metrics import METRIC_CLASSES
from stellarpop.schema import features
from stellarpop.schema import model_contract as contract
from stellarpop.transforms.config import DEFAULT_LABEL_SOURCE

# The model's outputs that have labels.
OUTPUTS = features.LABEL_KEYS

# Blessing defaults: upper bounds on the overall clipped std of the residuals, in label
# units (dex, dex, mag, km/s) -- a little above the paper's 0.11 / 0.11 / 0.018 / 31.
DEFAULT_STD_THRESHOLDS = {features.LOG_AGE: 0.15, features.MH: 0.15, features.EBV: 0.03, features.VD: 40.0}
# A candidate may be worse than the baseline by at most this fraction of the value threshold.
DEFAULT_CHANGE_FRACTION = 0.1

# Slices besides the overall one: the S/N_r and z bins (Transform outputs), the BPT class (raw).
SLICE_FEATURES = features.SLICE_KEYS
PREPROCESSING_FUNCTION = contract.TRANSFORM_SIGNATURE


# --- The EvalConfig ---------------------------------------------------------------------------
def _metric_config(kind: str, **config) -> tfma.MetricConfig:
    class_name, module, _ = METRIC_CLASSES[kind]
    return tfma.MetricConfig(class_name=class_name, module=module, config=json.dumps(config) if config else "")


def _overall_threshold(upper_bound: float | None, change_tolerance: float | None) -> list[tfma.PerSliceMetricThreshold]:
    threshold = tfma.MetricThreshold()
    if upper_bound is not None:
        threshold.value_threshold.upper_bound.value = upper_bound
    if change_tolerance is not None:
        threshold.change_threshold.absolute.value = change_tolerance
        threshold.change_threshold.direction = tfma.MetricDirection.LOWER_IS_BETTER
    if not threshold.ByteSize():
        return []
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def make_eval_config(
    label_keys: dict[str, str] | None = None,
    thresholds: dict[str, float | None] | None = None,
    change_thresholds: dict[str, float | None] | None = None,
    signature_name: str = contract.SERVING_SIGNATURE,
) -> tfma.EvalConfig:
    """The EvalConfig of the Evaluator (or ``tfma.run_model_analysis``).

    Parameters
    ----------
    label_keys : dict, optional
        Output -> label feature (``features.label_features(label_source)``); default: those
        of the default label source (``transforms.config.DEFAULT_LABEL_SOURCE``). Its keys
        are the outputs evaluated.
    thresholds : dict, optional
        Output -> upper bound on the overall clipped std of the residuals (label units),
        merged over ``DEFAULT_STD_THRESHOLDS``; None drops that output's bound.
    change_thresholds : dict, optional
        Output -> how much the candidate's overall clipped std may exceed the baseline's
        (absolute, label units), merged over ``DEFAULT_CHANGE_FRACTION`` x the value
        threshold; None drops it. Ignored by the TFX Evaluator when there is no baseline.
    signature_name : str
        Serving signature: serialized tf.Examples in ("examples"), dict of outputs out.

    Returns
    -------
    tfma.EvalConfig
    """
    label_keys = dict(label_keys) if label_keys is not None else features.label_features(DEFAULT_LABEL_SOURCE)
    unknown = set(thresholds or {}) | set(change_thresholds or {})
    if unknown - set(label_keys):
        raise ValueError(f"thresholds for outputs without labels: {sorted(unknown - set(label_keys))}")
    value_bounds = {**DEFAULT_STD_THRESHOLDS, **(thresholds or {})}
    change_bounds = {
        k: (DEFAULT_CHANGE_FRACTION * v if v is not None else None) for k, v in value_bounds.items()
    } | dict(change_thresholds or {})

    metrics_specs = []
    for output in label_keys:
        clipped_std = _metric_config("clipped_std")
        clipped_std.per_slice_thresholds.extend(_overall_threshold(value_bounds.get(output), change_bounds.get(output)))
        metrics_specs.append(
            tfma.MetricsSpec(
                output_names=[output],
                metrics=[
                    _metric_config("clipped_mean"),
                    clipped_std,
                    _metric_config("mae"),
                    _metric_config("rmse"),
                    _metric_config("example_count"),
                    _metric_config("coverage68"),
                ],
            )
        )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=signature_name,
                label_keys=label_keys,
                preprocessing_function_names=[PREPROCESSING_FUNCTION],
            )
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[k]) for k in SLICE_FEATURES],
        metrics_specs=metrics_specs,
        # A Keras model's compiled metrics/losses would also cover the *_err outputs, which
        # have no labels.
        options=tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
    )
