"""Every question `sweeps` asks the store about runs, and every end it gives a run: named here once.

A filter string is built in one place (`_where`: tag names from `tags`, values quoted), so no call
site writes MLflow's filter grammar by hand, and the ways a run ends other than by its own job
(`end_run`: a reason in `sweeps.error`, then the status) are one function. Each query takes the
client and the experiment id, which a `Tracker` holds (`tracker.client`, `tracker.experiment_id`).
"""

from __future__ import annotations

from typing import Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sweeps.tracking import tags

MAX_RUNS = 10_000  # the most runs a question about one sweep reads back (MLflow pages beyond 1000 itself)


def _quoted(value: str) -> str:
    """A value in MLflow's filter grammar, which has no escapes: quoted with the quote it does not hold."""
    value = str(value)
    if "'" in value and '"' in value:
        raise ValueError(f"a filter value cannot hold both quotes: {value!r}")
    return f'"{value}"' if "'" in value else f"'{value}'"


def _where(tag_values: dict[str, str], status: Optional[str] = None, not_status: Optional[str] = None) -> str:
    clauses = [f"tags.`{tag}` = {_quoted(value)}" for tag, value in tag_values.items()]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    if not_status:
        clauses.append(f"attributes.status != '{not_status}'")
    return " and ".join(clauses)


def _search(client: MlflowClient, experiment: str, tag_values: dict[str, str], status: Optional[str] = None,
            not_status: Optional[str] = None, newest_first: Optional[bool] = None, limit: int = MAX_RUNS) -> list[Run]:
    order = None if newest_first is None else [f"attributes.start_time {'DESC' if newest_first else 'ASC'}"]
    return list(client.search_runs([experiment], _where(tag_values, status, not_status), order_by=order,
                                   max_results=limit))


def all_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """Every active run of an experiment, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def running_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """Every RUNNING run of the experiment (whose processes may be gone: `recovery.close_stale_runs`)."""
    return _search(client, experiment, {}, status="RUNNING")


def running_sweep(client: MlflowClient, experiment: str, key: Optional[str]) -> Optional[Run]:
    """The RUNNING parent run of the sweep with key `key` (None: none, or not exactly one)."""
    if not key or not key.isalnum():  # ours are hex; anything else finds nothing (and goes into no filter)
        return None
    found = _search(client, experiment, {tags.KIND: "sweep", tags.SWEEP_KEY: key}, status="RUNNING", limit=2)
    return found[0] if len(found) == 1 else None


def jobs_of(client: MlflowClient, experiment: str, parent_run_id: str, status: Optional[str] = None,
            oldest_first: bool = False) -> list[Run]:
    """The job runs of a sweep (with `status` only, when given; oldest first, when asked)."""
    return _search(client, experiment, {tags.PARENT: parent_run_id}, status=status,
                   newest_first=False if oldest_first else None)


def finished_jobs(client: MlflowClient, experiment: str, config_hash: str, sweep: Optional[str] = None) -> list[Run]:
    """FINISHED job runs with this config hash (of sweep `sweep` only, when given), newest first."""
    within = {tags.SWEEP: sweep} if sweep else {}
    return _search(client, experiment, {tags.HASH: config_hash, tags.KIND: "job", **within}, status="FINISHED",
                   newest_first=True, limit=100)


def trial_run(client: MlflowClient, experiment: str, study: str, trial: int) -> Optional[Run]:
    """The run of trial `trial` of an Optuna study (the latest, should there be several), or None."""
    runs = _search(client, experiment, {tags.STUDY: study, tags.TRIAL: str(trial)}, newest_first=True, limit=1)
    return runs[0] if runs else None


def runs_of_task(client: MlflowClient, experiment: str, tag: str, task: str, status: Optional[str] = None,
                 not_status: Optional[str] = None, limit: int = 10) -> list[Run]:
    """The runs a cluster task opened (`tags.SLURM_JOB`, `tags.RAY_TASK` = its id)."""
    return _search(client, experiment, {tag: task}, status=status, not_status=not_status, limit=limit)


def end_run(client: MlflowClient, run_id: str, status: str, reason: Optional[str] = None) -> None:
    """End a run: the guard of a job's own run (`Tracker.job_run`), a stand-in run (a reused or failed
    job), or one whose process is gone or was ended by a cluster. `reason` (in `sweeps.error`, at most
    4000 characters) is written first, then the status."""
    if reason is not None:
        client.set_tag(run_id, tags.ERROR, reason[:4000])
    client.set_terminated(run_id, status)
