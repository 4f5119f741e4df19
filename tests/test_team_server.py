"""A team store for real: a throwaway PostgreSQL cluster (Debian's `postgresql`, `initdb` + `pg_ctl`
on a free port), `mlflow server` on it with proxied artifacts, and a parallel sweep through
MLFLOW_TRACKING_URI=http://127.0.0.1:<port>, read back through the server's REST API (slow)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from sweeps import server
from test_faults_cli import _free_port, _healthy, run_cli

pytestmark = pytest.mark.slow


_postgres_missing = server.postgres_missing


@pytest.fixture
def postgres():
    """A fresh cluster in a folder the postgres user can reach; always stopped and removed."""
    folder = Path(tempfile.mkdtemp(prefix="sweeps-pg-"))
    folder.chmod(0o755)
    db = server.Postgres(folder / "data", _free_port())
    try:
        db.init()
        db.start()
        yield db
    finally:
        db.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _api(url: str, path: str, body: dict = None) -> dict:
    if body is None:
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}")
    else:
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.skipif(bool(_postgres_missing()), reason=_postgres_missing() or "PostgreSQL present")
def test_a_parallel_sweep_through_mlflow_server_on_postgresql(tmp_path, postgres):
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = server.mlflow_server(postgres.url, tmp_path / "artifacts", "127.0.0.1", port, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        work = tmp_path / "work"
        work.mkdir()
        sweep = run_cli(work, "-m", "reg=l1,l2", "data=digits", "epochs=2", "model.hidden=[16]",
                        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                        env={**os.environ, "MLFLOW_TRACKING_URI": url})
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        assert not (work / "mlruns").exists(), "nothing went to a local store"

        experiment = _api(url, "experiments/get-by-name?experiment_name=sweeps")["experiment"]["experiment_id"]
        runs = _api(url, "runs/search", {"experiment_ids": [experiment], "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        (parent,) = [r for r, t in zip(runs, tags) if t["sweeps.kind"] == "sweep"]
        jobs = [(r, t) for r, t in zip(runs, tags) if t["sweeps.kind"] == "job"]
        parent_id = parent["info"]["run_id"]
        assert parent["info"]["status"] == "FINISHED" and len(jobs) == 2
        assert all(t["mlflow.parentRunId"] == parent_id and r["info"]["status"] == "FINISHED" for r, t in jobs)
        for run, _ in jobs:
            query = urllib.parse.urlencode({"run_id": run["info"]["run_id"], "metric_key": "val_loss"})
            assert len(_api(url, f"metrics/get-history?{query}")["metrics"]) == 2
        files = {f["path"] for f in _api(url, f"artifacts/list?run_id={parent_id}")["files"]}
        assert {"report.md", "comparison.csv", "val_data_loss.png"} <= files
        assert list((tmp_path / "artifacts").rglob("comparison.csv")), "artifacts went through the server"

        load = ("import mlflow, numpy as np, sys; mlflow.set_tracking_uri(sys.argv[1]);"
                "m = mlflow.pyfunc.load_model(f'runs:/{sys.argv[2]}/model');"
                "print(np.asarray(m.predict(np.zeros((2, 64), dtype=np.float32))).shape)")
        shape = subprocess.run([sys.executable, "-c", load, url, jobs[0][0]["info"]["run_id"]],
                               capture_output=True, text=True, timeout=300, cwd=work)
        assert shape.stdout.strip().endswith("(2, 10)"), shape.stderr[-2000:]
    finally:
        server.stop_process_group(proc)
        log.close()


@pytest.mark.skipif(bool(_postgres_missing()), reason=_postgres_missing() or "PostgreSQL present")
def test_make_server_starts_postgres_and_mlflow_and_sigterm_stops_both(tmp_path):
    """`python -m sweeps.server` (what `make server` runs): up, healthy, then SIGTERM stops everything."""
    folder = Path(tempfile.mkdtemp(prefix="sweeps-srv-"))
    folder.chmod(0o755)
    port, db_port = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.server", "--dir", str(folder), "--port", str(port),
                             "--db-port", str(db_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not _healthy(port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in stderr
        assert not _healthy(port), "the mlflow server stopped"
        assert not (folder / "postgres" / "postmaster.pid").exists(), "PostgreSQL stopped"
        assert (folder / "postgres" / "PG_VERSION").exists() and (folder / "artifacts").is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()
        server.Postgres(folder / "postgres", db_port).stop()
        shutil.rmtree(folder, ignore_errors=True)
