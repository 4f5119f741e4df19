"""How much does tracking cost? Per-epoch logging vs an epoch, a per-epoch checkpoint, and saving the model.

    make bench            # or: python benchmarks/bench_logging.py [--epochs 3] [--reps 3]

Side by side in one process, on Fashion-MNIST (Debian package) or digits when it is absent:
  1. the same 512-512 MLP trained with and without a job's epoch callbacks (`JobEpochs`: the logger, best epoch, NaN stop), alternating, so that
     machine noise hits both; the logger also times its own work per epoch;
  2. the per-epoch checkpoint of a job on SLURM (`sweeps.training.checkpoint`: variables, optimizer state,
     early stopping) against the epoch, and its file size;
  3. `log_keras_model` (requirements given) against MLflow's default (requirements inferred by
     re-importing the model in a fresh process).
Prints medians and ratios; absolute seconds on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import keras
import mlflow
import mlflow.tensorflow
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from common import EpochTimer
from sweeps.training.callbacks import JobEpochs
from sweeps.training.checkpoint import Checkpoint
from sweeps.config import conf_dir, register_configs
from sweeps.training.data import load_dataset
from sweeps.errors import DataError
from sweeps.training.models import build_model, compile_model, kernel_layers
from sweeps.tracking import Tracker


def config(dataset: str):
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[f"data={dataset}", "batch_size=128"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    try:
        cfg = config("fashion_mnist")
        data = load_dataset(cfg.data)
    except DataError:
        cfg = config("digits")
        data = load_dataset(cfg.data)
    print(f"dataset {data.name}: {len(data.x_train)} training examples, MLP {list(cfg.model.hidden)}")

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        tracker = Tracker(uri, "bench", f"file://{tmp}/artifacts")
        exp = tracker.experiment_id
        plain, logged, log_cost = [], [], []
        for _ in range(args.reps):
            for with_logger in (False, True):
                model = compile_model(build_model(cfg, data.input_dim, data.n_classes), cfg, data.task)
                timer = EpochTimer()
                callbacks = [timer]
                if with_logger:
                    run_id = client.create_run(exp).info.run_id
                    logger = JobEpochs(run_id, len(data.x_train), kernel_layers(model), client=client)
                    callbacks.extend(logger.callbacks)  # what a job runs: the logger, best epoch, NaN stop
                model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=args.epochs, verbose=0,
                          validation_data=(data.x_val, data.y_val), callbacks=callbacks)
                (logged if with_logger else plain).extend(timer.times[1:])  # first epoch includes tracing
                if with_logger:
                    log_cost.append(logger.logger.log_seconds / args.epochs)
        epoch, cost = statistics.median(plain), statistics.median(log_cost)
        print("\n| measure | median |\n|---|---|")
        print(f"| epoch without logger (s) | {epoch:.3f} |")
        print(f"| epoch with logger (s) | {statistics.median(logged):.3f} |")
        print(f"| logger's own work per epoch (s) | {cost:.4f} |")
        print(f"| logging cost / epoch | {100 * cost / epoch:.3f} % |")

        saving, size = [], 0
        for rep in range(args.reps):
            model = compile_model(build_model(cfg, data.input_dim, data.n_classes), cfg, data.task)
            run_id = client.create_run(exp).info.run_id
            logger = JobEpochs(run_id, len(data.x_train), kernel_layers(model), client=client)
            path = Path(tmp) / f"checkpoint-{rep}.npz"
            keep = Checkpoint(path, {"run_id": run_id, "parent": "bench", "config_hash": "bench"}, logger,
                              keras.callbacks.EarlyStopping(patience=100, restore_best_weights=True))
            model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=args.epochs, verbose=0,
                      validation_data=(data.x_val, data.y_val),
                      callbacks=[keep.hold, *logger.callbacks, keep.early_stopping, keep])
            saving.append(keep.seconds / args.epochs)
            size = path.stat().st_size
        print(f"| checkpoint per epoch (s) | {statistics.median(saving):.4f} |")
        print(f"| checkpoint cost / epoch | {100 * statistics.median(saving) / epoch:.3f} % |")
        print(f"| checkpoint file (MB, {model.count_params()} weights, optimizer and best weights) | "
              f"{size / 1e6:.1f} |")

        ours, inferred = [], []
        with mlflow.start_run(experiment_id=exp) as run:
            for _ in range(args.reps):
                tic = time.perf_counter()
                tracker.log_keras_model(run.info.run_id, model, data.x_test[:5])
                ours.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            mlflow.tensorflow.log_model(model, name="inferred")
            inferred.append(time.perf_counter() - tic)
        print(f"| save model, requirements given (s) | {statistics.median(ours):.3f} |")
        print(f"| save model, requirements inferred (s) | {statistics.median(inferred):.3f} |")
        print(f"| speed-up of giving requirements | {statistics.median(inferred) / statistics.median(ours):.1f}x |")


if __name__ == "__main__":
    main()
