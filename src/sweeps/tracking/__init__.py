"""The tracking store: which store (`store`), its faults and how long to wait on it (`faults`), what a
run is called and tagged (`naming`, `tags`), the UI's view of it (`ui`), the `Tracker` that opens and
always ends a job's run (`tracker`), recovery after a crash (`recovery`) and credentials kept out of
everything written (`redact`).

The names below are the package's public face (`from sweeps.tracking import connect`). They are
imported on first use, so that `sweeps.tracking.tags` or `patience` stays light: no MLflow import
for `--help` or the team server's start.
"""

import importlib

_PUBLIC = {
    "tracker": ("CleanUp", "Tracker", "GuardedClient", "connect", "load_keras_model", "metric_points"),
    "store": ("DEFAULT_DB", "check_reachable", "resolve_uri", "sqlite_path", "store_problem"),
    "faults": ("LOCK_WAIT_S", "best_effort", "impatient", "locked", "patiently", "root_reason", "short_reason",
               "unanswered"),
    "naming": ("flatten", "job_tags", "process_tags", "run_name"),
    "ui": ("RUNS_VIEW", "RUNS_VIEW_KEY", "RUNS_VIEW_TAG", "browser_address", "ensure_experiment", "runs_table_link",
           "ui_address", "ui_hint"),
    "redact": ("redact_text", "redact_uri"),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"sweeps.tracking.{_HOME[name]}"), name)
    raise AttributeError(f"module 'sweeps.tracking' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
