"""The paper's residual statistics and their TFMA metrics: sigma clipping, names, results.

The paper measures a model by the mean and standard deviation of the residuals
``y_pred - y_true`` after 3-sigma clipping, overall and by S/N_r, redshift and spectral
class. This module holds that statistic as plain numpy (``sigma_clipped_mean_std``, which
benchmarks and reports import without any EvalConfig) and gives it to TFMA as custom metrics:

- ``ClippedMeanResidual``, ``ClippedStdResidual``: the clipped mean and standard deviation
  (ddof 0) of prediction - label, in label units (dex for log_age and mh, mag for ebv, km/s
  for vd). Unweighted, as the paper's statistics are.
- ``Coverage68``: the fraction of examples whose |prediction - label| is within the model's
  own 1-sigma uncertainty output (``log_age_err``, ...); dimensionless, 0.683 for
  well-calibrated Gaussian errors.

A clipped statistic does not merge across Beam bundles, so the combiners keep every residual
of a slice (8 bytes each) and clip once in ``extract_output``.

``metric_name`` / ``metric_key`` give the names these metrics (and the built-in ones the
EvalConfig asks for) have in TFMA's results, and ``read_metrics`` reads an Evaluator output
as ``{slice: {"output/name": value}}``.

The custom metric classes are found by TFMA through ``MetricConfig.module``, which
``METRIC_CLASSES`` sets to this module's ``__name__`` (``stellarpop.pipeline.evaluation.metrics``): this module
must be importable on the Beam workers (it is: the ``stellarpop`` distribution), and moving
the classes changes every EvalConfig that names them.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma

from stellarpop.schema import features

# --- Metric names as they appear in TFMA results (MetricKey.name) --------------------------
CLIPPED_MEAN_RESIDUAL_NAME = "clipped_mean_residual"
CLIPPED_STD_RESIDUAL_NAME = "clipped_std_residual"
COVERAGE68_NAME = "coverage68"

# kind -> (MetricConfig.class_name, module or "" for TFMA / tf_keras built-ins, result name)
METRIC_CLASSES = {
    "clipped_mean": ("ClippedMeanResidual", __name__, CLIPPED_MEAN_RESIDUAL_NAME),
    "clipped_std": ("ClippedStdResidual", __name__, CLIPPED_STD_RESIDUAL_NAME),
    "mae": ("MeanAbsoluteError", "", "mean_absolute_error"),  # TFMA's own
    "rmse": ("RootMeanSquaredError", "", "root_mean_squared_error"),  # tf_keras
    "example_count": ("ExampleCount", "", "example_count"),  # TFMA's own
    "coverage68": ("Coverage68", __name__, COVERAGE68_NAME),
}
METRIC_KINDS = tuple(METRIC_CLASSES)

# Each labelled model output OUTPUT has a 1-sigma uncertainty output OUTPUT + this suffix,
# which Coverage68 reads by default.
ERROR_SUFFIX = features.ERR_SUFFIX  # "_err"

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


def _clipped_computations(statistic: str, default_name: str):
    """TFMA's ``create_computations_fn`` of a clipped statistic of the residuals (``"mean"``
    or ``"std"``). TFMA passes arguments by the names in its signature, so the function it
    gets spells them out."""

    def computations(
        name: str = default_name,
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

    return computations


_clipped_mean_computations = _clipped_computations("mean", CLIPPED_MEAN_RESIDUAL_NAME)
_clipped_std_computations = _clipped_computations("std", CLIPPED_STD_RESIDUAL_NAME)


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


class _ClippedResidual(tfma.metrics.Metric):
    """A clipped statistic of prediction - label (``STATISTIC``), named ``DEFAULT_NAME``
    unless ``name`` is given.

    Parameters
    ----------
    name : str, optional
    sigma : float
        Clipping half-width in standard deviations.
    maxiters : int or None
        Clipping passes; None iterates to convergence.
    """

    COMPUTATIONS = None  # set by each subclass
    DEFAULT_NAME = ""

    def __init__(self, name: str | None = None, sigma: float = DEFAULT_SIGMA, maxiters: int | None = DEFAULT_MAXITERS):
        computations = tfma.metrics.merge_per_key_computations(type(self).COMPUTATIONS)
        super().__init__(computations, name=name or self.DEFAULT_NAME, sigma=sigma, maxiters=maxiters)


class ClippedMeanResidual(_ClippedResidual):
    """Mean of prediction - label after iterative ``sigma``-clipping (see ``sigma_clipped_mean_std``)."""

    COMPUTATIONS = staticmethod(_clipped_mean_computations)
    DEFAULT_NAME = CLIPPED_MEAN_RESIDUAL_NAME


class ClippedStdResidual(_ClippedResidual):
    """Standard deviation (ddof 0) of prediction - label after iterative ``sigma``-clipping."""

    COMPUTATIONS = staticmethod(_clipped_std_computations)
    DEFAULT_NAME = CLIPPED_STD_RESIDUAL_NAME


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
    if kind not in METRIC_CLASSES:
        raise KeyError(f"unknown metric kind {kind!r}; known: {METRIC_KINDS}")
    name = METRIC_CLASSES[kind][2]
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
