"""Hydra finds plugins only in the `hydra_plugins` namespace package; the code lives in `sweeps`.

Importing this module (Hydra does, when it scans for plugins) registers the options of `sweeps`'
own Hydra groups: `hydra/sweeper=grid` (also registered as Hydra's default option, `basic`) and
`hydra/sweeper=optuna`, and the launcher `hydra/launcher=packed`. It imports no TensorFlow.
"""

from hydra.core.config_store import ConfigStore

from sweeps import launcher, search, sweeper


class GridSweeper(sweeper.GridSweeper):
    """`hydra/sweeper=grid`: see `sweeps.sweeper`."""


class OptunaSweeper(search.OptunaSweeper):
    """`hydra/sweeper=optuna`: see `sweeps.search`."""


class PackedLauncher(launcher.PackedLauncher):
    """`hydra/launcher=packed`: see `sweeps.launcher`."""


# `basic` too: Hydra's default sweeper option becomes ours, so a multirun is a tracked sweep without
# an `override hydra/sweeper` in conf/config.yaml (which would win over an experiment file's choice).
for name in ("grid", "basic"):
    ConfigStore.instance().store(group="hydra/sweeper", name=name, provider="sweeps",
                                 node=sweeper.GridSweeperConf(_target_=f"{__name__}.GridSweeper"))
ConfigStore.instance().store(group="hydra/sweeper", name="optuna", provider="sweeps",
                             node=search.OptunaSweeperConf(_target_=f"{__name__}.OptunaSweeper"))
ConfigStore.instance().store(group="hydra/launcher", name="packed", provider="sweeps",
                             node=launcher.PackedLauncherConf(_target_=f"{__name__}.PackedLauncher"))
