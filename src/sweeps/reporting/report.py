"""A sweep's report folder: report.md, comparison.csv / .md / .json and the plots it shows.

`write_report(client, parent_run_id, folder)` is what a sweep logs to its parent run when it ends;
`python -m sweeps.compare` writes the same folder for any sweep in the store. A plot the sweep cannot
support (say `rate` was not varied) is not drawn, and report.md says why.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlflow.tracking import MlflowClient

from sweeps.reporting import plots, html as report_html, runs, stats, table
from sweeps.tracking import tags
from sweeps.reporting.mdtext import code, text, visible
from sweeps.config.metrics import CURVES, higher_is_better
from sweeps.sweeping.repeats import REPEATED
from sweeps.reporting.runs import Job, SweepRuns

NOT_A_SERIES = {"rate", "reg", "reg.kind", *REPEATED}  # swept keys that do not get their own line against rate
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
    runs.load_histories(client, sweep, history_keys(metric, table.default_objectives(sweep)))
    keys = table.grouping(sweep)
    return write(folder, sweep, table.sweep_rows(sweep, metric, keys), metric, keys)


def loss_pair(sweep: SweepRuns) -> tuple[str, str]:
    """The training and validation loss the plots draw: the data term when logged (no penalty)."""
    logged = set(sweep.metric_names())
    return ("data_loss", "val_data_loss") if "val_data_loss" in logged else ("loss", "val_loss")


def history_keys(metric: str, objectives: tuple[str, ...] = ()) -> list[str]:
    return list(dict.fromkeys([*CURVES, metric, *objectives]))


def write(folder: Path, sweep: SweepRuns, rows: list[dict], metric: str,
          keys: Optional[list[str]] = None, objectives: Optional[list[str]] = None) -> list[Path]:
    """report.md, comparison.csv/.md/.json and every plot the sweep supports, into `folder`;
    `keys`: what `rows` were grouped by (None: one row per job); `objectives`: the front's (default:
    `table.default_objectives`)."""
    folder.mkdir(parents=True, exist_ok=True)
    clear(folder)
    files = [_write(folder / "comparison.csv", table.to_csv(rows)),
             _write(folder / "comparison.md", table.to_markdown(rows)),
             _write(folder / "comparison.json", table.to_json(rows))]
    if keys is not None:  # grouped rows: the per-job ones too
        files.append(_write(folder / "jobs.csv", table.to_csv(table.job_rows(sweep, metric, objectives=objectives))))
    drawn, skipped = draw(folder, sweep, metric)
    sections = [importance_section(folder, sweep, metric), front_section(folder, sweep, metric, objectives)]
    report = _write(folder / "report.md", markdown(sweep, rows, metric, drawn, skipped, keys, objectives,
                                                   "\n".join(text_ for text_, _ in sections if text_)))
    drawn += [plot for _, plot in sections if plot]
    page = report_html.write(folder, [p.file for p in drawn])  # the same report, its plots embedded
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
        Plot(f"{file_part(metric)}_vs_rate.png", f"Final {nice(metric)} against rate", metric_vs_rate),
        Plot("sparsity_vs_rate.png", "Kernel sparsity against rate, L1 vs L2", sparsity_vs_rate),
        Plot("expected_best.png", f"How many jobs were needed: expected best {nice(metric)} of n jobs", expected_best),
    ]


def file_part(name: str) -> str:
    """A metric name as part of a file name: letters, digits, `_`, `.`, `-` only, no leading dot (the
    name comes from the store; a file the report writes stays inside its folder)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "metric"


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


def curve_groups(sweep: SweepRuns) -> dict[str, list[Job]]:
    """Legend label -> the jobs drawn as one curve: each job alone, or in a sweep with repeats (seeds,
    `repeat=K`: `table.grouping`) the repeats of each configuration, `reg=l1, rate=1e-3 (n=3)`."""
    keys = table.grouping(sweep)
    if keys is None:
        return {label: [job] for job, label in zip(sweep.jobs, labels(sweep).values())}
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in sweep.jobs:
        groups[", ".join(f"{k}={job.value(k)}" for k in keys) or "every job"].append(job)
    return {f"{label} (n={len(jobs)})": jobs for label, jobs in groups.items()}


def overlay(key: str) -> Callable[[SweepRuns, str], object]:
    """One curve per job, or per configuration with repeats: their mean with a 95 % band."""
    def build(sweep: SweepRuns, metric: str):
        groups = curve_groups(sweep)
        curves, bands = {}, {}
        for label, jobs in groups.items():
            series = [j.history[key] for j in jobs if j.history.get(key)]
            if len(series) == 1:
                curves[label] = series[0]
            elif series:
                curves[label], bands[label] = stats.mean_band(series)
        if not any(v for values in curves.values() for v in values):  # e.g. no penalty anywhere
            raise SkipPlot(f"no job logged a nonzero {key} per epoch")
        style = plots.job_styles([(label, jobs[0].value("reg"), jobs[0].number("rate"))
                                  for label, jobs in groups.items()])
        title = f"{nice(key).capitalize()} of every job" + (", mean and 95% interval over repeats" if bands else "")
        return plots.overlay_figure(curves, nice(key), title, styles=style, bands=bands)

    return build


def expected_best(sweep: SweepRuns, metric: str):
    """Dodge et al.'s expected best `metric` of n jobs drawn from the sweep's, n = 1 .. N (finished,
    not pruned, in the order they ran), and the best so far."""
    values = [job.metrics[metric] for job in scored_jobs(sweep, metric)]
    if len(values) < 3:
        raise SkipPlot(f"fewer than 3 finished jobs logged {metric}")
    higher = higher_is_better(metric)
    return plots.expected_best_figure(stats.expected_best_curve(values, higher), values, nice(metric),
                                      f"Expected best final {nice(metric)} of n jobs (Dodge et al.)", higher)


def scored_jobs(sweep: SweepRuns, metric: str) -> list[Job]:
    """The jobs a sweep's statistics are computed over: FINISHED, not pruned, with a finite `metric`,
    in the order they ran."""
    return [job for job in sweep.jobs if job.status == "FINISHED" and tags.PRUNED_AT not in job.run.data.tags
            and job.metrics.get(metric) is not None and math.isfinite(job.metrics[metric])]


def importance_of(sweep: SweepRuns, metric: str) -> dict[str, float]:
    """`stats.importances` of the swept keys for `metric` over the `scored_jobs`."""
    jobs = scored_jobs(sweep, metric)
    return stats.importances([{k: job.value(k) for k in sweep.swept} for job in jobs],
                             [job.metrics[metric] for job in jobs])


def importance_section(folder: Path, sweep: SweepRuns, metric: str) -> tuple[str, Optional[Plot]]:
    """"Which knob mattered": each swept key's share of the variance of `metric` (fANOVA, in a table and
    `importance.png`), or why it is not given; the plot it drew, if any."""
    title = "Which knob mattered"
    found = importance_of(sweep, metric)
    if not found:
        return (f"## {title}\n\nNot computed: it needs {stats.MIN_IMPORTANCE_JOBS} or more finished jobs "
                "and a swept key with two or more values.\n"), None
    plot = Plot("importance.png", f"{title}: each swept key's share of the variance of {nice(metric)}", lambda *_: None)
    fig = plots.importance_figure(found, metric, f"Which swept key mattered for {nice(metric)}")
    fig.savefig(folder / plot.file, dpi=110, bbox_inches="tight")
    rows = "".join(f"| {code(key)} | {share:.3f} |\n" for key, share in found.items())
    note = (f"Each swept key's share of the variance of the final {metric} over the {len(scored_jobs(sweep, metric))} "
            "finished jobs, by fANOVA (Hutter et al. 2014, Optuna's default importance evaluator: a random "
            "forest fitted to the jobs, its variance split per key; it handles categories such as reg and "
            "interactions, and needs no many-trial quantile as PED-ANOVA does). A key that only moves the "
            "result by chance (seed) gives the noise floor: a knob below it did not matter here.")
    return (f"## {title}\n\n{text(note)}\n\n| key | share |\n|---|---|\n{rows}\n"
            f"![{alt(plot.title)}]({plot.file})\n"), plot


SPARSITY = "rel_sparsity"  # the trade-off's other side: share of each kernel's |w| below 1 % of its largest


def mean_sparsity(job: Job) -> Optional[float]:
    """The mean `rel_sparsity` over the job's kernel layers (None if it logged none)."""
    values = [v for k, v in job.metrics.items() if k.endswith(f"/{SPARSITY}") and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def front_section(folder: Path, sweep: SweepRuns, metric: str,
                  objectives: Optional[list[str]] = None) -> tuple[str, Optional[Plot]]:
    """"The trade-off": the jobs on the front (no other job is better on every objective at once) of
    the sweep's `objectives` (two or more: `table.default_objectives`), else of the ranking metric
    against the kernels' mean sparsity; `front.png`. Empty when fewer than 3 finished jobs logged them."""
    objectives = table.default_objectives(sweep) if objectives is None else objectives
    if len(objectives) >= 2:
        value_of = {m: (lambda job, m=m: job.metrics.get(m)) for m in objectives}
        axes = [f"final {nice(m)}" for m in objectives[:2]]
        heading, title = " against ".join(objectives), " against ".join(nice(m) for m in objectives)
    else:
        value_of = {metric: lambda job: job.metrics[metric], "sparsity": mean_sparsity}
        axes = [f"final {nice(metric)}", "mean share of |w| < 1% of the layer's max |w|"]
        heading, title = f"{metric} against sparsity", f"{nice(metric)} against sparsity"
    names, higher = list(value_of), [higher_is_better(name) for name in value_of]
    jobs = [j for j in scored_jobs(sweep, metric) if all(_finite(get(j)) for get in value_of.values())]
    if len(jobs) < 3:
        return "", None
    labelled = labels(sweep)
    points = {labelled[j.id]: tuple(get(j) for get in value_of.values()) for j in jobs}
    front = [list(points)[i] for i in stats.pareto_front(list(points.values()), higher)]
    front.sort(key=lambda name: points[name][0], reverse=higher[0])  # best first on the first objective
    plot = Plot("front.png", f"The trade-off: {title}", lambda *_: None)
    fig = plots.front_figure(points, front, *axes, f"{' against '.join(axes).capitalize()}, the front in red"
                             + (f" (seen in the first two of {len(names)} objectives)" if len(names) > 2 else ""),
                             join=len(names) == 2)
    fig.savefig(folder / plot.file, dpi=110, bbox_inches="tight")
    directions = "; ".join(f"{n}: {'higher' if h else 'lower'} is better" for n, h in zip(names, higher))
    what = ("the objectives the jobs were given (optimized_metric)" if len(objectives) >= 2 else
            f"the final {metric} and the mean share of near-zero kernel weights over the kernel layers ({SPARSITY}), "
            "what a regularizer trades")
    note = (f"The jobs below are the front of {what}: those no other job beats on every one at once ({directions}). "
            "Every other job is worse on one without being better on another; # is the job's number in front.png.")
    head = " | ".join(text(n) for n in names)
    shown = [table.fmt if len(objectives) >= 2 or i == 0 else "{:.3f}".format for i in range(len(names))]
    rows = "".join(f"| {number} | {code(name)} | " + " | ".join(f(v) for f, v in zip(shown, points[name])) + " |\n"
                   for number, name in enumerate(front, 1))
    return (f"## The trade-off: {text(heading)}\n\n{text(note)}\n\n| # | job | {head} |\n|{'---|' * (len(names) + 2)}\n{rows}\n"
            f"![{alt(plot.title)}]({plot.file})\n"), plot


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


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

def markdown(sweep: SweepRuns, rows: list[dict], metric: str, drawn: list[Plot], skipped: list[tuple[Plot, str]],
             keys: Optional[list[str]] = None, objectives: Optional[list[str]] = None, knobs: str = "") -> str:
    parts = [header(sweep, rows, metric, table.default_objectives(sweep) if objectives is None else objectives)]
    if keys is None:
        parts.append(f"## Jobs, best {text(metric)} first\n\n{table.to_markdown(rows)}")
    else:
        every_job = code(f"python -m sweeps.compare --sweep {sweep.id} --no-group")
        parts += [f"## Configurations, best mean {text(metric)} first\n\n"
                  f"{text(table.grouping_note(sweep, keys, metric))} Every job: the next table, or {every_job}.\n\n"
                  f"{table.to_markdown(rows)}",
                  certainty(sweep, metric, keys),
                  f"## Every job, best {text(metric)} first\n\n"
                  f"{table.to_markdown(table.job_rows(sweep, metric, objectives=objectives))}"]
    failed = [j for j in sweep.jobs if j.status != "FINISHED"]
    if failed:
        parts.append("## Jobs that did not finish\n\n" + "".join(
            f"- {code(j.label())}: {j.status}"
            f"{': ' + text(j.error.splitlines()[0]) if (j.error or '').strip() else ''}\n"
            for j in failed))
    parts += [f"## {text(p.title)}\n\n![{alt(p.title)}]({p.file})\n" for p in drawn]
    parts += [knobs] if knobs else []
    if skipped:  # the reasons are ours (Markdown), the titles may name a metric from the store
        parts.append("## Not drawn\n\n" + "".join(f"- {text(p.title)}: {why}\n" for p, why in skipped))
    return "\n".join(parts)


def certainty(sweep: SweepRuns, metric: str, keys: list[str]) -> str:
    """"How sure is the answer": the ranking metric of each row with its t and bootstrap intervals,
    the probability of beating the best row, and the Holm-corrected test behind the ties."""
    rows = table.sweep_rows(sweep, metric, keys, "bootstrap")
    rank = table.sort_column(metric)
    shown = [*keys, "n", f"{rank}_mean", f"{rank}_ci95", f"{rank}_boot95_low", f"{rank}_boot95_high", "p_beats_best",
             "p_beats_best_low", "p_beats_best_high", "p_vs_best_holm", "tied_with_best"]
    tested = sum(1 for row in rows if (row.get("n") or 0) >= 2)
    pairs = tested * (tested - 1) // 2
    over = [k for k in sweep.swept if k not in keys]
    varied = (table.sources_note(sweep, over).strip()
              or f"The jobs of a row differ in {', '.join(over) or 'nothing swept'}.")
    note = (f"{rank} of each row: its mean ± the 95% Student's t interval; [low, high] after it, the 95% percentile "
            f"bootstrap interval of the mean ({stats.N_BOOT:,} resamples: no normality assumed, but too narrow with 3 "
            f"to 5 jobs); p_beats_best, the probability that a job of the row does better than a job of the best row "
            f"(ties count half, 0.5 = no difference; Agarwal et al. 2021), with its 95% stratified bootstrap "
            f"interval; p_vs_best_holm, the p-value of Welch's t-test against the best row, Holm-Bonferroni adjusted "
            f"over the {pairs} pair{'s' * (pairs != 1)} of the {tested} rows with 2 or more jobs: tied_with_best "
            f"when it is 0.05 or more (family-wise 5%). {varied}")
    return (f"## How sure is the answer\n\n{text(note)} The same numbers: "
            f"{code(f'python -m sweeps.compare --sweep {sweep.id} --stats bootstrap')}; what each one is: "
            f"docs/statistics.md.\n\n{table.to_markdown([{k: row.get(k) for k in shown} for row in rows])}")


def alt(title: str) -> str:
    """A plot's title as the text of its image line (no brackets or escapes: the line stays an image)."""
    return re.sub(r"[\[\]()\\`*!<>|]", "", visible(title))


def ranking_note(metric: str) -> str:
    """Why the ranking metric is what it is, when that matters for reading the table."""
    if "data_loss" in metric:
        return " (the data term alone: Keras' `loss` adds the penalty, which would favour weak regularization)"
    if metric.endswith("loss") and metric != "data_loss":
        data_metric = code("--metric " + metric.replace("loss", "data_loss"))
        return (f" (includes the regularization penalty; {data_metric} ranks on the "
                "data term, for sweeps that logged it)")
    return ""


def header(sweep: SweepRuns, rows: list[dict], metric: str, objectives: list[str] = ()) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.status_counts().items()))
    # The command, names and values come from the store (anyone can tag a run on a team server): as
    # code spans or escaped text, never Markdown of their own (see mdtext).
    lines = [f"# Sweep {code(sweep.command)}\n",
             f"- sweep {code(sweep.id)} in experiment {code(sweep.experiment)}, started {sweep.started}",
             f"- command: {code('python -m sweeps.train -m ' + sweep.command)}",
             f"- jobs: {len(sweep.jobs)} ({text(counts or 'none')})",
             f"- ranked by {code(metric)}, {'higher' if higher_is_better(metric) else 'lower'} is better"
             f"{ranking_note(metric)}"]
    if len(objectives) >= 2:
        lines.append(f"- objectives: {', '.join(code(m) for m in objectives)}; the tables' {code('pareto')} column "
                     "marks the front (no other row is better on every one), drawn in the trade-off section")
    if rows and rows[0].get(table.rank_column(rows, metric)) is not None:
        best = rows[0]
        values = [f"{k}={best[k]}" for k in sweep.swept if k in best] + ([f"n={best['n']}"] if "n" in best else [])
        shown = table.reading([best])[0][table.sort_column(metric)]  # mean ± CI for grouped rows
        lines.append(f"- best {text(metric)}: {text(table.fmt(shown))} "
                     f"({text(', '.join(values) or best.get('run_name', ''))})")
    lines.append(f"- again: {code(f'python -m sweeps.compare --sweep {sweep.id}')}")
    return "\n".join(lines) + "\n"
