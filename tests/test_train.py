"""train(cfg) end to end on digits into a temporary SQLite store, and bad input stopped before training."""

import json
import math
import re

import mlflow
import numpy as np
import pytest
import yaml

from sweeps.errors import ConfigError, DataError, TrackingError
from sweeps.training.context import JobContext
from sweeps.training.job import train
from sweeps.reporting.runs import list_sweeps


def _runs(client, experiment="sweeps"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_one_run_records_params_metrics_artifacts_and_a_loadable_model(make_cfg, client, store):
    value = train(make_cfg("reg=l2", "rate=1e-4"), JobContext(tuple(["reg=l2", "rate=1e-4"])))
    (run,) = _runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "l2 rate=1e-4"
    assert value == pytest.approx(run.data.metrics["val_data_loss"])
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["reg.kind"] == "l2" and params["rate"] == "0.0001" and params["data.name"] == "digits"
    assert params["model.hidden"] == "[32, 16]" and int(params["n_params"]) == 64 * 32 + 32 + 32 * 16 + 16 + 170
    assert params["reg.target"] == "kernel" and params["early_stopping.enabled"] == "False"
    assert not {"data.noise", "optimizer.momentum", "dropout_type", "early_stopping.patience",
                "search.study"} & set(params)
    assert json.loads(tags["sweeps.overrides"]) == ["reg=l2", "rate=1e-4"] and len(tags["sweeps.config_hash"]) == 16
    for key in ("test_loss", "test_accuracy", "train_time_s", "best_epoch", "generalization_gap", "final_train_loss"):
        assert math.isfinite(metrics[key]), key
    assert metrics["generalization_gap"] == pytest.approx(metrics["test_loss"] - metrics["final_train_loss"])
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model_summary.txt", "curves.png"} <= files
    saved = yaml.safe_load(open(client.download_artifacts(run.info.run_id, "config.yaml")))
    assert saved["rate"] == 1e-4 and saved["reg"]["kind"] == "l2" and saved["data"]["noise"] == 0.1  # every key
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    predictions = np.asarray(model.predict(np.zeros((3, 64), dtype=np.float32)))
    assert predictions.shape == (3, 10) and np.allclose(predictions.sum(axis=1), 1, atol=1e-4)


def test_todays_regularizers_are_params_and_the_model_reloads_in_a_fresh_process(make_cfg, client, store, tmp_path):
    """Decoupled weight decay, max-norm, label smoothing (a loss of ours) and input noise in one run: each
    a param, and the logged model (compiled with Keras' own loss, nothing pickled beside it) loads in a
    fresh process that imports nothing of sweeps itself."""
    import subprocess
    import sys

    overrides = ["optimizer=adamw", "optimizer.weight_decay=1e-3", "max_norm=2", "label_smoothing=0.1", "input_noise=0.1"]
    train(make_cfg(*overrides), JobContext(tuple(overrides)))
    (run,) = _runs(client)
    params = run.data.params
    assert run.info.status == "FINISHED"
    assert (params["optimizer.name"], params["optimizer.weight_decay"], params["max_norm"], params["label_smoothing"],
            params["input_noise"]) == ("adamw", "0.001", "2.0", "0.1", "0.1")
    assert "optimizer.nesterov" not in params, "SGD's key only"
    files = {f.path for f in client.list_artifacts(run.info.run_id, "model/data")}
    assert not [f for f in files if "pickle" in f], files
    from sweeps.training.data import load_dataset

    data = load_dataset(make_cfg(*overrides).data)
    np.savez(tmp_path / "test.npz", x=data.x_test, y=data.y_test)
    load = ("import sys, mlflow, mlflow.keras, numpy as np; mlflow.set_tracking_uri(sys.argv[1]);"
            "m = mlflow.keras.load_model(f'runs:/{sys.argv[2]}/model', load_model_kwargs={'safe_mode': True});"
            "d = np.load(sys.argv[3]); print(m.evaluate(d['x'], d['y'], verbose=0, return_dict=True)['accuracy'])")
    proc = subprocess.run([sys.executable, "-c", load, store, run.info.run_id, str(tmp_path / "test.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the trained weights, scored as the run logged them
    assert float(proc.stdout.split()[-1]) == pytest.approx(run.data.metrics["test_accuracy"], rel=1e-6)


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
    assert sorted(r.info.run_name for r in runs.values()) == ["l1", "l2"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in runs.values())
    files = {f.path for f in client.list_artifacts(parent_id)}
    assert {"report.md", "comparison.csv", "comparison.json", "val_data_loss.png", "train_vs_val.png"} <= files
    table = open(client.download_artifacts(parent_id, "comparison.csv")).read().splitlines()
    assert len(table) == 3 and table[0].startswith("status,reg,final_val_data_loss,")


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
    experiment = client.get_experiment_by_name("sweeps").experiment_id
    assert list_sweeps(client, experiment) == [], "a job whose folds are its children is no sweep"


# ---------------------------------------------------------------- reading a sweep: names, params, progress, quiet


def test_run_names_are_short_values_groups_bare_numbers_shortest():
    from sweeps.tracking import run_name

    overrides = ["reg=l1", "rate=0.0001", "batch_size=128", "dropout=0.5", "optimizer.lr=1000000000000.0",
                 "model.hidden=[16,8]", "variant/fashion_batch_size=b32", "+experiment=fashion_batch_size"]
    assert run_name(overrides) == "l1 rate=1e-4 batch_size=128 dropout=0.5 optimizer.lr=1e12 model.hidden=[16,8] b32 " \
                                  "fashion_batch_size"
    assert run_name(overrides, ["reg", "rate"]) == "l1 rate=1e-4" and run_name([]) == "default"


@pytest.mark.parametrize("overrides, present, absent", [
    ([], {"data.root", "data.val_split", "reg.kind", "rate", "dropout", "early_stopping.enabled", "tracking.uri",
          "early_stopping.monitor"},  # best_epoch is of the monitor, early stopping or not
     {"data.noise", "data.train_file", "reg.target", "reg.layers", "optimizer.momentum", "dropout_type",
      "dropout_layers", "early_stopping.patience", "data.test_seed", "search.trial"}),
    (["data=circles", "optimizer=sgd", "reg=l1", "dropout=0.2", "early_stopping.enabled=true"],
     {"data.noise", "data.n_samples", "data.test_seed", "optimizer.momentum", "reg.target", "dropout_type",
      "dropout_layers", "early_stopping.patience"}, {"data.root", "data.train_file"}),
    (["data=fashion_mnist_csv", "data.validation=test"], {"data.root", "data.train_file"},
     {"data.val_split", "data.val_seed"}),
])
def test_only_the_keys_that_apply_are_params(make_cfg, overrides, present, absent):
    from sweeps.config import applicable
    from sweeps.tracking import flatten

    keys = set(flatten(applicable(make_cfg(*overrides, fast=False))))
    assert present <= keys and not absent & keys, (present - keys, absent & keys)


def test_verbose_flag_leaves_hydra_and_quiet_keeps_retracing_off_unless_verbose(monkeypatch):
    import logging

    from sweeps.train import QuietRetracing, take_verbose_flag

    monkeypatch.setenv("SWEEPS_VERBOSE", "0")  # and back as it was after the test (`-v` below sets it to 1)
    assert take_verbose_flag(["-m", "reg=l1"]) == ["-m", "reg=l1"]
    retracing = logging.LogRecord("tensorflow", logging.WARNING, "", 0, "5 out of 13 calls triggered tf.function "
                                  "retracing. Tracing is expensive", None, None)
    assert not QuietRetracing().filter(retracing)
    assert take_verbose_flag(["-m", "-v", "reg=l1"]) == ["-m", "reg=l1",
                                                          "hydra.verbose=[mlflow.store.db.utils,alembic,jax._src.xla_bridge]"]
    assert QuietRetracing().filter(retracing), "SWEEPS_VERBOSE=1 (workers inherit it) shows everything"


def test_epoch_progress_is_one_line_per_epoch_at_most_every_few_seconds_off_a_terminal(monkeypatch):
    import io

    from sweeps import progress

    clock = iter([0.0, 1.0, 2.0, 40.0, 41.0, 41.5])  # train begins, then the end of epochs 1 to 5
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress.EpochProgress(5, ["val_loss", "val_accuracy"], every_s=30, stream=out)
    bar.on_train_begin()
    for epoch in range(5):
        bar.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 0.5 / (epoch + 1), "val_accuracy": np.float32(0.8)})
    bar.on_train_end()
    assert out.getvalue().splitlines() == ["  epoch 1/5: val_loss 0.5, val_accuracy 0.8 (1 s)",
                                           "  epoch 3/5: val_loss 0.1667, val_accuracy 0.8 (40 s)"]
    live = io.StringIO()
    clock = iter([0.0, 1.0, 2.0])
    bar = progress.EpochProgress(2, ["loss"], stream=live, live=True)
    bar.on_train_begin()
    bar.on_epoch_end(0, {"loss": 2.0})
    bar.on_epoch_end(1, {"loss": 1.0})
    bar.on_train_end()
    assert live.getvalue() == "\r\033[K  epoch 1/2: loss 2 (1 s)\r\033[K  epoch 2/2: loss 1 (2 s)\n"
