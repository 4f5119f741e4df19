"""What does stopping on a NaN loss after every batch (not only at epoch end) cost?

    python benchmarks/bench_nan_check.py [--epochs 3] [--reps 3]

`StopOnDivergence.on_train_batch_end` checks the batch loss. The same model is trained,
alternating (and swapping which goes first), with a job's epoch callbacks as shipped (`JobEpochs`:
the logger, the best epoch, the NaN stop) and without the NaN stop, so machine noise hits both;
first epoch of each fit excluded. On a shared machine that comparison is noisy, so the hook's own
time inside `fit` is also measured directly (`TimedStop`) and reported against the epoch time. Two cases: Fashion-MNIST with the
512-512 MLP (digits when absent), and digits with a 16-unit MLP (tiny steps: the worst case for a
per-batch cost). Batch size 32: the most batches per epoch. Also times the check itself.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit

import keras
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from common import EpochTimer
from sweeps.training.callbacks import JobEpochs, StopOnDivergence
from sweeps.config import conf_dir, register_configs
from sweeps.training.data import load_dataset
from sweeps.errors import DataError
from sweeps.training.models import build_model, compile_model, kernel_layers
from sweeps.tracking import ensure_experiment


class TimedStop(StopOnDivergence):
    """The NaN stop as shipped, adding up the seconds spent in its batch hook during `fit`."""

    hook_seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        tic = time.perf_counter()
        super().on_train_batch_end(batch, logs)
        TimedStop.hook_seconds += time.perf_counter() - tic


WITH_CHECK, WITHOUT = "with the NaN stop", "without it"


def config(*overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["batch_size=32", *overrides])


def epoch_times(cfg, data, case: str, client, run_id, epochs: int) -> list[float]:
    keras.utils.set_random_seed(0)
    model = compile_model(build_model(cfg, data.input_dim, data.n_classes), cfg, data.task)
    timer = EpochTimer()
    job = JobEpochs(run_id, len(data.x_train), kernel_layers(model), client=client)
    callbacks = [job.logger, job.best, *([TimedStop()] if case == WITH_CHECK else [])]
    model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=epochs, verbose=0,
              validation_data=(data.x_val, data.y_val), callbacks=[timer, *callbacks])
    return timer.times[1:]


def compare(label: str, cfg, client, run_id, epochs: int, reps: int) -> None:
    data = load_dataset(cfg.data)
    steps = -(-len(data.x_train) // cfg.batch_size)
    times = {WITH_CHECK: [], WITHOUT: []}
    TimedStop.hook_seconds = 0.0
    for rep in range(reps):
        for cls in (list(times) if rep % 2 == 0 else list(times)[::-1]):
            times[cls].extend(epoch_times(cfg, data, cls, client, run_id, epochs))
    with_check, without = (statistics.median(times[c]) for c in (WITH_CHECK, WITHOUT))
    hook = TimedStop.hook_seconds / (reps * epochs)  # per epoch, all epochs counted
    print(f"{label}: {steps} batches/epoch; epoch with check {with_check:.3f} s, without {without:.3f} s "
          f"({100 * (with_check - without) / without:+.2f} %, median of {len(times[WITHOUT])} epochs); "
          f"the hook itself: {1000 * hook:.2f} ms per epoch = {100 * hook / with_check:.4f} % of an epoch")


def check_cost_us() -> float:
    stop = StopOnDivergence()
    stop.on_train_begin()
    logs = {"loss": 0.5, "accuracy": 0.9}
    n = 200_000
    return 1e6 * timeit.timeit(lambda: stop.on_train_batch_end(0, logs), number=n) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/bench.db")
        run_id = client.create_run(ensure_experiment(client, "bench", None)).info.run_id
        print(f"the check itself: {check_cost_us():.2f} us per batch")
        try:
            big = config("data=fashion_mnist")
            load_dataset(big.data)
            compare("fashion_mnist 512-512", big, client, run_id, args.epochs, args.reps)
        except DataError:
            print("fashion_mnist not installed: skipped")
        compare("digits 16", config("data=digits", "model.hidden=[16]"), client, run_id, args.epochs, args.reps)


if __name__ == "__main__":
    main()
