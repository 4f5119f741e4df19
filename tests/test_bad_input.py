"""Bad input, by class: one line naming the key or file and the fix, before anything is trained.

Each class is checked in one place (every integer key, every float key, every store URI, every
composed config, every data file), so a case here stands for its whole class.
"""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sweeps import api
from sweeps.config import validate
from sweeps.training.data import read_pixel_csv
from sweeps.errors import ConfigError, DataError
from sweeps.sweeping.search import check_storage
from sweeps.train import check_composed, hydra_args

from conftest import write_kaggle_csv


@pytest.mark.parametrize("overrides, message", [
    (["seed=4294967296"], "seed=4294967296 is out of range: use an integer of at most 2147483647"),
    (["batch_size=9223372036854775808"], "batch_size=9223372036854775808 is out of range"),
    (["model.hidden=[64,3000000000]"], "model.hidden=3000000000 is out of range"),
    (["data=circles", "data.noise=inf"], "data.noise=inf is invalid: use a finite number"),
    (["data.val_split=0"], "optimized_metric=val_data_loss: data.val_split=0 leaves no validation data"),
    (["data=california_housing", "optimized_metric=val_accuracy"], "optimized_metric=val_accuracy: "
                                                                   "data=california_housing is a regression"),
    (["early_stopping.enabled=true", "early_stopping.monitor=val_mae"], "early_stopping.monitor=val_mae: "
                                                                        "data=digits is a classification"),
    (["optimized_metric=cv_val_loss_mean"], "optimized_metric=cv_val_loss_mean: only a cross-validated job"),
    (["tracking.uri=''"], "tracking.uri='' is invalid: leave it out (the store is then $MLFLOW_TRACKING_URI"),
    (["tracking.uri=foo://bar"], "tracking.uri=foo://bar: MLflow cannot open a foo:// store"),
    (["tracking.artifact_root=s3://bucket/x"], "tracking.artifact_root=s3://bucket/x: s3:// needs the boto3 package"),
    (["model.name='a/b'"], "model.name='a/b' is invalid: a name may not hold /"),
    (["model.name=" + "x" * 7000], "model.name: its value has 7000 characters and MLflow keeps at most 6000"),
    (["optimizer.weight_decay=-1e-4"], "optimizer.weight_decay=-0.0001 is invalid: use a value >= 0"),
    (["optimizer=adamw", "optimizer.weight_decay=0"], "optimizer=adamw needs optimizer.weight_decay > 0"),
    (["optimizer=adam", "optimizer.nesterov=true"], "optimizer.nesterov=true needs optimizer=sgd with optimizer.momentum > 0"),
    (["optimizer=sgd", "optimizer.nesterov=true"], "optimizer.nesterov=true needs optimizer=sgd with optimizer.momentum > 0"),
    (["max_norm=0"], "max_norm=0.0 is invalid: use a value > 0"),
    (["label_smoothing=1"], "label_smoothing=1.0 is invalid: use a value in [0, 1)"),
    (["data=california_housing", "optimized_metric=val_mae", "label_smoothing=0.1"],
     "label_smoothing=0.1: data=california_housing is a regression"),
    (["input_noise=-0.1"], "input_noise=-0.1 is invalid: use a standard deviation >= 0"),
    (["optimized_metric=[val_data_loss,val_data_loss]"], "optimized_metric=[val_data_loss,val_data_loss]: name one "
                                                         "metric, or a list of different ones"),
    (["optimized_metric=[val_data_loss,hidden_2/rel_sparsity]", "model.hidden=[8,8]"],
     "optimized_metric=[val_data_loss,hidden_2/rel_sparsity]: the model has no layer hidden_2"),
    (["optimized_metric=hidden_0/rel_sparsity"], "optimized_metric=hidden_0/rel_sparsity is invalid: use a logged result"),
    (["data=california_housing", "optimized_metric=[val_accuracy,active_weights]"],
     "optimized_metric=val_accuracy: data=california_housing is a regression"),
])
def test_every_value_of_a_class_is_checked_in_one_place(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(*overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_values_that_fit_their_class_pass(make_cfg):
    validate(make_cfg("seed=2147483647", "data.validation=test", "data.val_split=0"))
    validate(make_cfg("data=california_housing", "optimized_metric=val_mae", "cv.folds=0"))
    validate(make_cfg("cv.folds=3", "optimized_metric=cv_val_accuracy_mean"))
    validate(make_cfg("optimized_metric=[val_data_loss,hidden_1/rel_sparsity,active_weights]"))


@pytest.mark.parametrize("overrides, multirun, message", [
    (["rate=1e-3)"], False, "'rate=1e-3)' cannot be parsed (extraneous input ')' expecting <EOF>); quote"),
    (["model.name=café"], False, "'model.name=café' cannot be parsed"),
    (["hydra/launcher=nonexistent"], False, "In 'hydra/config': Could not find 'hydra/launcher/nonexistent'; "
                                            "choose one of basic, joblib, packed,"),
    (["hydra/sweeper=nonexistent"], True, "In 'hydra/config': Could not find 'hydra/sweeper/nonexistent'; "
                                          "choose one of basic, grid, optuna"),
    (["hydra/launcher=packed", "hydra.launcher.max_pack=abc"], True,
     "Error merging override hydra.launcher.max_pack=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], True, "hydra.launcher.n_jobs=0 is invalid"),
    (["hydra.run.dir=/etc/hostname/x"], False, "hydra.run.dir=/etc/hostname/x: cannot write there"),
    (["hydra.sweep.dir=/etc/hostname/x", "reg=l1,l2"], True, "hydra.sweep.dir=/etc/hostname/x: cannot write there"),
    (["seed=-1"], False, "seed=-1 is invalid"),  # a single run's values: checked before Hydra makes its folder
    (["repeat=3"], False, "repeat=3 repeats each configuration of a sweep: add -m"),
    (["checkpoint=true"], False, "checkpoint=true saves each epoch of a sweep's jobs, so a job SLURM requeues "
                                 "continues: add -m"),
])
def test_what_only_the_composed_config_shows_is_one_line(tmp_path, monkeypatch, overrides, multirun, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_composed(overrides, multirun)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    assert list(tmp_path.iterdir()) == [], "no folder is made for a command that cannot run"


def test_a_composed_config_that_can_run_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_composed(["data=digits", "reg=l1"], False)
    check_composed(["reg=l1,l2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"], True)


@pytest.mark.slow
def test_a_single_run_that_fails_a_check_leaves_no_folder_and_no_traceback(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for args in (["data=digits", "data.test_split=0.999"], ["hydra/launcher=nonexistent"]):
        proc = subprocess.run([sys.executable, "-m", "sweeps.train", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: In 'hydra/config': Could not find 'hydra/launcher/nonexistent'")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no outputs/, no store"


def test_a_test_split_that_leaves_nothing_to_train_on_names_the_key(make_cfg):
    from sweeps.training.data import load_dataset

    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg("data.test_split=0.999").data)
    assert str(err.value).startswith("data.test_split=0.999 leaves 1 of 1797 examples for training and "
                                     "validation, fewer than 20; use a smaller fraction")


@pytest.mark.parametrize("cell, message", [
    ((0, "pixel3"), None), ((1, "pixel5", 256), "data row 2 has a pixel outside the grey levels 0..255 (or not a whole number)"),
    ((2, "pixel1", 0.5), "data row 3 has a pixel outside the grey levels 0..255 (or not a whole number)"),
    ((1, "label", -1), "data row 2 has label -1, not a class 0..9"),
    ((3, "label", 12), "data row 4 has label 12, not a class 0..9"),
])
def test_csv_cells_out_of_their_range_are_refused_not_wrapped(tmp_path, cell, message):
    path = write_kaggle_csv(tmp_path / "train.csv", 6)
    if message is not None:
        frame = pd.read_csv(path)
        frame[cell[1]] = frame[cell[1]].astype(float)
        frame.loc[cell[0], cell[1]] = cell[2]
        frame.to_csv(path, index=False)
    if message is None:
        x, y = read_pixel_csv(path)
        assert x.dtype == np.uint8 and y.min() >= 0 and y.max() <= 9
        return
    with pytest.raises(DataError) as err:
        read_pixel_csv(path)
    assert str(err.value) == f"{path}: {message}; fix or re-export the file"


def test_optuna_storage_that_cannot_work_is_one_line(tmp_path):
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ConfigError, match="not a database URL"):
        check_storage("nonsense", tracking)
    with pytest.raises(ConfigError, match="is the tracking store's own database"):
        check_storage(f"sqlite:///{tmp_path}/../{tmp_path.name}/mlflow.db", tracking)
    check_storage(f"sqlite:///{tmp_path}/optuna.db", tracking)


@pytest.mark.slow
def test_an_optuna_storage_optuna_cannot_open_stops_the_search_in_one_line(tmp_path):
    (tmp_path / "corrupt.db").write_text("not a database")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = subprocess.run([sys.executable, "-m", "sweeps.train", "-m", "hydra/sweeper=optuna", "data=digits",
                           "rate=interval(1e-5,1e-3)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/corrupt.db"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: hydra.sweeper.storage=sqlite:///{tmp_path}/corrupt.db: Optuna cannot open it ((sqlite3.DatabaseError) "
        "file is not a database); give a SQLite file (sqlite:///optuna.db) or a database every worker reaches"]


def test_the_notebook_api_says_what_it_takes(store, make_cfg):
    with pytest.raises(TypeError, match=r"^sweep_id must be a sweep's run id or a unique prefix of it \(a str\), "
                                        r"not int 123$"):
        api.load_sweep(sweep_id=123, tracking_uri=store)
    with pytest.raises(TypeError, match=r"^group_seeds takes the DataFrame sweeps.load_sweep returned, not str 'abc'$"):
        api.group_seeds("abc")


def test_a_server_listening_for_other_machines_without_their_names_is_warned_at_start():
    from sweeps.server import exposed_without_names

    assert exposed_without_names("0.0.0.0", "").startswith("--host 0.0.0.0 without --allowed-hosts: MLflow answers "
                                                           "403 to every other machine; add --allowed-hosts")
    assert exposed_without_names("0.0.0.0", "box.lab,box.lab:5000") is None
    assert exposed_without_names("127.0.0.1", "") is None


def test_the_pre_check_reads_hydras_flags_as_hydra_does():
    """The fence around Hydra's private parser (`train.hydra_args`): should Hydra rename or move it,
    or read its flags otherwise, this fails here and not as a pre-check that skips a user's typo."""
    args = hydra_args(["-m", "--cfg", "job", "-cn", "config", "reg=l1,l2", "hydra.job.chdir=false", "--info"])
    assert args.multirun and args.cfg == "job" and args.config_name == "config" and args.info
    assert args.overrides == ["reg=l1,l2", "hydra.job.chdir=false"]
    plain = hydra_args(["rate=1e-3"])
    assert not plain.multirun and not (plain.help or plain.hydra_help or plain.cfg or plain.shell_completion)
    assert plain.overrides == ["rate=1e-3"]
