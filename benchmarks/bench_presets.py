"""Three presets: plain Keras, `sweeps.train` and the matmul limit, seconds per epoch side by side.

    make bench            # or: python benchmarks/bench_presets.py [--epochs 3] [--reps 3]

For each preset (64-32 SGD batch 32, 128x4 Adam batch 32, 512-512 RMSprop batch 128) on
Fashion-MNIST (54,000 training examples after the 10% validation split; digits when it is absent),
one run measures, repetition after repetition so that machine noise hits all three:
  1. plain Keras: the same MLP built with keras.Sequential and the same optimizer, fitted with
     `model.fit(x, y, batch_size, epochs, validation_data)`, default steps_per_execution (1), no
     callbacks but an epoch timer (epoch hooks only, so Keras' batch dispatch stays asynchronous);
  2. `sweeps.train`: the real jobs, `python -m sweeps.train -m <preset> epochs=N seed=0,1` (two jobs
     in one process, as a sweep runs them) in a subprocess into a throwaway SQLite store, their
     per-epoch `epoch_time_s` read back from the store; work outside fit = a run's duration
     (end - start) minus its `train_time_s` (logging the config, evaluating the training and test
     sets, the curves figure, the saved model), for the first job (which also pays first-time
     imports of MLflow's Keras flavor and matplotlib) and for the second (warm, as every later job
     of a sweep);
  3. arithmetic limit: one epoch of the training matmuls at the preset's layer sizes and batch size
     (per layer and step x@W, x^T@dY, and dY@W^T except for the first layer, which needs no input
     gradient), ceil(n/batch) steps in ONE tf.function loop, so no Python runs between steps; the
     weights are carried through the loop (updated at rate 0) so no matmul can be optimised away.
     Validation batches, activations, loss and optimizer arithmetic are left out: a lower bound.
     Likewise the evaluation's limit: the forward matmuls over the training and test sets in
     batches of `fitting.EVAL_BATCH`, the part of the work outside fit that is arithmetic.
Seconds per epoch are the median of epochs 2..N (the first carries tracing) per repetition, then
the median over repetitions. Absolute seconds on a shared machine are noise; the ratios are the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweeps.backends import import_keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's log lines and start-up banner off stderr,
import_keras()  # which carries the progress lines (as `sweeps.train` does; SWEEPS_VERBOSE=1 shows them)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from common import EpochTimer  # noqa: E402
from sweeps.config import conf_dir, register_configs  # noqa: E402
from sweeps.training.data import load_dataset  # noqa: E402
from sweeps.errors import DataError  # noqa: E402
from sweeps.training.fitting import EVAL_BATCH  # noqa: E402

PRESETS = {
    "64-32 SGD batch 32": ["model=mlp_64_32", "optimizer=sgd", "batch_size=32"],
    "128x4 Adam batch 32": ["model=mlp_128x4", "optimizer=adam", "batch_size=32"],
    "512-512 RMSprop batch 128": ["model=mlp_512_512", "optimizer=rmsprop", "batch_size=128"],
}


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def configs(dataset: str) -> dict:
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return {name: compose("config", overrides=[f"data={dataset}", *overrides])
                for name, overrides in PRESETS.items()}


def after_first(times: list[float]) -> float:
    """Median seconds of the epochs after the first (which carries tracing)."""
    return statistics.median(times[1:])


def plain_keras(cfg, data, epochs: int) -> list[float]:
    """Seconds of each epoch of a plain Keras script training the preset's MLP."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    model = keras.Sequential([keras.Input(shape=(data.input_dim,)),
                              *[keras.layers.Dense(w, activation=cfg.model.activation) for w in cfg.model.hidden],
                              keras.layers.Dense(data.n_classes, activation="softmax")])
    opt = cfg.optimizer
    optimizer = {"sgd": lambda: keras.optimizers.SGD(opt.lr, momentum=opt.momentum),
                 "adam": lambda: keras.optimizers.Adam(opt.lr),
                 "rmsprop": lambda: keras.optimizers.RMSprop(opt.lr)}[opt.name.value]()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=epochs,
              validation_data=(data.x_val, data.y_val), callbacks=[timer], verbose=0)
    return timer.times


def sweeps_jobs(overrides: list[str], epochs: int, folder: Path, n: int) -> tuple[list[float], list[float], float]:
    """`python -m sweeps.train -m OVERRIDES epochs=N seed=0,1` into a new store in `folder/n` (in a
    store that holds them already, the jobs would be reused, not trained): (epoch_time_s of every
    epoch of both jobs, each job's run duration - train_time_s in the order they ran, subprocess
    wall seconds)."""
    (folder / str(n)).mkdir()
    uri = f"sqlite:///{folder}/{n}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store's tables, as after a user's first run
    cmd = [sys.executable, "-m", "sweeps.train", "-m", *overrides, f"epochs={epochs}", "seed=0,1",
           f"hydra.sweep.dir={folder}/{n}/multirun"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"sweeps.train failed ({' '.join(overrides)}):\n{proc.stderr[-3000:]}")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id],
                              "tags.`sweeps.kind` = 'job'", order_by=["attributes.start_time DESC"], max_results=2)
    times, outside = [], []
    for run in reversed(runs):  # in the order they ran
        if run.info.status != "FINISHED":
            raise SystemExit(f"sweeps.train run {run.info.run_id} ended {run.info.status}")
        history = sorted(client.get_metric_history(run.info.run_id, "epoch_time_s"), key=lambda m: m.step)
        if len(history) != epochs:
            raise SystemExit(f"sweeps.train run {run.info.run_id} logged {len(history)} epochs, expected {epochs}")
        times += [m.value for m in history[1:]]  # the first epoch carries tracing
        outside.append((run.info.end_time - run.info.start_time) / 1000 - run.data.metrics["train_time_s"])
    return times, outside, wall


def operands(dims: list[int], rows: int):
    """A random `[rows, dims[0]]` input and the weights of layer sizes `dims`, as TensorFlow constants."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((rows, dims[0])), tf.float32)
    return x, [tf.constant(rng.standard_normal((a, b)) / math.sqrt(a), tf.float32) for a, b in zip(dims, dims[1:])]


def matmul_epoch(dims: list[int], batch: int):
    """A function timing one epoch's training matmuls for layer sizes `dims` (inputs, hidden..., classes)."""
    import tensorflow as tf

    x, weights = operands(dims, batch)

    @tf.function
    def run(steps, rate, ws):
        def step(i, ws):
            acts = [x]
            for w in ws:  # forward: x @ W
                acts.append(tf.matmul(acts[-1], w))
            dy, grads = acts[-1], [None] * len(ws)
            for k in reversed(range(len(ws))):
                grads[k] = tf.matmul(acts[k], dy, transpose_a=True)  # weight gradient: x^T @ dY
                if k:
                    dy = tf.matmul(dy, ws[k], transpose_b=True)  # input gradient: dY @ W^T
            return i + 1, [w - rate * g for w, g in zip(ws, grads)]

        _, ws = tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0), ws), parallel_iterations=1)
        return tf.add_n([tf.reduce_sum(w) for w in ws])

    def epoch(steps: int) -> float:
        tic = time.perf_counter()
        run(tf.constant(steps), tf.constant(0.0), weights).numpy()
        return time.perf_counter() - tic

    return epoch


def evaluation_matmuls(dims: list[int], examples: int):
    """A function timing the forward matmuls of evaluating `examples` examples in batches of
    EVAL_BATCH for layer sizes `dims` (what `fitting.evaluation` cannot do faster)."""
    import tensorflow as tf

    x, weights = operands(dims, EVAL_BATCH)
    steps = tf.constant(math.ceil(examples / EVAL_BATCH))

    @tf.function
    def run():
        def step(i, total):
            h = x * tf.cast(i, tf.float32)  # a new input each batch: nothing is hoisted out of the loop
            for w in weights:
                h = tf.matmul(h, w)
            return i + 1, total + tf.reduce_sum(h)

        return tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0), tf.constant(0.0)),
                             parallel_iterations=1)[1]

    def timed() -> float:
        tic = time.perf_counter()
        run().numpy()
        return time.perf_counter() - tic

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement (at least 2)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if args.epochs < 2 or args.reps < 1:
        parser.error("--epochs must be at least 2 (the first is left out) and --reps at least 1")
    started = time.perf_counter()
    try:
        dataset, cfgs = "fashion_mnist", configs("fashion_mnist")
        data = load_dataset(next(iter(cfgs.values())).data)
    except DataError:
        dataset, cfgs = "digits", configs("digits")
        data = load_dataset(next(iter(cfgs.values())).data)
    n = len(data.x_train)
    say(f"dataset {data.name}: {n} training examples; {args.epochs} epochs x {args.reps} reps; "
        f"{os.cpu_count()} cores")

    dims = {name: [data.input_dim, *cfg.model.hidden, data.n_classes] for name, cfg in cfgs.items()}
    limits = {name: matmul_epoch(dims[name], cfg.batch_size) for name, cfg in cfgs.items()}
    eval_limits = {name: evaluation_matmuls(dims[name], n + len(data.x_test)) for name in cfgs}
    plain, ours, first, later, limit, eval_limit = ({name: [] for name in PRESETS} for _ in range(6))
    with tempfile.TemporaryDirectory(prefix="bench_presets_") as tmp:
        sweeps = 0
        for rep in range(args.reps):
            for name, cfg in cfgs.items():
                tag = f"[rep {rep + 1}/{args.reps}] {name}"
                order = ("plain", "sweeps") if rep % 2 == 0 else ("sweeps", "plain")  # neither always first
                for which in order:
                    if which == "plain":
                        plain[name].append(after_first(plain_keras(cfg, data, args.epochs)))
                        say(f"{tag}: plain Keras {plain[name][-1]:.2f} s/epoch")
                    else:
                        times, outside, wall = sweeps_jobs([*PRESETS[name], f"data={dataset}"], args.epochs,
                                                           Path(tmp), sweeps)
                        sweeps += 1
                        ours[name].append(statistics.median(times))
                        first[name].append(outside[0])
                        later[name].append(outside[1])
                        say(f"{tag}: sweeps.train {ours[name][-1]:.2f} s/epoch, work outside fit "
                            f"{outside[0]:.2f} s (first job) / {outside[1]:.2f} s (second) "
                            f"(subprocess wall {wall:.1f} s)")
                steps = math.ceil(n / cfg.batch_size)
                limit[name].append(after_first([limits[name](steps) for _ in range(args.epochs)]))
                eval_limit[name].append(after_first([eval_limits[name]() for _ in range(args.epochs)]))
                say(f"{tag}: matmul limit {limit[name][-1]:.3f} s/epoch ({steps} steps), "
                    f"evaluation's {eval_limit[name][-1]:.3f} s")

    timed = f"median of epochs 2..{args.epochs}" if args.epochs > 2 else "epoch 2"
    print(f"\n{data.name}, {n} training examples, {args.epochs} epochs ({timed}), "
          f"median of {args.reps} reps, {os.cpu_count()} cores; seconds per epoch\n")
    print("| preset | plain Keras (s/epoch) | sweeps.train (s/epoch) | matmul limit (s/epoch) "
          "| speed-up plain / sweeps.train | sweeps.train / limit |")
    print("|---|---|---|---|---|---|")
    for name in PRESETS:
        p, s, lim = (statistics.median(v[name]) for v in (plain, ours, limit))
        print(f"| {name} | {p:.2f} | {s:.2f} | {lim:.3f} | {p / s:.2f}x | {s / lim:.1f}x |")
    print(f"\nwork outside fit per job (s): evaluating {n + len(data.x_test)} examples, figure, model, logging\n")
    print("| preset | first job of a process | later jobs | of which evaluation's matmul limit | the rest |")
    print("|---|---|---|---|---|")
    for name in PRESETS:
        f, w, e = (statistics.median(v[name]) for v in (first, later, eval_limit))
        print(f"| {name} | {f:.2f} | {w:.2f} | {e:.2f} | {w - e:.2f} |")
    say(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
