"""A sweep's report folder: report.md, comparison.csv / .md / .json and the plots it shows.

`write_report(client, parent_run_id, folder)` is what a sweep logs to its parent run when it ends;
`python -m sweeps.compare` writes the same folder for any sweep in the store. A plot the sweep cannot
support (say `rate` was not varied) is not drawn, and report.md says why.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlflow.tracking import MlflowClient

from sweeps import plots, runs, table
from sweeps.runs import Job, SweepRuns

CURVES = ["loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae"]  # per-epoch keys the plots use
NOT_A_SERIES = {"rate", "reg", "reg.kind", "seed"}  # swept keys that do not get their own line against rate


class SkipPlot(Exception):
    """The sweep does not vary what a plot needs; the message says what is missing."""


@dataclass
class Plot:
    file: str  # file name in the report folder
    title: str  # heading in report.md
    build: Callable[[SweepRuns, str], object]  # (sweep, metric) -> matplotlib figure, or raises SkipPlot


def write_report(client: MlflowClient, parent_run_id: str, folder: Path, metric: str = "val_loss") -> list[Path]:
    """The report of the sweep whose parent run is `parent_run_id`; returns the files written."""
    sweep = runs.sweep_of(client, parent_run_id)
    runs.load_histories(client, sweep, history_keys(metric))
    return write(folder, sweep, table.job_rows(sweep, metric), metric)


def history_keys(metric: str) -> list[str]:
    return list(dict.fromkeys([*CURVES, metric]))


def write(folder: Path, sweep: SweepRuns, rows: list[dict], metric: str) -> list[Path]:
    """report.md, comparison.csv/.md/.json and every plot the sweep supports, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [_write(folder / "comparison.csv", table.to_csv(rows)),
             _write(folder / "comparison.md", table.to_markdown(rows)),
             _write(folder / "comparison.json", table.to_json(rows))]
    drawn, skipped = draw(folder, sweep, metric)
    report = _write(folder / "report.md", markdown(sweep, rows, metric, drawn, skipped))
    return [report, *files, *(folder / p.file for p in drawn)]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- plots ------------------------------------------------------------------------------------

def plots_for(sweep: SweepRuns, metric: str) -> list[Plot]:
    second = "val_mae" if any("val_mae" in j.metrics for j in sweep.jobs) else "val_accuracy"
    return [
        Plot("val_loss.png", "Validation loss of every job", overlay("val_loss")),
        Plot(f"{second}.png", f"{nice(second).capitalize()} of every job", overlay(second)),
        Plot("train_vs_val.png", "Training vs validation loss, one panel per job", train_vs_val),
        Plot(f"{metric}_vs_rate.png", f"Final {nice(metric)} against rate", metric_vs_rate),
        Plot("sparsity_vs_rate.png", "Kernel sparsity against rate, L1 vs L2", sparsity_vs_rate),
    ]


def draw(folder: Path, sweep: SweepRuns, metric: str) -> tuple[list[Plot], list[tuple[Plot, str]]]:
    """Save each plot the sweep supports; returns the plots drawn and (plot, reason) for the others."""
    drawn, skipped = [], []
    for plot in plots_for(sweep, metric):
        try:
            fig = plot.build(sweep, metric)
        except SkipPlot as why:
            skipped.append((plot, str(why)))
            continue
        fig.savefig(folder / plot.file, dpi=110, bbox_inches="tight")
        plots.close(fig)
        drawn.append(plot)
    return drawn, skipped


def nice(metric: str) -> str:
    """`val_loss` -> `validation loss` for axis labels and titles."""
    return metric.replace("val_", "validation ").replace("test_", "test ").replace("_", " ")


def labels(sweep: SweepRuns) -> dict[str, str]:
    """Job id -> legend label (its swept values), unique within the sweep, failed jobs marked."""
    out, seen = {}, defaultdict(int)
    for job in sweep.jobs:
        label = job.label()
        seen[label] += 1
        label += f" ({seen[label]})" if seen[label] > 1 else ""
        out[job.id] = label + ("" if job.status == "FINISHED" else f" [{job.status}]")
    return out


def overlay(key: str) -> Callable[[SweepRuns, str], object]:
    def build(sweep: SweepRuns, metric: str):
        names = labels(sweep)
        curves = {names[j.id]: j.history[key] for j in sweep.jobs if j.history.get(key)}
        if not curves:
            raise SkipPlot(f"no job logged {key} per epoch")
        return plots.overlay_figure(curves, nice(key), f"{nice(key).capitalize()} of every job")

    return build


def train_vs_val(sweep: SweepRuns, metric: str):
    names = labels(sweep)
    panels = {names[j.id]: j.history for j in sweep.jobs if j.history.get("loss")}
    if not panels:
        raise SkipPlot("no job logged its loss per epoch")
    return plots.small_multiples(panels, ("loss", "val_loss"), "Training vs validation loss per job")


def metric_vs_rate(sweep: SweepRuns, metric: str):
    panels = [plots.RatePanel(f"final {nice(metric)}", *by_rate(sweep, lambda j: j.metrics.get(metric)))]
    if metric != "generalization_gap" and any("generalization_gap" in j.metrics for j in sweep.jobs):
        gap = by_rate(sweep, lambda j: j.metrics.get("generalization_gap"))
        panels.append(plots.RatePanel("generalization gap (test loss - train loss)", *gap))
    return plots.rate_figure(panels, f"Final {nice(metric)} against regularization strength")


def sparsity_vs_rate(sweep: SweepRuns, metric: str):
    layers = sorted({k.split("/")[0] for j in sweep.jobs for k in j.metrics if k.endswith("/sparsity")},
                    key=lambda name: (len(name), name))  # hidden_2 before hidden_10
    if not layers:
        raise SkipPlot("no job logged kernel sparsity (hidden_<i>/sparsity)")
    panels = [plots.RatePanel(f"{layer}: share of |w| < 1e-3",
                              *by_rate(sweep, lambda j, layer=layer: j.metrics.get(f"{layer}/sparsity")))
              for layer in layers]
    return plots.rate_figure(panels, "Kernel sparsity after training against regularization strength")


def by_rate(sweep: SweepRuns, value_of: Callable[[Job], Optional[float]]) -> tuple[dict, dict]:
    """Series label -> [(rate, mean value)] for penalized jobs, and label -> mean value for the others.

    Jobs that differ only in `seed` (or keys not swept) are averaged.
    """
    points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    unpenalized: dict[str, list[float]] = defaultdict(list)
    for job in sweep.jobs:
        value, rate = value_of(job), job.number("rate")
        if value is None or not math.isfinite(value) or rate is None:
            continue
        label = series_label(job, sweep)
        if job.value("reg") in (None, "none") or rate <= 0:
            unpenalized[label].append(value)
        else:
            points[label][rate].append(value)
    if len({rate for by_rate_ in points.values() for rate in by_rate_}) < 2:
        raise SkipPlot("the sweep does not vary `rate` (it needs two or more rates > 0 with reg=l1/l2)")
    series = {label: [(r, statistics.fmean(v)) for r, v in rates.items()] for label, rates in points.items()}
    return series, {label: statistics.fmean(v) for label, v in unpenalized.items()}


def series_label(job: Job, sweep: SweepRuns) -> str:
    """`reg=l1`, plus the job's other swept values (`dropout=0.2, batch_size=128`)."""
    others = [f"{k}={job.value(k)}" for k in sweep.swept if k not in NOT_A_SERIES]
    return ", ".join([f"reg={job.value('reg') or '?'}", *others])


# --- report.md --------------------------------------------------------------------------------

def markdown(sweep: SweepRuns, rows: list[dict], metric: str, drawn: list[Plot],
             skipped: list[tuple[Plot, str]]) -> str:
    parts = [header(sweep, rows, metric), f"## Jobs, best {metric} first\n\n{table.to_markdown(rows)}"]
    failed = [j for j in sweep.jobs if j.status != "FINISHED"]
    if failed:
        parts.append("## Jobs that did not finish\n\n" + "".join(
            f"- `{j.label()}`: {j.status}{': ' + j.error.splitlines()[0] if j.error else ''}\n" for j in failed))
    parts += [f"## {p.title}\n\n![{p.title}]({p.file})\n" for p in drawn]
    if skipped:
        parts.append("## Not drawn\n\n" + "".join(f"- {p.title}: {why}\n" for p, why in skipped))
    return "\n".join(parts)


def header(sweep: SweepRuns, rows: list[dict], metric: str) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.status_counts().items()))
    lines = [f"# Sweep `{sweep.command}`\n",
             f"- sweep `{sweep.id}` in experiment `{sweep.experiment}`, started {sweep.started}",
             f"- command: `python -m sweeps.train -m {sweep.command}`",
             f"- jobs: {len(sweep.jobs)} ({counts or 'none'})"]
    column = table.sort_column(metric)
    if rows and rows[0].get(column) is not None:
        best = rows[0]
        values = ", ".join(f"{k}={best[k]}" for k in sweep.swept if k in best)
        lines.append(f"- best {metric}: {table.fmt(best[column])} ({values or best.get('run_name', '')})")
    lines.append(f"- again: `python -m sweeps.compare --sweep {sweep.id}`")
    return "\n".join(lines) + "\n"
