"""MLflow plumbing: which store, which experiment, one run per job, and what goes into it.

`connect()` checks the store before anything is trained, creates it (one process at a time) and
returns a `Tracker`; `Tracker.job_run()` is the guard that always ends the run (FINISHED, FAILED or
KILLED), so no run is ever left RUNNING by an exception. What goes into params and tags is
scrubbed of credentials (`redact_uri`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import time
import traceback
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional
from urllib.parse import quote, urlencode, urlparse, urlunparse

from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweeps import guard, interrupts, tags
from sweeps.redact import redact_text, redact_uri  # noqa: F401 - part of this module's interface
from sweeps.config import applicable, config_hash, dotted_keys, to_plain
from sweeps.metrics import RANK_METRIC, SHOWN_AT_THE_END, higher_is_better
from sweeps.errors import TrackingError

log = logging.getLogger(__name__)

DEFAULT_DB = Path("mlruns") / "mlflow.db"

# Clean-up after a failure or an interrupt: one quick try per call.
IMPATIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# Drivers SQLAlchemy looks for by URI scheme, and how to get them.
DRIVER_HINTS = {"psycopg2": "pip install psycopg2-binary, or write postgresql+psycopg://... to use psycopg 3 "
                            "from `pip install 'sweeps[postgres]'`",
                "psycopg": "pip install 'sweeps[postgres]'", "pymysql": "pip install pymysql",
                "MySQLdb": "pip install mysqlclient, or pip install pymysql and write mysql+pymysql://..."}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
SERVER_SCHEMES = ("http", "https")  # a tracking URI with these is an `mlflow server`, else a database
MIN_FREE_BYTES = 1 << 20  # a SQLite store's folder with less free space than this counts as full
LOCK_WAIT_S = 300.0  # default of tracking.lock_wait_s (see `patiently`)


_impatient = [0]  # how many `impatient()` blocks are active (no waiting on a locked database inside)


@contextlib.contextmanager
def impatient() -> Iterator[None]:
    """MLflow calls inside give up after one quick try (clean-up must not hang on a dead store).
    MLflow has no per-client retry setting: its HTTP layer reads these variables at each request,
    so they are set for the block and put back after it."""
    saved = {key: os.environ.get(key) for key in IMPATIENT}
    os.environ.update(IMPATIENT)
    _impatient[0] += 1
    try:
        yield
    finally:
        _impatient[0] -= 1
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def store_problem(uri: str, timeout: float = 3.0) -> Optional[str]:
    """Why the store cannot take writes right now (None when it can): for telling a lost store
    from a job's own failure."""
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent if db.parent.exists() else None
        if folder is None:
            return f"{db.parent} is gone"
        if shutil.disk_usage(folder).free < MIN_FREE_BYTES:
            return f"no space left on the device holding {folder}"
        for path in (folder, db):  # SQLite writes a journal beside the file: both must stay writable
            if path.exists() and not os.access(path, os.W_OK):
                return (f"{path} is no longer writable (its mode, `chattr +i` or a read-only mount); make it "
                        "writable again")
        return None
    try:
        check_reachable(uri, timeout=timeout)
    except TrackingError as err:
        return str(err)
    return None


def error_chain(err: BaseException) -> list[BaseException]:
    """`err` and the errors behind it, outermost first (a database driver's own error via `.orig`)."""
    chain = [err]
    while True:
        inner = getattr(chain[-1], "orig", None) or chain[-1].__cause__ or chain[-1].__context__
        if inner is None or any(inner is seen for seen in chain):
            return chain
        chain.append(inner)


def locked(err: BaseException) -> bool:
    """Whether an error is SQLite's "database is locked": another process (a backup, an open `sqlite3`
    transaction, a long writer) held the database longer than MLflow's own wait of 20 s."""
    return any("database is locked" in str(e) or "database table is locked" in str(e) for e in error_chain(err))


def patiently(call: Callable, wait_s: float, *args, **kwargs):
    """`call(*args, **kwargs)`, tried again while the database is locked by another process, for at
    most `wait_s` seconds after the first refusal (each try itself waits MLflow's 20 s), so a
    transient lock never costs a trained result. A failed SQLite write is rolled back, so trying it
    again writes it once. Not inside `impatient()` (clean-up after Ctrl-C must not wait)."""
    deadline = None
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if not locked(err) or _impatient[0]:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + wait_s
                log.warning("the tracking store is locked by another process; waiting up to %.0f s more for it "
                            "(tracking.lock_wait_s)", wait_s)
            if now >= deadline:
                raise
            time.sleep(min(1.0, deadline - now))


def root_reason(err: BaseException) -> str:
    """The innermost cause of an error, as one line (a database's own words, not its wrapper's)."""
    current = error_chain(err)[-1]
    text = str(current).strip().splitlines()
    return f"{type(current).__name__}: {text[0] if text else ''}".rstrip(": ")


def process_tags() -> dict[str, str]:
    """pid and host of this process: a RUNNING run whose process is gone is stale (see recovery); inside
    a SLURM task its id (`5_1`), by which the launching process finds the run of a task SLURM ended
    (inside a Ray task: its task and node);
    the GPUs it may use, where `CUDA_VISIBLE_DEVICES` says."""
    found = {tags.PID: str(os.getpid()), tags.HOST: socket.gethostname()}
    for tag, variable in ((tags.RAY_TASK, "SWEEPS_RAY_TASK"), (tags.RAY_NODE, "SWEEPS_RAY_NODE")):
        if os.environ.get(variable):  # a Ray task of hydra/launcher=ray (`sweeps.ray_launcher.run_task` sets them)
            found[tag] = os.environ[variable]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # the GPUs this process saw (`sweeps.devices`)
        found[tags.DEVICES] = os.environ["CUDA_VISIBLE_DEVICES"]
    array, task, job = (os.environ.get(k) for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"))
    if array and task:
        found[tags.SLURM_JOB] = f"{array}_{task}"
    elif job:
        found[tags.SLURM_JOB] = job
    return found


def resolve_uri(uri: Optional[str]) -> str:
    """`tracking.uri`, else a SQLite store at ./mlruns/mlflow.db; relative SQLite paths made absolute."""
    if not uri:
        return f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        raise TrackingError(f"tracking.uri={uri}: MLflow 3 no longer accepts a plain folder (file store); "
                            f"use a database such as tracking.uri=sqlite:///{DEFAULT_DB}")
    if parsed.scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(Path.cwd() / uri[len('sqlite:///'):]).resolve()}"
    return uri


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///PATH[?options]` URI."""
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def default_artifact_root(uri: str, configured: Optional[str]) -> Optional[str]:
    """Artifacts beside a SQLite store (mlruns/artifacts); servers and databases decide themselves."""
    if configured:
        return configured if "://" in configured else Path(configured).resolve().as_uri()
    db = sqlite_path(uri)
    return (db.parent / "artifacts").as_uri() if db else None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with the fix, when the store cannot be written or reached."""
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking.uri={uri}: cannot create {db.parent} ({err.strerror}); "
                                "choose a writable folder with tracking.uri=sqlite:///PATH") from None
        writable = os.access(db.parent, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))
        if not writable:
            raise TrackingError(f"tracking.uri={uri}: {db.parent} is read-only; make it writable "
                                "or point tracking.uri / MLFLOW_TRACKING_URI at a writable store")
        if db.is_file() and db.stat().st_size > 0:
            with open(db, "rb") as fh:
                if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    raise TrackingError(f"{db} is not an SQLite database (it was left untouched); move it away, "
                                        "or point tracking.uri / MLFLOW_TRACKING_URI at another store")
        return
    shown = redact_uri(uri)
    parsed = urlparse(uri)
    if parsed.scheme in SERVER_SCHEMES:
        health = urlunparse(parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[-1], path="/health",
                                            query="", params="", fragment=""))
        try:
            with urllib.request.urlopen(health, timeout=timeout):
                return
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(f"tracking.uri={shown} is unreachable ({reason}); start the server "
                                "(e.g. `make ui`) or set MLFLOW_TRACKING_URI / tracking.uri to a running one") from None
    _check_database(uri, shown, timeout)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # any driver error means the same thing to the user
        raise TrackingError(f"tracking.uri={shown} is unreachable ({type(err).__name__}); "
                            "fix the URI or set MLFLOW_TRACKING_URI") from None


def _check_database(uri: str, shown: str, timeout: float) -> None:
    """A database URI: its driver is installed and its server answers (MLflow would retry for minutes)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except ModuleNotFoundError as err:  # a database without its driver
        raise TrackingError(f"tracking.uri={shown} needs the Python package {err.name!r}: install it "
                            f"({DRIVER_HINTS.get(err.name, 'pip install ' + str(err.name))})") from None
    except (ArgumentError, NoSuchModuleError):
        return  # not a database URI: MLflow's own error below names it
    if url.host:
        port = url.port or DEFAULT_PORTS.get(url.get_backend_name())
        try:
            socket.create_connection((url.host, port), timeout=timeout).close()
        except OSError as err:
            raise TrackingError(f"tracking.uri={shown} is unreachable ({err.strerror or err}); start the database "
                                "or fix the URI") from None


def check_artifact_root(root: Optional[str]) -> None:
    """A local artifact folder must be writable, or the first artifact would fail mid-run."""
    if not root or not root.startswith("file://"):
        return
    folder = Path(urllib.request.url2pathname(urlparse(root).path))
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    fix = "make it writable or set tracking.artifact_root to a writable folder"
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise TrackingError(f"artifacts go to {folder}, but {existing} is not a writable folder; {fix}")
    try:  # file modes do not tell everything (root, /proc, read-only mounts): try it
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(f"artifacts go to {folder}, which cannot be created ({err.strerror}); {fix}") from None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise creating a SQLite store (tables, migrations, experiment) across processes.

    Several sweeps started at once on a fresh database otherwise race through MLflow's schema
    migrations ("table ... already exists"). Other stores handle this themselves.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """{'data': {'name': 'digits'}} -> {'data.name': 'digits'} (lists kept as their text)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def run_name(overrides: list[str], swept: Optional[list[str]] = None) -> str:
    """`l1 rate=1e-4`: the job's values of the swept keys (all overrides if none are swept), short
    enough for the MLflow UI's run-name column."""
    pairs = [o.lstrip("+~") for o in overrides]
    if swept:
        pairs = [p for p in pairs if p.split("=", 1)[0] in swept] or pairs
    return redact_text(" ".join(_label(p) for p in pairs)) or "default"


def _label(override: str) -> str:
    """`reg=l1` -> `l1` (a config group's choice, `variant/<study>=b32` too), `rate=0.0001` -> `rate=1e-4`."""
    key, _, value = override.partition("=")
    value = short_number(value)
    return f"{key}={value}" if key in _schema_leaves() else value


@functools.lru_cache(maxsize=1)
def _schema_leaves() -> frozenset[str]:
    """The schema's keys that hold a value; every other key on a command line is a config group."""
    keys = dotted_keys()
    return frozenset(k for k in keys if not any(other.startswith(k + ".") for other in keys))


_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)")


def short_number(text: str) -> str:
    """A float in its shortest exact form (`0.0001` -> `1e-4`, `1000000000000.0` -> `1e12`, `0.5`
    stays); anything else (`128`, `[16,32]`, `l1`) as it is."""
    if not _FLOAT.fullmatch(text) or not math.isfinite(float(text)):
        return text
    number = Decimal(repr(float(text))).normalize()
    sign, digits, exponent = number.as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    scientific = f"{'-' if sign else ''}{mantissa}e{exponent + len(digits) - 1}"
    return min(format(number, "f"), scientific, key=len)  # positional on a tie: 0.01, 0.5


def scrubbed(plain: dict) -> dict:
    """A plain config (or part of one) with the credentials out of its store locations."""
    for node, key in (("tracking", "uri"), ("tracking", "artifact_root"), ("search", "storage")):
        if key in plain.get(node, {}):
            plain[node][key] = redact_uri(plain[node][key])
    return plain


def job_tags(cfg: DictConfig, overrides: list[str], extra: Optional[dict] = None) -> dict:
    """A job's tags: its overrides (credentials redacted), config hash, git commit, plus `extra`."""
    run_tags = {tags.OVERRIDES: redact_text(json.dumps(list(overrides))), tags.HASH: config_hash(cfg),
                **(extra or {})}
    commit = git_commit()
    if commit:
        run_tags[tags.GIT_COMMIT] = commit
    return run_tags


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


def metric_points(values: dict[str, float], step: int = 0) -> list[Metric]:
    """`{name: value}` as MLflow metric points for one `log_batch` call (non-finite values left out)."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if math.isfinite(float(v))]


class WholeCalls:
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
        self.client = WholeCalls(MlflowClient(uri), self.whole, self.lock_wait_s)
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
            self.client.set_terminated(run_id, "FINISHED")
            return
        clean_up = CleanUp()
        if isinstance(err, KeyboardInterrupt) or interrupts.interrupted():
            reason = ("interrupted" if isinstance(err, KeyboardInterrupt)
                      else redact_text(f"interrupted ({type(err).__name__}: {err})")[:4000])
            clean_up(self.client.set_tag, run_id, tags.ERROR, reason)
            clean_up(self.client.set_terminated, run_id, "KILLED")
        else:
            clean_up(self.record_error, run_id, err)
            clean_up(self.client.set_terminated, run_id, "FAILED")

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
        """Save in MLflow's TensorFlow/Keras flavor at `model` of `run_id` (native .keras file inside).

        Requirements are given, not inferred: inference re-imports the model in a fresh Python
        (about 10 s here); the signature from the input sample and the model's output shape (no
        prediction pass: it would trace a predict function for every job). The logged model is
        created in this run's experiment by a client call; MLflow's flavor code then reads the
        tracking URI from its global setting, so that is set to this store first.
        """
        import keras
        import mlflow.tensorflow
        import numpy as np
        from mlflow.models import infer_signature

        requirements = [f"tensorflow=={_version('tensorflow')}", f"keras=={keras.__version__}",
                        f"mlflow=={mlflow.__version__}"]
        outputs = np.zeros((len(sample), *model.output_shape[1:]), dtype="float32")  # shapes only: no predict pass
        signature = infer_signature(sample, outputs)
        logged = self.client.create_logged_model(self.experiment_id, name="model", source_run_id=run_id)
        # the flavor's log_model has no client or URI argument: it writes through the fluent API's
        # store, so that is set to this job's (the job's process has one store; nothing else reads it)
        mlflow.set_tracking_uri(self.uri)

        def log_model():
            with self.whole():
                mlflow.tensorflow.log_model(model, name="model", pip_requirements=requirements, signature=signature,
                                            run_id=run_id, model_id=logged.model_id)
        patiently(log_model, self.lock_wait_s)


def short_reason(err: BaseException) -> str:
    """One line for a failed store call: the database's own words (`OperationalError: unable to open
    database file`), not SQLAlchemy's wrapper ("raised as a result of Query-invoked autoflush")."""
    if isinstance(err, MlflowException) or locked(err):
        return redact_text(root_reason(err))
    return redact_text(str(err).splitlines()[0] if str(err).strip() else type(err).__name__)


def best_effort(call, *args) -> Optional[Exception]:
    """Clean-up that must not hide what is being cleaned up after (a dead store, a full disk);
    returns the error it reported (None when the call went through)."""
    try:
        call(*args)
    except Exception as err:  # noqa: BLE001 - reported, then the original error goes on
        log.warning("could not record it in the store: %s", short_reason(err))
        return err
    return None


def unanswered(err: BaseException) -> bool:
    """Whether an error says the store did not answer at all (refused, reset, timed out), as
    opposed to refusing one write (a full disk for artifacts, a bad value)."""
    import requests

    silent = (ConnectionError, TimeoutError, requests.exceptions.RequestException)
    return any(isinstance(e, silent) for e in error_chain(err))


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
    tampered model file cannot run code when it is loaded.
    """
    import mlflow.tensorflow

    return mlflow.tensorflow.load_model(model_uri, keras_model_kwargs={"safe_mode": True})
