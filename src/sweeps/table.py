"""The comparison table: one row per job (or per group of jobs), best first, and its text formats.

A row holds plain values (str, int, float or None), so the CSV and JSON formats carry the numbers
exactly as MLflow stored them; only the text and Markdown formats round them for reading.

Columns: status, the swept values, final and best of each validation metric (`--metric` first),
final training loss (no dropout), test metrics, generalization gap, train time, parameter count,
run name and id.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from typing import Optional

from sweeps import tags
from sweeps.config import higher_is_better
from sweeps.runs import Job, SweepRuns

VALIDATION = ["val_loss", "val_accuracy", "val_mae"]
END_METRICS = ["final_train_loss", "test_loss", "test_accuracy", "test_mae", "generalization_gap", "train_time_s"]
HIDDEN_IN_READING = ("run_name", "run_id")  # left out of the text and Markdown tables


def is_per_epoch(metric: str) -> bool:
    """Validation metrics are logged every epoch: the table shows their final and best value."""
    return metric.startswith("val_")


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


def sort_rows(rows: list[dict], metric: str) -> list[dict]:
    """Best first; jobs without the metric (failed ones) last, in their original order."""
    column, sign = sort_column(metric), (-1 if higher_is_better(metric) else 1)

    def key(row: dict):
        value = row.get(column)
        return (1, 0.0) if _missing(value) else (0, sign * value)

    return sorted(rows, key=key)


def group_rows(rows: list[dict], keys: list[str], metric: str) -> list[dict]:
    """One row per combination of `keys`: job count and the mean of every number; best first."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    column = sort_column(metric)
    out = []
    for values, members in groups.items():
        row = dict(zip(keys, values))
        row["jobs"] = len(members)
        row["finished"] = sum(m["status"] == "FINISHED" or m["status"].startswith("PRUNED") for m in members)
        row.update({col: _mean(members, col) for col in _numeric_columns(members)})
        row[f"{column}_std"] = _std(members, column)
        out.append(row)
    return sort_rows(out, metric)


def _numeric_columns(rows: list[dict]) -> list[str]:
    columns = dict.fromkeys(k for row in rows for k, v in row.items() if isinstance(v, (int, float)))
    return [c for c in columns if c not in ("jobs", "finished")]


def _values(rows: list[dict], column: str) -> list[float]:
    return [row[column] for row in rows if not _missing(row.get(column))]


def _mean(rows: list[dict], column: str) -> Optional[float]:
    values = _values(rows, column)
    return statistics.fmean(values) if values else None


def _std(rows: list[dict], column: str) -> Optional[float]:
    values = _values(rows, column)
    return statistics.stdev(values) if len(values) > 1 else None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- formats ---------------------------------------------------------------------------------

def columns_of(rows: list[dict], reading: bool = False) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return [c for c in columns if c not in HIDDEN_IN_READING] if reading else columns


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
    if _missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "_no jobs_\n"
    cols = columns_of(rows, reading=True)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_text(rows: list[dict]) -> str:
    """Aligned columns for a terminal: text left, numbers right."""
    if not rows:
        return "(no jobs)\n"
    cols = columns_of(rows, reading=True)
    cells = [cols] + [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    numeric = [any(isinstance(r.get(c), (int, float)) for r in rows) for c in cols]
    lines = ["  ".join(cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(line, widths, numeric))
             for line in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


FORMATS = {"csv": to_csv, "json": to_json, "md": to_markdown, "text": to_text}
