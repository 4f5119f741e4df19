"""Every conf/experiment/*.yaml composes into jobs that pass the config checks and differ (fast, in
this process); one experiment per component runs as a multirun with tiny overrides and finishes
every job (slow): regression on California housing, cross-validation, a search, the Kaggle CSV with
batch norm, early stopping and every penalty kind. The others train what those do, on the same
loaders (tests/test_data.py reads every file format).

The datasets are small files written here (MNIST and Fashion-MNIST IDX, Kaggle CSV, the California
archive) and found through $SWEEPS_DATA_DIR, so the test needs no internet.

Each experiment is its own `python -m sweeps.train -m` process with its own store. Most of such a
process is single-threaded start-up (importing TensorFlow and MLflow), so the module starts the
selected experiments two at a time (one per core, at most two) before its tests read the results.
"""

import itertools
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from conftest import write_cal_housing, write_idx_dataset, write_kaggle_csv
from sweeps.config import conf_dir, config_hash, validate

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
END_TO_END = ["california_warmup", "fashion_architectures", "fashion_regularizers", "search_regularization"]


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


def grid(name: str) -> list[list[str]]:
    """The jobs of a grid experiment as override lists (Hydra's cartesian product of its params)."""
    params = yaml.safe_load((conf_dir() / "experiment" / f"{name}.yaml").read_text())
    params = (params.get("hydra") or {}).get("sweeper", {}).get("params", {})
    return [list(job) for job in itertools.product(*([f"{key}={v.strip()}" for v in str(values).split(",")]
                                                      for key, values in params.items()))]


def expected_jobs(name: str) -> int:
    return SEARCH_TRIALS if is_search(name) else len(grid(name))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_into_jobs_that_pass_the_checks_and_differ(name):
    jobs = [[]] if is_search(name) else grid(name)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        configs = [compose("config", overrides=[f"+experiment={name}", *job]) for job in jobs]
    for cfg in configs:
        validate(cfg)
    assert len({config_hash(cfg) for cfg in configs}) == len(configs), "variants must differ"


def test_every_study_is_an_experiment_and_fashion_batch_size_is_one():
    assert "fashion_batch_size" in EXPERIMENTS and len(EXPERIMENTS) >= 8 and set(END_TO_END) <= set(EXPERIMENTS)


TIMEOUT_S = 900  # per experiment


@pytest.fixture(scope="module")
def finished(request, tmp_path_factory, data_dir) -> dict:
    """{name: (folder, completed process)} for every experiment selected in this session, run at most
    two at a time; each process is killed if it outlives TIMEOUT_S (or the fixture is interrupted)."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and "finished" in item.fixturenames and "name" in item.callspec.params]
    waiting, running, done = list(dict.fromkeys(selected)), {}, {}
    try:
        while waiting or running:
            while waiting and len(running) < max(1, min(2, os.cpu_count() or 1)):
                name = waiting.pop(0)
                folder = tmp_path_factory.mktemp(name)
                env = {**os.environ, "SWEEPS_DATA_DIR": str(data_dir), "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/m.db"}
                search = [f"hydra.sweeper.n_trials={SEARCH_TRIALS}"] if is_search(name) else []
                out, err = open(folder / "stdout.txt", "w+"), open(folder / "stderr.txt", "w+")
                proc = subprocess.Popen([sys.executable, "-m", "sweeps.train", "-m", f"+experiment={name}", "epochs=1",
                                         "data.limit=256", "tracking.log_model=false", *search],
                                        cwd=folder, env=env, stdout=out, stderr=err, text=True)
                running[name] = (proc, folder, out, err, time.monotonic())
            time.sleep(0.2)
            for name, (proc, folder, out, err, started) in list(running.items()):
                if proc.poll() is None and time.monotonic() - started < TIMEOUT_S:
                    continue
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=60)
                out.seek(0), err.seek(0)
                done[name] = (folder, subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()))
                out.close(), err.close()
                del running[name]
    finally:
        for proc, *_ in running.values():
            proc.kill()
            proc.wait(timeout=60)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("name", END_TO_END)
def test_experiment_runs_as_a_multirun(name, finished):
    folder, proc = finished[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{folder}/m.db")
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
    if is_search(name):  # the file picks the Optuna sweeper and its space: every job is a trial over those keys
        config = yaml.safe_load((conf_dir() / "experiment" / f"{name}.yaml").read_text())
        assert experiment.name == config["tracking"]["experiment"]
        assert all("sweeps.study" in j.data.tags and "sweeps.trial" in j.data.tags for j in jobs)
        assert all(set(config["hydra"]["sweeper"]["params"]) <= set(json.loads(j.data.tags["sweeps.swept"]))
                   for j in jobs)
