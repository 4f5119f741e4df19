"""A real two-node Ray cluster for the tests: `ray start --head` and `ray start --address=...` as processes of their own.

Both nodes run on this machine, each with its own raylet and its own CPUs (`--num-cpus`), as two
machines of a cluster would; jobs see them as two nodes (`ray.nodes()`, the node id of each task).
Each `ray start --block` runs in a session of its own; `stop` sends it SIGTERM (it ends its
daemons), then SIGKILLs whatever of its session is left (workers, agents) and removes the folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

RAY = Path(sys.executable).parent / "ray"
# Every process of the tests in one auth mode: Ray 2.60 turns token authentication on for a head that
# finds a token in ~/.ray (any earlier local Ray leaves one there), and a client without it cannot join.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
NODES = """import ray, sys, time
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 120
while time.monotonic() < deadline and len([n for n in ray.nodes() if n["Alive"]]) < int(sys.argv[2]):
    time.sleep(0.5)
print(len([n for n in ray.nodes() if n["Alive"]]))"""


def why_not() -> Optional[str]:
    if not RAY.exists():
        return "Ray is not installed: make install (pip install 'sweeps[ray]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A head node and a worker node, `cpus` each."""

    def __init__(self, cpus: int = 1):
        self.cpus = cpus
        # Ray's socket paths must stay short (a Unix socket path holds 107 bytes): not under pytest's tmp_path
        self.root = Path(tempfile.mkdtemp(prefix="sweeps-ray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        log = open(self.root / f"node{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen(
            [str(RAY), "start", *args, f"--num-cpus={self.cpus}", f"--dashboard-agent-listen-port={_free_port()}",
             "--disable-usage-stats", "--block"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=ENV))

    def start(self) -> "Cluster":
        try:
            self._start("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.root}",
                        f"--ray-client-server-port={_free_port()}")
            self._wait_for(1)
            self._start(f"--address={self.address}")
            self._wait_for(2)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for(self, nodes: int) -> None:
        out = subprocess.run([sys.executable, "-c", NODES, self.address, str(nodes)], capture_output=True,
                             text=True, timeout=240, env=ENV)
        if out.stdout.strip() != str(nodes):
            raise RuntimeError(f"the Ray cluster did not come up with {nodes} node(s): {out.stderr[-2000:]}\n"
                               f"{self.log()}")

    def log(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.root.glob("node*.log")))

    def stop(self) -> None:
        sessions = set()
        for proc in self.procs:
            try:
                sessions.add(os.getsid(proc.pid))
            except ProcessLookupError:
                pass
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(1)
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):  # workers and agents of its sessions
            try:
                if os.getsid(pid) in sessions:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)
