"""Hydra finds plugins only in the `hydra_plugins` namespace package; the code lives in `sweeps`.

Importing this module (Hydra does, when it scans for plugins) registers the options of `sweeps`'
own Hydra groups: `hydra/sweeper=grid` (the default in conf/config.yaml). It imports no TensorFlow.
"""

from hydra.core.config_store import ConfigStore

from sweeps import sweeper


class GridSweeper(sweeper.GridSweeper):
    """`hydra/sweeper=grid`: see `sweeps.sweeper`."""


ConfigStore.instance().store(group="hydra/sweeper", name="grid", provider="sweeps",
                             node=sweeper.GridSweeperConf(_target_=f"{__name__}.GridSweeper"))
