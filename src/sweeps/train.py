"""The command line: train one configuration, or a Hydra multirun of them, tracked in MLflow.

    python -m sweeps.train                                   # one run, default config
    python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3       # 4 jobs under one parent run
    python -m sweeps.train -m reg=l1,l2 hydra/launcher=joblib hydra.launcher.n_jobs=2   # 2 at a time

`task(cfg)` is Hydra's task function around one job (`sweeps.training.job.train`); the sweep around the
jobs is run by our sweeper (`sweeps.sweeping.grid`, `sweeps.sweeping.parent`) in the launching process. In a
multirun, a job whose resolved config already FINISHED in the experiment is not retrained
(`resume=false` retrains everything); Ctrl-C or SIGTERM stops every job and ends the sweep KILLED.
Keras (and TensorFlow, when it is the backend) is imported only when a job runs (`--help` and bad input answer at once).

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
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf

from sweeps import guard, interrupts
from sweeps.backends import VERBOSE, import_keras, verbose
from sweeps.config import check_overrides, conf_dir, register_configs
from sweeps.tracking.redact import redact_text
from sweeps.tracking.patience import set_store_patience
from sweeps.errors import ConfigError, DataError, StoreUnavailable, SweepsError, TrackingError

log = logging.getLogger(__name__)


VERBOSE_FLAGS = ("-v", "--verbose")
NOISY_LOGGERS = "[mlflow.store.db.utils,alembic,jax._src.xla_bridge]"  # MLflow's database set-up lines, JAX's platform probe (hydra.verbose shows them)
RETRACING = "triggered tf.function retracing"


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


def own_gpu() -> None:
    """In a pool worker beside others on a machine with GPUs: one GPU of its own, chosen before
    TensorFlow looks for them (`sweeps.sweeping.devices`); nothing anywhere else."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sweeps.sweeping import devices
    from sweeps.training.context import absolute_dir, parallel_jobs

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hc = HydraConfig.get()
        devices.claim(absolute_dir(hc.sweep.dir, hc.runtime.cwd), parallel_jobs(hc.launcher))




def single_run_failed(cfg: DictConfig, err: Exception) -> NoReturn:
    """A single run (no sweep) that failed: our errors are one line and exit 2, the rest raise."""
    # a store that refuses the run at the start (read-only, unreachable) is bad input: the
    # TrackingError names the fix (in a sweep the store answered the sweep's own check, so it was lost)
    from sweeps.training.job import stop_if_not_the_jobs_own

    stop_if_not_the_jobs_own(cfg, err, store_lost_possible=not isinstance(err, TrackingError))
    if isinstance(err, (ConfigError, DataError)):  # bad input found with the data: no run was opened
        discard_run_folder()
    if isinstance(err, SweepsError):
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    raise err


def task(cfg: DictConfig) -> float:
    """Hydra's task function: a failing job is reported and, in a multirun, the sweep goes on."""
    from sweeps.tracking import run_name
    from sweeps.training.context import JobContext

    own_gpu()
    try:
        import_keras(cfg.backend)
        from sweeps.training import job as jobs
    except Exception as err:  # noqa: BLE001 - a broken TensorFlow/Keras install: said here, before any run
        return cannot_start(err, run_name)

    job = JobContext.from_hydra()
    with interrupts.handling():  # in a pool worker too: SIGTERM ends the job's run KILLED
        try:
            return jobs.train(cfg, job)
        except Exception as err:
            if job.sweep_dir is None:
                single_run_failed(cfg, err)
            jobs.failed_in_a_sweep(cfg, err, f"job {run_name(list(job.overrides))}")
            failure = err
    jobs.record_failure(cfg, job, failure)
    return math.nan


def task_pack(composed: list[DictConfig], jit_compile: bool = False) -> list[float]:
    """What `task` is to one job, for a pack of jobs trained as one model (`hydra/launcher=packed`):
    `composed` are the jobs' configs as the launcher composed them (with their `hydra` node);
    `jit_compile`: XLA for the packed model. A pack that fails as a whole is reported, each of
    its jobs left FAILED, and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig

    from sweeps.training.context import JobContext, task_config, thread_share
    from sweeps.tracking import run_name

    own_gpu()  # the launcher set Hydra's config to the pack's first job
    try:
        import_keras(task_config(composed[0]).backend)  # one per sweep (`check_overrides`), so one per pack
        from sweeps.packed import pack as packing
        from sweeps.training import job as jobs
        from sweeps.training.fitting import use_threads
    except Exception as err:  # noqa: BLE001 - as in `task`, one line per job
        failed = []
        for cfg in composed:
            HydraConfig.instance().set_config(cfg)
            failed.append(cannot_start(err, run_name))
        return failed
    cfgs = [task_config(c) for c in composed]
    threads = thread_share(cfgs[0], JobContext.of(composed[0].hydra))  # cores / packs at once
    # the members run at once: the first announces no time left yet, as the first wave of a pool
    contexts = [replace(JobContext.of(c.hydra), parallel=len(composed)) for c in composed]
    with interrupts.handling():
        if threads:
            use_threads(threads)
        try:
            return packing.train_pack(cfgs, contexts, jit_compile)
        except Exception as err:
            jobs.failed_in_a_sweep(cfgs[0], err, "pack of jobs " + ", ".join(run_name(list(job.overrides)) for job in contexts))
            failure = err
    for cfg, job in zip(cfgs, contexts):
        jobs.record_failure(cfg, job, failure)
    return [math.nan] * len(cfgs)


task.pack = task_pack  # how hydra/launcher=packed trains several of this task's jobs as one model


def discard_run_folder() -> None:
    """Remove the folder Hydra made for a single run that stopped on bad input, when it holds only
    what Hydra wrote there (`.hydra/`, the log), and the date folder above it once empty: nothing
    half-written is left behind. The launch folder itself is never removed."""
    import shutil

    from hydra.core.hydra_config import HydraConfig

    folder = Path(HydraConfig.get().runtime.output_dir).resolve()
    launch = Path.cwd().resolve()
    if folder == launch or launch.is_relative_to(folder) or not folder.is_dir():
        return
    if any(p.name != ".hydra" and p.suffix != ".log" for p in folder.iterdir()):
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == launch or not parent.is_relative_to(launch) or any(parent.iterdir()):
            break
        parent.rmdir()


def cannot_start(err: Exception, run_name) -> float:
    """A job that cannot even import its libraries: one line naming it and why (Hydra would keep the
    reason to itself), and the sweep goes on; a single run raises it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        if isinstance(err, SweepsError):  # bad input (backend=jax without JAX): one line, exit 2
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        raise err
    log.error("%s", redact_text(f"job {run_name(list(hc.overrides.task))} failed: {type(err).__name__}: {err}"))
    return math.nan


def hydra_args(argv: list[str]):
    """The command line as `@hydra.main` reads it (`.overrides`, `.multirun`, `.help`, `.cfg`, ...).

    Hydra has no public parser for its own flags (`-m`, `--cfg job`, `-cn NAME`, `--info`, ...), and
    a copy of theirs would drift; this is Hydra's `get_args_parser`, fenced here:
    tests/test_bad_input.py fails loudly should Hydra change it."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    return args


def check_command_line(argv: list[str]) -> bool:
    """Unknown keys and wrong types as one line and exit 2, before Hydra composes anything.

    Returns whether the command is a multirun.
    """
    args = hydra_args(argv)
    try:
        check_overrides(args.overrides)
        if not (args.help or args.hydra_help or args.info or args.cfg or args.shell_completion):
            check_composed(args.overrides, bool(args.multirun))
    except SweepsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return bool(args.multirun)


def check_composed(overrides: list[str], multirun: bool) -> None:
    """Compose the config as Hydra is about to (a multirun's sweep axes left out: the sweeper checks
    every job) and check what only the composed config shows, as one line, before Hydra writes a
    folder: Hydra's own errors (a syntax error, an unknown launcher, a wrong type under hydra.*),
    a single run's values, the launcher's job count, and an output folder that cannot be written."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import setup_globals
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sweeps.config import validate

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        raise ConfigError(unparsable(overrides)) from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    setup_globals()  # Hydra's resolvers (${now:...} in the output folders)
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose("config", fixed, return_hydra_config=True)
            folder_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
            folder = OmegaConf.select(cfg, folder_key)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_message(err)) from None
    if not multirun:
        validate(cfg)
        if cfg.repeat:  # a single run is one job: nothing to repeat it across
            raise ConfigError(f"repeat={cfg.repeat} repeats each configuration of a sweep: add -m "
                              f"(python -m sweeps.train -m ... repeat={cfg.repeat})")
        if cfg.checkpoint:  # only a job of a sweep is ever started again in its own run (SLURM's requeue)
            raise ConfigError("checkpoint=true saves each epoch of a sweep's jobs, so a job SLURM requeues "
                              "continues: add -m, or leave checkpoint out")
    n_jobs = cfg.hydra.launcher.get("n_jobs")
    if n_jobs == 0:
        raise ConfigError("hydra.launcher.n_jobs=0 is invalid: use an integer >= 1 (or -1: one job per core)")
    check_writable(folder_key, Path(folder))


def unparsable(overrides: list[str]) -> str:
    """The first override Hydra's grammar rejects, and why, as one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for item in overrides:
        try:
            OverridesParser.create().parse_overrides([item])
        except HydraException as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = next((line for line in lines[1:] if not line.startswith("See ")), lines[0])
            return (f"{redact_text(item)!r} cannot be parsed ({reason}); quote a value with spaces, brackets or "
                    "non-ASCII letters, e.g. 'model.name=\"my net\"'")
    return "the command line cannot be parsed; quote values with special characters"


def hydra_message(err: Exception) -> str:
    """Hydra's or OmegaConf's multi-line message as one line, with the options it lists."""
    raw = str(err).splitlines()
    lines = [line.strip() for line in raw if line.strip()]
    first = lines[0] if lines else type(err).__name__
    cause = str(err.__cause__ or "").strip().splitlines()
    if cause and cause[0] not in first:  # "Error merging override X" says why only in its cause
        first += f": {cause[0]}"
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    if key and key not in first:
        first = f"{key}: {first}"
    start = next((i + 1 for i, line in enumerate(raw) if line.strip().startswith("Available options")), None)
    if start is not None:  # the options Hydra lists, one indented line each
        options = []
        for line in raw[start:]:
            if not line.startswith(("\t", " ")) or not line.strip():
                break
            options.append(line.strip())
        first += f"; choose one of {', '.join(options)}"
    return redact_text(first)


def check_writable(key: str, folder: Path) -> None:
    """`hydra.run.dir` / `hydra.sweep.dir` must be a folder this process can create or write."""
    folder = folder if folder.is_absolute() else Path.cwd() / folder
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={folder}: cannot write there ({existing} is not a writable folder); "
                          f"give a folder you can write to, e.g. {key}=/tmp/sweeps")


def main() -> None:
    """`python -m sweeps.train [-m] [-v] [overrides...]`.

    Exit codes: 0 all well, 1 a job of a sweep failed, 2 bad input, 130/143/129 interrupted (SIGINT/SIGTERM/SIGHUP).
    """
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])
    if not verbose():  # before TensorFlow is imported (here, or in a worker: they inherit it)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    register_configs()
    multirun = check_command_line(sys.argv[1:])
    set_store_patience()
    guard.start()  # if this process dies without its clean-up (SIGKILL, an abort), its runs are closed at once
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
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone: the exit code still says it
            print(f"interrupted ({name}): {ended}", file=sys.stderr)
        sys.exit(128 + signal.Signals[name].value)


if __name__ == "__main__":
    main()
