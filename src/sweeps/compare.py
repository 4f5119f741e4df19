"""`python -m sweeps.compare`: the jobs of a sweep side by side, and a report folder with plots.

    python -m sweeps.compare                            # latest sweep: table here, report in reports/<id>/
    python -m sweeps.compare --list                     # every sweep: time, command, jobs, statuses
    python -m sweeps.compare --sweep 3f2a --metric val_accuracy
    python -m sweeps.compare --group-by reg,rate        # mean over the other swept keys (e.g. seeds)
    python -m sweeps.compare --no-group                 # one row per job even when seeds were swept
    python -m sweeps.compare --stats bootstrap          # grouped rows: bootstrap intervals, P(beats the best)
    python -m sweeps.compare --objectives val_data_loss,active_weights   # mark the front of a trade-off
    python -m sweeps.compare --format csv > jobs.csv    # for scripts: only the table, on stdout

A sweep that ran several seeds (`seed=0,1,2`, or `repeat=3`: seeds and validation splits) is shown
one row per configuration (every other swept key): n, mean ± 95 % CI, and whether Welch's t-test,
Holm-Bonferroni corrected, tells it from the best (see `table` and `stats`).

Reading the store is `runs`, the table `table`, the report folder `report`; this module is the
command line around them. Errors a user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from sweeps.errors import CompareError, SweepsError
from sweeps.reporting.stats import KINDS

if TYPE_CHECKING:  # MLflow and pandas are imported once the arguments are read (`--help` answers at once)
    from mlflow.tracking import MlflowClient

    from sweeps.reporting import runs


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.compare",
        description="Compare the jobs of a sweep: a table (best first) and a report folder with plots.")
    parser.add_argument("--list", action="store_true", help="list the sweeps of the experiment, newest first")
    parser.add_argument("--sweep", metavar="ID", help="sweep (parent run) id or a unique prefix; default: latest")
    parser.add_argument("--experiment", default="sweeps", metavar="NAME", help="MLflow experiment (default: sweeps)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--metric", help="metric that ranks the jobs, e.g. val_accuracy (default: the jobs' "
                                         "optimized_metric, normally val_data_loss: validation loss without the penalty)")
    parser.add_argument("--objectives", metavar="METRICS", type=_keys,
                        help="two or more comma-separated metrics, e.g. val_data_loss,hidden_0/rel_sparsity: the "
                             "pareto column and the report's front (default: the jobs' optimized_metric list)")
    grouping = parser.add_mutually_exclusive_group()
    grouping.add_argument("--group-by", metavar="KEYS", type=_keys,
                          help="comma-separated keys, e.g. reg,rate: one row per combination, mean and 95%% CI "
                               "over the rest (default when seeds were swept: every swept key but seed)")
    grouping.add_argument("--no-group", action="store_true",
                          help="one row per job, even when the sweep ran several seeds")
    parser.add_argument("--stats", choices=KINDS, default="t",
                        help="grouped rows: t (default: mean, 95%% Student's t interval, Holm-corrected Welch "
                             "ties) or bootstrap (also the percentile bootstrap interval and the probability "
                             "of beating the best row, with its stratified bootstrap interval)")
    parser.add_argument("--wide", action="store_true",
                        help="every column in the terminal table (default: fit 120 characters)")
    parser.add_argument("--format", choices=["csv", "md", "json"],
                        help="print only the table in this format (no report folder unless --out is given)")
    parser.add_argument("--out", metavar="DIR", type=Path, help="report folder (default: reports/<sweep id>/)")
    return parser.parse_args(argv)


def _keys(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("give one or more comma-separated keys, e.g. --group-by reg,rate")
    return keys


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from sweeps.reporting import runs

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
    from sweeps.reporting import mdtext, report, runs, table

    sweep = runs.find_sweep(client, experiment, args.experiment, args.sweep)
    if args.metric:  # the one a user typed must exist; the default ranks even a sweep with no metrics yet
        runs.check_metric(sweep, args.metric)
    args.metric = args.metric or table.default_metric(sweep)
    if args.objectives is not None:
        if len(set(args.objectives)) < 2:
            raise CompareError(f"--objectives {','.join(args.objectives)}: a front needs two or more different "
                               "metrics, e.g. --objectives val_data_loss,hidden_0/rel_sparsity")
        for name in args.objectives:
            runs.check_metric(sweep, name, runs.Ask(metric=f"--objectives {','.join(args.objectives)}: {{}}"))
    check_group_keys(sweep, args.group_by or [])
    keys = table.grouping(sweep, args.group_by, group=not args.no_group)
    if keys is None and args.stats != "t":
        raise CompareError(f"--stats {args.stats}: sweep {sweep.id} has one job per configuration; group jobs "
                           "(sweep seeds, e.g. repeat=3, or give --group-by KEYS) to compare groups")
    folder = report_folder(args.out or (None if args.format else Path("reports") / sweep.id))
    runs.load_histories(client, sweep, report.history_keys(args.metric, args.objectives or ()))
    rows = table.sweep_rows(sweep, args.metric, keys, args.stats, args.objectives)
    if args.format:
        sys.stdout.write(table.FORMATS[args.format](rows))
    else:
        print(f"sweep {sweep.id} ({sweep.started}): {mdtext.visible(sweep.command)}\n")  # a tag: no escapes
        rank = table.sort_column(args.metric)
        keep = (rank, f"{rank}_boot95", "p_beats_best") if args.stats == "bootstrap" else (rank,)
        sys.stdout.write(table.to_text(rows, None if args.wide else table.TEXT_WIDTH, keep))
        if keys is not None:
            note = table.grouping_note(sweep, keys, args.metric) + ("" if args.group_by else " --no-group: one row per job.")
            print("\n" + textwrap.fill(note, table.TEXT_WIDTH, break_on_hyphens=False))
    if folder is not None:
        report.write(folder, sweep, rows, args.metric, keys, args.objectives)
        print(f"\nreport written to {folder}/ (report.md, report.html, comparison.csv, comparison.json, plots)",
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


def check_group_keys(sweep: runs.SweepRuns, keys: list[str]) -> None:
    """Group-by keys must be swept keys or params of the jobs (those become extra columns)."""
    unknown = [k for k in keys if k not in sweep.swept and all(job.value(k) is None for job in sweep.jobs)]
    if unknown:
        raise CompareError(f"--group-by {','.join(unknown)}: not a swept key or param of sweep {sweep.id}; "
                           f"swept keys: {', '.join(sweep.swept) or 'none'} (any param such as dropout works too)")


def list_sweeps(client: MlflowClient, experiment: str, args: argparse.Namespace) -> int:
    from sweeps.reporting import runs, table

    sweeps = runs.list_sweeps(client, experiment)
    if not sweeps:
        raise CompareError(f"no sweeps in experiment {args.experiment!r}: run one with "
                           "python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3 (or pick --experiment)")
    rows = [runs.sweep_summary(parent, jobs) for parent, jobs in sweeps]
    sys.stdout.write(table.FORMATS[args.format or "text"](rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
