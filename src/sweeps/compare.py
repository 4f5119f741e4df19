"""`python -m sweeps.compare`: the jobs of a sweep side by side, and a report folder with plots.

    python -m sweeps.compare                            # latest sweep: table here, report in reports/<id>/
    python -m sweeps.compare --list                     # every sweep: time, command, jobs, statuses
    python -m sweeps.compare --sweep 3f2a --metric val_accuracy
    python -m sweeps.compare --group-by reg,rate        # mean over the other swept keys (e.g. seeds)
    python -m sweeps.compare --format csv > jobs.csv    # for scripts: only the table, on stdout

Reading the store is `runs`, the table `table`, the report folder `report`; this module is the
command line around them. Errors a user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from mlflow.tracking import MlflowClient

from sweeps import report, runs, table, tags
from sweeps.errors import CompareError, SweepsError


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.compare",
        description="Compare the jobs of a sweep: a table (best first) and a report folder with plots.")
    parser.add_argument("--list", action="store_true", help="list the sweeps of the experiment, newest first")
    parser.add_argument("--sweep", metavar="ID", help="sweep (parent run) id or a unique prefix; default: latest")
    parser.add_argument("--experiment", default="sweeps", metavar="NAME", help="MLflow experiment (default: sweeps)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--metric", default="val_loss",
                        help="metric that ranks the jobs, e.g. val_accuracy (default: val_loss)")
    parser.add_argument("--group-by", metavar="KEYS", type=_keys,
                        help="comma-separated keys, e.g. reg,rate: one row per combination, means of the rest")
    parser.add_argument("--format", choices=["csv", "md", "json"],
                        help="print only the table in this format (no report folder unless --out is given)")
    parser.add_argument("--out", metavar="DIR", type=Path, help="report folder (default: reports/<sweep id>/)")
    return parser.parse_args(argv)


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        client = runs.open_store(args.tracking_uri)
        experiment = runs.experiment_id(client, args.experiment)
        if args.list:
            return list_sweeps(client, experiment, args)
        return compare(client, experiment, args)
    except SweepsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def compare(client: MlflowClient, experiment: str, args: argparse.Namespace) -> int:
    sweep = runs.find_sweep(client, experiment, args.experiment, args.sweep)
    check_metric(sweep, args.metric)
    folder = report_folder(args.out or (None if args.format else Path("reports") / sweep.id))
    extra = check_group_keys(sweep, args.group_by or [])
    runs.load_histories(client, sweep, report.history_keys(args.metric))
    rows = table.job_rows(sweep, args.metric, tuple(extra))
    if args.group_by:
        rows = table.group_rows(rows, args.group_by, args.metric)
    if args.format:
        sys.stdout.write(table.FORMATS[args.format](rows))
    else:
        print(f"sweep {sweep.id} ({sweep.started}): {sweep.command}\n")
        sys.stdout.write(table.to_text(rows))
    if folder is not None:
        report.write(folder, sweep, rows, args.metric)
        print(f"\nreport written to {folder}/ (report.md, comparison.csv, comparison.json, plots)",
              file=sys.stderr if args.format else sys.stdout)
    return 0


def report_folder(folder: Optional[Path]) -> Optional[Path]:
    """The report folder, created now: a path that cannot be one fails before anything is written."""
    if folder is None:
        return None
    if folder.exists() and not folder.is_dir():
        raise CompareError(f"--out {folder}: that is a file; give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".sweeps-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise CompareError(f"--out {folder}: cannot write there ({err.strerror}); give a writable folder") from None
    return folder


def check_metric(sweep: runs.SweepRuns, metric: str) -> None:
    available = sweep.metric_names()
    if metric not in available:
        shown = [m for m in available if "/" not in m]  # per-layer weight statistics would drown the list
        raise CompareError(f"--metric {metric}: no job of sweep {sweep.id} logged it; "
                           f"available: {', '.join(shown) or 'none (no job logged a metric)'}")


def check_group_keys(sweep: runs.SweepRuns, keys: list[str]) -> list[str]:
    """The group-by keys that are not swept (they become extra columns); unknown keys fail."""
    extra = [k for k in keys if k not in sweep.swept]
    unknown = [k for k in extra if all(job.value(k) is None for job in sweep.jobs)]
    if unknown:
        raise CompareError(f"--group-by {','.join(unknown)}: not a swept key or param of sweep {sweep.id}; "
                           f"swept keys: {', '.join(sweep.swept) or 'none'} (any param such as dropout works too)")
    return extra


def list_sweeps(client: MlflowClient, experiment: str, args: argparse.Namespace) -> int:
    sweeps = runs.list_sweeps(client, experiment)
    if not sweeps:
        raise CompareError(f"no sweeps in experiment {args.experiment!r}: run one with "
                           "python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3 (or pick --experiment)")
    rows = [sweep_row(parent, jobs) for parent, jobs in sweeps]
    sys.stdout.write(table.FORMATS[args.format or "text"](rows))
    return 0


def sweep_row(parent, jobs) -> dict:
    counts = Counter(job.info.status for job in jobs)
    return {"sweep": parent.info.run_id, "started": runs.format_time(parent.info.start_time),
            "status": parent.info.status, "jobs": len(jobs),
            "statuses": ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
            "command": parent.data.tags.get(tags.COMMAND) or parent.info.run_name or ""}


if __name__ == "__main__":
    sys.exit(main())
