"""One sweep, two launchers: wall time and per-job overhead, side by side in one run.

    make bench            # or: python benchmarks/bench_sweep.py [--epochs 3] [--jobs-per-worker 2]

The same 8-job sweep (reg=l1,l2 x rate=1e-5,1e-4,1e-3,1e-2; 64-32 MLP, SGD, batch 32, Fashion-MNIST
or digits when it is absent) runs as `python -m sweeps.train -m ...` under the basic launcher
(jobs one after another in one process) and under joblib with 2 workers, each into a throwaway
SQLite store (created before the clock starts). Per-job overhead = (sweep wall time - sum of the
jobs' train_time_s) / jobs: what a job costs besides fitting (process start, TensorFlow import,
data, tracking, evaluation, saving).
Work outside fit = a run's duration minus its train_time_s (logging the config, evaluating the
training and test sets, the curves figure, saving the model, closing the run), median over the
jobs that are not the first of their process (the first also pays one-time imports and MLflow's
scan of installed packages). Absolute seconds on a shared machine are noise; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweeps.tracking import tags
from sweeps.training.data import load_dataset
from sweeps.errors import DataError

GRID = ["reg=l1,l2", "rate=1e-5,1e-4,1e-3,1e-2", "model=mlp_64_32", "optimizer=sgd", "batch_size=32"]
LAUNCHERS = {"basic": [], "joblib, 2 workers": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def dataset() -> str:
    from omegaconf import OmegaConf

    from sweeps.config import DataConfig, DatasetName

    try:
        load_dataset(OmegaConf.structured(DataConfig(name=DatasetName.fashion_mnist)))
        return "fashion_mnist"
    except DataError:
        return "digits"


def run_sweep(args: list[str], folder: Path) -> tuple[float, MlflowClient, list]:
    """`python -m sweeps.train -m ARGS` into a throwaway store in `folder`, created before the clock
    starts (creating MLflow's tables takes ~2 s, once per store): (wall seconds, client, job runs)."""
    uri = f"sqlite:///{folder}/mlflow.db"
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its "creating tables" lines are not the bench's output
    MlflowClient(uri).search_experiments()  # the store's tables, made before the clock: a user's store exists
    tic = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sweeps.train", "-m", *args, f"hydra.sweep.dir={folder}/multirun"],
                          cwd=folder, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(args)}):\n{proc.stderr[-3000:]}")
    client = MlflowClient(uri)
    jobs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id],
                              "tags.`sweeps.kind` = 'job'", max_results=100)
    return wall, client, jobs


def sweep(launcher: list[str], epochs: int, data: str, folder: Path) -> tuple[float, float, int, float]:
    """(wall seconds, sum of train_time_s, jobs FINISHED, median work outside fit of the jobs that
    were not their process's first) of the 8-job sweep under `launcher`."""
    wall, _, jobs = run_sweep([*GRID, f"data={data}", f"epochs={epochs}", *launcher], folder)
    return wall, sum(r.data.metrics["train_time_s"] for r in jobs), len(jobs), outside_fit(jobs)


def outside_fit(jobs: list) -> float:
    """Median of (run duration - train_time_s) over the jobs after the first of each process."""
    seen, later = set(), []
    for run in sorted(jobs, key=lambda r: r.info.start_time):
        pid = run.data.tags.get(tags.PID)
        if pid in seen:
            later.append((run.info.end_time - run.info.start_time) / 1000 - run.data.metrics["train_time_s"])
        seen.add(pid)
    return statistics.median(later) if later else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    data = dataset()
    print(f"8-job sweep on {data}, 64-32 SGD batch 32, {args.epochs} epochs, {os.cpu_count()} cores")
    results = {}
    for name, launcher in LAUNCHERS.items():
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = sweep(launcher, args.epochs, data, Path(tmp))
    print("\n| launcher | wall (s) | sum of train_time_s (s) | per-job overhead (s) | work outside fit, later jobs (s) |"
          "\n|---|---|---|---|---|")
    for name, (wall, fit, jobs, outside) in results.items():
        print(f"| {name} | {wall:.1f} | {fit:.1f} | {(wall - fit) / jobs:.2f} | {outside:.2f} |")
    basic, parallel = results["basic"][0], results["joblib, 2 workers"][0]
    print(f"\nwall-time ratio basic / joblib: {basic / parallel:.2f}x")


if __name__ == "__main__":
    main()
