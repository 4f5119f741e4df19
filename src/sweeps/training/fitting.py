"""The Keras steps of a job: build, fit (with our logger and early stopping), evaluate.

Used by `job.train`, cross-validation (`cv`) and packed sweeps (`packing`), with nothing about
tracking runs or sweeps. The order of the training examples is ours, not Keras': epoch e of a
job with seed s shows the examples in the order of a permutation drawn from (s, e) alone
(`EpochBatches`), so a job packed with others sees exactly the batches it would see alone.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import keras
import numpy as np
from omegaconf import DictConfig

from sweeps.training.callbacks import JobEpochs, StopOnInterrupt
from sweeps.training.checkpoint import Checkpoint
from sweeps.config import ranked_metric
from sweeps.config.metrics import SHOWN_EVERY_EPOCH, higher_is_better, keras_mode
from sweeps.training.data import Dataset
from sweeps.errors import DivergedError
from sweeps.training.models import build, compile_model
from sweeps.progress import EpochProgress


def new_model(cfg: DictConfig, data: Dataset) -> keras.Model:
    return compile_model(build(cfg, data), cfg, data.task)


def fit(model: keras.Model, data: Dataset, cfg: DictConfig, epochs: JobEpochs,
        extra: tuple[keras.callbacks.Callback, ...] = (), checkpoint: Optional[Checkpoint] = None) -> float:
    """model.fit with the job's epoch callbacks (`epochs`: the logger, the best epoch, the NaN stop), the epoch progress on stderr (and early stopping when enabled, and
    `extra`); with `checkpoint`, the state saved every epoch and, when it holds a saved one, training
    continued after its last epoch. Returns seconds spent."""
    shown = (ranked_metric(cfg), *SHOWN_EVERY_EPOCH)
    progress = EpochProgress(cfg.epochs, shown)
    callbacks: list[keras.callbacks.Callback] = [*epochs.callbacks, progress, *extra]
    es = cfg.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=es.monitor, mode=keras_mode(es.monitor),
                                                       patience=es.patience,
                                                       min_delta=es.min_delta,
                                                       restore_best_weights=es.restore_best_weights))
    first = 0
    if checkpoint is not None:  # after the logger and early stopping: restores them, saves what they updated
        checkpoint.early_stopping = callbacks[-1] if es.enabled else None
        first = checkpoint.saved.epoch if checkpoint.saved else 0
        callbacks = [checkpoint.hold, *callbacks, checkpoint]
    callbacks.append(StopOnInterrupt())  # last: an interrupt swallowed during the epoch stops after it was saved
    tic = time.perf_counter()
    try:
        fit_epochs(model, data, cfg, [cfg.seed], callbacks, first)
    finally:
        progress.close()
        if checkpoint is not None:
            checkpoint.release()
    if epochs.diverged:
        raise DivergedError(diverged_message(epochs.diverged))
    return time.perf_counter() - tic


def diverged_message(reason: str) -> str:
    return f"training diverged: {reason}; lower optimizer.lr or rate"


EVAL_BATCH = 1024  # batch size of validation and evaluation passes (no updates: only speed depends on it)


def fit_epochs(model: keras.Model, data: Dataset, cfg: DictConfig, seeds: Sequence[int],
               callbacks: Sequence[keras.callbacks.Callback], first: int = 0) -> None:
    """`model.fit` for `cfg.epochs` on our batches (`EpochBatches`), validating every epoch; from
    epoch `first` (counted from 0: the epochs a checkpoint already holds are not trained again)."""
    batches = EpochBatches(data.x_train, data.y_train, cfg.batch_size, seeds, first)
    validation = evaluation_batches(data, "val") if len(data.x_val) else None
    model.fit(batches.dataset, epochs=cfg.epochs, initial_epoch=first, validation_data=validation,
              shuffle=False, callbacks=[batches, *callbacks], verbose=0)  # the order is `batches`'


class EpochBatches(keras.callbacks.Callback):
    """The training batches of one `fit`, as a dataset one epoch long that Keras iterates once per epoch.

    Epoch e shows the examples in the order of a permutation drawn from (s, e) alone, in batches
    of `batch_size` (the last one smaller), for each seed s of `seeds`: one distinct seed gives
    `[B, ...]` batches (every member sees the same batch); several give `[len(seeds), B, ...]`,
    member k's batch under seeds[k] (members sharing a seed share its permutation). One epoch per
    pass keeps Keras' multi-step calls (`steps_per_execution`) inside the epoch.

    Each backend reads its own kind of pipeline, so the permutation's generator is the backend's
    (the same seed gives another order on each: the same science, not the same batches):
    TensorFlow reads a `tf.data` pipeline that draws TensorFlow's stateless shuffle in its graph
    and prefetches (it counts its own passes from `first`); JAX reads NumPy batches
    (`ArrayBatches`, NumPy's generator seeded with (s, e)), so nothing on JAX imports TensorFlow.

    Args:
        x, y: the training examples.
        batch_size: examples per batch.
        seeds: one seed per member.
        first: the epoch training starts at (a job continued from its checkpoint: after the saved ones).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seeds: Sequence[int], first: int = 0):
        super().__init__()
        self.first = first
        self.steps = math.ceil(len(x) / batch_size)
        self.distinct = sorted(set(int(s) for s in seeds))
        self.which = [self.distinct.index(int(s)) for s in seeds]  # member k's permutation
        if keras.backend.backend() == "tensorflow":
            self.dataset = self._tf_dataset(x, y, batch_size)
        else:
            self.dataset = ArrayBatches(x, y, batch_size, self.which if len(self.distinct) > 1 else None)
            self.dataset.order = self._numpy_order(len(x), first)  # Keras looks at a batch before training begins

    def _tf_dataset(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        import tensorflow as tf

        n = len(x)
        self.passes = tf.Variable(-1, dtype=tf.int64, trainable=False)  # epoch of the latest pass begun
        which = tf.constant(self.which, tf.int32)
        shared = len(self.distinct) == 1  # one permutation: [B, ...] batches, the same for every member

        def epoch_order(_):
            epoch = self.passes.assign_add(1, read_value=True)
            orders = [tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack(
                [tf.constant(s, tf.int64), epoch])) for s in self.distinct]
            return tf.data.Dataset.from_tensor_slices(tf.stack(orders, axis=1)).batch(batch_size)  # [B, seeds]

        def gather(order, arrays):
            features, targets = arrays
            if shared:
                return tf.gather(features, order[:, 0]), tf.gather(targets, order[:, 0])
            per_member = tf.gather(tf.transpose(order), which)  # [K, B]
            return tf.gather(features, per_member), tf.gather(targets, per_member)

        orders = tf.data.Dataset.from_tensors(0).flat_map(epoch_order)
        arrays = tf.data.Dataset.from_tensors((x, y)).repeat()
        batches = tf.data.Dataset.zip((orders, arrays)).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        return batches.apply(tf.data.experimental.assert_cardinality(self.steps)).prefetch(tf.data.AUTOTUNE)

    def _numpy_order(self, n: int, epoch: int) -> np.ndarray:
        """[n, distinct seeds]: column j, the permutation of epoch `epoch` under the j-th distinct seed."""
        return np.stack([np.random.default_rng([s % 2 ** 64, epoch]).permutation(n)  # SeedSequence: >= 0
                         for s in self.distinct], axis=1)

    def on_train_begin(self, logs=None):
        if isinstance(self.dataset, ArrayBatches):
            return
        self.passes.assign(self.first - 1)  # Keras may have looked at a batch before training began

    def on_epoch_begin(self, epoch, logs=None):
        if isinstance(self.dataset, ArrayBatches):  # before Keras draws the epoch's first batch
            self.dataset.order = self._numpy_order(len(self.dataset.x), epoch)


class ArrayBatches(keras.utils.PyDataset):
    """NumPy batches of (x, y) for Keras on JAX, drawn in the training thread as Keras asks for them.

    `order` ([n, distinct seeds] indices, or None: as stored) is the epoch's order; with `which`
    (member k's column of `order`) batch i is `[K, B, ...]`, member k's examples, else `[B, ...]`
    from the first column.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, which: Optional[Sequence[int]] = None):
        super().__init__(workers=1, use_multiprocessing=False)  # in order, in this thread: cheap slicing
        self.x, self.y, self.batch_size, self.which = x, y, batch_size, which
        self.order: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)  # ends a plain `for` over the batches
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        if self.order is None:
            return self.x[rows], self.y[rows]
        order = self.order[rows]
        if self.which is None:
            return self.x[order[:, 0]], self.y[order[:, 0]]
        per_member = order.T[self.which]  # [K, B]
        return self.x[per_member], self.y[per_member]


def evaluation_batches(data: Dataset, split: str):
    """The examples of `split` ("train", "val" or "test") in batches of EVAL_BATCH, built once per
    `Dataset`: on TensorFlow a `tf.data` pipeline held in memory after its first pass, so the later
    jobs of a process validate and evaluate without converting and slicing the arrays again (about
    half the time of evaluating a 128x4 MLP on Fashion-MNIST); on JAX slices of the arrays."""
    if split not in data.eval_batches:
        examples = (getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            data.eval_batches[split] = tf.data.Dataset.from_tensor_slices(examples).batch(EVAL_BATCH).cache()
        else:
            data.eval_batches[split] = ArrayBatches(*examples, EVAL_BATCH)
    return data.eval_batches[split]


def evaluation(model: keras.Model, data: Dataset) -> dict:
    """Test metrics and the training set's metrics without dropout, as `model.evaluate` returns them
    (a packed model: one value per member)."""
    test = model.evaluate(evaluation_batches(data, "test"), verbose=0, return_dict=True)
    train = model.evaluate(evaluation_batches(data, "train"), verbose=0, return_dict=True)
    return {**{f"test_{k}": v for k, v in test.items()}, **{f"final_train_{k}": v for k, v in train.items()}}


def results(evaluated: dict, member: int | None = None) -> dict[str, float]:
    """`evaluation`'s values as floats (member `member` of a packed model), and the generalization gap."""
    out = {k: float(v if member is None else np.asarray(v)[member]) for k, v in evaluated.items()}
    out["generalization_gap"] = out["test_loss"] - out["final_train_loss"]
    return out


def evaluate(model: keras.Model, data: Dataset) -> dict[str, float]:
    """Test metrics, the training set's metrics without dropout, and the gap between them."""
    return results(evaluation(model, data))


def last_epoch(history: dict[str, list[float]]) -> dict[str, float]:
    return {k: v[-1] for k, v in history.items() if v and "/" not in k}


def best_values(history: dict[str, list[float]]) -> dict[str, float]:
    """`best_<m>` of every validation metric over the epochs (max for accuracy, min otherwise)."""
    return {f"best_{key}": (max if higher_is_better(key) else min)(values)
            for key, values in history.items() if key.startswith("val_") and values}


def use_threads(n: int) -> None:
    """TensorFlow's CPU thread pools for this process (set once: TensorFlow fixes them at first use).
    On JAX nothing: XLA sizes its CPU pool from the machine when it starts (see docs/backends.md)."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == n:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # already initialised by an earlier job of this worker, with the same share
        pass
