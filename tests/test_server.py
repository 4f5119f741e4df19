"""A real `mlflow server` over a temporary SQLite store: a sweep runs against it through
MLFLOW_TRACKING_URI, and its REST API (what the UI reads) shows the jobs nested under the sweep."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from sweeps import compare
from sweeps.server import stop_process_group

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def server(tmp_path):
    """`mlflow server` on a free 127.0.0.1 port; always stopped (with its workers) afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
               "--artifacts-destination", str(tmp_path / "artifacts")]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen) -> None:
    stop_process_group(proc, timeout=20)


def rest(url: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    """GET (or POST `body`) on the tracking server's REST API."""
    full = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def as_dict(items: list[dict]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items}


def test_a_sweep_against_a_tracking_server_reads_back_through_its_rest_api(server, tmp_path, capsys):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    proc = subprocess.run([sys.executable, "-m", "sweeps.train", "-m", "reg=l1,l2", "data=digits", "epochs=1",
                           "model.hidden=[16]", "tracking.log_model=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "mlruns").exists()  # everything went to the server

    experiment = rest(server, "experiments/get-by-name", experiment_name="sweeps")["experiment"]
    found = rest(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})
    runs = [{"info": r["info"], "tags": as_dict(r["data"].get("tags", [])),
             "params": as_dict(r["data"].get("params", [])), "metrics": as_dict(r["data"].get("metrics", []))}
            for r in found["runs"]]
    (parent,) = [r for r in runs if r["tags"].get("sweeps.kind") == "sweep"]
    jobs = sorted((r for r in runs if r["tags"].get("sweeps.kind") == "job"), key=lambda r: r["info"]["run_name"])
    parent_id = parent["info"]["run_id"]
    assert len(runs) == 3 and parent["info"]["status"] == "FINISHED"
    assert parent["tags"]["sweeps.command"].startswith("reg=l1,l2 data=digits")
    assert [j["info"]["run_name"] for j in jobs] == ["l1", "l2"]
    for job, reg in zip(jobs, ("l1", "l2")):
        assert job["info"]["status"] == "FINISHED" and job["tags"]["mlflow.parentRunId"] == parent_id
        assert job["tags"]["sweeps.sweep_id"] == parent_id and json.loads(job["tags"]["sweeps.swept"]) == ["reg"]
        params = job["params"]
        assert params["reg.kind"] == reg and params["data.name"] == "digits" and params["epochs"] == "1"
        assert params["model.hidden"] == "[16]" and int(params["n_params"]) == 64 * 16 + 16 + 16 * 10 + 10
        assert {"val_loss", "test_accuracy", "hidden_0/sparsity"} <= set(job["metrics"])

    artifacts = {f["path"] for f in rest(server, "artifacts/list", run_id=parent_id)["files"]}
    assert {"report.md", "comparison.csv", "val_data_loss.png", "train_vs_val.png"} <= artifacts

    assert compare.main(["--tracking-uri", server, "--format", "json"]) == 0  # compare reads the server too
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["reg"] for r in rows) == ["l1", "l2"] and {r["run_id"] for r in rows} == {j["info"]["run_id"] for j in jobs}
