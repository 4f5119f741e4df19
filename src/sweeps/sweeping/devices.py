"""One GPU per parallel worker: jobs that train side by side on one machine do not share a device.

TensorFlow takes every GPU it sees and places its work on the first, so N pool workers on a machine
with N GPUs would all train on GPU 0. A worker that runs beside others (joblib's and packed's
`n_jobs` >= 2, an asynchronous search's pool) therefore claims a slot before TensorFlow starts
(`claim`, at the start of its first job): the first slot no live worker of this sweep on this host
holds, by an exclusive `flock` on `<sweep dir>/.devices/<host>-<slot>.lock` that the process keeps
for its life (the kernel releases it when the process ends, so a worker started in place of a dead
one takes over its slot). Slot k sees GPU k of the launching process's GPUs (`CUDA_VISIBLE_DEVICES`
as the launching process had it, else every GPU `nvidia-smi -L` lists), round robin when there are
more workers than GPUs; every run records what its process saw (tag `sweeps.cuda_visible_devices`).

Nothing changes on a machine with fewer than two GPUs, in a process that runs its jobs alone
(the basic launcher, `n_jobs=1`), or where the scheduler already gave each task its own GPUs: a
SLURM task asked with `hydra.launcher.gpus_per_task` and a Ray task with `num_gpus` see only theirs
(both set `CUDA_VISIBLE_DEVICES` themselves), so they are one-job-per-process and are left alone.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import IO, Optional

ENV = "CUDA_VISIBLE_DEVICES"
FOLDER = ".devices"
_held: list[IO] = []  # this process's slot lock: kept open for the process's life, on purpose (see above)


def visible() -> list[str]:
    """The GPUs this process may use: `CUDA_VISIBLE_DEVICES` when set, else those `nvidia-smi -L` lists."""
    value = os.environ.get(ENV)
    if value is not None:
        return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(line for line in out.stdout.splitlines() if line.startswith("GPU "))]


def claim(sweep_dir: str, parallel: int) -> Optional[str]:
    """For a worker beside others (`parallel` >= 2) on a machine with two or more GPUs: take a free
    slot and see only its GPU, before TensorFlow starts. Returns the GPU this process uses (None: it
    sees what it saw). A process that has claimed keeps its GPU for its later jobs."""
    if _held:
        return os.environ.get(ENV)
    gpus = visible() if parallel >= 2 else []
    if len(gpus) < 2:
        return None
    folder = Path(sweep_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(parallel):
        lock = open(folder / f"{socket.gethostname()}-{slot}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live worker of this sweep holds it
            lock.close()
            continue
        _held.append(lock)
        # the environment, not tf.config: TensorFlow reads it once, when it first looks for GPUs
        os.environ[ENV] = gpus[slot % len(gpus)]
        return os.environ[ENV]
    return None  # more workers than slots (cannot happen: one slot per worker)
