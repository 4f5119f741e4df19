"""MlflowEpochLogger writes what it says, once per epoch, to a real SQLite store."""

import logging

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sweeps.callbacks import MlflowEpochLogger, weight_stats
from sweeps.data import load_dataset
from sweeps.models import build_model, compile_model, hidden_dense_layers
from sweeps.tracking import ensure_experiment


@pytest.fixture
def run_id(client):
    exp = ensure_experiment(client, "callbacks", None)
    return client.create_run(exp).info.run_id


def _fit(cfg, client, run_id, epochs=3, monitor="val_loss"):
    ds = load_dataset(cfg.data)
    keras.utils.set_random_seed(0)
    model = compile_model(build_model(cfg, ds.input_dim, ds.n_classes), cfg, ds.task)
    logger = MlflowEpochLogger(run_id, len(ds.x_train), hidden_dense_layers(model), monitor=monitor, client=client)
    model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=64, verbose=0,
              validation_data=(ds.x_val, ds.y_val), callbacks=[logger])
    return model, logger


def test_every_epoch_is_logged_with_timing_lr_and_weight_stats(make_cfg, client, run_id):
    model, logger = _fit(make_cfg("reg=l1", "rate=1e-3"), client, run_id)
    metrics = client.get_run(run_id).data.metrics
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "epoch_time_s", "samples_per_s", "lr",
                "hidden_0/kernel_l1", "hidden_0/kernel_l2", "hidden_0/sparsity", "hidden_1/sparsity"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [0, 1, 2], key
    assert metrics["lr"] == pytest.approx(1e-3)
    kernel = np.abs(keras.ops.convert_to_numpy(model.get_layer("hidden_0").kernel))
    assert metrics["hidden_0/kernel_l1"] == pytest.approx(kernel.sum(), rel=1e-5)
    assert metrics["hidden_0/sparsity"] == pytest.approx((kernel < 1e-3).mean())
    best = int(np.argmin(logger.history["val_loss"]))
    assert logger.summary()["best_epoch"] == best
    assert logger.summary()["best_val_loss"] == pytest.approx(min(logger.history["val_loss"]))


def test_l1_makes_kernels_sparser_than_l2(make_cfg, client, run_id):
    stats = {}
    for reg in ("l1", "l2"):
        model, _ = _fit(make_cfg(f"reg={reg}", "rate=1e-2", "optimizer=adam"), client, run_id, epochs=8)
        stats[reg] = weight_stats(hidden_dense_layers(model))["hidden_0/sparsity"]
    assert stats["l1"] > stats["l2"] + 0.05


def test_missing_monitor_warns_with_the_available_metrics(make_cfg, client, run_id, caplog):
    with caplog.at_level(logging.WARNING):
        _, logger = _fit(make_cfg(), client, run_id, epochs=2, monitor="val_auc")
    warnings = [r.getMessage() for r in caplog.records if "val_auc" in r.getMessage()]
    assert len(warnings) == 1 and "val_loss" in warnings[0] and "epoch_time_s" in warnings[0]
    assert "best_epoch" not in logger.summary()


def test_nan_loss_stops_training_at_once(make_cfg, client, run_id):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=1e12")  # explodes in the first epoch
    _, logger = _fit(cfg, client, run_id, epochs=5)
    assert logger.diverged and "epoch 0" in logger.diverged
    assert len(client.get_metric_history(run_id, "epoch_time_s")) == 1


def test_state_is_reset_on_train_begin(make_cfg, client, run_id):
    model, logger = _fit(make_cfg(), client, run_id, epochs=2)
    ds = load_dataset(make_cfg().data)
    model.fit(ds.x_train, ds.y_train, epochs=1, verbose=0, validation_data=(ds.x_val, ds.y_val), callbacks=[logger])
    assert len(logger.history["loss"]) == 1
