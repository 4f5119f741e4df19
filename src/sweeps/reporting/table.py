"""The comparison table: one row per job (or per group of jobs), best first, and its text formats.

A row holds plain values (str, int, float, bool or None), so the CSV and JSON formats carry the
numbers exactly as MLflow stored them; only the text and Markdown formats round them for reading.

Columns: status, the swept values, final and best of each validation metric (`--metric` first),
final training loss (no dropout), test metrics, generalization gap, train time, parameter count,
run name and id.

Grouped rows (jobs that differ only in `seed` and `data.val_seed`, the keys `repeat=K` varies, or
`--group-by KEYS`): the status counts, the keys, `n` (jobs with the ranking metric),
`tied_with_best`, then `<column>_mean` and `<column>_ci95` (the half-width of the 95 % confidence
interval of the mean, Student's t) of every measured column, the columns every job of every group
shares (`n_params`), and `run_ids`. `tied_with_best` is Welch's t-test (unequal variances,
two-sided) of the ranking metric against the best row's jobs, Holm-Bonferroni corrected over every
pair of rows, family-wise 5 % (`stats.ties_with_best` says why every pair): true when the test
cannot tell the two apart, null when either side has fewer than two values.

`stats="bootstrap"` adds, for the ranking column `<rank>`: `<rank>_boot95_low` / `_high` (95 %
percentile bootstrap interval of the mean), `p_beats_best` with `p_beats_best_low` / `_high` (the
probability that a job of the row beats a job of the best row, ties half, and its 95 % stratified
bootstrap interval; null on the best row) and `p_vs_best_holm` (the Holm-adjusted p-value behind
`tied_with_best`). The text and Markdown tables show each `_low` / `_high` pair as `[low, high]`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import textwrap
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from sweeps.reporting import mdtext, stats
from sweeps.tracking import tags
from sweeps.config import objectives_param
from sweeps.config.metrics import END_METRICS, RANK_METRIC, VALIDATION_METRICS, higher_is_better, is_per_epoch
from sweeps.sweeping.repeats import REPEATED, SOURCES
from sweeps.reporting.runs import Job, SweepRuns
from sweeps.reporting.stats import ALPHA, CONFIDENCE, mean_ci, tied, welch_p  # noqa: F401 - part of this module's interface

VALIDATION = list(VALIDATION_METRICS)
HIDDEN_IN_READING = ("run_name", "run_id", "run_ids")  # left out of the text and Markdown tables
PER_JOB = ("status", "run_name", "run_id")  # a group's row summarizes these instead of carrying them
CONFIG_NUMBERS = ("n_params",)  # numbers that describe a configuration: carried, never averaged
TEXT_WIDTH = 120  # the terminal table fits this many characters unless --wide
SHORT_NAMES = [("final_", ""), ("accuracy", "acc"), ("generalization_gap", "gap"), ("train_time_s", "time_s"),
               ("tied_with_best", "tied"), ("p_beats_best", "p_beats"), ("_boot95", "_boot"),
               ("p_vs_best_holm", "p_holm")]  # header abbreviations of the fitted text table


def default_metric(sweep: SweepRuns) -> str:
    """What ranks a sweep unless told otherwise: the `optimized_metric` its jobs share, else the
    data loss (`val_loss` for sweeps logged before the data loss was)."""
    logged = set(sweep.metric_names())
    chosen = {(objectives_param(job.params.get("optimized_metric")) or [None])[0] for job in sweep.jobs} - {None}
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


def job_rows(sweep: SweepRuns, metric: str, extra_keys: tuple[str, ...] = (),
             objectives: Optional[list[str]] = None) -> list[dict]:
    """One row per job, best `metric` first; `extra_keys` adds columns for non-swept params; with two
    or more `objectives` (default: `default_objectives`), their columns and `pareto` (see `mark_front`)."""
    objectives = default_objectives(sweep) if objectives is None else objectives
    logged = set(sweep.metric_names())
    validation = [m for m in dict.fromkeys([metric, *objectives, *VALIDATION]) if is_per_epoch(m) and m in logged]
    end = [m for m in dict.fromkeys([metric, *objectives, *END_METRICS]) if not is_per_epoch(m) and m in logged]
    rows = [_row(job, [*sweep.swept, *extra_keys], validation, end) for job in sweep.jobs]
    return mark_front(sort_rows(rows, metric), objectives)


def default_objectives(sweep: SweepRuns) -> list[str]:
    """The objectives of a sweep whose jobs share an `optimized_metric` of two or more metrics, all
    logged (else none: a single metric has no front)."""
    chosen = {tuple(objectives_param(job.params.get("optimized_metric"))) for job in sweep.jobs} - {()}
    logged = set(sweep.metric_names())
    if len(chosen) == 1 and len(names := list(next(iter(chosen)))) > 1 and set(names) <= logged:
        return names
    return []


def mark_front(rows: list[dict], objectives: list[str]) -> list[dict]:
    """`pareto` on each row when there are two or more `objectives`: true for the rows no other row beats
    on every objective at once (`stats.pareto_front` over their final values, or means for grouped rows),
    false for the others, null for a row that did not finish or lacks one (pruned, failed)."""
    if len(objectives) < 2:
        return rows
    columns = [rank_column(rows, m) for m in objectives]
    finished = [i for i, row in enumerate(rows) if row.get("status") == "FINISHED" or "n" in row]  # "n": a group
    scored = [i for i in finished if all(_is_number(rows[i].get(c)) and math.isfinite(rows[i][c]) for c in columns)]
    front = {scored[i] for i in stats.pareto_front([[rows[j][c] for c in columns] for j in scored],
                                                   [higher_is_better(m) for m in objectives])}
    for i, row in enumerate(rows):
        row["pareto"] = (i in front) if i in scored else None
    return rows


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
    """The keys rows are grouped by: `group_by` when given, else every swept key but `seed` and
    `data.val_seed` (`repeats.REPEATED`) when the sweep ran several of them (and `group`), else
    None: one row per job."""
    if group_by is not None:
        return list(group_by)
    if group and any(k in sweep.swept and len({job.value(k) for job in sweep.jobs}) > 1 for k in REPEATED):
        return config_keys(sweep.swept)
    return None


def config_keys(swept: list[str]) -> list[str]:
    """The swept keys that make a configuration: all but the ones a repeat varies."""
    return [key for key in swept if key not in REPEATED]


def sweep_rows(sweep: SweepRuns, metric: str, keys: Optional[list[str]] = None, stats_kind: str = "t",
               objectives: Optional[list[str]] = None) -> list[dict]:
    """The comparison table: one row per job, or per combination of `keys` (see `grouping`), with the
    front of `objectives` (default: `default_objectives`) marked."""
    objectives = default_objectives(sweep) if objectives is None else objectives
    rows = job_rows(sweep, metric, tuple(k for k in keys or () if k not in sweep.swept), objectives)
    if keys is None:
        return rows
    grouped = group_rows([{k: v for k, v in row.items() if k != "pareto"} for row in rows], keys, metric, stats_kind)
    return mark_front(grouped, objectives)


def grouping_note(sweep: SweepRuns, keys: list[str], metric: str) -> str:
    """How grouped rows were made, in one sentence (terminal and report.md)."""
    over = [k for k in sweep.swept if k not in keys]
    return (f"One row per {', '.join(keys) or 'sweep'} over {', '.join(over) or 'its jobs'}: n jobs, mean ± 95% "
            f"confidence interval (Student's t); tied_with_best = Welch's t-test (two-sided, 5%) cannot tell its "
            f"{sort_column(metric)} from the best row's, Holm-Bonferroni corrected over every pair of rows "
            f"(family-wise 5%; blank: fewer than 2 jobs on a side).{sources_note(sweep, over)}")


def varied_sources(sweep: SweepRuns, over: list[str]) -> list[str]:
    """The repeat keys among `over` that took several values in the jobs' configs (`data.val_seed`
    counts only where a validation split was drawn: the param is logged only then)."""
    return [k for k in REPEATED if k in over and len({job.params.get(k) for job in sweep.jobs} - {None}) > 1]


def sources_note(sweep: SweepRuns, over: list[str]) -> str:
    """Which sources of variance the repeats of each row varied, in one sentence ('' when none)."""
    varied = varied_sources(sweep, over)
    if not varied:
        return ""
    said = " and ".join(f"{k} ({SOURCES[k]})" for k in varied)
    if "data.val_seed" in varied:
        return f" Repeats varied {said}."
    return (f" Repeats varied {said} only: the validation split (data.val_seed) was the same for every job, so "
            f"the intervals leave out its share of the variance; repeat=K varies both.")


def group_rows(rows: list[dict], keys: list[str], metric: str, stats_kind: str = "t") -> list[dict]:
    """One row per combination of `keys`, best mean first (see the module's docstring for the columns);
    `stats_kind="bootstrap"` adds the bootstrap's columns."""
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
    samples = [values for _, values in out]
    ties, adjusted = stats.ties_with_best(samples)  # the best row itself: tied, when it has the 2 values a test needs
    for (row, _), tie in zip(out, ties):
        row["tied_with_best"] = tie
    if stats_kind == "bootstrap":
        return [with_bootstrap(row, values, samples[0], p, rank, higher_is_better(metric), i == 0)
                for i, ((row, values), p) in enumerate(zip(out, adjusted))]
    return [row for row, _ in out]


def with_bootstrap(row: dict, values: list[float], best: list[float], p_holm: Optional[float], rank: str,
                   higher: bool, is_best: bool) -> dict:
    """`row` with the bootstrap's columns of the ranking column `rank` (see the module's docstring)."""
    low, high = stats.bootstrap_ci(values)
    beats = None if is_best else stats.probability_of_improvement(values, best, higher)
    beats_low, beats_high = (None, None) if is_best else stats.improvement_ci(values, best, higher)
    out = {}
    for key, value in row.items():
        out[key] = value
        if key == "tied_with_best":
            out.update(p_beats_best=beats, p_beats_best_low=beats_low, p_beats_best_high=beats_high,
                       p_vs_best_holm=p_holm)
        elif key == f"{rank}_ci95":
            out.update({f"{rank}_boot95_low": low, f"{rank}_boot95_high": high})
    return out


def status_counts(rows: list[dict]) -> str:
    """`3 FINISHED` or `1 FAILED, 2 FINISHED`: the statuses of a group's jobs (pruned ones as PRUNED)."""
    counts = Counter("PRUNED" if str(r.get("status")).startswith("PRUNED") else r.get("status") for r in rows)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda item: str(item[0])))


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


@dataclass(frozen=True)
class Interval:
    """A value (or none) and an interval around it, read as `0.1667 [0, 0.4444]` or `[0.41, 0.43]`."""

    value: Optional[float]
    low: Optional[float]
    high: Optional[float]

    def __str__(self) -> str:
        if _missing(self.low) or _missing(self.high):
            return fmt(self.value)
        return ("" if _missing(self.value) else fmt(self.value) + " ") + f"[{fmt(self.low)}, {fmt(self.high)}]"


CELLS = (MeanCI, Interval)  # cells made of several columns: numbers, for alignment and fitting


def reading(rows: list[dict]) -> list[dict]:
    """Rows for people: run ids left out, each `<m>_mean` / `<m>_ci95` pair as one `<m>` cell, each
    `<m>_low` / `<m>_high` pair as one interval cell (`<m>` with its value, when there is one)."""
    out = []
    for row in rows:
        cells = {}
        for key, value in row.items():
            stem, _, end = key.rpartition("_")
            if key in HIDDEN_IN_READING or _folded(row, stem, end):
                continue
            if end == "mean" and f"{stem}_ci95" in row:
                cells[stem] = MeanCI(value, row[f"{stem}_ci95"])
            elif f"{key}_low" in row and f"{key}_high" in row:
                cells[key] = Interval(value, row[f"{key}_low"], row[f"{key}_high"])
            elif end == "low" and f"{stem}_high" in row:
                cells[stem] = Interval(None, value, row[f"{stem}_high"])
            else:
                cells[key] = value
        out.append(cells)
    return out


def _folded(row: dict, stem: str, end: str) -> bool:
    """Whether a column is shown inside another one's cell (see `reading`)."""
    return ((end == "ci95" and f"{stem}_mean" in row) or (end == "high" and f"{stem}_low" in row)
            or (end == "low" and stem in row and f"{stem}_high" in row))


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
    cell = lambda value: mdtext.text(fmt(value))  # noqa: E731 - a `|` or newline in a value is no structure
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

    numeric = [c for c in cols if c not in (*keep, "n") and any(_is_number(r.get(c)) or isinstance(r.get(c), CELLS)
                                                               for r in rows)]
    return sorted(numeric, key=lambda c: (priority(c), -cols.index(c)))


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def _aligned(rows: list[dict], cols: list[str], headers: list[str]) -> str:
    cells = [headers] + [[mdtext.visible(fmt(r.get(c))) for c in cols] for r in rows]  # one line, no escapes
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    numeric = [any(_is_number(r.get(c)) or isinstance(r.get(c), CELLS) for r in rows) for c in cols]
    lines = ["  ".join(cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(line, widths, numeric))
             for line in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


FORMATS = {"csv": to_csv, "json": to_json, "md": to_markdown, "text": to_text}
