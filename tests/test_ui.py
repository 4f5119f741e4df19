"""`make ui` and the link it prints: what a student's browser opens, and what runs behind it.

The slow test runs `python -m sweeps.server --ui STORE` (what `make ui` runs) over a small SQLite
store made as sweeps makes it, opens the printed link in headless Chromium (`--dump-dom`, a fresh
profile: a browser that never chose a mode) and reads the rendered page: the runs table in MLflow's
"Model training" view, jobs ranked by the ranking metric with it and the regularization as columns,
not the GenAI pages; and only MLflow's web server running behind it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from sweeps import server, tracking
from sweeps.tracking import tags
from sweeps.config.metrics import RANK_METRIC

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
# name, reg.kind, rate, ranking metric: the rows the view must show, best first
JOBS = [("l1 rate=1e-3", "l1", "0.001", 0.4864), ("l1 rate=1e-4", "l1", "0.0001", 0.3786),
        ("l2 rate=1e-3", "l2", "0.001", 0.3828)]


def _store(folder: Path) -> str:
    """A SQLite store holding one sweep of three jobs, with the tags, params and metric sweeps logs."""
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment = tracking.ensure_experiment(client, "sweeps", None)
    parent = client.create_run(experiment, run_name="sweep", tags={tags.KIND: "sweep",
                                                                   tags.SWEPT: json.dumps(["reg", "rate"])})
    parent_id = parent.info.run_id
    for name, reg, rate, loss in JOBS:
        run = client.create_run(experiment, run_name=name, tags={tags.KIND: "job", tags.SWEEP: parent_id,
                                                                 "mlflow.parentRunId": parent_id})
        client.log_batch(run.info.run_id, params=[Param("reg.kind", reg), Param("rate", rate), Param("dropout", "0.0")],
                         metrics=[Metric(RANK_METRIC, loss + 0.1 * (1 - step), 0, step) for step in range(2)])
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent_id)
    return uri


def _rendered(link: str, profile: Path) -> str:
    """The page at `link` as headless Chromium renders it (15 s of the page's own time), as HTML."""
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--disable-quic", "--no-first-run", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                          "--window-size=1600,1000", "--virtual-time-budget=15000", "--dump-dom", link],
                         capture_output=True, text=True, timeout=300)
    return out.stdout


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: `make system` as root (apt-get install chromium)")
def test_the_link_make_ui_prints_opens_the_ranked_runs_table_in_the_model_training_view(tmp_path):
    uri = _store(tmp_path)
    port = server.free_port()
    log_path = tmp_path / "ui.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sweeps.server", "--ui", uri, "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                start_new_session=True)
    seen: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while not server.healthy(port):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(1)
        first = log_path.read_text().splitlines()[0]
        prefix = f"MLflow UI, runs of experiment sweeps: http://127.0.0.1:{port}/#/experiments/"
        assert first.startswith(prefix) and "viewStateShareKey=" in first, first
        link = first.split(": ", 1)[1]

        # behind it: MLflow's web server alone (no GenAI job runner and queue consumers, one worker)
        seen = _process_tree(proc.pid)
        commands = [" ".join(p.cmdline()) for p in seen]
        assert not [c for c in commands if "huey" in c or "jobs._job_runner" in c], commands
        assert len(seen) <= 2, commands
        assert not [c for c in commands if uri in c], "the store stays off the command lines"

        dom = ""
        for attempt in range(3):  # a loaded machine may not have rendered the table yet: look again
            dom = _rendered(link, tmp_path / f"profile{attempt}")
            if f'col-id="metrics.`{RANK_METRIC}`"' in dom and "l2 rate=1e-3" in dom:
                break
        assert f'col-id="metrics.`{RANK_METRIC}`"' in dom, dom[-3000:]
        assert 'col-id="params.`rate`"' in dom and 'col-id="params.`reg.kind`"' in dom
        ranked = [name for name, *_ in sorted(JOBS, key=lambda job: job[-1])]
        assert re.findall(r">(l[12] rate=[^<]+)<", dom) == ranked  # best first, jobs not folded under the sweep
        assert ">Runs<" in dom and "Model training" in dom
        for genai in ("Training runs", "Observability", "Token Usage", "Detect Issues", "Judges"):
            assert genai not in dom, f"{genai!r}: the GenAI view"
    finally:
        server.stop_process_group(proc, timeout=30)
        _, alive = psutil.wait_procs([p for p in seen if p.is_running()], timeout=30)
        for p in alive:
            p.kill()
        assert not alive, f"left running: {alive}"


def test_the_ui_and_the_team_server_start_only_the_web_server(monkeypatch):
    for name in ("MLFLOW_WORKERS", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "MLFLOW_BACKEND_STORE_URI"):
        monkeypatch.delenv(name, raising=False)
    store = "postgresql://alice:s3cr3t@db/mlflow"
    command, env = server.mlflow_command(store, "127.0.0.1", 5000, server.UI_WORKERS)
    assert command[1:] == ["server", "--host", "127.0.0.1", "--port", "5000"]
    assert env["MLFLOW_BACKEND_STORE_URI"] == store and "s3cr3t" not in " ".join(command)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and env["MLFLOW_WORKERS"] == "1"
    command, env = server.mlflow_command(store, "0.0.0.0", 5000, server.TEAM_WORKERS, Path("/srv/artifacts"), "box")
    assert command[-4:] == ["--artifacts-destination", "/srv/artifacts", "--allowed-hosts", "box"]
    assert env["MLFLOW_WORKERS"] == "2"
    monkeypatch.setenv("MLFLOW_WORKERS", "4")  # what the user exported wins
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    _, env = server.mlflow_command(store, "127.0.0.1", 5000, server.UI_WORKERS)
    assert env["MLFLOW_WORKERS"] == "4" and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_the_runs_view_is_added_to_an_older_experiment_and_the_link_falls_back_without_it(tmp_path):
    address = "http://127.0.0.1:5000"
    assert tracking.runs_table_link(address, "7") == (
        f"{address}/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey={tracking.RUNS_VIEW_KEY}")
    assert tracking.runs_table_link(address, "7", view=False) == (
        f"{address}/#/experiments/7/runs?workflowType=machine_learning"
        f"&orderByKey=metrics.%60{RANK_METRIC}%60&orderByAsc=true")
    view = json.loads(tracking.RUNS_VIEW)
    assert view["orderByKey"] == f"metrics.`{RANK_METRIC}`" and view["selectedColumns"][0] == view["orderByKey"]

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    older = client.create_experiment("sweeps")  # as an earlier version of sweeps left it: no view
    assert "viewStateShareKey" not in tracking.ui_hint(uri, "127.0.0.1", "5000")
    assert "orderByKey=" in tracking.ui_hint(uri, "127.0.0.1", "5000")
    assert tracking.ensure_experiment(client, "sweeps", None) == older
    assert client.get_experiment(older).tags[tracking.RUNS_VIEW_TAG] == tracking.RUNS_VIEW
    assert tracking.ui_hint(uri, "127.0.0.1", "5000").endswith(tracking.runs_table_link(address, older))
