"""Matplotlib figures for runs and sweeps (Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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


def overlay_figure(curves: dict[str, list[float]], metric: str, title: str):
    """One line per job: the same metric over epochs."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
