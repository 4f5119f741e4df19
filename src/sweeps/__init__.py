"""Run, track and compare regularization sweeps (Hydra + MLflow + Keras).

In a notebook: `sweeps.load_sweep()`, `sweeps.group_seeds(frame)`, `sweeps.load_histories()`,
`sweeps.list_sweeps()` (see `sweeps.api`). They are imported on first use, so `import sweeps`
stays light (no MLflow, pandas or TensorFlow until then).
"""

_API = ("load_sweep", "group_seeds", "load_histories", "list_sweeps")
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from sweeps import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
