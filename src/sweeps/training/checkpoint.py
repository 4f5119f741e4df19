"""Per-epoch checkpoints: a job that SLURM requeues continues from its last finished epoch, in the same run.

SLURM requeues a task (preemption, `scontrol requeue`, submitit's requeue at a time limit) by
running it again from the start: the same job, with the same sweep folder and job number. With
`checkpoint` on (by default inside a SLURM task of a sweep: `SLURM_JOB_ID` is set), every epoch end
writes one file, `<sweep dir>/.checkpoints/<job number>.npz`, holding

- the model's variables (weights, and the dropout seed generators' states) and the optimizer's
  (its step count, moments), so epoch k+1 trains from exactly where epoch k left off;
- the early-stopping state (epochs without improvement, best value, the best epoch's weights when
  they are restored at the end) and the logger's (history, best epoch, timing), so `best_epoch`,
  the curves and the stop are those of one uninterrupted run;
- which run it belongs to (run id, parent run, config hash) and the cross-validation results.

A job that starts and finds a checkpoint of its own config under its own (still RUNNING) parent
reopens that run, says so (tag `sweeps.continued_at_epoch`), and trains epochs k+1..E; the batch
order is ours and depends on (seed, epoch) alone (`fitting.EpochBatches`), so the examples come in
the order they would have come. A finished or failed job deletes its checkpoint; an interrupted
one (SIGTERM from SLURM) keeps it for its next start. The file is written to a temporary name and
renamed: a kill mid-write leaves the previous epoch's checkpoint whole. Cost per epoch: one
`np.savez` of the variables (`make bench` measures it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import keras
import numpy as np

from sweeps import interrupts

log = logging.getLogger(__name__)

FOLDER = ".checkpoints"  # under the sweep folder (shared by every node of a cluster, as submitit's own files are)


def wanted(setting: Optional[bool], sweep_dir: Optional[str]) -> bool:
    """Whether a job checkpoints: `checkpoint=true`, or left null inside a SLURM task (SLURM may requeue
    it; elsewhere nothing reruns a job in its own sweep); never outside a sweep (no sweep folder)."""
    if sweep_dir is None or setting is False:
        return False
    return bool(setting) or "SLURM_JOB_ID" in os.environ


def path_of(sweep_dir: str, number: Optional[int]) -> Path:
    return Path(sweep_dir) / FOLDER / f"{number if number is not None else 0}.npz"


@dataclass
class Saved:
    """A checkpoint read back: what `Checkpoint.restore` puts back into a fresh model and callbacks."""

    state: dict  # run_id, parent, config_hash, epoch (finished epochs, from 1), logger, early_stopping, cv, train_time_s
    arrays: dict  # "model/<i>", "optimizer/<i>", "best/<i>" -> np.ndarray

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def run_id(self) -> str:
        return self.state["run_id"]


def load(path: Path, parent_id: str, config_hash: str) -> Optional[Saved]:
    """The checkpoint at `path` when it is this job's (same parent run, same config), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        state = json.loads(str(arrays.pop("state")))
    except (OSError, ValueError, KeyError) as err:  # unreadable (a disk that filled up): start over
        log.warning("checkpoint %s cannot be read (%s): the job starts from its first epoch", path, err)
        return None
    if state.get("parent") != parent_id or state.get("config_hash") != config_hash:
        return None  # another sweep's or another config's (a sweep folder reused)
    return Saved(state, arrays)


@contextlib.contextmanager
def kept_if_interrupted(path: Optional[Path]) -> Iterator[None]:
    """Around a job: its checkpoint removed when it ends (finished or failed: nothing to continue),
    kept when it was interrupted (SLURM's SIGTERM before a requeue: its next start continues from it)."""
    try:
        yield
    except BaseException:
        if not interrupts.interrupted() and path is not None:
            path.unlink(missing_ok=True)
        raise
    if path is not None:
        path.unlink(missing_ok=True)


class Checkpoint(keras.callbacks.Callback):
    """Save the training state at every epoch end; with `saved`, put it back before the first epoch.

    Comes after the logger and early stopping in the callback list: their `on_train_begin` resets
    them, this one's then restores them, and at an epoch end it saves what they have just updated.
    Its `hold` comes first: from the first epoch-end hook to the save, a SIGTERM waits (`interrupts.
    deferred`), so an epoch the store has is always in the checkpoint too (else the job, continued,
    would log that epoch twice).

    Args:
        path: the file (see `path_of`).
        identity: run_id, parent and config_hash, stored with every checkpoint.
        logger: the job's `callbacks.JobEpochs` (its logger's and best epoch's state).
        early_stopping: Keras' `EarlyStopping` callback, or None.
        saved: the checkpoint this run continues from, or None.
        extra: more to store (the cross-validation results).
    """

    def __init__(self, path: Path, identity: dict, logger, early_stopping=None, saved: Optional[Saved] = None,
                 extra: Optional[dict] = None):
        super().__init__()
        self.path, self.identity, self.logger, self.early_stopping = path, identity, logger, early_stopping
        self.saved, self.extra = saved, extra or {}
        self.seconds = 0.0  # time spent writing checkpoints (reported as `checkpoint_s`)
        self.holding = None  # the `interrupts.deferred()` block of the current epoch end, while it is open
        self.hold = _Hold(self)

    def release(self) -> None:
        """End the hold (a signal that came meanwhile raises now); `fit` calls it too, on any way out."""
        holding, self.holding = self.holding, None
        if holding is not None:
            holding.__exit__(None, None, None)

    def on_train_begin(self, logs=None):
        self.began = time.perf_counter()
        if self.saved is None:
            return
        s, arrays = self.saved.state, self.saved.arrays
        put(self.model.variables, arrays, "model")
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        put(self.model.optimizer.variables, arrays, "optimizer")
        self.logger.restore(s["logger"])
        if self.early_stopping is not None and s.get("early_stopping"):
            es = s["early_stopping"]
            self.early_stopping.wait, self.early_stopping.best = es["wait"], es["best"]
            if "best/0" in arrays:
                self.early_stopping.best_weights = [arrays[f"best/{i}"] for i in range(es["n_best"])]

    def on_epoch_end(self, epoch, logs=None):
        tic = time.perf_counter()
        earlier = self.saved.state.get("train_time_s", 0.0) if self.saved else 0.0
        state = {**self.identity, **self.extra, "epoch": epoch + 1, "logger": self.logger.state(),
                 "train_time_s": earlier + tic - self.began}  # every start's training, for the run's train_time_s
        arrays = {**numbered(self.model.variables, "model"), **numbered(self.model.optimizer.variables, "optimizer")}
        es = self.early_stopping
        if es is not None:
            best = es.best_weights or []
            state["early_stopping"] = {"wait": int(es.wait), "best": float(es.best), "n_best": len(best)}
            arrays.update({f"best/{i}": np.asarray(w) for i, w in enumerate(best)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}.npz")  # renamed whole: never half-written
        try:
            np.savez(partial, state=np.asarray(json.dumps(state)), **arrays)
            os.replace(partial, self.path)
        finally:
            self.seconds += time.perf_counter() - tic
            self.release()


class _Hold(keras.callbacks.Callback):
    """First at every epoch end: signals wait until the `Checkpoint` has saved the epoch."""

    def __init__(self, owner: Checkpoint):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        if self.owner.holding is None:
            self.owner.holding = interrupts.deferred()
            self.owner.holding.__enter__()


def numbered(variables, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)}


def put(variables, arrays: dict, prefix: str) -> None:
    """Assign `arrays[prefix/i]` to the i-th variable (the model is rebuilt from the same config: same order)."""
    stored = sum(1 for k in arrays if k.startswith(prefix + "/"))
    if stored != len(variables):
        raise ValueError(f"checkpoint holds {stored} {prefix} variables, the model has {len(variables)}")
    for i, v in enumerate(variables):
        v.assign(arrays[f"{prefix}/{i}"])
