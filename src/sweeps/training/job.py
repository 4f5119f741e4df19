"""One job: train one configuration and track it as one MLflow run.

`train(cfg, job)` is the job as a list of steps. Everything it knows comes from its config, the
`JobContext` the launcher hands it (its overrides, the sweep folder, how many jobs run beside it)
and the tracking store (its sweep's parent run, earlier runs of the same config), so it runs the
same in the launching process, a pool worker, a fresh process or another machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import keras
from omegaconf import DictConfig

from sweeps import interrupts, tracking
from sweeps.reporting import plots
from sweeps.sweeping import progress, parent as sweep
from sweeps.tracking import recovery, tags
from sweeps.training import checkpoint
from sweeps.training.callbacks import MlflowEpochLogger, OptunaPruning, TrialReports
from sweeps.config import check_task, config_hash, objectives, ranked_metric, validate
from sweeps.training.cv import cross_validate
from sweeps.training.data import Dataset, load_dataset
from sweeps.errors import ConfigError, DataError
from sweeps.training.fitting import best_values, evaluate, fit, last_epoch, new_model, use_threads
from sweeps.packed.launcher import parallel_jobs
from sweeps.config.metrics import SHOWN_AT_THE_END
from sweeps.training.models import kernel_layers, portable, summary_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What the launcher hands a job besides its config."""

    overrides: tuple[str, ...] = ()  # the job's own command-line overrides
    sweep_dir: Optional[str] = None  # absolute `hydra.sweep.dir` in a multirun; None for a single run
    parallel: int = 1  # jobs the launcher runs at once on this machine (for the thread share)
    number: Optional[int] = None  # `hydra.job.num` in a multirun (from 0): which job of the sweep this is
    sweep_key: Optional[str] = None  # the key our sweeper gave the sweep (`sweep.assign_key`): finds the parent

    @classmethod
    def from_hydra(cls) -> "JobContext":
        """Read from Hydra's config of this job (empty outside Hydra, e.g. under compose())."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return cls()
        return cls.of(HydraConfig.get())

    @classmethod
    def of(cls, hc: DictConfig) -> "JobContext":
        """Read from a job's `hydra` node (what a launcher composed for it)."""
        from hydra.types import RunMode

        multirun = hc.mode == RunMode.MULTIRUN
        return cls(tuple(hc.overrides.task), sweep.absolute_dir(hc.sweep.dir, hc.runtime.cwd) if multirun else None,
                   parallel_jobs(hc.launcher) if multirun else 1, hc.job.num if multirun else None,
                   sweep.key_of(hc) if multirun else None)


def thread_share(cfg: DictConfig, job: JobContext) -> Optional[int]:
    """`threads`, else the cores divided among the jobs that run at once (None: TensorFlow decides)."""
    if cfg.threads:
        return cfg.threads
    return max(1, (os.cpu_count() or 1) // job.parallel) if job.parallel > 1 else None


def train(cfg: DictConfig, job: Optional[JobContext] = None) -> float:
    """Run one job; returns its ranked metric, the first of `optimized_metric` (what a Hydra sweeper minimises)."""
    job = job or JobContext.from_hydra()
    started = time.monotonic()
    interrupts.check()  # an interrupt swallowed during the previous job stops this one before it starts
    validate(cfg)  # 1. values in range, before anything heavy
    data = load_data(cfg)  # 2. arrays (files read once per process)
    check_folds(cfg, data)
    tracker = tracking.connect(cfg.tracking)  # 3. store reachable, experiment ready
    parent = find_parent(tracker, job)  # 4. the sweep this job belongs to, from the store
    name, run_tags = job_identity(cfg, job, data.source, parent)
    title = announce(name, job, parent)
    done = finished_twin(tracker, cfg, parent)
    if done is not None:  # 5. already FINISHED in this experiment: not retrained
        return reuse(cfg, tracker, parent, done, name, run_tags, title)
    threads = thread_share(cfg, job)
    if threads:
        use_threads(threads)
    keras.utils.set_random_seed(cfg.seed)
    model = new_model(cfg, data)  # 6.
    saving, saved = job_checkpoint(cfg, job, tracker, parent)  # requeued by SLURM: where it left off
    if saved:
        progress.say(f"  continues run {saved.run_id} after epoch {saved.epoch} (its checkpoint: the job was requeued)")
    with checkpoint.kept_if_interrupted(saving), tracker.job_run(
            name, parent.info.run_id if parent else None, run_tags, continues=saved.run_id if saved else None,
            after_epoch=saved.epoch if saved else 0) as run:  # 7. always ended
        run_id = run.info.run_id
        if saved is None:
            tracker.log_config(run_id, cfg, {"n_params": model.count_params(), **data.sizes()})
            cv = cross_validate(cfg, data, tracker, run_id) if cfg.cv.folds else {}  # k folds, nested under this run
        else:
            cv = saved.state.get("cv", {})
        logger = MlflowEpochLogger(run_id, len(data.x_train), kernel_layers(model),
                                   monitor=cfg.early_stopping.monitor, client=tracker.client)
        pruning = trial_pruning(cfg)
        keep = (checkpoint.Checkpoint(saving, {"run_id": run_id, "parent": parent.info.run_id,
                                                "config_hash": config_hash(cfg)}, logger, saved=saved, extra={"cv": cv})
                if saving else None)
        train_time = fit(model, data, cfg, logger, (pruning,) if pruning else (), keep)  # 8.
        if pruning and pruning.pruned_at is not None:  # a search trial the pruner stopped: FINISHED, marked
            tracker.client.set_tag(run_id, tags.PRUNED_AT, str(pruning.pruned_at))
        earlier = saved.state.get("train_time_s", 0.0) if saved else 0.0
        final = {**cv, **logger.summary(), **best_values(logger.history), "train_time_s": earlier + train_time,
                 **evaluate(model, data)}  # 9.
        if keep:
            final["checkpoint_s"] = keep.seconds
        tracker.client.log_batch(run_id, metrics=tracking.metric_points(final), synchronous=True)
        log_artifacts(tracker, run_id, model, data, logger.history, name, cfg.tracking.log_model)  # 10.
    result = {**last_epoch(logger.history), **final}
    progress.say(progress.result_line(title, result, (*objectives(cfg), *SHOWN_AT_THE_END),
                                      time.monotonic() - started))
    return result.get(ranked_metric(cfg), math.nan)


def job_checkpoint(cfg: DictConfig, job: JobContext, tracker: tracking.Tracker, parent):
    """Where this job saves its state every epoch (None: it does not), and the state an earlier start
    of it saved there (None: it starts at its first epoch): see `sweeps.training.checkpoint`."""
    if parent is None or not checkpoint.wanted(cfg.checkpoint, job.sweep_dir):
        return None, None
    path = checkpoint.path_of(job.sweep_dir, job.number)
    saved = checkpoint.load(path, parent.info.run_id, config_hash(cfg))
    if saved is not None and tracker.client.get_run(saved.run_id).info.status == "FINISHED":
        saved = None  # its run ended after the last save (a kill before the file was removed)
    return path, saved


def load_data(cfg: DictConfig) -> Dataset:
    """The job's arrays; checked against what needs a classifier or a regression (your data's task
    is known only once its labels are read)."""
    data = load_dataset(cfg.data)
    check_task(cfg, data.task)
    return data


def finished_twin(tracker: tracking.Tracker, cfg: DictConfig, parent):
    """A FINISHED run of this very config that the job can stand for instead of training: any in the
    experiment (resume), or with resume=false one of this sweep only (a job that repeats another
    job's config, e.g. reg=none at several rates, is trained once per sweep all the same)."""
    if parent is None:
        return None
    return recovery.find_finished(tracker, config_hash(cfg), None if cfg.resume else parent.info.run_id)


def check_folds(cfg: DictConfig, data: Dataset) -> None:
    n = len(data.x_train) + len(data.x_val)
    if cfg.cv.folds > n // 2:
        raise ConfigError(f"cv.folds={cfg.cv.folds} is more than half the {n} training examples; "
                          f"use at most {n // 2} folds")


def trial_reports(cfg: DictConfig) -> Optional[TrialReports]:
    """For a trial of `hydra/sweeper=optuna`: what reports to it and asks its pruner (None: no trial)."""
    s = cfg.search
    if s.trial_id is None or len(objectives(cfg)) > 1:  # Optuna takes no reports from a multi-objective trial
        return None
    return TrialReports(s.study, s.storage, s.trial_id, s.pruner, ranked_metric(cfg), cfg.epochs)


def trial_pruning(cfg: DictConfig) -> Optional[OptunaPruning]:
    """For a trial trained alone: the callback that reports to it and obeys its pruner."""
    reports = trial_reports(cfg)
    return OptunaPruning(reports) if reports else None


def find_parent(tracker: tracking.Tracker, job: JobContext):
    """The sweep's parent run (None for a single run, which first closes this host's stale runs)."""
    if job.sweep_dir is None:
        recovery.close_stale_runs(tracker)  # a sweep's launcher did this once for all its jobs
        return None
    parent = sweep.find_parent(tracker, job.sweep_key)
    if parent is None:
        log.warning("no RUNNING sweep for %s in the store (key %s): this job is tracked as a run of its own",
                    job.sweep_dir, job.sweep_key)
    return parent


def job_identity(cfg: DictConfig, job: JobContext, source: str, parent) -> tuple[str, dict]:
    """The run's name and tags (overrides, config hash, data source; sweep membership)."""
    swept = sweep.swept_of(parent) if parent else None
    name = tracking.run_name(list(job.overrides), swept)
    run_tags = tracking.job_tags(cfg, list(job.overrides), {tags.DATA_SOURCE: source})
    if parent:
        run_tags.update({tags.SWEEP: parent.info.run_id, tags.SWEPT: json.dumps(swept)})
    if cfg.search.trial is not None:
        run_tags.update({tags.STUDY: cfg.search.study, tags.TRIAL: str(cfg.search.trial)})
    return name, run_tags


def announce(name: str, job: JobContext, parent) -> str:
    """Say on stderr which job of the sweep starts, and the time the sweep still needs; returns its title."""
    planned = int(parent.data.tags.get(tags.JOBS, 0)) if parent else None
    sweep_seconds = time.time() - parent.info.start_time / 1000 if parent and parent.info.start_time else None
    if job.number is not None and job.number < job.parallel:  # the first jobs start at once: no pace yet
        sweep_seconds = None
    title = progress.job_title(name, job.number, planned)
    progress.say(progress.start_line(title, job.number, planned, sweep_seconds))
    return title


def reuse(cfg: DictConfig, tracker: tracking.Tracker, parent, done, name: str, run_tags: dict, title: str) -> float:
    """Stand in for a job that already FINISHED: a linked run under this sweep, the earlier result."""
    recovery.record_reuse(tracker, done, name, parent.info.run_id, run_tags)
    shown = progress.values(done.data.metrics, (*objectives(cfg), *SHOWN_AT_THE_END))
    twin = done.data.tags.get(tags.SWEEP) == parent.info.run_id  # the same config as a job of this sweep
    why = "another job of this sweep has the same config" if twin else "resume=false retrains it"
    progress.say(f"{title} not retrained: it FINISHED in run {recovery.original_of(done)} "
                 f"({why}){': ' + shown if shown else ''}")
    return done.data.metrics.get(ranked_metric(cfg), math.nan)


def log_artifacts(tracker: tracking.Tracker, run_id: str, model, data: Dataset, history: dict, title: str,
                  with_model: bool) -> None:
    tracker.client.log_text(run_id, summary_text(model), "model_summary.txt")
    fig = plots.history_figure(history, title)
    tracker.client.log_figure(run_id, fig, "curves.png")
    if with_model:
        tracker.log_keras_model(run_id, portable(model), data.x_test[:5])


def record_failure(cfg: DictConfig, job: JobContext, err: BaseException, reason: Optional[str] = None) -> None:
    """A job of a sweep that failed before opening its run still leaves a FAILED run under the parent
    (`reason`: its one-line reason, when not the error's own text)."""
    try:
        tracker = tracking.connect(cfg.tracking)
        parent = sweep.find_parent(tracker, job.sweep_key)
        if parent is None:
            return
        name, run_tags = job_identity(cfg, job, "", parent)
        children = sweep.children(tracker, parent.info.run_id)
        mine = [r for r in children if r.data.tags.get(tags.OVERRIDES) == run_tags[tags.OVERRIDES]]
        if not mine:  # the run itself records errors raised after it was opened
            sweep.record_failed_job(tracker, parent.info.run_id, name, run_tags, err, reason)
    except Exception as nested:  # noqa: BLE001 - the store may be the very thing that failed
        log.debug("could not record the failure: %s", nested)


def store_lost(cfg: DictConfig, err: BaseException) -> Optional[str]:
    """When a job failed because its store stopped answering: the one line that says so (else None)."""
    if isinstance(err, (ConfigError, DataError)):  # bad input or data: said as such even before mlruns/ exists
        return None
    uri = tracking.resolve_uri(cfg.tracking.uri)
    problem = tracking.store_problem(uri)
    if problem is None and tracking.locked(err):  # tracking.lock_wait_s ran out: every later job would wait as long
        problem = (f"another process held the database locked for more than MLflow's 20 s and "
                   f"tracking.lock_wait_s={cfg.tracking.get('lock_wait_s', tracking.LOCK_WAIT_S):g}")
    if problem is None:
        return None
    reason = tracking.redact_text(f"{problem}; {tracking.root_reason(err)}")
    return (f"tracking store {tracking.redact_uri(uri)} stopped answering ({reason}); "
            "stopped: rerun the same command when it is back (finished jobs are not retrained)")
