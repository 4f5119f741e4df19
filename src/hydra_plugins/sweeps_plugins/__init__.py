"""Where Hydra finds `sweeps`' plugins (Hydra looks only in the `hydra_plugins` namespace package).

Hydra imports this package when ANY Hydra app of the environment starts, so it stays a thin
shell, as Hydra's own plugins are: it registers options under names of our own only
(`hydra/sweeper=grid`, `hydra/sweeper=optuna`, `hydra/launcher=packed`, and the classes behind
`conf/hydra/launcher/slurm.yaml` and `ray.yaml`, which only our app's config folder holds, so
another app's `ray` stays hydra-ray-launcher's; never a core name such as
`basic`, so every other app keeps Hydra's own sweeper and launcher), imports nothing but Hydra's
interfaces, and each class below imports its implementation when Hydra instantiates it, i.e.
only in an app that chose it. `sweeps`' own app picks `grid` in `conf/config.yaml`.
"""

# No `from __future__ import annotations`: Hydra's scan may execute this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations.
import importlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper


# The plugins' options (`hydra.sweeper.*`, `hydra.launcher.*`). They live in this module, next to the
# line that registers them: Hydra's plugin scan executes every module under hydra_plugins/ again, and
# a class registered by one execution but replaced by another would no longer pickle (a worker pool
# receives the config loader, and with it these nodes).
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
    sampler: str = "tpe"  # tpe | random | gp (needs PyTorch) | qmc | grid | nsga2 (several objectives too)
    # median (no pruning in the first 2 trials or epochs) | hyperband | successive_halving | none;
    # null: median, or none for several objectives (Optuna prunes one objective only)
    pruner: Optional[str] = None
    seed: Optional[int] = None  # the sampler's seed
    direction: Optional[str] = None  # minimize | maximize; null: from optimized_metric's name (accuracy: maximize)
    study_name: Optional[str] = None  # null: derived from the command, so a rerun continues the study
    storage: Optional[str] = None  # null: sqlite optuna.db beside a SQLite tracking store; a database URL for a team
    params: Optional[Dict[str, str]] = None  # search space in Hydra's override grammar, e.g. {rate: "tag(log, interval(1e-6, 1e-2))"}


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.sweeps_plugins.PackedLauncher"
    max_pack: int = 8  # most jobs trained as one model (1: every job alone, as the basic launcher)
    jit_compile: bool = True  # XLA for the packed model's training steps (measured faster on CPU: make bench)
    n_jobs: int = 1  # packs (and lone jobs) trained at once, each in a worker process (1: in this process)


def _implementation(path: str, settings: dict) -> Any:
    """The plugin's implementation (`module:Class`), imported now, built with Hydra's settings."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)(**settings)


class _TrackedSweeper(Sweeper):
    IMPLEMENTATION = ""

    def __init__(self, **settings: Any) -> None:
        self.impl = _implementation(self.IMPLEMENTATION, settings)

    def setup(self, **kwargs: Any) -> None:
        self.impl.setup(**kwargs)

    def sweep(self, arguments: List[str]) -> Any:
        return self.impl.sweep(arguments)


class GridSweeper(_TrackedSweeper):
    """`hydra/sweeper=grid`: see `sweeps.sweeping.grid`."""

    IMPLEMENTATION = "sweeps.sweeping.grid:GridSweeper"


class OptunaSweeper(_TrackedSweeper):
    """`hydra/sweeper=optuna`: see `sweeps.sweeping.search`."""

    IMPLEMENTATION = "sweeps.sweeping.search:OptunaSweeper"


class _ImplementedLauncher(Launcher):
    IMPLEMENTATION = ""

    def __init__(self, **settings: Any) -> None:
        self.impl = _implementation(self.IMPLEMENTATION, settings)

    def setup(self, **kwargs: Any) -> None:
        self.impl.setup(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        return self.impl.launch(job_overrides, initial_job_idx)

    def check(self) -> None:
        """Its settings checked, as one line (our sweepers call it before anything runs)."""
        self.impl.check()


class PackedLauncher(_ImplementedLauncher):
    """`hydra/launcher=packed`: see `sweeps.packed.launcher`."""

    IMPLEMENTATION = "sweeps.packed.launcher:PackedLauncher"


class RayLauncher(_ImplementedLauncher):
    """`hydra/launcher=ray`: see `sweeps.sweeping.ray_launcher`."""

    IMPLEMENTATION = "sweeps.sweeping.ray_launcher:RayLauncher"


class SlurmLauncher(_ImplementedLauncher):
    """`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml: hydra-submitit-launcher's options): see `sweeps.sweeping.slurm`."""

    IMPLEMENTATION = "sweeps.sweeping.slurm:SlurmLauncher"


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="sweeps")
_store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="sweeps")
_store.store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="sweeps")
