"""Progress on the terminal (stderr), so that a job is not a minute of silence:

    job 2/4 (l1 rate=1e-3), about 1 min 10 s left in the sweep
      epoch 1/10: val_data_loss 0.4312, data_loss 0.5127, penalty 0.0812, val_accuracy 0.8453 (8 s)
      epoch 5/10: ...
    job 2/4 (l1 rate=1e-3) done in 1 min 21 s: val_data_loss 0.3521, test_accuracy 0.8712

The time left is the sweep's pace so far (its time per job started) times the jobs still to
start, from the second job on. `EpochProgress` rewrites one line at every epoch's end on a
terminal; into a file or a pipe it writes the first epoch, then at most one line per `every_s`
seconds and never more than one per epoch. Epoch hooks only: a batch hook would cost a round
trip into Python per step.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence, TextIO

import keras
import numpy as np

from sweeps.training.callbacks import penalty


def say(line: str) -> None:
    """One progress line on stderr, at once (stderr may be a pipe or a worker's log file); a line that
    cannot be written (the terminal was closed: SIGHUP follows) is dropped, never a job's failure."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def duration(seconds: float) -> str:
    """`14 s`, `1 min 10 s`, `2 h 5 min`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def values(metrics: dict[str, float], keys: Sequence[str]) -> str:
    """`val_loss 0.4312, val_accuracy 0.8453`: the `keys` that `metrics` has, 4 significant digits."""
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in dict.fromkeys(keys) if k in metrics)


def job_title(name: str, number: Optional[int] = None, planned: Optional[int] = None) -> str:
    """`job 2/4 (l1 rate=1e-3)` for the job numbered `number` (from 0) of a sweep; `job (name)` alone."""
    if number is None:
        return f"job ({name})"
    return f"job {number + 1}/{max(planned or 0, number + 1)} ({name})"


def start_line(title: str, number: Optional[int], planned: Optional[int], sweep_seconds: Optional[float]) -> str:
    """The job's title, and from the second job on the time the sweep still needs at its pace so far."""
    if not number or not planned or sweep_seconds is None or number >= planned:
        return title
    return f"{title}, about {duration(sweep_seconds / number * (planned - number))} left in the sweep"


def result_line(title: str, metrics: dict[str, float], keys: Sequence[str], seconds: float) -> str:
    """`job 2/4 (l1 rate=1e-3) done in 14 s: val_data_loss 0.3521, test_accuracy 0.8712`."""
    shown = values(metrics, keys)
    return f"{title} done in {duration(seconds)}" + (f": {shown}" if shown else "")


class EpochProgress(keras.callbacks.Callback):
    """An epoch progress line on `stream` (stderr): rewritten in place on a terminal, else throttled.

    Args:
        epochs: epochs `fit` was asked for (training may stop earlier).
        keys: metrics shown, in this order, those Keras logged.
        every_s: off a terminal, the shortest time between two lines after the first epoch's.
        stream: where to write (default: stderr); `live` rewrites one line (default: when it is a terminal).
    """

    def __init__(self, epochs: int, keys: Sequence[str], every_s: float = 30.0, stream: Optional[TextIO] = None,
                 live: Optional[bool] = None):
        super().__init__()
        self.epochs = epochs
        self.keys = list(keys)
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()
        self.last_line: Optional[float] = None  # when the last line was written
        self.open_line = False  # a live line waits for its newline

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if not self.live and self.last_line is not None and now - self.last_line < self.every_s:
            return
        metrics = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        metrics.update({k: v for k, v in penalty(metrics).items() if v > 0})  # shown for penalized jobs only
        text = f"  epoch {epoch + 1}/{self.epochs}: {values(metrics, self.keys)} ({duration(now - self.started)})"
        self._write(f"\r\033[K{text}" if self.live else text + "\n")
        self.last_line, self.open_line = now, self.live

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """End a live line with its newline (also after an interrupted `fit`, which skips on_train_end)."""
        if getattr(self, "open_line", False):
            self.open_line = False
            self._write("\n")

    def _write(self, text: str) -> None:
        """As `say`: a closed terminal (SIGHUP follows) loses the line, it never fails the job or
        replaces the interrupt being handled."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:
            pass
