"""What a run is called and tagged: its name from the overrides, its params, its process tags.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
import sys
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from sweeps.tracking import tags
from sweeps.tracking.redact import redact_text, redact_uri
from sweeps.config import config_hash, dotted_keys


def process_tags() -> dict[str, str]:
    """pid and host of this process: a RUNNING run whose process is gone is stale (see recovery); inside
    a SLURM task its id (`5_1`), by which the launching process finds the run of a task SLURM ended
    (inside a Ray task: its task and node);
    the GPUs it may use, where `CUDA_VISIBLE_DEVICES` says."""
    found = {tags.PID: str(os.getpid()), tags.HOST: socket.gethostname()}
    for tag, variable in ((tags.RAY_TASK, "SWEEPS_RAY_TASK"), (tags.RAY_NODE, "SWEEPS_RAY_NODE")):
        if os.environ.get(variable):  # a Ray task of hydra/launcher=ray (`sweeps.sweeping.ray_launcher.run_task` sets them)
            found[tag] = os.environ[variable]
    if "keras" in sys.modules:  # what trained it, read from Keras itself (`sweeps.backends` set it)
        found[tags.KERAS_BACKEND] = sys.modules["keras"].backend.backend()
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # the GPUs this process saw (`sweeps.sweeping.devices`)
        found[tags.DEVICES] = os.environ["CUDA_VISIBLE_DEVICES"]
    array, task, job = (os.environ.get(k) for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"))
    if array and task:
        found[tags.SLURM_JOB] = f"{array}_{task}"
    elif job:
        found[tags.SLURM_JOB] = job
    return found


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
