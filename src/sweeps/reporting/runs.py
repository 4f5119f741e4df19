"""Reading sweeps back from an MLflow store: which runs are sweeps, their jobs, what each job varied.

Runs logged by earlier versions read the same way: a sweep is a run tagged `sweeps.kind=sweep` *or*
any run that other runs name as their `mlflow.parentRunId`; a job's values come from its
`sweeps.overrides` tag, else from its run name (`reg=l1,rate=0.001`), else from its params; the swept
keys come from the `sweeps.swept` tag, else from the values that differ between jobs.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Optional

from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps.errors import CompareError
from sweeps.tracking import queries, tags
from sweeps.config.keys import derived_param
from sweeps.tracking import check_reachable, resolve_uri, sqlite_path

# `reg=l1,rate=0.001` -> split before each `key=` (a comma inside `[16,32]` is not followed by one).
_NAME_SPLIT = re.compile(r",(?=[+~]?[\w.]+=)")
# A config group on the command line (`reg=l1`) is logged as its choice param (`reg.kind`).
_GROUP_PARAM = ("kind", "name")


@dataclass(frozen=True)
class Ask:
    """How error messages name what the user gave: command-line flags, or Python arguments (`sweeps.api`)."""

    sweep: str = "--sweep {}"
    experiment: str = "--experiment NAME"
    store: str = "MLFLOW_TRACKING_URI / --tracking-uri"
    listing: str = "`python -m sweeps.compare --list`"
    metric: str = "--metric {}"


FLAGS = Ask()
ARGUMENTS = Ask(sweep="sweep_id={!r}", experiment="experiment=NAME", store="MLFLOW_TRACKING_URI / tracking_uri=",
                listing="sweeps.list_sweeps()", metric="metric {!r}")


@dataclass
class Job:
    """One job of a sweep: its run, the values it was given for the swept keys, its curves."""

    run: Run
    values: dict[str, str]  # swept key -> value, as typed on the command line
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch metrics (load_histories)

    @property
    def id(self) -> str:
        return self.run.info.run_id

    @property
    def name(self) -> str:
        return self.run.info.run_name or self.id

    @property
    def status(self) -> str:
        return self.run.info.status

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.data.metrics

    @property
    def params(self) -> dict[str, str]:
        return self.run.data.params

    @property
    def error(self) -> Optional[str]:
        return self.run.data.tags.get(tags.ERROR)

    def label(self) -> str:
        """`reg=l1, rate=1e-4`: what tells this job apart from the others in its sweep."""
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or self.name

    def value(self, key: str) -> Optional[str]:
        """The job's value of `key`: swept value, else param (`reg` -> param `reg.kind`)."""
        if key in self.values:
            return self.values[key]
        return param_value(self.params, key)

    def number(self, key: str) -> Optional[float]:
        try:
            return float(self.value(key))
        except (TypeError, ValueError):
            return None


@dataclass
class SweepRuns:
    """A sweep as read from the store: its parent run and its jobs (oldest first)."""

    parent: Run
    experiment: str
    jobs: list[Job]
    swept: list[str]  # keys the sweep varied, in command-line order

    @property
    def id(self) -> str:
        return self.parent.info.run_id

    @property
    def command(self) -> str:
        return self.parent.data.tags.get(tags.COMMAND) or self.parent.info.run_name or ""

    @property
    def started(self) -> str:
        return format_time(self.parent.info.start_time)

    def status_counts(self) -> Counter:
        return Counter(job.status for job in self.jobs)

    def metric_names(self) -> list[str]:
        return sorted({key for job in self.jobs for key in job.metrics})


def param_value(params: dict[str, str], key: str) -> Optional[str]:
    if key in params:
        return params[key]
    return next((params[f"{key}.{sub}"] for sub in _GROUP_PARAM if f"{key}.{sub}" in params), None)


def format_time(millis: Optional[int]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(millis / 1000)) if millis else ""


def open_store(uri: Optional[str], ask: Ask = FLAGS) -> MlflowClient:
    """A client on `uri` (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db) that exists."""
    uri = resolve_uri(uri or os.environ.get("MLFLOW_TRACKING_URI"))
    db = sqlite_path(uri)
    if db is not None and (not db.is_file() or db.stat().st_size == 0):  # reading must not create a store
        raise CompareError(f"no tracking store at {db}: run a sweep here first (python -m sweeps.train -m ...) "
                           f"or point {ask.store} at your store")
    check_reachable(uri)
    return MlflowClient(uri)


def experiment_id(client: MlflowClient, name: str, ask: Ask = FLAGS) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise CompareError(f"no experiment named {name!r} in the store (experiments: {names}); "
                           f"pick one with {ask.experiment}")
    return exp.experiment_id


def list_sweeps(client: MlflowClient, experiment: str) -> list[tuple[Run, list[Run]]]:
    """(parent run, its job runs oldest first) for every sweep of the experiment, newest sweep first."""
    runs = queries.all_runs(client, experiment)
    children: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if tags.PARENT in run.data.tags:
            children[run.data.tags[tags.PARENT]].append(run)
    # a sweep's parent says so; a job with cross-validation folds also has children, but is no sweep
    # (a run without our kind tag and with children is counted: a parent made before the tag existed)
    parents = [r for r in runs if r.data.tags.get(tags.KIND, "sweep" if r.info.run_id in children else None) == "sweep"]
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    return [(p, sorted(children[p.info.run_id], key=lambda r: r.info.start_time or 0)) for p in parents]


def find_sweep(client: MlflowClient, experiment: str, name: str, sweep_id: Optional[str],
               ask: Ask = FLAGS) -> SweepRuns:
    """The sweep `sweep_id` (a full run id or a unique prefix), or the latest one."""
    sweeps = list_sweeps(client, experiment)
    if not sweeps:
        raise CompareError(f"no sweeps in experiment {name!r}: run one with "
                           f"python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3 (or pick {ask.experiment.split()[0]})")
    if sweep_id is None:
        return load_sweep(*sweeps[0], name)
    matches = [s for s in sweeps if s[0].info.run_id.startswith(sweep_id)]
    if len(matches) != 1:
        how = "matches several sweeps; give more of it" if matches else f"is not a sweep in experiment {name!r}"
        raise CompareError(f"{ask.sweep.format(sweep_id)} {how}; {ask.listing} shows the sweeps")
    return load_sweep(*matches[0], name)


def check_metric(sweep: SweepRuns, metric: str, ask: Ask = FLAGS) -> None:
    """A metric some job of the sweep logged; else one line listing those it did."""
    available = sweep.metric_names()
    if metric not in available:
        shown = [m for m in available if "/" not in m]  # per-layer weight statistics would drown the list
        raise CompareError(f"{ask.metric.format(metric)}: no job of sweep {sweep.id} logged it; "
                           f"available: {', '.join(shown) or 'none (no job logged a metric)'}")


def sweep_summary(parent: Run, job_runs: list[Run]) -> dict:
    """One line of `--list`: id, start, status, job count and statuses, command."""
    counts = Counter(job.info.status for job in job_runs)
    return {"sweep": parent.info.run_id, "started": format_time(parent.info.start_time),
            "status": parent.info.status, "jobs": len(job_runs),
            "statuses": ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
            "command": parent.data.tags.get(tags.COMMAND) or parent.info.run_name or ""}


def load_sweep(parent: Run, job_runs: list[Run], experiment: str) -> SweepRuns:
    given = [overrides_of(run) for run in job_runs]
    swept = swept_keys(parent, job_runs, given)
    jobs = [Job(run, values_of(run, given_, swept)) for run, given_ in zip(job_runs, given)]
    return SweepRuns(parent, experiment, jobs, swept)


def sweep_of(client: MlflowClient, parent_run_id: str) -> SweepRuns:
    """The sweep whose parent run is `parent_run_id` (used when a sweep ends)."""
    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as err:
        raise CompareError(f"no run {parent_run_id} in the store ({err.message.splitlines()[0]})") from None
    exp = client.get_experiment(parent.info.experiment_id)
    return load_sweep(parent, queries.jobs_of(client, exp.experiment_id, parent_run_id, oldest_first=True), exp.name)


def overrides_of(run: Run) -> dict[str, str]:
    """The job's `key=value` overrides: from the `sweeps.overrides` tag, else parsed from the run name."""
    if tags.OVERRIDES in run.data.tags:
        pairs = json.loads(run.data.tags[tags.OVERRIDES])
    else:
        pairs = _NAME_SPLIT.split(run.info.run_name or "")
    return dict(p.lstrip("+~").split("=", 1) for p in pairs if "=" in p)


def swept_keys(parent: Run, job_runs: list[Run], given: list[dict[str, str]]) -> list[str]:
    """From the `sweeps.swept` tag, else the overrides that differ, else the params that differ."""
    for run in (parent, *job_runs):
        if run.data.tags.get(tags.SWEPT):
            return json.loads(run.data.tags[tags.SWEPT])
    keys = list(dict.fromkeys(k for g in given for k in g))
    if keys:
        return [k for k in keys if len({g.get(k) for g in given}) > 1] or keys
    params = list(dict.fromkeys(k for r in job_runs for k in r.data.params if not derived_param(k)))
    return [k for k in params if len({r.data.params.get(k) for r in job_runs}) > 1]


def values_of(run: Run, given: dict[str, str], swept: list[str]) -> dict[str, str]:
    out = {}
    for key in swept:
        value = given.get(key, param_value(run.data.params, key))
        out[key] = "" if value is None else value
    return out


def load_histories(client: MlflowClient, sweep: SweepRuns, keys: list[str]) -> None:
    """Fill each job's `history` with the per-epoch values of `keys` it logged."""
    for job in sweep.jobs:
        for key in keys:
            if key in job.metrics:
                job.history[key] = [m.value for m in metric_points(client, job.id, key) if math.isfinite(m.value)]


def metric_points(client: MlflowClient, run_id: str, key: str) -> list[Metric]:
    """Every value of `key` the run logged, by step (the epoch)."""
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
