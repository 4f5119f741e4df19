"""The command line: train one configuration, or a Hydra multirun of them, tracked in MLflow.

    python -m sweeps.train                                   # one run, default config
    python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3       # 4 jobs under one parent run
    python -m sweeps.train -m reg=l1,l2 hydra/launcher=joblib hydra.launcher.n_jobs=2   # 2 at a time

`task(cfg)` is Hydra's task function around one job (`sweeps.job.train`); the sweep around the
jobs is run by our sweeper (`sweeps.sweeper`, `sweeps.sweep`) in the launching process. In a
multirun, a job whose resolved config already FINISHED in the experiment is not retrained
(`resume=false` retrains everything); Ctrl-C or SIGTERM stops every job and ends the sweep KILLED.
TensorFlow is imported only when a job runs (`--help` and bad input answer at once).

Quiet by default: TensorFlow's C++ start-up banner and log lines (`cuInit ... UNKNOWN ERROR (303)` on a
machine without a GPU), MLflow's database set-up lines and TensorFlow's "triggered tf.function retracing"
warning (every job of a sweep builds a new model) stay off the terminal. `-v` / `--verbose` anywhere on
the command line, or SWEEPS_VERBOSE=1, shows them all.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import tempfile
from dataclasses import replace
from typing import Iterator

import hydra
from omegaconf import DictConfig

from sweeps import interrupts
from sweeps.config import check_overrides, conf_dir, register_configs
from sweeps.redact import redact_text
from sweeps.patience import set_store_patience
from sweeps.errors import StoreUnavailable, SweepsError

log = logging.getLogger(__name__)


VERBOSE = "SWEEPS_VERBOSE"  # "1": the start-up noise below is shown (`-v`); workers inherit it
VERBOSE_FLAGS = ("-v", "--verbose")
NOISY_LOGGERS = "[mlflow.store.db.utils,alembic]"  # MLflow's database set-up lines (hydra.verbose shows them)
RETRACING = "triggered tf.function retracing"


def verbose() -> bool:
    """Whether this process (and the workers it starts) shows TensorFlow's and MLflow's start-up noise."""
    return os.environ.get(VERBOSE) == "1"


def take_verbose_flag(argv: list[str]) -> list[str]:
    """`-v` / `--verbose` taken out of the command line (Hydra would read it as an override) into
    SWEEPS_VERBOSE=1; with it, Hydra's own `hydra.verbose` for MLflow's database loggers."""
    rest = [arg for arg in argv if arg not in VERBOSE_FLAGS]
    if len(rest) < len(argv):
        os.environ[VERBOSE] = "1"
    if verbose() and not any(arg.startswith("hydra.verbose=") for arg in rest):
        rest.append(f"hydra.verbose={NOISY_LOGGERS}")
    return rest


class QuietRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning (unless verbose): a sweep builds a
    new model per job, and that is what it counts (Hydra's logging config attaches this filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.verbose = verbose()

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or RETRACING not in record.getMessage()


@contextlib.contextmanager
def held_stderr() -> Iterator[None]:
    """File descriptor 2 (C++ libraries write there) into a temporary file inside; shown if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up banner (written before any log level applies) unless verbose."""
    with contextlib.nullcontext() if verbose() else held_stderr():
        import tensorflow  # noqa: F401


def task(cfg: DictConfig) -> float:
    """Hydra's task function: a failing job is reported and, in a multirun, the sweep goes on."""
    from sweeps.tracking import run_name

    try:
        import_tensorflow()
        from sweeps import job as jobs
    except Exception as err:  # noqa: BLE001 - a broken TensorFlow/Keras install: said here, before any run
        return cannot_start(err, run_name)

    job = jobs.JobContext.from_hydra()
    with interrupts.handling():  # in a pool worker too: SIGTERM ends the job's run KILLED
        try:
            return jobs.train(cfg, job)
        except Exception as err:
            lost = jobs.store_lost(cfg, err)
            if lost:  # every later job would fail the same way: stop (see StoreUnavailable)
                raise StoreUnavailable(lost) from None
            if job.sweep_dir is None:
                if isinstance(err, SweepsError):
                    print(f"error: {err}", file=sys.stderr)
                    raise SystemExit(2) from None
                raise
            if isinstance(err, SweepsError):
                log.error("job %s failed: %s", run_name(list(job.overrides)), err)
            else:
                log.exception("job %s failed", run_name(list(job.overrides)))
            failure = err
    jobs.record_failure(cfg, job, failure)
    return math.nan


def task_pack(composed: list[DictConfig], jit_compile: bool = False) -> list[float]:
    """What `task` is to one job, for a pack of jobs trained as one model (`hydra/launcher=packed`):
    `composed` are the jobs' configs as the launcher composed them (with their `hydra` node);
    `jit_compile`: XLA for the packed model. A pack that fails as a whole is reported, each of
    its jobs left FAILED, and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig

    from sweeps.launcher import task_config
    from sweeps.tracking import run_name

    try:
        import_tensorflow()
        from sweeps import job as jobs, packing
        from sweeps.fitting import use_threads
    except Exception as err:  # noqa: BLE001 - as in `task`, one line per job
        failed = []
        for cfg in composed:
            HydraConfig.instance().set_config(cfg)
            failed.append(cannot_start(err, run_name))
        return failed
    cfgs = [task_config(c) for c in composed]
    threads = jobs.thread_share(cfgs[0], jobs.JobContext.of(composed[0].hydra))  # cores / packs at once
    # the members run at once: the first announces no time left yet, as the first wave of a pool
    contexts = [replace(jobs.JobContext.of(c.hydra), parallel=len(composed)) for c in composed]
    with interrupts.handling():
        if threads:
            use_threads(threads)
        try:
            return packing.train_pack(cfgs, contexts, jit_compile)
        except Exception as err:
            lost = jobs.store_lost(cfgs[0], err)
            if lost:
                raise StoreUnavailable(lost) from None
            names = ", ".join(run_name(list(job.overrides)) for job in contexts)
            if isinstance(err, SweepsError):
                log.error("pack of jobs %s failed: %s", names, err)
            else:
                log.exception("pack of jobs %s failed", names)
            failure = err
    for cfg, job in zip(cfgs, contexts):
        jobs.record_failure(cfg, job, failure)
    return [math.nan] * len(cfgs)


task.pack = task_pack  # how hydra/launcher=packed trains several of this task's jobs as one model


def cannot_start(err: Exception, run_name) -> float:
    """A job that cannot even import its libraries: one line naming it and why (Hydra would keep the
    reason to itself), and the sweep goes on; a single run raises it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        raise err
    log.error("%s", redact_text(f"job {run_name(list(hc.overrides.task))} failed: {type(err).__name__}: {err}"))
    return math.nan


def check_command_line(argv: list[str]) -> bool:
    """Unknown keys and wrong types as one line and exit 2, before Hydra composes anything.

    Returns whether the command is a multirun.
    """
    from hydra._internal.utils import get_args_parser  # Hydra's own parser: flags are skipped right

    args, _ = get_args_parser().parse_known_args(argv)
    try:
        check_overrides(args.overrides)
    except SweepsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return bool(args.multirun)


def main() -> None:
    """`python -m sweeps.train [-m] [-v] [overrides...]`.

    Exit codes: 0 all well, 1 a job of a sweep failed, 2 bad input, 130/143 interrupted (SIGINT/SIGTERM).
    """
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])
    if not verbose():  # before TensorFlow is imported (here, or in a worker: they inherit it)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    register_configs()
    multirun = check_command_line(sys.argv[1:])
    set_store_patience()
    entry = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(task)
    try:
        with interrupts.handling():
            entry()
            interrupts.check()  # a signal swallowed on the way still ends the command as interrupted
    except StoreUnavailable as err:  # a single run (a sweep reports it in its sweeper)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        name = interrupts.received() or interrupts.name_of(err)
        ended = ("every running job and the sweep were ended KILLED; rerun the same command to resume "
                 "(finished jobs are not retrained)") if multirun else "the run was ended KILLED"
        print(f"interrupted ({name}): {ended}", file=sys.stderr)
        sys.exit(128 + signal.Signals[name].value)


if __name__ == "__main__":
    main()
