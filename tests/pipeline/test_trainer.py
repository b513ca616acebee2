"""The Trainer module: run_fn on tiny raw data behind a real transform graph, the exported
SavedModel's signatures (raw examples without labels -> physical units), and a killed
training that resumes to the uninterrupted result."""

from __future__ import annotations

import functools
import json
import math
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
import tf_keras as keras
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx.components.trainer.fn_args_utils import FnArgs  # = tfx.v1.components.FnArgs, without importing all of TFX
from tfx_bsl.public import tfxio

from stellarpop.components import examples
from stellarpop.components.spectra import Spectrum
from stellarpop.pipeline.training import export, inputs, models, resume, trainer
from stellarpop.schema import features as F
from stellarpop.schema import model_contract as contract
from stellarpop.transforms import preprocessing as P

GRID = F.model_grid()
N_TRAIN, N_EVAL = 48, 16
LOW = {F.LOG_AGE: 8.0, F.MH: -1.5, F.EBV: 0.0, F.VD: 60.0}
HIGH = {F.LOG_AGE: 10.2, F.MH: 0.2, F.EBV: 0.6, F.VD: 350.0}


def mock(rng: np.random.Generator, i: int) -> tuple[Spectrum, dict[str, float]]:
    """A spectrum whose slope follows its age and whose noise follows its S/N."""
    labels = {k: float(rng.uniform(LOW[k], HIGH[k])) for k in F.LABEL_KEYS}
    snr = float(rng.uniform(5, 40))
    clean = 5.0 * (GRID / 5000.0) ** (labels[F.LOG_AGE] - 11.0) * (1 - 0.3 * np.exp(-0.5 * ((GRID - 5175) / 3) ** 2))
    flux = clean + clean / snr * rng.standard_normal(F.N_PIXELS)
    ivar = np.full(F.N_PIXELS, (snr / 5.0) ** 2)
    bad = rng.uniform(size=F.N_PIXELS) < 0.01
    ivar[bad] = 0
    spec = Spectrum(
        wave=GRID,
        flux=flux.astype(np.float32),
        ivar=ivar.astype(np.float32),
        bad=bad,
        spec_id=f"mock-{i}",
        z=float(rng.uniform(0.01, 0.3)),
        snr_r=snr,
        bpt_class=("passive", "star-forming")[i % 2],
    )
    return spec, labels


def write_gzip(path: str, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in records:
            writer.write(record)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Raw train/eval splits as TFX lays them out, and the transform graph of train."""
    root = tmp_path_factory.mktemp("trainer")
    rng = np.random.default_rng(3)
    mocks = [mock(rng, i) for i in range(N_TRAIN + N_EVAL)]
    for split, part in (("train", mocks[:N_TRAIN]), ("eval", mocks[N_TRAIN:])):
        os.makedirs(root / f"Split-{split}")
        write_gzip(
            str(root / f"Split-{split}" / "data.gz"),
            [examples.to_example(s, labels=lab).SerializeToString() for s, lab in part],
        )
    schema = schema_utils.schema_from_feature_spec(examples.feature_spec(labels=True))
    source = tfxio.TFExampleRecord(str(root / "Split-train" / "*"), schema=schema)
    transform_dir = str(root / "transform")
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tmp")):
        raw = pipeline | source.BeamSource()
        (_, _), transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeAndTransformDataset(
            functools.partial(P.preprocessing_fn, custom_config={"preprocessing": {"label_source": "ppxf"}})
        )
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    # As TFX's Transform executor does: the raw schema next to the graph.
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata(schema), os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR)
    )
    return {"root": root, "mocks": mocks, "transform_dir": transform_dir}


@pytest.fixture(scope="module")
def trained(data) -> dict:
    root = data["root"]
    fn_args = FnArgs(
        train_files=[str(root / "Split-train" / "*")],
        eval_files=[str(root / "Split-eval" / "*")],
        transform_output=data["transform_dir"],
        serving_model_dir=str(root / "serving"),
        model_run_dir=str(root / "run"),
        train_steps=None,
        eval_steps=None,
        custom_config={
            "model": "default",
            "epochs": 2,
            "batch_size": 16,
            "seed": 1,
            "cache": True,
            "preprocessing": {"label_source": "ppxf"},
            "code_fingerprint": "bookkeeping",
        },
        data_accessor=None,
    )
    trainer.run_fn(fn_args)
    return {"fn_args": fn_args, "loaded": tf.saved_model.load(fn_args.serving_model_dir)}


def serialized(mocks, labels: bool) -> tf.Tensor:
    return tf.constant([examples.to_example(s, labels=lab if labels else None).SerializeToString() for s, lab in mocks])


def test_serving_default_takes_unlabelled_examples_and_returns_physical_units(data, trained):
    serve = trained["loaded"].signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == [contract.INPUT_KEY]
    eval_mocks = data["mocks"][N_TRAIN:]
    out = {k: v.numpy() for k, v in serve(examples=serialized(eval_mocks, labels=False)).items()}
    assert (
        set(out)
        == set(export.OUTPUT_KEYS)
        == set(F.LABEL_KEYS) | {k + "_err" for k in F.LABEL_KEYS} | {F.OOD_SCORE, F.OOD_FLAG}
    )
    assert np.all(np.isfinite(out[F.OOD_SCORE])) and out[F.OOD_FLAG].dtype == bool
    train_labels = {k: np.array([lab[k] for _, lab in data["mocks"][:N_TRAIN]], np.float32) for k in F.LABEL_KEYS}
    for key in F.LABEL_KEYS:
        low, high = train_labels[key].min(), train_labels[key].max()
        span = high - low
        assert out[key].shape == (N_EVAL,) and np.all(np.isfinite(out[key])), key
        assert np.all((out[key] > low - span) & (out[key] < high + span)), key
        err = out[key + "_err"]
        assert np.all(np.isfinite(err)) and np.all(err > 0) and np.all(err < 5 * span), key


def test_serving_equals_checkpoint_behind_transform_features(data, trained):
    """The serving graph is the TFT layer, the best checkpoint and the inverse scaling."""
    loaded, fn_args = trained["loaded"], trained["fn_args"]
    eval_mocks = data["mocks"][N_TRAIN:]
    transformed = loaded.signatures["transform_features"](examples=serialized(eval_mocks, labels=True))
    assert {P.FLUX_XF, P.SNR_BIN_XF, P.Z_BIN_XF, P.Z_XF, *P.LABEL_XF_KEYS} <= set(transformed)
    assert F.transformed_name(F.BPT_CLASS) not in transformed  # TFMA slices on the raw bpt_class
    model = models.build("default")
    model.load_weights(os.path.join(fn_args.model_run_dir, trainer.CHECKPOINT)).expect_partial()
    y_pred = model({k: transformed[k] for k in model.input_names}, training=False)
    want = export.to_physical(y_pred, transformed, predicts_variance=True)
    got = loaded.signatures["serving_default"](examples=serialized(eval_mocks, labels=False))
    # The means as trained; the errors widened by the score and scaled (calibration.py).
    calib = export.read_model_info(fn_args.serving_model_dir)["calibration"]
    score = got[F.OOD_SCORE].numpy()
    np.testing.assert_array_equal(got[F.OOD_FLAG].numpy(), score > calib["ood_threshold"])
    for key in F.LABEL_KEYS:
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(
            got[key + "_err"].numpy(),
            want[key + "_err"].numpy() * np.sqrt(np.maximum(score, 1)) * calib["interval_scale"][key],
            rtol=1e-5,
            err_msg=key,
        )


def test_model_carries_its_metadata(data, trained):
    metadata = trained["loaded"].signatures["metadata"]
    info = json.loads(metadata(examples=tf.constant([b""], tf.string))[contract.METADATA_OUTPUT].numpy()[0])
    # One copy per Example (a batch dimension, which TF Serving's batching requires).
    assert metadata(examples=tf.constant([b"", b""], tf.string))[contract.METADATA_OUTPUT].shape == (2,)
    serving_dir = trained["fn_args"].serving_model_dir
    with open(os.path.join(serving_dir, contract.MODEL_INFO_FILE)) as f:
        assert json.load(f) == info
    assert info["architecture"] == "default" and info["label_source"] == "ppxf" and info["predicts_variance"]
    assert info["wavelength_grid"] == {
        "start": 3800.0,
        "step": 1.0,
        "n_pixels": 5100,
        "unit": "Angstrom",
        "frame": "observed, vacuum",
    }
    assert info["normalisation_window"] == {"centre": F.NORM_CENTRE, "half_width": F.NORM_HALF_WIDTH}
    assert info["stellarpop_version"] == "0.1.0"
    for key in F.LABEL_KEYS:
        values = np.array([lab[key] for _, lab in data["mocks"][:N_TRAIN]], np.float32)
        assert (info["labels"][key]["min"], info["labels"][key]["max"]) == (float(values.min()), float(values.max()))
    assert info["training"]["epochs_run"] == 2 and info["training"]["seed"] == 1
    # Calibrated on the 16 eval examples: at least ceil(17 x 0.6827) = 12 of them covered.
    calib = info["calibration"]
    assert calib["n_eval"] == N_EVAL and calib["n_train"] == N_TRAIN
    assert all(12 / 16 <= c <= 1 for c in calib["eval_coverage_after"].values())
    assert info["serving"]["outputs"] == list(export.OUTPUT_KEYS)


def test_run_outputs(trained):
    run_dir = trained["fn_args"].model_run_dir
    assert os.path.exists(os.path.join(run_dir, trainer.CHECKPOINT + ".index"))
    with open(os.path.join(run_dir, "loss_curve.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(run_dir, "history.json")) as f:
        record = json.load(f)
    assert len(record["history"]["loss"]) == len(record["history"]["val_loss"]) == 2
    assert record["best_val_loss"] == min(record["history"]["val_loss"])
    assert record["config"]["batch_size"] == 16 and record["resumed_from_epoch"] == 0
    assert os.listdir(os.path.join(run_dir, "resume")) == []  # the state is gone once exported
    assert tf.io.gfile.glob(os.path.join(run_dir, "train", "events.out.tfevents.*"))
    assert tf.io.gfile.glob(os.path.join(run_dir, "validation", "events.out.tfevents.*"))


def test_input_fn_yields_selected_inputs_and_scaled_labels(data):
    output = tft.TFTransformOutput(data["transform_dir"])
    files = str(data["root"] / "Split-train" / "*")
    features, labels = next(iter(inputs.input_fn(files, output, batch_size=N_TRAIN, feature_keys=[P.FLUX_XF])))
    assert list(features) == [P.FLUX_XF] and features[P.FLUX_XF].shape == (N_TRAIN, F.N_PIXELS)
    # Every training label is scaled into [0, 1], the extremes exactly onto 0 and 1.
    np.testing.assert_allclose(labels.numpy().min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(labels.numpy().max(axis=0), 1.0, atol=1e-6)
    first = {k: data["mocks"][0][1][k] for k in F.LABEL_KEYS}
    ranges = inputs.read_label_ranges(files, output)
    want = [(first[k] - ranges[k][0]) / (ranges[k][1] - ranges[k][0]) for k in F.LABEL_KEYS]
    np.testing.assert_allclose(labels.numpy()[0], want, rtol=1e-5)


def test_cached_input_fn_gives_the_same_batches(data):
    output = tft.TFTransformOutput(data["transform_dir"])
    files = str(data["root"] / "Split-eval" / "*")
    keys = models.get("default").inputs
    plain = list(inputs.input_fn(files, output, batch_size=5, feature_keys=keys))
    cached = inputs.input_fn(files, output, batch_size=5, feature_keys=keys, cache=True)
    for _ in range(2):  # the second pass reads the cache
        batches = list(cached)
        assert [b[1].shape[0] for b in batches] == [5, 5, 5, 1]
        for (f1, y1), (f2, y2) in zip(plain, batches):  # (to float32 rounding: other batch sizes)
            np.testing.assert_allclose(y1.numpy(), y2.numpy(), rtol=1e-6)
            for key in keys:
                np.testing.assert_allclose(f1[key].numpy(), f2[key].numpy(), rtol=1e-6)


def test_to_physical_inverts_the_scaling_and_paper_errors_are_nan():
    transformed = {}
    for i, key in enumerate(F.LABEL_KEYS):
        low_key, high_key = P.range_keys(key)
        transformed[low_key], transformed[high_key] = tf.fill([2], float(i)), tf.fill([2], float(3 * i + 2))
    means = tf.constant([[0.0, 0.5, 1.0, 0.25], [1.0, 0.0, 0.5, 0.75]])
    logvar = tf.fill([2, 4], math.log(0.01))
    out = export.to_physical(tf.concat([means, logvar], axis=1), transformed, predicts_variance=True)
    spans = np.array([2.0 * i + 2 for i in range(4)])
    np.testing.assert_allclose(out[F.MH].numpy(), 1 + means.numpy()[:, 1] * spans[1])
    np.testing.assert_allclose(out[F.VD + "_err"].numpy(), 0.1 * spans[3], rtol=1e-6)
    paper = export.to_physical(means, transformed, predicts_variance=False)
    np.testing.assert_allclose(paper[F.LOG_AGE].numpy(), means.numpy()[:, 0] * 2)
    assert np.all(np.isnan(paper[F.EBV + "_err"].numpy()))


def test_config_and_steps():
    config = trainer.TrainConfig.from_custom_config(
        {
            "preprocessing": {"label_source": "truth", "preparation": {"norm_centre": 5500.0}},
            "model": "paper",
            "resume_dir": "",
            "code_fingerprint": "x",
        }
    )
    assert config.epochs == 20 and config.lr == 1e-4 and config.preprocessing.label_source == "truth"
    assert config.preprocessing.norm_window == (5500.0, F.NORM_HALF_WIDTH)
    assert trainer.TrainConfig.from_custom_config(None).lr == 1e-3
    with pytest.raises(KeyError):
        trainer.TrainConfig.from_custom_config({"model": "nope"})
    with pytest.raises(ValueError):
        trainer.TrainConfig.from_custom_config({"preprocessing": {"label_source": "sdss"}})
    # The bug this replaced: a Transform setting given to the Trainer alone was ignored by
    # the graph but written into the model's metadata. Now it is refused, by name.
    with pytest.raises(ValueError, match="unknown keys \\['norm_centre'\\]"):
        trainer.TrainConfig.from_custom_config({"norm_centre": 5500.0})
    with pytest.raises(ValueError, match="unrelated"):
        trainer.TrainConfig.from_custom_config({"unrelated": 0})
    assert resume.steps_per_epoch(None, 5) is None and resume.steps_per_epoch(0, 5) is None
    assert resume.steps_per_epoch(101, 10) == 11
    cosine = trainer.TrainConfig(epochs=4, lr_schedule="cosine")
    assert [cosine.epoch_lr(e) for e in range(4)] == pytest.approx([1e-3, 0.8536e-3, 0.5e-3, 0.1464e-3], rel=1e-3)
    assert trainer.TrainConfig(epochs=4).epoch_lr(3) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule 'step' is not one of \\['constant', 'cosine'\\]"):
        trainer.TrainConfig.from_custom_config({"lr_schedule": "step"})
    with pytest.raises(ValueError, match="lr_schedule 'step'"):
        trainer.TrainConfig(lr_schedule="step")


def test_nll_beta_weights_the_nll_by_the_predicted_variance():
    """nll_beta 0 keeps the model's loss; 0.5 is gaussian_nll with beta 0.5, whose gradient
    with respect to a mean is that of the plain NLL times the variance ** 0.5; refused for a
    model without variances and out of (0, 1]."""
    assert trainer.TrainConfig().loss is models.gaussian_nll
    config = trainer.TrainConfig.from_custom_config({"nll_beta": 0.5})
    y = tf.constant([[0.2, 0.4, 0.6, 0.8]])
    pred = tf.Variable([[0.3, 0.1, 0.6, 0.9, -2.0, -4.0, 0.0, -6.0]])
    with tf.GradientTape(persistent=True) as tape:
        plain, weighted = models.gaussian_nll(y, pred), config.loss(y, pred)
    assert float(weighted) == pytest.approx(float(models.gaussian_nll(y, pred, beta=0.5)))
    ratio = tape.gradient(weighted, pred)[0, :4] / tape.gradient(plain, pred)[0, :4]
    np.testing.assert_allclose(ratio.numpy()[[0, 1, 3]], np.exp(0.5 * np.array([-2.0, -4.0, -6.0])), rtol=1e-5)
    for bad in ({"nll_beta": 1.5}, {"nll_beta": -0.5}, {"nll_beta": 0.5, "model": "paper"}):
        with pytest.raises(ValueError, match="nll_beta"):
            trainer.TrainConfig.from_custom_config(bad)


class Killed(Exception):
    """Stands for a SIGKILL right after an epoch's state was saved."""


def test_a_killed_training_resumes_to_the_uninterrupted_result(data, tmp_path, monkeypatch):
    """Same weights, optimizer, learning-rate schedule, data order and dropout masks: the
    histories are identical."""
    config = trainer.TrainConfig(
        model="default", epochs=3, batch_size=16, seed=2, patience=5, cache=True, lr_schedule="cosine"
    )
    args = (
        str(data["root"] / "Split-train" / "*"),
        str(data["root"] / "Split-eval" / "*"),
        tft.TFTransformOutput(data["transform_dir"]),
    )
    _, whole = trainer.train(config, *args, str(tmp_path / "whole"), state_dir=str(tmp_path / "whole-state"))
    save = resume.EpochState.on_epoch_end

    def killed_after_the_first_epoch(self, epoch, logs=None):
        save(self, epoch, logs)
        raise Killed

    monkeypatch.setattr(resume.EpochState, "on_epoch_end", killed_after_the_first_epoch)
    with pytest.raises(Killed):
        trainer.train(config, *args, str(tmp_path / "killed"), state_dir=str(tmp_path / "state"))
    monkeypatch.undo()
    _, resumed = trainer.train(config, *args, str(tmp_path / "resumed"), state_dir=str(tmp_path / "state"))
    assert resumed["resumed_from_epoch"] == 1 and whole["resumed_from_epoch"] == 0
    assert resumed["history"] == whole["history"]
    assert whole["history"]["lr"] == pytest.approx([config.epoch_lr(e) for e in range(3)])
    assert (resumed["best_epoch"], resumed["best_val_loss"]) == (whole["best_epoch"], whole["best_val_loss"])


def test_beta_nll_training_stops_and_picks_on_the_plain_nll(data, tmp_path):
    """beta-NLL's value shrinks with the predicted variances, so it says nothing of progress
    (a first run stopped at epoch 11 and exported epoch 1): with nll_beta, early stopping and
    the best epoch read the plain Gaussian NLL on the eval split."""
    config = trainer.TrainConfig(model="default", epochs=3, batch_size=16, seed=2, patience=5, nll_beta=0.5)
    _, record = trainer.train(
        config,
        str(data["root"] / "Split-train" / "*"),
        str(data["root"] / "Split-eval" / "*"),
        tft.TFTransformOutput(data["transform_dir"]),
        str(tmp_path / "run"),
        state_dir=str(tmp_path / "state"),
    )
    nll = record["history"]["val_gaussian_nll"]
    assert record["monitor"] == "val_gaussian_nll" and record["loss"] == "beta_nll" and len(nll) == 3
    assert record["best_epoch"] == int(np.argmin(nll)) + 1 and record["best_val_loss"] == min(nll)
    assert trainer.TrainConfig().monitor == "val_loss"
    from stellarpop.pipeline.report.figures import plot_loss_curve

    assert len(plot_loss_curve(record).axes) == 2  # the plain NLL on its own axis
    assert len(plot_loss_curve({**record, "monitor": "val_loss"}).axes) == 1


def test_epoch_state_stops_on_its_monitor(tmp_path):
    """The same history stops a training that watches the plain NLL (no better for 2 epochs)
    and not one that watches the beta-NLL loss (still improving)."""
    history = {
        "loss": [0.0] * 4,
        "val_loss": [-0.05, -0.06, -0.07, -0.08],
        "val_gaussian_nll": [-1.0, -1.2, -1.1, -1.15],
    }
    (tmp_path / resume.STATE_FILE).write_text(json.dumps({"history": history, "seconds": 1.0}))
    assert resume.EpochState(str(tmp_path), patience=2, monitor="val_gaussian_nll").finished(epochs=10)
    assert not resume.EpochState(str(tmp_path), patience=2).finished(epochs=10)


@pytest.mark.parametrize("seed", range(20))
def test_early_stopping_and_best_epoch_follow_keras(seed):
    """should_stop and best_epoch decide from the history as EarlyStopping and
    ModelCheckpoint(save_best_only) decide from the epochs they saw."""
    rng = np.random.default_rng(seed)
    val = [float(v) for v in rng.choice([0.5, 0.4, 0.3, 0.3, math.nan], size=12)]
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(rng.integers(1, 4)))
    stopper.set_model(keras.Sequential())
    stopper.on_train_begin()
    saved, best = None, math.inf
    for epoch, value in enumerate(val):
        stopper.on_epoch_end(epoch, {"val_loss": value})
        saved, best = (epoch, value) if value < best else (saved, best)
        assert resume.should_stop(val[: epoch + 1], stopper.patience) == bool(stopper.model.stop_training)
        assert resume.best_epoch(val[: epoch + 1]) == saved
        if stopper.model.stop_training:
            break


def test_export_carries_warmup_requests(trained):
    """Each export holds TF Serving's warmup records: real eval Examples, 4 per request."""
    from stellarpop.pipeline.training import warmup

    requests = warmup.read_warmup(trained["fn_args"].serving_model_dir)
    sizes = [len(tf.make_ndarray(r.inputs["examples"])) for r in requests]
    assert sizes == [export.WARMUP_BATCH] * (export.WARMUP_EXAMPLES // export.WARMUP_BATCH)
    assert all(r.model_spec.signature_name == "serving_default" for r in requests)
    assert warmup.check_warmup(trained["fn_args"].serving_model_dir) == len(requests)


def test_an_export_is_recalibrated_without_changing_its_means(data, trained, tmp_path):
    """``stellarpop calibrate``: the same weights behind the same graph, calibrated anew on the
    given splits; a folder that exists is refused, and so is a graph that is not the model's."""
    from typer.testing import CliRunner

    from stellarpop.pipeline.cli import app
    from stellarpop.pipeline.training import calibration, recalibrate

    root, old = data["root"], trained["fn_args"].serving_model_dir
    new = tmp_path / "7"
    args = [
        "calibrate",
        "--model",
        old,
        "--transform-graph",
        data["transform_dir"],
        "--train",
        str(root / "Split-train" / "*"),
        "--eval",
        str(root / "Split-eval" / "*"),
        "-o",
        str(new),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = export.read_model_info(str(new))
    assert info["recalibrated_from"]["weights_sha256"] == export.weights_digest(export.exported_weights(old))
    assert info["calibration"]["n_eval"] == N_EVAL and info["architecture"] == "default"
    assert recalibrate.check_same_means(old, str(new), [str(root / "Split-eval" / "data.gz")]) <= recalibrate.MEAN_RTOL
    for bad, named in (
        (args, "--output"),
        (args[:2] + [str(root / "none")] + args[3:], "--model"),
        (args[:6] + [str(root / "none*")] + args[7:], "--train"),
    ):
        refused = CliRunner().invoke(app, bad)
        assert refused.exit_code == 2 and refused.output.startswith(f"error: {named} "), refused.output
    # The shipped model is another network: its means differ, and the check says so.
    from stellarpop.serving import predict

    with pytest.raises(calibration.CalibrationError, match="not the model's"):
        recalibrate.check_same_means(predict.model_dir(None), str(new), [str(root / "Split-eval" / "data.gz")])
