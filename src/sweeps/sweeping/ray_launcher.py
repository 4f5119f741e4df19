"""`hydra/launcher=ray`: every job one Ray task, on a Ray cluster joined by address, on Ray's public task API.

    ray start --head --port=6379                      # the head node; `ray start --address=<head>:6379` on each other
    python -m sweeps.train -m reg=l1,l2 hydra/launcher=ray hydra.launcher.address=<head>:6379

Ours rather than `hydra-ray-launcher` (unmaintained; it pins cloudpickle<3, which MLflow's stack
has left behind, and neither cancels its tasks on Ctrl-C nor says which job a dead worker took).

- **Jobs**: one task each, with `num_cpus` and `num_gpus` reserved for it (Ray gives a task its
  own GPUs and sets `CUDA_VISIBLE_DEVICES` for it); `max_retries=0`: a job whose worker died is
  the sweep's to rerun (resume), never trained twice behind its back. A task runs its job as every
  launcher of ours does (`launcher.run_unit`: Hydra's `run_job`), in the launch folder, with the
  launching process's tracking settings (`MLFLOW_*`, `SWEEPS_*`; a worker's own environment is
  its node's, not the terminal's). Every run records where it ran (`sweeps.ray_node`) and its task
  (`sweeps.ray_task`).
- **Before anything is submitted**: the cluster must answer at `address` (else one line naming
  the key), and one job's `num_cpus`/`num_gpus` must fit on one of its nodes (Ray would otherwise
  leave the task pending for ever).
- **Ctrl-C or SIGTERM** on the launching process cancels every task of the sweep: pending ones never
  start, running ones get KeyboardInterrupt (the job ends its run KILLED); after `CANCEL_WAIT_S` a
  task still running is cancelled by force (its worker killed).
- **A worker that dies** (SIGKILL, the OOM killer, a node lost) fails its job alone, with Ray's
  reason (the run, found by its `sweeps.ray_task`, ends FAILED); the other jobs go on.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeps.tracking import queries, tags
from sweeps.errors import ConfigError

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 60.0  # after cancelling: how long running tasks get to end their runs before they are killed
FORWARDED = ("MLFLOW_", "SWEEPS_", "KERAS_", "TF_")  # the launching process's settings every job needs
TASK_ENV, NODE_ENV = "SWEEPS_RAY_TASK", "SWEEPS_RAY_NODE"  # set in the task's process: read by `tracking.process_tags`


def run_task(unit_args: tuple, singleton_state: dict, env: dict, cwd: str) -> list[JobReturn]:
    """One job in a Ray worker: the launching process's settings and folder, then `run_unit`."""
    import ray

    from sweeps.packed.launcher import run_unit

    context = ray.get_runtime_context()
    # A worker's environment is its node's (`ray start`), not the terminal's: the store and settings come from here
    os.environ.update({**env, TASK_ENV: context.get_task_id() or "", NODE_ENV: context.get_node_id()})
    if Path(cwd).is_dir():  # the launch folder (where relative paths and the default store live), where shared
        os.chdir(cwd)
    return run_unit(*unit_args, singleton_state=singleton_state)


class RayLauncher(Launcher):
    def __init__(self, address: Optional[str] = None, num_cpus: float = 1, num_gpus: float = 0,
                 local_cpus: Optional[int] = None) -> None:
        self.address, self.num_cpus, self.num_gpus, self.local_cpus = address, num_cpus, num_gpus, local_cpus
        self.config: Optional[DictConfig] = None
        self._tracker = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def check(self) -> None:
        """The cluster answers, and one job fits on one of its nodes (the sweeper calls this first)."""
        ray = self._connect()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
        gpus = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
        if self.num_cpus > cpus:
            raise ConfigError(f"hydra.launcher.num_cpus={self.num_cpus:g}: the largest node of the Ray cluster has "
                              f"{cpus:g} CPUs; use hydra.launcher.num_cpus={cpus:g} or fewer")
        if self.num_gpus > gpus:
            raise ConfigError(f"hydra.launcher.num_gpus={self.num_gpus:g}: the largest node of the Ray cluster has "
                              f"{gpus:g} GPUs; use hydra.launcher.num_gpus={gpus:g} or fewer")

    def _connect(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("hydra/launcher=ray needs Ray: pip install 'sweeps[ray]' (make install brings it)"
                              ) from None
        if ray.is_initialized():
            return ray
        where = self.address or os.environ.get("RAY_ADDRESS")
        try:
            from sweeps.train import verbose

            local = {} if where else {"num_cpus": self.local_cpus, "include_dashboard": False}
            # Ray's own lines (its start, its token notice) and the jobs' output stay in Ray's logs unless -v
            ray.init(address=where, logging_level=logging.INFO if verbose() else logging.ERROR,
                     log_to_driver=verbose(), **local)
        except (ConnectionError, RuntimeError, ValueError) as err:
            said = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"hydra.launcher.address={where}: no Ray cluster answers there ({said}); start one "
                              "with `ray start --head`, or leave hydra.launcher.address out for a local Ray") from None
        return ray

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from sweeps.packed.launcher import compose_job

        ray = self._connect()
        assert self.config is not None
        setup_globals()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        composed = [compose_job(self.config, self.hydra_context, list(overrides), initial_job_idx + i)
                    for i, overrides in enumerate(job_overrides)]
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)}
        task = ray.remote(run_task).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)
        state = Singleton.get_state()
        refs = [task.remote(([cfg], self.hydra_context, self.task_function, False), state, env, os.getcwd())
                for cfg in composed]
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log.info("submitted %d job(s) to Ray (%d node(s), %g CPUs)", len(refs), len(nodes),
                 sum(n["Resources"].get("CPU", 0) for n in nodes))
        try:
            return self._wait(ray, refs)
        except BaseException:  # Ctrl-C, SIGTERM, a store that is gone: cancel what we submitted
            self._cancel(ray, refs)
            raise

    def _wait(self, ray: Any, refs: list) -> list[JobReturn]:
        results: dict[int, JobReturn] = {}
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)  # in slices: Ctrl-C is taken at once
            for ref in ready:
                try:
                    results[index[ref]] = ray.get(ref)[0]
                except ray.exceptions.RayError as err:  # the worker died, the node was lost, the task was cancelled
                    results[index[ref]] = self._lost(ref, err)
        return [results[i] for i in range(len(refs))]

    def _lost(self, ref: Any, err: BaseException) -> JobReturn:
        """The job of a task Ray could not finish: its run (if it opened one) FAILED with Ray's reason."""
        from sweeps.tracking import best_effort, connect

        why = f"Ray lost the task ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})"
        log.error(why)
        if self._tracker is None:
            self._tracker = connect(self.config.tracking)
        client = self._tracker.client
        runs = queries.runs_of_task(client, self._tracker.experiment_id, tags.RAY_TASK, ref.task_id().hex(),
                                    status="RUNNING")
        for run in runs:
            best_effort(queries.end_run, client, run.info.run_id, "FAILED", why)
        return JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError(why))

    @staticmethod
    def _cancel(ray: Any, refs: list) -> None:
        """Every task of the sweep cancelled: pending ones never start, running ones are interrupted, and
        killed after CANCEL_WAIT_S if their job has not ended by then (a second Ctrl-C: at once)."""
        for ref in refs:
            ray.cancel(ref, force=False)
        deadline = time.monotonic() + CANCEL_WAIT_S
        left = list(refs)
        try:
            while left and time.monotonic() < deadline:
                _, left = ray.wait(left, num_returns=len(left), timeout=1.0)
        except KeyboardInterrupt:
            pass
        for ref in left:
            ray.cancel(ref, force=True)
