"""Grid vs search on the same space: epochs trained, wall time, the best value found and how busy the
workers were, over several seeds, side by side in one run.

    make bench            # or: python benchmarks/bench_search.py [--seeds 3] [--epochs 5] [--trials 16]

The same ranges, ranked on `val_data_loss` (the validation loss without the penalty), on
Fashion-MNIST (digits when it is absent), 64-32 MLP, SGD, batch 32, both on the packed launcher
with 2 workers (what trains a sweep of this kind fastest here):
  1. the 16-job grid: reg=l1,l2 x 8 log-spaced rates, once per training seed (its seed-to-seed
     spread is what "as good as the grid" is measured against);
  2. the search: TPE with median pruning over reg=choice(l1,l2), rate=tag(log, interval(1e-6, 1e-2)),
     16 trials, asynchronous (packs in flight on both workers) and packed (max_pack trials per
     model), once per study seed (which also seeds the training).
Each sweep runs as `python -m sweeps.train -m ...` into its own throwaway store. Epochs trained:
the per-epoch loss points every job logged. Best: the lowest final val_data_loss of a job that
ran to its end (a pruned trial's is a partial curve). Utilisation: the time some job of a worker
was running, summed over the workers, over workers x wall. Aim (issue 24): the search's best
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
    return {"wall": wall, "epochs": epochs, "best": min(j.data.metrics["val_data_loss"] for j in done),
            "busy": busy_share(jobs, wall, workers)}


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
    runs: dict[str, list[dict]] = {f"grid, {n_grid} jobs": [],
                                   f"TPE + median pruning, {args.trials} trials, async, packs of {args.max_pack}": []}
    (grid, search) = runs
    for seed in range(args.seeds):  # alternating, so that a slower spell of the machine hits both
        with tempfile.TemporaryDirectory() as tmp:
            runs[grid].append(measure(["reg=l1,l2", f"rate={RATES}", f"seed={seed}", *base], Path(tmp), args.workers))
        with tempfile.TemporaryDirectory() as tmp:
            runs[search].append(measure(
                ["hydra/sweeper=optuna", f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.seed={seed}",
                 f"seed={seed}", f"hydra.launcher.max_pack={args.max_pack}", "reg=choice(l1,l2)",
                 "rate=tag(log, interval(1e-6, 1e-2))", *base], Path(tmp), args.workers))
    print("\n| sweep | wall (s) | epochs trained | best val_data_loss, mean ± sd [min, max] | utilisation |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        bests = [r["best"] for r in results]
        spread = statistics.stdev(bests) if len(bests) > 1 else 0.0
        print(f"| {name} | {statistics.median(r['wall'] for r in results):.0f} | "
              f"{statistics.median(r['epochs'] for r in results):.0f} | {statistics.mean(bests):.4f} ± {spread:.4f} "
              f"[{min(bests):.4f}, {max(bests):.4f}] | {statistics.median(r['busy'] for r in results):.2f} |")
    g, s = runs[grid], runs[search]
    ratio = lambda key: statistics.median(b[key] for b in s) / statistics.median(a[key] for a in g)  # noqa: E731
    print(f"\nsearch / grid (medians over {args.seeds} seeds): {ratio('epochs'):.2f} of the epochs, "
          f"{ratio('wall'):.2f} of the wall time; best val_data_loss {statistics.mean(b['best'] for b in s):.4f} vs "
          f"{statistics.mean(a['best'] for a in g):.4f} (grid's seed-to-seed sd "
          f"{statistics.stdev(a['best'] for a in g) if len(g) > 1 else 0.0:.4f})")


if __name__ == "__main__":
    main()
