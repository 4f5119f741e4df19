"""The options of `sweeps`' Hydra plugins (`hydra.sweeper.*`, `hydra.launcher.*`), light to import.

Hydra imports every module under `hydra_plugins/` when any Hydra app starts, so this module (and
the package) import only Hydra's interfaces and dataclasses; each plugin's implementation
(`sweeps.sweeper`, `sweeps.search`, `sweeps.launcher`, with MLflow behind them) is imported when
Hydra instantiates the plugin, i.e. only in an app that chose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.sweeps_plugins.GridSweeper"
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (null: all of them)
    params: Optional[Dict[str, str]] = None  # sweep axes written in a config file, e.g. {rate: "1e-4,1e-3"}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.sweeps_plugins.OptunaSweeper"
    n_trials: int = 20  # trials in the study in all (a rerun of the command continues up to this many)
    n_jobs: int = 1  # trials in flight at once, run through hydra/launcher
    sampler: str = "tpe"  # tpe | random | gp (needs PyTorch) | qmc | grid
    pruner: str = "median"  # median (no pruning in the first 2 trials or epochs) | hyperband | successive_halving | none
    seed: Optional[int] = None  # the sampler's seed
    direction: Optional[str] = None  # minimize | maximize; null: from optimized_metric (accuracy: maximize)
    study_name: Optional[str] = None  # null: derived from the command, so a rerun continues the study
    storage: Optional[str] = None  # null: sqlite optuna.db beside a SQLite tracking store; a database URL for a team
    params: Optional[Dict[str, str]] = None  # search space in Hydra's override grammar, e.g. {rate: "tag(log, interval(1e-6, 1e-2))"}


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.sweeps_plugins.PackedLauncher"
    max_pack: int = 8  # most jobs trained as one model (1: every job alone, as the basic launcher)
    jit_compile: bool = True  # XLA for the packed model's training steps (measured faster on CPU: make bench)
    n_jobs: int = 1  # packs (and lone jobs) trained at once, each in a worker process (1: in this process)
