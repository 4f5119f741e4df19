"""Store faults: which errors mean the store is locked, gone or slow, and how long to wait on it.

`patiently` retries a call on a locked database for `tracking.lock_wait_s`; `impatient()` makes
clean-up after a failure one quick try per call; `root_reason`/`short_reason` turn an error chain
into the line a user sees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Callable, Iterator, Optional

from mlflow.exceptions import MlflowException

from sweeps.tracking.redact import redact_text

log = logging.getLogger(__name__)


# Clean-up after a failure or an interrupt: one quick try per call.
IMPATIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


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
