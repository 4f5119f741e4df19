"""A job's epoch callbacks (`JobEpochs`: the logger, the best epoch, the NaN stop) write what they say,
once per epoch, to a real SQLite store."""

import logging

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sweeps.training.callbacks import JobEpochs, weight_stats
from sweeps.training.data import load_dataset
from sweeps.training.models import build_model, compile_model, kernel_layers
from sweeps.tracking import ensure_experiment


@pytest.fixture
def run_id(client):
    exp = ensure_experiment(client, "callbacks", None)
    return client.create_run(exp).info.run_id


def _fit(cfg, client, run_id, epochs=3, monitor="val_loss"):
    ds = load_dataset(cfg.data)
    keras.utils.set_random_seed(0)
    model = compile_model(build_model(cfg, ds.input_dim, ds.n_classes), cfg, ds.task)
    logger = JobEpochs(run_id, len(ds.x_train), kernel_layers(model), monitor=monitor, client=client)
    model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=64, verbose=0,
              validation_data=(ds.x_val, ds.y_val), callbacks=logger.callbacks)
    return model, logger


def test_every_epoch_is_logged_with_timing_lr_and_weight_stats(make_cfg, client, run_id):
    model, logger = _fit(make_cfg("reg=l1", "rate=1e-3"), client, run_id)
    metrics = client.get_run(run_id).data.metrics
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "epoch_time_s", "samples_per_s", "lr",
                "hidden_0/kernel_l1", "hidden_0/kernel_l2", "hidden_0/sparsity", "hidden_1/sparsity",
                "hidden_0/rel_sparsity"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [1, 2, 3], key  # epochs counted from 1, as the plots do
    assert metrics["lr"] == pytest.approx(1e-3)
    kernel = np.abs(keras.ops.convert_to_numpy(model.get_layer("hidden_0").kernel))
    assert metrics["hidden_0/kernel_l1"] == pytest.approx(kernel.sum(), rel=1e-5)
    assert metrics["hidden_0/sparsity"] == pytest.approx((kernel < 1e-3).mean())
    best = int(np.argmin(logger.history["val_loss"]))
    assert logger.summary()["best_epoch"] == best + 1
    assert logger.summary()["best_val_loss"] == pytest.approx(min(logger.history["val_loss"]))


def test_the_data_loss_and_the_penalty_are_logged_apart(make_cfg, client, run_id):
    """`loss` = data term + penalty; the data term is what the model's outputs cost on the data."""
    cfg = make_cfg("reg=l2", "rate=1e-3")
    model, logger = _fit(cfg, client, run_id)
    h = logger.history
    for key in ("data_loss", "val_data_loss", "penalty"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3], key
    assert h["penalty"] == pytest.approx([a - b for a, b in zip(h["loss"], h["data_loss"])])
    assert min(h["penalty"]) > 0
    ds = load_dataset(cfg.data)
    p = np.clip(model.predict(ds.x_val, verbose=0), 1e-7, 1 - 1e-7)
    cross_entropy = -np.log(p[np.arange(len(ds.y_val)), ds.y_val]).mean()
    assert h["val_data_loss"][-1] == pytest.approx(cross_entropy, rel=1e-4)
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in kernel_layers(model)]
    l2_penalty = 1e-3 * sum(float((k * k).sum()) for k in kernels)  # with the final weights, as validation sees them
    assert h["val_loss"][-1] - h["val_data_loss"][-1] == pytest.approx(l2_penalty, rel=1e-3)


def test_without_a_penalty_the_data_loss_is_the_loss(make_cfg, client, run_id):
    _, logger = _fit(make_cfg("reg=none"), client, run_id, epochs=2)
    assert logger.history["penalty"] == [0.0, 0.0]
    assert logger.history["val_data_loss"] == pytest.approx(logger.history["val_loss"])


def test_relative_sparsity_counts_l1_zeros_not_l2_shrinking():
    layer = keras.layers.Dense(50, name="hidden_0")
    layer.build((None, 200))
    shrunk = np.random.default_rng(0).normal(0, 1e-4, (200, 50))  # every weight small, none zero (L2)
    zeros = shrunk * 1e3 * (np.random.default_rng(1).random((200, 50)) < 0.2)  # 80 % exact zeros (L1)
    layer.kernel.assign(shrunk)
    assert weight_stats([layer])["hidden_0/sparsity"] > 0.99  # the fixed threshold calls it sparse
    assert weight_stats([layer])["hidden_0/rel_sparsity"] < 0.05
    layer.kernel.assign(zeros)
    assert weight_stats([layer])["hidden_0/rel_sparsity"] == pytest.approx((np.abs(zeros) < 0.01 * np.abs(zeros).max()).mean())
    assert 0.79 < weight_stats([layer])["hidden_0/rel_sparsity"] < 0.82


def test_l1_makes_kernels_sparser_than_l2(make_cfg, client, run_id):
    stats = {}
    for reg in ("l1", "l2"):
        model, _ = _fit(make_cfg(f"reg={reg}", "rate=1e-2", "optimizer=adam"), client, run_id, epochs=8)
        stats[reg] = weight_stats(kernel_layers(model))
    assert stats["l1"]["hidden_0/sparsity"] > stats["l2"]["hidden_0/sparsity"] + 0.05
    assert stats["l1"]["hidden_0/rel_sparsity"] > stats["l2"]["hidden_0/rel_sparsity"] + 0.05


def test_missing_monitor_warns_with_the_available_metrics(make_cfg, client, run_id, caplog):
    with caplog.at_level(logging.WARNING):
        _, logger = _fit(make_cfg(), client, run_id, epochs=2, monitor="val_auc")
    warnings = [r.getMessage() for r in caplog.records if "val_auc" in r.getMessage()]
    assert len(warnings) == 1 and "val_loss" in warnings[0] and "epoch_time_s" in warnings[0]
    assert "best_epoch" not in logger.summary()


def test_nan_loss_stops_training_at_once(make_cfg, client, run_id):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=1e12")  # explodes in the first epoch
    _, logger = _fit(cfg, client, run_id, epochs=5)
    assert logger.diverged and "epoch 1" in logger.diverged
    assert len(client.get_metric_history(run_id, "epoch_time_s")) == 1


def test_state_is_reset_on_train_begin(make_cfg, client, run_id):
    model, logger = _fit(make_cfg(), client, run_id, epochs=2)
    ds = load_dataset(make_cfg().data)
    model.fit(ds.x_train, ds.y_train, epochs=1, verbose=0, validation_data=(ds.x_val, ds.y_val), callbacks=logger.callbacks)
    assert len(logger.history["loss"]) == 1


def test_a_trial_that_its_sweep_ended_stops_the_job_as_interrupted_not_failed(tmp_path):
    """The race of a Ctrl-C with trials in flight: the sweep fails its open trials before its signal
    reaches the worker, whose next report then finds its trial finished. The job stops as
    interrupted (its run ends KILLED), not with Optuna's UpdateFinishedTrialError (FAILED)."""
    import optuna

    from sweeps.training.callbacks import TrialReports
    from sweeps.sweeping.search import trial_id_of

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    reports = TrialReports("s", storage, trial_id_of(trial), "median", "val_loss", epochs=5)
    reports.open()
    assert reports.epoch_end(0, {"val_loss": 1.0}) is False  # reported while the trial runs
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # the sweep, interrupted, ends it
    with pytest.raises(KeyboardInterrupt, match="ended by its sweep"):
        reports.epoch_end(1, {"val_loss": 0.9})
