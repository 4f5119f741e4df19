"""Matplotlib figures for runs and sweeps (Agg backend: no display needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def history_figure(history: dict[str, list[float]], title: str):
    """Train vs validation loss, and accuracy (or MAE) when logged, per epoch."""
    second = next((m for m in ("accuracy", "mae") if m in history), None)
    panels = [("loss", "val_loss")] + ([(second, f"val_{second}")] if second else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (train_key, val_key) in zip(axes[0], panels):
        for key, label in ((train_key, "train"), (val_key, "validation")):
            if key in history:
                epochs = range(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(train_key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def colors(n: int) -> list:
    """n distinct colors: tab10 up to 10 lines, tab20 up to 20, then a continuous map."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "viridis")
    return [cmap(i) if n <= 20 else cmap(i / max(n - 1, 1)) for i in range(n)]


def _legend(ax, n: int, title: Optional[str] = None) -> None:
    """Inside the axes for a few lines, outside on the right for many."""
    if n == 0:
        return
    if n <= 6:
        ax.legend(fontsize="small", title=title, title_fontsize="small", loc="best")
    else:
        ax.legend(fontsize="x-small", title=title, title_fontsize="small", loc="upper left",
                  bbox_to_anchor=(1.02, 1), borderaxespad=0)


def overlay_figure(curves: dict[str, list[float]], metric: str, title: str, legend_title: Optional[str] = None):
    """One line per job: the same metric over epochs; legend labels name the job's swept values."""
    fig, ax = plt.subplots(figsize=(8.5 if len(curves) > 6 else 7.5, 4.5))
    for (label, values), color in zip(curves.items(), colors(len(curves))):
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label, color=color)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _integer_epochs(ax)
    _legend(ax, len(curves), legend_title)
    fig.tight_layout()
    return fig


def small_multiples(panels: dict[str, dict[str, list[float]]], pair: tuple[str, str], title: str):
    """One small panel per job: train vs validation (e.g. loss vs val_loss), same y scale for all."""
    n = len(panels)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.6), sharex=True,
                             sharey=True, squeeze=False)
    for ax, (label, history) in zip(axes.flat, panels.items()):
        for key, name, color in ((pair[0], "train", "tab:blue"), (pair[1], "validation", "tab:orange")):
            values = history.get(key, [])
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=2, color=color, label=name)
        ax.set_title(label, fontsize="small")
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
    """One panel of a figure against `rate`: a line per series, a dashed level per unpenalized job."""

    ylabel: str
    series: dict[str, list[tuple[float, float]]]  # label -> (rate, value) points, rate > 0
    baselines: dict[str, float] = field(default_factory=dict)  # label -> value without a penalty


def rate_figure(panels: list[RatePanel], title: str, legend_title: Optional[str] = None):
    """Panels side by side, `rate` on a log x-axis; the same label has the same color everywhere."""
    labels = list(dict.fromkeys(k for p in panels for k in (*p.series, *p.baselines)))
    color = dict(zip(labels, colors(len(labels))))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.5, 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, points in panel.series.items():
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=label, color=color[label])
        for label, value in panel.baselines.items():
            ax.axhline(value, linestyle="--", linewidth=1, label=f"{label} (no penalty)", color=color[label])
        ax.set_xscale("log")
        ax.set_xlabel("rate (regularization strength)")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3, which="both")
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize="small", title=legend_title)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _integer_epochs(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def close(fig) -> None:
    plt.close(fig)
