"""Resumable training: the state a killed Trainer execution leaves for the next one.

Resuming: after every epoch the model and optimizer (``epoch-N`` checkpoints) and the
history so far (``state.json``, written last: the commit point) go to a folder named after
the training inputs (:func:`resume_state_dir`). A run_fn with the same inputs continues from
the last completed epoch, with the data order and dropout masks an uninterrupted run would
use; early stopping and the best epoch are functions of the recorded history
(:class:`EpochState`), so they decide as the uninterrupted run would. The folder is deleted
once the model is exported.

``trainer.train`` drives this state and ``trainer.run_fn`` deletes it; ``steps_per_epoch``
is here because the data order of a resumed run (:func:`continue_data_order`) depends on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras

RESUME_DIR_KEY = "resume_dir"
STATE_FILE = "state.json"


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
    :func:`best_epoch`), and the best weights are the best epoch's checkpoint. ``monitor``
    is the history key both decisions read.
    """

    def __init__(self, state_dir: str, patience: int, monitor: str = "val_loss"):
        super().__init__()
        self.state_dir, self.patience, self.monitor = state_dir, patience, monitor
        path = os.path.join(state_dir, STATE_FILE)
        state = json.loads(tf.io.gfile.GFile(path).read()) if tf.io.gfile.exists(path) else {}
        self.history: dict[str, list[float]] = state.get("history", {})
        self.seconds: float = state.get("seconds", 0.0)
        self.batches: int | None = state.get("batches")  # per epoch, counted in the first

    @property
    def epochs_done(self) -> int:
        return len(self.history.get("loss", []))

    def finished(self, epochs: int) -> bool:
        return self.epochs_done >= epochs or should_stop(self.history.get(self.monitor, []), self.patience)

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
        val = self.history.get(self.monitor, [])
        best = best_epoch(val)
        keep = {self._prefix(epoch + 1), self._prefix(-1 if best is None else best + 1)}
        for name in tf.io.gfile.glob(os.path.join(self.state_dir, "epoch-*")):
            if name.rsplit(".", 1)[0] not in keep:
                tf.io.gfile.remove(name)
        if self.monitor in (logs or {}) and should_stop(val, self.patience):
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
    inputs = [
        fn_args.train_files,
        fn_args.eval_files,
        fn_args.transform_output,
        fn_args.train_steps,
        fn_args.eval_steps,
        config,
    ]
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
