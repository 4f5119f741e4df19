"""A guard process: what the command's process leaves behind when it dies without its own clean-up.

A process killed with SIGKILL, or aborted from C++ (TensorFlow under a memory limit: `ulimit -v`,
a failed allocation, a segfault) runs no Python on its way out: its runs stay RUNNING until the
next start on this host closes them as stale, and the pool workers of a sweep train on for
minutes, orphaned. So `start()` (called by `train.main()`, in the launching process only) spawns a
small process (`python -m sweeps.guard <pid>`) that waits, idle, for the launching process to end:

- it ended normally (any exit code, Ctrl-C included): at exit it told the guard so (`atexit`), and
  the guard ends without importing anything;
- it died (no word at exit): for every store the process opened (`register`, called by
  `tracking.connect`, the one place that opens stores) the guard sends SIGTERM to the workers of
  this host still running jobs of its sweeps (the pids the store holds: each ends its run KILLED,
  saying why), SIGKILL after a grace period, then closes every run whose process is gone FAILED
  (stale), with the reason, as the next start would, at once.

The guard gets what it needs through a pipe (store URIs may carry credentials: not on its command
line), has its own session (Ctrl-C on the terminal is not for it) and no terminal output.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import time
from typing import Optional

GRACE_S = 20.0  # how long orphaned workers get to end their runs after SIGTERM, before SIGKILL
POLL_S = 0.5  # how often the guard looks whether the launching process is still there
DONE = {"done": True}

_pipe: list = [None, None]  # the write end and the pid of the process that owns the guard (None: no guard)
_sent: set[str] = set()  # what was registered already (the pipe holds each once)


def start() -> None:
    """Spawn this process's guard (once; a no-op where it cannot be spawned)."""
    if _pipe[0] is not None:
        return
    read_fd, write_fd = os.pipe()  # both non-inheritable: no worker holds the write end
    try:
        subprocess.Popen([sys.executable, "-m", "sweeps.guard", str(os.getpid())], stdin=read_fd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(write_fd)
        return
    finally:
        os.close(read_fd)
    _pipe[0], _pipe[1] = os.fdopen(write_fd, "w", buffering=1), os.getpid()
    atexit.register(_send, DONE)


def register(uri: str, experiment: str, parent: Optional[str] = None) -> None:
    """Tell the guard (if any) about a store this process writes, and the sweep parent it owns there."""
    _send({"uri": uri, "experiment": experiment, "parent": parent})


def _send(entry: dict) -> None:
    if _pipe[0] is None or _pipe[1] != os.getpid():  # a forked child speaks not for the process it came from
        return
    line = json.dumps(entry, sort_keys=True)
    if line in _sent:
        return
    _sent.add(line)
    try:
        _pipe[0].write(line + "\n")
        _pipe[0].flush()
    except OSError:  # the guard is gone: nothing to tell
        _pipe[0] = None


def _read_all(fd: int) -> list[dict]:
    """Every line written to the pipe so far (its writer is gone: no more will come)."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    entries = []
    for line in data.decode(errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def watch(pid: int) -> None:
    """Wait for process `pid` (this guard's parent) to end; clean up after it if it died."""
    while os.getppid() == pid:  # re-parented once it has ended, even while it is a zombie
        select.select([], [], [], POLL_S)
    entries = _read_all(0)
    if DONE in entries:
        return
    stores = {(e["uri"], e["experiment"]) for e in entries if "uri" in e}
    for uri, experiment in stores:
        parents = {e["parent"] for e in entries if e.get("uri") == uri and e.get("parent")}
        try:
            clean_up(pid, uri, experiment, parents)
        except Exception:  # noqa: BLE001 - the store may be gone too: the next start closes what is left
            continue


def clean_up(pid: int, uri: str, experiment: str, parents: set[str]) -> None:
    import socket

    import psutil
    from omegaconf import OmegaConf

    from sweeps import tracking
    from sweeps.tracking import queries, recovery, tags

    tracker = tracking.connect(OmegaConf.create({"uri": uri, "experiment": experiment, "artifact_root": None}))
    host = socket.gethostname()
    workers, stopped = [], []
    for parent in parents:
        for run in queries.jobs_of(tracker.client, tracker.experiment_id, parent, "RUNNING"):
            worker = run.data.tags.get(tags.PID, "")
            if run.data.tags.get(tags.HOST) != host or not worker.isdigit() or int(worker) == pid:
                continue
            try:
                process = psutil.Process(int(worker))
                if process.create_time() > run.info.start_time / 1000 + 1:  # a reused pid: not our worker
                    continue
                process.terminate()
            except psutil.Error:
                continue
            workers.append(process)
            stopped.append(run.info.run_id)
    deadline = time.monotonic() + GRACE_S
    alive = workers
    while alive and time.monotonic() < deadline:  # a worker whose run is closed has nothing left to do
        _, alive = psutil.wait_procs(alive, timeout=POLL_S)
        closed = {r.info.run_id for r in map(tracker.client.get_run, stopped) if r.info.status != "RUNNING"}
        for process, run_id in zip(workers, stopped):
            if run_id in closed and process in alive:
                _kill(process)
    for process in alive:
        _kill(process)
    psutil.wait_procs(alive, timeout=10)
    why = (f"the sweep's launching process (pid {pid} on {host}) died without its clean-up (SIGKILL, or "
           "aborted: e.g. TensorFlow under a memory limit); its guard stopped this worker")
    for run_id in stopped:
        run = tracker.client.get_run(run_id)
        if run.info.status == "KILLED" and run.data.tags.get(tags.ERROR) == "interrupted":
            tracker.client.set_tag(run_id, tags.ERROR, f"interrupted: {why}")
    recovery.close_stale_runs(tracker, reason="died without closing its run (killed with SIGKILL, or aborted: "
                                              "e.g. TensorFlow under a memory limit); closed at once by its guard")


def _kill(process) -> None:
    import psutil

    try:
        process.kill()
    except psutil.Error:
        pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
