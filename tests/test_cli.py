"""The command line as a user runs it: `python -m sweeps.train [-m] ...` in a fresh process (slow).

Jobs that fail inside a sweep (a diverging one, raising ones) are in test_faults_cli.py."""

import os
import re
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

# what a quiet command (no -v) never prints: TensorFlow's C++ banner and log lines, oneDNN's note,
# MLflow's database set-up, TensorFlow's retracing warning
STARTUP_NOISE = ("absl::InitializeLog", "cudart_stub", "oneDNN", "cuInit", "Creating initial", "alembic",
                 "tf.function retracing")


def assert_quiet(proc) -> None:
    for noise in STARTUP_NOISE:
        assert noise not in proc.stderr + proc.stdout, noise  # quiet by default (-v shows them)

pytestmark = pytest.mark.slow


def run_cli(tmp_path, *args, env=None):
    """Run sweeps.train in `tmp_path` against a store there; returns the finished process."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", **(env or {})}
    return subprocess.run([sys.executable, "-m", "sweeps.train", *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_smoke_sweep_one_parent_four_finished_children(tmp_path):
    """`make smoke`: reg=l1,l2 rate=1e-4,1e-3 data=digits epochs=2."""
    proc = run_cli(tmp_path, "-m", "reg=l1,l2", "rate=1e-4,1e-3", "data=digits", "epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweeps.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("sweeps.kind") == "job"]
    assert len(parents) == 1 and len(children) == 4
    parent_id = parents[0].info.run_id
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["sweeps.command"].startswith("reg=l1,l2")
    assert sorted(r.info.run_name for r in children) == ["l1 rate=1e-3", "l1 rate=1e-4", "l2 rate=1e-3", "l2 rate=1e-4"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent_id
        params = child.data.params  # only the keys that apply: digits, rmsprop, no dropout, no early stopping
        assert {"reg.kind", "reg.target", "rate", "optimizer.lr", "data.test_seed",
                "early_stopping.enabled"} <= set(params)
        assert not {"data.noise", "data.root", "optimizer.momentum", "dropout_type", "dropout_layers",
                    "early_stopping.patience", "search.pruner"} & set(params)
        for key in ("loss", "val_loss", "data_loss", "val_data_loss", "penalty", "val_accuracy",
                    "hidden_0/sparsity", "hidden_0/rel_sparsity"):
            assert len(client.get_metric_history(child.info.run_id, key)) == 2, key
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{children[0].info.run_id}/model")
    assert np.asarray(model.predict(np.zeros((2, 64), dtype=np.float32))).shape == (2, 10)
    files = {f.path for f in client.list_artifacts(parent_id)}
    assert {"comparison.csv", "comparison.md", "report.md", "val_data_loss.png"} <= files
    assert len(open(client.download_artifacts(parent_id, "comparison.md")).read().splitlines()) == 6
    table = open(client.download_artifacts(parent_id, "comparison.csv")).read().splitlines()
    assert len(table) == 5 and ",reg,rate," in table[0]
    assert "4 job(s) finished, 0 failed" in proc.stderr
    experiment_id = parents[0].info.experiment_id  # where the results are: parent, store, compare, the runs table
    assert f"results: sweep {parent_id} in experiment sweeps, store sqlite:///{tmp_path}/mlflow.db\n" in proc.stderr
    assert f"  compare: python -m sweeps.compare --sweep {parent_id}\n" in proc.stderr
    assert re.search(rf"  MLflow UI: http://[^/ ]+/#/experiments/{experiment_id}/runs(\?\S*)? \(after `make ui", proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("job ", "  epoch "))]
    assert len(lines) == 12, lines  # stderr is a pipe: per job its start, its first epoch, its result
    assert lines[0] == "job 1/4 (l1 rate=1e-4)" and lines[1].startswith("  epoch 1/2: ") and "val_accuracy" in lines[1]
    assert re.fullmatch(r"job 1/4 \(l1 rate=1e-4\) done in \d+ s: \S+ [\d.e-]+, test_accuracy [\d.]+", lines[2])
    assert re.fullmatch(r"job 4/4 \(l2 rate=1e-3\), about \d+ (min \d+ )?s left in the sweep", lines[9]), lines[9]
    assert_quiet(proc)


def test_help_answers_without_importing_tensorflow_or_mlflow(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sweeps.train", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "== Configuration groups ==" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert not {"mlflow", "tensorflow", "keras"} & set(imported)


def test_bad_value_is_one_line_exit_2_and_no_run(tmp_path):
    proc = run_cli(tmp_path, "rate=-1", "data=digits")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: rate=-1.0 is invalid: use a finite value >= 0, e.g. rate=1e-4"
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("override, message", [
    ("rat=1e-3", "error: rat: no such key; did you mean rate? (every key is listed in src/sweeps/config/schema.py)"),
    ("rate=abc", "error: rate=abc: Value 'abc' of type 'str' could not be converted to Float; "
                 "see the key's type in src/sweeps/config/schema.py"),
    ("model.name='a\n![k](/etc/hostname)\nb'", "error: model.name='a\\n![k](/etc/hostname)\\nb': a value holds a "
                                              "control character (a newline, tab or escape); give it on one line "
                                              "without them"),  # issue 20 §1: it would split the recorded command
])
def test_typo_or_wrong_type_is_one_line_naming_the_key_before_any_run(tmp_path, override, message):
    proc = run_cli(tmp_path, "-m", override, "data=digits")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()


def test_a_penalty_of_strength_0_is_refused_and_a_baseline_at_several_rates_trains_once(tmp_path):
    proc = run_cli(tmp_path, "-m", "reg=l1,l2", "rate=0", "data=digits")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()
    assert proc.stderr.strip().splitlines() == ["error: reg=l1 needs rate > 0, e.g. rate=1e-4 (reg=none trains "
                                                "without a penalty)"]
    proc = run_cli(tmp_path, "-m", "reg=none,l2", "rate=1e-4,1e-3", "data=digits", "epochs=1", "model.hidden=[8]",
                   "tracking.log_model=false", "resume=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    jobs = [r for r in client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
            if r.data.tags.get("sweeps.kind") == "job"]
    assert sorted(r.info.run_name for r in jobs) == ["l2 rate=1e-3", "l2 rate=1e-4", "none rate=1e-3", "none rate=1e-4"]
    trained = [r for r in jobs if "sweeps.resumed_from" not in r.data.tags]
    (twin,) = [r for r in jobs if "sweeps.resumed_from" in r.data.tags]
    assert len(trained) == 3 and twin.info.run_name == "none rate=1e-3" and twin.info.status == "FINISHED"
    (original,) = [r for r in trained if r.info.run_name == "none rate=1e-4"]
    assert twin.data.tags["sweeps.resumed_from"] == original.info.run_id
    assert twin.data.metrics["val_data_loss"] == original.data.metrics["val_data_loss"]
    assert "4 job(s) finished, 0 failed (1 the same config as another job of this sweep" in proc.stderr


def test_a_bad_value_in_one_job_of_a_sweep_stops_it_before_anything_is_trained(tmp_path):
    """Every job's config is composed and checked before the parent run or any job starts."""
    proc = run_cli(tmp_path, "-m", "dropout=0.2,1.5", "data=digits", "epochs=1", "tracking.log_model=false")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: dropout=1.5 is invalid: use a value in [0, 1), e.g. dropout=0.2"]
    assert not (tmp_path / "mlflow.db").exists()
