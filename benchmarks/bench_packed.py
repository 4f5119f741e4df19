"""Packed sweeps: one 8-job regularization sweep three ways, and the cost per configuration-epoch.

    make bench            # or: python benchmarks/bench_packed.py [--epochs 10] [--reps 1]

1. The 8 jobs (reg=l1,l2 x rate=1e-5,1e-4,1e-3,1e-2; 64-32 MLP, SGD, batch 32, Fashion-MNIST or
   digits when it is absent), wall time of the whole command, side by side:
   - a plain Keras script training the 8 configurations one after another (`model.fit`, Keras'
     defaults, no tracking: what a notebook does), run as its own process like the others;
   - `python -m sweeps.train -m ...` (the basic launcher, every job alone);
   - the same with `hydra/launcher=packed` (the 8 jobs as one model).
2. Seconds per configuration-epoch, unpacked vs packed (median `epoch_time_s` of the epochs after
   the first; a packed epoch counts for its 8 members): the 64-32 sweep above, and 128x4 Adam
   batch 32, the same 8 jobs for a few epochs.
Every sweep writes to a throwaway store, created before its clock starts; medians over `--reps`
(the repetitions alternate the ways, so a slow spell of the machine falls on all of them). Absolute seconds on a shared
machine are noise; the ratios are the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_sweep import dataset, run_sweep

GRID = ["reg=l1,l2", "rate=1e-5,1e-4,1e-3,1e-2"]
SMALL = ["model=mlp_64_32", "optimizer=sgd", "batch_size=32"]
DEEP = ["model=mlp_128x4", "optimizer=adam", "batch_size=32"]
PACKED = ["hydra/launcher=packed"]


def plain_script(data: str, epochs: int) -> None:
    """The notebook way: 8 Keras models of the grid, one after another, nothing tracked."""
    import keras

    from sweeps.config import DataConfig, DatasetName
    from omegaconf import OmegaConf
    from sweeps.training.data import load_dataset

    d = load_dataset(OmegaConf.structured(DataConfig(name=DatasetName(data))))
    for kind in ("l1", "l2"):
        for rate in (1e-5, 1e-4, 1e-3, 1e-2):
            penalty = keras.regularizers.L1(rate) if kind == "l1" else keras.regularizers.L2(rate)
            model = keras.Sequential([keras.Input((d.input_dim,)),
                                      keras.layers.Dense(64, "relu", kernel_regularizer=penalty),
                                      keras.layers.Dense(32, "relu", kernel_regularizer=penalty),
                                      keras.layers.Dense(d.n_classes, "softmax")])
            model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(d.x_train, d.y_train, batch_size=32, epochs=epochs, validation_data=(d.x_val, d.y_val),
                      verbose=0)
            model.evaluate(d.x_test, d.y_test, verbose=0)


def timed_plain(data: str, epochs: int) -> float:
    tic = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--plain-script", data, "--epochs", str(epochs)],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise SystemExit(f"plain script failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - tic


def timed_sweep(args: list[str]) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as tmp:
        wall, client, jobs = run_sweep(args, Path(tmp))
        epochs = [[m.value for m in client.get_metric_history(r.info.run_id, "epoch_time_s")] for r in jobs]
    if len(jobs) != 8:
        raise SystemExit(f"expected 8 jobs, found {len(jobs)}: {' '.join(args)}")
    return wall, epochs


def per_config_epoch(epochs: list[list[float]], packed: bool) -> float:
    """Median seconds of an epoch after the first, per configuration (a packed epoch trains 8)."""
    later = [t for job in epochs for t in job[1:]]
    return statistics.median(later) / (8 if packed else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the 8-job sweep")
    parser.add_argument("--deep-epochs", type=int, default=6, help="epochs of the 128x4 Adam comparison")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--plain-script", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_script:
        return plain_script(args.plain_script, args.epochs)
    data = dataset()
    walls: dict[str, list[float]] = {"plain Keras script": [], "sweeps.train, unpacked": [],
                                     "sweeps.train, hydra/launcher=packed": []}
    small: dict[str, list[float]] = {"unpacked": [], "packed": []}  # 64-32 per configuration-epoch
    deep: dict[str, list[float]] = {"unpacked": [], "packed": []}
    for rep in range(args.reps):
        print(f"repetition {rep + 1}/{args.reps}", file=sys.stderr)
        common = [*GRID, *SMALL, f"data={data}", f"epochs={args.epochs}", "tracking.log_model=false"]
        walls["plain Keras script"].append(timed_plain(data, args.epochs))
        for name, extra, packed in (("unpacked", [], False), ("hydra/launcher=packed", PACKED, True)):
            wall, epochs = timed_sweep([*common, *extra])
            walls[f"sweeps.train, {name}"].append(wall)
            small["packed" if packed else "unpacked"].append(per_config_epoch(epochs, packed))
        common = [*GRID, *DEEP, f"data={data}", f"epochs={args.deep_epochs}", "tracking.log_model=false"]
        deep["unpacked"].append(per_config_epoch(timed_sweep(common)[1], packed=False))
        deep["packed"].append(per_config_epoch(timed_sweep([*common, *PACKED])[1], packed=True))

    print(f"\n8-job sweep (reg=l1,l2 x rate=1e-5..1e-2), 64-32 SGD batch 32, {data}, {args.epochs} epochs, "
          f"{os.cpu_count()} cores, median of {args.reps} run(s), whole command wall time\n")
    print("| how | wall (s) | vs packed |\n|---|---|---|")
    packed = statistics.median(walls["sweeps.train, hydra/launcher=packed"])
    for name, values in walls.items():
        wall = statistics.median(values)
        print(f"| {name} | {wall:.1f} | {wall / packed:.2f}x |")
    print("\nseconds per configuration-epoch (median of the epochs after the first)\n")
    print("| model | unpacked | packed | packed speed-up |\n|---|---|---|---|")
    for name, times in ((f"64-32 SGD ({args.epochs} epochs)", small), (f"128x4 Adam ({args.deep_epochs} epochs)", deep)):
        unpacked, packed = statistics.median(times["unpacked"]), statistics.median(times["packed"])
        print(f"| {name} | {unpacked:.3f} | {packed:.3f} | {unpacked / packed:.2f}x |")


if __name__ == "__main__":
    main()
