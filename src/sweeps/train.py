"""The command line: train one configuration, or a Hydra multirun of them, tracked in MLflow.

    python -m sweeps.train                                   # one run, default config
    python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3       # 4 jobs under one parent run
    python -m sweeps.train -m reg=l1,l2 hydra/launcher=joblib hydra.launcher.n_jobs=2   # 2 at a time

`task(cfg)` is Hydra's task function around one job (`sweeps.job.train`); the sweep around the
jobs is run by our sweeper (`sweeps.sweeper`, `sweeps.sweep`) in the launching process. In a
multirun, a job whose resolved config already FINISHED in the experiment is not retrained
(`resume=false` retrains everything); Ctrl-C or SIGTERM stops every job and ends the sweep KILLED.
TensorFlow is imported only when a job runs (`--help` and bad input answer at once).
"""

from __future__ import annotations

import logging
import math
import signal
import sys

import hydra
from omegaconf import DictConfig

from sweeps import interrupts
from sweeps.config import check_overrides, conf_dir, register_configs
from sweeps.tracking import set_store_patience
from sweeps.errors import StoreUnavailable, SweepsError

log = logging.getLogger(__name__)


def task(cfg: DictConfig) -> float:
    """Hydra's task function: a failing job is reported and, in a multirun, the sweep goes on."""
    from sweeps import job as jobs
    from sweeps.tracking import run_name

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
    """`python -m sweeps.train [-m] [overrides...]`.

    Exit codes: 0 all well, 1 a job of a sweep failed, 2 bad input, 130/143 interrupted (SIGINT/SIGTERM).
    """
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
