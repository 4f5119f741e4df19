"""One job: train one configuration and track it as one MLflow run.

`train(cfg, context)` is the job as a list of steps. Everything it knows comes from its config, the
`JobContext` the launcher hands it (its overrides, the sweep folder, how many jobs run beside it)
and the tracking store (its sweep's parent run, earlier runs of the same config), so it runs the
same in the launching process, a pool worker, a fresh process or another machine.

A pack of jobs trained as one model (`sweeps.packed.pack`) goes through the same steps: `begin`
(check, load, connect, find the sweep, name and announce each job, reuse finished ones) before
training, `log_results` and `result_line` after it, and `failed_in_a_sweep` when one fails.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from mlflow.entities import Run
from omegaconf import DictConfig

from sweeps import backends, interrupts, progress, tracking
from sweeps.reporting import plots
from sweeps.tracking import queries, recovery, tags
from sweeps.training import checkpoint
from sweeps.training.callbacks import JobEpochs, OptunaPruning, TrialReports
from sweeps.config import check_task, config_hash, objectives, ranked_metric, validate
from sweeps.training.cv import cross_validate
from sweeps.training.data import Dataset, load_dataset
from sweeps.errors import ConfigError, DataError, StoreUnavailable, SweepsError
from sweeps.training.fitting import best_values, evaluate, fit, last_epoch, new_model, use_threads
from sweeps.config.metrics import SHOWN_AT_THE_END
from sweeps.training.models import kernel_layers, portable, summary_text
from sweeps.training.context import JobContext, thread_share

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One job that `begin` found to train: its config, what its launcher handed it, its run's name,
    tags and progress title, and its place among the jobs begun together."""

    cfg: DictConfig
    context: JobContext
    name: str
    run_tags: dict
    title: str
    index: int


@dataclass
class Begun:
    """What the steps before training found, for one job or a pack of them (`begin`)."""

    data: Dataset
    tracker: tracking.Tracker
    parent: Optional[Run]  # the sweep's parent run (None: a run of its own)
    values: list[float]  # each job's ranked metric: filled in for jobs that already FINISHED
    todo: list[Job]  # the jobs left to train
    started: float  # time.monotonic() at the start, for the result lines

    @property
    def parent_id(self) -> Optional[str]:
        return self.parent.info.run_id if self.parent else None


def begin(cfgs: Sequence[DictConfig], contexts: Sequence[JobContext]) -> Begun:
    """The steps every job takes before it trains, alone or as a member of a pack (the members share
    their data and store: `packed.launcher.pack_key`): 1. values in range, before anything heavy;
    2. the arrays (files read once per process), checked against each job's task; 3. the store reachable,
    the experiment ready; 4. the sweep the jobs belong to, from the store; 5. each job's name and tags,
    announced, and stood in for by a FINISHED run of its config where there is one (not retrained)."""
    started = time.monotonic()
    interrupts.check()  # an interrupt swallowed during the previous job stops this one before it starts
    for cfg in cfgs:
        validate(cfg)  # 1.
    data = load_dataset(cfgs[0].data)  # 2.
    for cfg in cfgs:
        check_task(cfg, data.task)
        check_folds(cfg, data)
    tracker = tracking.connect(cfgs[0].tracking)  # 3.
    parent = find_parent(tracker, contexts[0])  # 4.
    values, todo = [math.nan] * len(cfgs), []
    for i, (cfg, job) in enumerate(zip(cfgs, contexts)):  # 5.
        name, run_tags = job_identity(cfg, job, data.source, parent)
        title = announce(name, job, parent)
        done = finished_twin(tracker, cfg, parent)
        if done is not None:
            values[i] = reuse(cfg, tracker, parent, done, name, run_tags, title)
        else:
            todo.append(Job(cfg, job, name, run_tags, title, i))
    return Begun(data, tracker, parent, values, todo, started)


def train(cfg: DictConfig, context: Optional[JobContext] = None) -> float:
    """Run one job; returns its ranked metric, the first of `optimized_metric` (what a Hydra sweeper minimises)."""
    begun = begin([cfg], [context or JobContext.from_hydra()])  # 1.-5.
    if not begun.todo:
        return begun.values[0]
    (job,) = begun.todo
    data, tracker, parent = begun.data, begun.tracker, begun.parent
    threads = thread_share(cfg, job.context)
    if threads:
        use_threads(threads)
    backends.set_seed(cfg.seed)
    model = new_model(cfg, data)  # 6.
    saving, saved = job_checkpoint(cfg, job.context, tracker, parent)  # requeued by SLURM: where it left off
    if saved:
        progress.say(f"  continues run {saved.run_id} after epoch {saved.epoch} (its checkpoint: the job was requeued)")
    with checkpoint.kept_if_interrupted(saving), tracker.job_run(
            job.name, begun.parent_id, job.run_tags, continues=saved.run_id if saved else None,
            after_epoch=saved.epoch if saved else 0) as run:  # 7. always ended
        run_id = run.info.run_id
        if saved is None:
            tracker.log_config(run_id, cfg, {"n_params": model.count_params(), **data.sizes()})
            cv = cross_validate(cfg, data, tracker, run_id) if cfg.cv.folds else {}  # k folds, nested under this run
        else:
            cv = saved.state.get("cv", {})
        logger = JobEpochs(run_id, len(data.x_train), kernel_layers(model), monitor=cfg.early_stopping.monitor,
                           client=tracker.client)
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
        log_results(tracker, run_id, job, final, model, data, logger.history)  # 10.
    return result_line(job, logger.history, final, begun.started)


def log_results(tracker: tracking.Tracker, run_id: str, job: Job, final: dict, model, data: Dataset,
                history: dict) -> None:
    """A job's end-of-run metrics, its model summary, curves figure and (`tracking.log_model`) model."""
    tracker.client.log_batch(run_id, metrics=tracking.metric_points(final), synchronous=True)
    tracker.client.log_text(run_id, summary_text(model), "model_summary.txt")
    tracker.client.log_figure(run_id, plots.history_figure(history, job.name), "curves.png")
    if job.cfg.tracking.log_model:
        tracker.log_keras_model(run_id, portable(model), data.x_test[:5])


def result_line(job: Job, history: dict, final: dict, started: float) -> float:
    """Say how the job ended (its objectives and the end-of-run metrics); returns its ranked metric."""
    result = {**last_epoch(history), **final}
    progress.say(progress.result_line(job.title, result, (*objectives(job.cfg), *SHOWN_AT_THE_END),
                                      time.monotonic() - started))
    return result.get(ranked_metric(job.cfg), math.nan)


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
    parent = queries.running_sweep(tracker.client, tracker.experiment_id, job.sweep_key)
    if parent is None:
        log.warning("no RUNNING sweep for %s in the store (key %s): this job is tracked as a run of its own",
                    job.sweep_dir, job.sweep_key)
    return parent


def job_identity(cfg: DictConfig, job: JobContext, source: str, parent) -> tuple[str, dict]:
    """The run's name and tags (overrides, config hash, data source; sweep membership)."""
    swept = recovery.swept_of(parent) if parent else None
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


def record_failure(cfg: DictConfig, job: JobContext, err: BaseException, reason: Optional[str] = None) -> None:
    """A job of a sweep that failed before opening its run still leaves a FAILED run under the parent
    (`reason`: its one-line reason, when not the error's own text)."""
    try:
        tracker = tracking.connect(cfg.tracking)
        parent = queries.running_sweep(tracker.client, tracker.experiment_id, job.sweep_key)
        if parent is None:
            return
        name, run_tags = job_identity(cfg, job, "", parent)
        children = queries.jobs_of(tracker.client, tracker.experiment_id, parent.info.run_id)
        mine = [r for r in children if r.data.tags.get(tags.OVERRIDES) == run_tags[tags.OVERRIDES]]
        if not mine:  # the run itself records errors raised after it was opened
            recovery.record_failed_job(tracker, parent.info.run_id, name, run_tags, err, reason)
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


def stop_if_not_the_jobs_own(cfg: DictConfig, err: Exception, store_lost_possible: bool = True) -> None:
    """Raise what `err` really is when it is not this job's failure: an interrupt, or a lost store."""
    # a signal that C code turned into its own error (TensorFlow: SystemError from `__import__`)
    # is still the interrupt: the run already ended KILLED, the job stops as interrupted
    interrupts.check()
    lost = store_lost(cfg, err) if store_lost_possible else None
    if lost:  # every later job would fail the same way: stop (see StoreUnavailable)
        raise StoreUnavailable(lost) from None


def failed_in_a_sweep(cfg: DictConfig, err: Exception, what: str) -> None:
    """The one failure path of a job, a pack or a member of a pack in a sweep (the caller records the
    failure on its runs and the sweep goes on), from inside `interrupts.handling()`."""
    stop_if_not_the_jobs_own(cfg, err)
    if isinstance(err, SweepsError):
        log.error("%s failed: %s", what, err)
    else:
        log.exception("%s failed", what)
