"""Packed sweeps: jobs that differ only in penalty, dropout or seed, trained as ONE Keras model.

`hydra/launcher=packed` (see `sweeps.packed.launcher`) groups a sweep's jobs (`launcher.packs`) and hands
each group of two or more to `train_pack()`; a job that fits no group runs alone, as unpacked.
Inside a pack every job is a member of a `packed.model.PackedMLP` and still its own MLflow run
under the sweep's parent, with what an unpacked job logs: params, tags (plus `sweeps.packed_with`),
per-epoch curves of its own outputs and penalty, weight statistics of its own kernels, test
metrics, the curves figure, and its model exported as an ordinary Keras model of the unpacked
architecture (`runs:/<id>/model` loads it like any other job's).

Faithful to the unpacked job: a member starts from the initial weights its config gets alone
(the unpacked model is built under its seed and its weights copied in), sees the same batches in
the same order (`fitting.EpochBatches`, drawn from its seed), and its gradient is that of its
own loss. Only its dropout masks differ (drawn by the pack). Early stopping is per member (same
rules as Keras' EarlyStopping): a member that stops keeps its best (or last) weights and its run's
history ends there, while the others go on. A member whose loss turns NaN/inf fails alone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import keras
import numpy as np
from omegaconf import DictConfig

from sweeps import backends, progress, tracking
from sweeps.tracking import tags
from sweeps.training import job as jobs
from sweeps.training.context import JobContext
from sweeps.training.callbacks import JobEpochs, MonitorCallback, StopOnInterrupt, TrialReports
from sweeps.errors import DivergedError
from sweeps.training.fitting import best_values, diverged_message, evaluation, fit_epochs, new_model, results
from sweeps.training.models import AUTO_STEPS_PER_EXECUTION, make_optimizer
from sweeps.packed.model import Member, PackedMLP

log = logging.getLogger(__name__)

def train_pack(cfgs: Sequence[DictConfig], contexts: Sequence[JobContext], jit_compile: bool = False) -> list[float]:
    """Train the jobs `cfgs` (one pack: see `launcher.packs`) as one model (compiled by XLA with
    `jit_compile`); returns each job's `optimized_metric` (NaN for a member that failed). The steps
    before and after training are a single job's (`jobs.begin`, `jobs.log_results`, `jobs.result_line`):
    jobs already FINISHED in the experiment are not retrained."""
    begun = jobs.begin(cfgs, contexts)
    if begun.todo:
        for job, value in zip(begun.todo, _train(begun, jit_compile)):
            begun.values[job.index] = value
    return begun.values


def _train(begun: jobs.Begun, jit_compile: bool) -> list[float]:
    members, data, tracker = begun.todo, begun.data, begun.tracker
    first = members[0].cfg
    models = []  # each member as the ordinary model of its config: initial weights, then the export
    for job in members:
        backends.set_seed(job.cfg.seed)
        models.append(new_model(job.cfg, data))
    packed = PackedMLP([Member.of(j.cfg) for j in members], data.input_dim, first.model.hidden,
                       first.model.activation, data.n_classes, seed=first.seed)
    packed.compile(optimizer=make_optimizer(first, decay=False),  # members decay their own
                   steps_per_execution=first.steps_per_execution or AUTO_STEPS_PER_EXECUTION, jit_compile=jit_compile)
    packed.load_members([m.get_weights() for m in models])
    runs = MemberRuns(tracker)
    try:
        for job, model in zip(members, models):
            run_id = runs.open(job.name, begun.parent_id, job.run_tags)
            tracker.log_config(run_id, job.cfg, {"n_params": model.count_params(), **data.sizes()})
        for j, run_id in enumerate(runs.ids):
            tracker.client.set_tag(run_id, tags.PACKED_WITH, json.dumps([r for r in runs.ids if r != run_id]))
        loggers = [JobEpochs(run_id, len(data.x_train), member_layers(packed, j), monitor=job.cfg.early_stopping.monitor,
                             client=tracker.client) for j, (job, run_id) in enumerate(zip(members, runs.ids))]
        epochs = MemberEpochs(loggers, [MemberStopping.of(j.cfg) for j in members],
                              [jobs.trial_reports(j.cfg) for j in members])
        shown = progress.EpochProgress(first.epochs, ())
        tic = time.perf_counter()
        try:
            fit_epochs(packed, data, first, [j.cfg.seed for j in members], [epochs, StopOnInterrupt(), shown])
        finally:
            shown.close()
        train_time = time.perf_counter() - tic
        packed.load_members([epochs.final_weights(j) for j in range(len(members))])
        evaluated = evaluation(packed, data)
        for j, reports in enumerate(epochs.reports):
            if reports and reports.pruned_at is not None:  # a search trial the pruner stopped: FINISHED, marked
                tracker.client.set_tag(runs.ids[j], tags.PRUNED_AT, str(reports.pruned_at))
        return [_finish(j, job, runs, loggers[j], models[j], packed, begun, evaluated, train_time)
                for j, job in enumerate(members)]
    except BaseException as err:
        runs.end_open(err)
        raise


def _finish(j: int, job: jobs.Job, runs: "MemberRuns", logger: JobEpochs, model: keras.Model,
            packed: PackedMLP, begun: jobs.Begun, evaluated: dict, train_time: float) -> float:
    """Log member j's results and model and end its run; a member that failed ends FAILED alone
    (through a single job's failure path: an interrupt or a lost store stops the pack)."""
    run_id = runs.ids[j]
    try:
        if logger.diverged:
            raise DivergedError(diverged_message(logger.diverged))
        final = {**logger.summary(), **best_values(logger.history), "train_time_s": train_time / len(runs.ids),
                 "pack_train_time_s": train_time, **results(evaluated, j)}
        model.set_weights(packed.member_weights(j))
        jobs.log_results(begun.tracker, run_id, job, final, model, begun.data, logger.history)
    except Exception as err:
        jobs.failed_in_a_sweep(job.cfg, err, f"job {job.name}")
        runs.end(j, err)
        return math.nan
    runs.end(j)
    return jobs.result_line(job, logger.history, final, begun.started)


class MemberRuns:
    """The members' MLflow runs, opened together and ended one by one (as `tracking.Tracker.job_run` ends a run)."""

    def __init__(self, tracker: tracking.Tracker):
        self.tracker = tracker
        self.ids: list[str] = []
        self._open: set[int] = set()

    def open(self, name: str, parent_id: Optional[str], run_tags: dict) -> str:
        self.ids.append(self.tracker.open_job_run(name, parent_id, run_tags).info.run_id)
        self._open.add(len(self.ids) - 1)
        return self.ids[-1]

    def end(self, j: int, err: Optional[BaseException] = None) -> None:
        """FINISHED, or as a run that raised `err` ends (FAILED with its reason; KILLED)."""
        self._open.discard(j)
        self.tracker.end_job_run(self.ids[j], err)

    def end_open(self, err: BaseException) -> None:
        for j in sorted(self._open):
            self.end(j, err)


@dataclass
class MemberLayer:
    """Hidden layer `i` of member `k`, as `callbacks.weight_stats` reads a Dense layer."""

    name: str
    variable: object
    k: int

    @property
    def kernel(self):
        return self.variable[self.k]


def member_layers(packed: PackedMLP, k: int) -> list[MemberLayer]:
    return [MemberLayer(f"hidden_{i}", kernel, k) for i, kernel in enumerate(packed.kernels[:-1])]


class MemberStopping(MonitorCallback):
    """Keras' EarlyStopping rules for one member: stop after `patience` epochs without an improvement
    of more than `min_delta`; keep the best epoch's weights (`restore_best_weights`) or the last ones.
    Driven by `MemberEpochs` with the member's own logs (`update`), not by Keras."""

    def __init__(self, monitor: str, patience: int, min_delta: float, restore_best_weights: bool):
        super().__init__(monitor, min_delta=min_delta)
        self.patience, self.restore = patience, restore_best_weights

    @classmethod
    def of(cls, cfg: DictConfig) -> Optional["MemberStopping"]:
        es = cfg.early_stopping
        return cls(es.monitor, es.patience, es.min_delta, es.restore_best_weights) if es.enabled else None

    def reset(self) -> None:
        self.wait = 0
        self.best: Optional[float] = None
        self.kept: Optional[list[np.ndarray]] = None  # the weights the member ends with

    def update(self, epoch: int, logs: dict, weights: Callable[[], list[np.ndarray]]) -> bool:
        """After epoch `epoch` (from 0): whether the member stops here."""
        value = logs.get(self.monitor)
        if value is None:
            return False
        if self.restore and self.kept is None:
            self.kept = weights()
        self.wait += 1
        if self.improves(value, self.best):
            self.best, self.wait = value, 0
            if self.restore:
                self.kept = weights()
            return False
        if self.wait >= self.patience and epoch > 0:
            if not self.restore:
                self.kept = weights()
            return True
        return False


class MemberEpochs(keras.callbacks.Callback):
    """Hands each member of a packed model its own slice of the logs: to its own `JobEpochs` callbacks,
    its own early stopping and, for a search trial, its own trial's pruner. A member stops when it
    diverges, its early stopping says so or its trial is pruned (it stops learning: its weights stay
    as they are while the others go on); the pack's training stops when every member has stopped.

    Args:
        loggers: one per member, in member order.
        stoppers: one per member (None: no early stopping for it).
        reports: one per member (None: not a search trial, or not one that is pruned).
    """

    def __init__(self, loggers: Sequence[JobEpochs], stoppers: Sequence[Optional[MemberStopping]],
                 reports: Optional[Sequence[Optional[TrialReports]]] = None):
        super().__init__()
        self.loggers = list(loggers)
        self.stoppers = list(stoppers)
        self.reports = list(reports or [None] * len(self.loggers))

    def set_model(self, model):
        super().set_model(model)
        for epochs in self.loggers:
            for callback in epochs.callbacks:
                callback.set_model(model)

    def on_train_begin(self, logs=None):
        self.active = [True] * len(self.loggers)
        self.frozen: dict[int, list[np.ndarray]] = {}  # members pruned: their weights when they were
        for epochs in self.loggers:
            for callback in epochs.callbacks:
                callback.on_train_begin()
        for stopper in self.stoppers:
            if stopper:
                stopper.reset()
        for reports in self.reports:
            if reports:
                reports.open()

    def on_epoch_begin(self, epoch, logs=None):
        for j in self._active():
            for callback in self.loggers[j].callbacks:
                callback.on_epoch_begin(epoch)

    def on_train_batch_end(self, batch, logs=None):
        for j in self._active():
            mine = member_logs(logs, j, ("loss",))
            for callback in self.loggers[j].callbacks:
                callback.on_train_batch_end(batch, mine)
        self._stop_diverged()

    def on_epoch_end(self, epoch, logs=None):
        for j in self._active():
            mine = member_logs(logs, j)
            for callback in self.loggers[j].callbacks:  # in order: the logger adds what the next ones watch
                callback.on_epoch_end(epoch, mine)
            stopper, reports = self.stoppers[j], self.reports[j]
            if stopper and stopper.update(epoch, mine, lambda j=j: self.model.member_weights(j)):
                self.active[j] = False
            elif reports and reports.epoch_end(epoch, mine):
                self.active[j] = False
                self.frozen[j] = self.model.member_weights(j)  # what it ends with, whatever the others do
        self._stop_diverged()

    def _active(self) -> list[int]:
        return [j for j, on in enumerate(self.active) if on]

    def _stop_diverged(self) -> None:
        for j, logger in enumerate(self.loggers):
            if logger.diverged:
                self.active[j] = False
        self.model.stop_training = not any(self.active)  # a member's NaN stop would end the whole fit otherwise

    def final_weights(self, j: int) -> list[np.ndarray]:
        """Member j's weights at its end: as its early stopping kept them, as they were when its trial was
        pruned, else the pack's last ones."""
        stopper = self.stoppers[j]
        if stopper and stopper.kept is not None:
            return stopper.kept
        return self.frozen.get(j) or self.model.member_weights(j)


def member_logs(logs: Optional[dict], j: int, keys: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Member j's values of a packed model's logs (one value per member)."""
    return {k: float(np.asarray(v).reshape(-1)[j]) for k, v in (logs or {}).items() if keys is None or k in keys}
