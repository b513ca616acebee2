"""TFMA evaluation of the stellar-population regressor: label keys, slices, metrics, blessing.

The paper measures a model by the mean and standard deviation of the residuals
``y_pred - y_true`` after 3-sigma clipping, overall and by S/N_r, redshift and spectral
class. This module gives TFMA those statistics as custom metrics (``ClippedMeanResidual``,
``ClippedStdResidual``, ``Coverage68`` for the model's 1-sigma uncertainties) and builds the
``tfma.EvalConfig`` the TFX Evaluator runs:

- one ModelSpec on the ``serving_default`` signature (serialized tf.Examples in, a dict
  ``{log_age, mh, ebv, vd, log_age_err, ...}`` out), labels read from the features named in
  ``label_keys`` (pPXF labels by default; ``true_*`` for simulated spectra);
- ``preprocessing_function_names=["transform_features"]``: TFMA runs that signature of the
  exported model and can slice on its outputs (``snr_bin_xf``, ``z_bin_xf``) exactly as on
  raw features (``bpt_class``);
- one MetricsSpec per output, so each output has its own thresholds; thresholds apply to the
  overall slice only.

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

The custom metric classes are found by TFMA through ``MetricConfig.module``, so this module
must be importable on the Beam workers (it is: the ``stellarpop`` distribution).
"""

from __future__ import annotations

import array
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from stellarpop.transforms import features

# --- Metric names as they appear in TFMA results (MetricKey.name) --------------------------
CLIPPED_MEAN_RESIDUAL_NAME = "clipped_mean_residual"
CLIPPED_STD_RESIDUAL_NAME = "clipped_std_residual"
COVERAGE68_NAME = "coverage68"

# kind -> (MetricConfig.class_name, module or "" for TFMA / tf_keras built-ins, result name)
_METRICS = {
    "clipped_mean": ("ClippedMeanResidual", __name__, CLIPPED_MEAN_RESIDUAL_NAME),
    "clipped_std": ("ClippedStdResidual", __name__, CLIPPED_STD_RESIDUAL_NAME),
    "mae": ("MeanAbsoluteError", "", "mean_absolute_error"),  # TFMA's own
    "rmse": ("RootMeanSquaredError", "", "root_mean_squared_error"),  # tf_keras
    "example_count": ("ExampleCount", "", "example_count"),  # TFMA's own
    "coverage68": ("Coverage68", __name__, COVERAGE68_NAME),
}
METRIC_KINDS = tuple(_METRICS)

# The model's outputs that have labels; each has a 1-sigma uncertainty output OUTPUT + suffix.
OUTPUTS = features.LABEL_KEYS
ERROR_SUFFIX = features.ERR_SUFFIX  # "_err"

# Blessing defaults: upper bounds on the overall clipped std of the residuals, in label
# units (dex, dex, mag, km/s) -- a little above the paper's 0.11 / 0.11 / 0.018 / 31.
DEFAULT_STD_THRESHOLDS = {features.LOG_AGE: 0.15, features.MH: 0.15, features.EBV: 0.03, features.VD: 40.0}
# A candidate may be worse than the baseline by at most this fraction of the value threshold.
DEFAULT_CHANGE_FRACTION = 0.1

SLICE_FEATURES = (features.transformed_name("snr_bin"), features.transformed_name("z_bin"), features.BPT_CLASS)
PREPROCESSING_FUNCTION = "transform_features"

# 3-sigma clipping to convergence (astropy.stats.sigma_clipped_stats(r, sigma=3,
# maxiters=None)); the paper does not say how many iterations it used.
DEFAULT_SIGMA = 3.0
DEFAULT_MAXITERS: int | None = None


# --- The statistics (numpy, pure) ------------------------------------------------------------
def sigma_clipped_mean_std(
    values: np.ndarray, sigma: float = DEFAULT_SIGMA, maxiters: int | None = DEFAULT_MAXITERS
) -> tuple[float, float, int]:
    """Mean and standard deviation after iterative sigma clipping around the median.

    The algorithm of ``astropy.stats.sigma_clipped_stats(values, sigma=sigma,
    maxiters=maxiters)`` (cenfunc median, stdfunc std, ddof 0): non-finite values are
    dropped; then, until no value is rejected or ``maxiters`` passes are done, the values
    outside ``median +- sigma * std`` of the surviving ones are removed.

    Parameters
    ----------
    values : array_like, any shape (flattened)
    sigma : float
    maxiters : int or None
        None iterates to convergence.

    Returns
    -------
    mean, std : float
        NaN when no value survives.
    n : int
        Number of values kept.
    """
    kept = np.asarray(values, dtype=np.float64).ravel()
    kept = kept[np.isfinite(kept)]
    iteration = 0
    while kept.size and (maxiters is None or iteration < maxiters):
        iteration += 1
        centre, spread = np.median(kept), np.std(kept)
        inside = (kept >= centre - sigma * spread) & (kept <= centre + sigma * spread)
        if inside.all():
            break
        kept = kept[inside]
    if not kept.size:
        return math.nan, math.nan, 0
    return float(np.mean(kept)), float(np.std(kept)), int(kept.size)


# --- Beam combiners ---------------------------------------------------------------------------
def _label_prediction_pairs(element, eval_config, key: tfma.metrics.MetricKey):
    """(label, prediction) float pairs of one extract for ``key``'s model and output."""
    for label, prediction, _ in tfma.metrics.to_label_prediction_example_weight(
        element,
        eval_config=eval_config,
        model_name=key.model_name,
        output_name=key.output_name,
        sub_key=key.sub_key,
        flatten=True,
    ):
        yield float(np.asarray(label).item()), float(np.asarray(prediction).item())


class _ClippedResidualCombiner(beam.CombineFn):
    """Collects every residual (prediction - label) of a slice; clips at the end.

    The accumulator is an ``array.array('d')``: 8 bytes per example, so ~1e5 examples per
    slice cost ~1 MB. Example weights are ignored (the paper's statistics are unweighted).
    """

    def __init__(self, eval_config, metric_key, statistic: str, sigma: float, maxiters: int | None):
        self._eval_config = eval_config
        self._key = metric_key
        self._statistic = statistic
        self._sigma = sigma
        self._maxiters = maxiters

    def create_accumulator(self) -> array.array:
        return array.array("d")

    def add_input(self, accumulator: array.array, element) -> array.array:
        for label, prediction in _label_prediction_pairs(element, self._eval_config, self._key):
            accumulator.append(prediction - label)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[array.array]) -> array.array:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for other in accumulators:
            result.extend(other)
        return result

    def extract_output(self, accumulator: array.array) -> dict:
        mean, std, _ = sigma_clipped_mean_std(np.frombuffer(accumulator, dtype=np.float64), self._sigma, self._maxiters)
        return {self._key: mean if self._statistic == "mean" else std}


@dataclass
class _CoverageAccumulator:
    covered: int = 0
    total: int = 0

    def merge(self, other: _CoverageAccumulator) -> None:
        self.covered += other.covered
        self.total += other.total


class _CoverageCombiner(beam.CombineFn):
    """Counts examples with |prediction - label| <= error, the error read from another output."""

    def __init__(self, eval_config, metric_key, error_output: str):
        self._eval_config = eval_config
        self._key = metric_key
        self._error_output = error_output

    def create_accumulator(self) -> _CoverageAccumulator:
        return _CoverageAccumulator()

    def add_input(self, accumulator: _CoverageAccumulator, element) -> _CoverageAccumulator:
        pairs = list(_label_prediction_pairs(element, self._eval_config, self._key))
        predictions = element.get_predictions(model_name=self._key.model_name or None)
        if not isinstance(predictions, Mapping) or self._error_output not in predictions:
            raise ValueError(
                f"Coverage68: the model has no output {self._error_output!r} "
                f"(outputs: {sorted(predictions) if isinstance(predictions, Mapping) else 'not a dict'})"
            )
        errors = np.asarray(predictions[self._error_output], dtype=np.float64).ravel()
        if errors.size != len(pairs):
            raise ValueError(f"Coverage68: {errors.size} values of {self._error_output!r} for {len(pairs)} predictions")
        for (label, prediction), error in zip(pairs, errors):
            if math.isfinite(prediction - label) and math.isfinite(error):
                accumulator.total += 1
                accumulator.covered += int(abs(prediction - label) <= error)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_CoverageAccumulator]) -> _CoverageAccumulator:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for other in accumulators:
            result.merge(other)
        return result

    def extract_output(self, accumulator: _CoverageAccumulator) -> dict:
        value = accumulator.covered / accumulator.total if accumulator.total else math.nan
        return {self._key: value}


# --- TFMA metrics -----------------------------------------------------------------------------
def _metric_key(name, model_name, output_name, sub_key, example_weighted) -> tfma.metrics.MetricKey:
    return tfma.metrics.MetricKey(
        name=name, model_name=model_name, output_name=output_name, sub_key=sub_key, example_weighted=example_weighted
    )


def _clipped_computations(
    statistic: str,
    name: str,
    sigma: float = DEFAULT_SIGMA,
    maxiters: int | None = DEFAULT_MAXITERS,
    eval_config=None,
    model_name: str = "",
    output_name: str = "",
    sub_key=None,
    example_weighted: bool = False,
):
    key = _metric_key(name, model_name, output_name, sub_key, example_weighted)
    combiner = _ClippedResidualCombiner(eval_config, key, statistic, sigma, maxiters)
    return [tfma.metrics.MetricComputation(keys=[key], preprocessors=None, combiner=combiner)]


def _clipped_mean_computations(
    name=CLIPPED_MEAN_RESIDUAL_NAME,
    sigma=DEFAULT_SIGMA,
    maxiters=DEFAULT_MAXITERS,
    eval_config=None,
    model_name="",
    output_name="",
    sub_key=None,
    example_weighted=False,
):
    return _clipped_computations(
        "mean", name, sigma, maxiters, eval_config, model_name, output_name, sub_key, example_weighted
    )


def _clipped_std_computations(
    name=CLIPPED_STD_RESIDUAL_NAME,
    sigma=DEFAULT_SIGMA,
    maxiters=DEFAULT_MAXITERS,
    eval_config=None,
    model_name="",
    output_name="",
    sub_key=None,
    example_weighted=False,
):
    return _clipped_computations(
        "std", name, sigma, maxiters, eval_config, model_name, output_name, sub_key, example_weighted
    )


def _coverage_computations(
    name=COVERAGE68_NAME,
    error_suffix=ERROR_SUFFIX,
    error_output=None,
    eval_config=None,
    model_name="",
    output_name="",
    sub_key=None,
    example_weighted=False,
):
    key = _metric_key(name, model_name, output_name, sub_key, example_weighted)
    combiner = _CoverageCombiner(eval_config, key, error_output or output_name + error_suffix)
    return [tfma.metrics.MetricComputation(keys=[key], preprocessors=None, combiner=combiner)]


class ClippedMeanResidual(tfma.metrics.Metric):
    """Mean of prediction - label after iterative ``sigma``-clipping (see ``sigma_clipped_mean_std``).

    Parameters
    ----------
    name : str
    sigma : float
        Clipping half-width in standard deviations.
    maxiters : int or None
        Clipping passes; None iterates to convergence.
    """

    def __init__(
        self,
        name: str = CLIPPED_MEAN_RESIDUAL_NAME,
        sigma: float = DEFAULT_SIGMA,
        maxiters: int | None = DEFAULT_MAXITERS,
    ):
        computations = tfma.metrics.merge_per_key_computations(_clipped_mean_computations)
        super().__init__(computations, name=name, sigma=sigma, maxiters=maxiters)


class ClippedStdResidual(tfma.metrics.Metric):
    """Standard deviation (ddof 0) of prediction - label after iterative ``sigma``-clipping.

    Parameters are those of ``ClippedMeanResidual``.
    """

    def __init__(
        self,
        name: str = CLIPPED_STD_RESIDUAL_NAME,
        sigma: float = DEFAULT_SIGMA,
        maxiters: int | None = DEFAULT_MAXITERS,
    ):
        computations = tfma.metrics.merge_per_key_computations(_clipped_std_computations)
        super().__init__(computations, name=name, sigma=sigma, maxiters=maxiters)


class Coverage68(tfma.metrics.Metric):
    """Fraction of examples with |prediction - label| <= the model's 1-sigma error.

    The error is another output of the same model, read from the prediction dict: by
    default ``output_name + error_suffix`` (``log_age`` -> ``log_age_err``), or
    ``error_output`` when given (only sensible with one output per MetricsSpec).
    Well-calibrated Gaussian errors give 0.683.

    Parameters
    ----------
    name : str
    error_suffix : str
    error_output : str or None
    """

    def __init__(self, name: str = COVERAGE68_NAME, error_suffix: str = ERROR_SUFFIX, error_output: str | None = None):
        super().__init__(
            tfma.metrics.merge_per_key_computations(_coverage_computations),
            name=name,
            error_suffix=error_suffix,
            error_output=error_output,
        )


# --- Names in the results ---------------------------------------------------------------------
def metric_name(kind: str, output: str | None = None) -> str:
    """Name of a metric in the evaluation output.

    Parameters
    ----------
    kind : str
        One of ``METRIC_KINDS``: clipped_mean, clipped_std, mae, rmse, example_count, coverage68.
    output : str, optional
        A model output (log_age, mh, ebv, vd).

    Returns
    -------
    str
        Without ``output``, ``MetricKey.name`` in TFMA's results (e.g. "clipped_std_residual");
        with it, the flat ``"{output}/{name}"`` used by ``read_metrics`` (e.g.
        "log_age/clipped_std_residual").
    """
    if kind not in _METRICS:
        raise KeyError(f"unknown metric kind {kind!r}; known: {METRIC_KINDS}")
    name = _METRICS[kind][2]
    return f"{output}/{name}" if output else name


def metric_key(kind: str, output: str, model_name: str = "", is_diff: bool = False) -> tfma.metrics.MetricKey:
    """The ``tfma.metrics.MetricKey`` of a metric in the results.

    ``model_name`` is "" for a run without baseline, "candidate" / "baseline" with one;
    ``is_diff`` gives the candidate - baseline key that change thresholds are checked on.
    """
    return tfma.metrics.MetricKey(name=metric_name(kind), model_name=model_name, output_name=output, is_diff=is_diff)


def read_metrics(eval_output_path: str, model_name: str | None = None) -> dict[tuple, dict[str, float]]:
    """Scalar metrics of an evaluation, by slice.

    Parameters
    ----------
    eval_output_path : str
        TFMA output folder (the Evaluator's ``evaluation`` artifact URI).
    model_name : str, optional
        Model whose metrics to return; by default the candidate ("" or "candidate").
        Diff keys (candidate - baseline) are skipped.

    Returns
    -------
    dict
        ``{slice: {metric_name(kind, output): value}}``; ``slice`` is ``()`` for the overall
        slice, else a tuple of ``(feature, value)`` such as ``(("snr_bin_xf", 2),)``.
    """
    wanted = {"", tfma.CANDIDATE_KEY} if model_name is None else {model_name}
    result: dict[tuple, dict[str, float]] = {}
    for per_slice in tfma.load_metrics(eval_output_path):
        slice_key = tfma.slicer.deserialize_slice_key(per_slice.slice_key)
        values = result.setdefault(tuple(slice_key), {})
        for item in per_slice.metric_keys_and_values:
            key = item.key
            if key.is_diff or key.model_name not in wanted or not item.value.HasField("double_value"):
                continue
            values[f"{key.output_name}/{key.name}" if key.output_name else key.name] = item.value.double_value.value
    return result


# --- The EvalConfig ---------------------------------------------------------------------------
def _metric_config(kind: str, **config) -> tfma.MetricConfig:
    class_name, module, _ = _METRICS[kind]
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
    signature_name: str = "serving_default",
) -> tfma.EvalConfig:
    """The EvalConfig of the Evaluator (or ``tfma.run_model_analysis``).

    Parameters
    ----------
    label_keys : dict, optional
        Output -> label feature; default each of ``features.LABEL_KEYS`` to itself. For
        simulated spectra pass ``dict(zip(LABEL_KEYS, TRUTH_KEYS))``. Its keys are the
        outputs evaluated.
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
    label_keys = dict(label_keys) if label_keys is not None else {k: k for k in OUTPUTS}
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
