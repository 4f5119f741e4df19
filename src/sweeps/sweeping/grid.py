"""`hydra/sweeper=grid` (the default): Hydra's grid of `key=a,b` overrides, run as one tracked sweep.

It expands the same grammar as Hydra's basic sweeper (`a=1,2`, `range(...)`, `hydra.sweeper.params`),
then, before anything is trained, composes and checks every job's config (one line naming the key
and exit 2 on the first bad one), and hands the jobs to whatever `hydra/launcher` is chosen (basic,
joblib, submitit, ...) inside `parent.run`, which owns the parent run. It is a sweeper of our own,
on Hydra's public `Sweeper` interface, because a Hydra callback cannot see a sweep that fails or
is interrupted (Hydra calls `on_multirun_end` only when every job returned).
"""

from __future__ import annotations

import copy
import itertools
import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeps.sweeping import repeats, parent as sweep
from sweeps.config import config_hash, validate
from sweeps.training.context import assign_key
from sweeps.errors import ConfigError, StoreUnavailable, SweepsError


def grid(items: list[str]) -> tuple[list[list[str]], list[str]]:
    """Every combination of the overrides' values (Hydra's order), and the keys that vary."""
    axes, swept = [], []
    for override in OverridesParser.create().parse_overrides(items):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(f"{override.input_line}: the grid sweeper takes lists and range(); "
                                  "intervals need hydra/sweeper=optuna")
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
            swept.append(override.key_or_group)
        else:
            axes.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*axes)], swept


def check_jobs(hydra_context: HydraContext, config: DictConfig, jobs: list[list[str]]) -> list[DictConfig]:
    """Compose and validate every job's config before anything runs; returns the configs."""
    loader = hydra_context.config_loader
    composed = []
    for job in jobs:
        try:
            cfg = loader.load_sweep_config(master_config=config, sweep_overrides=list(job))
        except HydraException as err:
            raise ConfigError(f"{' '.join(job)}: {str(err).splitlines()[0]}") from None
        validate(cfg)
        composed.append(cfg)
    return composed


def once_each(jobs: list[list[str]], composed: list[DictConfig]) -> tuple[list[list[str]], list[list[str]]]:
    """The jobs split into the first of each distinct configuration and the ones that repeat an
    earlier job's (`reg=none` with several rates: the rate changes nothing). The repeats run after
    all the others, so each finds its twin FINISHED and links it instead of training it again."""
    from sweeps.training.context import task_config

    seen: set[str] = set()
    first, again = [], []
    for job, cfg in zip(jobs, composed):
        digest = config_hash(task_config(cfg))
        (again if digest in seen else first).append(job)
        seen.add(digest)
    return first, again


class ComposedOnce(ConfigLoader):
    """Hydra's config loader, composing each job's config once per sweep.

    The sweeper composes every job to check it before anything runs (`check_jobs`); the launcher
    (Hydra's basic one, `hydra/launcher=packed`) composes it again to run it: same master config,
    same overrides, same config (~0.08 s a job here). Every caller gets its own copy (launchers
    write the job's number into theirs). Not pickled with a launcher: a worker composes its own.

    `ConfigLoader` is Hydra's public interface for loaders; each of its methods is passed on to Hydra's
    own loader. Should Hydra add one, this class cannot be instantiated and
    tests/test_config.py::test_a_sweep_composes_each_jobs_config_once_and_hands_out_copies says so.
    """

    def __init__(self, loader: ConfigLoader):
        self.loader = loader
        self.composed: dict[tuple, DictConfig] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        if key not in self.composed:
            self.composed[key] = self.loader.load_sweep_config(master_config, list(sweep_overrides))
        return copy.deepcopy(self.composed[key])

    def __getstate__(self) -> dict:
        return {"loader": self.loader, "composed": {}}

    def load_configuration(self, *args, **kwargs) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self):
        return self.loader.get_search_path()

    def get_sources(self):
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> List[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args, **kwargs) -> List[str]:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args, **kwargs) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)


@dataclass
class Plan:
    """What a sweeper hands `parent.run`: the jobs, batch by batch, and what the parent run records."""

    batches: Iterable[list[list[str]]]  # override lists, one batch at a time
    swept: list[str]  # keys the sweep varies
    planned: int  # jobs it means to launch
    parent_tags: Optional[dict] = None  # extra tags on the parent run
    report_extra: Optional[sweep.ReportExtra] = None  # extra section of the parent's report.md
    launch: Optional[sweep.Launch] = None  # what launches a batch, if not the Hydra launcher (`launcher.InFlight`)


class TrackedSweeper(Sweeper):
    """A Hydra sweeper whose sweep is one tracked parent run (`parent.run`), with any launcher.

    Subclasses say what to launch (`plan`); errors found before any job started are one line and
    exit 2, a store that stops answering is one line and exit 1, failed jobs make the exit code 1.
    """

    def __init__(self, params: Optional[Dict[str, str]] = None):
        self.params = params or {}
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        hydra_context = HydraContext(ComposedOnce(hydra_context.config_loader), hydra_context.callbacks)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def plan(self, items: list[str]) -> Plan:
        raise NotImplementedError

    def finished(self) -> None:
        """Called after the sweep ended well (a search prints its best trial)."""

    def sweep(self, arguments: List[str]) -> Any:
        items = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        assign_key(self.config)  # before any job is composed: every job's config carries it
        try:
            getattr(self.launcher, "check", lambda: None)()  # a launcher's own settings (hydra/launcher=packed)
            plan = self.plan(items)
            outcome = sweep.run(self.config, plan.batches, plan.swept, plan.launch or self.launcher.launch, plan.planned,
                                plan.parent_tags, plan.report_extra)
        except SweepsError as err:  # raised before any job started (a job's own errors stay in its run)
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except StoreUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        self.finished()
        if outcome.failed:
            raise SystemExit(1)
        return outcome


class GridSweeper(TrackedSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None):
        super().__init__(params)
        self.max_batch_size = max_batch_size

    def plan(self, items: list[str]) -> Plan:
        jobs, swept = repeats.expand(*grid(items), self.config)  # repeat=K: K jobs per configuration
        first, again = once_each(jobs, check_jobs(self.hydra_context, self.config, jobs))
        batches = itertools.chain(sweep.chunks(first, self.max_batch_size), sweep.chunks(again, self.max_batch_size))
        return Plan(batches, swept, len(jobs))
