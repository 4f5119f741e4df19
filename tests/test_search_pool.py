"""The asynchronous search's pieces that need no training (fast): the pool's workers stopped once a
search ended, and successive halving pruning from the first epoch without a complete trial."""

from __future__ import annotations

import os
import time

import optuna
import psutil

from sweeps.packed.launcher import InFlight
from sweeps.sweeping.search import make_pruner


def test_closing_the_pool_stops_its_idle_workers_at_once():
    """At exit loky waits for every worker to tear itself down (seconds for a TensorFlow one): a
    search that ended stops them itself. Real loky workers, real processes."""
    from loky import get_reusable_executor

    pool = InFlight(None, None, None, workers=2)
    pool.executor = get_reusable_executor(max_workers=2)
    pids = {pool.executor.submit(_pid_after, 0.5).result() for _ in range(4)}
    assert pids and os.getpid() not in pids
    assert all(psutil.pid_exists(pid) for pid in pids), "the workers stay for the next trial until closed"
    pool.close()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
    assert pool.executor is None


def test_a_pool_with_units_in_flight_is_not_closed():
    from loky import get_reusable_executor

    pool = InFlight(None, None, None, workers=1)
    pool.executor = get_reusable_executor(max_workers=1)
    future = pool.executor.submit(_pid_after, 1.0)
    pool.pending[future] = [("reg=l1",)]
    pool.close()
    assert future.result() != os.getpid(), "the unit in flight ran to its end"
    pool.pending.clear()
    pool.close()


def test_successive_halving_prunes_from_the_first_epoch_before_any_trial_completed():
    """The first packs of a packed search end together: a pruner that waits for a complete trial to
    size its rungs (Optuna's `min_resource="auto"`) would prune none of them."""
    study = optuna.create_study(pruner=make_pruner("successive_halving"))
    values = [0.3, 0.9, 0.2, 0.8, 0.7]  # each trial's val_data_loss after epoch 1, as a pack's members report
    pruned = []
    for value in values:
        trial = study.ask()
        trial.report(value, step=1)
        pruned.append(trial.should_prune())
    assert not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert pruned[0] is False, "the first to reach the rung is promoted"
    assert pruned[1] is True and pruned[3] is True and pruned[4] is True, "worse than the rung's best: pruned at epoch 1"
    assert pruned[2] is False, "the best so far goes on"


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
