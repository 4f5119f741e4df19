"""Your model and your data (`model._target_`, `model=cnn`, `data=csv|npz|custom`): a tiny user package
written into a temp dir, real sweeps through it from the command line, and the seam's checks."""

import os
import re
import subprocess
import sys
import textwrap

import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from sweeps.config import validate
from sweeps.training.data import load_dataset
from sweeps.errors import ConfigError, DataError
from sweeps.training.fitting import new_model
from sweeps.training.models import kernel_layers

# A user's package: a 2-layer CNN builder for 8x8 images and a loader of digits as images.
USER_MODELS = '''
import keras


def build(spec, filters=4):
    """Two 3x3 convolutions that take the job's regularization, and a softmax."""
    inputs = keras.Input(spec.input_shape)
    x = keras.layers.Reshape(spec.image_shape)(spec.reg.input_noise()(inputs))
    x = keras.layers.Conv2D(filters, 3, activation="relu", name="conv_a", **spec.reg.conv_kwargs(0))(x)
    x = spec.reg.dropout(0)(x)
    x = keras.layers.Conv2D(filters, 3, activation="relu", name="conv_b", **spec.reg.conv_kwargs(1))(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(spec.outputs, activation=spec.output_activation)(x))


def plain(spec):
    """A model that takes no regularization from the job at all."""
    inputs = keras.Input(spec.input_shape)
    return keras.Model(inputs, keras.layers.Dense(spec.outputs, activation=spec.output_activation)(inputs))


def broken(spec):
    raise RuntimeError("the layer sizes do not add up")


def not_a_model(spec):
    return [spec]
'''
USER_DATA = '''
from sklearn.datasets import load_digits


def images(n=None):
    """Digits as (N, 8, 8) images, and the labels."""
    d = load_digits()
    return {"x_train": d.images[:n], "y_train": d.target[:n]}
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """my_pkg/{models,data}.py in tmp_path, importable here and by the CLI's processes."""
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent(USER_MODELS))
    (package / "data.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    for name in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path


def write_lab_csv(path, n=80, seed=0):
    """A lab's table: three numeric features, a string class that depends on them, a numeric target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    kind = np.where(x[:, 0] + x[:, 1] > 0, "treated", "control")
    lines = ["dose,weight,age,group,response"]
    lines += [f"{a:.4f},{b:.4f},{c:.4f},{k},{a * 2 + c:.4f}" for (a, b, c), k in zip(x, kind)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(folder, *args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    return subprocess.run([sys.executable, "-m", "sweeps.train", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_a_users_model_and_data_sweep_from_the_command_line(user_package):
    """model=my_net (a file of the user's, on their search path) + data=custom under the packed launcher
    (run alone, said once), then data=csv:
    runs nested and FINISHED, the conv kernels' statistics logged, the model reloads."""
    folder = user_package
    (folder / "conf" / "model").mkdir(parents=True)  # the user's own model= option, on a search path they add
    (folder / "conf" / "model" / "my_net.yaml").write_text("name: my_net\n_target_: my_pkg.models.build\n"
                                                         "kwargs: {filters: 3}\n")
    sweep = run_cli(folder, "-m", "model=my_net", f"hydra.searchpath=[file://{folder}/conf]", "data=custom", "data._target_=my_pkg.data.images", "reg=l1,l2", "rate=1e-3", "epochs=2",
                    "hydra/launcher=packed")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert (sweep.stdout + sweep.stderr).count("trained alone, not packed: model._target_=my_pkg.models.build") == 1
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweeps.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("sweeps.kind") == "job"]
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["model._target_"] == "my_pkg.models.build"
        assert child.data.params["model.kwargs.filters"] == "3"
        assert child.data.params["data._target_"] == "my_pkg.data.images"
        assert {"conv_a/kernel_l1", "conv_a/rel_sparsity", "conv_b/kernel_l2", "conv_b/sparsity"} <= set(child.data.metrics)
        assert int(child.data.params["n_params"]) == (9 * 3 + 3) + (9 * 3 * 3 + 3) + (4 * 4 * 3 * 10 + 10)
    by_reg = {c.data.params["reg.kind"]: c.data.metrics for c in children}
    assert by_reg["l1"]["conv_a/kernel_l1"] != by_reg["l2"]["conv_a/kernel_l1"], "the penalty reached the convs"
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    from sweeps.tracking import load_keras_model

    model = load_keras_model(f"runs:/{children[0].info.run_id}/model")
    assert model.predict(np.zeros((2, 64), "float32"), verbose=0).shape == (2, 10)

    csv = write_lab_csv(folder / "lab.csv")
    single = run_cli(folder, "data=csv", f"data.path={csv}", "data.target=group", "model.hidden=[8]", "epochs=2",
                     "tracking.experiment=lab")
    assert single.returncode == 0, single.stderr[-3000:]
    (run,) = client.search_runs([client.get_experiment_by_name("lab").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["data.target"] == "group"
    assert "test_accuracy" in run.data.metrics and int(run.data.params["n_train"]) + int(
        run.data.params["n_val"]) + int(run.data.params["n_test"]) == 80


def test_model_cnn_convolves_images_and_max_norm_bounds_every_filter(make_cfg):
    """model=cnn on 8x8 digits: Conv2D layers named hidden_<i> (the weight statistics cover them);
    max_norm keeps each filter's incoming weights (all axes but the output one) within the bound."""
    cfg = make_cfg("model=cnn", "model.hidden=[4,6]", "max_norm=0.3", "optimizer=sgd", "optimizer.lr=0.5", "dropout=0.1")
    validate(cfg)
    data = load_dataset(cfg.data)
    keras.utils.set_random_seed(0)
    model = new_model(cfg, data)
    convs = kernel_layers(model)
    assert [(type(layer).__name__, layer.name) for layer in convs] == [("Conv2D", "hidden_0"), ("Conv2D", "hidden_1")]
    assert [layer.name for layer in model.layers if "dropout" in layer.name] == ["dropout_0", "dropout_1"]
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=64, verbose=0)
    for layer in convs:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        norms = np.sqrt((kernel ** 2).sum(axis=(0, 1, 2)))
        assert norms.shape == (kernel.shape[-1],) and norms.max() <= 0.3 + 1e-4, norms
        assert norms.max() > 0.29, "the bound binds at this learning rate (else the test shows nothing)"


def test_your_data_gets_labels_tasks_images_and_is_read_again_when_edited(make_cfg, tmp_path, user_package):
    csv = write_lab_csv(tmp_path / "lab.csv")
    classes = load_dataset(make_cfg("data=csv", f"data.path={csv}", "data.target=group").data)
    assert load_dataset(make_cfg("data=csv", f"data.path={csv}", "data.target=group").data) is classes  # read once
    assert classes.task == "classification" and classes.n_classes == 2  # strings, numbered in sorted order
    assert classes.input_dim == 4 and classes.image_shape is None  # every other column is a feature
    numbers = load_dataset(make_cfg("data=csv", f"data.path={csv}", "data.target=response",
                                    "data.features=[dose,weight,age]", "optimized_metric=val_mae").data)
    assert numbers.task == "regression" and numbers.n_classes is None and numbers.y_train.dtype == np.float32
    assert abs(float(numbers.x_train[:, :3].mean())) < 0.2, "standardized like ours"

    x = np.random.default_rng(0).integers(0, 255, size=(40, 6, 6)).astype(np.uint8)
    y = np.arange(40) % 4 + 1  # classes 1..4: numbered 0..3
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:12], y_test=y[:12])
    arrays = load_dataset(make_cfg("data=npz", f"data.path={tmp_path / 'a.npz'}").data)
    assert arrays.image_shape == (6, 6, 1) and arrays.input_dim == 36 and len(arrays.x_test) == 12
    assert sorted(np.unique(arrays.y_train)) == [0, 1, 2, 3]
    as_numbers = load_dataset(make_cfg("data=npz", f"data.path={tmp_path / 'a.npz'}", "data.task=regression",
                                       "optimized_metric=val_mae").data)
    assert as_numbers.task == "regression" and float(as_numbers.y_train.max()) == 4.0

    loaded = load_dataset(make_cfg("data=custom", "data._target_=my_pkg.data.images", "+data.kwargs.n=300").data)
    assert loaded.image_shape == (8, 8, 1) and sum(loaded.sizes().values()) == 300

    write_lab_csv(csv, n=60, seed=1)
    os.utime(csv, ns=(1, 1))  # a different modification time even on a coarse clock
    after = load_dataset(make_cfg("data=csv", f"data.path={csv}", "data.target=group").data)
    assert sum(after.sizes().values()) == 60, "an edited file is read again"


@pytest.mark.parametrize("overrides, message", [
    (["model=custom"], "model=custom needs model._target_=my_pkg.models.build"),
    (["model=custom", "model._target_=nopkg.build"], "model._target_=nopkg.build: no package nopkg to import"),
    (["model._target_=build"], "model._target_=build: name a function as package.module.function"),
    (["+model.kwargs.a=1"], "model.kwargs does nothing without model._target_"),
    (["data=csv", "data.target=y"], "data=csv needs data.path, e.g. data.path=/path/to/file"),
    (["data=csv", "data.path=/no/such.csv", "data.target=y"], "data.path=/no/such.csv: no such file"),
    (["data=npz"], "data=npz needs data.path"),
    (["data=custom"], "data=custom needs data._target_, e.g. data._target_=my_pkg.load"),
    (["data.target=y"], "data.target=y does nothing with data=digits; it is read by data=csv only"),
    (["data.task=regression"], "data.task=regression does nothing with data=digits"),
    (["data=custom", "data._target_=my_pkg.load", "data.task=regression", "optimized_metric=val_accuracy"],
     "optimized_metric=val_accuracy: data.task=regression is a regression"),
])
def test_bad_settings_of_your_work_are_one_line(make_cfg, user_package, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(*overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("target, extra, message", [
    ("my_pkg.models.broken", [], "model._target_=my_pkg.models.broken raised RuntimeError: the layer sizes do not "
                                 "add up; fix the builder"),
    ("my_pkg.models.not_a_model", [], "model._target_=my_pkg.models.not_a_model returned list, not a keras.Model"),
    ("my_pkg.models.missing", [], "model._target_=my_pkg.models.missing: my_pkg.models has no function missing"),
    ("my_pkg.models.plain", ["reg=l2", "rate=1e-3"], "reg=l2: model._target_=my_pkg.models.plain never asks for "
                                                     "the penalty"),
    ("my_pkg.models.plain", ["dropout=0.2"], "dropout=0.2: model._target_=my_pkg.models.plain never asks for a dropout"),
    ("my_pkg.models.plain", ["input_noise=0.1"], "input_noise=0.1: model._target_=my_pkg.models.plain never asks"),
    ("my_pkg.models.plain", ["max_norm=2"], "max_norm=2.0: model._target_=my_pkg.models.plain never asks"),
    ("my_pkg.models.build", ["reg=l1", "rate=1e-3", "reg.layers=[2]"],
     "reg.layers=[2] is invalid: model._target_=my_pkg.models.build has hidden layers 0..1"),
    ("my_pkg.models.build", ["data=circles"], "model._target_=my_pkg.models.build raised"),
])
def test_a_builder_that_fails_or_ignores_the_job_is_named(make_cfg, user_package, target, extra, message):
    cfg = make_cfg("model=custom", f"model._target_={target}", *extra)
    validate(cfg)
    with pytest.raises(ConfigError) as err:
        new_model(cfg, load_dataset(cfg.data))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("content, extra, message", [
    ("a,b,label\n" + "1,2,x\n" * 20, ["data.target=lable"], "data.target=lable: no such column in {path}; did you "
                                                              "mean label?"),
    ("a,b,label\n" + "1,2,0\n" * 5 + "1,oops,1\n" + "1,2,1\n" * 14, ["data.target=label"],
     "data.path={path}: data row 6, column b holds 'oops', not a number"),
    ("a,b,label\n" + "1,2,0\n" * 5 + "1,,1\n" + "1,2,1\n" * 14, ["data.target=label"],
     "data.path={path}: data row 6, column b is empty"),
    ("a,b,label\n1,2,0\n3,4,1\n", ["data.target=label"], "data.path={path}: only 2 training examples; sweeps needs "
                                                         "at least 10"),
    ("a,b,label\n" + "1,2,0.5\n1,2,1\n" * 10, ["data.target=label", "data.task=classification"],
     "data.path={path}: label 0.5 is not a class (not a whole number); use data.task=regression"),
    ("a,label\n" + "1,x\n" * 20, ["data.target=label", "data.task=regression", "optimized_metric=val_mae"],
     "data.path={path}: the labels are not numbers"),
])
def test_bad_csv_files_are_one_line_naming_the_file(make_cfg, tmp_path, content, extra, message):
    path = tmp_path / "lab.csv"
    path.write_text(content)
    cfg = make_cfg("data=csv", f"data.path={path}", *extra)
    validate(cfg)
    with pytest.raises(DataError) as err:
        load_dataset(cfg.data)
    assert str(err.value).startswith(message.format(path=path)) and "\n" not in str(err.value)


def test_bad_npz_files_and_loaders_are_one_line(make_cfg, tmp_path, user_package):
    np.savez(tmp_path / "a.npz", x=np.zeros((20, 3)), y=np.zeros(20))
    np.savez(tmp_path / "b.npz", x_train=np.zeros((20, 3)), y_train=np.zeros(19))
    np.savez(tmp_path / "c.npz", x_train=np.full((20, 3), np.nan), y_train=np.zeros(20))
    (tmp_path / "d.npz").write_text("not a zip")
    for name, message in (("a", "needs arrays x_train and y_train (found x, y)"),
                          ("b", "x_train has 20 examples but y_train has shape (19,)"),
                          ("c", "x_train holds NaN or infinite values"), ("d", "cannot read as .npz")):
        with pytest.raises(DataError, match="^" + re.escape(f"data.path={tmp_path / name}.npz: {message}")):
            load_dataset(make_cfg("data=npz", f"data.path={tmp_path / name}.npz").data)
    (user_package / "my_pkg" / "bad_data.py").write_text("def load():\n    return 3\n")
    with pytest.raises(DataError, match=r"^data._target_=my_pkg.bad_data.load returned int; return \(x, y\)"):
        load_dataset(make_cfg("data=custom", "data._target_=my_pkg.bad_data.load").data)


def test_a_user_model_that_cannot_be_built_exits_2_in_one_line(user_package):
    proc = run_cli(user_package, "model=custom", "model._target_=my_pkg.models.broken", "data=digits", "epochs=1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == ("error: model._target_=my_pkg.models.broken raised RuntimeError: "
                                                    "the layer sizes do not add up; fix the builder")
    assert "Traceback" not in proc.stderr
    client = MlflowClient(f"sqlite:///{user_package}/mlflow.db")
    experiment = client.get_experiment_by_name("sweeps")
    assert experiment is None or not client.search_runs([experiment.experiment_id]), "nothing was trained"
