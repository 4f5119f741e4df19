"""Which store: the tracking URI resolved and checked before anything is trained.

A SQLite file, a database server or an `mlflow server`: `resolve_uri` picks it, `check_reachable`
says in one line why it cannot be used (no driver, refused, not a database, disk full),
`store_lock` lets one process at a time create it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse, urlunparse

from mlflow.tracking import MlflowClient

from sweeps.tracking.redact import redact_uri
from sweeps.errors import TrackingError


DEFAULT_DB = Path("mlruns") / "mlflow.db"


SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


# Drivers SQLAlchemy looks for by URI scheme, and how to get them.
DRIVER_HINTS = {"psycopg2": "pip install psycopg2-binary, or write postgresql+psycopg://... to use psycopg 3 "
                            "from `pip install 'sweeps[postgres]'`",
                "psycopg": "pip install 'sweeps[postgres]'", "pymysql": "pip install pymysql",
                "MySQLdb": "pip install mysqlclient, or pip install pymysql and write mysql+pymysql://..."}


DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


SERVER_SCHEMES = ("http", "https")  # a tracking URI with these is an `mlflow server`, else a database


MIN_FREE_BYTES = 1 << 20  # a SQLite store's folder with less free space than this counts as full


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
