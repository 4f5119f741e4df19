"""`hydra/launcher=packed`: a sweep's jobs that can share one model are trained as one (`packing`).

    python -m sweeps.train -m reg=l1,l2 rate=1e-5,1e-4,1e-3,1e-2 hydra/launcher=packed

The launcher composes every job's config as Hydra's basic launcher does, groups the jobs with
`packs` (same data, architecture, optimizer, batch size, epochs and early stopping; at
most `hydra.launcher.max_pack` per model), trains each pack in this process (`train.task_pack`)
and runs every other job alone through Hydra's `run_job`, exactly as the basic launcher would.
It sits behind our sweepers like any launcher (`sweep.run` owns the parent run); a pack finds its
parent in the store, as every job does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sweeps.config import to_plain
from sweeps.errors import ConfigError

log = logging.getLogger(__name__)

# What may differ between the jobs of one pack; every other key must be the same.
PACKABLE = ("reg", "rate", "dropout", "dropout_type", "dropout_layers", "seed")
# Keys that differ freely (they change neither the model nor its training).
_FREE = ("optimized_metric", "resume")


def why_alone(cfg: DictConfig) -> Optional[str]:
    """Why a job is never packed (None: it can be)."""
    if cfg.model.batchnorm:
        return "model.batchnorm=true (batch statistics are not packed)"
    if cfg.cv.folds:
        return "cv.folds (each fold is a model of its own)"
    if cfg.search.trial is not None:
        return "a search trial (its pruner stops it alone)"
    return None


def pack_key(cfg: DictConfig) -> str:
    """Jobs with the same key can share one packed model."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in PACKABLE + _FREE}
    return json.dumps(plain, sort_keys=True)


def packs(cfgs: Sequence[DictConfig], max_pack: int) -> list[list[int]]:
    """Indices of the jobs, grouped into packs of at most `max_pack` that share a `pack_key`, in
    launch order (a group is placed where its first job was); jobs that cannot be packed alone."""
    groups: dict[str, list[int]] = {}
    alone: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        if why_alone(cfg) or max_pack < 2:
            alone.append([i])
        else:
            groups.setdefault(pack_key(cfg), []).append(i)
    chunks = [group[j:j + max_pack] for group in groups.values() for j in range(0, len(group), max_pack)]
    return sorted(alone + chunks, key=lambda chunk: chunk[0])





@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.sweeps_plugins.PackedLauncher"
    max_pack: int = 8  # most jobs trained as one model (1: every job alone, as the basic launcher)
    jit_compile: bool = True  # XLA for the packed model's steps (measured faster on CPU: make bench)


class PackedLauncher(Launcher):
    def __init__(self, max_pack: int = 8, jit_compile: bool = True):
        self.max_pack = max_pack
        self.jit_compile = jit_compile
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def check(self) -> None:
        """Settings out of range, as one line (the sweeper calls this before anything runs)."""
        if self.max_pack < 1:
            raise ConfigError(f"hydra.launcher.max_pack={self.max_pack} is invalid: use an integer >= 1 "
                              "(1 trains every job alone)")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        composed = [self._compose(list(overrides), initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        tasks = [task_config(c) for c in composed]
        returns: list[Optional[JobReturn]] = [None] * len(composed)
        for group in packs(tasks, self.max_pack):
            if len(group) == 1:
                returns[group[0]] = self._alone(composed[group[0]])
            else:
                for i, ret in zip(group, self._pack([composed[i] for i in group])):
                    returns[i] = ret
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _compose(self, overrides: list[str], number: int) -> DictConfig:
        log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = number
            cfg.hydra.job.num = number
        return cfg

    def _alone(self, cfg: DictConfig) -> JobReturn:
        HydraConfig.instance().set_config(cfg)
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def _pack(self, composed: list[DictConfig]) -> list[JobReturn]:
        from sweeps.train import task_pack

        HydraConfig.instance().set_config(composed[0])
        values = task_pack(composed, self.jit_compile)
        returns = []
        for cfg, value in zip(composed, values):
            ret = JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=OmegaConf.create({}), hydra_cfg=cfg,
                            working_dir=str(Path.cwd()), task_name=cfg.hydra.job.name)
            ret.return_value = value
            ret.status = JobStatus.COMPLETED
            returns.append(ret)
        return returns


def task_config(cfg: DictConfig) -> DictConfig:
    """A job's config as its task sees it: without the `hydra` node (as Hydra's `run_job` hands it)."""
    task = cfg.copy()
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task
