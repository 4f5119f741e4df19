"""After a crash: close runs whose process is gone, and reuse jobs that already FINISHED.

- `close_stale_runs()`: a process killed with SIGKILL (or a power cut) cannot end its runs, so they
  stay RUNNING for ever. Every run records the pid and host of its process (`sweeps.pid`,
  `sweeps.host`); a RUNNING run from this host whose pid no longer exists is stale and is ended
  FAILED with `sweeps.error` and `sweeps.stale` saying so. Runs from other hosts, or without
  those tags, are left alone: from here nobody can tell whether their process is alive.
- `find_finished()` / `record_reuse()`: rerunning a sweep skips every job whose resolved config
  (`sweeps.config_hash`) already FINISHED in the experiment. The new sweep gets a small run per
  skipped job, nested under its parent like the others, that carries the earlier run's params and
  metrics and links it (`sweeps.resumed_from`), so the comparison still shows every job.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Optional

from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient

from sweeps.tracking import queries, tags
from sweeps.tracking.queries import end_run
from sweeps.tracking import Tracker, best_effort, process_tags

log = logging.getLogger(__name__)

_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a reused pid counts as alive; a zombie, a
    process that ended and was not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone meanwhile, or psutil cannot tell: as os.kill said
        return True


def is_stale(run: Run, host: str) -> bool:
    run_tags = run.data.tags
    pid = run_tags.get(tags.PID, "")
    return run_tags.get(tags.HOST) == host and pid.isdigit() and not pid_alive(int(pid))


def close_stale_runs(tracker: Tracker, reason: str = "ended without closing the run (killed with SIGKILL or crashed)"
                     ) -> list[str]:
    """End FAILED every RUNNING run of the experiment whose process (on this host) is gone."""
    host = socket.gethostname()
    running = queries.running_runs(tracker.client, tracker.experiment_id)
    closed = []
    for run in running:
        if not is_stale(run, host):
            continue
        run_id, pid = run.info.run_id, run.data.tags[tags.PID]
        tracker.client.set_tag(run_id, tags.STALE, "true")
        end_run(tracker.client, run_id, "FAILED", f"stale: its process (pid {pid} on {host}) {reason}")
        closed.append(run_id)
    if closed:
        log.warning("marked %d stale RUNNING run(s) FAILED: %s", len(closed), ", ".join(closed))
    return closed


def find_finished(tracker: Tracker, config_hash: str, sweep: Optional[str] = None) -> Optional[Run]:
    """The newest FINISHED job run of the experiment (of sweep `sweep` only, when given) with this
    config hash that trained to the end (a search trial stopped by its pruner is FINISHED but not a
    full result), if any."""
    runs = queries.finished_jobs(tracker.client, tracker.experiment_id, config_hash, sweep)
    return next((run for run in runs if tags.PRUNED_AT not in run.data.tags), None)


def original_of(run: Run) -> str:
    """The run that was actually trained (a reused job points at it)."""
    return run.data.tags.get(tags.RESUMED_FROM, run.info.run_id)


def record_reuse(tracker: Tracker, done: Run, name: str, parent_run_id: str, run_tags: dict) -> str:
    """A FINISHED run under the new parent standing for `done`: its params, metrics and a link."""
    client = tracker.client
    original = original_of(done)
    note = (f"Not retrained: the same resolved config already FINISHED in run {original}; params and "
            "metrics are copied from it (artifacts and model stay there).")
    run = client.create_run(tracker.experiment_id, run_name=name, tags={
        **run_tags, tags.KIND: "job", tags.PARENT: parent_run_id, tags.RESUMED_FROM: original,
        tags.NOTE: note, **process_tags(), **({tags.RESUMED_SWEEP: done.data.tags[tags.SWEEP]}
                                              if tags.SWEEP in done.data.tags else {})})
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in done.data.params.items()]
        for i in range(0, len(params), 100):  # MLflow's limit of params per batch
            client.log_batch(run_id, params=params[i:i + 100], synchronous=True)
        _copy_metrics(client, done.info.run_id, run_id, list(done.data.metrics))
    except KeyboardInterrupt:
        best_effort(end_run, client, run_id, "KILLED")  # Ctrl-C wins over a dead store
        raise
    except BaseException:
        best_effort(end_run, client, run_id, "FAILED")
        raise
    end_run(client, run_id, "FINISHED")
    return run_id


def _copy_metrics(client: MlflowClient, source: str, target: str, keys: list[str]) -> None:
    """Every point of every metric (per-epoch histories included), in batches."""
    points = [Metric(m.key, m.value, m.timestamp, m.step)
              for key in keys for m in client.get_metric_history(source, key)]
    for i in range(0, len(points), _BATCH):
        client.log_batch(target, metrics=points[i:i + _BATCH], synchronous=True)


def record_failed_job(tracker: Tracker, parent_run_id: str, name: str, run_tags: dict, err: BaseException,
                      reason: Optional[str] = None) -> None:
    """A FAILED run for a job that failed before opening its own (e.g. its data could not be read);
    `reason`: the one-line reason, when it is not the error's own text."""
    run = tracker.client.create_run(tracker.experiment_id, run_name=name, tags={
        **run_tags, tags.KIND: "job", tags.PARENT: parent_run_id, **process_tags()})
    tracker.record_error(run.info.run_id, err)
    end_run(tracker.client, run.info.run_id, "FAILED", reason or None)


def swept_of(parent: Run) -> list[str]:
    """The keys a sweep varies, as its parent run records them."""
    return json.loads(parent.data.tags.get(tags.SWEPT, "[]"))
