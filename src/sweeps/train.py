"""Train one configuration and track it in MLflow; `-m` runs a Hydra multirun grid.

    python -m sweeps.train                                   # one run, default config
    python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3       # 4 jobs under one parent run

`train(cfg)` is the job, as a list of steps; `main()` is the command line around it. In a
multirun, a job whose resolved config already FINISHED in the experiment is not retrained
(`resume=false` retrains everything); Ctrl-C or SIGTERM ends the current run and the sweep KILLED.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time

import hydra
import keras
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sweeps import plots, recovery, sweep, tracking
from sweeps.callbacks import MlflowEpochLogger
from sweeps.config import check_overrides, conf_dir, config_hash, register_configs, validate
from sweeps.cv import cross_validate
from sweeps.data import Dataset, load_dataset
from sweeps.errors import DivergedError, SweepsError
from sweeps.models import build_model, compile_model, hidden_dense_layers, summary_text

log = logging.getLogger(__name__)


def train(cfg: DictConfig, overrides: list[str] | None = None) -> float:
    """Run one job; returns `cfg.optimized_metric` (what a Hydra sweeper minimises)."""
    overrides = job_overrides() if overrides is None else overrides
    validate(cfg)  # 1. values in range, before anything heavy
    data = load_dataset(cfg.data)  # 2. arrays (files read once per process)
    tracker = tracking.connect(cfg.tracking)  # 3. store reachable, experiment ready
    recovery.close_stale_runs_once(tracker)  #    runs left RUNNING by a killed process end FAILED
    active = sweep.active()
    done = recovery.find_finished(tracker, config_hash(cfg)) if active and cfg.resume else None
    if done is not None:  # 4. already FINISHED in this experiment: not retrained
        return reuse(cfg, tracker, active, done, overrides, data.source)
    keras.utils.set_random_seed(cfg.seed)
    model = new_model(cfg, data)  # 5.
    parent = active.parent(tracker) if active else None
    name, tags = job_identity(tracker, cfg, overrides, data.source, active)
    with tracker.job_run(name, parent, tags) as run:  # 6. always ended
        tracker.log_config(cfg, {"n_params": model.count_params(), **data.sizes()})
        cv = (cross_validate(cfg, data, tracker, run.info.run_id, lambda: new_model(cfg, data), fit)
              if cfg.cv.folds else {})  # k models on k folds, nested under this run; then the model below
        logger = MlflowEpochLogger(run.info.run_id, len(data.x_train), hidden_dense_layers(model),
                                   monitor=cfg.early_stopping.monitor, client=tracker.client)
        train_time = fit(model, data, cfg, logger)  # 7.
        final = {**cv, **logger.summary(), **best_values(logger.history), "train_time_s": train_time,
                 **evaluate(model, data)}  # 8.
        mlflow.log_metrics(final)
        log_artifacts(model, data, logger.history, name, cfg.tracking.log_model)  # 9.
    return {**last_epoch(logger.history), **final}.get(cfg.optimized_metric, math.nan)


def new_model(cfg: DictConfig, data: Dataset) -> keras.Model:
    return compile_model(build_model(cfg, data.input_dim, data.n_classes), cfg, data.task)


def job_identity(tracker: tracking.Tracker, cfg: DictConfig, overrides: list[str], source: str,
                 active: sweep.Sweep | None) -> tuple[str, dict]:
    """The run's name and tags (overrides, config hash, data source; sweep membership)."""
    name = tracking.run_name(overrides, active.swept if active else None)
    tags = tracker.job_tags(cfg, overrides, {"sweeps.data_source": source})
    if active:
        tags.update({tracking.TAG_SWEEP: active.parent_run_id, tracking.TAG_SWEPT: json.dumps(active.swept)})
    return name, tags


def reuse(cfg: DictConfig, tracker: tracking.Tracker, active: sweep.Sweep, done, overrides: list[str],
          source: str) -> float:
    """Stand in for a job that already FINISHED: a linked run under this sweep, the earlier result."""
    active.parent(tracker)
    name, tags = job_identity(tracker, cfg, overrides, source, active)
    recovery.record_reuse(tracker, done, name, active.parent_run_id, tags)
    active.job_reused(recovery.earlier_sweep(done))
    log.info("job %s already FINISHED in run %s: not retrained (resume=false retrains it)",
             name, recovery.original_of(done))
    return done.data.metrics.get(cfg.optimized_metric, math.nan)


def fit(model: keras.Model, data: Dataset, cfg: DictConfig, logger: MlflowEpochLogger) -> float:
    """model.fit with our logger (and early stopping when enabled); returns seconds spent."""
    callbacks: list[keras.callbacks.Callback] = [logger]
    es = cfg.early_stopping
    if es.enabled:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience,
                                                       min_delta=es.min_delta,
                                                       restore_best_weights=es.restore_best_weights))
    validation = (data.x_val, data.y_val) if len(data.x_val) else None
    tic = time.perf_counter()
    model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
              validation_data=validation, callbacks=callbacks, verbose=2 if sys.stdout.isatty() else 0)
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
    """Best validation loss and accuracy over the epochs (min and max)."""
    out = {}
    if history.get("val_loss"):
        out["best_val_loss"] = min(history["val_loss"])
    if history.get("val_accuracy"):
        out["best_val_accuracy"] = max(history["val_accuracy"])
    return out


def log_artifacts(model, data: Dataset, history: dict, title: str, with_model: bool) -> None:
    mlflow.log_text(summary_text(model), "model_summary.txt")
    fig = plots.history_figure(history, title)
    mlflow.log_figure(fig, "curves.png")
    plots.close(fig)
    if with_model:
        tracking.log_keras_model(model, data.x_test[:5])


def job_overrides() -> list[str]:
    """The job's command-line overrides (empty outside Hydra, e.g. in tests using compose())."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def task(cfg: DictConfig) -> float:
    """Hydra's task function: a failing job is reported and, in a multirun, the sweep goes on."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    name = tracking.run_name(job_overrides(), sweep.active().swept if multirun else None)
    try:
        value = train(cfg)
    except SweepsError as err:
        if not multirun:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        log.error("job %s failed: %s", name, err)
        sweep.active().job_failed(name, err)
        return math.nan
    except Exception as err:
        if not multirun:
            raise
        log.exception("job %s failed", name)
        sweep.active().job_failed(name, err)
        return math.nan
    if multirun:
        sweep.active().job_finished()
    return value


def check_command_line(argv: list[str]) -> None:
    """Unknown keys and wrong types as one line and exit 2, before Hydra composes anything."""
    from hydra._internal.utils import get_args_parser  # Hydra's own parser: flags are skipped right

    args, _ = get_args_parser().parse_known_args(argv)
    try:
        check_overrides(args.overrides)
    except SweepsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _interrupt(signum: int, frame) -> None:
    """SIGTERM handler: stop like Ctrl-C, so the same clean-up ends the runs KILLED."""
    raise KeyboardInterrupt("SIGTERM")


def _signal_name(err: KeyboardInterrupt) -> str:
    return "SIGTERM" if err.args == ("SIGTERM",) else "SIGINT"


def main() -> None:
    """`python -m sweeps.train [-m] [overrides...]`; exits non-zero if any job failed.

    Exit codes: 0 all well, 1 a job of a sweep failed, 2 bad input, 130/143 interrupted (SIGINT/SIGTERM).
    """
    register_configs()
    check_command_line(sys.argv[1:])
    entry = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(task)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    status, interrupted = "KILLED", None
    try:
        entry()
        status = None
    except KeyboardInterrupt as err:
        interrupted = _signal_name(err)
    finally:
        finished = sweep.end(status)
        signal.signal(signal.SIGTERM, previous)
    if interrupted:
        in_sweep = finished is not None
        ended = "the current run and the sweep were" if in_sweep else "the run was"
        resume = "; rerun the same command to resume (finished jobs are not retrained)" if in_sweep else ""
        print(f"interrupted ({interrupted}): {ended} ended KILLED{resume}", file=sys.stderr)
    if finished is not None:
        print(finished.summary(), file=sys.stderr)
    if interrupted:
        sys.exit(128 + signal.Signals[interrupted].value)
    if finished is not None and finished.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
