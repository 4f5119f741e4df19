"""Grid vs search: epochs trained, wall time and the best validation loss found, side by side.

    make bench            # or: python benchmarks/bench_search.py [--epochs 5] [--trials 16]

The same ranges, two ways, on Fashion-MNIST (digits when it is absent), 64-32 MLP, SGD, batch 32:
  1. a 16-job grid: reg=l1,l2 x rate=1e-6,1e-5,1e-4,1e-3,1e-2 ... (8 rates, log-spaced);
  2. a 16-trial TPE study with median pruning over reg=choice(l1,l2), rate=tag(log, interval(1e-6, 1e-2)).
Each runs as `python -m sweeps.train -m ...` into its own throwaway store. Epochs trained = the
number of per-epoch loss points every job logged. Aim: the study finds a value at least as good
with at most half the epochs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench_sweep import dataset, run_sweep

COMMON = ["model=mlp_64_32", "optimizer=sgd", "batch_size=32", "tracking.log_model=false"]
RATES = "1e-6,3e-6,1e-5,3e-5,1e-4,3e-4,1e-3,1e-2"


def run(args: list[str], folder: Path) -> tuple[float, int, float]:
    """(wall seconds, epochs trained in all, best final val_loss) of one sweep into a store in `folder`."""
    wall, client, jobs = run_sweep(args, folder)
    epochs = sum(len(client.get_metric_history(j.info.run_id, "loss")) for j in jobs)
    return wall, epochs, min(j.data.metrics["val_loss"] for j in jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    data = dataset()
    base = [f"data={data}", f"epochs={args.epochs}", *COMMON]
    cases = {
        f"grid, {2 * len(RATES.split(','))} jobs": ["reg=l1,l2", f"rate={RATES}", *base],
        f"TPE + median pruning, {args.trials} trials": [
            "hydra/sweeper=optuna", f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.seed=0",
            "reg=choice(l1,l2)", "rate=tag(log, interval(1e-6, 1e-2))", *base],
    }
    print(f"{data}, 64-32 SGD batch 32, {args.epochs} epochs per job at most, {os.cpu_count()} cores")
    results = {}
    for name, sweep_args in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = run(sweep_args, Path(tmp))
    print("\n| sweep | wall (s) | epochs trained | best val_loss |\n|---|---|---|---|")
    for name, (wall, epochs, best) in results.items():
        print(f"| {name} | {wall:.0f} | {epochs} | {best:.4f} |")
    (gw, ge, gb), (sw, se, sb) = results.values()
    print(f"\nsearch / grid: {se / ge:.2f} of the epochs, {sw / gw:.2f} of the wall time, "
          f"best val_loss {sb:.4f} vs {gb:.4f}")


if __name__ == "__main__":
    main()
