"""`hydra/sweeper=optuna`: Bayesian search with pruning (Optuna), as one tracked sweep.

    python -m sweeps.train -m hydra/sweeper=optuna hydra.sweeper.n_trials=30 \\
        'reg=choice(l1,l2)' 'rate=tag(log, interval(1e-6, 1e-2))' 'dropout=interval(0, 0.5)'

One study = one sweep = one parent run; every trial is a job like a grid job, run by whatever
`hydra/launcher` is chosen, `n_jobs` at a time. The search space is Hydra's override grammar:
`choice(...)` or `a,b` (categorical), `range(...)` (integers), `interval(lo, hi)` (float, or int
when both ends are), `tag(log, ...)` (log scale); other overrides are fixed.

The job finds its trial through the study storage (`search.*` keys the sweeper sets), reports
`optimized_metric` to it every epoch and stops when the pruner says so, so pruning works in
worker processes and on other machines. After each batch the sweeper reads the trials' runs from
the tracking store and tells Optuna: COMPLETE with the value, PRUNED, or FAIL. Running the same
command again continues the same study (its name is derived from the command) until `n_trials`
trials exist. Optuna is used rather than Hydra's optuna sweeper because every release of that one
pins optuna<3 and has no pruning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.types import HydraContext
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweeps import interrupts
from sweeps.tracking import queries, tags
from sweeps.config import objectives, validate
from sweeps.config.metrics import metric_direction
from sweeps.errors import ConfigError
from sweeps.packed.launcher import InFlight, in_flight
from sweeps.reporting.mdtext import code, text
from sweeps.tracking.redact import redact_text, redact_uri
from sweeps.sweeping.grid import Plan, TrackedSweeper
from sweeps.tracking import resolve_uri, sqlite_path

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "gp", "qmc", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
STALE = "sweeps_stale_trials"  # study attribute: numbers of trials closed because their process was gone
OWNER = "sweeps_owner"  # study attribute: {"host", "pid", "since"} of the sweep that runs the study now


# --- the search space ----------------------------------------------------------------------------

def parse_space(items: list[str]) -> tuple[dict, list[str]]:
    """Hydra overrides -> ({key: Optuna distribution}, fixed overrides)."""
    import optuna.distributions as d

    space, fixed = {}, []
    for override in OverridesParser.create().parse_overrides(items):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(f"{key}={override.get_value_element_as_str()}")
            continue
        value, log_scale = override.value(), "log" in (override.value().tags or set())
        if isinstance(value, ChoiceSweep):
            space[key] = d.CategoricalDistribution(list(override.sweep_string_iterator()))
        elif isinstance(value, RangeSweep):
            values = list(override.sweep_iterator())
            if len(values) < 2:
                raise ConfigError(f"{override.input_line}: the range holds {len(values)} value(s); give at least two")
            step = values[1] - values[0]
            space[key] = (d.IntDistribution(values[0], values[-1], step=step) if isinstance(step, int)
                          else d.FloatDistribution(values[0], values[-1], step=step))
        elif isinstance(value, IntervalSweep):
            space[key] = interval(override.input_line, value.start, value.end, log_scale)
    if not space:
        raise ConfigError("no search space: give at least one axis, e.g. 'rate=tag(log, interval(1e-6, 1e-2))'")
    return space, fixed


def interval(line: str, low: float, high: float, log_scale: bool):
    import optuna.distributions as d

    if not low < high:
        raise ConfigError(f"{line}: the interval is empty or inverted; write interval(low, high) with low < high")
    if log_scale and low <= 0:
        raise ConfigError(f"{line}: a log scale needs low > 0 (it has {low}); start the interval above 0")
    if isinstance(low, int) and isinstance(high, int):
        return d.IntDistribution(low, high, log=log_scale)
    return d.FloatDistribution(float(low), float(high), log=log_scale)


def check_space(hydra_context: HydraContext, config: DictConfig, space: dict, fixed: list[str]) -> None:
    """Compose and validate the fixed values with every choice and both ends of every range, before
    any trial runs (a value a trial could draw but no job accepts is one line now, not N failures)."""
    import optuna.distributions as d
    from hydra.errors import HydraException

    probes = [[]]
    for key, dist in space.items():
        values = dist.choices if isinstance(dist, d.CategoricalDistribution) else (dist.low, dist.high)
        probes += [[f"{key}={format_value(v)}"] for v in values]
    for probe in probes:
        try:
            cfg = hydra_context.config_loader.load_sweep_config(master_config=config, sweep_overrides=fixed + probe)
        except HydraException as err:
            raise ConfigError(f"{' '.join(probe) or ' '.join(fixed)}: {str(err).splitlines()[0]}") from None
        validate(cfg)


def make_sampler(name: str, seed: Optional[int], space: dict):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        try:
            import torch  # noqa: F401 - Optuna's GP sampler needs it
        except ImportError:
            raise ConfigError("hydra.sweeper.sampler=gp needs PyTorch: pip install torch (or pick tpe)") from None
        return optuna.samplers.GPSampler(seed=seed)
    grid = {}
    for key, dist in space.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution) and not dist.log:
            grid[key] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            raise ConfigError(f"hydra.sweeper.sampler=grid: {key} is continuous; give it as choice(...) or range(...)")
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(name: str):
    """Also called in every job: Optuna keeps the pruner in the process, not in the storage."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3)  # epochs 1-2 never pruned
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "successive_halving":
        # rungs from the first epoch on: Optuna's "auto" waits for a complete trial to size them,
        # and the first packs of a packed search end together, so nothing of theirs would be pruned
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def default_storage(tracking_uri: str) -> str:
    db = sqlite_path(tracking_uri)
    if db is None:
        raise ConfigError("hydra.sweeper.storage: with a tracking server, give the study a database every worker "
                          "reaches, e.g. hydra.sweeper.storage=postgresql+psycopg://user@host/optuna")
    return f"sqlite:///{db.parent / 'optuna.db'}"


def check_storage(storage: str, tracking_uri: str) -> None:
    """The study's storage must be a database URL of its own: Optuna would create its tables inside
    MLflow's database if given that one."""
    if "://" not in storage:
        raise ConfigError(f"hydra.sweeper.storage={redact_uri(storage)}: not a database URL; use e.g. "
                          "sqlite:///optuna.db or postgresql+psycopg://user@host/optuna")
    same = storage == tracking_uri
    db, tracking_db = sqlite_path(storage), sqlite_path(tracking_uri)
    if db is not None and tracking_db is not None:
        same = db.expanduser().resolve() == tracking_db.expanduser().resolve()
    if same:
        raise ConfigError(f"hydra.sweeper.storage={redact_uri(storage)} is the tracking store's own database; give "
                          "the study a database of its own, e.g. the default (optuna.db beside a SQLite store)")


STUDY_FORMAT = 2  # bumped when what trials report changes (2: data loss by default, epochs from 1)


def study_name_for(experiment: str, items: list[str], metric: str) -> str:
    """`<experiment>-<hash of the command and the metric>`: the same command continues the same
    study; one that optimises another metric (or reports as an older version did) starts its own."""
    digest = hashlib.sha256(json.dumps([sorted(items), metric, STUDY_FORMAT]).encode()).hexdigest()[:10]
    return f"{experiment}-{digest}"


# --- one sweep per study at a time -----------------------------------------------------------------

class StudyLock:
    """Held by the one sweep that runs a study (`Search.open` takes it before touching any trial).

    A second start of the same study would close the first's live trial as stale and the first would
    crash on it; now it stops in one line naming the sweep that holds the study. With a SQLite storage
    (the default) the lock is an `fcntl.flock` on a file beside it: atomic, and released by the
    kernel when its process dies however it dies (a SIGKILLed sweep blocks nobody). With a database
    server the claim is the study attribute `sweeps_owner`, taken over when it names a process of
    this host that is gone; a claim from another machine is taken as live (it cannot be checked
    from here; see docs/reliability.md, Limits). Either way `sweeps_owner` says who holds it.
    """

    def __init__(self, study, storage: str):
        self.study, self.storage = study, storage
        self.handle = None
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def path(self) -> Optional[Path]:
        db = sqlite_path(self.storage)
        if db is None:
            return None
        digest = hashlib.sha256(self.study.study_name.encode()).hexdigest()[:12]
        return db.with_name(f"{db.name}.{digest}.lock")

    def acquire(self) -> None:
        import fcntl

        path = self.path()
        if path is not None:
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _json_or_empty(handle.read())
                handle.close()
                raise self.in_use(holder) from None
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(self.me))
            handle.flush()
            self.handle = handle
        else:
            holder = self.study.user_attrs.get(OWNER) or {}
            if holder.get("pid") and _alive(holder) and holder.get("pid") != os.getpid():
                raise self.in_use(holder)
        self.study.set_user_attr(OWNER, self.me)

    def release(self) -> None:
        import fcntl

        try:
            if self.handle is None:
                self.study.set_user_attr(OWNER, {})
        except Exception:  # noqa: BLE001 - the claim names a process that is about to be gone
            pass
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def in_use(self, holder: dict) -> ConfigError:
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
               + (f", since {holder['since']}" if holder.get("since") else ""))
        return ConfigError(f"study {self.study.study_name} is in use by {who}: one sweep per study at a time; "
                           "wait for that sweep to end or stop it (another study: hydra.sweeper.study_name=...)")


def _json_or_empty(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _alive(holder: dict) -> bool:
    """Whether the process a claim names may still run (any process of another host might)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


# --- the sweeper ---------------------------------------------------------------------------------

class OptunaSweeper(TrackedSweeper):
    def __init__(self, n_trials: int = 20, n_jobs: int = 1, sampler: str = "tpe", pruner: Optional[str] = None,
                 seed: Optional[int] = None, direction: Optional[str] = None, study_name: Optional[str] = None,
                 storage: Optional[str] = None, params: Optional[Dict[str, str]] = None):
        super().__init__(params)
        self.settings = dict(n_trials=n_trials, n_jobs=n_jobs, sampler=sampler, pruner=pruner, seed=seed,
                             direction=direction, study_name=study_name, storage=storage)
        self.search: Optional[Search] = None

    def plan(self, items: list[str]) -> Plan:
        self.search = search = Search.open(self.config, self.hydra_context, items, **self.settings)
        search.run_on(self.config.hydra.launcher, in_flight(self.config, self.hydra_context, self.task_function))
        return Plan(search.batches(), list(search.space), search.remaining, {tags.STUDY: search.study.study_name},
                    search.report, None if search.pool is None else search.pool.launch)

    def finished(self) -> None:
        print(self.search.summary(), file=sys.stderr)


class Search:
    """One study: its space, the trials still to run, and what the store says about each."""

    def __init__(self, config: DictConfig, study, space: dict, fixed: list[str], n_trials: int, n_jobs: int,
                 pruner: str, storage: str):
        self.config, self.study, self.space, self.fixed = config, study, space, fixed
        self.n_trials, self.n_jobs, self.pruner, self.storage = n_trials, n_jobs, pruner, storage
        self.metrics = objectives(config)  # one, or several: a multi-objective study
        self.metric = self.metrics[0]
        self.client = MlflowClient(resolve_uri(config.tracking.uri))
        self.open: list = []  # trials asked and not told yet
        self.remaining = 0  # set by open(), after stale trials are closed
        self.lock: Optional[StudyLock] = None  # held from open() to the end of batches()
        self.pool: Optional[InFlight] = None  # set by run_on: trials in flight, or (None) batch by batch
        self.unit = 1  # trials asked at once, trained together as one pack where they can be
        self.batch = n_jobs  # trials a batch holds when they run batch by batch

    def run_on(self, launcher: DictConfig, pool: Optional[InFlight]) -> None:
        """How the trials run: with `pool`, `n_jobs` in flight (and as many packs in flight as the
        packed launcher has workers, each of up to `max_pack` trials); without, in batches of `n_jobs`
        (of `max_pack` with the packed launcher training in this process)."""
        self.pool = pool
        if str(launcher.get("_target_", "")).endswith("PackedLauncher"):
            self.unit = max(1, launcher.max_pack)
        self.batch = max(self.n_jobs, self.unit)
        if pool is not None:
            self.n_jobs = max(self.n_jobs, self.unit * pool.workers)

    @classmethod
    def open(cls, config: DictConfig, hydra_context: HydraContext, items: list[str], n_trials: int, n_jobs: int,
             sampler: str, pruner: Optional[str], seed: Optional[int], direction: Optional[str],
             study_name: Optional[str], storage: Optional[str]) -> "Search":
        import optuna

        metrics = objectives(config)
        if len(metrics) > 1 and pruner not in (None, "none"):
            raise ConfigError(f"hydra.sweeper.pruner={pruner}: Optuna cannot prune a search of several objectives "
                              f"(optimized_metric=[{','.join(metrics)}]); leave pruner out")
        if len(metrics) > 1 and direction is not None:
            raise ConfigError(f"hydra.sweeper.direction={direction}: with several objectives each one's direction "
                              "follows its name (losses, norms, counts: minimize; accuracy, sparsity: maximize); "
                              "leave direction out")
        pruner = pruner or ("median" if len(metrics) == 1 else "none")
        if sampler not in SAMPLERS:
            raise ConfigError(f"hydra.sweeper.sampler={sampler}: no such sampler; choose one of {', '.join(SAMPLERS)}")
        if pruner not in PRUNERS:
            raise ConfigError(f"hydra.sweeper.pruner={pruner}: no such pruner; choose one of {', '.join(PRUNERS)}")
        if n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={n_trials} is invalid: use an integer >= 1")
        if n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={n_jobs} is invalid: use an integer >= 1")
        if direction not in (None, "minimize", "maximize"):
            raise ConfigError(f"hydra.sweeper.direction={direction}: use minimize or maximize (or leave it out)")
        if config.get("repeat"):  # a trial is one run, told to Optuna as one value
            raise ConfigError(f"repeat={config.repeat} works with the grid sweeper only: a search trial is one run; "
                              "search over seed instead (e.g. 'seed=choice(0,1,2)') or drop repeat")
        space, fixed = parse_space(items)
        check_space(hydra_context, config, space, fixed)
        tracking_uri = resolve_uri(config.tracking.uri)
        storage = storage or default_storage(tracking_uri)
        check_storage(storage, tracking_uri)
        name = study_name or study_name_for(str(config.tracking.experiment), items, ",".join(metrics))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                        sampler=make_sampler(sampler, seed, space), pruner=make_pruner(pruner),
                                        directions=[direction] if direction else [metric_direction(m) for m in metrics])
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - a bad URL, a corrupt file, a database that does not answer
            reason = redact_text(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
            raise ConfigError(f"hydra.sweeper.storage={redact_uri(storage)}: Optuna cannot open it ({reason[:300]}); "
                              "give a SQLite file (sqlite:///optuna.db) or a database every worker reaches") from None
        search = cls(config, study, space, fixed, n_trials, n_jobs, pruner, storage)
        search.lock = StudyLock(study, storage)
        search.lock.acquire()  # before any trial is touched: a live sweep's trials are not stale
        search.close_stale()
        search.remaining = max(0, n_trials - search.counted())
        log.info("study %s in %s: %d trial(s) to run", name, redact_uri(storage), search.remaining)
        return search

    @functools.cached_property
    def experiment_id(self) -> str:
        """Looked up once, at the first trial's end (the sweep creates the experiment after `open`)."""
        return self.client.get_experiment_by_name(str(self.config.tracking.experiment)).experiment_id

    # trials and their outcomes
    def counted(self) -> int:
        import optuna

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        stale = set(self.study.user_attrs.get(STALE, []))
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=done) if t.number not in stale)

    def close_stale(self) -> None:
        """Trials left RUNNING by a killed process: FAIL, and not counted (one sweep per study at a time)."""
        import optuna

        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for trial in running:
            self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        if running:
            stale = self.study.user_attrs.get(STALE, []) + [t.number for t in running]
            self.study.set_user_attr(STALE, stale)
            log.warning("closed %d trial(s) left RUNNING by a process that is gone", len(running))

    def batches(self) -> Iterator[list[list[str]]]:
        """The trials' jobs for `parent.run` to launch, and what each run did told back to Optuna:
        a batch at a time, or with an `InFlight` pool one unit at a time as soon as one ends."""
        import optuna

        try:
            yield from (self._batched() if self.pool is None else self._in_flight())
        finally:  # interrupted or failed: the open trials end FAIL, and a rerun does not count them
            for trial in self.open:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            self.mark_stale(self.open)
            if self.lock is not None:
                self.lock.release()

    def _batched(self) -> Iterator[list[list[str]]]:
        """Ask `n_jobs` trials, yield their jobs; once they ran, tell Optuna how each ended."""
        left = self.remaining
        while left > 0:
            with interrupts.deferred():  # whole study writes: an interrupted one leaves the study locked
                self.open = [self.study.ask(self.space) for _ in range(min(self.batch, left))]
            yield [self.job(trial) for trial in self.open]
            with interrupts.deferred():
                for trial in self.open:
                    self.tell(trial)
            left -= len(self.open)
            self.open = []

    def _in_flight(self) -> Iterator[list[list[str]]]:
        """`n_jobs` trials in flight until `n_trials`: whenever a unit (a trial, or a pack of them) ends,
        tell Optuna and ask the next ones at once. A trial whose worker died before it opened its run
        was never tried: it is not counted, and another is asked in its place (as `parent.run` launches
        again what a failed launcher never started), at most `n_trials` times in all."""
        left, spares = self.remaining, self.n_trials
        flying: dict[tuple, Any] = {}  # a job's overrides -> its trial
        while left > 0 or flying:
            while left > 0 and len(flying) < self.n_jobs:
                with interrupts.deferred():
                    asked = [self.study.ask(self.space) for _ in range(min(self.unit, left, self.n_jobs - len(flying)))]
                self.open += asked
                jobs = [self.job(trial) for trial in asked]
                flying.update((tuple(job), trial) for job, trial in zip(jobs, asked))
                left -= len(asked)
                yield jobs
            for jobs, error in self.pool.wait():
                trials = [flying.pop(job) for job in jobs]
                if error is not None:
                    self.worker_lost(trials, error)
                with interrupts.deferred():
                    for trial in trials:
                        if not self.tell(trial) and spares > 0:  # its worker never started it
                            self.mark_stale([trial])
                            left, spares = left + 1, spares - 1
                        self.open.remove(trial)
        self.pool.close()

    def worker_lost(self, trials: list, error: BaseException) -> None:
        """A worker died under `trials`: their runs it left RUNNING end FAILED (`recovery`), and those
        its death ended KILLED too, when nobody interrupted this sweep; the search goes on."""
        from sweeps import tracking
        from sweeps.tracking import recovery

        numbers = ", ".join(str(t.number) for t in trials)
        log.error("the worker process of trial(s) %s died (%s); the search goes on", numbers,
                  redact_text(f"{type(error).__name__}: {error}".splitlines()[0]))
        tracker = tracking.connect(self.config.tracking)
        deadline = time.monotonic() + 30  # a pool that broke stops its other workers too: give them the time
        while True:
            recovery.close_stale_runs(tracker, reason="died while the sweep ran (killed or crashed)")
            runs = [r for t in trials if (r := self.run_of(t)) is not None]
            if all(r.info.status != "RUNNING" for r in runs) or time.monotonic() > deadline:
                break
            time.sleep(1)
        if interrupts.received() is None:
            for run in runs:
                if run.info.status == "KILLED":
                    reason = "stopped: its worker process died while the sweep ran (the sweep was not interrupted)"
                    queries.end_run(self.client, run.info.run_id, "FAILED", reason)

    def mark_stale(self, trials: list) -> None:
        """Trials that did not run to an end of their own (interrupted, never started): not counted."""
        if trials:
            self.study.set_user_attr(STALE, self.study.user_attrs.get(STALE, []) + [t.number for t in trials])

    def job(self, trial) -> list[str]:
        values = [f"{key}={format_value(value)}" for key, value in trial.params.items()]
        return [*self.fixed, *values, f"search.study={self.study.study_name}", f"search.storage='{self.storage}'",
                f"search.trial={trial.number}", f"search.trial_id={trial_id_of(trial)}", f"search.pruner={self.pruner}"]

    def run_of(self, trial):
        """The trial's run in the store (the latest, should there be several), or None."""
        return queries.trial_run(self.client, self.experiment_id, self.study.study_name, trial.number)

    def tell(self, trial) -> bool:
        """Tell Optuna how the trial's run ended (FAIL without one); whether it had a run."""
        import optuna

        run = self.run_of(trial)
        if run is not None:
            trial.set_user_attr("run_id", run.info.run_id)
        state = optuna.trial.TrialState
        if run is None or run.info.status != "FINISHED":
            self.study.tell(trial, state=state.FAIL, skip_if_finished=True)
        elif tags.PRUNED_AT in run.data.tags:
            self.study.tell(trial, state=state.PRUNED, skip_if_finished=True)
        else:
            values = [run.data.metrics.get(m) for m in self.metrics]
            if any(v is None or not math.isfinite(v) for v in values):
                self.study.tell(trial, state=state.FAIL, skip_if_finished=True)
            else:
                self.study.tell(trial, values if len(values) > 1 else values[0], skip_if_finished=True)
        return run is not None

    # what the parent run gets
    def report(self, parent_run_id: str, folder: Path) -> str:
        """Best trial and counts on the parent; Optuna's plots into the report folder."""
        import optuna

        state = optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        counts = {name: sum(t.state == s for t in trials) for name, s in
                  (("complete", state.COMPLETE), ("pruned", state.PRUNED), ("failed", state.FAIL))}
        for name, n in counts.items():
            self.client.log_metric(parent_run_id, f"trials_{name}", n)
        directions = ", ".join(f"{d.name.lower()} {text(m)}" for d, m in zip(self.study.directions, self.metrics))
        lines = [f"## Search: study {code(self.study.study_name)}\n",
                 f"- {len(trials)} trial(s): {counts['complete']} complete, {counts['pruned']} pruned, "
                 f"{counts['failed']} failed; {directions}"]
        if counts["complete"] and len(self.metrics) == 1:
            best = self.study.best_trial
            self.client.log_metric(parent_run_id, f"best_{self.metric}", best.value)
            for key, value in best.params.items():
                self.client.set_tag(parent_run_id, f"sweeps.best.{key}", str(value))
            lines.append(f"- best: trial {best.number}, {text(self.metric)} = {best.value:.4g}, "
                         + text(", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())))
        elif counts["complete"]:  # several objectives: no one best, the front (Optuna's best_trials)
            front = sorted(self.study.best_trials, key=lambda t: t.number)
            self.client.log_metric(parent_run_id, "trials_on_front", len(front))
            self.client.set_tag(parent_run_id, tags.FRONT, ",".join(str(t.number) for t in front))
            lines.append(f"- the front: {len(front)} trial(s) no other beats on every objective: "
                         + "; ".join(f"trial {t.number} ("
                                     + text(", ".join(f"{m} = {v:.4g}" for m, v in zip(self.metrics, t.values))) + ")"
                                     for t in front))
        for file, title, draw in _plots(self.metrics):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    axes = draw(self.study)
                figure = getattr(axes, "figure", None) or axes.flat[0].figure
                figure.savefig(folder / file, dpi=110, bbox_inches="tight")
                import matplotlib.pyplot as plt

                plt.close(figure)
                lines.append(f"\n### {title}\n\n![{title}]({file})")
            except Exception as err:  # noqa: BLE001 - e.g. importances need two complete trials
                why = str(err).splitlines()[0] if str(err) else type(err).__name__
                lines.append(f"\n- {title}: not drawn ({text(why)})")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        import optuna

        trials = self.study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        line = f"study {self.study.study_name}: {len(trials)} trial(s) in all"
        if done and len(self.metrics) > 1:
            front = sorted(t.number for t in self.study.best_trials)
            line += f"; {len(front)} on the front of {', '.join(self.metrics)} (trial(s) {', '.join(map(str, front))})"
        elif done:
            best = self.study.best_trial
            line += (f"; best {self.metric} = {best.value:.4g} (trial {best.number}: "
                     + ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items()) + ")")
        return line


def trial_of(study, trial_id: int):
    """The running trial `trial_id` of `study`, to report to from the job's process. Optuna has no
    public way to reach a trial another process asked, so this is its `Trial(study, trial_id)`,
    fenced here (tests/test_search.py fails loudly should Optuna change it)."""
    import optuna

    return optuna.trial.Trial(study, trial_id)


def trial_id_of(trial) -> int:
    """The storage's id of an asked trial, which `trial_of` needs (Optuna keeps it private)."""
    return trial._trial_id


def format_value(value: Any) -> str:
    """A trial's value as an override: floats in their shortest exact form."""
    return repr(value) if isinstance(value, float) else str(value)


def _plots(metrics: list[str]):
    """Optuna's plots of a study of `metrics`: of several, the Pareto front, and the others for the first."""
    from optuna.visualization import matplotlib as vis

    if len(metrics) == 1:
        return [("optuna_history.png", "Optimization history", vis.plot_optimization_history),
                ("optuna_importances.png", "Parameter importances", vis.plot_param_importances),
                ("optuna_parallel.png", "Parallel coordinates", vis.plot_parallel_coordinate),
                ("optuna_slice.png", "Slice plot", vis.plot_slice)]
    first = {"target": lambda t: t.values[0], "target_name": metrics[0]}
    front = functools.partial(vis.plot_pareto_front, target_names=metrics[:3],
                              targets=(lambda t: tuple(t.values[:3])) if len(metrics) > 3 else None)
    return [("optuna_pareto.png", "Pareto front", front),
            ("optuna_history.png", f"Optimization history of {metrics[0]}",
             functools.partial(vis.plot_optimization_history, **first)),
            ("optuna_importances.png", f"Parameter importances for {metrics[0]}",
             functools.partial(vis.plot_param_importances, **first))]
