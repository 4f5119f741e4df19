"""The Keras callbacks of a job, one concern each (`JobEpochs` puts a job's three in order).

`MlflowEpochLogger` writes each epoch to one MLflow run: Keras' own metrics (`loss`, `val_loss`,
`accuracy`, ...; `loss` includes the regularization penalty), the data term alone (`data_loss`,
`val_data_loss`: a compiled metric, see `models.compile_model`) and the penalty (`penalty` =
`loss - data_loss`, the epoch's mean penalty as training paid it), `epoch_time_s`, `samples_per_s`,
the learning rate `lr`, and for every hidden Dense layer the kernel's L1 norm, L2 norm, `sparsity`
(share of |w| below a fixed 1e-3) and `rel_sparsity` (share of |w| below 1 % of the layer's largest
|w|): the scale-free one tells L1's zeros from L2's uniform shrinking, which the fixed threshold
counts as zeros too; and `active_weights`, the kernel weights of all those layers that are not zero
in that sense. All of an epoch goes out in one `log_batch` call, at step = the epoch's number counted
from 1, as Keras prints it and as every plot of `sweeps` draws it (`best_epoch` and messages count the
same way); it times its own work, so the logging overhead can be reported.

`BestEpoch` tracks the best epoch of `monitor` (on the `MonitorCallback` base, whose decision of
which way is better and by how much a packed member's early stopping shares); `StopOnDivergence`
stops training on a NaN/inf loss soon after it appears: a batch hook, which Keras calls once per
dispatched block of `steps_per_execution` steps (64 by default in sweeps), so it costs one round
trip per block, not per step. `StopOnInterrupt`, `TrialReports` and `OptunaPruning` take Ctrl-C and
a search trial's pruner into the fit.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import keras
import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from sweeps import interrupts
from sweeps.config.metrics import RANK_METRIC, keras_mode

log = logging.getLogger(__name__)


RELATIVE_ZERO = 0.01  # |w| below this share of the layer's largest |w| counts as zero in `rel_sparsity`


def weight_stats(layers, threshold: float = 1e-3) -> dict[str, float]:
    """L1 norm, L2 norm, sparsity and rel_sparsity of each layer's kernel, keyed `<layer>/kernel_l1` etc.,
    and `active_weights`: how many kernel weights of all the layers are not zero in `rel_sparsity`'s sense."""
    stats, active = {}, 0
    for layer in layers:
        w = np.abs(keras.ops.convert_to_numpy(layer.kernel))
        stats[f"{layer.name}/kernel_l1"] = float(w.sum())
        stats[f"{layer.name}/kernel_l2"] = float(np.sqrt((w * w).sum()))
        stats[f"{layer.name}/sparsity"] = float((w < threshold).mean())
        stats[f"{layer.name}/rel_sparsity"] = float((w < RELATIVE_ZERO * w.max()).mean())
        active += int((w >= RELATIVE_ZERO * w.max()).sum())
    if layers:
        stats["active_weights"] = float(active)
    return stats


def penalty(logs: dict) -> dict[str, float]:
    """`penalty` = Keras' `loss` minus the data term `data_loss` (never below 0: rounding)."""
    if "loss" not in logs or "data_loss" not in logs:
        return {}
    return {"penalty": max(float(logs["loss"]) - float(logs["data_loss"]), 0.0)}  # NaN stays NaN


class MlflowEpochLogger(keras.callbacks.Callback):
    """Log every epoch of `model.fit` to the MLflow run `run_id`, and time its own work.

    What it computes (the penalty, timings, the learning rate, weight statistics) it also adds to the
    epoch's logs, as Keras' own `ReduceLROnPlateau` adds the learning rate: the callbacks after it
    (`BestEpoch`, early stopping) may watch any of them.

    Args:
        run_id: the run to write to.
        n_samples: training examples per epoch, for `samples_per_s`.
        layers: the Dense layers whose kernels are summarised (default: none).
        sparsity_threshold: |w| below this counts as zero.
        client: an `MlflowClient`; default one for the current tracking URI.
    """

    def __init__(self, run_id: str, n_samples: int, layers=(), sparsity_threshold: float = 1e-3,
                 client: Optional[MlflowClient] = None):
        super().__init__()
        self.run_id = run_id
        self.n_samples = n_samples
        self.layers = list(layers)
        self.sparsity_threshold = sparsity_threshold
        self.client = client or MlflowClient()

    def on_train_begin(self, logs=None):
        self.history: dict[str, list[float]] = {}
        self.log_seconds = 0.0  # time spent in this callback's own work
        self.epoch_seconds = 0.0  # time spent training, as measured between epoch hooks
        self._epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        epoch += 1  # counted from 1 (Keras' hooks count from 0)
        elapsed = time.perf_counter() - self._epoch_start
        tic = time.perf_counter()
        metrics = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}
        metrics.update(penalty(metrics))
        metrics["epoch_time_s"] = elapsed
        metrics["samples_per_s"] = self.n_samples / elapsed if elapsed > 0 else 0.0
        metrics["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        metrics.update(weight_stats(self.layers, self.sparsity_threshold))
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        if logs is not None:
            logs.update(metrics)  # for the callbacks after this one
        now = int(time.time() * 1000)
        finite = [Metric(k, v, now, epoch) for k, v in metrics.items() if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=finite, synchronous=True)
        self.epoch_seconds += elapsed
        self.log_seconds += time.perf_counter() - tic

    STATE = ("history", "log_seconds", "epoch_seconds")

    def summary(self) -> dict[str, float]:
        """End-of-training metrics: the logging overhead."""
        return {"logging_overhead_pct": 100.0 * self.log_seconds / max(self.epoch_seconds, 1e-9)}


class MonitorCallback(keras.callbacks.Callback):
    """What every callback that watches one metric decides alike: which metric, which way is better
    (`config.metrics.keras_mode`), and by how much a value must beat the best to count."""

    def __init__(self, monitor: str = RANK_METRIC, mode: str = "auto", min_delta: float = 0.0):
        super().__init__()
        self.monitor = monitor
        self.mode = keras_mode(monitor) if mode == "auto" else mode
        self.min_delta = abs(min_delta)

    def improves(self, value: float, best: Optional[float]) -> bool:
        """Whether `value` beats `best` by more than `min_delta` (any finite value beats none; NaN never does)."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


class BestEpoch(MonitorCallback):
    """The best epoch of `monitor` (`best_epoch`, counted from 1, and `best_<monitor>`)."""

    def on_train_begin(self, logs=None):
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self._warned = False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self._warned:
                log.warning("best epoch: metric `%s` is not available; available metrics are: %s",
                            self.monitor, ", ".join(sorted(logs or {})))
                self._warned = True
            return
        if self.improves(float(value), self.best):
            self.best, self.best_epoch = float(value), epoch + 1

    STATE = ("best", "best_epoch")

    def summary(self) -> dict[str, float]:
        if self.best_epoch is None:
            return {}
        return {"best_epoch": float(self.best_epoch), f"best_{self.monitor}": float(self.best)}


class StopOnDivergence(keras.callbacks.Callback):
    """Keras' `TerminateOnNaN`, remembering why (`diverged`, for the FAILED run's reason).

    A batch hook, which Keras calls once per dispatched block of `steps_per_execution` steps: training
    stops at the end of the block where the loss turned non-finite (at the latest at the epoch's end)."""

    def on_train_begin(self, logs=None):
        self.diverged: Optional[str] = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self._diverge(f"loss became {loss} at epoch {self._epoch}, batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self._diverge(f"loss became {loss} at epoch {epoch + 1}")

    def _diverge(self, reason: str) -> None:
        """Remember the first reason and stop `fit` after the current batch."""
        self.diverged = self.diverged or reason
        self.model.stop_training = True


class JobEpochs:
    """A job's per-epoch callbacks, one concern each, in the order Keras calls them: the logger (whose
    metrics the next ones can watch), the best epoch of `monitor`, the stop on a NaN/inf loss."""

    def __init__(self, run_id: str, n_samples: int, layers=(), monitor: str = RANK_METRIC,
                 client: Optional[MlflowClient] = None):
        self.logger = MlflowEpochLogger(run_id, n_samples, layers, client=client)
        self.best = BestEpoch(monitor)
        self.divergence = StopOnDivergence()
        self.callbacks: list[keras.callbacks.Callback] = [self.logger, self.best, self.divergence]

    @property
    def history(self) -> dict[str, list[float]]:
        return self.logger.history

    @property
    def diverged(self) -> Optional[str]:
        return self.divergence.diverged

    def summary(self) -> dict[str, float]:
        """End-of-training metrics: best epoch and value, and the logging overhead."""
        return {**self.logger.summary(), **self.best.summary()}

    def state(self) -> dict:
        """What a checkpoint stores to continue these after a restart (`restore` puts it back)."""
        return {key: getattr(cb, key) for cb in (self.logger, self.best) for key in cb.STATE}

    def restore(self, state: dict) -> None:
        for cb in (self.logger, self.best):
            for key in cb.STATE:
                setattr(cb, key, state[key])


class StopOnInterrupt(keras.callbacks.Callback):
    """Re-raise a Ctrl-C/SIGTERM that something swallowed, at every epoch end (see `interrupts`).

    Epoch granularity on purpose: a per-batch hook would force a Python round trip every step.
    """

    def on_epoch_end(self, epoch, logs=None):
        interrupts.check()


class TrialReports:
    """One search trial's side of pruning: `monitor` reported to its Optuna trial at each epoch end,
    and whether its pruner stops it there (`pruned_at`: the last epoch trained, None while it goes on).

    The trial is reached through the study's storage (any process, any machine). A `monitor` that is
    not a per-epoch metric (e.g. test_accuracy) is never reported, so such a trial is never pruned.
    The last of its `epochs` is reported but never pruned: the trial trained them all, so its value
    counts as a complete one for the sampler (pruning there would save nothing and throw that away).
    Used by `OptunaPruning` for a job alone and by `pack.MemberEpochs` for each member of a pack.
    """

    def __init__(self, study: str, storage: str, trial_id: int, pruner: str, monitor: str, epochs: int):
        self.study, self.storage, self.trial_id, self.pruner, self.monitor = study, storage, trial_id, pruner, monitor
        self.epochs = epochs
        self.pruned_at: Optional[int] = None

    def open(self) -> None:
        import optuna

        from sweeps.sweeping.search import make_pruner, trial_of

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=self.study, storage=self.storage, pruner=make_pruner(self.pruner))
        self.trial = trial_of(study, self.trial_id)
        self.pruned_at = None

    def epoch_end(self, epoch: int, logs: Optional[dict]) -> bool:
        """After epoch `epoch` (from 0): report; whether the pruner stops the trial here."""
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return False
        import optuna

        with interrupts.deferred():  # an interrupted write would leave the study locked for the clean-up
            try:
                self.trial.report(float(value), epoch + 1)  # epochs counted from 1, as logged
            except optuna.exceptions.UpdateFinishedTrialError:
                # only the sweep that owns the trial ends it while its job trains: it was interrupted
                # (its Ctrl-C reaches this worker a moment later) or closed the trial as stale, so
                # the job stops as interrupted (run KILLED), not as a failure of its own
                raise KeyboardInterrupt(f"trial #{self.trial.number} was ended by its sweep") from None
            prune = epoch + 1 < self.epochs and self.trial.should_prune()
        if prune:
            self.pruned_at = epoch + 1
        return prune


class OptunaPruning(keras.callbacks.Callback):
    """A job alone as a search trial: its `TrialReports` every epoch; training stops when it is pruned."""

    def __init__(self, reports: TrialReports):
        super().__init__()
        self.reports = reports

    @property
    def pruned_at(self) -> Optional[int]:
        return self.reports.pruned_at

    def on_train_begin(self, logs=None):
        self.reports.open()

    def on_epoch_end(self, epoch, logs=None):
        if self.reports.epoch_end(epoch, logs):
            self.model.stop_training = True
