"""Grid vs search on the same space: epochs trained, wall time, the best value found and how busy the
workers were, over several seeds, side by side in one run.

    make bench            # or: python benchmarks/bench_search.py [--seeds 3] [--epochs 5] [--trials 16]

The same ranges, ranked on `val_data_loss` (the validation loss without the penalty), on
Fashion-MNIST (digits when it is absent), 64-32 MLP, SGD, batch 32, both on the packed launcher
with 2 workers (what trains a sweep of this kind fastest here):
  1. the 16-job grid: reg=l1,l2 x 8 log-spaced rates, once per training seed (its seed-to-seed
     spread is what "as good as the grid" is measured against);
  2. the search: TPE with successive halving (rungs from epoch 1) over reg=choice(l1,l2),
     rate=tag(log, interval(1e-6, 1e-2)), 16 trials and 8 trials, asynchronous (packs in flight on
     both workers) and packed (max_pack trials per model), once per study seed (which also seeds
     the training).
Each sweep runs as `python -m sweeps.train -m ...` into its own throwaway store. Epochs trained:
the per-epoch loss points every job logged. Best: the lowest final val_data_loss of a job that
ran to its end (a pruned trial's is a partial curve). Utilisation: the time some job of a worker
was running, summed over the workers, over workers x wall. Outside the jobs: the wall time before
the first job's run opened (imports, the store, composing, the workers' start, building and
compiling the first packs) and after the last one ended (the report, the exit). Aim (issue 24): the search's best
within the grid's spread with at most 0.5 of its epochs and 0.4 of its wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench_sweep import dataset, run_sweep

from sweeps.tracking import tags

COMMON = ["model=mlp_64_32", "optimizer=sgd", "batch_size=32", "tracking.log_model=false"]
RATES = "1e-6,3e-6,1e-5,3e-5,1e-4,3e-4,1e-3,1e-2"


def measure(args: list[str], folder: Path, workers: int) -> dict:
    """Wall seconds, epochs trained, best final val_data_loss and worker utilisation of one sweep."""
    wall, client, jobs = run_sweep(args, folder)
    epochs = sum(len(client.get_metric_history(j.info.run_id, "loss")) for j in jobs)
    done = [j for j in jobs if j.info.status == "FINISHED" and tags.PRUNED_AT not in j.data.tags]
    span = (max(j.info.end_time for j in jobs) - min(j.info.start_time for j in jobs)) / 1000
    return {"wall": wall, "epochs": epochs, "best": min(j.data.metrics["val_data_loss"] for j in done),
            "busy": busy_share(jobs, wall, workers), "outside": wall - span}


def busy_share(jobs: list, wall: float, workers: int) -> float:
    """Sum over worker processes of the time covered by their runs (members of a pack overlap: the
    union counts once), over workers x wall."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for job in jobs:
        spans.setdefault(job.data.tags.get(tags.PID, "?"), []).append((job.info.start_time, job.info.end_time))
    busy_ms = 0
    for intervals in spans.values():
        end = 0
        for start, stop in sorted(intervals):
            busy_ms += max(0, stop - max(start, end))
            end = max(end, stop)
    return busy_ms / 1000 / (workers * wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--max-pack", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = dataset()
    packed = ["hydra/launcher=packed", f"hydra.launcher.n_jobs={args.workers}"]
    base = [f"data={data}", f"epochs={args.epochs}", *COMMON, *packed]
    n_grid = 2 * len(RATES.split(","))
    print(f"{data}, 64-32 SGD batch 32, {args.epochs} epochs per job at most, packed launcher with "
          f"{args.workers} workers, {args.seeds} seeds, {os.cpu_count()} cores")
    grid = f"grid, {n_grid} jobs"
    searches = {f"TPE + successive halving, {n} trials, async, packs of {args.max_pack}": n
                for n in (args.trials, args.trials // 2)}
    runs: dict[str, list[dict]] = {grid: [], **{name: [] for name in searches}}
    for seed in range(args.seeds):  # alternating, so that a slower spell of the machine hits every sweep
        with tempfile.TemporaryDirectory() as tmp:
            runs[grid].append(measure(["reg=l1,l2", f"rate={RATES}", f"seed={seed}", *base], Path(tmp), args.workers))
        for name, trials in searches.items():
            with tempfile.TemporaryDirectory() as tmp:
                runs[name].append(measure(
                    ["hydra/sweeper=optuna", f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.seed={seed}",
                     "hydra.sweeper.pruner=successive_halving", f"seed={seed}",
                     f"hydra.launcher.max_pack={args.max_pack}", "reg=choice(l1,l2)",
                     "rate=tag(log, interval(1e-6, 1e-2))", *base], Path(tmp), args.workers))
    print("\n| sweep | wall (s) | outside the jobs (s) | epochs trained | best val_data_loss, mean ± sd [min, max] "
          "| utilisation |")
    print("|---|---|---|---|---|---|")
    median = lambda results, key: statistics.median(r[key] for r in results)  # noqa: E731
    for name, results in runs.items():
        bests = [r["best"] for r in results]
        spread = statistics.stdev(bests) if len(bests) > 1 else 0.0
        print(f"| {name} | {median(results, 'wall'):.0f} | {median(results, 'outside'):.0f} | "
              f"{median(results, 'epochs'):.0f} | {statistics.mean(bests):.4f} ± {spread:.4f} "
              f"[{min(bests):.4f}, {max(bests):.4f}] | {median(results, 'busy'):.2f} |")
    g = runs[grid]
    sd = statistics.stdev(a["best"] for a in g) if len(g) > 1 else 0.0
    for name in searches:
        s = runs[name]
        ratio = lambda key: median(s, key) / median(g, key)  # noqa: E731
        print(f"\n{name} / grid (medians over {args.seeds} seeds): {ratio('epochs'):.2f} of the epochs, "
              f"{ratio('wall'):.2f} of the wall time; best val_data_loss {statistics.mean(b['best'] for b in s):.4f} "
              f"vs {statistics.mean(a['best'] for a in g):.4f} (grid's seed-to-seed sd {sd:.4f}); the jobs' own span "
              f"{(median(s, 'wall') - median(s, 'outside')) / (median(g, 'wall') - median(g, 'outside')):.2f} of the grid's")

if __name__ == "__main__":
    main()
