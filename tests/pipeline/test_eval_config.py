"""TFMA evaluation config: its shape, labels and thresholds, and real TFMA runs of a tiny
SavedModel whose residuals are known, with and without a baseline model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.evaluators import metrics_validator

from stellarpop.pipeline.evaluation import eval_config as ec
from stellarpop.pipeline.evaluation import metrics as M
from stellarpop.schema import features as F
from stellarpop.transforms.config import PreprocessingConfig

SNR_BIN = F.transformed_name(F.SNR_BIN)
Z_BIN = F.transformed_name(F.Z_BIN)
PPXF = F.label_features("ppxf")  # the toy examples carry pPXF-named labels
OFFSET = "pred_offset"  # the toy model predicts label + scale * (offset + BIAS)
BIAS = 0.3
GOOD_SCALES = {F.LOG_AGE: 0.1, F.MH: 0.08, F.EBV: 0.015, F.VD: 20.0}
N_EXAMPLES = 60


def _residuals_with_outliers(rng: np.random.Generator, n: int) -> np.ndarray:
    r = rng.normal(0.0, 1.0, n)
    idx = rng.choice(n, size=max(3, n // 10), replace=False)
    r[idx] += rng.choice([-1.0, 1.0], idx.size) * rng.uniform(5.0, 12.0, idx.size)
    return r


# --- (a) the config itself ---------------------------------------------------------------------
def test_config_shape_labels_and_thresholds():
    cfg = ec.make_eval_config(
        label_keys=dict(zip(F.LABEL_KEYS, F.TRUTH_KEYS)), thresholds={F.VD: 35.0}, change_thresholds={F.EBV: None}
    )
    tfma.utils.verify_eval_config(cfg)
    (spec,) = cfg.model_specs
    assert spec.signature_name == "serving_default"
    assert list(spec.preprocessing_function_names) == ["transform_features"]
    assert dict(spec.label_keys) == {"log_age": "true_log_age", "mh": "true_mh", "ebv": "true_ebv", "vd": "true_vd"}
    assert [list(s.feature_keys) for s in cfg.slicing_specs] == [[], ["snr_bin_xf"], ["z_bin_xf"], ["bpt_class"]]
    by_output = {m.output_names[0]: m for m in cfg.metrics_specs}
    assert set(by_output) == set(F.LABEL_KEYS)
    vd_std = next(m for m in by_output[F.VD].metrics if m.class_name == "ClippedStdResidual")
    (per_slice,) = vd_std.per_slice_thresholds
    assert list(per_slice.slicing_specs) == [tfma.SlicingSpec()]  # overall slice only
    assert per_slice.threshold.value_threshold.upper_bound.value == 35.0
    assert per_slice.threshold.change_threshold.absolute.value == pytest.approx(3.5)
    assert per_slice.threshold.change_threshold.direction == tfma.MetricDirection.LOWER_IS_BETTER
    ebv_std = next(m for m in by_output[F.EBV].metrics if m.class_name == "ClippedStdResidual")
    assert not ebv_std.per_slice_thresholds[0].threshold.HasField("change_threshold")
    # What the TFX Evaluator does: no baseline -> change thresholds dropped, value ones kept.
    alone = tfma.utils.update_eval_config_with_defaults(cfg, has_baseline=False, rubber_stamp=True)
    assert not tfma.utils.has_change_threshold(alone)
    assert tfma.metrics.metric_thresholds_from_metrics_specs(alone.metrics_specs)  # so TFX runs validation
    paired = tfma.utils.update_eval_config_with_defaults(cfg, has_baseline=True, rubber_stamp=True)
    assert [(m.name, m.is_baseline) for m in paired.model_specs] == [("candidate", False), ("baseline", True)]
    # The custom metrics resolve through MetricConfig.module, as on a Beam worker.
    custom = [m for m in by_output[F.VD].metrics if m.module]
    assert {m.class_name for m in custom} == {"ClippedMeanResidual", "ClippedStdResidual", "Coverage68"}
    assert all(m.module == "stellarpop.pipeline.evaluation.metrics" for m in custom)
    with pytest.raises(ValueError, match="without labels"):
        ec.make_eval_config(thresholds={"true_vd": 1.0})
    # One default label source for Transform, Trainer and Evaluator (they used to differ).
    default = ec.make_eval_config().model_specs[0].label_keys
    assert dict(default) == F.label_features(PreprocessingConfig().label_source)


# --- (b) real TFMA runs --------------------------------------------------------------------------
def _examples(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        F.LOG_AGE: rng.uniform(8.0, 10.2, n).astype(np.float32),
        F.MH: rng.uniform(-1.5, 0.2, n).astype(np.float32),
        F.EBV: rng.uniform(0.0, 0.6, n).astype(np.float32),
        F.VD: rng.uniform(50.0, 350.0, n).astype(np.float32),
        F.SNR_R: rng.uniform(5.0, 40.0, n).astype(np.float32),
        F.Z: rng.uniform(0.01, 0.29, n).astype(np.float32),
        F.BPT_CLASS: rng.choice(["passive", "star-forming", "composite", "AGN"], n),
        OFFSET: _residuals_with_outliers(rng, n).astype(np.float32),
    }


def _write_tfrecord(path, cols: dict[str, np.ndarray]) -> None:
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(len(cols[OFFSET])):
            feats = {}
            for k, v in cols.items():
                if v.dtype.kind == "U":
                    feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v[i].encode()]))
                else:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v[i])]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


class _ToyModel(tf.Module):
    """serving_default: prediction = label + scale * (offset + BIAS), error = scale; log_age and
    mh come out as [batch, 1], ebv and vd as [batch]. transform_features: the S/N and z bins."""

    SPEC = {k: tf.io.FixedLenFeature([], tf.float32) for k in (*F.LABEL_KEYS, F.SNR_R, F.Z, OFFSET)}

    def __init__(self, scales: dict[str, float]):
        super().__init__()
        self.scales = dict(scales)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        x = tf.io.parse_example(examples, self.SPEC)
        out = {}
        for k, s in self.scales.items():
            pred = x[k] + tf.constant(s, tf.float32) * (x[OFFSET] + tf.constant(BIAS, tf.float32))
            err = tf.fill(tf.shape(pred), tf.constant(s, tf.float32))
            if k in (F.LOG_AGE, F.MH):
                pred, err = pred[:, None], err[:, None]
            out[k], out[k + M.ERROR_SUFFIX] = pred, err
        return out

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform(self, examples):
        x = tf.io.parse_example(examples, self.SPEC)
        return {
            SNR_BIN: tf.cast(tf.raw_ops.Bucketize(input=x[F.SNR_R], boundaries=list(F.SNR_BIN_EDGES)), tf.int64),
            Z_BIN: tf.cast(tf.raw_ops.Bucketize(input=x[F.Z], boundaries=list(F.Z_BIN_EDGES)), tf.int64),
        }


def _save(path, scales) -> str:
    m = _ToyModel(scales)
    sigs = {
        "serving_default": m.serve.get_concrete_function(),
        ec.PREPROCESSING_FUNCTION: m.transform.get_concrete_function(),
    }
    tf.saved_model.save(m, str(path), signatures=sigs)
    return str(path)


def _expected_resid(cols, output: str, scale: float) -> np.ndarray:
    """The model's float32 arithmetic, then the float64 difference TFMA takes."""
    pred = cols[output] + np.float32(scale) * (cols[OFFSET] + np.float32(BIAS))
    return pred.astype(np.float64) - cols[output].astype(np.float64)


def _analyse(cfg, models: dict[str, str], data: str, out: str) -> None:
    """As the TFX Evaluator does: defaults for (no) baseline, then one shared model per spec."""
    cfg = tfma.utils.update_eval_config_with_defaults(cfg, has_baseline=len(models) > 1, rubber_stamp=True)
    tfma.utils.verify_eval_config(cfg)
    shared = [
        tfma.default_eval_shared_model(eval_saved_model_path=path, model_name=name, eval_config=cfg)
        for name, path in models.items()
    ]
    tfma.run_model_analysis(
        eval_shared_model=shared if len(shared) > 1 else shared[0], eval_config=cfg, data_location=data, output_path=out
    )


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    cols = _examples(np.random.default_rng(11), N_EXAMPLES)
    _write_tfrecord(tmp / "eval.tfrecord", cols)
    good = _save(tmp / "good", GOOD_SCALES)
    worse_vd = _save(tmp / "worse", {**GOOD_SCALES, F.VD: 32.0})
    return tmp, cols, {"good": good, "worse_vd": worse_vd}


@pytest.fixture(scope="module")
def alone(toy):
    """The good model, no baseline, default thresholds."""
    tmp, _, models = toy
    out = str(tmp / "alone")
    _analyse(ec.make_eval_config(PPXF), {"": models["good"]}, str(tmp / "eval.tfrecord"), out)
    return out


def test_tfma_clipped_mean_overall_and_on_a_slice(toy, alone):
    _, cols, _ = toy
    got = M.read_metrics(alone)
    for output in (F.LOG_AGE, F.VD):  # one [batch, 1] and one [batch] output
        resid = _expected_resid(cols, output, GOOD_SCALES[output])
        mean, std, n_kept = M.sigma_clipped_mean_std(resid)
        assert n_kept < N_EXAMPLES  # the clipping did something
        overall = got[()]
        assert overall[M.metric_name("clipped_mean", output)] == pytest.approx(mean, rel=1e-5)
        assert overall[M.metric_name("clipped_std", output)] == pytest.approx(std, rel=1e-5)
        assert overall[M.metric_name("example_count", output)] == N_EXAMPLES
        assert overall[M.metric_name("mae", output)] == pytest.approx(np.mean(np.abs(resid)), rel=1e-5)
        assert overall[M.metric_name("rmse", output)] == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-4)
        covered = np.abs(resid) <= np.float32(GOOD_SCALES[output])
        assert overall[M.metric_name("coverage68", output)] == pytest.approx(covered.mean(), abs=1e-9)
        sel = cols[F.BPT_CLASS] == "passive"
        on_slice = got[((F.BPT_CLASS, "passive"),)]
        want = M.sigma_clipped_mean_std(resid[sel])[0]
        assert on_slice[M.metric_name("clipped_mean", output)] == pytest.approx(want, rel=1e-5)
        assert on_slice[M.metric_name("example_count", output)] == sel.sum()


def test_tfma_slices_on_transformed_and_raw_features(toy, alone):
    _, cols, _ = toy
    slices = set(M.read_metrics(alone))
    by_feature = {}
    for s in slices:
        for name, value in s:
            by_feature.setdefault(name, set()).add(value)
    assert by_feature[SNR_BIN] == set(np.digitize(cols[F.SNR_R], F.SNR_BIN_EDGES).tolist())
    assert by_feature[Z_BIN] == set(np.digitize(cols[F.Z], F.Z_BIN_EDGES).tolist())
    assert by_feature[F.BPT_CLASS] == set(cols[F.BPT_CLASS].tolist())
    assert () in slices


def test_tfma_validation_value_thresholds(toy, alone):
    _, cols, _ = toy
    assert tfma.load_validation_result(alone).validation_ok
    # The same metrics against a bound the ebv output misses: one failure, overall slice only.
    ebv_std = M.sigma_clipped_mean_std(_expected_resid(cols, F.EBV, GOOD_SCALES[F.EBV]))[1]
    tight = tfma.utils.update_eval_config_with_defaults(
        ec.make_eval_config(PPXF, thresholds={F.EBV: 0.9 * ebv_std}), has_baseline=False, rubber_stamp=True
    )
    failures = []
    for per_slice in tfma.load_metrics(alone):
        slice_key = tfma.slicer.deserialize_slice_key(per_slice.slice_key)
        values = {
            tfma.metrics.MetricKey.from_proto(kv.key): kv.value.double_value.value
            for kv in per_slice.metric_keys_and_values
        }
        result = metrics_validator.validate_metrics((slice_key, values), tight)
        for per_slice_failures in result.metric_validations_per_slice:
            failures += [(slice_key, f.metric_key.name, f.metric_key.output_name) for f in per_slice_failures.failures]
    assert failures == [((), "clipped_std_residual", F.EBV)]


def test_tfma_change_threshold_against_baseline(toy):
    """Candidate 'worse_vd' (vd scatter x1.6, still under 40 km/s) against baseline 'good':
    only the vd change threshold fails."""
    tmp, cols, models = toy
    out = str(tmp / "paired")
    cfg = ec.make_eval_config(PPXF)
    pair = {tfma.CANDIDATE_KEY: models["worse_vd"], tfma.BASELINE_KEY: models["good"]}
    _analyse(cfg, pair, str(tmp / "eval.tfrecord"), out)
    result = tfma.load_validation_result(out)
    assert not result.validation_ok
    failures = [
        (f.metric_key.name, f.metric_key.output_name, f.metric_key.is_diff, v.slice_key.ByteSize())
        for v in result.metric_validations_per_slice
        for f in v.failures
    ]
    assert failures == [("clipped_std_residual", F.VD, True, 0)]  # on the overall slice (empty key)
    std_good = M.sigma_clipped_mean_std(_expected_resid(cols, F.VD, GOOD_SCALES[F.VD]))[1]
    std_worse = M.sigma_clipped_mean_std(_expected_resid(cols, F.VD, 32.0))[1]
    assert std_worse < ec.DEFAULT_STD_THRESHOLDS[F.VD] and std_worse - std_good > 0.1 * ec.DEFAULT_STD_THRESHOLDS[F.VD]
    assert any(s and s[0][0] == SNR_BIN for s in M.read_metrics(out))  # per-model transformed features
    name = M.metric_name("clipped_std", F.VD)
    assert M.read_metrics(out)[()][name] == pytest.approx(std_worse, rel=1e-5)
    assert M.read_metrics(out, model_name=tfma.BASELINE_KEY)[()][name] == pytest.approx(std_good, rel=1e-5)
