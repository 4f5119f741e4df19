"""The builder puts penalties, dropout and batch norm exactly where configured; evaluation agrees with Keras."""

from dataclasses import replace

import keras
import pytest

from sweeps.data import load_dataset
from sweeps.fitting import EVAL_BATCH, evaluation, evaluation_batches, new_model
from sweeps.models import build_model, compile_model, hidden_dense_layers


@pytest.mark.parametrize("preset, params", [("mlp_512_512", 669_706), ("mlp_400_300", 437_310),
                                            ("mlp_64_64", 55_050), ("mlp_128x4", 151_306),
                                            ("mlp_64_32", 52_650)])
def test_presets_match_the_notebooks_parameter_counts(make_cfg, preset, params):
    cfg = make_cfg(f"model={preset}", fast=False)
    assert build_model(cfg, 784, 10).count_params() == params


def _regularized(model, arg):
    return [layer.name for layer in hidden_dense_layers(model) if getattr(layer, arg) is not None]


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
                                          ("adam", keras.optimizers.Adam, 1e-3), ("sgd", keras.optimizers.SGD, 1e-2)])
def test_optimizer_group(make_cfg, opt, cls, lr):
    model = compile_model(build_model(make_cfg(f"optimizer={opt}"), 4, 3), make_cfg(f"optimizer={opt}"), "classification")
    assert isinstance(model.optimizer, cls)
    assert float(model.optimizer.learning_rate) == pytest.approx(lr)


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
