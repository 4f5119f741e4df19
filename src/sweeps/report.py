"""A sweep's report folder: report.md, comparison.csv / .md / .json and the plots it shows.

`write_report(client, parent_run_id, folder)` is what a sweep logs to its parent run when it ends;
`python -m sweeps.compare` writes the same folder for any sweep in the store. A plot the sweep cannot
support (say `rate` was not varied) is not drawn, and report.md says why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlflow.tracking import MlflowClient

from sweeps import plots, report_html, runs, table
from sweeps.config import higher_is_better
from sweeps.runs import Job, SweepRuns

CURVES = ["data_loss", "val_data_loss", "penalty", "loss", "val_loss", "accuracy", "val_accuracy", "mae",
          "val_mae"]  # per-epoch keys the plots use
NOT_A_SERIES = {"rate", "reg", "reg.kind", "seed"}  # swept keys that do not get their own line against rate
MANIFEST = ".sweeps-report"  # in a report folder: the files the report wrote (cleared before the next one)


class SkipPlot(Exception):
    """The sweep does not vary what a plot needs; the message says what is missing."""


@dataclass
class Plot:
    file: str  # file name in the report folder
    title: str  # heading in report.md
    build: Callable[[SweepRuns, str], object]  # (sweep, metric) -> matplotlib figure, or raises SkipPlot


def write_report(client: MlflowClient, parent_run_id: str, folder: Path, metric: Optional[str] = None) -> list[Path]:
    """The report of the sweep whose parent run is `parent_run_id`; returns the files written."""
    sweep = runs.sweep_of(client, parent_run_id)
    metric = metric or table.default_metric(sweep)
    runs.load_histories(client, sweep, history_keys(metric))
    keys = table.grouping(sweep)
    return write(folder, sweep, table.sweep_rows(sweep, metric, keys), metric, keys)


def loss_pair(sweep: SweepRuns) -> tuple[str, str]:
    """The training and validation loss the plots draw: the data term when logged (no penalty)."""
    logged = set(sweep.metric_names())
    return ("data_loss", "val_data_loss") if "val_data_loss" in logged else ("loss", "val_loss")


def history_keys(metric: str) -> list[str]:
    return list(dict.fromkeys([*CURVES, metric]))


def write(folder: Path, sweep: SweepRuns, rows: list[dict], metric: str,
          keys: Optional[list[str]] = None) -> list[Path]:
    """report.md, comparison.csv/.md/.json and every plot the sweep supports, into `folder`;
    `keys`: what `rows` were grouped by (None: one row per job)."""
    folder.mkdir(parents=True, exist_ok=True)
    clear(folder)
    files = [_write(folder / "comparison.csv", table.to_csv(rows)),
             _write(folder / "comparison.md", table.to_markdown(rows)),
             _write(folder / "comparison.json", table.to_json(rows))]
    if keys is not None:  # grouped rows: the per-job ones too
        files.append(_write(folder / "jobs.csv", table.to_csv(table.job_rows(sweep, metric))))
    drawn, skipped = draw(folder, sweep, metric)
    report = _write(folder / "report.md", markdown(sweep, rows, metric, drawn, skipped, keys))
    page = report_html.write(folder)  # the same report, plots embedded, for MLflow's artifact viewer
    written = [report, page, *files, *(folder / p.file for p in drawn)]
    _write(folder / MANIFEST, "\n".join(path.name for path in written) + "\n")
    return written


def clear(folder: Path) -> None:
    """Remove the files an earlier report wrote in `folder` (a plot it no longer draws would linger),
    as its manifest lists them; nothing else is touched."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    for name in manifest.read_text().split():
        path = folder / Path(name).name  # names only: a manifest cannot point outside the folder
        if path.is_file():
            path.unlink()
    manifest.unlink()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- plots ------------------------------------------------------------------------------------

def plots_for(sweep: SweepRuns, metric: str) -> list[Plot]:
    second = "val_mae" if any("val_mae" in j.metrics for j in sweep.jobs) else "val_accuracy"
    val_loss = loss_pair(sweep)[1]
    return [
        Plot(f"{val_loss}.png", f"{nice(val_loss).capitalize()} of every job", overlay(val_loss)),
        Plot("penalty.png", "Regularization penalty of every job (loss - data loss, per epoch)", overlay("penalty")),
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


def styles(sweep: SweepRuns) -> dict[str, plots.Style]:
    """Job label -> how it is drawn: the same colour for a job in every figure of the sweep."""
    names = labels(sweep)
    return plots.job_styles([(names[j.id], j.value("reg"), j.number("rate")) for j in sweep.jobs])


def overlay(key: str) -> Callable[[SweepRuns, str], object]:
    def build(sweep: SweepRuns, metric: str):
        names = labels(sweep)
        curves = {names[j.id]: j.history[key] for j in sweep.jobs if j.history.get(key)}
        if not any(v for values in curves.values() for v in values):  # e.g. no penalty anywhere
            raise SkipPlot(f"no job logged a nonzero {key} per epoch")
        return plots.overlay_figure(curves, nice(key), f"{nice(key).capitalize()} of every job", styles=styles(sweep))

    return build


def train_vs_val(sweep: SweepRuns, metric: str):
    names = labels(sweep)
    panels = {names[j.id]: j.history for j in sweep.jobs if j.history.get("loss")}
    if not panels:
        raise SkipPlot("no job logged its loss per epoch")
    pair = loss_pair(sweep)
    return plots.small_multiples(panels, pair, f"Training vs validation {nice(pair[0])} per job", styles(sweep))


def metric_vs_rate(sweep: SweepRuns, metric: str):
    panels = [plots.RatePanel(f"final {nice(metric)}", *by_rate(sweep, lambda j: j.metrics.get(metric)))]
    if metric != "generalization_gap" and any("generalization_gap" in j.metrics for j in sweep.jobs):
        gap = by_rate(sweep, lambda j: j.metrics.get("generalization_gap"))
        panels.append(plots.RatePanel("generalization gap (test loss - train loss)", *gap))
    return plots.rate_figure(panels, f"Final {nice(metric)} against regularization strength",
                             styles=series_styles(sweep))


def sparsity_vs_rate(sweep: SweepRuns, metric: str):
    # The scale-free share (|w| < 1 % of the layer's largest) when logged: L2 shrinks every weight,
    # which a fixed threshold would count as zeros; older sweeps have only the fixed one.
    stat, what = (("rel_sparsity", "share of |w| < 1% of max |w|")
                  if any(k.endswith("/rel_sparsity") for k in sweep.metric_names()) else ("sparsity", "share of |w| < 1e-3"))
    layers = sorted({k.split("/")[0] for j in sweep.jobs for k in j.metrics if k.endswith(f"/{stat}")},
                    key=lambda name: (len(name), name))  # hidden_2 before hidden_10
    if not layers:
        raise SkipPlot("no job logged kernel sparsity (hidden_<i>/rel_sparsity)")
    panels = [plots.RatePanel(f"{layer}: {what}",
                              *by_rate(sweep, lambda j, layer=layer: j.metrics.get(f"{layer}/{stat}")))
              for layer in layers]
    return plots.rate_figure(panels, "Kernel sparsity after training against regularization strength",
                             styles=series_styles(sweep))


def by_rate(sweep: SweepRuns, value_of: Callable[[Job], Optional[float]]) -> tuple[dict, dict]:
    """Series label -> [(rate, mean, 95% CI half-width)] for penalized jobs, and label -> (mean, CI) for
    the others. Jobs that differ only in `seed` (or keys not swept) are one point (CI None for one job).
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
    series = {label: [(r, *table.mean_ci(v)) for r, v in rates.items()] for label, rates in points.items()}
    return series, {label: table.mean_ci(v) for label, v in unpenalized.items()}


def series_styles(sweep: SweepRuns) -> dict[str, plots.Style]:
    """Series label -> style in the rate plots: the regularizer's colour family (as in the jobs'
    figures), shades when one regularizer has several series (say per dropout); no penalty in black."""
    kinds = {series_label(j, sweep): j.value("reg") for j in sweep.jobs}
    styles = {}
    for kind in dict.fromkeys(kinds.values()):
        members = sorted(label for label, k in kinds.items() if k == kind)
        for i, label in enumerate(members):
            shade = i / (len(members) - 1) if len(members) > 1 else 0.75
            styles[label] = plots.Style(plots.family_color(kind, shade), baseline=kind in (None, "none"))
    return styles


def series_label(job: Job, sweep: SweepRuns) -> str:
    """`reg=l1`, plus the job's other swept values (`dropout=0.2, batch_size=128`)."""
    others = [f"{k}={job.value(k)}" for k in sweep.swept if k not in NOT_A_SERIES]
    return ", ".join([f"reg={job.value('reg') or '?'}", *others])


# --- report.md --------------------------------------------------------------------------------

def markdown(sweep: SweepRuns, rows: list[dict], metric: str, drawn: list[Plot],
             skipped: list[tuple[Plot, str]], keys: Optional[list[str]] = None) -> str:
    parts = [header(sweep, rows, metric)]
    if keys is None:
        parts.append(f"## Jobs, best {metric} first\n\n{table.to_markdown(rows)}")
    else:
        parts += [f"## Configurations, best mean {metric} first\n\n{table.grouping_note(sweep, keys, metric)} "
                  f"Every job: the next table, or `python -m sweeps.compare --sweep {sweep.id} --no-group`.\n\n"
                  f"{table.to_markdown(rows)}",
                  f"## Every job, best {metric} first\n\n{table.to_markdown(table.job_rows(sweep, metric))}"]
    failed = [j for j in sweep.jobs if j.status != "FINISHED"]
    if failed:
        parts.append("## Jobs that did not finish\n\n" + "".join(
            f"- `{j.label()}`: {j.status}{': ' + j.error.splitlines()[0] if j.error else ''}\n" for j in failed))
    parts += [f"## {p.title}\n\n![{p.title}]({p.file})\n" for p in drawn]
    if skipped:
        parts.append("## Not drawn\n\n" + "".join(f"- {p.title}: {why}\n" for p, why in skipped))
    return "\n".join(parts)


def ranking_note(metric: str) -> str:
    """Why the ranking metric is what it is, when that matters for reading the table."""
    if "data_loss" in metric:
        return " (the data term alone: Keras' `loss` adds the penalty, which would favour weak regularization)"
    if metric.endswith("loss") and metric != "data_loss":
        return (f" (includes the regularization penalty; `--metric {metric.replace('loss', 'data_loss')}` ranks on the "
                "data term, for sweeps that logged it)")
    return ""


def header(sweep: SweepRuns, rows: list[dict], metric: str) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.status_counts().items()))
    lines = [f"# Sweep `{sweep.command}`\n",
             f"- sweep `{sweep.id}` in experiment `{sweep.experiment}`, started {sweep.started}",
             f"- command: `python -m sweeps.train -m {sweep.command}`",
             f"- jobs: {len(sweep.jobs)} ({counts or 'none'})",
             f"- ranked by `{metric}`, {'higher' if higher_is_better(metric) else 'lower'} is better{ranking_note(metric)}"]
    if rows and rows[0].get(table.rank_column(rows, metric)) is not None:
        best = rows[0]
        values = [f"{k}={best[k]}" for k in sweep.swept if k in best] + ([f"n={best['n']}"] if "n" in best else [])
        shown = table.reading([best])[0][table.sort_column(metric)]  # mean ± CI for grouped rows
        lines.append(f"- best {metric}: {table.fmt(shown)} ({', '.join(values) or best.get('run_name', '')})")
    lines.append(f"- again: `python -m sweeps.compare --sweep {sweep.id}`")
    return "\n".join(lines) + "\n"
