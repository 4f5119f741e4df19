"""Side-by-side comparison of the jobs of one sweep: a table (CSV, Markdown) and overlaid curves."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sweeps import plots
from sweeps.tracking import TAG_OVERRIDES, TAG_PARENT, TAG_SWEPT

# Columns after the swept values: (column, metric it shows).
METRIC_COLUMNS = [
    ("final_val_loss", "val_loss"),
    ("best_val_loss", "best_val_loss"),
    ("final_val_accuracy", "val_accuracy"),
    ("best_val_accuracy", "best_val_accuracy"),
    ("final_val_mae", "val_mae"),
    ("test_loss", "test_loss"),
    ("test_accuracy", "test_accuracy"),
    ("test_mae", "test_mae"),
    ("final_train_loss", "final_train_loss"),
    ("generalization_gap", "generalization_gap"),
    ("best_epoch", "best_epoch"),
    ("train_time_s", "train_time_s"),
]


def sweep_jobs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """The runs nested under a sweep's parent run, oldest first."""
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10_000)


def overrides_of(run: Run) -> dict[str, str]:
    pairs = json.loads(run.data.tags.get(TAG_OVERRIDES, "[]"))
    return dict(p.lstrip("+~").split("=", 1) for p in pairs if "=" in p)


def swept_of(runs: list[Run], values: list[dict[str, str]]) -> list[str]:
    """The keys the sweep varied: from the `sweeps.swept` tag, else those whose values differ."""
    tagged = next((json.loads(r.data.tags[TAG_SWEPT]) for r in runs if TAG_SWEPT in r.data.tags), None)
    if tagged:
        return tagged
    keys = list(dict.fromkeys(k for v in values for k in v))
    return [k for k in keys if len({v.get(k) for v in values}) > 1] or keys


def job_rows(runs: list[Run], sort_by: str = "val_loss") -> list[dict]:
    """One row per job: swept values, validation and test metrics, time and size; best first."""
    values = [overrides_of(r) for r in runs]
    swept = swept_of(runs, values)
    present = [(col, name) for col, name in METRIC_COLUMNS if any(name in r.data.metrics for r in runs)]
    rows = []
    for run, vals in zip(runs, values):
        row = {"run_name": run.info.run_name, "status": run.info.status}
        row.update({k: vals.get(k, "") for k in swept})
        row.update({col: run.data.metrics.get(name) for col, name in present})
        row["n_params"] = run.data.params.get("n_params")
        row["run_id"] = run.info.run_id
        rows.append(row)
    return sorted(rows, key=_sort_key(sort_by))


def _sort_key(metric: str):
    column = next((c for c, name in METRIC_COLUMNS if name == metric or c == metric), metric)
    descending = "accuracy" in metric

    def key(row: dict):
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0)
        return (0, -value if descending else value)

    return key


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "_no jobs_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["run_id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def curves(client: MlflowClient, runs: list[Run], metric: str = "val_loss") -> dict[str, list[float]]:
    """Per-epoch history of `metric` for each job, keyed by run name."""
    out = {}
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        if history:
            out[run.info.run_name] = [m.value for m in history]
    return out


def write_comparison(client: MlflowClient, parent_run_id: str, folder: Path,
                     metric: str = "val_loss", title: Optional[str] = None) -> list[Path]:
    """comparison.csv, comparison.md and <metric>.png for a sweep; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = sweep_jobs(client, parent_run_id)
    rows = job_rows(runs, sort_by=metric)
    csv_path = write_csv(rows, folder / "comparison.csv")
    md_path = folder / "comparison.md"
    md_path.write_text(f"# {title or 'Sweep'}\n\n{len(rows)} jobs, best {metric} first.\n\n" + to_markdown(rows))
    fig = plots.overlay_figure(curves(client, runs, metric), metric, title or f"{metric} per job")
    png_path = folder / f"{metric}.png"
    fig.savefig(png_path, dpi=110)
    plots.close(fig)
    return [csv_path, md_path, png_path]
