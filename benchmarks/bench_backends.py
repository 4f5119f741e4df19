"""Keras on TensorFlow against Keras on JAX, per preset: seconds per epoch, fixed costs and the matmul limit, side by side.

    make bench            # or: python benchmarks/bench_backends.py [--epochs 3] [--packed-epochs 10] [--reps 2]

On Fashion-MNIST (digits when it is absent), every measurement in its own process (one process runs
one backend), the two backends alternating within each repetition so that machine noise hits both.
For each preset (64-32 SGD batch 32, 128x4 Adam batch 32, 512-512 RMSprop batch 128):
  1. plain Keras: `bench_presets.plain_keras` (`keras.Sequential` + `model.fit`, Keras' defaults),
     the median epoch after the first, and `import keras`;
  2. `sweeps.train`: one job, `python -m sweeps.train <preset> backend=B`: the median `epoch_time_s`
     after the first, the command's wall time, the job's work outside `fit` (its run's duration
     minus `train_time_s`: data, building, compiling, evaluation, store writes) and the command's
     own start and end (wall minus the run's duration: imports, composing, the store's set-up);
  3. packed: the 8-job sweep `reg=l1,l2 rate=1e-5,1e-4,1e-3,1e-2` of the preset with
     `hydra/launcher=packed` for `--packed-epochs`: wall time, time outside the pack's training
     (wall minus `pack_train_time_s`), seconds per configuration-epoch, and the wall time against
     its arithmetic limit (8 x epochs configuration-epochs at the matmul limit below; the aim is 2x);
     first with JAX's compilation cache empty (a machine's first sweep), then "the next sweep": other
     rates (`rate=2e-5,...`) on the same model, with the cache the first sweep left
     (`backends.compilation_cache`; TensorFlow keeps nothing between processes);
  4. the matmul limit: one epoch of the preset's training matmuls (`bench_presets.matmul_epoch`,
     TensorFlow, in this process), the median of `--epochs` after the first.
Medians over repetitions; the ratio TensorFlow / JAX is the figure (absolute seconds here are noise).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_presets import PRESETS, after_first, configs, matmul_epoch  # imports Keras on TensorFlow, here only
from bench_sweep import dataset, run_sweep
from sweeps.training.data import load_dataset

BACKENDS = ("tensorflow", "jax")
GRID = ["-m", "reg=l1,l2", "rate=1e-5,1e-4,1e-3,1e-2", "hydra/launcher=packed"]
NEXT = ["-m", "reg=l1,l2", "rate=2e-5,2e-4,2e-3,2e-2", "hydra/launcher=packed"]  # the same model, other rates
LABELS = {"import": "import keras (s)", "epoch": "s per epoch", "wall": "wall (s)", "outside": "outside fit (s)",
          "start": "command's own start and end (s)", "config_epoch": "s per configuration-epoch",
          "outside_pack": "outside training (s)", "vs_limit": "wall / arithmetic limit (aim 2)"}

PLAIN = """
import json, sys, time
tic = time.perf_counter()
import keras
imported = time.perf_counter() - tic
sys.path.insert(0, sys.argv[1])
from bench_presets import after_first, configs, plain_keras
from sweeps.training.data import load_dataset
cfg = configs(sys.argv[2])[sys.argv[3]]
print(json.dumps({"import": imported, "epoch": after_first(plain_keras(cfg, load_dataset(cfg.data), int(sys.argv[4])))}))
"""


def plain(backend: str, data: str, preset: str, epochs: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", PLAIN, str(Path(__file__).parent), data, preset, str(epochs)],
                          capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise SystemExit(f"plain Keras on {backend} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one_job(backend: str, preset: str, data: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wall, client, (job,) = run_sweep([*PRESETS[preset], f"data={data}", f"epochs={epochs}", f"backend={backend}",
                                          "tracking.log_model=false"], Path(tmp))
        times = [m.value for m in client.get_metric_history(job.info.run_id, "epoch_time_s")][1:]
    duration = (job.info.end_time - job.info.start_time) / 1000
    return {"epoch": statistics.median(times), "wall": wall, "outside": duration - job.data.metrics["train_time_s"],
            "start": wall - duration}


def packed(backend: str, preset: str, data: str, epochs: int, limit: float, grid: list[str] = GRID) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wall, client, jobs = run_sweep([*grid, *PRESETS[preset], f"data={data}", f"epochs={epochs}",
                                        f"backend={backend}"], Path(tmp))
        pack_epochs = [m.value for m in client.get_metric_history(jobs[0].info.run_id, "epoch_time_s")][1:]
    if len(jobs) != 8:
        raise SystemExit(f"packed on {backend}: expected 8 jobs, found {len(jobs)}")
    train = max(j.data.metrics["pack_train_time_s"] for j in jobs)
    return {"wall": wall, "outside_pack": wall - train, "config_epoch": statistics.median(pack_epochs) / 8,
            "vs_limit": wall / (8 * epochs * limit)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the plain and single-job runs (at least 2)")
    parser.add_argument("--packed-epochs", type=int, default=10, help="epochs of the packed 8-job sweeps")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--preset", action="append", choices=list(PRESETS), help="only this preset (repeatable)")
    args = parser.parse_args()
    presets = args.preset or list(PRESETS)
    if args.epochs < 2 or args.packed_epochs < 2 or args.reps < 1:
        parser.error("--epochs and --packed-epochs must be at least 2 (the first is left out), --reps at least 1")
    data = dataset()
    cfgs = configs(data)
    n = len(load_dataset(next(iter(cfgs.values())).data).x_train)
    print(f"{data}, {args.epochs} epochs ({args.packed_epochs} packed), {args.reps} repetitions, "
          f"{os.cpu_count()} cores", file=sys.stderr)
    limit_of = {}
    for name, cfg in ((name, cfgs[name]) for name in presets):
        sizes = load_dataset(cfg.data)
        epoch = matmul_epoch([sizes.input_dim, *cfg.model.hidden, sizes.n_classes], cfg.batch_size)
        limit_of[name] = lambda epoch=epoch, cfg=cfg: after_first([epoch(math.ceil(n / cfg.batch_size))
                                                                   for _ in range(args.epochs)])
    rows: dict[tuple[str, str], dict[str, list[dict]]] = {}
    limits: dict[str, list[float]] = {name: [] for name in presets}
    cache = Path(tempfile.mkdtemp(prefix="bench-xdg-"))  # JAX's compilation cache (XDG_CACHE_HOME), this run's own
    os.environ["XDG_CACHE_HOME"] = str(cache)  # read by the commands below; the bench's own process compiles nothing on JAX
    for rep in range(args.reps):
        for name in presets:
            limits[name].append(limit_of[name]())
            for backend in BACKENDS:  # alternating
                for what, measure in (("plain Keras", lambda: plain(backend, data, name, args.epochs)),
                                      ("sweeps.train", lambda: one_job(backend, name, data, args.epochs)),
                                      ("packed 8 jobs", lambda: packed(backend, name, data, args.packed_epochs,
                                                                       limits[name][-1])),
                                      ("packed, next sweep", lambda: packed(backend, name, data, args.packed_epochs,
                                                                            limits[name][-1], NEXT))):
                    if what != "packed, next sweep":  # it reads what the packed sweep before it left
                        shutil.rmtree(cache / "sweeps", ignore_errors=True)
                    rows.setdefault((name, what), {}).setdefault(backend, []).append(measure())
                    print(f"[rep {rep + 1}/{args.reps}] {name}, {what} on {backend}: "
                          f"{json.dumps({k: round(v, 3) for k, v in rows[name, what][backend][-1].items()})}",
                          file=sys.stderr, flush=True)
    print(f"\n{data}, {n} training examples; plain and sweeps.train {args.epochs} epochs, packed "
          f"{args.packed_epochs}; medians of {args.reps} repetitions; {os.cpu_count()} cores\n")
    print("| preset | what | figure | TensorFlow | JAX | TensorFlow / JAX |")
    print("|---|---|---|---|---|---|")
    shutil.rmtree(cache, ignore_errors=True)
    for name in presets:
        for what in ("plain Keras", "sweeps.train", "packed 8 jobs", "packed, next sweep"):
            by = rows[name, what]
            for key in by["tensorflow"][0]:
                tf, jax = (statistics.median(r[key] for r in by[b]) for b in BACKENDS)
                print(f"| {name} | {what} | {LABELS[key]} | {tf:.3f} | {jax:.3f} | {tf / jax:.2f}x |")
        print(f"| {name} | matmul limit | s per epoch | {statistics.median(limits[name]):.3f} | | |")


if __name__ == "__main__":
    main()
