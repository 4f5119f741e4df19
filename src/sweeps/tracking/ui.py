"""The experiment as MLflow's UI shows it: the model-training runs view, and links to it.
"""

from __future__ import annotations

import json
import os
from typing import Optional
from urllib.parse import quote, urlencode, urlparse, urlunparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps.tracking.redact import redact_uri
from sweeps.config.metrics import RANK_METRIC, SHOWN_AT_THE_END, higher_is_better
from sweeps.errors import TrackingError
from sweeps.tracking.store import SERVER_SCHEMES, resolve_uri, sqlite_path


# The UI's own "experiment type" setting: model training, not GenAI. (MLflow 3.17's UI reads the
# mode from the link's `workflowType` or the browser's last choice instead: see runs_table_link.)
EXPERIMENT_KIND, TRAINING_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"


# The runs table as sweeps shows it: a view stored the way the UI's own "Share" button stores one (an
# experiment tag `mlflow.sharedViewState.<key>`, opened by a link with `viewStateShareKey=<key>`):
# jobs ranked by the ranking metric, with it, the test result and the regularization as columns.
RUNS_VIEW_KEY = "sweeps"


RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"


RUNS_VIEW = json.dumps({"orderByKey": f"metrics.`{RANK_METRIC}`", "orderByAsc": not higher_is_better(RANK_METRIC),
                        "selectedColumns": [*(f"metrics.`{m}`" for m in (RANK_METRIC, *SHOWN_AT_THE_END)),
                                            *(f"params.`{p}`" for p in ("reg.kind", "rate"))]})


def ensure_experiment(client: MlflowClient, name: str, artifact_location: Optional[str]) -> str:
    """Experiment id for `name`, creating (or restoring) it, with sweeps' runs view (RUNS_VIEW, also
    added to an experiment made before it); safe when several processes race."""
    for _ in range(3):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            if exp.tags.get(RUNS_VIEW_TAG) != RUNS_VIEW:
                client.set_experiment_tag(exp.experiment_id, RUNS_VIEW_TAG, RUNS_VIEW)
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND: TRAINING_EXPERIMENT, RUNS_VIEW_TAG: RUNS_VIEW})
        except MlflowException:  # another process created it first
            continue
    raise TrackingError(f"tracking.experiment={name}: cannot create or find the experiment")


def ui_address(uri: str) -> str:
    """Where the MLflow UI over this store answers: a tracking server itself (without credentials),
    else `make ui` (http://127.0.0.1:5000 unless SWEEPS_HOST / PORT say otherwise, as for make)."""
    parsed = urlparse(uri)
    if parsed.scheme in SERVER_SCHEMES:
        return urlunparse(parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[-1], params="", query="",
                                          fragment="")).rstrip("/")
    return browser_address(os.environ.get("SWEEPS_HOST", "127.0.0.1"), os.environ.get("PORT", "5000"))


def browser_address(host: str, port: str) -> str:
    """`http://host:port` of a UI bound there; a wildcard bind (0.0.0.0, ::) is opened at 127.0.0.1."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def runs_table_link(address: str, experiment_id: str, view: bool = True) -> str:
    """The experiment's runs table in the MLflow UI at `address`, in the UI's "Model training" mode
    (`workflowType`: a fresh browser is in GenAI mode, and `#/experiments/<id>` opens its overview),
    shown as RUNS_VIEW; `view=False` (an experiment without that tag): only ranked by RANK_METRIC."""
    query = {"workflowType": "machine_learning"}
    if view:
        query["viewStateShareKey"] = RUNS_VIEW_KEY
    else:  # the UI ignores a shared view when the link also sets the order: one or the other
        query.update(orderByKey=f"metrics.`{RANK_METRIC}`", orderByAsc=str(not higher_is_better(RANK_METRIC)).lower())
    return f"{address}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def ui_hint(store: str, host: str, port: str, experiment: str = "sweeps") -> str:
    """What `make ui` prints before starting: the link to `experiment`'s runs in `store`, once it has them."""
    address = browser_address(host, port)
    try:
        uri = resolve_uri(store)
        db = sqlite_path(uri)
        found = None if db is not None and not db.is_file() else MlflowClient(uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - the UI itself says what is wrong with the store
        return f"MLflow UI: {address}"
    if found is None:
        return f"MLflow UI: {address} (no experiment {experiment!r} in {redact_uri(store)} yet)"
    link = runs_table_link(address, found.experiment_id, view=RUNS_VIEW_TAG in found.tags)
    return f"MLflow UI, runs of experiment {experiment}: {link}"
