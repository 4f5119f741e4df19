"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, made to behave on a real cluster.

    python -m sweeps.train -m reg=l1,l2 hydra/launcher=slurm hydra.launcher.partition=debug

Each job is one task of one SLURM array, submitted by submitit as upstream does; around it:

- **Before submitting**, the request is checked against the partition (`sinfo`): an unknown
  partition, more CPUs or memory than its nodes have, or more time than it allows is one line naming
  the key (`hydra.launcher.cpus_per_task=4: partition debug's nodes have 2 CPUs`), exit 2; then
  `sbatch --test-only` gives SLURM's own word on the rest (a constraint or gres no node has).
- **While the array runs** this process reads the queue itself (`squeue`, every `POLL_S`), not
  `sacct`: clusters without an accounting database (common on small ones) make submitit warn on
  every poll; those warnings become one line (`-v` shows them all). The terminal says how many
  tasks run and wait (`2 running, 2 pending on SLURM`) whenever that changes. A task pending for a
  reason that never clears (`PartitionConfig`, ...) cancels the array and fails the sweep in one line.
- **A task SLURM ends** (`scancel` of one task, its time limit, a node lost) ends its run FAILED with
  SLURM's state (the run is found by the `sweeps.slurm_job` tag every job run carries on SLURM); the
  other tasks go on, and a rerun resumes.
- **A task SLURM requeues** (preemption, `scontrol requeue`, submitit's requeue at the time limit)
  is said once; it starts again and continues after its last finished epoch, in the same run
  (`sweeps.training.checkpoint`: every job inside a SLURM task saves its state each epoch).
- **Ctrl-C or SIGTERM** on this process cancels the array (running and pending tasks), then waits
  until no task runs, so the sweep's own clean-up (`parent.run`) finds every run closed or closes it
  KILLED: a cancelled task gets SIGTERM, which a job turns into KeyboardInterrupt (`interrupts`).
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from sweeps.tracking import queries, tags
from sweeps.errors import ConfigError

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often the queue is read while the array runs
CANCEL_WAIT_S = 120.0  # after cancelling: how long to wait for running tasks to end (SLURM's KillWait, then SIGKILL)
LOST_S = 30.0  # a task gone from the queue without a result: how long its result file gets to appear (slow NFS)
NO_RUN_S = 10.0  # a task SLURM ended with no run in the store: how long its job gets to open one on its way out
# Pending reasons that never clear by waiting: the request exceeds what the partition or account allows.
NEVER = ("PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount",
         "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "QOSMaxWallDurationPerJobLimit",
         "AssocMaxCpuPerJobLimit", "AssocMaxWallDurationPerJobLimit", "ReqNodeNotAvail, UnavailableNodes:")
ENDED = ("CANCELLED", "TIMEOUT", "FAILED", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
SACCT = "Bypassing sacct error"


def minutes(limit: str) -> Optional[float]:
    """SLURM's time format (`30:00`, `1-12:00:00`, `infinite`) in minutes (None: no limit)."""
    if limit in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    h, m, s = ([0.0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0.0, parts[0], 0.0)
    return (float(days or 0) * 24 + h) * 60 + m + s / 60


def _cli(*command: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ConfigError(f"hydra/launcher=slurm: `{command[0]}` not found: run the sweep where SLURM's commands "
                          "are (a login node), or pick another hydra/launcher") from None


def check_request(params: dict) -> None:
    """One line naming the key when the partition can never run a task of this size."""
    partition = params.get("partition")
    args = ["sinfo", "-h", "-o", "%P|%c|%m|%l"] + (["-p", partition] if partition else [])
    out = _cli(*args)
    rows = [line.split("|") for line in out.stdout.splitlines() if line.count("|") == 3]
    if out.returncode != 0 and "Invalid partition" not in out.stderr:
        said = (out.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise ConfigError(f"hydra/launcher=slurm: sinfo cannot reach the cluster ({said}): run where SLURM's "
                          "commands work (a login node; SLURM_CONF names the cluster's slurm.conf)")
    if not rows:
        known = sorted({line.split("|")[0].rstrip("*") for line in _cli("sinfo", "-h", "-o", "%P|").stdout.split()})
        raise ConfigError(f"hydra.launcher.partition={partition}: no such partition on this cluster "
                          f"(sinfo lists: {', '.join(known) or 'none'})")
    name = rows[0][0].rstrip("*")
    cpus = max(int(r[1].rstrip("+")) for r in rows)
    memory_mb = max(int(re.sub(r"\D", "", r[2]) or 0) for r in rows)
    limits = [minutes(r[3]) for r in rows]
    limit = None if None in limits else max(limits)
    want_cpus = params.get("cpus_per_task") or 1
    if want_cpus * (params.get("tasks_per_node") or 1) > cpus:
        raise ConfigError(f"hydra.launcher.cpus_per_task={want_cpus}: partition {name}'s nodes have {cpus} CPUs; "
                          f"use hydra.launcher.cpus_per_task={cpus} or fewer")
    if params.get("mem_gb") and params["mem_gb"] * 1024 > memory_mb:
        raise ConfigError(f"hydra.launcher.mem_gb={params['mem_gb']}: partition {name}'s nodes have "
                          f"{memory_mb / 1024:.1f} GB; use hydra.launcher.mem_gb={max(1, int(memory_mb / 1024))} or less")
    if params.get("timeout_min") and limit is not None and params["timeout_min"] > limit:
        raise ConfigError(f"hydra.launcher.timeout_min={params['timeout_min']}: partition {name} allows at most "
                          f"{limit:g} minutes; use hydra.launcher.timeout_min={int(limit)} or less")


# Launcher options that are sbatch options of the same name (`cpus_per_task` -> `--cpus-per-task`).
SBATCH_SAME = ("partition", "qos", "account", "comment", "constraint", "exclude", "gres", "nodes", "cpus_per_task",
               "tasks_per_node", "gpus_per_node", "gpus_per_task", "cpus_per_gpu", "mem_per_gpu", "mem_per_cpu")


def test_only(params: dict) -> None:
    """`sbatch --test-only` with the request (nothing is submitted): SLURM's own word on what `sinfo`
    cannot show (a constraint no node has, a gres that does not exist, an account or QOS)."""
    flags = [f"--{k.replace('_', '-')}={params[k]}" for k in SBATCH_SAME if params.get(k) is not None]
    if params.get("mem_gb"):
        flags.append(f"--mem={params['mem_gb']}GB")
    if params.get("timeout_min"):
        flags.append(f"--time={params['timeout_min']}")
    flags += [f"--{k.replace('_', '-')}={v}" for k, v in (params.get("additional_parameters") or {}).items()]
    out = _cli("sbatch", "--test-only", *flags, "--wrap", "true")
    if out.returncode != 0:
        said = (out.stderr.strip().splitlines() or ["no reason given"])[-1].replace("sbatch: error: ", "")
        raise ConfigError(f"hydra.launcher: SLURM refuses this request ({said}): check "
                          f"{', '.join(f.lstrip('-') for f in flags)} against `sinfo -o '%P %c %m %l %f %G'`")


class QuietSacct(logging.Filter):
    """submitit's "Bypassing sacct error" warning (every poll, on a cluster without accounting) as one line."""

    def __init__(self) -> None:
        super().__init__()
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT not in record.getMessage():
            return True
        if self.said:
            return False
        self.said = True
        record.msg, record.args = ("sacct does not answer on this cluster (no accounting database): task states come "
                                   "from squeue; -v shows submitit's messages"), ()
        return True


class Queue:
    """The array's tasks as `squeue` sees them: {task id: (state, reason, start time)}."""

    def __init__(self, array_id: str):
        self.array_id = array_id

    def read(self) -> Optional[dict[str, tuple[str, str, str]]]:
        """None when squeue did not answer (a busy controller): that poll tells nothing about any task."""
        out = _cli("squeue", "-h", "-r", "-t", "all", "-j", self.array_id, "-o", "%i|%T|%S|%r")
        if out.returncode != 0:
            return None
        rows = (line.split("|", 3) for line in out.stdout.splitlines() if line.count("|") >= 3)
        return {task: (state, reason, start) for task, state, start, reason in rows}

    @staticmethod
    def final(task: str) -> tuple[str, str, str]:
        """The state of a task squeue no longer lists, from the controller's record (`scontrol show job`)."""
        out = _cli("scontrol", "-o", "show", "job", task)
        fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f) if out.returncode == 0 else {}
        return fields.get("JobState", ""), fields.get("Reason", ""), fields.get("StartTime", "")

    def cancel(self) -> None:
        """Pending tasks first (so none starts while the running ones end), then the running ones."""
        _cli("scancel", "--state=PENDING", self.array_id)
        _cli("scancel", self.array_id)


class Requeues:
    """Which polls show a task SLURM requeued (preemption, `scontrol requeue`): back in the queue after
    it ran, or running again with another start time; once per requeue."""

    def __init__(self) -> None:
        # task -> its start time while it was seen RUNNING. Only that one: a requeued task shows COMPLETING
        # with its *next* start time already, so after a PENDING that fell between two polls, comparing with
        # the previous poll's start would hide the requeue
        self._started: dict[str, str] = {}

    def seen(self, task: str, state: str, start: str) -> bool:
        again = (state in ("PENDING", "REQUEUED") and self._started.pop(task, None) is not None) or (
            state == "RUNNING" and self._started.get(task, start) != start)
        if state == "RUNNING":
            self._started[task] = start
        return again


class SlurmLauncher(SubmititSlurmLauncher):
    _tracker = None  # the store, connected when a task SLURM ended has a run to close

    def __getstate__(self) -> dict:  # submitit pickles the launcher into every task: not the store's client
        return {k: v for k, v in self.__dict__.items() if k != "_tracker"}

    def check(self) -> None:
        """The request against the partition, before anything is submitted (the sweeper calls this)."""
        check_request(self.params)
        test_only(self.params)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from sweeps.train import verbose

        assert self.config is not None
        submitit_log = logging.getLogger("submitit")
        if not verbose() and not any(isinstance(f, QuietSacct) for f in submitit_log.filters):  # once per process
            submitit_log.addFilter(QuietSacct())
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in queue_keys else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        job_params = []
        # by task index, for a task ended before its job opened a run
        self._jobs = [(list(o), idx) for idx, o in enumerate(job_overrides, start=initial_job_idx)]
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*job_params))
        except (subprocess.CalledProcessError, RuntimeError) as err:  # sbatch's refusal; submitit's FailedSubmissionError
            raise ConfigError(f"hydra/launcher=slurm: sbatch refused the array: {str(err).strip().splitlines()[-1]}"
                              ) from None
        queue = Queue(jobs[0].job_id.split("_")[0])
        log.info("submitted %d job(s) to SLURM as array %s", len(jobs), queue.array_id)
        try:
            return self._wait(jobs, queue)
        except BaseException:  # Ctrl-C, SIGTERM, a job that can never run, a store that is gone: cancel what we submitted
            queue.cancel()
            self._wait_for_the_end(queue)
            raise

    def _wait(self, jobs: list, queue: Queue) -> list[JobReturn]:
        results: dict[int, JobReturn] = {}
        lost_since: dict[int, float] = {}  # task index -> when it was first seen neither queued nor with a result
        ending: dict[int, float] = {}  # task index -> when SLURM was first seen to have ended it
        was: dict[int, tuple] = {}  # task index -> its (state, reason, start) at the previous poll
        requeues = Requeues()
        said = None
        while len(results) < len(jobs):
            states = queue.read()
            if states is None:
                time.sleep(POLL_S)
                continue
            for i, job in enumerate(jobs):
                if i in results:
                    continue
                state, reason, start = states.get(job.job_id, ("", "", ""))
                if not state and not job.paths.result_pickle.exists():  # squeue drops a task cancelled while pending
                    state, reason, start = queue.final(job.job_id)
                before = was.get(i, ("",))[0]
                if requeues.seen(job.job_id, state, start):
                    log.info("SLURM requeued task %s: it starts again, and continues after its last saved epoch "
                             "(sweeps.training.checkpoint)", job.job_id)
                if state:
                    was[i] = (state, reason, start)
                if state in ENDED:  # even with a result file: a task cancelled mid-job ended its run KILLED itself
                    ended = self._ended_by_slurm(job, i, state, reason, ending.setdefault(i, time.monotonic()))
                    if ended is not None:
                        results[i] = ended
                    continue
                if job.paths.result_pickle.exists():
                    results[i] = self._result(job)
                    continue
                if state == "PENDING" and reason.startswith(NEVER):
                    raise ConfigError(f"hydra/launcher=slurm: SLURM will never start task {job.job_id} "
                                      f"(pending: {reason}); check hydra.launcher.partition, cpus_per_task, "
                                      "mem_gb and timeout_min against `sinfo -o '%P %c %m %l'`")
                if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"):
                    lost_since.pop(i, None)
                    continue
                if not state and before == "PENDING":  # a task cancelled while pending can leave no record at all
                    ended = self._ended_by_slurm(job, i, "gone from the queue before it started", reason,
                                                 ending.setdefault(i, time.monotonic()))
                    if ended is not None:
                        results[i] = ended
                    continue
                # ended without a result, or gone from the queue: give the result file a moment to appear
                if time.monotonic() - lost_since.setdefault(i, time.monotonic()) > LOST_S:
                    ended = self._ended_by_slurm(job, i, state or "gone from the queue without a result", reason,
                                                 ending.setdefault(i, time.monotonic()))
                    if ended is not None:
                        results[i] = ended
            counts = {s: sum(1 for j in jobs if states.get(j.job_id, ("",))[0] == s) for s in ("RUNNING", "PENDING")}
            line = f"{counts['RUNNING']} running, {counts['PENDING']} pending on SLURM (array {queue.array_id})"
            if len(results) < len(jobs) and line != said and any(counts.values()):
                log.info(line)
                said = line
            if len(results) < len(jobs):
                time.sleep(POLL_S)
        return [results[i] for i in range(len(jobs))]

    @staticmethod
    def _result(job: Any) -> JobReturn:
        error = job.exception()
        if error is None:
            return job.results()[0]
        return JobReturn(status=JobStatus.FAILED, _return_value=error)

    def _ended_by_slurm(self, job: Any, index: int, state: str, reason: str, since: float) -> Optional[JobReturn]:
        """The run of a task SLURM ended (scancel, time limit, node lost) closed FAILED with SLURM's state
        (a task ended before its job opened a run: a FAILED run saying so); None while that run is
        still RUNNING and its job may yet close it, or none is there yet (asked again at the next poll)."""
        from sweeps.tracking import best_effort, connect

        if self._tracker is None:
            self._tracker = connect(self.config.tracking)
        client, experiment = self._tracker.client, self._tracker.experiment_id
        runs = queries.runs_of_task(client, experiment, tags.SLURM_JOB, job.job_id, not_status="FINISHED")
        # SIGTERM from SLURM makes the job end its own run KILLED ("interrupted") on its way out; wait for
        # that (bounded: a task SIGKILLed or on a lost node never writes), then say what really ended it
        if any(r.info.status == "RUNNING" for r in runs) and time.monotonic() - since < CANCEL_WAIT_S:
            return None
        if not runs and time.monotonic() - since < NO_RUN_S:  # a job on its way out may still be opening its run
            return None
        why = f"SLURM ended task {job.job_id}: {state}" + (f" ({reason})" if reason and reason != "None" else "")
        log.error(why)
        for run in runs:
            best_effort(queries.end_run, client, run.info.run_id, "FAILED", why)
        if not runs and not queries.runs_of_task(client, experiment, tags.SLURM_JOB, job.job_id, limit=1):
            best_effort(self._record_without_run, *self._jobs[index], why)  # cancelled while pending, say
        return JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError(why))

    def _record_without_run(self, overrides: list[str], number: int, why: str) -> None:
        """A FAILED run under the sweep for a job whose task SLURM ended before the job opened one."""
        from sweeps.packed.launcher import compose_job
        from sweeps.training.context import JobContext, task_config
        from sweeps.backends import import_keras

        cfg = compose_job(self.config, self.hydra_context, overrides, number, announce=False)
        # the job's identity is decided in `sweeps.training.job`, which imports Keras: on the sweep's own
        # backend (a JAX sweep's launcher imports no TensorFlow), without its banner
        import_keras(task_config(cfg).backend)
        from sweeps.training import job as jobs

        jobs.record_failure(task_config(cfg), JobContext.of(cfg.hydra), RuntimeError(why), why)

    @staticmethod
    def _wait_for_the_end(queue: Queue) -> None:
        deadline = time.monotonic() + CANCEL_WAIT_S
        said = False
        while time.monotonic() < deadline:
            try:
                states = queue.read()
                active = ["?"] if states is None else [t for t, (s, *_) in states.items()
                                                       if s in ("RUNNING", "COMPLETING", "PENDING")]
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting (SLURM still ends them)
                return
            if not active:
                return
            if not said:
                log.info("cancelled array %s: waiting for its %d task(s) to end", queue.array_id, len(active))
                said = True
            time.sleep(POLL_S)
