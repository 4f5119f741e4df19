"""`hydra/launcher=slurm` on a real one-node SLURM cluster (tests/slurm_cluster.py: munged, slurmctld
and slurmd started here, no accounting, 2 CPUs): an array read back, a task cancelled with `scancel`,
Ctrl-C with tasks running and pending, and a request the partition can never meet (slow); and the pieces that need no cluster.

Every job asks for one CPU, so two tasks run and the others wait, as on a busy cluster. Every wait
is bounded and every process started here is killed in a `finally`; the cluster is stopped by pid.
"""

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import slurm_cluster
from test_faults_cli import JOBS, _all_runs, _kill, _rows, _wait_for

FAST = ["data=digits", "model.hidden=[8]", "tracking.log_model=false", "hydra/launcher=slurm",
        "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10"]
LONG_JOBS_RUNNING = """select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid
                       where t.key = 'mlflow.runName' and t.value in ('epochs=500', 'epochs=501')
                       and r.status = 'RUNNING'"""
SHORT_JOB_FINISHED = "select 1 from runs where name = 'epochs=1' and status = 'FINISHED'"
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")


@pytest.fixture(scope="module")
def cluster():
    why = slurm_cluster.why_not()
    if why:
        pytest.skip(why)
    started = slurm_cluster.Cluster()
    try:
        yield started.start()
    finally:
        started.stop()


def start(cluster, tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**cluster.env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    return subprocess.Popen([sys.executable, "-m", "sweeps.train", "-m", *FAST, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        _kill(proc)


def array_of(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if "to SLURM as array" in line]
    return line.split()[-1]


def tasks(cluster, array: str) -> dict[str, str]:
    return {i: s for i, s in (line.split("|") for line in cluster.squeue("-r", "-t", "all", "-j", array,
                                                                          "-o", "%i|%T"))}


@pytest.mark.slow
def test_tasks_cancelled_running_or_pending_fail_their_jobs_alone_with_slurms_reason(cluster, tmp_path):
    """4 jobs, 2 running at a time: the terminal says so, in one line per change and no sacct noise.
    With both CPUs held by the two long jobs, `scancel` of a pending task (its job never opened a
    run) and of one long task: each job ends FAILED with SLURM's state, the short job still runs and
    finishes; then the other long task is cancelled too."""
    db = tmp_path / "mlflow.db"
    proc = start(cluster, tmp_path, "epochs=500,501,1,2")
    try:
        _wait_for(lambda: len(_rows(db, LONG_JOBS_RUNNING)) == 2, 240, proc, "both long jobs running")
        slurm_job = dict(_rows(db, "select r.name, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
                                   "where t.key = 'sweeps.slurm_job'"))
        array = slurm_job["epochs=500"].split("_")[0]
        pending = f"{array}_3"  # epochs=2: waits for a CPU the long jobs hold
        assert tasks(cluster, pending) == {pending: "PENDING"}
        subprocess.run(["scancel", pending], env=cluster.env, check=True)
        subprocess.run(["scancel", slurm_job["epochs=500"]], env=cluster.env, check=True)
        _wait_for(lambda: _rows(db, SHORT_JOB_FINISHED), 240, proc, "the short job finished on the freed CPU")
        subprocess.run(["scancel", slurm_job["epochs=501"]], env=cluster.env, check=True)
        out, err = finish(proc)
    finally:
        _kill(proc)
    assert proc.returncode == 1, err[-3000:]
    assert "1 job(s) finished, 3 failed" in err, err[-3000:]
    for name in ("epochs=500", "epochs=501"):
        assert f"FAILED {name}: SLURM ended task {slurm_job[name]}: CANCELLED" in err, err[-3000:]
    # SLURM keeps no record of a task cancelled while pending beside others of its array: the queue says no more
    assert f"FAILED epochs=2: SLURM ended task {pending}: gone from the queue before it started" in err, err[-3000:]
    assert err.count("sacct") <= 1 and "Bypassing" not in err + out
    progress = [line for line in out.splitlines() if "pending on SLURM" in line]
    assert any("2 running, 2 pending on SLURM" in line for line in progress), out[-3000:]
    assert len(progress) == len(set(line.split("] ", 1)[1] for line in progress)), "a line per change, not per poll"
    _, runs = _all_runs(tmp_path)
    jobs = {r.info.run_name: r for r in runs if r.data.tags["sweeps.kind"] == "job"}
    assert sorted(jobs) == ["epochs=1", "epochs=2", "epochs=500", "epochs=501"]
    assert jobs["epochs=1"].info.status == "FINISHED"
    for name in ("epochs=2", "epochs=500", "epochs=501"):
        assert jobs[name].info.status == "FAILED" and jobs[name].data.tags["sweeps.error"].startswith(
            "SLURM ended task"), name
    assert jobs["epochs=2"].data.tags["sweeps.error"] == f"SLURM ended task {pending}: gone from the queue before it started"
    assert not [s for s in tasks(cluster, array).values() if s in ACTIVE]
    assert not _rows(db, "select 1 from runs where status = 'RUNNING'")


@pytest.mark.slow
def test_a_requeued_task_continues_after_its_last_saved_epoch_in_the_same_run(cluster, tmp_path):
    """`scontrol requeue` of a running task (what preemption does): SIGTERM, back to the queue, started
    again; the job goes on from its checkpoint in its own run: every epoch logged once, one run."""
    proc = start(cluster, tmp_path, "epochs=200")
    try:
        saved = _wait_for(lambda: list(tmp_path.glob("multirun/*/*/.checkpoints/0.npz")), 240, proc, "a checkpoint")
        ((task,),) = _rows(tmp_path / "mlflow.db", "select value from tags where key = 'sweeps.slurm_job'")
        subprocess.run(["scontrol", "requeue", task], env=cluster.env, check=True)
        # SLURM holds a requeued task back for 2 minutes (BeginTime); let it start at once
        _wait_for(lambda: tasks(cluster, task).get(task) == "PENDING", 120, proc, "the task back in the queue")
        subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], env=cluster.env, check=True)
        out, err = finish(proc)
    finally:
        _kill(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "1 job(s) finished, 0 failed" in err and f"SLURM requeued task {task}" in out, out[-2000:]
    _, runs = _all_runs(tmp_path)
    (job,) = [r for r in runs if r.data.tags["sweeps.kind"] == "job"]
    said = "".join(p.read_text() for p in tmp_path.glob("multirun/*/*/.submitit/*/*_log.err"))
    assert f"continues run {job.info.run_id} after epoch" in said, said[-2000:]  # the task's own stderr
    assert job.info.status == "FINISHED" and int(job.data.tags["sweeps.continued_at_epoch"]) >= 1
    steps = sorted(m.step for m in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(
        job.info.run_id, "val_loss"))
    assert steps == list(range(1, 201)), "every epoch once"
    assert not saved[0].exists()


@pytest.mark.slow
def test_ctrl_c_cancels_the_running_and_the_pending_tasks(cluster, tmp_path):
    """Ctrl-C with 2 tasks running and 2 pending: nothing of the array is left in the queue, nothing
    RUNNING in the store, and the last line counts what happened: 2 stopped, 2 not started."""
    db = tmp_path / "mlflow.db"
    proc = start(cluster, tmp_path, "epochs=500", "seed=0,1,2,3")
    try:
        _wait_for(lambda: len([r for r in _rows(db, JOBS) if r[1] == "RUNNING"]) == 2, 240, proc, "2 jobs running")
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc, timeout=200)
    finally:
        _kill(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "0 job(s) finished, 0 failed, 2 stopped, 2 not started" in err, err[-2000:]
    array = array_of(out)
    left = tasks(cluster, array)
    assert left and not [s for s in left.values() if s in ACTIVE], left
    assert not _rows(db, "select 1 from runs where status = 'RUNNING'")
    assert sorted(s for (s,) in _rows(db, "select status from runs")) == ["KILLED"] * 3  # 2 jobs and the sweep


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("hydra.launcher.cpus_per_task=4", "error: hydra.launcher.cpus_per_task=4: partition debug's nodes have 2 CPUs; "
                                       "use hydra.launcher.cpus_per_task=2 or fewer"),
    ("hydra.launcher.gpus_per_task=1", "error: hydra.launcher: SLURM refuses this request (Invalid generic resource "
                                       "(gres) specification): check partition=debug"),
], ids=["cpus-sinfo", "gpus-test-only"])
def test_a_request_the_partition_cannot_meet_is_one_line_and_submits_nothing(cluster, tmp_path, override, message):
    """The shipped example's 4 CPUs on nodes of 2 (seen by sinfo), a GPU on a node without (sbatch
    --test-only): one line naming the key, exit 2, nothing queued, nothing written to the store."""
    before = cluster.squeue("-t", "all", "-o", "%i")
    proc = start(cluster, tmp_path, "epochs=1", override)
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 2, err[-2000:]
    (line,) = err.strip().splitlines()
    assert line.startswith(message), line
    assert cluster.squeue("-t", "all", "-o", "%i") == before
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.parametrize("limit, expected", [("30:00", 30), ("1:30:00", 90), ("2-00:00:00", 2880), ("infinite", None),
                                             ("UNLIMITED", None), ("5", 5)])
def test_slurm_time_limits_read_as_minutes(limit, expected):
    from sweeps.sweeping.slurm import minutes

    assert minutes(limit) == expected


# squeue's (state, start) for one task, poll by poll, as this cluster printed them
_REQUEUED_PENDING_SEEN = [("PENDING", "N/A"), ("RUNNING", "T50"), ("RUNNING", "T50"), ("COMPLETING", "T57"),
                          ("PENDING", "T57"), ("RUNNING", "T58"), ("RUNNING", "T58")]
# CI's: the PENDING fell between two polls, and COMPLETING already showed the next start
_REQUEUED_PENDING_MISSED = [("RUNNING", "T50"), ("COMPLETING", "T58"), ("RUNNING", "T58"), ("COMPLETING", "T58")]
_NOT_REQUEUED = [("PENDING", "N/A"), ("CONFIGURING", "T50"), ("RUNNING", "T50"), ("RUNNING", "T50"),
                 ("COMPLETING", "T50"), ("COMPLETED", "T50")]


@pytest.mark.parametrize("polls, requeued_at", [(_REQUEUED_PENDING_SEEN, [4]), (_REQUEUED_PENDING_MISSED, [2]),
                                                (_NOT_REQUEUED, [])])
def test_a_requeue_is_told_once_whichever_of_its_states_the_polls_see(polls, requeued_at):
    from sweeps.sweeping.slurm import Requeues

    requeues = Requeues()
    assert [n for n, (state, start) in enumerate(polls) if requeues.seen("7_0", state, start)] == requeued_at


def test_submitits_sacct_warnings_become_one_line_and_other_lines_pass(caplog):
    from sweeps.sweeping.slurm import QuietSacct

    logger = logging.getLogger("submitit.test")
    quiet = QuietSacct()
    logger.addFilter(quiet)
    try:
        with caplog.at_level(logging.INFO, logger="submitit.test"):
            for call in range(5):
                logger.warning("Call #%d - Bypassing sacct error Command '['sacct', ...]' returned non-zero exit "
                               "status 1., status may be inaccurate.", call)
            logger.info("Submitted job 7")
    finally:
        logger.removeFilter(quiet)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["sacct does not answer on this cluster (no accounting database): task states come from "
                        "squeue; -v shows submitit's messages", "Submitted job 7"]
