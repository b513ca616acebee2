"""TFX Trainer module: ``run_fn`` and the training loop.

Transform runs without materialisation, so the Trainer reads the RAW examples (gzipped
TFRecords) and applies the transform graph itself, through the TFT layer, in ``tf.data``
(:mod:`stellarpop.pipeline.training.inputs`). The same TFT layer is attached to the exported model:
a client sends raw tf.Examples (``components.examples.to_example``, no labels) and gets the
labels in physical units.

``custom_config`` (unknown keys are errors):

=================  =============  ==========================================================
key                default        meaning
=================  =============  ==========================================================
model              "default"      a ``pipeline.models`` registry name ("default", "paper")
epochs             20             maximum epochs (the paper: 100)
batch_size         32             (the paper's)
learning_rate      None           Adam learning rate; None: the model's (paper 1e-4,
                                  default 1e-3)
lr_schedule        "constant"     or "cosine": epoch e (0-based) at learning_rate x
                                  (1 + cos(pi e / epochs)) / 2
nll_beta           0.0            > 0: beta-NLL (``models.gaussian_nll``) for a model that
                                  predicts variances; 0: its plain loss
patience           5              early stopping on val_loss (with nll_beta: on the plain NLL,
                                  val_gaussian_nll); the best epoch is exported
seed               0              ``keras.utils.set_random_seed`` and the shuffle seed
preprocessing      (defaults)     the ``transforms.config.PreprocessingConfig`` that
                                  Transform ran with (label source, preparation with the
                                  normalisation window); recorded in the model's metadata
hparams            {}             keyword arguments of the model builder
shuffle_buffer     2048           examples in the shuffle buffer
cache              False          keep the transformed inputs in memory after the first
                                  epoch (~61 kB per spectrum for "default"; see input_fn)
resume_dir         ""             where killed trainings leave their state (``resume.resume_state_dir``);
                                  "": inside ``model_run_dir`` (no resume across executions)
code_fingerprint   ""             the pipeline's cache bookkeeping; not read
=================  =============  ==========================================================

Steps: ``fn_args.train_steps`` None (or 0) trains full passes over the data per epoch;
otherwise the total ``train_steps`` is spread over ``epochs`` (repeating the data).
``eval_steps`` None (or 0) validates on the whole eval split each epoch.

Written to ``model_run_dir``: TensorBoard logs (``train/``, ``validation/``; of this
execution's epochs), the best weights (``checkpoints/best``, TF checkpoint),
``history.json`` (every epoch's metrics, ``resumed_from_epoch``) and ``loss_curve.png``
(train and validation loss per epoch, as the paper's Fig. 3).

Warm start: given a base model (``fn_args.base_model``: the Trainer's ``base_model`` input,
the latest blessed model in a streaming pipeline), training starts from its exported weights
(:func:`export.restore_weights`) if it is of the same architecture and hyperparameters, else
from a fresh initialisation (the reason is logged and recorded). ``model_info.json`` records
``warm_start_from`` (the base model's path, or null) and, under ``training``, the digest of
the weights training started from (``initial_weights_sha256``).

Resuming after a killed execution: :mod:`stellarpop.pipeline.training.resume`. The SavedModel in
``serving_model_dir`` and its signatures: :mod:`stellarpop.pipeline.training.export`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from stellarpop.pipeline.training import calibration, models
from stellarpop.pipeline.training.export import (
    add_warmup,
    export_model,
    model_info,
    restore_weights,
    skip_autograph_for_tf_keras,
    weights_digest,
)
from stellarpop.pipeline.training.inputs import input_fn, matching_files, read_label_ranges
from stellarpop.pipeline.training.resume import (
    RESUME_DIR_KEY,
    EpochState,
    best_epoch,
    checkpointable_randomness,
    continue_data_order,
    resume_state_dir,
    steps_per_epoch,
)
from stellarpop.schema import config_codec
from stellarpop.transforms import preprocessing as P
from stellarpop.transforms.config import PreprocessingConfig

log = logging.getLogger(__name__)

CHECKPOINT = os.path.join("checkpoints", "best")
BOOKKEEPING_KEYS = (RESUME_DIR_KEY,) + P.BOOKKEEPING_KEYS
CALIBRATION_BATCH = 256


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (see the module docstring for each key)."""

    model: str = "default"
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float | None = None
    lr_schedule: str = "constant"
    nll_beta: float = 0.0
    patience: int = 5
    seed: int = 0
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    hparams: dict = field(default_factory=dict)
    shuffle_buffer: int = 2048
    cache: bool = False

    @classmethod
    def from_custom_config(cls, custom_config: Mapping[str, Any] | None) -> TrainConfig:
        """The Trainer's ``custom_config`` without its bookkeeping keys; the model name is checked.

        Raises
        ------
        ValueError
            Unknown keys (e.g. a Transform setting given to the Trainer alone), a label
            source or model name that does not exist.
        """
        raw = {k: v for k, v in (custom_config or {}).items() if k not in BOOKKEEPING_KEYS}
        config = config_codec.from_dict(cls, raw, "trainer config")
        models.get(config.model)
        return config

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"trainer config: lr_schedule {self.lr_schedule!r} is not one of {sorted(LR_SCHEDULES)}")
        if not 0.0 <= self.nll_beta <= 1.0:
            raise ValueError(f"trainer config: nll_beta {self.nll_beta!r} is not in [0, 1]")
        if self.nll_beta and not self.spec.predicts_variance:
            raise ValueError(f"trainer config: nll_beta is for a model that predicts variances, not {self.model!r}")

    @property
    def spec(self) -> models.ModelSpec:
        return models.get(self.model)

    @property
    def loss(self):
        """The model's loss; with ``nll_beta``, the beta-NLL."""

        def beta_nll(y_true, y_pred):
            return models.gaussian_nll(y_true, y_pred, beta=self.nll_beta)

        return beta_nll if self.nll_beta else self.spec.loss

    @property
    def monitor(self) -> str:
        """What early stopping and the best epoch read: beta-NLL's value is no measure of
        progress (its weights shrink with the variances it predicts), the plain NLL is."""
        return "val_gaussian_nll" if self.nll_beta else "val_loss"

    @property
    def lr(self) -> float:
        return float(self.learning_rate or self.spec.learning_rate)

    def epoch_lr(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based): a function of the epoch alone, so a
        resumed training continues the schedule where it stopped."""
        return LR_SCHEDULES[self.lr_schedule](self.lr, epoch, self.epochs)


LR_SCHEDULES = {
    "constant": lambda lr, epoch, epochs: lr,
    "cosine": lambda lr, epoch, epochs: lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)),
}


# --- training ----------------------------------------------------------------------------------


def compile_model(config: TrainConfig) -> keras.Model:
    """The configured model, compiled with its loss, Adam, and the MSE of the means."""
    model = models.build(config.model, **config.hparams)
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr),
        loss=config.loss,
        metrics=[models.mean_mse] + ([models.gaussian_nll] if config.nll_beta else []),
    )
    return model


def train(
    config: TrainConfig,
    train_files: str | Sequence[str],
    eval_files: str | Sequence[str],
    tf_transform_output: tft.TFTransformOutput,
    model_run_dir: str,
    train_steps: int | None = None,
    eval_steps: int | None = None,
    state_dir: str | None = None,
    base_model: str | None = None,
) -> tuple[keras.Model, dict]:
    """Train with early stopping (resuming ``state_dir``, starting from the weights of the
    export ``base_model`` if it fits); return the model with its best weights and the history.

    Returns
    -------
    model, {'history': {metric: [per epoch]}, 'best_epoch': 1-based, 'best_val_loss' and 'monitor'
    (the history key early stopping and the best epoch read, and its best value),
    'seconds' (of training, every execution's), 'resumed_from_epoch' (epochs found done),
    'loss': the loss function's name, 'config', 'warm_start_from' (``base_model`` if its
    weights were restored, else None), 'warm_start_skipped' (why not, or None),
    'initial_weights_sha256' (of the weights epoch 1 started from)}
    """
    skip_autograph_for_tf_keras()
    keras.utils.set_random_seed(config.seed)
    spec = config.spec
    common = dict(
        tf_transform_output=tf_transform_output,
        batch_size=config.batch_size,
        feature_keys=spec.inputs,
        cache=config.cache,
    )
    train_ds = input_fn(
        train_files,
        shuffle=True,
        seed=config.seed,
        repeat=bool(train_steps),
        shuffle_buffer=config.shuffle_buffer,
        **common,
    )
    eval_ds = input_fn(eval_files, repeat=bool(eval_steps), **common)
    with checkpointable_randomness():
        model = compile_model(config)
    warm_from, skipped = warm_start(model, config, base_model)
    initial_digest = weights_digest([w.numpy() for w in model.weights])
    state = EpochState(state_dir or os.path.join(model_run_dir, "resume"), config.patience, config.monitor)
    resumed_from, steps = state.epochs_done, steps_per_epoch(train_steps, config.epochs)
    if resumed_from:
        log.info("resuming from epoch %d (%s)", resumed_from, state.state_dir)
        state.restore(model)
    if not state.finished(config.epochs):
        tensorboard = keras.callbacks.TensorBoard(
            log_dir=model_run_dir, update_freq="epoch", write_graph=False, profile_batch=0
        )
        model.fit(
            continue_data_order(train_ds, resumed_from, steps, state.batches),
            validation_data=eval_ds,
            epochs=config.epochs,
            initial_epoch=resumed_from,
            verbose=2,
            callbacks=[keras.callbacks.LearningRateScheduler(config.epoch_lr), state, tensorboard],
            steps_per_epoch=steps,
            validation_steps=eval_steps or None,
        )
    val = state.history.get(config.monitor, [])
    best = best_epoch(val)
    if state.epochs_done:  # the best epoch's weights (the last epoch's if none was finite)
        state.restore(model, None if best is None else best + 1, weights_only=True)
    model.save_weights(os.path.join(model_run_dir, CHECKPOINT))
    record = {
        "history": state.history,
        "best_epoch": None if best is None else best + 1,
        "best_val_loss": None if best is None else val[best],  # of config.monitor
        "monitor": config.monitor,
        "seconds": state.seconds,
        "resumed_from_epoch": resumed_from,
        "loss": config.loss.__name__,
        "config": dataclasses.asdict(config),
        "warm_start_from": warm_from,
        "warm_start_skipped": skipped,
        "initial_weights_sha256": initial_digest,
    }
    return model, record


def warm_start(model: keras.Model, config: TrainConfig, base_model: str | None) -> tuple[str | None, str | None]:
    """Load the weights of the export ``base_model`` into ``model`` (compiled, not trained).

    Returns (``base_model`` if restored else None, the reason it was not or None). An export
    of another architecture or hyperparameters, or an unreadable one, leaves the fresh
    initialisation: the first model after such a change starts from scratch.
    """
    if not base_model:
        return None, None
    try:
        restore_weights(model, base_model, architecture=config.model, hparams=config.hparams)
    except (ValueError, OSError, tf.errors.OpError) as exc:
        log.warning("not warm-starting from %s: %s", base_model, exc)
        return None, str(exc)
    log.info("warm start from %s", base_model)
    return base_model, None


# --- run outputs and entry point ---------------------------------------------------------------


def write_run_outputs(model_run_dir: str, record: Mapping[str, Any]) -> None:
    """``history.json`` and ``loss_curve.png`` in the run directory."""
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "history.json"), "w") as f:
        json.dump(record, f, indent=1)
    from stellarpop.pipeline.report.figures import plot_loss_curve  # not at import: it loads TFMA

    fig = plot_loss_curve(record, title=f"{record['config']['model']} model")
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "loss_curve.png"), "wb") as f:
        fig.savefig(f, format="png")


def calibrate(
    model: keras.Model, config: TrainConfig, train_files, eval_files, tf_transform_output: tft.TFTransformOutput
) -> calibration.Calibration | None:
    """The calibration of ``model`` (``calibration.fit``) on its training and eval files, or
    None for a model that cannot have one (``paper``: no variance, no embedding)."""
    if calibration.embedding_model(model) is None or not config.spec.predicts_variance:
        log.info("%s model: no calibration (no variance head or embedding)", config.model)
        return None
    batches = functools.partial(
        input_fn,
        tf_transform_output=tf_transform_output,
        batch_size=CALIBRATION_BATCH,
        feature_keys=config.spec.inputs,
        file_seed=config.seed,
    )
    calib = calibration.fit(model, batches(train_files), batches(eval_files))
    log.info(
        "calibrated on %d eval examples: interval scales %s, ood threshold %.2f",
        calib.summary["n_eval"],
        calib.interval_scale,
        calib.threshold,
    )
    return calib


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``).

    Reads ``train_files``, ``eval_files``, ``transform_output``, ``serving_model_dir``,
    ``model_run_dir``, ``train_steps``, ``eval_steps``, ``base_model`` (warm start) and
    ``custom_config``. The export
    carries TF Serving warmup requests made of the first eval Examples (:func:`add_warmup`).
    """
    config = TrainConfig.from_custom_config(fn_args.custom_config)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    state_dir = resume_state_dir(fn_args)
    log.info("training %s (lr %g) on %s", config.model, config.lr, fn_args.train_files)
    model, record = train(
        config,
        fn_args.train_files,
        fn_args.eval_files,
        tf_transform_output,
        fn_args.model_run_dir,
        train_steps=fn_args.train_steps,
        eval_steps=fn_args.eval_steps,
        state_dir=state_dir,
        base_model=getattr(fn_args, "base_model", None),
    )
    write_run_outputs(fn_args.model_run_dir, record)
    ranges = read_label_ranges(fn_args.train_files, tf_transform_output)
    calib = calibrate(model, config, fn_args.train_files, fn_args.eval_files, tf_transform_output)
    info = model_info(config, ranges, record, calib)
    export_model(model, tf_transform_output, fn_args.serving_model_dir, config.spec.predicts_variance, info, calib)
    add_warmup(fn_args.serving_model_dir, matching_files(fn_args.eval_files))
    tf.io.gfile.rmtree(state_dir)  # exported: nothing left to resume
