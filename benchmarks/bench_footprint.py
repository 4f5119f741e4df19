"""What `make ui` and `make server` start, next to MLflow's defaults: processes and memory, side by side.

    make bench            # or: python benchmarks/bench_footprint.py [--settle 10]

Each server starts on a free 127.0.0.1 port over a throwaway store: SQLite for the UI, Debian's
PostgreSQL for the team server (skipped, with the reason, when it is not installed). Once /health
answers, the process tree is left until it has not changed for `--settle` seconds (MLflow's job
runner starts its consumers after the server answers), then counted: processes, total RSS
(resident memory; pages the processes share are counted in each) and total USS (memory that only
that process holds: what stopping it frees). "MLflow defaults" is the command as it was before
sweeps set anything: `mlflow ui` / `mlflow server` with only the store, port and artifact options
(4 web workers, MLflow's GenAI job execution on); "sweeps" is `make ui`'s and `make server`'s
command (`python -m sweeps.server`). MLflow variables exported in this shell are left out of both.
PostgreSQL's own processes (the same under both) are shown apart. Every process is then stopped
and checked gone. Memory figures are steady; "ready" (seconds until /health answers) is one sample.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from sweeps import server

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
OURS = ("MLFLOW_WORKERS", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "MLFLOW_BACKEND_STORE_URI")
MB = 1 << 20


@dataclass
class Footprint:
    processes: int
    rss: float  # bytes
    uss: float
    ready: float  # seconds until /health answered


def tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def postgres_tree(folder: Path) -> list[psutil.Process]:
    """The cluster in `folder`: its postmaster (first line of postmaster.pid) and its children."""
    try:
        return tree(int((folder / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return []


def memory(procs: list[psutil.Process]) -> tuple[int, float, float]:
    count, rss, uss = 0, 0.0, 0.0
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count, rss, uss = count + 1, rss + info.rss, uss + info.uss
    return count, rss, uss


def measure(command: list[str], port: int, folder: Path, settle: float, seen: list[psutil.Process],
            also: Callable[[], list[psutil.Process]] = list) -> Footprint:
    """Start `command` (a new session, in `folder`), wait for /health and a settled tree, count it,
    stop it (SIGTERM to its group, SIGKILL after 60 s). Every process met, and those `also` names
    (not counted), go into `seen`."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    log = open(folder / f"server-{port}.log", "w")
    tic = time.perf_counter()
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not server.healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command[:4]} did not start:\n{(folder / f'server-{port}.log').read_text()[-3000:]}")
            time.sleep(0.5)
        ready = time.perf_counter() - tic
        last, since, give_up = set(), time.monotonic(), time.monotonic() + 180
        while time.monotonic() < give_up:
            procs = tree(proc.pid)
            seen.extend(p for p in [*procs, *also()] if p not in seen)
            if {p.pid for p in procs} != last:
                last, since = {p.pid for p in procs}, time.monotonic()
            elif time.monotonic() - since >= settle:
                break
            time.sleep(1)
        count, rss, uss = memory(tree(proc.pid))
        return Footprint(count, rss, uss, ready)
    finally:
        server.stop_process_group(proc, timeout=60)
        log.close()


def gone(seen: list[psutil.Process]) -> int:
    """How many of `seen` outlived their stop (killed now); 0 when everything stopped cleanly."""
    _, alive = psutil.wait_procs([p for p in seen if p.is_running()], timeout=30)
    for p in alive:
        p.kill()
    return len(alive)


def ui(settle: float, seen: list) -> dict[str, Footprint]:
    from mlflow.tracking import MlflowClient

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = f"sqlite:///{folder}/mlflow.db"
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its "creating tables" lines are not the bench's output
        MlflowClient(store).search_experiments()  # the store's tables, made before: a user's store exists
        port = server.free_port()
        out["MLflow defaults: mlflow ui"] = measure([MLFLOW, "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                                                    "--port", str(port)], port, folder, settle, seen)
        port = server.free_port()
        out["sweeps: python -m sweeps.server --ui"] = measure(
            [sys.executable, "-m", "sweeps.server", "--ui", store, "--host", "127.0.0.1", "--port", str(port)],
            port, folder, settle, seen)
    return out


def team(settle: float, seen: list) -> tuple[dict[str, Footprint], tuple[int, float, float]]:
    out = {}
    folder = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as the postgres user, who must reach its folder
    try:
        db = server.Postgres(folder / "defaults-db", server.free_port())
        db.init()
        db.start()
        try:
            port = server.free_port()
            out["MLflow defaults: mlflow server"] = measure(
                [MLFLOW, "server", "--backend-store-uri", db.url, "--artifacts-destination", str(folder / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(port)], port, folder, settle, seen)
            postgres = memory(postgres_tree(db.folder))
            seen.extend(p for p in postgres_tree(db.folder) if p not in seen)
        finally:
            db.stop()
        port = server.free_port()
        ours = folder / "sweeps-server"
        out["sweeps: python -m sweeps.server"] = measure(
            [sys.executable, "-m", "sweeps.server", "--dir", str(ours), "--port", str(port),
             "--db-port", str(server.free_port())], port, folder, settle, seen, also=lambda: postgres_tree(ours / "postgres"))
        return out, postgres
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def table(title: str, rows: dict[str, Footprint]) -> None:
    print(f"\n{title}\n\n| command | processes | RSS (MB) | USS (MB) | ready (s) |\n|---|---|---|---|---|")
    for name, f in rows.items():
        print(f"| {name} | {f.processes} | {f.rss / MB:.0f} | {f.uss / MB:.0f} | {f.ready:.1f} |")
    (_, before), (_, after) = rows.items()
    print(f"\nsweeps / defaults: {after.processes / before.processes:.2f}x the processes, "
          f"{after.rss / before.rss:.2f}x the RSS, {after.uss / before.uss:.2f}x the USS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=10, help="seconds the process tree must stay unchanged")
    args = parser.parse_args()
    print(f"MLflow servers: process tree after /health answers and {args.settle:g} s without change, "
          f"{os.cpu_count()} cores")
    seen: list[psutil.Process] = []
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # a killed bench still stops its servers
    try:
        table("`make ui` (SQLite store)", ui(args.settle, seen))
        reason = server.postgres_missing()
        if reason:
            print(f"\n`make server`: skipped ({reason})")
        else:
            rows, (count, rss, _) = team(args.settle, seen)
            table("`make server` (PostgreSQL store)", rows)
            print(f"PostgreSQL itself, the same under both (not counted above): {count} processes, "
                  f"{rss / MB:.0f} MB RSS")
    finally:
        signal.signal(signal.SIGTERM, previous)
        left = gone(seen)
        print(f"\nstopped: {len(seen) - left} of {len(seen)} processes gone cleanly"
              + (f", {left} left running and killed" if left else ""))


if __name__ == "__main__":
    main()
