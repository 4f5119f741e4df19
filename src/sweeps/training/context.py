"""What a launcher hands a job besides its config, and how a job knows which sweep it belongs to.

A job learns its role from its own config and environment only (never from another process's
memory): its overrides, the sweep's folder and key (`hydra.job.env_set.SWEEPS_SWEEP_KEY`, which our
sweepers add to every job's config before any is composed), its number, and how many jobs run beside
it on this machine (for its share of the cores). Light: Hydra and OmegaConf only, so a launcher in
the launching process reads it without importing TensorFlow.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

KEY_ENV = "SWEEPS_SWEEP_KEY"  # the sweep's key: in every job's `hydra.job.env_set`, so in its environment too


@dataclass(frozen=True)
class JobContext:
    """What the launcher hands a job besides its config."""

    overrides: tuple[str, ...] = ()  # the job's own command-line overrides
    sweep_dir: Optional[str] = None  # absolute `hydra.sweep.dir` in a multirun; None for a single run
    parallel: int = 1  # jobs the launcher runs at once on this machine (for the thread share)
    number: Optional[int] = None  # `hydra.job.num` in a multirun (from 0): which job of the sweep this is
    sweep_key: Optional[str] = None  # the key our sweeper gave the sweep (`assign_key`): finds the parent

    @classmethod
    def from_hydra(cls) -> "JobContext":
        """Read from Hydra's config of this job (empty outside Hydra, e.g. under compose())."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return cls()
        return cls.of(HydraConfig.get())

    @classmethod
    def of(cls, hc: DictConfig) -> "JobContext":
        """Read from a job's `hydra` node (what a launcher composed for it)."""
        from hydra.types import RunMode

        multirun = hc.mode == RunMode.MULTIRUN
        return cls(tuple(hc.overrides.task), absolute_dir(hc.sweep.dir, hc.runtime.cwd) if multirun else None,
                   parallel_jobs(hc.launcher) if multirun else 1, hc.job.num if multirun else None,
                   key_of(hc) if multirun else None)


def thread_share(cfg: DictConfig, job: JobContext) -> Optional[int]:
    """`threads`, else the cores divided among the jobs that run at once (None: TensorFlow decides)."""
    if cfg.threads:
        return cfg.threads
    return max(1, (os.cpu_count() or 1) // job.parallel) if job.parallel > 1 else None


def parallel_jobs(launcher: DictConfig) -> int:
    """How many jobs a launcher runs at once on one machine (joblib's and packed's n_jobs; 1 otherwise)."""
    n = launcher.get("n_jobs") or 1
    return os.cpu_count() or 1 if n < 0 else n


def assign_key(config: DictConfig) -> str:
    """A new key for the sweep of `config` (Hydra's master config), handed to every job: added to the
    Hydra overrides each job's config is composed with, and to `config` itself; returns it."""
    key = uuid.uuid4().hex
    with read_write(config), open_dict(config):
        config.hydra.overrides.hydra.append(f"+hydra.job.env_set.{KEY_ENV}={key}")
        config.hydra.job.env_set[KEY_ENV] = key
    return key


def key_of(hydra: DictConfig) -> Optional[str]:
    """The sweep key a job's (or the master's) `hydra` node carries (None: not launched by our sweepers)."""
    env_set = OmegaConf.select(hydra, "job.env_set") or {}
    return env_set.get(KEY_ENV) or None


def absolute_dir(sweep_dir: str, cwd: Optional[str] = None) -> str:
    """`hydra.sweep.dir` as an absolute path (relative ones are relative to the launch folder)."""
    return str((Path(cwd or os.getcwd()) / sweep_dir).resolve())


def task_config(cfg: DictConfig) -> DictConfig:
    """A job's config as its task sees it: without the `hydra` node (as Hydra's `run_job` hands it)."""
    task = cfg.copy()
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task
