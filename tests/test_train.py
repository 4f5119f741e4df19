"""train(cfg) end to end on digits into a temporary SQLite store, and bad input stopped before training."""

import json
import math
import re

import mlflow
import numpy as np
import pytest
import yaml

from sweeps.errors import ConfigError, DataError, TrackingError
from sweeps.job import JobContext, train


def _runs(client, experiment="sweeps"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_one_run_records_params_metrics_artifacts_and_a_loadable_model(make_cfg, client, store):
    value = train(make_cfg("reg=l2", "rate=1e-4"), JobContext(tuple(["reg=l2", "rate=1e-4"])))
    (run,) = _runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "reg=l2,rate=1e-4"
    assert value == pytest.approx(run.data.metrics["val_loss"])
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["reg.kind"] == "l2" and params["rate"] == "0.0001" and params["data.name"] == "digits"
    assert params["model.hidden"] == "[32, 16]" and int(params["n_params"]) == 64 * 32 + 32 + 32 * 16 + 16 + 170
    assert json.loads(tags["sweeps.overrides"]) == ["reg=l2", "rate=1e-4"] and len(tags["sweeps.config_hash"]) == 16
    for key in ("test_loss", "test_accuracy", "train_time_s", "best_epoch", "generalization_gap", "final_train_loss"):
        assert math.isfinite(metrics[key]), key
    assert metrics["generalization_gap"] == pytest.approx(metrics["test_loss"] - metrics["final_train_loss"])
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model_summary.txt", "curves.png"} <= files
    saved = yaml.safe_load(open(client.download_artifacts(run.info.run_id, "config.yaml")))
    assert saved["rate"] == 1e-4 and saved["reg"]["kind"] == "l2"
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    predictions = np.asarray(model.predict(np.zeros((3, 64), dtype=np.float32)))
    assert predictions.shape == (3, 10) and np.allclose(predictions.sum(axis=1), 1, atol=1e-4)


def test_returns_the_optimized_metric(make_cfg, client):
    value = train(make_cfg("data=circles", "optimized_metric=test_accuracy", "tracking.log_model=false"), JobContext(tuple([])))
    (run,) = _runs(client)
    assert run.info.run_name == "default" and value == pytest.approx(run.data.metrics["test_accuracy"])


def test_jobs_nest_under_one_parent_with_a_comparison(make_cfg, client, a_sweep):
    s = a_sweep(["reg=l1,l2"])
    for reg in ("l1", "l2"):
        train(make_cfg(f"reg={reg}", "rate=1e-3", "tracking.log_model=false"), s.job([f"reg={reg}", "rate=1e-3"]))
    parent_id = s.parent_run_id
    s.end()
    runs = {r.info.run_id: r for r in _runs(client)}
    parent = runs.pop(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 2
    assert sorted(r.info.run_name for r in runs.values()) == ["reg=l1", "reg=l2"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in runs.values())
    files = {f.path for f in client.list_artifacts(parent_id)}
    assert {"report.md", "comparison.csv", "comparison.json", "val_loss.png", "train_vs_val.png"} <= files
    table = open(client.download_artifacts(parent_id, "comparison.csv")).read().splitlines()
    assert len(table) == 3 and table[0].startswith("status,reg,final_val_loss,")


@pytest.mark.parametrize("override, error, key", [
    ("rate=-1", ConfigError, "rate=-1.0"), ("dropout=1.5", ConfigError, "dropout=1.5"),
    ("batch_size=0", ConfigError, "batch_size=0"), ("epochs=0", ConfigError, "epochs=0"),
    ("data=fashion_mnist_csv", DataError, "fashion-mnist_train.csv"),
    ("tracking.uri=http://127.0.0.1:9", TrackingError, "tracking.uri=http://127.0.0.1:9"),
    ("tracking.uri=./mlruns", TrackingError, "sqlite:///"),
    # values that used to surface as tracebacks during training (issue: trust)
    ("model.activation=nonsense", ConfigError, "model.activation=nonsense is invalid: use a Keras activation"),
    ("seed=-1", ConfigError, "seed=-1 is invalid"),
    ("optimizer.momentum=-1", ConfigError, "optimizer.momentum=-1.0 is invalid"),
    ("data.val_seed=-1", ConfigError, "data.val_seed=-1 is invalid"),
    ("data=circles,data.n_samples=1", ConfigError, "data.n_samples=1 is invalid"),
    ("data=circles,data.noise=-1", ConfigError, "data.noise=-1.0 is invalid"),
    ("early_stopping.enabled=true,early_stopping.monitor=nonexistent", ConfigError,
     "early_stopping.monitor=nonexistent is invalid: watch a per-epoch metric"),
    ("cv.folds=100000", ConfigError, "cv.folds=100000 is more than half the"),
    ("tracking.artifact_root=/proc/x", TrackingError, "artifacts go to /proc/x, which cannot be created"),
    ("tracking.experiment=''", ConfigError, "tracking.experiment='' is invalid: give the experiment a name"),
    ("data.val_split=0.999", ConfigError, "data.val_split=0.999 / data.limit=None leave 1 training example"),
    ("data=fashion_mnist,data.root=/nonexistent", DataError, "data.root=/nonexistent does not hold the four IDX files"),
    ("tracking.uri=mysql://u@127.0.0.1:9/x", TrackingError, "needs the Python package 'MySQLdb': install it"),
    ("tracking.uri=postgresql+psycopg://u@127.0.0.1:9/x", TrackingError, "is unreachable (Connection refused)"),
])
def test_bad_input_fails_before_training_and_leaves_no_run(make_cfg, client, override, error, key, offline):
    overrides = override.split(",")
    with pytest.raises(error, match=re.escape(key)):
        train(make_cfg(*overrides), JobContext(tuple(overrides)))
    assert _runs(client) == []


def test_a_store_file_that_is_not_a_database_is_one_line_and_left_untouched(make_cfg, tmp_path):
    db = tmp_path / "garbage.db"
    db.write_bytes(np.random.default_rng(0).bytes(20000))
    before = db.read_bytes()
    with pytest.raises(TrackingError) as err:
        train(make_cfg(f"tracking.uri=sqlite:///{db}"), JobContext())
    assert str(err.value) == (f"{db} is not an SQLite database (it was left untouched); move it away, "
                              "or point tracking.uri / MLFLOW_TRACKING_URI at another store")
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["garbage.db"]


def test_corrupt_dataset_file_fails_before_training(make_cfg, client, idx_folder, offline):
    (idx_folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        train(make_cfg("data=fashion_mnist", f"data.root={idx_folder}"), JobContext(tuple([])))
    assert _runs(client) == []


def test_failure_during_training_ends_the_run_failed_with_the_reason(make_cfg, client):
    from sweeps.errors import DivergedError

    with pytest.raises(DivergedError):
        train(make_cfg("optimizer=sgd", "optimizer.lr=1e12", "tracking.log_model=false"), JobContext(tuple([])))
    (run,) = _runs(client)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["sweeps.error"]
    assert "traceback.txt" in {f.path for f in client.list_artifacts(run.info.run_id)}


def test_cross_validation_logs_one_child_per_fold_and_mean_and_spread(make_cfg, client):
    value = train(make_cfg("cv.folds=3", "optimized_metric=cv_val_accuracy_mean", "tracking.log_model=false"),
                  JobContext(tuple(["cv.folds=3"])))
    runs = _runs(client)
    (job,) = [r for r in runs if r.data.tags["sweeps.kind"] == "job"]
    folds = sorted((r for r in runs if r.data.tags["sweeps.kind"] == "fold"), key=lambda r: r.info.run_name)
    assert [f.info.run_name for f in folds] == ["fold 0", "fold 1", "fold 2"]
    assert all(f.data.tags["mlflow.parentRunId"] == job.info.run_id and f.info.status == "FINISHED" for f in folds)
    assert all(len(client.get_metric_history(f.info.run_id, "val_loss")) == 2 for f in folds)
    accs = [f.data.metrics["val_accuracy"] for f in folds]
    sizes = [int(f.data.metrics["samples_per_s"] * f.data.metrics["epoch_time_s"] + 0.5) for f in folds]
    assert sum(sizes) == 2 * 1437, "each example is held out exactly once across the folds"
    assert job.data.metrics["cv_val_accuracy_mean"] == pytest.approx(np.mean(accs))
    assert job.data.metrics["cv_val_accuracy_std"] == pytest.approx(np.std(accs))
    assert value == pytest.approx(np.mean(accs)) and "test_accuracy" in job.data.metrics
