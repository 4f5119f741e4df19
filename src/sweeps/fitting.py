"""The Keras steps of a job: build, fit (with our logger and early stopping), evaluate.

Used by `job.train` and by cross-validation (`cv`), with nothing about tracking runs or sweeps.
"""

from __future__ import annotations

import time

import keras
from omegaconf import DictConfig

from sweeps.callbacks import MlflowEpochLogger, StopOnInterrupt
from sweeps.config import higher_is_better
from sweeps.data import Dataset
from sweeps.errors import DivergedError
from sweeps.models import build_model, compile_model
from sweeps.progress import EPOCH_KEYS, EpochProgress


def new_model(cfg: DictConfig, data: Dataset) -> keras.Model:
    return compile_model(build_model(cfg, data.input_dim, data.n_classes), cfg, data.task)


def fit(model: keras.Model, data: Dataset, cfg: DictConfig, logger: MlflowEpochLogger,
        extra: tuple[keras.callbacks.Callback, ...] = ()) -> float:
    """model.fit with our logger, the epoch progress on stderr (and early stopping when enabled, and
    `extra`); returns seconds spent."""
    shown = (cfg.optimized_metric, *EPOCH_KEYS)
    progress = EpochProgress(cfg.epochs, shown)
    callbacks: list[keras.callbacks.Callback] = [logger, StopOnInterrupt(), progress, *extra]
    es = cfg.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience,
                                                       min_delta=es.min_delta,
                                                       restore_best_weights=es.restore_best_weights))
    validation = (data.x_val, data.y_val) if len(data.x_val) else None
    tic = time.perf_counter()
    try:
        model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
                  validation_data=validation, callbacks=callbacks, verbose=0)
    finally:
        progress.close()
    if logger.diverged:
        raise DivergedError(f"training diverged: {logger.diverged}; lower optimizer.lr or rate")
    return time.perf_counter() - tic


def evaluate(model: keras.Model, data: Dataset) -> dict[str, float]:
    """Test metrics, the training set's metrics without dropout, and the gap between them."""
    test = model.evaluate(data.x_test, data.y_test, batch_size=1024, verbose=0, return_dict=True)
    train = model.evaluate(data.x_train, data.y_train, batch_size=1024, verbose=0, return_dict=True)
    out = {f"test_{k}": float(v) for k, v in test.items()}
    out.update({f"final_train_{k}": float(v) for k, v in train.items()})
    out["generalization_gap"] = out["test_loss"] - out["final_train_loss"]
    return out


def last_epoch(history: dict[str, list[float]]) -> dict[str, float]:
    return {k: v[-1] for k, v in history.items() if v and "/" not in k}


def best_values(history: dict[str, list[float]]) -> dict[str, float]:
    """`best_<m>` of every validation metric over the epochs (max for accuracy, min otherwise)."""
    return {f"best_{key}": (max if higher_is_better(key) else min)(values)
            for key, values in history.items() if key.startswith("val_") and values}


def use_threads(n: int) -> None:
    """TensorFlow's CPU thread pools for this process (set once: TensorFlow fixes them at first use)."""
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == n:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # already initialised by an earlier job of this worker, with the same share
        pass
