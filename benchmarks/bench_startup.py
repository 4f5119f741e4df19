"""How long the command lines take to answer `--help`, side by side in one run, next to `import hydra`.

    make bench            # or: python benchmarks/bench_startup.py [--reps 5]

`python -m sweeps.train --help`, `python -m sweeps.compare --help` and `python -m sweeps.server
--help`, each a fresh Python started from a throwaway folder, next to `python -c 'import hydra'`
(what any Hydra app pays before it does anything) and `python -c pass` (the interpreter alone).
One warm-up round first (not counted), then `--reps` rounds, each running every command once in
turn, so a slow spell of the machine falls on all of them; the median wall time of each and its
ratio to `import hydra`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import hydra'": ["-c", "import hydra"],
    "python -m sweeps.train --help": ["-m", "sweeps.train", "--help"],
    "python -m sweeps.compare --help": ["-m", "sweeps.compare", "--help"],
    "python -m sweeps.server --help": ["-m", "sweeps.server", "--help"],
}
BASE = "python -c 'import hydra'"


def wall(args: list[str], folder: str) -> float:
    tic = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"python {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as folder:
        for rep in range(args.reps + 1):
            for name, command in COMMANDS.items():
                seconds = wall(command, folder)
                if rep:  # round 0 warms the disk cache and writes bytecode
                    times[name].append(seconds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"start-up: median wall time of {args.reps} runs each (after a warm-up round), {os.cpu_count()} cores\n"
          f"\n| command | median (s) | min-max (s) | vs import hydra |\n|---|---|---|---|")
    for name, t in times.items():
        print(f"| `{name}` | {medians[name]:.2f} | {min(t):.2f}-{max(t):.2f} | {medians[name] / medians[BASE]:.2f}x |")


if __name__ == "__main__":
    main()
