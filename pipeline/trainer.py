"""TFX Trainer module: ``run_fn``, the input pipeline, and the exported serving model.

Transform runs without materialisation, so the Trainer reads the RAW examples (gzipped
TFRecords) and applies the transform graph itself, through the TFT layer, in ``tf.data``.
The same TFT layer is attached to the exported model: a client sends raw tf.Examples
(``components.examples.to_example``, no labels) and gets the labels in physical units.

``custom_config`` (one dict, shared with Transform; unknown keys are ignored):

=================  =============  ==========================================================
key                default        meaning
=================  =============  ==========================================================
model              "default"      a ``pipeline.models`` registry name ("default", "paper")
epochs             20             maximum epochs (the paper: 100)
batch_size         32             (the paper's)
learning_rate      None           Adam learning rate; None: the model's (paper 1e-4,
                                  default 1e-3)
patience           5              early stopping on val_loss; the best epoch is exported
seed               0              ``keras.utils.set_random_seed`` and the shuffle seed
label_source       "ppxf"         "ppxf" or "truth": must match Transform's (recorded)
norm_centre        5000.0         A, must match Transform's (recorded in the metadata)
norm_half_width    50.0           A, must match Transform's (recorded in the metadata)
hparams            {}             keyword arguments of the model builder
shuffle_buffer     2048           examples in the shuffle buffer
cache              False          keep the transformed inputs in memory after the first
                                  epoch (~61 kB per spectrum for "default"; see input_fn)
resume_dir         ""             where killed trainings leave their state (``resume_state_dir``);
                                  "": inside ``model_run_dir`` (no resume across executions)
=================  =============  ==========================================================

Resuming: after every epoch the model and optimizer (``epoch-N`` checkpoints) and the
history so far (``state.json``, written last: the commit point) go to a folder named after
the training inputs (:func:`resume_state_dir`). A run_fn with the same inputs continues from
the last completed epoch, with the data order and dropout masks an uninterrupted run would
use; early stopping and the best epoch are functions of the recorded history
(:class:`EpochState`), so they decide as the uninterrupted run would. The folder is deleted
once the model is exported.

Steps: ``fn_args.train_steps`` None (or 0) trains full passes over the data per epoch;
otherwise the total ``train_steps`` is spread over ``epochs`` (repeating the data).
``eval_steps`` None (or 0) validates on the whole eval split each epoch.

Written to ``model_run_dir``: TensorBoard logs (``train/``, ``validation/``; of this
execution's epochs), the best weights (``checkpoints/best``, TF checkpoint),
``history.json`` (every epoch's metrics, ``resumed_from_epoch``) and ``loss_curve.png``
(train and validation loss per epoch, as the paper's Fig. 3).

The SavedModel in ``serving_model_dir`` (a generic SavedModel, not a Keras one) has:

- ``serving_default``: input ``examples``, string (B,), serialized raw tf.Examples that
  need only ``preprocessing.RAW_INPUT_KEYS`` (labels optional, ignored); outputs
  ``log_age``, ``mh``, ``ebv``, ``vd`` and ``log_age_err``, ``mh_err``, ``ebv_err``,
  ``vd_err``, float32 (B,), physical units (``features.py``). The errors are the predicted
  1-sigma, sqrt(var) times the label range; a model without variance (``paper``) returns
  NaN errors, so that every model has the same outputs.
- ``transform_features``: input ``examples`` (raw, with labels, as the Evaluator reads
  them); outputs every transformed feature (for TFMA's slicing: ``snr_bin_xf``,
  ``z_bin_xf``, ``bpt_class_xf``).
- ``metadata``: input ``examples`` (ignored, may be empty: TF Serving refuses signatures
  without inputs); output ``model_info``, a JSON string (also written as
  ``assets.extra/model_info.json``): wavelength grid, normalisation window, label source,
  keys, units and ranges, architecture and hyperparameters, stellarpop version, training
  summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stellarpop.pipeline import models
from stellarpop.transforms import features as F
from stellarpop.transforms import preprocessing as P

log = logging.getLogger(__name__)

ERR_SUFFIX = F.ERR_SUFFIX
OUTPUT_KEYS = F.LABEL_KEYS + tuple(k + ERR_SUFFIX for k in F.LABEL_KEYS)
EXAMPLES_INPUT = "examples"
MODEL_INFO = "model_info"
MODEL_INFO_FILE = os.path.join("assets.extra", "model_info.json")
CHECKPOINT = os.path.join("checkpoints", "best")
RESUME_DIR_KEY = "resume_dir"
STATE_FILE = "state.json"
TRANSFORM_BATCH = 256  # examples per TFT-layer call when caching
LABEL_UNITS = {F.LOG_AGE: "log10(yr)", F.MH: "dex", F.EBV: "mag", F.VD: "km/s"}


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (see the module docstring for each key)."""

    model: str = "default"
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float | None = None
    patience: int = 5
    seed: int = 0
    label_source: str = "ppxf"
    norm_centre: float = F.NORM_CENTRE
    norm_half_width: float = F.NORM_HALF_WIDTH
    hparams: dict = field(default_factory=dict)
    shuffle_buffer: int = 2048
    cache: bool = False

    @classmethod
    def from_custom_config(cls, custom_config: Mapping[str, Any] | None) -> "TrainConfig":
        """The known keys of ``custom_config``; the model name and label source are checked."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in (custom_config or {}).items() if k in known})
        models.get(config.model)
        P.label_input_keys(config.label_source)
        return config

    @property
    def spec(self) -> models.ModelSpec:
        return models.get(self.model)

    @property
    def lr(self) -> float:
        return float(self.learning_rate or self.spec.learning_rate)


def skip_autograph_for_tf_keras() -> None:
    """Let AutoGraph treat ``tf_keras`` as it treats ``keras``: not converted.

    TF 2.16's AutoGraph skips the modules ``tensorflow`` and ``keras`` but not
    ``tf_keras``, so every trace of a tf_keras train/test/predict function re-writes the
    Keras internals (about 1,300 functions): ~25 s of the first ``fit`` on two cores,
    against ~4 s with the rule. Keras code is written not to need AutoGraph, and the
    ``call`` of a user-defined layer is still converted. A private TF setting (guarded):
    without it, everything still works, only slower.
    """
    try:
        from tensorflow.python.autograph.core import config as autograph_config
    except ImportError:  # pragma: no cover - a TF without this module
        return
    rules = autograph_config.CONVERSION_RULES
    if not any(isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras") for r in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"),) + tuple(rules)


# --- input pipeline ----------------------------------------------------------------------------


def _files(file_pattern: str | Sequence[str]) -> list[str]:
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no files match {patterns}")
    return files


def split_labels(
    transformed: Mapping[str, tf.Tensor], feature_keys: Sequence[str] | None = None
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """(model inputs, labels (B, 4) in ``LABEL_KEYS`` order) from the TFT layer's output.

    ``feature_keys`` None keeps every transformed feature that is not a label.
    """
    labels = tf.stack([transformed[k] for k in P.LABEL_XF_KEYS], axis=1)
    keys = feature_keys or [k for k in transformed if k not in P.LABEL_XF_KEYS]
    return {k: transformed[k] for k in keys}, labels


def input_fn(
    file_pattern: str | Sequence[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    feature_keys: Sequence[str] | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    shuffle_buffer: int = 2048,
    cache: bool = False,
) -> tf.data.Dataset:
    """Raw gzipped tf.Examples -> batches of (transformed inputs, scaled labels).

    Parameters
    ----------
    file_pattern : glob(s) of GZIP TFRecord files of raw examples (TFX ``train_files``)
    tf_transform_output : the Transform component's graph
    batch_size : examples per batch (the last batch may be smaller)
    feature_keys : transformed features to keep (default: all but the labels)
    shuffle, seed, repeat, shuffle_buffer : ordering of the examples
    cache : transform once and keep the kept features in memory (about 61 kB per spectrum
        for the default model's three channels); then shuffling acts on transformed
        examples. Only a full first pass fills the cache (``train_steps`` None).

    Returns
    -------
    Dataset of ({key: Tensor (B, ...)}, Tensor (B, 4) float32)
    """
    records = tf.data.TFRecordDataset(_files(file_pattern), compression_type="GZIP")
    raw_spec = tf_transform_output.raw_feature_spec()
    tft_layer = tf_transform_output.transform_features_layer()

    def transform(serialized):
        return split_labels(tft_layer(tf.io.parse_example(serialized, raw_spec)), feature_keys)

    if cache:
        records = records.batch(TRANSFORM_BATCH).map(transform, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    batches = records.batch(batch_size)
    if not cache:
        batches = batches.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def read_label_ranges(
    file_pattern: str | Sequence[str], tf_transform_output: tft.TFTransformOutput
) -> dict[str, list[float]]:
    """{label: [min, max]} of the transform graph, read off one example's TFT outputs."""
    serialized = next(iter(tf.data.TFRecordDataset(_files(file_pattern), compression_type="GZIP").batch(1)))
    raw = tf.io.parse_example(serialized, tf_transform_output.raw_feature_spec())
    out = tf_transform_output.transform_features_layer()(raw)
    return {k: [float(out[key][0]) for key in P.range_keys(k)] for k in F.LABEL_KEYS}


# --- training ----------------------------------------------------------------------------------


def compile_model(config: TrainConfig) -> keras.Model:
    """The configured model, compiled with its loss, Adam, and the MSE of the means."""
    model = models.build(config.model, **config.hparams)
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr), loss=config.spec.loss, metrics=[models.mean_mse]
    )
    return model


def steps_per_epoch(total_steps: int | None, epochs: int) -> int | None:
    """Keras steps per epoch for a TFX step budget (None: full passes over the data)."""
    return math.ceil(total_steps / epochs) if total_steps else None


def best_epoch(val_loss: Sequence[float]) -> int | None:
    """0-based epoch of the lowest finite ``val_loss`` (the first of ties), None if none.

    Keras' ``ModelCheckpoint(save_best_only=True)`` keeps the same epoch: it saves on a
    strict improvement only, and NaN never improves.
    """
    finite = [i for i, v in enumerate(val_loss) if math.isfinite(v)]
    return min(finite, key=lambda i: (val_loss[i], i)) if finite else None


def should_stop(val_loss: Sequence[float], patience: int) -> bool:
    """Keras ``EarlyStopping(monitor="val_loss", patience)``'s decision after the last epoch.

    Its counter grows every epoch and restarts at each strict improvement, and it never
    stops after the first epoch: so it stops once ``patience`` epochs have passed since
    the best one (since before the first epoch if none was finite).
    """
    last, best = len(val_loss) - 1, best_epoch(val_loss)
    return last > 0 and last - (-1 if best is None else best) >= patience


@contextlib.contextmanager
def checkpointable_randomness():
    """Build layers (dropout) that draw from a ``tf.random.Generator``, a variable.

    tf_keras' default random ops keep their state hidden in the op, restarted by every
    process: a resumed run would repeat the first epochs' dropout masks. A generator's
    state goes into the checkpoint (:func:`training_checkpoint`) instead. Scoped, so that
    other Keras code in the process keeps its setting.
    """
    experimental = keras.backend.experimental
    enabled = experimental.is_tf_random_generator_enabled()
    experimental.enable_tf_random_generator()
    try:
        yield
    finally:
        if not enabled:
            experimental.disable_tf_random_generator()


def training_checkpoint(model: keras.Model) -> tf.train.Checkpoint:
    """Weights, optimizer and the layers' random generators: all that the next epoch reads.

    The generators are found through tf_keras' private ``Layer._random_generator`` (its
    Dropout does not track them as checkpoint dependencies); a layer without one is skipped.
    """
    generators = {}
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            generators[layer.name] = generator
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer, random=generators)


class EpochState(keras.callbacks.Callback):
    """Training state that outlives the process: a killed ``fit`` resumes where it stopped.

    After every epoch: the model with its optimizer (``epoch-N``, a TF checkpoint), then the
    history (``state.json``, by rename: the commit point, so a kill at any moment leaves a
    consistent state); checkpoints other than the last and the best epoch's are removed.
    Keras' BackupAndRestore would restore weights, optimizer and epoch, but not
    EarlyStopping's or ModelCheckpoint's counters, which start afresh in every ``fit``:
    here both decisions are functions of the recorded history (:func:`should_stop`,
    :func:`best_epoch`), and the best weights are the best epoch's checkpoint.
    """

    def __init__(self, state_dir: str, patience: int):
        super().__init__()
        self.state_dir, self.patience = state_dir, patience
        path = os.path.join(state_dir, STATE_FILE)
        state = json.loads(tf.io.gfile.GFile(path).read()) if tf.io.gfile.exists(path) else {}
        self.history: dict[str, list[float]] = state.get("history", {})
        self.seconds: float = state.get("seconds", 0.0)
        self.batches: int | None = state.get("batches")  # per epoch, counted in the first

    @property
    def epochs_done(self) -> int:
        return len(self.history.get("loss", []))

    def finished(self, epochs: int) -> bool:
        return self.epochs_done >= epochs or should_stop(self.history.get("val_loss", []), self.patience)

    def _prefix(self, epoch: int) -> str:
        return os.path.join(self.state_dir, f"epoch-{epoch}")

    def restore(self, model: keras.Model, epoch: int | None = None, weights_only: bool = False) -> None:
        """Load epoch ``epoch`` (1-based; default the last): the weights, and the optimizer."""
        prefix = self._prefix(epoch or self.epochs_done)
        if weights_only:
            tf.train.Checkpoint(model=model).read(prefix).expect_partial()
            return
        model.optimizer.build(model.trainable_variables)  # restore now, not deferred
        training_checkpoint(model).read(prefix).assert_existing_objects_matched()

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._batches = time.time(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.seconds += time.time() - self._started
        self.batches = self.batches or self._batches
        training_checkpoint(self.model).write(self._prefix(epoch + 1))
        path = os.path.join(self.state_dir, STATE_FILE)
        with tf.io.gfile.GFile(path + ".part", "w") as f:
            json.dump({"history": self.history, "seconds": self.seconds, "batches": self.batches}, f)
        tf.io.gfile.rename(path + ".part", path, overwrite=True)
        val = self.history.get("val_loss", [])
        best = best_epoch(val)
        keep = {self._prefix(epoch + 1), self._prefix(-1 if best is None else best + 1)}
        for name in tf.io.gfile.glob(os.path.join(self.state_dir, "epoch-*")):
            if name.rsplit(".", 1)[0] not in keep:
                tf.io.gfile.remove(name)
        if "val_loss" in (logs or {}) and should_stop(val, self.patience):
            self.model.stop_training = True


def resume_state_dir(fn_args) -> str:
    """The state folder of these training inputs: the same in a re-run of a killed execution.

    TFX gives every execution a new ``model_run_dir``, so the state lives under
    ``custom_config["resume_dir"]`` (else inside ``model_run_dir``: no resume), in a folder
    named by a hash of the data and transform graph (artefact URIs), the steps and the
    rest of ``custom_config``: other inputs never resume this state.
    """
    config = dict(fn_args.custom_config or {})
    base = config.pop(RESUME_DIR_KEY, "") or os.path.join(fn_args.model_run_dir, "resume")
    inputs = [fn_args.train_files, fn_args.eval_files, fn_args.transform_output, fn_args.train_steps,
              fn_args.eval_steps, config]
    return os.path.join(base, hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16])


def continue_data_order(
    dataset: tf.data.Dataset, epochs_done: int, steps: int | None, batches: int | None
) -> tf.data.Dataset:
    """``dataset`` as an uninterrupted ``fit`` would read it from epoch ``epochs_done`` on.

    A repeated dataset (``steps`` per epoch) is read by one iterator across epochs: skip the
    finished epochs' batches. A full pass gets a new iterator every epoch, and its shuffle a
    new order per iterator: make (and drop) one iterator per epoch done. Its length is then
    known (``batches``): Keras counts one optimizer step too many in an epoch that ends by
    exhausting a dataset of unknown length (the uninterrupted run's first epoch did), which
    would shift Adam's bias correction.
    """
    if steps:
        return dataset.skip(epochs_done * steps)
    for _ in range(epochs_done):
        iter(dataset)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches)) if batches else dataset


def train(
    config: TrainConfig,
    train_files: str | Sequence[str],
    eval_files: str | Sequence[str],
    tf_transform_output: tft.TFTransformOutput,
    model_run_dir: str,
    train_steps: int | None = None,
    eval_steps: int | None = None,
    state_dir: str | None = None,
) -> tuple[keras.Model, dict]:
    """Train with early stopping (resuming ``state_dir``); return the model with its best
    weights and the history.

    Returns
    -------
    model, {'history': {metric: [per epoch]}, 'best_epoch': 1-based, 'best_val_loss',
    'seconds' (of training, every execution's), 'resumed_from_epoch' (epochs found done),
    'loss': the loss function's name, 'config'}
    """
    skip_autograph_for_tf_keras()
    keras.utils.set_random_seed(config.seed)
    spec = config.spec
    common = dict(
        tf_transform_output=tf_transform_output, batch_size=config.batch_size, feature_keys=spec.inputs,
        cache=config.cache,
    )
    train_ds = input_fn(
        train_files, shuffle=True, seed=config.seed, repeat=bool(train_steps),
        shuffle_buffer=config.shuffle_buffer, **common,
    )
    eval_ds = input_fn(eval_files, repeat=bool(eval_steps), **common)
    with checkpointable_randomness():
        model = compile_model(config)
    state = EpochState(state_dir or os.path.join(model_run_dir, "resume"), config.patience)
    resumed_from, steps = state.epochs_done, steps_per_epoch(train_steps, config.epochs)
    if resumed_from:
        log.info("resuming from epoch %d (%s)", resumed_from, state.state_dir)
        state.restore(model)
    if not state.finished(config.epochs):
        tensorboard = keras.callbacks.TensorBoard(
            log_dir=model_run_dir, update_freq="epoch", write_graph=False, profile_batch=0
        )
        model.fit(
            continue_data_order(train_ds, resumed_from, steps, state.batches), validation_data=eval_ds,
            epochs=config.epochs, initial_epoch=resumed_from, callbacks=[state, tensorboard], verbose=2,
            steps_per_epoch=steps, validation_steps=eval_steps or None,
        )
    val = state.history.get("val_loss", [])
    best = best_epoch(val)
    if state.epochs_done:  # the best epoch's weights (the last epoch's if none was finite)
        state.restore(model, None if best is None else best + 1, weights_only=True)
    model.save_weights(os.path.join(model_run_dir, CHECKPOINT))
    record = {
        "history": state.history,
        "best_epoch": None if best is None else best + 1,
        "best_val_loss": None if best is None else val[best],
        "seconds": state.seconds,
        "resumed_from_epoch": resumed_from,
        "loss": getattr(spec.loss, "__name__", str(spec.loss)),
        "config": dataclasses.asdict(config),
    }
    return model, record


def plot_loss_curve(record: Mapping[str, Any], title: str = "") -> Figure:
    """Training and validation loss per epoch (the paper's Fig. 3), best epoch marked."""
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    history = record["history"]
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in history:
            values = history[key]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label)
    if record.get("best_epoch"):
        ax.axvline(record["best_epoch"], color="grey", ls=":", label=f"best (epoch {record['best_epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({record['loss']})" if record.get("loss") else "loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def write_run_outputs(model_run_dir: str, record: Mapping[str, Any]) -> None:
    """``history.json`` and ``loss_curve.png`` in the run directory."""
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "history.json"), "w") as f:
        json.dump(record, f, indent=1)
    fig = plot_loss_curve(record, title=f"{record['config']['model']} model")
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "loss_curve.png"), "wb") as f:
        fig.savefig(f, format="png")


# --- export ------------------------------------------------------------------------------------


def to_physical(
    y_pred: tf.Tensor, transformed: Mapping[str, tf.Tensor], predicts_variance: bool
) -> dict[str, tf.Tensor]:
    """Inverse min-max scaling with the TFT layer's per-example label ranges.

    Parameters
    ----------
    y_pred : Tensor, (B, 4) scaled means, or (B, 8) means then log-variances
    transformed : TFT outputs holding ``preprocessing.range_keys`` of every label, (B,)
    predicts_variance : whether ``y_pred`` carries log-variances

    Returns
    -------
    {label: (B,), label_err: (B,)} float32, physical units; errors NaN without variance
    """
    mean = y_pred[:, : models.N_LABELS]
    sigma = tf.exp(0.5 * models.split_outputs(y_pred)[1]) if predicts_variance else None
    out = {}
    for i, key in enumerate(F.LABEL_KEYS):
        low, high = (transformed[k] for k in P.range_keys(key))
        span = high - low
        out[key] = low + mean[:, i] * span
        out[key + ERR_SUFFIX] = sigma[:, i] * span if predicts_variance else tf.fill(tf.shape(low), math.nan)
    return out


def package_version() -> str:
    try:
        return importlib_metadata.version("stellarpop")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def model_info(config: TrainConfig, label_ranges: Mapping[str, Sequence[float]], record: Mapping | None) -> dict:
    """The self-description carried by the exported model."""
    return {
        "stellarpop_version": package_version(),
        "architecture": config.model,
        "hparams": config.hparams,
        "predicts_variance": config.spec.predicts_variance,
        "wavelength_grid": {
            "start": F.GRID_START, "step": F.GRID_STEP, "n_pixels": F.N_PIXELS,
            "unit": "Angstrom", "frame": "observed, vacuum",
        },
        "normalisation_window": {"centre": config.norm_centre, "half_width": config.norm_half_width},
        "label_source": config.label_source,
        "labels": {
            k: {"unit": LABEL_UNITS[k], "min": float(label_ranges[k][0]), "max": float(label_ranges[k][1])}
            for k in F.LABEL_KEYS
        },
        "serving": {"input": EXAMPLES_INPUT, "required_features": list(P.RAW_INPUT_KEYS), "outputs": list(OUTPUT_KEYS)},
        "training": None if record is None else training_summary(config, record),
    }


def training_summary(config: TrainConfig, record: Mapping[str, Any]) -> dict:
    summary = {k: record.get(k) for k in ("best_epoch", "best_val_loss", "seconds")}
    summary.update(seed=config.seed, epochs_run=len(record["history"].get("loss", [])))
    return summary


def export_model(
    model: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    export_dir: str,
    predicts_variance: bool,
    info: Mapping[str, Any],
) -> str:
    """Save ``model`` behind the TFT layer as a generic SavedModel with the signatures of
    the module docstring, plus ``assets.extra/model_info.json``.

    Parameters
    ----------
    model : a ``pipeline.models`` model (inputs named after transformed features)
    tf_transform_output : the transform graph the model was trained behind
    export_dir : destination (TFX ``serving_model_dir``)
    predicts_variance : whether the model outputs log-variances
    info : JSON-serialisable metadata (:func:`model_info`)
    """
    skip_autograph_for_tf_keras()
    module = tf.Module()
    # Only the weights are tracked, not the Keras model, so that saving does not trace the
    # Keras-specific functions of every layer. One TFT layer per input key set: a TFT
    # layer is finalised for the inputs it is first called with.
    module.model_weights = list(model.weights)
    module.tft_layer = tf_transform_output.transform_features_layer()
    module.tft_layer_eval = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_spec = {k: raw_spec[k] for k in P.RAW_INPUT_KEYS}
    input_keys = list(model.input_names)
    info_json = json.dumps(info, sort_keys=True)
    examples_spec = tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)

    @tf.function(input_signature=[examples_spec])
    def serve(examples):
        transformed = module.tft_layer(tf.io.parse_example(examples, serving_spec))
        y_pred = model({k: transformed[k] for k in input_keys}, training=False)
        return to_physical(y_pred, transformed, predicts_variance)

    @tf.function(input_signature=[examples_spec])
    def transform_features(examples):
        return module.tft_layer_eval(tf.io.parse_example(examples, raw_spec))

    @tf.function(input_signature=[examples_spec])
    def metadata(examples):  # the input is ignored: TF Serving rejects signatures without one
        del examples
        return {MODEL_INFO: tf.constant(info_json)}

    signatures = {"serving_default": serve, "transform_features": transform_features, "metadata": metadata}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    tf.io.gfile.makedirs(os.path.join(export_dir, "assets.extra"))
    with tf.io.gfile.GFile(os.path.join(export_dir, MODEL_INFO_FILE), "w") as f:
        f.write(json.dumps(info, indent=1, sort_keys=True))
    return export_dir


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``).

    Reads ``train_files``, ``eval_files``, ``transform_output``, ``serving_model_dir``,
    ``model_run_dir``, ``train_steps``, ``eval_steps`` and ``custom_config``.
    """
    config = TrainConfig.from_custom_config(fn_args.custom_config)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    state_dir = resume_state_dir(fn_args)
    log.info("training %s (lr %g) on %s", config.model, config.lr, fn_args.train_files)
    model, record = train(
        config, fn_args.train_files, fn_args.eval_files, tf_transform_output, fn_args.model_run_dir,
        train_steps=fn_args.train_steps, eval_steps=fn_args.eval_steps, state_dir=state_dir,
    )
    write_run_outputs(fn_args.model_run_dir, record)
    ranges = read_label_ranges(fn_args.train_files, tf_transform_output)
    info = model_info(config, ranges, record)
    export_model(model, tf_transform_output, fn_args.serving_model_dir, config.spec.predicts_variance, info)
    tf.io.gfile.rmtree(state_dir)  # exported: nothing left to resume
