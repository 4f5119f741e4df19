"""A team tracking store: `mlflow server` on PostgreSQL with proxied artifacts (`make server`).

    python -m sweeps.server                       # PostgreSQL in mlruns/server/postgres, UI + API on 127.0.0.1:5000
    python -m sweeps.server --host 0.0.0.0        # reachable by other machines (see README: working as a team)

The PostgreSQL cluster is Debian's `postgresql` run as a plain server process (`initdb` once, then
`pg_ctl start` on its own port and socket folder; no systemd, no root: as root it runs as the
`postgres` user, which PostgreSQL requires). The server stores artifacts itself
(`--artifacts-destination`), so workers need only the server's URL, not a shared disk. Ctrl-C
stops the server and the database.
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


def mlflow_server(store_uri: str, artifacts: Path, host: str, port: int, allowed_hosts: str = "",
                  **popen) -> subprocess.Popen:
    """`mlflow server` on `store_uri` with artifacts proxied from `artifacts` (a new process group)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", host, "--port", str(port),
               "--workers", "2", "--backend-store-uri", store_uri, "--artifacts-destination", str(artifacts)]
    if allowed_hosts:  # MLflow 3 answers only requests addressed to localhost unless told otherwise
        command += ["--allowed-hosts", allowed_hosts]
    return subprocess.Popen(command, start_new_session=True, **popen)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="mlruns/server", help="where the database and the artifacts live")
    parser.add_argument("--host", default="127.0.0.1", help="address the server listens on (default: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="the server's port")
    parser.add_argument("--db-port", type=int, default=5433, help="PostgreSQL's port number (names its socket file)")
    parser.add_argument("--allowed-hosts", default="",
                        help="host names other machines use to reach the server (MLflow's --allowed-hosts), "
                             "e.g. 'gpu-box.lab,gpu-box.lab:5000'")
    args = parser.parse_args(argv)
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
