"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd started by hand.

Debian's `slurm-wlm` and `munge` (`make install` brings them) run without systemd as root: a munge
key of its own, `munged` as user munge on a socket of its own, and a `slurm.conf` naming this host
on free ports, with process tracking by pid (`proctrack/linuxproc`, `task/none`: no cgroups in a
container) and no accounting database (so `sacct` fails, as on many small clusters). Everything
lives in one temporary folder; `stop` ends the daemons by pid and removes it. Clients (`sbatch`,
`squeue`, submitit) find the cluster through `SLURM_CONF`, which `env` gives.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

DAEMONS = ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "squeue", "scancel", "sinfo", "scontrol")


def why_not() -> Optional[str]:
    """Why no cluster can be started here (None: it can)."""
    if os.geteuid() != 0:
        return "a SLURM cluster needs root (slurmd starts jobs as their user); run the tests as root"
    missing = [d for d in DAEMONS if not shutil.which(d)]
    if missing:
        return f"{', '.join(missing)} not installed: run `make install` as root (apt-get install slurm-wlm munge)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no user munge (apt-get install munge creates it)"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """One node (this host, its CPUs) in one partition `debug`."""

    partition = "debug"

    def __init__(self, cpus: int = 2, memory_mb: int = 4000):
        # Not under pytest's tmp_path: user munge must reach its socket and key (0700 parents stop it).
        self.root = Path(tempfile.mkdtemp(prefix="sweeps-slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        self.cpus, self.memory_mb = cpus, memory_mb
        self.host = socket.gethostname()
        self.conf = self.root / "slurm.conf"
        self.munge = self.root / "munge"
        self.socket = self.munge / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> "Cluster":
        self._start_munge()
        ctld_port, d_port = _free_ports(2)
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir()
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=sweeps-test",
            f"SlurmctldHost={self.host}",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "JobRequeue=1",
            "KillWait=5",          # seconds between a cancel's SIGTERM and its SIGKILL
            "MinJobAge=600",       # finished jobs stay visible to squeue/scontrol for the tests
            "SchedulerParameters=sched_interval=2",
            f"NodeName={self.host} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=30 State=UP",
            "",
        ]))
        env = self.env
        subprocess.run(["slurmctld", "-f", str(self.conf), "-i"], env=env, check=True, capture_output=True)
        subprocess.run(["slurmd", "-f", str(self.conf)], env=env, check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.strip() in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM node did not come up: {state!r}\n{self.log()}")

    def _start_munge(self) -> None:
        user = pwd.getpwnam("munge")
        self.munge.mkdir(mode=0o755)
        key = self.munge / "munge.key"
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        for path in (self.munge, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        key.chmod(0o600)
        subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--socket={self.socket}", f"--key-file={key}",
                        f"--pid-file={self.munge / 'munged.pid'}", f"--log-file={self.munge / 'munged.log'}",
                        f"--seed-file={self.munge / 'munged.seed'}"], check=True, capture_output=True)

    def squeue(self, *args: str) -> list[str]:
        out = subprocess.run(["squeue", "-h", *args], env=self.env, capture_output=True, text=True, check=True)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def log(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted((self.root / "log").glob("*.log")) if p.exists())

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.root / pidfile
            if not path.exists():
                continue
            pid = int(path.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
