"""The comparison table: one row per job (or per group of jobs), best first, and its text formats.

A row holds plain values (str, int, float, bool or None), so the CSV and JSON formats carry the
numbers exactly as MLflow stored them; only the text and Markdown formats round them for reading.

Columns: status, the swept values, final and best of each validation metric (`--metric` first),
final training loss (no dropout), test metrics, generalization gap, train time, parameter count,
run name and id.

Grouped rows (jobs that differ only in `seed`, or `--group-by KEYS`): the status counts, the keys,
`n` (jobs with the ranking metric), `tied_with_best`, then `<column>_mean` and `<column>_ci95` (the
half-width of the 95 % confidence interval of the mean, Student's t) of every measured column, the
columns every job of every group shares (`n_params`), and `run_ids`. `tied_with_best` is Welch's
t-test (unequal variances, two-sided, 5 %) of the ranking metric against the best row's jobs: true
when the test cannot tell the two apart, null when either side has fewer than two values.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import statistics
import textwrap
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from sweeps import tags
from sweeps.config import RANK_METRIC, VALIDATION_METRICS, higher_is_better
from sweeps.runs import Job, SweepRuns

VALIDATION = list(VALIDATION_METRICS)
END_METRICS = ["final_train_data_loss", "test_data_loss", "final_train_loss", "test_loss", "test_accuracy", "test_mae",
               "generalization_gap", "train_time_s"]
HIDDEN_IN_READING = ("run_name", "run_id", "run_ids")  # left out of the text and Markdown tables
PER_JOB = ("status", "run_name", "run_id")  # a group's row summarizes these instead of carrying them
CONFIG_NUMBERS = ("n_params",)  # numbers that describe a configuration: carried, never averaged
CONFIDENCE = 0.95  # of the interval around each mean
ALPHA = 0.05  # level of Welch's t-test behind tied_with_best
TEXT_WIDTH = 120  # the terminal table fits this many characters unless --wide
SHORT_NAMES = [("final_", ""), ("accuracy", "acc"), ("generalization_gap", "gap"), ("train_time_s", "time_s"),
               ("tied_with_best", "tied")]  # header abbreviations of the fitted text table


def is_per_epoch(metric: str) -> bool:
    """Validation metrics are logged every epoch: the table shows their final and best value."""
    return metric.startswith("val_")


def default_metric(sweep: SweepRuns) -> str:
    """What ranks a sweep unless told otherwise: the `optimized_metric` its jobs share, else the
    data loss (`val_loss` for sweeps logged before the data loss was)."""
    logged = set(sweep.metric_names())
    chosen = {job.params.get("optimized_metric") for job in sweep.jobs} - {None}
    if len(chosen) == 1 and (next(iter(chosen)) in logged or not logged):  # not logged: no job got that far
        return chosen.pop()
    return RANK_METRIC if RANK_METRIC in logged or not logged else "val_loss"


def sort_column(metric: str) -> str:
    return f"final_{metric}" if is_per_epoch(metric) else metric


def best_value(job: Job, metric: str) -> Optional[float]:
    """`best_<metric>` as logged, else the best epoch of the loaded history."""
    if f"best_{metric}" in job.metrics:
        return job.metrics[f"best_{metric}"]
    history = job.history.get(metric)
    if not history:
        return None
    return max(history) if higher_is_better(metric) else min(history)


def job_rows(sweep: SweepRuns, metric: str, extra_keys: tuple[str, ...] = ()) -> list[dict]:
    """One row per job, best `metric` first; `extra_keys` adds columns for non-swept params."""
    logged = set(sweep.metric_names())
    validation = [m for m in dict.fromkeys([metric, *VALIDATION]) if is_per_epoch(m) and m in logged]
    end = [m for m in dict.fromkeys([metric, *END_METRICS]) if not is_per_epoch(m) and m in logged]
    rows = [_row(job, [*sweep.swept, *extra_keys], validation, end) for job in sweep.jobs]
    return sort_rows(rows, metric)


def _row(job: Job, keys: list[str], validation: list[str], end: list[str]) -> dict:
    pruned = job.run.data.tags.get(tags.PRUNED_AT)
    row: dict = {"status": f"PRUNED@{pruned}" if pruned is not None else job.status}
    row.update({key: job.value(key) for key in keys})
    for m in validation:
        row[f"final_{m}"] = job.metrics.get(m)
        row[f"best_{m}"] = best_value(job, m)
    row.update({m: job.metrics.get(m) for m in end})
    n_params = job.params.get("n_params")
    row["n_params"] = int(n_params) if n_params and n_params.isdigit() else None
    row["run_name"] = job.name
    row["run_id"] = job.id
    return row


def rank_column(rows: list[dict], metric: str) -> str:
    """The column that ranks `rows`: `final_val_loss`, or `final_val_loss_mean` for grouped rows."""
    column = sort_column(metric)
    return f"{column}_mean" if any(f"{column}_mean" in row for row in rows) else column


def sort_rows(rows: list[dict], metric: str) -> list[dict]:
    """Best first (by the mean for grouped rows); rows without the metric (failed jobs) last, in order."""
    return sorted(rows, key=_rank_key(rank_column(rows, metric), metric))


def _rank_key(column: str, metric: str):
    sign = -1 if higher_is_better(metric) else 1

    def key(row: dict):
        value = row.get(column)
        return (1, 0.0) if _missing(value) else (0, sign * value)

    return key


# --- grouping ---------------------------------------------------------------------------------

def grouping(sweep: SweepRuns, group_by: Optional[list[str]] = None, group: bool = True) -> Optional[list[str]]:
    """The keys rows are grouped by: `group_by` when given, else every swept key but `seed` when the
    sweep ran several seeds (and `group`), else None: one row per job."""
    if group_by is not None:
        return list(group_by)
    if group and "seed" in sweep.swept and len({job.value("seed") for job in sweep.jobs}) > 1:
        return [key for key in sweep.swept if key != "seed"]
    return None


def sweep_rows(sweep: SweepRuns, metric: str, keys: Optional[list[str]] = None) -> list[dict]:
    """The comparison table: one row per job, or per combination of `keys` (see `grouping`)."""
    rows = job_rows(sweep, metric, tuple(k for k in keys or () if k not in sweep.swept))
    return rows if keys is None else group_rows(rows, keys, metric)


def grouping_note(sweep: SweepRuns, keys: list[str], metric: str) -> str:
    """How grouped rows were made, in one sentence (terminal and report.md)."""
    over = [k for k in sweep.swept if k not in keys]
    return (f"One row per {', '.join(keys) or 'sweep'} over {', '.join(over) or 'its jobs'}: n jobs, mean ± 95% "
            f"confidence interval (Student's t); tied_with_best = Welch's t-test (two-sided, 5%) cannot tell its "
            f"{sort_column(metric)} from the best row's (blank: fewer than 2 jobs on a side).")


def group_rows(rows: list[dict], keys: list[str], metric: str) -> list[dict]:
    """One row per combination of `keys`, best mean first (see the module's docstring for the columns)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    columns = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in keys and c not in PER_JOB]
    measured = {c for c in columns if c not in CONFIG_NUMBERS and any(_is_number(r.get(c)) for r in rows)}
    shared = {c for c in columns if c not in measured and all(_same(m, c) for m in groups.values())}
    rank = sort_column(metric)
    out = []
    for values, members in groups.items():
        row = {"status": status_counts(members), **dict(zip(keys, values)), "n": len(_values(members, rank)),
               "tied_with_best": None}
        for col in columns:
            if col in measured:
                row[f"{col}_mean"], row[f"{col}_ci95"] = mean_ci(_values(members, col))
            elif col in shared:
                row[col] = next((m[col] for m in members if not _missing(m.get(col))), None)
        row["run_ids"] = ",".join(m["run_id"] for m in members if m.get("run_id"))
        out.append((row, _values(members, rank)))
    out.sort(key=lambda pair: _rank_key(f"{rank}_mean", metric)(pair[0]))
    best = out[0][1] if out else []
    for i, (row, values) in enumerate(out):  # the best row itself: tied, when it has the 2 values a test needs
        row["tied_with_best"] = (True if len(values) >= 2 else None) if i == 0 else tied(best, values)
    return [row for row, _ in out]


def status_counts(rows: list[dict]) -> str:
    """`3 FINISHED` or `1 FAILED, 2 FINISHED`: the statuses of a group's jobs (pruned ones as PRUNED)."""
    counts = Counter("PRUNED" if str(r.get("status")).startswith("PRUNED") else r.get("status") for r in rows)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda item: str(item[0])))


def mean_ci(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    """The mean and the half-width of its 95 % confidence interval (Student's t; None below two values)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    from scipy import stats  # here, not at the top: `import scipy.stats` takes a second or two

    quantile = stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)
    return mean, float(quantile * statistics.stdev(values) / math.sqrt(len(values)))


def welch_p(a: list[float], b: list[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (unequal variances) that `a` and `b` share a mean; None below 2 each."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    with warnings.catch_warnings():  # identical values: scipy warns and returns NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if math.isnan(p):  # no spread on either side: the means are plainly equal or plainly not
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return p


def tied(best: list[float], values: list[float]) -> Optional[bool]:
    """Whether Welch's test at 5 % cannot tell `values` from `best`; None when it cannot run."""
    p = welch_p(best, values)
    return None if p is None else p >= ALPHA


def _same(rows: list[dict], column: str) -> bool:
    """Whether the rows that have a value in `column` all have the same one (failed jobs may have none)."""
    present = [row[column] for row in rows if not _missing(row.get(column))]
    return all(value == present[0] for value in present)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _values(rows: list[dict], column: str) -> list[float]:
    return [float(row[column]) for row in rows if _is_number(row.get(column)) and not _missing(row[column])]


def _missing(value) -> bool:
    """None, NaN or ±inf (a diverged job's loss; the SQL store keeps inf as ±1.8e308): no number to compare."""
    return value is None or (isinstance(value, float) and (not math.isfinite(value) or abs(value) >= 1e308))


# --- formats ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeanCI:
    """A group's mean and the half-width of its 95 % interval, read as `0.4247 ± 0.012`."""

    mean: Optional[float]
    ci: Optional[float]

    def __str__(self) -> str:
        if _missing(self.mean):
            return ""
        return fmt(self.mean) + ("" if _missing(self.ci) else f" ± {self.ci:.2g}")


def reading(rows: list[dict]) -> list[dict]:
    """Rows for people: run ids left out, each `<m>_mean` / `<m>_ci95` pair as one `<m>` cell."""
    out = []
    for row in rows:
        cells = {}
        for key, value in row.items():
            stem = key.rsplit("_", 1)[0]
            if key in HIDDEN_IN_READING or (key.endswith("_ci95") and f"{stem}_mean" in row):
                continue
            if key.endswith("_mean") and f"{stem}_ci95" in row:
                cells[stem] = MeanCI(value, row[f"{stem}_ci95"])
            else:
                cells[key] = value
        out.append(cells)
    return out


def columns_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns_of(rows) or ["run_id"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if _missing(v) else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def to_json(rows: list[dict]) -> str:
    """A JSON list of rows; missing and NaN values are null (JSON has no NaN)."""
    clean = [{k: (None if _missing(v) else v) for k, v in row.items()} for row in rows]
    return json.dumps(clean, indent=2) + "\n"


def fmt(value) -> str:
    """A cell for reading: 4 significant digits, yes/no, mean ± CI; missing values empty."""
    if _missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "_no jobs_\n"
    rows = reading(rows)
    cols = columns_of(rows)
    cell = lambda value: fmt(value).replace("|", "\\|")  # noqa: E731 - a `|` in a value would split its cell
    lines = ["| " + " | ".join(map(cell, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_text(rows: list[dict], width: Optional[int] = None, keep: tuple[str, ...] = ()) -> str:
    """Aligned columns for a terminal: text left, numbers right. With `width`: short headers, and the
    least telling columns left out (never `keep`) until the table fits, with a line naming them."""
    if not rows:
        return "(no jobs)\n"
    rows = reading(rows)
    cols = columns_of(rows)
    if width is None:
        return _aligned(rows, cols, cols)
    left_out = []
    for col in _drop_order(rows, cols, keep):
        if _width(_aligned(rows, cols, [short(c) for c in cols])) <= width:
            break
        cols.remove(col)
        left_out.append(col)
    text = _aligned(rows, cols, [short(c) for c in cols])
    note = f"(left out to fit: {', '.join(left_out)}; --wide shows every column)"
    return text + (textwrap.fill(note, width, break_on_hyphens=False) + "\n" if left_out else "")


def short(column: str) -> str:
    """A header as the fitted text table shows it: `final_val_accuracy` -> `val_acc`."""
    for long, abbreviation in SHORT_NAMES:
        column = column.replace(long, abbreviation)
    return column


def _drop_order(rows: list[dict], cols: list[str], keep: tuple[str, ...]) -> list[str]:
    """Numeric columns, least telling first: best-epoch values, training-side numbers and sizes, test
    losses, the other validation metrics, then the rest from the right; never `keep` or `n`."""
    def priority(col: str) -> int:
        if col.startswith("best_"):
            return 0
        if col.startswith("final_train") or col.endswith("time_s") or col in CONFIG_NUMBERS:
            return 1
        if col.startswith("test_") and col.endswith("loss"):
            return 2
        return 3 if col.startswith("final_val_") else 4

    numeric = [c for c in cols if c not in (*keep, "n") and any(_is_number(r.get(c)) or isinstance(r.get(c), MeanCI)
                                                               for r in rows)]
    return sorted(numeric, key=lambda c: (priority(c), -cols.index(c)))


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def _aligned(rows: list[dict], cols: list[str], headers: list[str]) -> str:
    cells = [headers] + [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    numeric = [any(_is_number(r.get(c)) or isinstance(r.get(c), MeanCI) for r in rows) for c in cols]
    lines = ["  ".join(cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(line, widths, numeric))
             for line in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


FORMATS = {"csv": to_csv, "json": to_json, "md": to_markdown, "text": to_text}
