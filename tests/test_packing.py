"""Packed sweeps (`hydra/launcher=packed`): grouping, batches, the packed model's arithmetic against
Keras' own, per-member early stopping, and (slow) a real packed sweep on digits against the same
jobs unpacked: same curves within float tolerance, a diverging member failing alone, standalone
models that load and score as logged, resume, and Ctrl-C.
"""

from __future__ import annotations

import json

import keras
import numpy as np
from keras import ops
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from sweeps.config import conf_dir, register_configs
from sweeps.training.fitting import EpochBatches, new_model
from sweeps.config.metrics import keras_mode
from sweeps.packed.launcher import packs, why_alone
from sweeps.training.models import make_optimizer
from sweeps.packed.model import Member, PackedMLP
from sweeps.packed.pack import MemberStopping
from test_faults_cli import _env, interrupt_after_first_epoch, run_cli

register_configs()
# The model and step tests run on whichever backend Keras has here; tests/test_backends.py runs this
# file again on JAX. The XLA fence reads TensorFlow's own machinery (its trainer's test function).
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's own step machinery")


def cfg_of(*overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", ["data=digits", *overrides])


# ---------------------------------------------------------------- grouping


def test_jobs_that_differ_only_in_penalty_dropout_or_seed_share_a_pack_of_at_most_max_pack():
    jobs = [cfg_of(f"reg={r}", f"rate={x}") for r in ("l1", "l2") for x in (1e-4, 1e-3)]
    jobs.append(cfg_of("reg=l2", "dropout=0.3", "dropout_type=gaussian", "dropout_layers=[0]", "seed=4"))
    jobs.append(cfg_of("reg=l2", "optimizer.lr=0.01"))  # another learning rate: another model
    jobs.append(cfg_of("reg=l1", "model.batchnorm=true"))  # never packed
    jobs.append(cfg_of("reg=l2", "optimizer.lr=0.01", "rate=1e-2"))
    assert packs(jobs, 8) == [[0, 1, 2, 3, 4], [5, 7], [6]]
    assert packs(jobs, 2) == [[0, 1], [2, 3], [4], [5, 7], [6]]
    assert packs(jobs, 1) == [[i] for i in range(8)], "max_pack=1 runs every job alone"
    assert "batchnorm" in why_alone(jobs[6])
    assert why_alone(cfg_of("cv.folds=3")) and why_alone(jobs[0]) is None


def test_jobs_that_differ_in_todays_regularizers_still_pack_and_what_cannot_pack_is_said_once(caplog):
    """Weight decay, max-norm, label smoothing and input noise are member settings of the packed model:
    jobs that differ only in them share a pack; a model of a builder and batch norm run alone, one line
    per reason."""
    jobs = [cfg_of("optimizer=adamw", "optimizer.weight_decay=1e-3"), cfg_of("optimizer=adamw", "optimizer.weight_decay=1e-2",
                                                                       "max_norm=3"),
            cfg_of("optimizer=adamw", "optimizer.weight_decay=1e-3", "label_smoothing=0.1", "input_noise=0.1")]
    jobs += [cfg_of("model=cnn", f"seed={s}") for s in (0, 1)] + [cfg_of("model.batchnorm=true")]
    with caplog.at_level("INFO", logger="sweeps.packed.launcher"):
        assert packs(jobs, 8) == [[0, 1, 2], [3], [4], [5]]
    said = [r.getMessage() for r in caplog.records]
    assert said == ["2 job(s) trained alone, not packed: model._target_=sweeps.training.models.build_cnn (only the MLP packs)",
                    "1 job(s) trained alone, not packed: model.batchnorm=true (batch statistics are not packed)"], said


@pytest.mark.parametrize("setting", ["max_pack=0", "n_jobs=0"])
def test_a_bad_launcher_setting_is_one_line_exit_2_and_nothing_written(tmp_path, setting):
    proc = run_cli(tmp_path, "-m", "reg=l1,l2", "data=digits", "hydra/launcher=packed", f"hydra.launcher.{setting}",
                   timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: hydra.launcher.{setting} is invalid: use an integer >= 1"), line
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------- batches


def _batches_of(seeds, epochs=3, n=10, batch=4) -> list[np.ndarray]:
    """The labels (= example indices) of every batch `fit` is given, epoch after epoch."""
    x, y = np.arange(n, dtype="float32")[:, None], np.arange(n)
    batches = EpochBatches(x, y, batch, seeds)
    seen = []

    class Probe(keras.Model):
        def __init__(self):
            super().__init__()
            self.w = self.add_weight(shape=(1,), initializer="zeros")

        def call(self, x):  # what Keras' JAX trainer runs on a batch to build the model
            return x * self.w

        def train_step(self, *args):  # JAX's trainer passes (state, data) and takes (logs, state) back
            data = args[-1]
            seen.append(ops.convert_to_numpy(data[1]))  # eager: the batch itself
            logs = {"n": ops.sum(data[1])}
            return (logs, args[0]) if len(args) == 2 else logs

    model = Probe()
    model.compile(optimizer="sgd", steps_per_execution=64, run_eagerly=True)  # more steps per call than an epoch: epochs must not mix
    model.fit(batches.dataset, epochs=epochs, callbacks=[batches], shuffle=False, verbose=0)  # as `fit_epochs`
    return seen


def test_a_member_sees_the_batches_it_sees_alone_epoch_by_epoch():
    alone = _batches_of([3])
    packed = _batches_of([7, 3, 3])
    assert len(alone) == len(packed) == 9, "3 batches per epoch (the last one smaller), 3 epochs"
    for mine, pack in zip(alone, packed):
        np.testing.assert_array_equal(pack[1], mine)
        np.testing.assert_array_equal(pack[2], mine)
    epochs = [np.concatenate(alone[i:i + 3]) for i in (0, 3, 6)]
    assert all(sorted(e) == list(range(10)) for e in epochs), "every epoch is a permutation of the examples"
    assert not np.array_equal(epochs[0], epochs[1]), "each epoch has its own order"
    assert not np.array_equal(np.concatenate([b[0] for b in packed[:3]]), epochs[0]), "another seed, another order"


def test_members_sharing_one_seed_get_one_batch_for_all_of_them():
    alone, shared = _batches_of([3]), _batches_of([3, 3, 3])
    assert len(shared) == len(alone) == 9
    for mine, theirs in zip(alone, shared):
        np.testing.assert_array_equal(theirs, mine)  # [B], not [K, B]: one wide matmul in the first layer


# ---------------------------------------------------------------- the packed model against Keras


MEMBERS = [("reg=l1", "rate=1e-3"), ("reg=l2", "rate=1e-2", "reg.target=activity"),
           ("reg=l1_l2", "rate=1e-3", "reg.target=bias", "reg.layers=[1]"), ("reg=none", "seed=5")]


def _pack_of(member_overrides, optimizer="sgd", data=None):
    data = data or _Digits()
    optimizer = (f"optimizer={optimizer}",) if isinstance(optimizer, str) else optimizer
    cfgs = [cfg_of("model.hidden=[12,8]", *optimizer, *o) for o in member_overrides]
    models = []
    for cfg in cfgs:
        keras.utils.set_random_seed(cfg.seed)
        models.append(new_model(cfg, data))
    packed = PackedMLP([Member.of(c) for c in cfgs], data.input_dim, [12, 8], "relu", data.n_classes)
    packed.compile(optimizer=make_optimizer(cfgs[0], decay=False))
    packed.load_members([m.get_weights() for m in models])
    return cfgs, models, packed


class _Digits:  # what new_model reads of a Dataset
    input_dim, n_classes, task, image_shape = 64, 10, "classification", (8, 8, 1)


class _Housing:
    input_dim, n_classes, task = 8, None, "regression"


@tensorflow_only
def test_the_test_step_runs_without_xla_while_the_training_steps_use_it(monkeypatch):
    """The fence around Keras' trainer (`PackedMLP.make_test_function`): Keras builds its test function
    from the model's public `jit_compile`, which the packed model turns off for that one call only.
    Should Keras stop reading it while it builds the test function, this fails."""
    import inspect

    cfgs, _, packed = _pack_of(MEMBERS[:2])
    packed.compile(optimizer=make_optimizer(cfgs[0], decay=False), jit_compile=True)
    keras_own = inspect.getattr_static(packed, "jit_compile")  # Keras' property
    reads = []
    monkeypatch.setattr(PackedMLP, "jit_compile", property(
        lambda self: reads.append(keras_own.fget(self)) or reads[-1], keras_own.fset))
    packed.make_test_function(force=True)
    assert False in reads, f"Keras built the test function without reading jit_compile off (it read {reads})"
    assert packed.jit_compile is True and packed.test_function is not None, "the training steps keep XLA"


@pytest.mark.parametrize("optimizer, data", [
    ("sgd", _Digits()), ("adam", _Digits()), ("rmsprop", _Housing()),
    ("adamw", _Digits()),  # decoupled weight decay: the shared optimizer's, elementwise, so each member's own
    (("optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true", "optimizer.weight_decay=0.1"), _Digits())],
    ids=["sgd", "adam", "regression-rmsprop", "adamw", "nesterov-weight-decay"])
def test_each_member_pays_its_own_penalty_and_takes_the_step_it_would_take_alone(optimizer, data):
    rng = np.random.default_rng(0)
    x = rng.random((16, data.input_dim), dtype="float32")
    y = rng.integers(0, 10, 16) if data.n_classes else rng.normal(size=16).astype("float32")
    cfgs, models, packed = _pack_of(MEMBERS, optimizer, data)
    _, activity = packed.forward(ops.convert_to_tensor(x), training=False)
    penalties = ops.convert_to_numpy(packed.weight_penalty() + activity)
    for k, model in enumerate(models):
        model(x)  # Keras collects the activity penalty of this call
        np.testing.assert_allclose(penalties[k], float(sum(model.losses)) if model.losses else 0.0,
                                   rtol=1e-5, atol=1e-7)
    logs = packed.train_on_batch(x, y, return_dict=True)
    for k, model in enumerate(models):
        alone = model.train_on_batch(x, y, return_dict=True)
        np.testing.assert_allclose(logs["loss"][k], alone["loss"], rtol=1e-5)
        np.testing.assert_allclose(logs["data_loss"][k], alone["data_loss"], rtol=1e-5)
        second = "accuracy" if data.n_classes else "mae"
        np.testing.assert_allclose(logs[second][k], alone[second], rtol=1e-5)
        for mine, theirs in zip(packed.member_weights(k), model.get_weights()):
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


TODAYS = [("optimizer.weight_decay=0.1", "max_norm=0.5"), ("label_smoothing=0.2",),
          ("reg=l2", "rate=1e-2", "optimizer.weight_decay=0.01", "label_smoothing=0.1", "max_norm=1.0"), ()]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weight_decay_max_norm_and_label_smoothing_are_each_members_own_step(optimizer):
    """Members that differ in decoupled weight decay, max-norm and label smoothing take, in one packed
    step, the step each takes alone (Keras' decay before the update, MaxNorm after it, the smoothed
    cross-entropy), to float precision; the bounds bind (digits' initial columns are longer)."""
    rng = np.random.default_rng(1)
    x = rng.random((16, 64), dtype="float32")
    y = rng.integers(0, 10, 16)
    cfgs, models, packed = _pack_of(TODAYS, optimizer)
    logs = packed.train_on_batch(x, y, return_dict=True)
    for k, model in enumerate(models):
        alone = model.train_on_batch(x, y, return_dict=True)
        np.testing.assert_allclose(logs["data_loss"][k], alone["data_loss"], rtol=1e-5)
        np.testing.assert_allclose(logs["loss"][k], alone["loss"], rtol=1e-5)
        for mine, theirs in zip(packed.member_weights(k), model.get_weights()):
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    first = packed.member_weights(0)[0]  # member 0's first kernel: every column within 0.5
    assert np.sqrt((first ** 2).sum(axis=0)).max() == pytest.approx(0.5, rel=1e-4)
    assert np.sqrt((packed.member_weights(3)[0] ** 2).sum(axis=0)).max() > 0.6, "no bound: untouched"


def test_input_noise_is_each_members_own():
    _, _, packed = _pack_of([("input_noise=0.5",), ("input_noise=0.1",), ()])
    x = ops.ones((2000, 64))
    noisy = ops.convert_to_numpy(packed._noisy(x))
    assert noisy.shape == (3, 2000, 64)
    assert abs(noisy[0].std() - 0.5) < 0.01 and abs(noisy[1].std() - 0.1) < 0.005 and abs(noisy[0].mean() - 1) < 0.01
    np.testing.assert_array_equal(noisy[2], 1.0)


def test_dropout_is_each_members_own():
    _, _, packed = _pack_of([("dropout=0.5", "dropout_layers=[0]"), ("dropout=0.3", "dropout_type=gaussian"), ()])
    h = ops.ones((3, 2000, 12))
    dropped = ops.convert_to_numpy(packed._dropout(0, h))
    assert abs((dropped[0] == 0).mean() - 0.5) < 0.05 and set(np.unique(dropped[0])) == {0.0, 2.0}
    assert (dropped[1] != 0).all() and abs(dropped[1].std() - np.sqrt(0.3 / 0.7)) < 0.05
    np.testing.assert_array_equal(dropped[2], 1.0)
    np.testing.assert_array_equal(ops.convert_to_numpy(packed._dropout(1, h))[0], 1.0), "member 0 drops only after layer 0"


# ---------------------------------------------------------------- early stopping per member


@pytest.mark.parametrize("restore", [True, False])
@pytest.mark.parametrize("monitor, values", [
    ("val_data_loss", [0.9, 0.8, 0.85, 0.79, 0.795, 0.80, 0.7]),
    ("val_accuracy", [0.5, 0.6, 0.6, 0.58, 0.7, 0.69, 0.68]),
])
def test_a_members_early_stopping_stops_and_keeps_what_keras_early_stopping_would(monitor, values, restore):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    keras_es = keras.callbacks.EarlyStopping(monitor=monitor, mode=keras_mode(monitor), patience=2, min_delta=0.004,
                                             restore_best_weights=restore)
    keras_es.set_model(model)
    mine = MemberStopping(monitor, 2, 0.004, restore)
    keras_es.on_train_begin()
    model.stop_training = False  # as fit sets it
    mine.reset()
    stopped_at = None
    for epoch, value in enumerate(values):
        model.set_weights([np.full((1, 1), epoch, "float32"), np.zeros(1, "float32")])
        keras_es.on_epoch_end(epoch, {monitor: value})
        stops = mine.update(epoch, {monitor: value}, model.get_weights)
        assert stops == bool(model.stop_training), f"epoch {epoch}"
        if stops:
            stopped_at = epoch
            break
    keras_es.on_train_end()
    assert stopped_at is not None
    kept = mine.kept if mine.kept is not None else model.get_weights()
    assert kept[0][0, 0] == model.get_weights()[0][0, 0], "the same epoch's weights are kept"


# ---------------------------------------------------------------- a real packed sweep (slow)


FAST = ["data=digits", "model.hidden=[32,16]", "optimizer=sgd", "optimizer.lr=0.05", "epochs=6",
        "early_stopping.enabled=true", "early_stopping.patience=1"]
JOBS_OF = ["reg=l1,l2", "rate=1e-4,3e-3", "dropout=0,0.3"]  # alone; packed with rate=1e3 too, which diverges


def _jobs(tmp_path, experiment):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`sweeps.kind` = 'job'", max_results=100)
    return client, {r.info.run_name: r for r in runs}


@pytest.mark.slow
def test_a_packed_sweep_trains_what_the_unpacked_sweep_trains_and_a_diverging_member_fails_alone(tmp_path):
    plain = run_cli(tmp_path, "-m", *JOBS_OF, *FAST, "tracking.experiment=plain", timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    packed = run_cli(tmp_path, "-m", "reg=l1,l2", "rate=1e-4,3e-3,1e3", "dropout=0,0.3", *FAST,
                     "hydra/launcher=packed", "hydra.launcher.n_jobs=2", "tracking.experiment=packed", timeout=600,
                     env=_env(tmp_path, CUDA_VISIBLE_DEVICES="3,5"))  # each worker: one of the two GPUs
    assert packed.returncode == 1, packed.stderr[-3000:]  # the rate=1e3 members diverge
    assert "Traceback" not in packed.stderr
    client, alone = _jobs(tmp_path, "plain")
    _, together = _jobs(tmp_path, "packed")
    assert len(together) == 12
    sizes = sorted(1 + len(json.loads(r.data.tags["sweeps.packed_with"])) for r in together.values())
    assert sizes == [4] * 4 + [8] * 8, "12 jobs: a pack of 8 (max_pack) and a pack of 4"
    pids = {size: {r.data.tags["sweeps.pid"] for r in together.values()
                   if 1 + len(json.loads(r.data.tags["sweeps.packed_with"])) == size} for size in (4, 8)}
    (parent,) = client.search_runs([client.get_experiment_by_name("packed").experiment_id],
                                   "tags.`sweeps.kind` = 'sweep'")
    assert len(pids[4]) == len(pids[8]) == 1 and pids[4] != pids[8], "each pack in its own worker (n_jobs=2)"
    assert parent.data.tags["sweeps.pid"] not in pids[4] | pids[8], "workers, not the launching process"
    devices = {size: {r.data.tags["sweeps.cuda_visible_devices"] for r in together.values()
                      if 1 + len(json.loads(r.data.tags["sweeps.packed_with"])) == size} for size in (4, 8)}
    assert sorted(devices[4] | devices[8]) == ["3", "5"] and len(devices[4]) == 1, devices
    for name in (f"{reg} rate=1e3 dropout={p}" for reg in ("l1", "l2") for p in (0, 0.3)):
        assert together[name].info.status == "FAILED"
        assert "training diverged" in together[name].data.tags["sweeps.error"]
    for name, run in alone.items():
        mine = together[name]
        assert mine.info.status == "FINISHED", name
        assert {**mine.data.params, "tracking.experiment": "plain"} == run.data.params
        assert set(mine.data.metrics) >= set(run.data.metrics) - {"logging_overhead_pct"}
        history = [m.value for m in client.get_metric_history(run.info.run_id, "val_data_loss")]
        packed_history = [m.value for m in client.get_metric_history(mine.info.run_id, "val_data_loss")]
        if name.endswith("dropout=0"):  # the same arithmetic on the same batches: float tolerance
            assert len(packed_history) == len(history), f"{name}: early stopping ends where it ends alone"
            np.testing.assert_allclose(packed_history, history, rtol=0.01, err_msg=name)
            assert mine.data.metrics["best_epoch"] == run.data.metrics["best_epoch"]
            assert abs(mine.data.metrics["test_accuracy"] - run.data.metrics["test_accuracy"]) <= 0.005, name
            np.testing.assert_allclose(mine.data.metrics["test_data_loss"], run.data.metrics["test_data_loss"],
                                       rtol=0.01)
            np.testing.assert_allclose(mine.data.metrics["penalty"], run.data.metrics["penalty"], rtol=0.01,
                                       atol=1e-6)
        else:  # other dropout masks: within seed-to-seed noise
            assert abs(mine.data.metrics["test_accuracy"] - run.data.metrics["test_accuracy"]) <= 0.04, name
            np.testing.assert_allclose(min(packed_history), min(history), rtol=0.25, err_msg=name)
        artifacts = {f.path for f in client.list_artifacts(mine.info.run_id)}
        assert {"curves.png", "config.yaml", "model_summary.txt"} <= artifacts

    # the member's model is an ordinary Keras model of the unpacked architecture that scores as logged
    from sweeps.training.data import load_dataset
    from sweeps.tracking import load_keras_model
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run = together["l2 rate=3e-3 dropout=0.3"]
    model = load_keras_model(f"runs:/{run.info.run_id}/model")
    assert [layer.name for layer in model.layers if "hidden" in layer.name] == ["hidden_0", "hidden_1"]
    data = load_dataset(cfg_of().data)
    scored = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    np.testing.assert_allclose(scored["accuracy"], run.data.metrics["test_accuracy"], rtol=1e-6)

    again = run_cli(tmp_path, "-m", *JOBS_OF, *FAST, "hydra/launcher=packed", "tracking.experiment=packed",
                    timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("not retrained: it FINISHED") == 8, "a rerun trains nothing that FINISHED"
    assert "oneDNN" not in packed.stderr + again.stderr, "TensorFlow's start-up noise stays held back"


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2], ids=["in-process", "worker"])
def test_ctrl_c_ends_every_member_and_the_sweep_killed(tmp_path, n_jobs):
    proc, stderr = interrupt_after_first_epoch(tmp_path, ["-m", "reg=l1,l2", "epochs=500", "data=digits",
                                                          "model.hidden=[16]", "tracking.log_model=false",
                                                          "hydra/launcher=packed", f"hydra.launcher.n_jobs={n_jobs}"])
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted (SIGINT)" in stderr and "Traceback" not in stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id], max_results=100)
    assert sorted((r.data.tags["sweeps.kind"], r.info.status) for r in runs) == [
        ("job", "KILLED"), ("job", "KILLED"), ("sweep", "KILLED")]
