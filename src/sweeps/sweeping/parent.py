"""One multirun = one parent MLflow run, with every job nested under it, whatever runs the jobs.

The sweep lives in the tracking store, not in any process's memory:

- `assign_key()` (our sweepers, before any job is composed) gives the sweep a unique key and adds
  it to the overrides every job's config is composed with (`hydra.job.env_set.SWEEPS_SWEEP_KEY`):
  so every job carries it, whatever runs it (this process, a pool worker, a fresh process, a
  SLURM job on another machine), and so does its environment (Hydra's `run_job` sets env_set).
- `run()` (called by our sweepers, in the launching process, before any launcher starts) checks
  every job's config, creates the parent run tagged with that key (`sweeps.sweep_key`) and the
  sweep's folder (`sweeps.sweep_dir`, absolute, for reading), launches the jobs, and at the end
  reads them back from the store to write the counts, the report and the final status
  (FINISHED, FAILED, or KILLED after Ctrl-C/SIGTERM).
- A job finds its parent by that key (`tracking.queries.running_sweep`: the RUNNING sweep run with
  the job's key). Not by folder: the default folder has a one-second resolution, and two sweeps
  started in the same second from one folder (a script, two terminals) would share it, and one parent.
- A job that failed before its own run was opened still leaves a FAILED run
  (`tracking.recovery.record_failed_job`), so the report shows every job the sweep launched.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence


from omegaconf import DictConfig, OmegaConf

from sweeps import guard, interrupts
from sweeps.reporting import mdtext, report, html as report_html, runs
from sweeps.tracking import queries, recovery, tags
from sweeps.config import TrackingConfig
from sweeps.errors import StoreUnavailable, TrackingError
from sweeps.tracking import (CleanUp, Tracker, best_effort, connect, locked, process_tags, redact_text, redact_uri,
                             resolve_uri, runs_table_link, short_reason, store_problem, ui_address, unanswered)
from sweeps.training.context import absolute_dir, assign_key, key_of

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0  # after Ctrl-C: how long workers get to end their runs before they are killed


def open_parent(tracker: Tracker, command: str, sweep_dir: str, swept: list[str], n_jobs: int,
                extra_tags: Optional[dict] = None, key: Optional[str] = None) -> str:
    """Create the sweep's parent run (RUNNING until `finish`), found by its jobs by `key` (see
    `assign_key`), with `extra_tags`; returns its id."""
    run = tracker.client.create_run(
        tracker.experiment_id, run_name=f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={tags.KIND: "sweep", tags.COMMAND: redact_text(command), tags.SWEEP_DIR: sweep_dir,
              **({tags.SWEEP_KEY: key} if key else {}),
              tags.SWEPT: json.dumps(swept), tags.JOBS: str(n_jobs), **process_tags(), **(extra_tags or {})})
    run_id = run.info.run_id
    tracker.client.set_tag(run_id, tags.SWEEP, run_id)
    log.info("sweep parent run %s in experiment %s", run_id, tracker.experiment)
    return run_id


@dataclass
class Outcome:
    """How a sweep ended, as read back from the store."""

    parent_run_id: str
    status: str
    launched: int  # jobs the sweeper launched
    finished: int = 0  # job runs FINISHED (reused and pruned ones included)
    pruned: int = 0  # of those, search trials stopped early by the pruner
    reused: int = 0  # of those, jobs not retrained: their config already FINISHED in an earlier sweep
    twins: int = 0  # of those, jobs not trained because another job of this sweep has the same config
    failures: list[tuple[str, str]] = field(default_factory=list)  # (job, one-line reason)
    killed: int = 0  # job runs ended KILLED (the sweep was interrupted)
    missing: int = 0  # launched jobs that left no run (not started, or their process never reached the store)

    @property
    def failed(self) -> int:
        """Jobs that did not finish and were not stopped on purpose."""
        return len(self.failures) + (0 if self.status == "KILLED" else self.missing)

    def summary(self) -> str:
        lines = [f"{self.finished} job(s) finished, {self.failed} failed"]
        if self.pruned:
            lines[0] += f" ({self.pruned} stopped early by the pruner)"
        if self.reused:
            lines[0] += f" ({self.reused} finished earlier and not retrained; rerun with resume=false to retrain)"
        if self.twins:
            lines[0] += (f" ({self.twins} the same config as another job of this sweep, e.g. reg=none at another "
                         "rate: trained once, linked)")
        if self.status == "KILLED":
            lines[0] += f", {self.killed} stopped, {self.missing} not started"
        lines += [f"  FAILED {job}: {reason}" for job, reason in self.failures]
        if self.missing and self.status != "KILLED":
            lines.append(f"  {self.missing} job(s) left no run: their worker never reached the store")
        return "\n".join(lines)


def finish(tracker: Tracker, parent_run_id: str, launched: int, status: Optional[str] = None,
           reason: Optional[str] = None, report_extra: Optional[ReportExtra] = None) -> Outcome:
    """Read the jobs back, log counts, links and the report to the parent, then end it."""
    client = tracker.client
    sweep = runs.sweep_of(client, parent_run_id)
    outcome = Outcome(parent_run_id, status or "FINISHED", launched)
    earlier = []
    for job in sweep.jobs:
        if job.status == "FINISHED":
            outcome.finished += 1
            outcome.pruned += tags.PRUNED_AT in job.run.data.tags
            if job.run.data.tags.get(tags.RESUMED_SWEEP) == parent_run_id:
                outcome.twins += 1
            elif tags.RESUMED_FROM in job.run.data.tags:
                outcome.reused += 1
                earlier.append(job.run.data.tags.get(tags.RESUMED_SWEEP))
        elif job.status == "KILLED":
            outcome.killed += 1
        else:
            outcome.failures.append((job.name, (job.error or job.status).splitlines()[0]))
    outcome.missing = max(0, launched - len(sweep.jobs))
    if status is None:
        outcome.status = "FAILED" if outcome.failed else "FINISHED"
    try:
        metrics = {"jobs_finished": outcome.finished, "jobs_failed": outcome.failed, "jobs_reused": outcome.reused,
                   "jobs_linked_to_twin": outcome.twins,
                   "jobs_pruned": outcome.pruned}
        for key, value in metrics.items():
            client.log_metric(parent_run_id, key, value)
        links = sorted({e for e in earlier if e})
        if links:
            client.set_tag(parent_run_id, tags.RESUMES, ",".join(links))
        if reason:
            client.set_tag(parent_run_id, tags.ERROR, reason[:4000])
        with tempfile.TemporaryDirectory() as tmp:
            report.write_report(client, parent_run_id, Path(tmp))
            if report_extra is not None:
                section = report_extra(parent_run_id, Path(tmp))
                with open(Path(tmp) / "report.md", "a") as fh:
                    fh.write("\n" + section)
                # again, with the extra section; the figures: every plot in this fresh folder, all drawn by
                # the report and the extra section (never a path named in the text)
                report_html.write(Path(tmp), [p.name for p in Path(tmp).glob("*.png")])
            missing = log_report(tracker, parent_run_id, Path(tmp))
            if missing:
                log.warning("the sweep report was saved without %s", "; ".join(f"{n} ({why})" for n, why in missing))
    except Exception as err:  # the report must never hide the jobs' own outcome
        if store_problem(tracker.uri) or unanswered(err) or locked(err):  # the store is gone: said in one line
            log.warning("could not write the sweep report: %s", short_reason(err))
        else:
            log.exception("could not write the sweep report")
    finally:
        queries.end_run(client, parent_run_id, outcome.status)
    return outcome


def log_report(tracker: Tracker, run_id: str, folder: Path) -> list[tuple[str, str]]:
    """Log the report `folder` to the parent run file by file, what matters most first (report.md,
    the tables, each plot, report.html with the plots that were saved), so a full artifact disk
    costs what does not fit, not the whole report. What cannot be saved (its partial copy removed) is
    named in a `sweeps.report_missing` tag and a "Not saved" section of report.md, for which saved
    plots make room if they must (the text wins over the pictures); returns (file, reason) for each."""
    def order(path: Path) -> tuple:
        rank = 0 if path.name == "report.md" else 3 if path.name == "report.html" else 2 if path.suffix == ".png" else 1
        return rank, path.name

    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=order)
    figures = [p.name for p in files if p.suffix == ".png"]
    text = (folder / "report.md").read_text()
    missing: list[tuple[str, str]] = []
    saved: list[str] = []
    for path in files:
        if path.name == "report.html" and missing:  # drawn again without the plots that were not saved
            report_html.write(folder, figures)
        reason = _log_file(tracker, run_id, path)
        if reason is None:
            saved.append(path.name)
            continue
        missing.append((path.name, reason))
        if path.suffix == ".png":
            path.unlink()  # not embedded in report.html either
    if not missing:
        return missing
    plots = sorted((n for n in saved if n.endswith(".png")), key=lambda n: -(folder / n).stat().st_size)
    while True:  # report.md again, with what is missing (report.html too, if it was saved)
        note = "\n## Not saved\n\n" + "".join(f"- {mdtext.code(name)}: {mdtext.text(why)}\n" for name, why in missing)
        (folder / "report.md").write_text(text + note)
        again = ["report.md"] + (["report.html"] if "report.html" in saved else [])
        if "report.html" in saved:
            report_html.write(folder, figures)
        failed = [name for name in again if _log_file(tracker, run_id, folder / name) is not None]
        if not failed:
            break
        for name in failed:  # a failed copy was removed: an earlier, complete one is gone too
            saved.remove(name) if name in saved else None
        if not plots:  # no room left to make: the report as it was (it fitted before)
            (folder / "report.md").write_text(text)
            if _log_file(tracker, run_id, folder / "report.md") is not None:
                missing.append(("report.md", "no room left on the artifact store, even without the plots"))
            if "report.html" in failed:
                missing.append(("report.html", "removed: no room to save it again with the list of what is missing"))
            break
        victim = plots.pop(0)  # the biggest saved plot makes room for the words
        _delete_artifact(tracker, run_id, victim)
        (folder / victim).unlink()
        saved.remove(victim)
        missing.append((victim, "removed to make room for this list: the artifact store is full"))
    best_effort(tracker.client.set_tag, run_id, tags.REPORT_MISSING, ", ".join(dict.fromkeys(n for n, _ in missing)))
    return missing


def _log_file(tracker: Tracker, run_id: str, path: Path) -> Optional[str]:
    """Log one file of the report; None, or why it could not be (its partial copy removed where the
    artifact store allows). A store that stopped answering is not a missing file: raised."""
    try:
        tracker.client.log_artifact(run_id, str(path))
        return None
    except Exception as err:  # noqa: BLE001 - a full or failing artifact store: this file is left out
        if unanswered(err) or locked(err):
            raise
        _delete_artifact(tracker, run_id, path.name)
        return redact_text(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": "))


def _delete_artifact(tracker: Tracker, run_id: str, name: str) -> None:
    """Remove one artifact of a run where its store allows it (a local folder does; some servers do not)."""
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(tracker.client.get_run(run_id).info.artifact_uri).delete_artifacts(name)
    except Exception:  # noqa: BLE001 - nothing more to do
        pass


def close_children(tracker: Tracker, parent_run_id: str, status: str, reason: str) -> None:
    """End every job of the sweep still RUNNING (their workers are gone or were stopped)."""
    for run in queries.jobs_of(tracker.client, tracker.experiment_id, parent_run_id, "RUNNING"):
        best_effort(queries.end_run, tracker.client, run.info.run_id, status, reason)


def fail_killed_children(tracker: Tracker, parent_run_id: str, reason: str) -> None:
    """Jobs of the sweep that ended KILLED (their worker was interrupted) as FAILED with `reason`."""
    for run in queries.jobs_of(tracker.client, tracker.experiment_id, parent_run_id, "KILLED"):
        best_effort(queries.end_run, tracker.client, run.info.run_id, "FAILED", reason)


def stop_workers(tracker: Tracker, parent_run_id: str, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the processes of this host running the sweep's jobs, SIGKILL after `grace_s`.

    Which processes: the pids the store holds for the sweep's RUNNING jobs, among this process's
    descendants (pool workers, submitit jobs), and nothing else (a pool's helper processes are
    the pool's business). A job turns SIGTERM into KeyboardInterrupt and ends its run KILLED;
    what is still RUNNING afterwards is closed by `close_children`.
    """
    import psutil

    host = socket.gethostname()
    pids = {int(r.data.tags[tags.PID]) for r in queries.jobs_of(tracker.client, tracker.experiment_id, parent_run_id, "RUNNING")
            if r.data.tags.get(tags.HOST) == host and r.data.tags.get(tags.PID, "").isdigit()}
    workers = [p for p in psutil.Process().children(recursive=True) if p.pid in pids]
    for worker in workers:
        best_effort(worker.terminate)
    _, alive = psutil.wait_procs(workers, timeout=grace_s)
    for worker in alive:
        best_effort(worker.kill)


def wait_for_workers(tracker: Tracker, parent_run_id: str, timeout_s: float = 3600) -> None:
    """After a launcher gave up early: wait for jobs still running in live processes on this host
    (runs of other hosts cannot be judged from here: they are left to their own processes)."""
    host = socket.gethostname()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recovery.close_stale_runs(tracker, reason="died while the sweep ran (killed or crashed)")
        if not [r for r in queries.jobs_of(tracker.client, tracker.experiment_id, parent_run_id, "RUNNING") if r.data.tags.get(tags.HOST) == host]:
            return
        time.sleep(2)


Launch = Callable[[Sequence[Sequence[str]], int], object]
ReportExtra = Callable[[str, Path], str]  # (parent run id, report folder) -> Markdown appended to report.md


def chunks(jobs: list[list[str]], size: Optional[int]) -> Iterator[list[list[str]]]:
    step = size or len(jobs) or 1
    for first in range(0, len(jobs), step):
        yield jobs[first:first + step]


def run(config: DictConfig, batches: Iterable[list[list[str]]], swept: list[str], launch: Launch, planned: int,
        parent_tags: Optional[dict] = None, report_extra: Optional[ReportExtra] = None) -> Outcome:
    """The whole sweep in the launching process: parent run, launches, read-back, report, status.

    `batches` yields the jobs (override lists) batch by batch; a search yields its next batch
    only after the previous one ran, so it can learn from it. `launch(batch, first_index)` runs
    a batch (a Hydra launcher's `launch`). Ctrl-C or SIGTERM stops every worker and ends the
    sweep KILLED; a launcher that fails (a worker process died) fails the jobs it took down, and
    the jobs it never started are launched again.
    """
    key = key_of(config.hydra) or assign_key(config)  # our sweepers assign it before composing any job
    tracker = connect(config.tracking)
    recovery.close_stale_runs(tracker)
    sweep_dir = absolute_dir(str(config.hydra.sweep.dir))
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    (Path(sweep_dir) / "multirun.yaml").write_text(redact_text(OmegaConf.to_yaml(config)))  # Hydra's file, scrubbed
    command = " ".join(config.hydra.overrides.task)
    parent = open_parent(tracker, command, sweep_dir, swept, planned, parent_tags, key)
    guard.register(tracker.uri, tracker.experiment, parent)  # its workers are stopped if this process dies
    launched = index = 0  # distinct jobs handed to the launcher; Hydra job numbers used (relaunches get new ones)
    relaunch = local_launcher(config)
    try:
        for batch in batches:
            launched += len(batch)
            index += _launch_batch(tracker, parent, launch, batch, index, relaunch)
            interrupts.check()  # a job that swallowed Ctrl-C does not let the sweep finish as if all went well
    except KeyboardInterrupt:
        clean_up = CleanUp()  # Ctrl-C wins: each call tried once, quickly; none after the store is gone
        clean_up(stop_workers, tracker, parent)
        clean_up(close_children, tracker, parent, "KILLED", "interrupted")
        best_effort(getattr(batches, "close", lambda: None))  # a search ends its open trials (its own storage)
        clean_up(_end, tracker, parent, launched, "KILLED")
        raise
    except (Exception, StoreUnavailable) as err:
        reason = redact_text(str(err) if isinstance(err, StoreUnavailable) else f"{type(err).__name__}: {err}")
        clean_up = CleanUp()
        clean_up(stop_workers, tracker, parent)
        clean_up(close_children, tracker, parent, "FAILED", reason.splitlines()[0])
        best_effort(getattr(batches, "close", lambda: None))
        clean_up(_end, tracker, parent, launched, "FAILED", reason.splitlines()[0])
        raise
    return _end(tracker, parent, launched, report_extra=report_extra)


def _end(tracker: Tracker, parent: str, launched: int, status: Optional[str] = None,
         reason: Optional[str] = None, report_extra: Optional[ReportExtra] = None) -> Outcome:
    outcome = finish(tracker, parent, launched, status, reason, report_extra)
    print(outcome.summary(), file=sys.stderr)
    print(where_to_look(tracker, parent), file=sys.stderr)
    return outcome


def where_to_look(tracker: Tracker, parent: str) -> str:
    """Where a sweep's results are: its parent run and store, the command comparing its jobs, the UI link."""
    store = redact_uri(tracker.uri)
    pasteable = store.replace("://***@", "://")  # in commands: no secret, and no `***` that fails when pasted
    compare = f"python -m sweeps.compare --sweep {parent}"
    if tracker.experiment != TrackingConfig.experiment:
        compare += f" --experiment {shlex.quote(tracker.experiment)}"
    if tracker.uri != compare_default_store():
        compare += f" --tracking-uri {shlex.quote(pasteable)}"
    link = runs_table_link(ui_address(tracker.uri), tracker.experiment_id)
    if not tracker.uri.startswith(("http://", "https://")):  # a store file or database: the UI is `make ui`
        make_ui = "make ui" if tracker.uri == resolve_uri(None) else f"make ui STORE={shlex.quote(pasteable)}"
        link += f" (after `{make_ui}`)"
    lines = [f"results: sweep {parent} in experiment {tracker.experiment}, store {store}",
             f"  compare: {compare}", f"  MLflow UI: {link}"]
    if pasteable != tracker.uri and "--tracking-uri" in compare:
        lines.append("  (commands without the store's credentials: give them as for this sweep, e.g. "
                     "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or PGPASSWORD)")
    return "\n".join(lines)


def compare_default_store() -> Optional[str]:
    """The store `python -m sweeps.compare` reads without --tracking-uri (None: MLFLOW_TRACKING_URI is unusable)."""
    try:
        return resolve_uri(os.environ.get("MLFLOW_TRACKING_URI"))
    except TrackingError:
        return None


def local_launcher(config: DictConfig) -> bool:
    """Whether the launcher runs jobs on this machine (basic, joblib, packed, submitit_local): only then
    can the jobs a failed launcher never started be told from jobs still queued on a cluster."""
    target = str(config.hydra.launcher.get("_target_", ""))
    local = ("BasicLauncher", "JoblibLauncher", "LocalLauncher", "PackedLauncher")
    return any(name in target for name in local)


def _launch_batch(tracker: Tracker, parent: str, launch: Launch, batch: list[list[str]], first: int,
                  relaunch: bool = True) -> int:
    """Launch `batch` (numbered from `first`); returns how many job numbers it used.

    A launcher that fails (a worker process died) fails the jobs it took down and launches again the
    ones it never started. So does a worker's own interrupt: a KeyboardInterrupt that comes back from
    a worker while this process received no signal (`kill` or a scheduler stopped one worker) is that
    worker's death, not Ctrl-C on the sweep; its job ends FAILED, not the whole sweep KILLED.
    """
    stopped = None  # the signal that stopped a worker, when the interrupt was the worker's alone
    try:
        launch(batch, first)
        return len(batch)
    except StoreUnavailable:
        raise
    except KeyboardInterrupt as err:
        if interrupts.received() is not None:  # this process was interrupted: the sweep stops
            raise
        stopped = interrupts.name_of(err)
        log.error("a worker process was stopped (%s); this sweep was not interrupted", stopped)
        failure: BaseException = RuntimeError(f"a worker process was stopped ({stopped})")
    except Exception as err:
        log.error("the launcher stopped: %s", redact_text(f"{type(err).__name__}: {err}".splitlines()[0]))
        failure = err
    wait_for_workers(tracker, parent)
    if stopped is not None:  # the jobs the stopped pool ended KILLED failed: nobody stopped the sweep
        fail_killed_children(tracker, parent, f"stopped: its worker process got {stopped} while the sweep ran "
                                              "(the sweep itself was not interrupted)")
    if not relaunch:  # a cluster: queued jobs have no run yet either; launching them again would run them twice
        raise failure
    started = {r.data.tags.get(tags.OVERRIDES) for r in queries.jobs_of(tracker.client, tracker.experiment_id, parent)}
    left = [job for job in batch if redact_text(json.dumps(list(job))) not in started]
    if left:
        log.warning("launching again the %d job(s) that never started", len(left))
        launch(left, first + len(batch))
    return len(batch) + len(left)
