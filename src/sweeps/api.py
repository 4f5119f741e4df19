"""Sweeps in a notebook: a sweep's jobs as a pandas DataFrame, their curves, seeds grouped.

    import sweeps
    jobs = sweeps.load_sweep()                      # latest sweep of experiment `sweeps`, one row per job
    sweeps.group_seeds(jobs)                        # one row per configuration: n, <m>_mean, <m>_ci95, tied_with_best
    sweeps.group_seeds(jobs, stats="bootstrap")     # ... and bootstrap intervals, P(beats the best row)
    curves = sweeps.load_histories(metrics=["val_loss"])   # long: run_id, run_name, swept keys, metric, epoch, value
    sweeps.list_sweeps()                            # every sweep of the experiment, newest first

It reads the store as `python -m sweeps.compare` does (`runs`) and builds its table and statistics
with the same code (`table`), so a grouped frame holds the numbers `compare --format json` prints.
Mistakes (no store, unknown experiment, sweep or metric) raise `CompareError`, a `SweepsError`, with
one line. Nothing here imports TensorFlow or pyplot (the notebook keeps its plotting backend).
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
from mlflow.tracking import MlflowClient

from sweeps.reporting import runs, table
from sweeps.errors import CompareError
from sweeps.sweeping.repeats import REPEATED
from sweeps.reporting.stats import KINDS as stats_kinds


def load_sweep(sweep_id: Optional[str] = None, experiment: str = "sweeps", tracking_uri: Optional[str] = None,
               metric: Optional[str] = None, group_seeds: bool = False) -> pd.DataFrame:
    """One row per job of a sweep (latest if `sweep_id` is None; a unique prefix works), best first.

    Columns: the `compare` table's (status, swept values as numbers where they are numbers, final and
    best validation metrics, test metrics, n_params, run_name, run_id), then every other final metric
    under its MLflow name and every param as `params.<key>`. `metric` ranks the rows (default: as
    `compare`). `group_seeds=True` returns `group_seeds(frame)` instead.
    """
    _, sweep = _open(sweep_id, experiment, tracking_uri)
    if metric:
        runs.check_metric(sweep, metric, runs.ARGUMENTS)
    metric = metric or table.default_metric(sweep)
    frame = _frame(_job_rows(sweep, metric), sweep.swept)
    frame.attrs.update(sweep_id=sweep.id, experiment=experiment, swept=list(sweep.swept), metric=metric)
    return _grouped(frame) if group_seeds else frame


def group_seeds(frame: pd.DataFrame, metric: Optional[str] = None, stats: str = "t") -> pd.DataFrame:
    """The jobs of a `load_sweep` frame (filtered or not) that differ only in `seed` and
    `data.val_seed` (the keys `repeat=K` varies), one row each.

    The same rows as `python -m sweeps.compare` shows for a sweep with seeds: status counts, the
    other swept keys, `n`, `tied_with_best` (Welch's t-test, two-sided, of the ranking metric against
    the best row, Holm-Bonferroni corrected over every pair of rows, family-wise 5 %),
    `<column>_mean` and `<column>_ci95` (95 % interval half-width, Student's t) of every number,
    what all jobs of each row share, and `run_ids`. Best mean first. `stats="bootstrap"` adds, as
    `compare --stats bootstrap`, the ranking column's 95 % percentile bootstrap interval
    (`<rank>_boot95_low`, `_high`) and `p_beats_best` (probability that a job of the row beats a job
    of the best row; `_low`, `_high`: its stratified bootstrap interval), `p_vs_best_holm`.
    """
    return _grouped(frame, metric, stats)


def load_histories(sweep_id: Optional[str] = None, metrics: Optional[list[str]] = None, experiment: str = "sweeps",
                   tracking_uri: Optional[str] = None) -> pd.DataFrame:
    """Every logged value of `metrics` (default: every metric) for each job of a sweep, one row each.

    Long format, ready for `pivot_table` or seaborn: run_id, run_name, the swept keys, metric,
    epoch (the step the value was logged at: counted from 1, as `best_epoch` and the plots), value.
    A job's end-of-run metrics (`test_loss`, ...) have a single value.
    """
    if isinstance(metrics, str):  # one metric by name: not its characters
        metrics = [metrics]
    client, sweep = _open(sweep_id, experiment, tracking_uri)
    for metric in metrics or ():
        runs.check_metric(sweep, metric, runs.ARGUMENTS)
    rows = [{"run_id": job.id, "run_name": job.name, **job.values, "metric": key, "epoch": point.step,
             "value": point.value}
            for job in sweep.jobs for key in (metrics or sorted(job.metrics)) if key in job.metrics
            for point in runs.metric_points(client, job.id, key)]
    columns = ["run_id", "run_name", *sweep.swept, "metric", "epoch", "value"]
    frame = _frame(rows, sweep.swept, columns)
    frame.attrs.update(sweep_id=sweep.id, experiment=experiment, swept=list(sweep.swept))
    return frame


def list_sweeps(experiment: str = "sweeps", tracking_uri: Optional[str] = None) -> pd.DataFrame:
    """Every sweep of the experiment, newest first: sweep id, started, status, jobs, statuses, command."""
    client = runs.open_store(tracking_uri, runs.ARGUMENTS)
    found = runs.list_sweeps(client, runs.experiment_id(client, experiment, runs.ARGUMENTS))
    return pd.DataFrame([runs.sweep_summary(parent, jobs) for parent, jobs in found],
                        columns=["sweep", "started", "status", "jobs", "statuses", "command"])


def _open(sweep_id: Optional[str], experiment: str, tracking_uri: Optional[str]) -> tuple[MlflowClient, runs.SweepRuns]:
    for name, value, what in (("sweep_id", sweep_id, "a sweep's run id or a unique prefix of it"),
                              ("experiment", experiment, "an experiment name"),
                              ("tracking_uri", tracking_uri, "a store URI")):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be {what} (a str), not {type(value).__name__} {value!r}")
    client = runs.open_store(tracking_uri, runs.ARGUMENTS)
    found = runs.experiment_id(client, experiment, runs.ARGUMENTS)
    return client, runs.find_sweep(client, found, experiment, sweep_id, runs.ARGUMENTS)


def _job_rows(sweep: runs.SweepRuns, metric: str) -> list[dict]:
    """The `compare` table's rows, plus the metrics it leaves out and every param (`params.<key>`)."""
    jobs = {job.id: job for job in sweep.jobs}
    rows = table.job_rows(sweep, metric)
    for row in rows:
        job = jobs[row["run_id"]]
        row.update({m: v for m, v in sorted(job.metrics.items()) if m not in row and f"final_{m}" not in row})
        row.update({f"params.{k}": v for k, v in sorted(job.params.items())})
    return rows


def _grouped(frame: pd.DataFrame, metric: Optional[str] = None, stats: str = "t") -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"group_seeds takes the DataFrame sweeps.load_sweep returned, not "
                        f"{type(frame).__name__} {frame!r:.60}")
    if "swept" not in frame.attrs or "metric" not in frame.attrs:
        raise CompareError("group_seeds: the frame does not say which keys were swept (frame.attrs['swept']); "
                           "pass the frame sweeps.load_sweep returned, or one filtered from it")
    if stats not in stats_kinds:
        raise CompareError(f"group_seeds: stats={stats!r}; use one of {', '.join(map(repr, stats_kinds))}")
    swept, metric = frame.attrs["swept"], metric or frame.attrs["metric"]
    keys = table.config_keys(swept)
    records = [{k: v for k, v in row.items() if k not in REPEATED} for row in frame.to_dict("records")]
    grouped = _frame(table.group_rows(records, keys, metric, stats), keys)
    grouped.attrs.update(frame.attrs, metric=metric, grouped_by=keys)
    return grouped


def _frame(rows: list[dict], swept: list[str], columns: Optional[list[str]] = None) -> pd.DataFrame:
    """A DataFrame of `rows`, swept values as numbers where every one is a number (`rate`, `seed`)."""
    frame = pd.DataFrame(rows, columns=columns)
    for key in swept:
        if key in frame:
            try:
                frame[key] = pd.to_numeric(frame[key])
            except (TypeError, ValueError):
                pass  # `reg=l1`, `model.hidden=[16,8]`: kept as typed
    return frame
