"""`hydra/launcher=ray` on a real two-node Ray cluster (tests/ray_cluster.py: `ray start --head` and a
second `ray start --address=...`, one CPU each, as processes of their own): jobs spread over both
nodes, a worker SIGKILLed fails only its job, Ctrl-C cancels the running and the pending tasks; and
a local Ray started by the sweep itself.

Every wait is bounded and every process started here is killed in a `finally`; the cluster is
stopped by session.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

import ray_cluster
from test_faults_cli import JOBS, _all_runs, _kill, _rows, _wait_for

pytestmark = pytest.mark.slow

FAST = ["data=digits", "model.hidden=[8]", "tracking.log_model=false", "hydra/launcher=ray"]
LONG_JOB_RUNNING = """select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid
                      where t.key = 'mlflow.runName' and t.value = 'epochs=500' and r.status = 'RUNNING'
                      and exists (select 1 from metrics m where m.run_uuid = r.run_uuid and m.key = 'loss')"""


@pytest.fixture(scope="module")
def cluster():
    why = ray_cluster.why_not()
    if why:
        pytest.skip(why)
    started = ray_cluster.Cluster()
    try:
        yield started.start()
    finally:
        started.stop()


def start(tmp_path, *args: str) -> subprocess.Popen:
    env = {**ray_cluster.ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "sweeps.train", "-m", *FAST, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        _kill(proc)


def jobs_of(tmp_path) -> dict:
    _, runs = _all_runs(tmp_path)
    return {r.info.run_name: r for r in runs if r.data.tags["sweeps.kind"] == "job"}


def test_jobs_spread_over_both_nodes_and_a_killed_worker_fails_its_job_alone(cluster, tmp_path):
    db = tmp_path / "mlflow.db"
    proc = start(tmp_path, "epochs=1,2,3,500", f"hydra.launcher.address={cluster.address}")
    try:
        long_job = _wait_for(lambda: _rows(db, LONG_JOB_RUNNING), 300, proc, "the long job training")[0][0]
        ((pid,),) = _rows(db, "select value from tags where run_uuid = ? and key = 'sweeps.pid'", long_job)
        os.kill(int(pid), signal.SIGKILL)  # its Ray worker, as the OOM killer would
        out, err = finish(proc)
    finally:
        _kill(proc)
    assert proc.returncode == 1, err[-3000:]
    assert "3 job(s) finished, 1 failed" in err and "FAILED epochs=500: Ray lost the task" in err, err[-3000:]
    assert "submitted 4 job(s) to Ray (2 node(s), 2 CPUs)" in out, out[-2000:]
    jobs = jobs_of(tmp_path)
    assert sorted(jobs) == ["epochs=1", "epochs=2", "epochs=3", "epochs=500"]
    assert [jobs[f"epochs={n}"].info.status for n in (1, 2, 3)] == ["FINISHED"] * 3
    killed = jobs["epochs=500"]
    assert killed.info.status == "FAILED" and killed.data.tags["sweeps.error"].startswith("Ray lost the task")
    assert len({r.data.tags["sweeps.ray_node"] for r in jobs.values()}) == 2, "both nodes ran jobs"
    assert len({r.data.tags["sweeps.ray_task"] for r in jobs.values()}) == 4
    assert not _rows(db, "select 1 from runs where status = 'RUNNING'")


def test_ctrl_c_cancels_the_running_and_the_pending_tasks(cluster, tmp_path):
    db = tmp_path / "mlflow.db"
    proc = start(tmp_path, "epochs=500", "seed=0,1,2,3", f"hydra.launcher.address={cluster.address}")
    try:
        _wait_for(lambda: len([r for r in _rows(db, JOBS) if r[1] == "RUNNING"]) == 2, 300, proc, "2 jobs running")
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc, timeout=200)
    finally:
        _kill(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "0 job(s) finished, 0 failed, 2 stopped, 2 not started" in err, err[-2000:]
    assert sorted(s for (s,) in _rows(db, "select status from runs")) == ["KILLED"] * 3  # 2 jobs and the sweep
    time.sleep(5)  # a pending task that was not cancelled would start now, on a CPU the cancelled ones freed
    assert len(_rows(db, "select 1 from runs")) == 3 and not _rows(db, "select 1 from runs where status = 'RUNNING'")


def test_a_sweep_without_an_address_starts_a_local_ray_and_an_impossible_request_is_one_line(tmp_path):
    proc = start(tmp_path, "reg=l1,l2", "epochs=1", "hydra.launcher.local_cpus=2")
    out, err = finish(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "2 job(s) finished, 0 failed" in err and "submitted 2 job(s) to Ray (1 node(s), 2 CPUs)" in out
    jobs = jobs_of(tmp_path)
    assert sorted(r.info.status for r in jobs.values()) == ["FINISHED"] * 2
    assert {r.data.tags["sweeps.pid"] for r in jobs.values()}.isdisjoint({str(proc.pid)}), "in Ray's workers"

    bad = tmp_path / "bad"
    bad.mkdir()
    proc = start(bad, "epochs=1", "hydra.launcher.local_cpus=1", "hydra.launcher.num_cpus=4")
    out, err = finish(proc)
    assert proc.returncode == 2, err[-2000:]
    assert not list(bad.iterdir()), "nothing written"
    assert err.strip() == ("error: hydra.launcher.num_cpus=4: the largest node of the Ray cluster has 1 CPUs; "
                           "use hydra.launcher.num_cpus=1 or fewer"), err[-2000:]
