"""The builder puts penalties, dropout and batch norm exactly where configured; evaluation agrees with Keras;
today's regularizers (decoupled weight decay, max-norm, label smoothing, input noise) do what they say."""

from dataclasses import replace

import keras
import numpy as np
import pytest

from sweeps.training.data import load_dataset
from sweeps.training.fitting import EVAL_BATCH, evaluation, evaluation_batches, new_model
from sweeps.training.models import build_model, compile_model, kernel_layers


@pytest.mark.parametrize("preset, params", [("mlp_512_512", 669_706), ("mlp_400_300", 437_310),
                                            ("mlp_64_64", 55_050), ("mlp_128x4", 151_306),
                                            ("mlp_64_32", 52_650)])
def test_presets_match_the_notebooks_parameter_counts(make_cfg, preset, params):
    cfg = make_cfg(f"model={preset}", fast=False)
    assert build_model(cfg, 784, 10).count_params() == params


def _regularized(model, arg):
    return [layer.name for layer in kernel_layers(model) if getattr(layer, arg) is not None]


@pytest.mark.parametrize("target, arg", [("kernel", "kernel_regularizer"), ("activity", "activity_regularizer"),
                                         ("bias", "bias_regularizer")])
def test_penalty_goes_to_the_target_of_the_listed_layers(make_cfg, target, arg):
    cfg = make_cfg("reg=l1", "rate=1e-3", f"reg.target={target}", "reg.layers=[0,2]", "model.hidden=[8,8,8]")
    model = build_model(cfg, 4, 3)
    assert _regularized(model, arg) == ["hidden_0", "hidden_2"]
    others = {"kernel_regularizer", "activity_regularizer", "bias_regularizer"} - {arg}
    assert all(not _regularized(model, other) for other in others)
    assert getattr(model.get_layer("output"), arg) is None


def test_l1_l2_strengths_and_no_penalty_for_none(make_cfg):
    model = build_model(make_cfg("reg=l1_l2", "rate=0.01"), 4, 3)
    reg = model.get_layer("hidden_1").kernel_regularizer
    assert isinstance(reg, keras.regularizers.L1L2)
    assert reg.get_config() == pytest.approx({"l1": 0.01, "l2": 0.01})
    assert not _regularized(build_model(make_cfg("reg=none", "rate=0.01"), 4, 3), "kernel_regularizer")


def test_penalty_adds_to_the_loss(make_cfg):
    model = build_model(make_cfg("reg=l2", "rate=0.5"), 4, 3)
    assert len(model.losses) == 2 and all(float(loss) > 0 for loss in model.losses)


@pytest.mark.parametrize("kind, cls", [("standard", keras.layers.Dropout), ("gaussian", keras.layers.GaussianDropout)])
def test_dropout_after_the_listed_hidden_layers(make_cfg, kind, cls):
    cfg = make_cfg("dropout=0.3", f"dropout_type={kind}", "dropout_layers=[1]", "model.hidden=[8,8,8]")
    names = [layer.name for layer in build_model(cfg, 4, 3).layers]
    assert names == ["hidden_0", "hidden_1", "dropout_1", "hidden_2", "output"]
    layer = build_model(cfg, 4, 3).get_layer("dropout_1")
    assert type(layer) is cls and layer.rate == pytest.approx(0.3)


def test_dropout_everywhere_and_batchnorm(make_cfg):
    cfg = make_cfg("dropout=0.5", "model.batchnorm=true", "model.hidden=[8,8]")
    names = [layer.name for layer in build_model(cfg, 4, 3).layers]
    assert names == ["hidden_0", "bn_0", "dropout_0", "hidden_1", "bn_1", "dropout_1", "output"]
    assert not any("dropout" in n for n in (layer.name for layer in build_model(make_cfg(), 4, 3).layers))


def test_output_follows_the_task(make_cfg):
    clf = build_model(make_cfg(), 64, 10).get_layer("output")
    reg = build_model(make_cfg(), 8, None).get_layer("output")
    assert clf.units == 10 and clf.activation.__name__ == "softmax"
    assert reg.units == 1 and reg.activation.__name__ == "linear"


@pytest.mark.parametrize("opt, cls, lr", [("rmsprop", keras.optimizers.RMSprop, 1e-3),
                                          ("adam", keras.optimizers.Adam, 1e-3), ("sgd", keras.optimizers.SGD, 1e-2),
                                          ("adamw", keras.optimizers.AdamW, 1e-3), ("nadam", keras.optimizers.Nadam, 1e-3)])
def test_optimizer_group(make_cfg, opt, cls, lr):
    model = compile_model(build_model(make_cfg(f"optimizer={opt}"), 4, 3), make_cfg(f"optimizer={opt}"), "classification")
    assert isinstance(model.optimizer, cls)
    assert float(model.optimizer.learning_rate) == pytest.approx(lr)


# ---------------------------------------------------------------- today's regularizers


def _batch(classes=10, inputs=64, rows=32):
    rng = np.random.default_rng(0)
    return rng.random((rows, inputs), dtype="float32"), np.arange(rows) % classes


def _trained(cfg, steps=1):
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg, 64, 10), cfg, "classification")
    rng = np.random.default_rng(1)  # biases away from 0, so decaying them would show
    model.set_weights([w if w.ndim > 1 else rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    before = [w.copy() for w in model.get_weights()]
    x, y = _batch()
    for _ in range(steps):
        logs = model.train_on_batch(x, y, return_dict=True)
    return model, before, logs


@pytest.mark.parametrize("optimizer", [("optimizer=sgd",), ("optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"),
                                       ("optimizer=adam",)], ids=["sgd", "nesterov", "adam"])
def test_weight_decay_shrinks_kernels_apart_from_the_gradient_and_adds_no_penalty_term(make_cfg, optimizer):
    """Decoupled (Loshchilov & Hutter): w <- w - lr * wd * w next to the optimizer's own step from the
    same gradient, on kernels only; the loss is the data term alone (no L2 term in it)."""
    wd = 0.5
    plain, before, _ = _trained(make_cfg(*optimizer))
    decayed, same_start, logs = _trained(make_cfg(*optimizer, f"optimizer.weight_decay={wd}"))
    lr = float(decayed.optimizer.learning_rate)
    assert logs["loss"] == pytest.approx(logs["data_loss"], rel=1e-6), "no penalty term in the loss"
    for var, start, start_plain, w_plain, w_decayed in zip(decayed.trainable_variables, same_start, before,
                                                           plain.get_weights(), decayed.get_weights()):
        np.testing.assert_array_equal(start, start_plain)  # premise: one seed, one start
        expected = w_plain - lr * wd * start if "kernel" in var.path else w_plain
        np.testing.assert_allclose(w_decayed, expected, rtol=1e-5, atol=1e-7, err_msg=var.path)


def test_max_norm_bounds_every_units_incoming_weights(make_cfg):
    model, _, _ = _trained(make_cfg("max_norm=0.3", "optimizer=sgd", "optimizer.lr=1.0"), steps=3)
    for layer in kernel_layers(model):
        norms = np.linalg.norm(layer.kernel.numpy(), axis=0)  # one column per unit
        assert norms.max() <= 0.3 + 1e-5 and norms.max() > 0.29, (layer.name, norms.max())
    free, _, _ = _trained(make_cfg("optimizer=sgd", "optimizer.lr=1.0"), steps=3)
    assert np.linalg.norm(free.get_layer("hidden_0").kernel.numpy(), axis=0).max() > 0.3, "premise: it binds"


def test_label_smoothing_is_the_data_loss_as_keras_defines_it(make_cfg):
    cfg = make_cfg("label_smoothing=0.2")
    model = compile_model(build_model(cfg, 64, 10), cfg, "classification")
    x, y = _batch()
    p = np.clip(model.predict(x, verbose=0), 1e-7, 1 - 1e-7)
    target = np.eye(10)[y] * 0.8 + 0.2 / 10
    direct = float(np.mean(-(target * np.log(p)).sum(axis=1)))
    got = model.evaluate(x, y, verbose=0, return_dict=True)
    assert got["data_loss"] == pytest.approx(direct, rel=1e-4) and got["loss"] == pytest.approx(direct, rel=1e-4)
    unsmoothed = float(np.mean(-np.log(p[np.arange(len(y)), y])))
    assert abs(direct - unsmoothed) > 1e-3, "premise: smoothing changes the value"


def test_input_noise_perturbs_training_inputs_only(make_cfg):
    model = build_model(make_cfg("input_noise=0.5"), 64, 10)
    assert model.layers[0].name == "input_noise" and model.layers[0].stddev == 0.5
    x, _ = _batch()
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))
    assert build_model(make_cfg(), 64, 10).layers[0].name == "hidden_0", "none without it"


def test_evaluation_from_the_process_batches_matches_keras_on_the_arrays_and_folds_get_their_own(make_cfg):
    cfg = make_cfg("data=digits", "model.hidden=[16]", "reg=l2", "rate=1e-3")
    data = load_dataset(cfg.data)
    model = new_model(cfg, data)
    got = evaluation(model, data)
    for split, prefix in (("test", "test_"), ("train", "final_train_")):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        want = model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
        assert got[f"{prefix}loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert got[f"{prefix}accuracy"] == pytest.approx(want["accuracy"], rel=1e-6)
    assert evaluation_batches(load_dataset(cfg.data), "test") is evaluation_batches(data, "test")  # built once
    assert sum(len(y) for _, y in evaluation_batches(data, "val")) == len(data.x_val)
    fold = replace(data, x_val=data.x_val[:7], y_val=data.y_val[:7])  # as cross-validation makes its folds
    assert sum(len(y) for _, y in evaluation_batches(fold, "val")) == 7
