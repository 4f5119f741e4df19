"""Where Hydra finds `sweeps`' plugins (Hydra looks only in the `hydra_plugins` namespace package).

Hydra imports this package when ANY Hydra app of the environment starts, so it stays a thin
shell, as Hydra's own plugins are: it registers options under names of our own only
(`hydra/sweeper=grid`, `hydra/sweeper=optuna`, `hydra/launcher=packed`; never a core name such as
`basic`, so every other app keeps Hydra's own sweeper and launcher), imports nothing but Hydra's
interfaces, and each class below imports its implementation when Hydra instantiates it, i.e.
only in an app that chose it. `sweeps`' own app picks `grid` in `conf/config.yaml`.
"""

from __future__ import annotations

import importlib
from typing import Any, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper

from hydra_plugins.sweeps_plugins.config import GridSweeperConf, OptunaSweeperConf, PackedLauncherConf


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
    """`hydra/sweeper=grid`: see `sweeps.sweeper`."""

    IMPLEMENTATION = "sweeps.sweeper:GridSweeper"


class OptunaSweeper(_TrackedSweeper):
    """`hydra/sweeper=optuna`: see `sweeps.search`."""

    IMPLEMENTATION = "sweeps.search:OptunaSweeper"


class PackedLauncher(Launcher):
    """`hydra/launcher=packed`: see `sweeps.launcher`."""

    def __init__(self, **settings: Any) -> None:
        self.impl = _implementation("sweeps.launcher:PackedLauncher", settings)

    def setup(self, **kwargs: Any) -> None:
        self.impl.setup(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        return self.impl.launch(job_overrides, initial_job_idx)

    def check(self) -> None:
        """Its settings out of range, as one line (our sweepers call it before anything runs)."""
        self.impl.check()


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="sweeps")
_store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="sweeps")
_store.store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="sweeps")
