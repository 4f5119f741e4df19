"""Matplotlib figures for runs and sweeps.

Each figure is a plain `matplotlib.figure.Figure`, drawn by the Agg canvas when it is saved: no
display needed, and no pyplot, so importing this module changes nothing for anyone else in the
process (no `matplotlib.use`: a notebook's or another app's backend stays theirs). A figure is
freed with its last reference (pyplot's figure registry is never involved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def history_figure(history: dict[str, list[float]], title: str):
    """Train vs validation data loss (else loss), and accuracy (or MAE) when logged, per epoch."""
    second = next((m for m in ("accuracy", "mae") if m in history), None)
    loss = "data_loss" if "val_data_loss" in history else "loss"  # the data term: the penalty is not a fit
    panels = [(loss, f"val_{loss}")] + ([(second, f"val_{second}")] if second else [])
    fig, axes = subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (train_key, val_key) in zip(axes[0], panels):
        for key, label in ((train_key, "train"), (val_key, "validation")):
            if key in history:
                epochs = range(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.set_ylabel(train_key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    width = 5.5 * len(panels)  # fixed margins (inches): tight_layout measured 0.1 s a figure, every job
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.2 / width, bottom=0.55 / 3.8, top=1 - 0.45 / 3.8, wspace=0.25)
    return fig


def colors(n: int) -> list:
    """n distinct colors: tab10 up to 10 lines, tab20 up to 20, then a continuous map."""
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i) if n <= 20 else cmap(i / max(n - 1, 1)) for i in range(n)]


@dataclass(frozen=True)
class Style:
    """How one job is drawn, the same in every figure of its sweep."""

    color: object
    baseline: bool = False  # an unpenalized job among penalized ones: black, dashed


FAMILIES = {"l1": "Blues", "l2": "Oranges", "l1_l2": "Greens"}  # regularizer -> colour family (others: Purples)


def family_color(kind: Optional[str], shade: float = 0.75):
    """The colour of regularizer `kind` (l1 blue, l2 orange, l1_l2 green), light (0) to dark (1)."""
    if kind in (None, "none"):
        return "black"
    return colormaps[FAMILIES.get(kind, "Purples")](0.35 + 0.6 * shade)


def other_colors(n: int) -> list:
    """n colours for jobs that differ in something else than the penalty: none of the regularizers'
    blue, orange or green (nor brown or cyan, close to them), so a colour never suggests L1 or L2;
    tab10's others, then a continuous map."""
    tab10 = colormaps["tab10"]
    palette = [tab10(i) for i in (3, 4, 6, 8, 7)]  # red, purple, pink, olive, grey
    return palette[:n] if n <= len(palette) else [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def job_styles(jobs: list[tuple[str, Optional[str], Optional[float]]]) -> dict[str, Style]:
    """label -> Style from each job's (label, regularizer, rate).

    When the sweep varies the penalty, a job's colour says its regularizer (L1 blue, L2 orange,
    L1_L2 green) and its shade the strength (darker = higher rate); unpenalized jobs are black
    dashed baselines. Otherwise every job gets its own colour.
    """
    penalized = [(label, kind, rate) for label, kind, rate in jobs if kind not in (None, "none") and (rate or 0) > 0]
    if not penalized or (len(penalized) == len(jobs) and len({(k, r) for _, k, r in jobs}) == 1):
        return {label: Style(color) for (label, _, _), color in zip(jobs, other_colors(len(jobs)))}
    styles = {label: Style("black", baseline=True) for label, _, _ in jobs}
    for kind in dict.fromkeys(k for _, k, _ in penalized):
        members = sorted((rate, label) for label, k, rate in penalized if k == kind)
        for i, (_, label) in enumerate(members):
            styles[label] = Style(family_color(kind, i / max(len(members) - 1, 1)))
    return styles


def _legend(ax, n: int, title: Optional[str] = None) -> None:
    """Inside the axes for a few lines, outside on the right for many."""
    if n == 0:
        return
    if n <= 6:
        ax.legend(fontsize="small", title=title, title_fontsize="small", loc="best")
    else:
        ax.legend(fontsize="x-small", title=title, title_fontsize="small", loc="upper left",
                  bbox_to_anchor=(1.02, 1), borderaxespad=0)


def overlay_figure(curves: dict[str, list[float]], metric: str, title: str, legend_title: Optional[str] = None,
                   styles: Optional[dict[str, Style]] = None, bands: Optional[dict[str, list[float]]] = None):
    """One line per job: the same metric over epochs; legend labels name the job's swept values.
    `bands`: label -> the half-width of a 95 % interval per epoch (NaN: none), drawn around that
    label's curve (a mean over repeats) as a shaded band."""
    fig, ax = subplots(figsize=(8.5 if len(curves) > 6 else 7.5, 4.5))
    default = dict(zip(curves, colors(len(curves))))
    for label, values in curves.items():
        style = (styles or {}).get(label, Style(default[label]))
        epochs = range(1, len(values) + 1)
        ax.plot(epochs, values, marker="o", markersize=3, label=label, color=style.color,
                linestyle="--" if style.baseline else "-", linewidth=2 if style.baseline else 1.5)
        if label in (bands or {}):
            mean, half = np.asarray(values, float), np.asarray(bands[label], float)
            ax.fill_between(epochs, mean - half, mean + half, color=style.color, alpha=0.18, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _integer_epochs(ax)
    _legend(ax, len(curves), legend_title)
    fig.tight_layout()
    return fig


def small_multiples(panels: dict[str, dict[str, list[float]]], pair: tuple[str, str], title: str,
                    styles: Optional[dict[str, Style]] = None):
    """One small panel per job: train vs validation (e.g. loss vs val_loss), same y scale for all."""
    n = len(panels)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.6), sharex=True,
                             sharey=True, squeeze=False)
    for ax, (label, history) in zip(axes.flat, panels.items()):
        for key, name, color in ((pair[0], "train", "tab:blue"), (pair[1], "validation", "tab:orange")):
            values = history.get(key, [])
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=2, color=color, label=name)
        ax.set_title(label, fontsize="small", color=(styles or {}).get(label, Style("black")).color)
        ax.grid(alpha=0.3)
        _integer_epochs(ax)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel(pair[0].replace("_", " "))
    axes.flat[0].legend(fontsize="x-small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@dataclass
class RatePanel:
    """One panel of a figure against `rate`: a line per series, a dashed level per unpenalized job.

    Values are means with the half-width of their 95 % interval (None for a single job)."""

    ylabel: str
    series: dict[str, list[tuple[float, float, Optional[float]]]]  # label -> (rate, mean, CI) points, rate > 0
    baselines: dict[str, tuple[float, Optional[float]]] = field(default_factory=dict)  # label -> (mean, CI), no penalty


def rate_figure(panels: list[RatePanel], title: str, legend_title: Optional[str] = None,
                styles: Optional[dict[str, Style]] = None):
    """Panels side by side, `rate` on a log x-axis; the same label has the same color everywhere
    (`styles`, else one colour per label). A mean over several jobs gets its 95 % interval: error
    bars, or a band around a dashed level."""
    labels = list(dict.fromkeys(k for p in panels for k in (*p.series, *p.baselines)))
    color = dict(zip(labels, colors(len(labels))))
    color.update({label: style.color for label, style in (styles or {}).items() if label in color})
    fig, axes = subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.5, 4.2), squeeze=False)
    intervals = False
    for ax, panel in zip(axes[0], panels):
        for label, points in panel.series.items():
            xs, ys, cis = zip(*sorted(points, key=lambda point: point[0]))
            if any(ci is not None for ci in cis):
                intervals = True
                ax.errorbar(xs, ys, yerr=[ci or 0.0 for ci in cis], marker="o", capsize=3, label=label,
                            color=color[label])
            else:
                ax.plot(xs, ys, marker="o", label=label, color=color[label])
        for label, (value, ci) in panel.baselines.items():
            ax.axhline(value, linestyle="--", linewidth=1, label=f"{label} (no penalty)", color=color[label])
            if ci is not None:
                intervals = True
                ax.axhspan(value - ci, value + ci, color=color[label], alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("rate (regularization strength)")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3, which="both")
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize="small", title=legend_title)
    fig.suptitle(title + ("\n(mean and 95% confidence interval over the jobs of each point, e.g. seeds)"
                          if intervals else ""))
    fig.tight_layout()
    return fig


def expected_best_figure(expected: list[float], observed: list[float], metric: str, title: str,
                         higher_is_better: bool):
    """The expected best `metric` after n = 1 .. N jobs (Dodge et al.; `stats.expected_best_curve`)
    and the best so far in the order the jobs ran: a curve still rising (falling, for a loss) at N
    says more trials would likely still help; a flat one that they would not."""
    n = range(1, len(expected) + 1)
    running = (np.maximum if higher_is_better else np.minimum).accumulate(np.asarray(observed, float))
    fig, ax = subplots(figsize=(7.5, 4.5))
    ax.plot(n, expected, marker="o", markersize=3, color="tab:blue",
            label=f"expected best of n jobs drawn from the {len(expected)}")
    ax.step(n, running, where="post", color="grey", linewidth=1, label="best so far, in the order they ran")
    ax.set_xlabel("number of jobs (trials)")
    ax.set_ylabel(f"best {metric.replace('_', ' ')} ({'max' if higher_is_better else 'min'})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _integer_epochs(ax)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def front_figure(points: dict[str, tuple[float, float]], front: list[str], x_label: str, y_label: str, title: str,
                 join: bool = True):
    """Every job as a point (x: the ranking metric, y: the other objective), the front's jobs numbered
    1.. in the order of `front` (the report's table names them) and joined (`join`: a front of two
    objectives; one of more, seen in two of them, is not a line)."""
    fig, ax = subplots(figsize=(7.5, 5.0))
    xs, ys = zip(*(p[:2] for p in points.values()))
    ax.scatter(xs, ys, color="lightgrey", edgecolor="grey", label="every job", zorder=2)
    along = sorted(front, key=lambda name: points[name][0])
    ax.plot([points[n][0] for n in along], [points[n][1] for n in along], marker="o", color="tab:red",
            linestyle="-" if join else "none", label="the front: no job better on every objective", zorder=3)
    for number, name in enumerate(front, 1):
        ax.annotate(str(number), points[name][:2], textcoords="offset points", xytext=(5, 5), fontsize="small",
                    color="tab:red")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def importance_figure(importances: dict[str, float], metric: str, title: str):
    """Each swept key's share of the variance of `metric` (`stats.importances`), largest on top."""
    keys = list(importances)[::-1]
    fig, ax = subplots(figsize=(7.0, 0.5 * len(keys) + 1.5))
    ax.barh(keys, [importances[k] for k in keys], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the variance of {metric.replace('_', ' ')} (fANOVA)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def subplots(*args, figsize: tuple[float, float], **kwargs):
    """`pyplot.subplots` without pyplot: (figure, axes) of a standalone Figure."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _integer_epochs(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
