"""Sweeps spread over worker processes by Hydra's own launcher plugins (slow).

joblib (loky workers reused across jobs) and submitit_local (every job a pickled call in a fresh
process, the code path of a SLURM cluster) against a real SQLite store: one parent, every job
nested under it, the report on the parent; a job failing inside a worker fails alone; Ctrl-C with
workers running leaves nothing RUNNING and no worker behind; a worker killed with SIGKILL fails
only the jobs it took down; a rerun resumes. Every wait is bounded; every process is killed in a
`finally`.
"""

from __future__ import annotations

import csv
import json
import signal
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from conftest import SEED_SWEEP
from test_faults_cli import JOBS, _env, _kill, _rows, _wait_for, run_cli, start_cli

pytestmark = pytest.mark.slow

FAST = ["data=digits", "model.hidden=[16]", "tracking.log_model=false", "batch_size=64"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def _sweep_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags["sweeps.kind"] == "sweep"]
    jobs = [r for r in runs if r.data.tags["sweeps.kind"] == "job"]
    return client, parents, jobs


def _contents(client, run) -> tuple:
    """What a job run holds, without values that differ from run to run (ids, timings)."""
    metrics = set(run.data.metrics)
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    params = {k: v for k, v in run.data.params.items() if k != "tracking.uri"}
    return run.info.run_name, metrics, artifacts, tuple(sorted(params.items()))


def test_joblib_two_workers_run_the_same_sweep_as_the_basic_launcher_and_resume(tmp_path, seed_sweep):
    """The session's `seed_sweep` (tests/conftest.py) is the same command on the basic launcher."""
    grid = ["-m", *SEED_SWEEP]
    joblib_dir = tmp_path / "joblib"
    joblib_dir.mkdir()
    # two GPUs (as far as the variable goes: TensorFlow finds none here): each worker sees one of its own
    parallel = run_cli(joblib_dir, *grid, *JOBLIB, env=_env(joblib_dir, CUDA_VISIBLE_DEVICES="0,1"))
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert "4 job(s) finished, 0 failed" in parallel.stderr
    client, (parent,), jobs = _sweep_runs(joblib_dir)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 4
    assert len(jobs) == 4 and all(j.info.status == "FINISHED" for j in jobs)
    assert all(j.data.tags["mlflow.parentRunId"] == parent.info.run_id for j in jobs)
    assert len({j.data.tags["sweeps.pid"] for j in jobs}) == 2, "two worker processes, each reused"
    assert parent.data.tags["sweeps.pid"] not in {j.data.tags["sweeps.pid"] for j in jobs}
    seen = {(j.data.tags["sweeps.pid"], j.data.tags["sweeps.cuda_visible_devices"]) for j in jobs}
    assert sorted(device for _, device in seen) == ["0", "1"], seen  # one GPU per worker, for all its jobs
    assert parent.data.tags["sweeps.cuda_visible_devices"] == "0,1"  # the launching process sees both
    rows = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "comparison.csv"))))
    assert sorted(r["reg"] for r in rows) == ["l1", "l2"] and [r["n"] for r in rows] == ["2", "2"]  # over seed 0, 1
    basic_client = seed_sweep["client"]
    basic_jobs = [r for r in basic_client.search_runs([basic_client.get_experiment_by_name("sweeps").experiment_id])
                  if r.data.tags["sweeps.kind"] == "job"]
    assert len(basic_jobs) == 4
    assert (sorted(_contents(client, j) for j in jobs) == sorted(_contents(basic_client, j) for j in basic_jobs))
    for key in ("loss", "val_loss", "hidden_0/sparsity"):
        assert all(len(client.get_metric_history(j.info.run_id, key)) == 2 for j in jobs), key

    again = run_cli(joblib_dir, *grid, *JOBLIB)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 job(s) finished, 0 failed (4 finished earlier and not retrained" in again.stderr
    _, parents, jobs = _sweep_runs(joblib_dir)
    assert len(jobs) == 8 and sum("sweeps.resumed_from" in j.data.tags for j in jobs) == 4


def test_submitit_local_jobs_in_fresh_processes_and_a_failing_job_fails_alone(tmp_path):
    proc = run_cli(tmp_path, "-m", "optimizer=sgd", "optimizer.lr=0.01,1e12", "epochs=2", *FAST,
                   "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 job(s) finished, 1 failed" in proc.stderr
    assert "FAILED optimizer.lr=1e12: DivergedError: training diverged" in proc.stderr
    client, (parent,), jobs = _sweep_runs(tmp_path)
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_failed"] == 1
    assert sorted(j.info.status for j in jobs) == ["FAILED", "FINISHED"]
    assert all(j.data.tags["mlflow.parentRunId"] == parent.info.run_id for j in jobs)
    pids = {j.data.tags["sweeps.pid"] for j in jobs}
    assert len(pids) == 2 and parent.data.tags["sweeps.pid"] not in pids, "one fresh process per job"
    table = open(client.download_artifacts(parent.info.run_id, "comparison.csv")).read().splitlines()
    assert len(table) == 3


def _running_jobs(db, n):
    """At least `n` job runs RUNNING that have logged an epoch."""
    rows = [r for r in _rows(db, JOBS) if r[1] == "RUNNING"]
    started = [r for r in rows if _rows(db, "select 1 from metrics where run_uuid = ? and key = 'loss'", r[0])]
    return started if len(started) >= n else None


def test_ctrl_c_with_two_workers_running_ends_everything_killed_and_stops_the_workers(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = start_cli(tmp_path, "-m", "seed=0,1,2,3", "epochs=500", *FAST, *JOBLIB)
    try:
        _wait_for(lambda: _running_jobs(db, 2), 180, proc, "two jobs training in two workers")
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "the workers are child processes of the launcher"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        _kill(proc)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted (SIGINT)" in stderr and "Traceback" not in stderr
    _, (parent,), jobs = _sweep_runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert sorted(j.info.status for j in jobs) == ["KILLED", "KILLED"], "no third job started"
    deadline = time.monotonic() + 30
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], "workers left behind"


def _kill_a_worker_while_training(tmp_path, args: list[str], training: int, signum: int = signal.SIGKILL):
    """`-m ARGS`; once `training` jobs are training, the worker of the first gets `signum` (SIGKILL).
    Returns (the finished process, the running jobs seen, the killed pid, stderr)."""
    db = tmp_path / "mlflow.db"
    proc = start_cli(tmp_path, "-m", *args)
    try:
        running = _wait_for(lambda: _running_jobs(db, training), 180, proc, f"{training} jobs training")
        (pid,) = _rows(db, "select value from tags where run_uuid = ? and key = 'sweeps.pid'", running[0][0])[0]
        psutil.Process(int(pid)).send_signal(signum)
        _, stderr = proc.communicate(timeout=300)
    finally:
        _kill(proc)
    return proc, running, pid, stderr


def test_a_worker_killed_with_sigkill_fails_the_jobs_it_took_down_and_the_rest_run(tmp_path):
    """Two long jobs in two workers, two short ones queued; one worker is killed with SIGKILL.

    loky then stops its whole pool, so both running jobs end FAILED (their processes are gone);
    the two queued jobs never started and are launched again.
    """
    proc, running, _, stderr = _kill_a_worker_while_training(tmp_path, ["epochs=400,401,1,2", *FAST, *JOBLIB], 2)
    assert proc.returncode == 1, stderr[-3000:]
    _, (parent,), jobs = _sweep_runs(tmp_path)
    by_name = {j.info.run_name: j for j in jobs}
    assert parent.info.status == "FAILED" and not [j for j in jobs if j.info.status == "RUNNING"]
    assert by_name["epochs=1"].info.status == by_name["epochs=2"].info.status == "FINISHED"
    killed = by_name[next(j.info.run_name for j in jobs if j.info.run_id == running[0][0])]
    assert killed.info.status == "FAILED" and "died while the sweep ran" in killed.data.tags["sweeps.error"]
    assert "2 job(s) finished, 2 failed" in stderr


def test_a_worker_stopped_with_sigterm_fails_only_what_a_dead_worker_fails(tmp_path):
    """Issue 20 §3: SIGTERM to one joblib worker (an admin's `kill`, a scheduler) came back to the
    launching process as the worker's KeyboardInterrupt and ended the whole sweep KILLED (the queued
    jobs never started). The launching process was not interrupted: it is a worker that died, as
    with SIGKILL: the jobs it took down FAILED with the reason, the queued ones launched again."""
    proc, running, _, stderr = _kill_a_worker_while_training(tmp_path, ["epochs=400,401,1,2", *FAST, *JOBLIB], 2,
                                                             signal.SIGTERM)
    assert proc.returncode == 1, stderr[-3000:]
    assert "interrupted" not in stderr.splitlines()[-1]
    _, (parent,), jobs = _sweep_runs(tmp_path)
    by_name = {j.info.run_name: j for j in jobs}
    assert parent.info.status == "FAILED" and not [j for j in jobs if j.info.status == "RUNNING"], stderr[-3000:]
    assert by_name["epochs=1"].info.status == by_name["epochs=2"].info.status == "FINISHED"
    stopped = by_name[next(j.info.run_name for j in jobs if j.info.run_id == running[0][0])]
    assert stopped.info.status == "FAILED" and "SIGTERM" in stopped.data.tags["sweeps.error"], stopped.data.tags
    assert "2 job(s) finished, 2 failed" in stderr


def test_workers_end_when_their_launching_process_is_killed(tmp_path):
    """Issue 20 §3: SIGKILL to the launching process of a joblib sweep left its two workers training
    on for minutes (0.9 GB each on Fashion-MNIST), their runs RUNNING. Its guard (sweeps.guard) stops
    them: each ends its run KILLED saying why, and the parent is closed FAILED, within seconds."""
    db = tmp_path / "mlflow.db"
    proc = start_cli(tmp_path, "-m", "epochs=400,401", *FAST, *JOBLIB)
    try:
        running = _wait_for(lambda: _running_jobs(db, 2), 180, proc, "2 jobs training")
        pids = [int(_rows(db, "select value from tags where run_uuid = ? and key = 'sweeps.pid'", r[0])[0][0])
                for r in running]
        assert proc.pid not in pids, "premise: the jobs train in worker processes"
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        _kill(proc)
    workers = [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)]
    _, alive = psutil.wait_procs(workers, timeout=90)
    for worker in alive:
        worker.kill()
    assert not alive, "the orphaned workers ended"
    deadline = time.monotonic() + 60
    while _rows(db, "select 1 from runs where status = 'RUNNING'") and time.monotonic() < deadline:
        time.sleep(0.5)
    _, (parent,), jobs = _sweep_runs(tmp_path)
    assert parent.info.status == "FAILED" and "closed at once by its guard" in parent.data.tags["sweeps.error"]
    assert sorted(j.info.status for j in jobs) == ["KILLED", "KILLED"], [j.data.tags.get("sweeps.error") for j in jobs]
    assert all("launching process" in j.data.tags["sweeps.error"] for j in jobs)


def test_a_packed_worker_killed_with_sigkill_fails_its_members_and_the_queued_pack_runs(tmp_path):
    """The same with `hydra/launcher=packed hydra.launcher.n_jobs=2`: two long packs of two members
    in two workers, a short pack queued; one worker is killed. Its members end FAILED, the other
    pack's run ends with its pool; the queued pack never started and is launched again, packed."""
    packed = ["epochs=400,401,1", "seed=0,1", *FAST, "hydra/launcher=packed", "hydra.launcher.n_jobs=2"]
    proc, _, pid, stderr = _kill_a_worker_while_training(tmp_path, packed, 4)
    assert proc.returncode == 1, stderr[-3000:]
    _, (parent,), jobs = _sweep_runs(tmp_path)
    assert len(jobs) == 6 and parent.info.status == "FAILED", stderr[-3000:]
    killed = [j for j in jobs if j.data.tags["sweeps.pid"] == pid]
    assert len(killed) == 2 and all(j.info.status == "FAILED" for j in killed)
    assert all("died while the sweep ran" in j.data.tags["sweeps.error"] for j in killed)
    by_epochs = {e: [j for j in jobs if j.data.params["epochs"] == e] for e in ("1", "400", "401")}
    assert all(j.info.status in ("FAILED", "KILLED") for e in ("400", "401") for j in by_epochs[e])
    relaunched = by_epochs["1"]
    assert [j.info.status for j in relaunched] == ["FINISHED", "FINISHED"]
    assert all(json.loads(j.data.tags["sweeps.packed_with"]) for j in relaunched), "still one pack"
    assert {j.data.tags["sweeps.pid"] for j in relaunched}.isdisjoint({pid}), "in a new worker"
    assert "2 job(s) finished, 4 failed" in stderr
