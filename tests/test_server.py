"""A real `mlflow server` over a temporary SQLite store (the session's, tests/conftest.py): a sweep
runs against it through tracking.uri, and its REST API (what the UI reads) shows the jobs nested
under the sweep. MLFLOW_TRACKING_URI naming a server is used by test_faults_cli.py and
test_team_server.py."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from sweeps import compare

pytestmark = pytest.mark.slow

def rest(url: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    """GET (or POST `body`) on the tracking server's REST API."""
    full = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def as_dict(items: list[dict]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items}


def test_a_sweep_against_a_tracking_server_reads_back_through_its_rest_api(server_sweep, capsys):
    """The session's sweep (tests/conftest.py): `python -m sweeps.train -m reg=l1,l2 data=digits epochs=1
    model.hidden=[16] tracking.uri=http://alice:...@127.0.0.1:<port>` against a real `mlflow server`
    (test_faults_cli.py checks that the password reaches no file and no output)."""
    server, proc, work = server_sweep["url"], server_sweep["proc"], server_sweep["work"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (work / "mlruns").exists() and not (work / "mlflow.db").exists()  # everything went to the server

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
