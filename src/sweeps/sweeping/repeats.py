"""`repeat=K`: each configuration of a grid sweep K times, its seed and its validation split moved together.

`seed` sets the initial weights, the batch order and the dropout masks; `data.val_seed` which
training examples are held out for validation. A sweep over `seed` alone keeps the split fixed, so
its intervals leave out the split's share of the variance, which Bouthillier et al. (2021,
"Accounting for variance in machine learning benchmarks") find large. With `repeat=3` the grid
sweeper makes 3 jobs of each configuration, each its own run: the k-th (k = 0, 1, 2) with
`seed=<seed + k>` and `data.val_seed=<data.val_seed + k>`, from the sweep's own `seed` and
`data.val_seed` (0 and 0 by default). So repeat 0 is the configuration as given (a run of it that
already FINISHED is reused), a rerun resumes, and `repeat=5` after `repeat=3` trains repeats 3
and 4 only (`repeat` is not part of the config hash).

Jobs that differ only in `REPEATED` keys are repeats of one configuration: the comparison table,
the report and `sweeps.group_seeds` group them (`table.grouping`), and say which of these sources
varied (`SOURCES`).
"""

from __future__ import annotations

from sweeps.errors import ConfigError

REPEATED = ("seed", "data.val_seed")  # what a repeat varies; never a configuration of its own
SOURCES = {"seed": "initial weights, batch order, dropout masks",
           "data.val_seed": "the validation split"}  # what each one draws


def key_of(item: str) -> str:
    """`+seed=3` -> `seed`: the key of a `key=value` override."""
    return item.split("=", 1)[0].lstrip("+~")


def expand(jobs: list[list[str]], swept: list[str], cfg) -> tuple[list[list[str]], list[str]]:
    """The grid's jobs (override lists) and swept keys, each job made `cfg.repeat` jobs (see the
    module's docstring); unchanged when `repeat` is 0, missing or below 2 (`config.validate` refuses
    1 and negative values with one line, naming the key)."""
    repeat = cfg.get("repeat") or 0
    if repeat < 2:
        return jobs, swept
    both = [key for key in swept if key in REPEATED]
    if both:
        raise ConfigError(f"repeat={repeat} with a {both[0]}= sweep: repeat draws seed and data.val_seed itself; "
                          f"drop the {both[0]}= values (seeds {cfg.seed}..{cfg.seed + repeat - 1} are used)")
    seed, val_seed = int(cfg.seed), int(cfg.data.val_seed)
    out = []
    for job in jobs:
        rest = [item for item in job if key_of(item) not in REPEATED]
        out += [[*rest, f"seed={seed + k}", f"data.val_seed={val_seed + k}"] for k in range(repeat)]
    return out, [*swept, *REPEATED]
