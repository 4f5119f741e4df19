"""How long a command waits on an MLflow server that does not answer (light: no MLflow import).

MLflow retries an HTTP call for about 4 minutes by default; a sweep against a server that went
away would hang that long per call. These defaults fail a call within about half a minute (3 tries
of at most 10 s, 1 + 2 s apart); MLFLOW_HTTP_REQUEST_* set by the user win. The command lines set
them at their start (environment changes happen at the entry points only), and workers inherit them.
"""

from __future__ import annotations

import os

STORE_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def set_store_patience() -> None:
    """The command lines' policy for MLflow's HTTP retries (see STORE_PATIENCE); workers inherit it."""
    for key, value in STORE_PATIENCE.items():
        os.environ.setdefault(key, value)
