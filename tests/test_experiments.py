"""Every conf/experiment/*.yaml runs as a multirun with tiny overrides and finishes every job (slow).

The datasets are small files written here (MNIST and Fashion-MNIST IDX, Kaggle CSV, the California
archive) and found through $SWEEPS_DATA_DIR, so the test needs no internet.
"""

import os
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import write_cal_housing, write_idx_dataset, write_kaggle_csv
from sweeps.config import conf_dir

pytestmark = pytest.mark.slow
EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in ("mnist", "fashion_mnist"):
        write_idx_dataset(root / name, n_train=300, n_test=60)
    (root / "fashion_mnist_csv").mkdir()
    write_kaggle_csv(root / "fashion_mnist_csv" / "fashion-mnist_train.csv", 300)
    write_kaggle_csv(root / "fashion_mnist_csv" / "fashion-mnist_test.csv", 60)
    write_cal_housing(root / "california_housing", n=300)
    return root


SEARCH_TRIALS = 3  # trials run for an experiment that searches (hydra/sweeper=optuna)


def is_search(name: str) -> bool:
    defaults = yaml.safe_load((conf_dir() / "experiment" / f"{name}.yaml").read_text()).get("defaults", [])
    return {"override /hydra/sweeper": "optuna"} in defaults


def expected_jobs(name: str) -> int:
    if is_search(name):
        return SEARCH_TRIALS
    params = yaml.safe_load((conf_dir() / "experiment" / f"{name}.yaml").read_text())
    params = (params.get("hydra") or {}).get("sweeper", {}).get("params", {})
    count = 1
    for values in params.values():
        count *= len(str(values).split(","))
    return count


def test_every_study_is_an_experiment_and_fashion_batch_size_is_one():
    assert "fashion_batch_size" in EXPERIMENTS and len(EXPERIMENTS) >= 8


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_as_a_multirun(name, tmp_path, data_dir):
    env = {**os.environ, "SWEEPS_DATA_DIR": str(data_dir), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    search = [f"hydra.sweeper.n_trials={SEARCH_TRIALS}"] if is_search(name) else []
    proc = subprocess.run([sys.executable, "-m", "sweeps.train", "-m", f"+experiment={name}", "epochs=1",
                           "data.limit=256", "tracking.log_model=false", *search],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id])
    jobs = [r for r in runs if r.data.tags.get("sweeps.kind") == "job"]
    assert len(jobs) == expected_jobs(name) and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["sweeps.config_hash"] for r in jobs}) == len(jobs), "variants must differ"
    folds = [r for r in runs if r.data.tags.get("sweeps.kind") == "fold"]
    cv = yaml.safe_load((conf_dir() / "experiment" / f"{name}.yaml").read_text()).get("cv", {}).get("folds", 0)
    assert len(folds) == cv * len(jobs)
    if cv:
        assert all("cv_val_accuracy_mean" in r.data.metrics and "cv_val_accuracy_std" in r.data.metrics for r in jobs)
