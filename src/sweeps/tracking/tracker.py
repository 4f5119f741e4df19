"""The `Tracker`: one MLflow run per job, what goes into it, and the guard that always ends it.

`connect()` checks the store before anything is trained, creates it (one process at a time) and
returns a `Tracker`; `Tracker.job_run()` is the guard that always ends the run (FINISHED, FAILED or
KILLED), so no run is ever left RUNNING by an exception. What goes into params and tags is
scrubbed of credentials (`redact_uri`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
import traceback
from typing import Callable, ContextManager, Iterator, Optional
from urllib.parse import urlparse

from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweeps import guard, interrupts
from sweeps.tracking import tags
from sweeps.tracking.redact import redact_text, redact_uri
from sweeps.config import applicable, to_plain
from sweeps.errors import TrackingError
from sweeps.tracking.faults import LOCK_WAIT_S, best_effort, impatient, locked, patiently, root_reason, unanswered
from sweeps.tracking.queries import end_run
from sweeps.tracking.naming import flatten, process_tags, scrubbed
from sweeps.tracking.store import SERVER_SCHEMES, check_artifact_root, check_reachable, default_artifact_root, resolve_uri, store_lock
from sweeps.tracking.ui import ensure_experiment


log = logging.getLogger(__name__)


def metric_points(values: dict[str, float], step: int = 0) -> list[Metric]:
    """`{name: value}` as MLflow metric points for one `log_batch` call (non-finite values left out)."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if math.isfinite(float(v))]


class GuardedClient:
    """An MlflowClient whose every call runs inside `whole()` (`Tracker.whole`: a first Ctrl-C or
    SIGTERM waits for the call to end, so the run being written can still be closed KILLED), and is
    tried again while the database is locked by another process, for up to `lock_wait_s` (`patiently`)."""

    def __init__(self, client: MlflowClient, whole: Callable[[], ContextManager], lock_wait_s: float = LOCK_WAIT_S):
        self._client = client
        self._whole = whole
        self._lock_wait_s = lock_wait_s

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def once(*args, **kwargs):
            with self._whole():
                return attr(*args, **kwargs)

        @functools.wraps(attr)
        def whole(*args, **kwargs):
            return patiently(once, self._lock_wait_s, *args, **kwargs)  # a signal still ends the wait at once
        return whole


class Tracker:
    """One tracking store and experiment, as configured by `tracking.*`."""

    def __init__(self, uri: str, experiment: str, artifact_root: Optional[str], lock_wait_s: float = LOCK_WAIT_S):
        self.uri = uri
        self.database = urlparse(uri).scheme not in SERVER_SCHEMES  # a database store, not a server
        self.lock_wait_s = max(0.0, lock_wait_s)
        self.client = GuardedClient(MlflowClient(uri), self.whole, self.lock_wait_s)
        self.experiment_id = ensure_experiment(self.client, experiment, artifact_root)
        self.experiment = experiment

    def whole(self) -> ContextManager:
        """Where a store write must not be cut in half (`interrupts.deferred`): a SIGINT/SIGTERM inside
        a database write would leave its transaction open and the store locked. Not for a server: a
        call to one that hangs must stay interruptible, and the server finishes its own writes."""
        return interrupts.deferred() if self.database else contextlib.nullcontext()

    @contextlib.contextmanager
    def job_run(self, name: str, parent_run_id: Optional[str] = None, extra_tags: Optional[dict] = None,
                continues: Optional[str] = None, after_epoch: int = 0) -> Iterator[Run]:
        """Open a run and always close it (`end_job_run`): FINISHED, FAILED or KILLED. With `continues`,
        that earlier run of the job is reopened instead (a requeued job going on after `after_epoch`).

        Client calls with the run's id only (no fluent active-run stack), so a worker process that
        runs many jobs carries nothing from one job to the next.
        """
        run = (self.reopen_job_run(continues, after_epoch) if continues
               else self.open_job_run(name, parent_run_id, extra_tags))
        try:
            yield run
        except BaseException as err:
            self.end_job_run(run.info.run_id, err)
            raise
        self.end_job_run(run.info.run_id)

    def open_job_run(self, name: str, parent_run_id: Optional[str] = None, extra_tags: Optional[dict] = None) -> Run:
        """A job's run, RUNNING, tagged as a job of `parent_run_id` (see `job_run`)."""
        run_tags = {tags.KIND: "job", **process_tags(), **(extra_tags or {})}
        if parent_run_id:
            run_tags[tags.PARENT] = parent_run_id
        return self.client.create_run(self.experiment_id, run_name=name, tags=run_tags)

    def reopen_job_run(self, run_id: str, after_epoch: int) -> Run:
        """An interrupted job's run, RUNNING again in this process (its pid and host: not stale), its
        earlier end's reason removed; `sweeps.continued_at_epoch` lists every epoch it went on after."""
        run = self.client.get_run(run_id)
        before = run.data.tags.get(tags.CONTINUED_AT)
        self.client.update_run(run_id, status="RUNNING")
        for key, value in {**process_tags(), tags.CONTINUED_AT: f"{before},{after_epoch}" if before
                           else str(after_epoch)}.items():
            self.client.set_tag(run_id, key, value)
        if tags.ERROR in run.data.tags:
            self.client.delete_tag(run_id, tags.ERROR)
        return self.client.get_run(run_id)

    def end_job_run(self, run_id: str, err: Optional[BaseException] = None) -> None:
        """FINISHED; or after `err`: KILLED for an interrupt (or a Ctrl-C that surfaced as another
        error), else FAILED with the reason tag and traceback file. Clean-up after an error is best
        effort: a store that stopped answering never replaces the error (the stale-run check closes
        what could not be closed)."""
        if err is None:
            end_run(self.client, run_id, "FINISHED")
            return
        clean_up = CleanUp()
        if isinstance(err, KeyboardInterrupt) or interrupts.interrupted():
            reason = ("interrupted" if isinstance(err, KeyboardInterrupt)
                      else redact_text(f"interrupted ({type(err).__name__}: {err})")[:4000])
            clean_up(self.client.set_tag, run_id, tags.ERROR, reason)
            clean_up(end_run, self.client, run_id, "KILLED")
        else:
            clean_up(self.record_error, run_id, err)
            clean_up(end_run, self.client, run_id, "FAILED")

    def record_error(self, run_id: str, err: BaseException) -> None:
        reason = root_reason(err) if isinstance(err, MlflowException) else f"{type(err).__name__}: {err}"
        self.client.set_tag(run_id, tags.ERROR, redact_text(reason)[:4000])
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        self.client.log_text(run_id, redact_text(text), "traceback.txt")

    def log_config(self, run_id: str, cfg: DictConfig, extra_params: dict) -> None:
        """The keys that apply to this job (`config.applicable`) as dotted params, plus `extra_params`;
        the whole resolved config as `config.yaml`. Store locations are logged without their credentials."""
        from mlflow.entities import Param
        from omegaconf import OmegaConf

        values = {**flatten(scrubbed(applicable(cfg))), **{k: str(v) for k, v in extra_params.items()}}
        params = [Param(k, v) for k, v in values.items()]
        for i in range(0, len(params), 100):  # MLflow's limit of params per batch
            self.client.log_batch(run_id, params=params[i:i + 100], synchronous=True)
        self.client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(scrubbed(to_plain(cfg)))), "config.yaml")

    def log_keras_model(self, run_id: str, model, sample) -> None:
        """Save in MLflow's Keras 3 flavor at `model` of `run_id` (native .keras file inside, the
        backend that trained it recorded; it loads on any backend, and nothing imports TensorFlow on JAX).

        Requirements are given, not inferred: inference re-imports the model in a fresh Python
        (about 10 s here); the signature from the input sample and the model's output shape (no
        prediction pass: it would trace a predict function for every job). The logged model is
        created in this run's experiment by a client call; MLflow's flavor code then reads the
        tracking URI from its global setting, so that is set to this store first.
        """
        import keras
        import mlflow.keras
        import numpy as np
        from mlflow.models import Model, infer_signature

        backend = keras.backend.backend()  # tensorflow | jax: the distribution's name too
        if backend != "tensorflow":
            from sweeps.backends import import_tensorflow

            import_tensorflow()  # Keras' serializer imports it below whenever it is installed: without its banner
        requirements = [f"{backend}=={_version(backend)}", f"keras=={keras.__version__}",
                        f"mlflow=={mlflow.__version__}"]
        outputs = np.zeros((len(sample), *model.output_shape[1:]), dtype="float32")  # shapes only: no predict pass
        signature = infer_signature(sample, outputs)
        logged = self.client.create_logged_model(self.experiment_id, name="model", source_run_id=run_id)
        # the flavor's log_model has no client or URI argument: it writes through the fluent API's
        # store, so that is set to this job's (the job's process has one store; nothing else reads it)
        mlflow.set_tracking_uri(self.uri)

        def log_model():
            with self.whole():
                # Model.log: the flavor's log_model writes to the active run only, this names the job's
                Model.log(None, name="model", flavor=mlflow.keras, model=model, pip_requirements=requirements,
                          signature=signature, run_id=run_id, model_id=logged.model_id)
        patiently(log_model, self.lock_wait_s)


class CleanUp:
    """Best-effort clean-up calls after a failure or an interrupt, each tried once and quickly
    (`impatient`); once one finds the store not answering, the rest are skipped, so Ctrl-C on a
    dead server exits in seconds (the stale-run check closes what is left on the next run)."""

    def __init__(self) -> None:
        self.store_gone = False

    def __call__(self, call, *args) -> None:
        if self.store_gone:
            return
        with impatient():
            err = best_effort(call, *args)
        self.store_gone = err is not None and (unanswered(err) or locked(err))  # locked: MLflow waited 20 s


def connect(tcfg: DictConfig) -> Tracker:
    """Check the store named by `tracking.*` and get its experiment ready."""
    uri = resolve_uri(tcfg.uri)
    if redact_uri(uri) != uri:  # MLflow prints "View run at <tracking URI>" for servers: not with secrets
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    check_reachable(uri)
    artifact_root = default_artifact_root(uri, tcfg.artifact_root)
    check_artifact_root(artifact_root)
    guard.register(uri, tcfg.experiment)  # if this process dies without its clean-up, its guard closes its runs
    try:
        with store_lock(uri):
            return Tracker(uri, tcfg.experiment, artifact_root, tcfg.get("lock_wait_s", LOCK_WAIT_S))
    except MlflowException as err:
        raise TrackingError(f"tracking.uri={redact_uri(uri)}: {redact_text(err.message.splitlines()[0])}") from None


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def load_keras_model(model_uri: str):
    """A logged model back as a Keras model, from its native `.keras` file, in Keras' safe mode.

    Safe mode refuses to deserialise arbitrary Python (e.g. `Lambda` layers' bytecode), so a
    tampered model file cannot run code when it is loaded. Models are in MLflow's Keras 3 flavor;
    those logged before it (TensorFlow's flavor, with the same .keras file) load through that one.
    """
    import mlflow.keras
    from mlflow.models import get_model_info

    if "keras" in get_model_info(model_uri).flavors:
        return mlflow.keras.load_model(model_uri, load_model_kwargs={"safe_mode": True})
    import mlflow.tensorflow

    return mlflow.tensorflow.load_model(model_uri, keras_model_kwargs={"safe_mode": True})
