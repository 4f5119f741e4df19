"""One multirun = one parent MLflow run, with every job nested under it.

`SweepCallback` (listed under `hydra.callbacks` in conf/config.yaml) opens a `Sweep` when Hydra
starts a multirun and finishes it when the multirun ends. The parent run itself is created by the
first job that gets as far as opening its own run, so a sweep whose configs fail to compose leaves
nothing behind. When the sweep ends the parent gets the report (`report.md`, the comparison as
CSV/JSON, the plots; see `report`) and the counts of finished and failed jobs. A rerun of a
sweep reuses the jobs that already FINISHED (see `recovery`); its parent links the sweeps it
reused jobs from.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sweeps import report
from sweeps.recovery import TAG_RESUMES
from sweeps.tracking import TAG_KIND, TAG_SWEEP, TAG_SWEPT, Tracker, process_tags, redact_text

log = logging.getLogger(__name__)


@dataclass
class Failure:
    job: str  # run name (the job's overrides)
    reason: str  # one line


def swept_keys(overrides: list[str], sweeper_params: Optional[dict] = None) -> list[str]:
    """Keys given several values, on the command line (`rate=1e-4,1e-3`) or in hydra.sweeper.params."""
    items = list(overrides) + [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(items)
    return list(dict.fromkeys(o.key_or_group for o in parsed if o.is_sweep_override()))


@dataclass
class Sweep:
    command: str  # the sweep's overrides as typed
    sweep_dir: str  # Hydra's multirun output folder
    swept: list[str] = field(default_factory=list)  # keys the sweep varies
    tracker: Optional[Tracker] = None
    parent_run_id: Optional[str] = None
    failures: list[Failure] = field(default_factory=list)
    finished: int = 0  # jobs that ended well, reused ones included
    reused: int = 0  # jobs not retrained: their config already FINISHED in the experiment
    resumes: list[str] = field(default_factory=list)  # earlier sweeps' parent runs jobs were reused from

    def parent(self, tracker: Tracker) -> str:
        """The parent run's id, creating the run on first use."""
        if self.parent_run_id is None:
            self.tracker = tracker
            run = tracker.client.create_run(
                tracker.experiment_id, run_name=f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
                tags={TAG_KIND: "sweep", "sweeps.command": self.command, "sweeps.sweep_dir": self.sweep_dir,
                      TAG_SWEPT: json.dumps(self.swept), **process_tags()})
            self.parent_run_id = run.info.run_id
            tracker.client.set_tag(self.parent_run_id, TAG_SWEEP, self.parent_run_id)
            log.info("sweep parent run %s in experiment %s", self.parent_run_id, tracker.experiment)
        return self.parent_run_id

    def job_finished(self) -> None:
        self.finished += 1

    def job_reused(self, earlier_parent: Optional[str]) -> None:
        """A job skipped because it already FINISHED; the parent links the sweep it came from."""
        self.reused += 1
        client, run_id = self.tracker.client, self.parent_run_id
        client.log_metric(run_id, "jobs_reused", self.reused)
        if earlier_parent and earlier_parent not in self.resumes:
            self.resumes.append(earlier_parent)
            client.set_tag(run_id, TAG_RESUMES, ",".join(self.resumes))

    def job_failed(self, job: str, err: BaseException) -> None:
        self.failures.append(Failure(job, f"{type(err).__name__}: {err}".splitlines()[0]))

    def finish(self, status: Optional[str] = None) -> None:
        """Log counts and the comparison to the parent, then end it (FAILED if any job failed)."""
        if self.parent_run_id is None or self.tracker is None:
            return
        client, run_id = self.tracker.client, self.parent_run_id
        self.parent_run_id = None  # finish once, even if logging below fails
        status = status or ("FAILED" if self.failures else "FINISHED")
        try:
            for key, value in (("jobs_finished", self.finished), ("jobs_failed", len(self.failures))):
                client.log_metric(run_id, key, value)
            with tempfile.TemporaryDirectory() as tmp:
                report.write_report(client, run_id, Path(tmp))
                client.log_artifacts(run_id, tmp)
        except Exception:  # the comparison must never hide the jobs' own outcome
            log.exception("could not write the sweep report")
        finally:
            client.set_terminated(run_id, status)

    def summary(self) -> str:
        lines = [f"{self.finished} job(s) finished, {len(self.failures)} failed"]
        if self.reused:
            lines[0] += f" ({self.reused} finished earlier and not retrained; rerun with resume=false to retrain)"
        lines += [f"  FAILED {f.job}: {f.reason}" for f in self.failures]
        return "\n".join(lines)


_ACTIVE: Optional[Sweep] = None


def active() -> Optional[Sweep]:
    """The sweep this process is running, if any (None for a single run)."""
    return _ACTIVE


def start(command: str, sweep_dir: str, swept: list[str]) -> Sweep:
    global _ACTIVE
    _ACTIVE = Sweep(command, sweep_dir, swept)
    return _ACTIVE


def end(status: Optional[str] = None) -> Optional[Sweep]:
    """Finish the active sweep (if any) and return it."""
    global _ACTIVE
    sweep, _ACTIVE = _ACTIVE, None
    if sweep is not None:
        sweep.finish(status)
    return sweep


class SweepCallback(Callback):
    """Hydra callback: a parent MLflow run around every multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = list(config.hydra.overrides.task)
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params) if params else None
        start(redact_text(" ".join(overrides)), str(config.hydra.sweep.dir), swept_keys(overrides, params))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = active()
        if sweep is not None:
            sweep.finish()  # stays active so the entry point can report and set the exit code
