"""A team tracking store: `mlflow server` on PostgreSQL with proxied artifacts (`make server`).

    python -m sweeps.server                       # PostgreSQL in mlruns/server/postgres, UI + API on 127.0.0.1:5000
    python -m sweeps.server --host 0.0.0.0        # reachable by other machines (see README: working as a team)
    python -m sweeps.server --ui STORE            # `make ui`: the runs table's link, then STORE served (no PostgreSQL)

The PostgreSQL cluster is Debian's `postgresql` run as a plain server process (`initdb` once, then
`pg_ctl start` on its own port and socket folder; no systemd, no root: as root it runs as the
`postgres` user, which PostgreSQL requires). The server stores artifacts itself
(`--artifacts-destination`), so workers need only the server's URL, not a shared disk. Ctrl-C
stops the server and the database. Both start only MLflow's web server (`mlflow_command`): no
job runner or job-queue consumers for MLflow's GenAI jobs, and one or two web workers, not four.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sweeps.errors import SweepsError

DB_USER = "sweeps"
DB_NAME = "mlflow"


class ServerError(SweepsError):
    """PostgreSQL or `mlflow server` could not be set up or started."""


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise ServerError(f"{name} not found: install PostgreSQL (`apt-get install postgresql`, or `make install` as root)")
    return found


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


@dataclass
class Postgres:
    """A PostgreSQL cluster in `folder`, reachable only through a Unix socket in that folder (mode 0700):
    no TCP port, so no other user of the machine can connect to it (authentication is `trust`)."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{DB_USER}@/{DB_NAME}?host={self.folder}&port={self.port}"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*_as_postgres(), *command], capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            reason = (proc.stderr or proc.stdout).strip().splitlines()
            raise ServerError(f"{Path(command[0]).name} failed: {reason[-1] if reason else proc.returncode}"
                              f" (log: {self.folder / 'postgres.log'})")
        return proc

    def init(self) -> None:
        """Create the cluster once (trust authentication on 127.0.0.1 only: see README)."""
        if (self.folder / "PG_VERSION").exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            probe = subprocess.run([*_as_postgres(), "test", "-w", str(self.folder)], timeout=30)
            if probe.returncode != 0:
                raise ServerError(f"{self.folder}: the postgres user cannot reach it (a parent folder is private); "
                                  "choose --dir under a folder others can enter, or run as a normal user")
        self.folder.chmod(0o700)
        self._run(pg_bin("initdb"), "-D", str(self.folder), "-U", DB_USER, "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses='' -c unix_socket_permissions=0700"
        self._run(pg_bin("pg_ctl"), "-D", str(self.folder), "-o", options, "-l", str(self.folder / "postgres.log"),
                  "-w", "-t", "60", "start")
        exists = self._run(pg_bin("psql"), "-h", str(self.folder), "-p", str(self.port), "-U", DB_USER, "-d", "postgres",
                           "-tAc", f"select 1 from pg_database where datname = '{DB_NAME}'")
        if exists.stdout.strip() != "1":
            self._run(pg_bin("createdb"), "-h", str(self.folder), "-p", str(self.port), "-U", DB_USER, DB_NAME)

    def stop(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.folder), "-m", "fast", "-w", "stop", check=False)


UI_WORKERS = 1  # `make ui`: one person browsing; one uvicorn process serves the page's requests on its threads
TEAM_WORKERS = 2  # `make server`: several machines logging at once


def mlflow_command(store_uri: str, host: str, port: int, workers: int, artifacts: Optional[Path] = None,
                   allowed_hosts: str = "") -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `mlflow server` for `make ui` (`artifacts` None: MLflow's
    default) and `make server`: only what browsing and tracking need. Each option or variable set
    here is public in MLflow (`mlflow server --help`, `mlflow.environment_variables`); one the user
    exported wins, except the store."""
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", host, "--port", str(port)]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    if allowed_hosts:  # MLflow 3 answers only requests addressed to localhost unless told otherwise
        command += ["--allowed-hosts", allowed_hosts]
    env = dict(os.environ)
    # --backend-store-uri's variable, not the command line: `ps` shows command lines to every user, and
    # STORE may hold a password.
    env["MLFLOW_BACKEND_STORE_URI"] = store_uri
    # --workers' variable: uvicorn worker processes, 4 by default at ~250 MB each.
    env.setdefault("MLFLOW_WORKERS", str(workers))
    # MLflow's GenAI jobs (LLM judges, scorers, trace roll-ups): a job runner and 7 job-queue
    # consumers, ~230 MB each; sweeps logs no traces and runs no judges.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return command, env


def mlflow_server(store_uri: str, artifacts: Path, host: str, port: int, allowed_hosts: str = "",
                  **popen) -> subprocess.Popen:
    """`mlflow server` on `store_uri` with artifacts proxied from `artifacts` (a new process group)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    command, env = mlflow_command(store_uri, host, port, TEAM_WORKERS, artifacts, allowed_hosts)
    return subprocess.Popen(command, env=env, start_new_session=True, **popen)


def serve_ui(store: str, host: str, port: int, allowed_hosts: str = "") -> None:
    """`make ui`: print the link to the runs table of experiment `sweeps` in `store` (not `store`
    itself: it may hold a password), then become `mlflow server` on it (exec: no process left between
    the terminal's Ctrl-C and MLflow)."""
    from sweeps.tracking import ui_hint  # MLflow: not for --help or the team server

    print(ui_hint(store, host, str(port)), flush=True)
    command, env = mlflow_command(store, host, port, UI_WORKERS, allowed_hosts=allowed_hosts)
    os.execve(command[0], command, env)


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the server and its workers, SIGKILL if they outlive `timeout`."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server of our own, a test, a bench)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int, timeout: float = 5.0) -> bool:
    """Whether an `mlflow server` on 127.0.0.1:`port` answers its /health endpoint."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout):
            return True
    except OSError:
        return False


def postgres_missing() -> str:
    """Why `make server` cannot run PostgreSQL here ("" when it can)."""
    try:
        pg_bin("initdb")
    except ServerError as err:
        return str(err)
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "as root, PostgreSQL needs setpriv to run as the postgres user"
    return ""


def exposed_without_names(host: str, allowed_hosts: str) -> Optional[str]:
    """Listening for other machines without --allowed-hosts: MLflow 3 then answers them 403 (it accepts
    only requests addressed to localhost) while /health still says OK. Said at start, not found later."""
    if host in ("127.0.0.1", "localhost", "::1") or allowed_hosts:
        return None
    return (f"--host {host} without --allowed-hosts: MLflow answers 403 to every other machine; add "
            "--allowed-hosts with the names they use, e.g. --allowed-hosts 'gpu-box.lab,gpu-box.lab:5000'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="mlruns/server", help="where the database and the artifacts live")
    parser.add_argument("--host", default="127.0.0.1", help="address the server listens on (default: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="the server's port")
    parser.add_argument("--db-port", type=int, default=5433, help="PostgreSQL's port number (names its socket file)")
    parser.add_argument("--allowed-hosts", default="",
                        help="host names other machines use to reach the server (MLflow's --allowed-hosts), "
                             "e.g. 'gpu-box.lab,gpu-box.lab:5000'")
    parser.add_argument("--ui", metavar="STORE",
                        help="what `make ui` runs: print the link to the runs table, then serve this tracking "
                             "store (e.g. sqlite:///mlruns/mlflow.db) as MLflow's UI; no PostgreSQL, --dir unused")
    args = parser.parse_args(argv)
    unreachable = exposed_without_names(args.host, args.allowed_hosts)
    if unreachable:
        print(f"warning: {unreachable}", file=sys.stderr)
    if args.ui is not None:
        serve_ui(args.ui, args.host, args.port, args.allowed_hosts)  # returns only by raising
    folder = Path(args.dir).resolve()
    db = Postgres(folder / "postgres", args.db_port)
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT),
                **{s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}}
    server = None
    try:
        db.init()
        db.start()
        server = mlflow_server(db.url, folder / "artifacts", args.host, args.port, args.allowed_hosts)
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(f"mlflow server on PostgreSQL ({folder}); use it with:\n\n"
              f"    export MLFLOW_TRACKING_URI=http://{shown}:{args.port}\n\nCtrl-C stops it.", file=sys.stderr)
        while server.poll() is None:
            time.sleep(0.5)
        print(f"error: mlflow server ended (exit {server.returncode})", file=sys.stderr)
        return 1
    except SweepsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:  # a second Ctrl-C must not leave the database running: ignore signals while stopping
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if server is not None:
            stop_process_group(server)
        db.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt("SIGTERM")


if __name__ == "__main__":
    sys.exit(main())
