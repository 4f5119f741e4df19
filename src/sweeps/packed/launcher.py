"""`hydra/launcher=packed`: a sweep's jobs that can share one model are trained as one (`packing`).

    python -m sweeps.train -m reg=l1,l2 rate=1e-5,1e-4,1e-3,1e-2 hydra/launcher=packed

The launcher composes every job's config as Hydra's basic launcher does, groups the jobs with
`packs` (same data, architecture, optimizer, batch size, epochs and early stopping; at
most `hydra.launcher.max_pack` per model), trains each pack as one model (the task function's `pack`: `train.task_pack`) and
runs every other job alone through Hydra's `run_job`, exactly as the basic launcher would. Packs
and lone jobs run in this process one after another, or with `hydra.launcher.n_jobs=N`, N at a
time in worker processes (joblib's loky pool, as `hydra/launcher=joblib`): a worker learns what
to train from the configs it is handed and finds the sweep's parent run in the store, as every
job does. It sits behind our sweepers like any launcher (`parent.run` owns the parent run, stops
the workers on Ctrl-C and relaunches what a dead worker never started).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeps.config import to_plain
from sweeps.config import keys
from sweeps.errors import ConfigError
from sweeps.training.context import parallel_jobs, task_config

log = logging.getLogger(__name__)

def why_alone(cfg: DictConfig) -> Optional[str]:
    """Why a job is never packed (None: it can be)."""
    if cfg.model._target_ is not None:
        return f"model._target_={cfg.model._target_} (only the MLP packs)"
    if cfg.model.batchnorm:
        return "model.batchnorm=true (batch statistics are not packed)"
    if cfg.cv.folds:
        return "cv.folds (each fold is a model of its own)"
    if cfg.checkpoint:
        return "checkpoint=true (a job alone saves its state every epoch; a pack does not)"
    return None


def pack_key(cfg: DictConfig) -> str:
    """Jobs with the same key can share one packed model."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in keys.PACKABLE + keys.FREE_IN_A_PACK}
    plain["optimizer"] = {k: v for k, v in plain["optimizer"].items() if k not in keys.PACKABLE_OPTIMIZER}
    return json.dumps(plain, sort_keys=True)


def packs(cfgs: Sequence[DictConfig], max_pack: int) -> list[list[int]]:
    """Indices of the jobs, grouped into packs of at most `max_pack` that share a `pack_key`, in
    launch order (a group is placed where its first job was); jobs that cannot be packed alone."""
    groups: dict[str, list[int]] = {}
    alone: list[list[int]] = []
    reasons: dict[str, int] = {}
    for i, cfg in enumerate(cfgs):
        why = why_alone(cfg) if max_pack >= 2 else None
        if max_pack < 2 or why:
            alone.append([i])
            if why:
                reasons[why] = reasons.get(why, 0) + 1
        else:
            groups.setdefault(pack_key(cfg), []).append(i)
    for why, count in reasons.items():  # once per reason, not once per job
        log.info("%d job(s) trained alone, not packed: %s", count, why)
    chunks = [group[j:j + max_pack] for group in groups.values() for j in range(0, len(group), max_pack)]
    return sorted(alone + chunks, key=lambda chunk: chunk[0])


class PackedLauncher(Launcher):
    def __init__(self, max_pack: int = 8, jit_compile: bool = True, n_jobs: int = 1):
        self.max_pack = max_pack
        self.jit_compile = jit_compile
        self.n_jobs = n_jobs
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def check(self) -> None:
        """Settings out of range, as one line (the sweeper calls this before anything runs)."""
        if self.max_pack < 1:
            raise ConfigError(f"hydra.launcher.max_pack={self.max_pack} is invalid: use an integer >= 1 "
                              "(1 trains every job alone)")
        if self.n_jobs < 1:
            raise ConfigError(f"hydra.launcher.n_jobs={self.n_jobs} is invalid: use an integer >= 1 "
                              "(1 trains in this process)")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        composed = [self._compose(list(overrides), initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        # The task function says whether and how its jobs train as packs (`sweeps.train.task.pack`);
        # any other Hydra app's jobs run one by one, exactly as under Hydra's basic launcher.
        packable = getattr(self.task_function, "pack", None) is not None
        units = packs([task_config(c) for c in composed], self.max_pack if packable else 1)
        args = [([composed[i] for i in unit], self.hydra_context, self.task_function, self.jit_compile)
                for unit in units]
        if self.n_jobs == 1:
            done = []
            for unit_args in args:
                done.append(run_unit(*unit_args))
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # run_job changed it
        else:
            from joblib import Parallel, delayed

            state = Singleton.get_state()
            done = Parallel(n_jobs=self.n_jobs, backend="loky")(
                delayed(run_unit)(*unit_args, singleton_state=state) for unit_args in args)
        returns: list[Optional[JobReturn]] = [None] * len(composed)
        for unit, unit_returns in zip(units, done):
            for i, ret in zip(unit, unit_returns):
                returns[i] = ret
        return returns

    def _compose(self, overrides: list[str], number: int) -> DictConfig:
        return compose_job(self.config, self.hydra_context, overrides, number)


def compose_job(config: DictConfig, hydra_context: HydraContext, overrides: list[str], number: int,
                announce: bool = True) -> DictConfig:
    """Job `number`'s config, composed as Hydra's basic launcher composes it (and says, with `announce`)."""
    if announce:
        log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
    cfg = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(cfg):
        cfg.hydra.job.id = number
        cfg.hydra.job.num = number
    return cfg


class InFlight:
    """Jobs in flight on a pool of worker processes, each unit (a pack, or one job alone) returning on
    its own: `launch` hands a batch over and returns at once, `wait` returns the units that ended as
    soon as any one did. What `hydra/sweeper=optuna` runs its trials on with `hydra/launcher=joblib`
    or `hydra/launcher=packed` and `n_jobs` >= 2, so that a new trial starts the moment one ends
    (Hydra's `Launcher.launch` returns only when its whole batch ended: no launcher of Hydra's API
    can do that). A unit runs exactly as under those launchers (`run_unit`, in a loky worker, which
    is joblib's own pool: reusable, and a worker that dies fails its futures instead of hanging).
    """

    def __init__(self, config: DictConfig, hydra_context: HydraContext, task_function: TaskFunction, workers: int,
                 max_pack: int = 1, jit_compile: bool = True):
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.workers, self.max_pack, self.jit_compile = workers, max_pack, jit_compile
        self.pending: dict = {}  # future -> the override lists (tuples) of the jobs of its unit
        self.executor = None  # loky's reusable pool, from the first launch

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> None:
        from loky import get_reusable_executor

        setup_globals()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        composed = [compose_job(self.config, self.hydra_context, list(overrides), initial_job_idx + i)
                    for i, overrides in enumerate(job_overrides)]
        packable = getattr(self.task_function, "pack", None) is not None
        self.executor = executor = get_reusable_executor(max_workers=self.workers)
        state = Singleton.get_state()
        for unit in packs([task_config(c) for c in composed], self.max_pack if packable else 1):
            future = executor.submit(run_unit, [composed[i] for i in unit], self.hydra_context, self.task_function,
                                     self.jit_compile, singleton_state=state)
            self.pending[future] = [tuple(job_overrides[i]) for i in unit]

    def close(self) -> None:
        """Stop the idle workers once every unit ended: at exit, loky waits for each TensorFlow
        worker to tear itself down, 7-17 s of a search's wall time here (`make bench`)."""
        if self.executor is not None and not self.pending:
            self.executor.shutdown(wait=True, kill_workers=True)
            self.executor = None

    def wait(self) -> list[tuple[list[tuple], Optional[BaseException]]]:
        """Block until a unit ends; each unit that ended, with the error of its worker (None: it ran; a
        job's own failure is in its run, as under Hydra's launchers)."""
        import concurrent.futures

        done: set = set()
        while not done:  # in slices: Ctrl-C is taken between them at once
            done, _ = concurrent.futures.wait(list(self.pending), timeout=1.0,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
        return [(self.pending.pop(future), future.exception()) for future in done]


def in_flight(config: DictConfig, hydra_context: HydraContext, task_function: TaskFunction) -> Optional[InFlight]:
    """An `InFlight` pool for the chosen launcher when it runs jobs in worker processes of this
    machine (joblib's process backend, packed with `n_jobs` >= 2); None for the others (basic: one
    job at a time here; submitit, SLURM, Ray: their queues, through Hydra's `launch`)."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("PackedLauncher") and launcher.n_jobs >= 2:
        return InFlight(config, hydra_context, task_function, launcher.n_jobs, launcher.max_pack, launcher.jit_compile)
    processes = (launcher.get("backend") in (None, "loky") and launcher.get("require") is None
                 and launcher.get("prefer", "processes") == "processes")
    if target.endswith("JoblibLauncher") and processes:
        return InFlight(config, hydra_context, task_function, parallel_jobs(launcher))
    return None


def run_unit(composed: list[DictConfig], hydra_context: HydraContext, task_function: TaskFunction,
             jit_compile: bool, singleton_state: Optional[dict] = None) -> list[JobReturn]:
    """One pack (or one job alone, through Hydra's `run_job`), in this process or a pool worker
    (`singleton_state`: Hydra's state of the launching process, as the joblib launcher hands it)."""
    if singleton_state is not None:
        setup_globals()
        Singleton.set_state(singleton_state)
        configure_log(composed[0].hydra.hydra_logging, composed[0].hydra.verbose)  # as in the launching process
    HydraConfig.instance().set_config(composed[0])
    if len(composed) == 1:
        return [run_job(hydra_context=hydra_context, task_function=task_function, config=composed[0],
                        job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")]
    returns = []
    for cfg, value in zip(composed, task_function.pack(composed, jit_compile)):
        ret = JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=OmegaConf.create({}), hydra_cfg=cfg,
                        working_dir=str(Path.cwd()), task_name=cfg.hydra.job.name)
        ret.return_value = value
        ret.status = JobStatus.COMPLETED
        returns.append(ret)
    return returns
