"""`hydra/sweeper=optuna` for real (slow): `python -m sweeps.train -m` processes on digits, a real
SQLite tracking store and a real Optuna storage beside it; pruning from worker processes.
A search picked by an experiment file (conf/experiment/search_regularization.yaml) is run by
test_experiments.py, which checks its trials and their search space."""

from __future__ import annotations

import json
import signal
import time

import optuna
import psutil
import pytest
from mlflow.tracking import MlflowClient

from test_faults_cli import JOBS, _error_lines, _kill, _rows, _wait_for, interrupt_after_first_epoch, run_cli, start_cli

pytestmark = pytest.mark.slow

FAST = ["data=digits", "model.hidden=[16]", "tracking.log_model=false", "batch_size=64"]
OPTUNA = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.seed=0"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def _study(tmp_path) -> optuna.Study:
    (name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path}/optuna.db")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")


def _runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id], max_results=1000)
    return (client, sorted((r for r in runs if r.data.tags["sweeps.kind"] == "sweep"), key=lambda r: r.info.start_time),
            [r for r in runs if r.data.tags["sweeps.kind"] == "job"])


def test_a_tpe_study_is_one_sweep_and_a_rerun_continues_it(tmp_path):
    space = ["reg=choice(l1,l2)", "rate=tag(log, interval(1e-6, 1e-2))", "dropout=interval(0, 0.5)"]
    proc = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=none", "epochs=2",
                   *FAST, *space)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _study(tmp_path)
    assert len(study.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    client, (parent,), jobs = _runs(tmp_path)
    assert len(jobs) == 4 and all(j.data.tags["mlflow.parentRunId"] == parent.info.run_id for j in jobs)
    assert sorted(int(j.data.tags["sweeps.trial"]) for j in jobs) == list(range(4))
    best = study.best_trial
    assert parent.data.tags["sweeps.study"] == study.study_name
    assert parent.data.tags["sweeps.best.reg"] == best.params["reg"]
    assert parent.data.metrics["best_val_data_loss"] == pytest.approx(best.value)
    assert parent.data.metrics["trials_complete"] == 4
    by_trial = {int(j.data.tags["sweeps.trial"]): j for j in jobs}
    assert by_trial[best.number].data.metrics["val_data_loss"] == pytest.approx(best.value), "the value told is the run's"
    assert float(by_trial[best.number].data.params["rate"]) == pytest.approx(best.params["rate"])
    files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"optuna_history.png", "optuna_importances.png", "optuna_parallel.png", "optuna_slice.png",
            "report.md", "comparison.csv"} <= files
    report = open(client.download_artifacts(parent.info.run_id, "report.md")).read()
    assert f"## Search: study `{study.study_name}`" in report and "![Optimization history](optuna_history.png)" in report

    again = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=none", "epochs=2",
                    *FAST, *space)
    assert again.returncode == 0 and "4 trial(s) in all" in again.stderr, again.stderr[-2000:]
    more = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=5", "hydra.sweeper.pruner=none", "epochs=2",
                   *FAST, *space)
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(_study(tmp_path).trials) == 5, "the same command continues the same study up to n_trials"


def test_a_search_of_two_objectives_reports_the_front_of_its_trials(tmp_path):
    """NSGA-II on the validation data loss and the weights that matter: the front the study, the parent
    run and the report give is the non-dominated set of the trials' values, computed here directly."""
    proc = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler=nsga2", "epochs=2", *FAST,
                   "optimized_metric=[val_data_loss,active_weights]", "reg=choice(l1,l2)",
                   "rate=tag(log, interval(1e-4, 1e-1))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _study(tmp_path)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6
    front = sorted(t.number for t in done if not any(
        all(o <= v for o, v in zip(u.values, t.values)) and any(o < v for o, v in zip(u.values, t.values))
        for u in done))
    assert sorted(t.number for t in study.best_trials) == front
    client, (parent,), jobs = _runs(tmp_path)
    assert parent.data.tags["sweeps.front"] == ",".join(map(str, front))
    by_trial = {int(j.data.tags["sweeps.trial"]): j for j in jobs}
    for t in done:  # the values told are the runs'
        assert [by_trial[t.number].data.metrics[m] for m in ("val_data_loss", "active_weights")] == pytest.approx(t.values)
    rows = json.load(open(client.download_artifacts(parent.info.run_id, "comparison.json")))
    marked = sorted(int(by_trial_id[r["run_id"]]) for r in rows if r["pareto"]
                    for by_trial_id in [{j.info.run_id: j.data.tags["sweeps.trial"] for j in jobs}])
    assert marked == front, "the report marks the same front"
    report = open(client.download_artifacts(parent.info.run_id, "report.md")).read()
    section = report.split("## The trade-off: val_data_loss against active_weights")[1].split("\n## ")[0]
    assert section.count("\n| ") - 1 == len(front) and "![" in section, section
    again = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler=nsga2", "epochs=2", *FAST,
                    "optimized_metric=[val_data_loss,active_weights]", "reg=choice(l1,l2)",
                    "rate=tag(log, interval(1e-4, 1e-1))")
    assert again.returncode == 0 and "6 trial(s) in all" in again.stderr, again.stderr[-2000:]  # the same study


def test_trials_run_asynchronously_a_new_one_starts_before_the_slow_one_ends(tmp_path):
    """Two trials in flight on joblib's workers: one of 1 epoch, one of 30 (the random sampler's first
    two draws for seed 0). The third trial is asked and started when the short one ends, while the
    long one still trains: no batch barrier."""
    proc = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler=random",
                   "hydra.sweeper.pruner=none", *FAST, "reg=l2", "rate=1e-4", "epochs=choice(1,30)",
                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = sorted(_study(tmp_path).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert {trials[0].params["epochs"], trials[1].params["epochs"]} == {"1", "30"}, "one short, one long first trial"
    slow = max(trials[:2], key=lambda t: int(t.params["epochs"]))
    assert trials[2].datetime_start < slow.datetime_complete, "asked while the slow trial was in flight"
    _, (parent,), jobs = _runs(tmp_path)
    run = {int(j.data.tags["sweeps.trial"]): j.info for j in jobs}
    assert run[2].start_time < run[slow.number].end_time, "and trained while it trained"
    assert len({j.data.tags["sweeps.pid"] for j in jobs} - {parent.data.tags["sweeps.pid"]}) == 2, "in 2 workers"


def test_a_packed_search_trains_trials_as_packs_and_prunes_members_one_by_one(tmp_path):
    """hydra/launcher=packed: 8 trials asked 4 at a time, each 4 trained as one model. Hyperband
    prunes members of the second pack at different epochs: each pruned run ends FINISHED and marked
    at the epoch its trial last reported, its curves end there, and its pack-mates train on; every
    trial's state is its run's."""
    proc = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=8", "hydra.sweeper.sampler=random",
                   "hydra.sweeper.pruner=hyperband", "hydra/launcher=packed", "hydra.launcher.max_pack=4", "epochs=8",
                   *FAST, "reg=l1", "rate=tag(log, interval(1e-5, 1))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = {t.number: t for t in _study(tmp_path).trials}
    client, _, jobs = _runs(tmp_path)
    by_trial = {int(j.data.tags["sweeps.trial"]): j for j in jobs}
    assert sorted(by_trial) == list(range(8))
    packs = {frozenset([j.info.run_id, *json.loads(j.data.tags["sweeps.packed_with"])]) for j in jobs}
    assert sorted(len(p) for p in packs) == [4, 4], "two packs of four trials"
    pruned = {}
    for number, trial in trials.items():
        run = by_trial[number]
        assert run.info.status == "FINISHED"
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_data_loss")]
        if trial.state == optuna.trial.TrialState.PRUNED:
            pruned[number] = int(run.data.tags["sweeps.pruned_at_epoch"])
            assert pruned[number] == max(trial.intermediate_values) == max(epochs) < 8, (number, epochs)
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE and "sweeps.pruned_at_epoch" not in run.data.tags
            assert max(epochs) == 8 and trial.value == pytest.approx(run.data.metrics["val_data_loss"])
    assert len(set(pruned.values())) >= 2, f"members pruned at different epochs: {pruned}"
    for number in pruned:  # its pack went on with the rest
        mates = json.loads(by_trial[number].data.tags["sweeps.packed_with"])
        assert any(m not in {by_trial[p].info.run_id for p in pruned} for m in mates)


def test_median_pruning_stops_bad_trials_early_in_worker_processes(tmp_path):
    """A learning rate that reaches far too small makes some trials clearly worse; they are pruned
    by trials running in joblib workers, which reach their trial through the study's storage."""
    proc = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=2", "epochs=6", *FAST,
                   "optimizer=sgd", "optimizer.lr=tag(log, interval(1e-6, 0.5))",
                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _study(tmp_path)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "at least one trial was pruned"
    _, (parent,), jobs = _runs(tmp_path)
    stopped = [j for j in jobs if "sweeps.pruned_at_epoch" in j.data.tags]
    assert len(stopped) == len(pruned) and all(j.info.status == "FINISHED" for j in stopped)
    assert all(int(j.data.tags["sweeps.pruned_at_epoch"]) < 6 for j in stopped), "pruned before the last epoch"
    assert all(j.data.tags["sweeps.pid"] != parent.data.tags["sweeps.pid"] for j in jobs), "trials ran in workers"
    assert parent.data.metrics["trials_pruned"] == len(pruned) == parent.data.metrics["jobs_pruned"]
    assert f"({len(pruned)} stopped early by the pruner)" in proc.stderr


def test_a_diverging_trial_fails_in_optuna_and_mlflow_and_the_search_goes_on(tmp_path):
    proc = run_cli(tmp_path, *OPTUNA, "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=4", "epochs=2", *FAST,
                   "optimizer=sgd", "optimizer.lr=choice(0.01,1e12)", "reg=choice(l1,l2)")
    assert proc.returncode == 1, proc.stderr[-3000:]
    states = sorted(t.state.name for t in _study(tmp_path).trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    _, _, jobs = _runs(tmp_path)
    assert sorted(j.info.status for j in jobs) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert "2 job(s) finished, 2 failed" in proc.stderr


@pytest.mark.parametrize("parallel", [[], ["hydra.sweeper.n_jobs=2", *JOBLIB]], ids=["in-process", "in-flight"])
def test_ctrl_c_ends_the_open_trials_and_runs_and_a_rerun_does_not_count_them(tmp_path, parallel):
    """In this process, or two trials in flight on joblib's workers: Ctrl-C ends every open trial
    FAIL (not counted again) and every run KILLED; no worker is left."""
    args = [*OPTUNA, "hydra.sweeper.n_trials=2", "epochs=400", *FAST, "rate=tag(log, interval(1e-6, 1e-2))", *parallel]
    proc, stderr = interrupt_after_first_epoch(tmp_path, args, start_s=180)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    trials = _study(tmp_path).trials
    assert len(trials) == (2 if parallel else 1) and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert _study(tmp_path).user_attrs["sweeps_stale_trials"] == [t.number for t in trials], "a rerun does not count them"
    _, (parent,), jobs = _runs(tmp_path)
    assert jobs and {j.info.status for j in jobs} == {"KILLED"} and parent.info.status == "KILLED", (
        [j.data.tags.get("sweeps.error") for j in jobs], stderr[-3000:])
    workers = {int(j.data.tags["sweeps.pid"]) for j in jobs} - {int(parent.data.tags["sweeps.pid"])}
    assert len(workers) == (2 if parallel else 0) or (parallel and len(workers) == 1), workers
    deadline = time.monotonic() + 30
    while [p for p in workers if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in workers if _alive(p)], "no worker is left"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_worker_killed_under_a_trial_in_flight_fails_its_trials_and_the_search_keeps_its_result(tmp_path):
    """Trials in flight on joblib's workers (the random sampler's draws for seed 0: 400 epochs, 1,
    400): once the short one finished and the two long ones train, one worker is SIGKILLed. loky stops
    its whole pool: both long trials end FAIL, their runs FAILED with the reason, nothing RUNNING; the
    finished trial keeps its value; exit 1."""
    db = tmp_path / "mlflow.db"
    proc = start_cli(tmp_path, *OPTUNA, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
                     "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none", *FAST, "reg=l2", "rate=1e-4",
                     "epochs=choice(1,400)", *JOBLIB)
    try:
        def ready():
            finished = [r for r in _rows(db, JOBS) if r[1] == "FINISHED"]
            training = [r for r in _rows(db, JOBS) if r[1] == "RUNNING"
                        and _rows(db, "select 1 from metrics where run_uuid = ? and key = 'loss'", r[0])]
            return training if finished and len(training) == 2 else None
        training = _wait_for(ready, 180, proc, "one trial finished and two training")
        (pid,) = _rows(db, "select value from tags where run_uuid = ? and key = 'sweeps.pid'", training[0][0])[0]
        psutil.Process(int(pid)).kill()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _kill(proc)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    states = {t.number: t.state.name for t in _study(tmp_path).trials}
    assert states == {0: "FAIL", 1: "COMPLETE", 2: "FAIL"}, states
    _, (parent,), jobs = _runs(tmp_path)
    by_trial = {int(j.data.tags["sweeps.trial"]): j for j in jobs}
    assert by_trial[1].info.status == "FINISHED" and parent.info.status == "FAILED"
    for number in (0, 2):
        assert by_trial[number].info.status == "FAILED", by_trial[number].data.tags
        assert "died" in by_trial[number].data.tags["sweeps.error"], by_trial[number].data.tags
    assert "1 job(s) finished, 2 failed" in stderr, stderr[-3000:]
    assert "died (TerminatedWorkerError" in stdout and "the search goes on" in stdout, stdout[-3000:]  # Hydra's log


@pytest.mark.parametrize("override, message", [
    ("hydra.sweeper.sampler=cmaes", "error: hydra.sweeper.sampler=cmaes: no such sampler; choose one of tpe, random, gp, qmc, grid"),
    ("hydra.sweeper.pruner=early", "error: hydra.sweeper.pruner=early: no such pruner; choose one of median,"),
    ("hydra.sweeper.n_trials=0", "error: hydra.sweeper.n_trials=0 is invalid: use an integer >= 1"),
    ("rate=interval(1e-2, 1e-6)", "error: rate=interval(1e-2, 1e-6): the interval is empty or inverted"),
    ("rate=tag(log, interval(0, 1e-2))", "error: rate=tag(log, interval(0, 1e-2)): a log scale needs low > 0"),
    (("hydra.sweeper.pruner=median", "optimized_metric=[val_data_loss,active_weights]"),
     "error: hydra.sweeper.pruner=median: Optuna cannot prune a search of several objectives"),
], ids=["sampler", "pruner", "n_trials", "inverted", "log-zero", "pruned-front"])
def test_bad_search_input_is_one_line_exit_2_and_nothing_written(tmp_path, override, message):
    overrides = [override] if isinstance(override, str) else list(override)
    space = [] if overrides[0].startswith("rate=") else ["rate=tag(log, interval(1e-6, 1e-2))"]
    proc = run_cli(tmp_path, *OPTUNA, *FAST, *space, *overrides)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert line.startswith(message), line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


def test_the_same_study_started_twice_is_refused_in_one_line_and_the_first_goes_on(tmp_path):
    """Issue 20 §3: "one sweep per study at a time", enforced. Before: the second start closed the
    first's live trial as stale, and the first crashed with UpdateFinishedTrialError."""
    import socket

    db = tmp_path / "mlflow.db"
    common = [*OPTUNA, "hydra.sweeper.study_name=shared", *FAST, "rate=tag(log, interval(1e-6, 1e-2))"]
    first = start_cli(tmp_path, *common, "hydra.sweeper.n_trials=1", "epochs=400")
    try:
        run_id, _ = _wait_for(lambda: _rows(db, JOBS), 180, first, "the first trial's run")[0]
        _wait_for(lambda: _rows(db, "select 1 from metrics where run_uuid = ? and key = 'loss'", run_id),
                  120, first, "the first epoch")
        second = run_cli(tmp_path, *common, "hydra.sweeper.n_trials=1", "epochs=1", timeout=300)
        assert first.poll() is None, "the first sweep is still training"
        assert [t.state.name for t in _study(tmp_path).trials] == ["RUNNING"], "its trial was left alone"
        parents = _rows(db, "select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
                            "where t.key = 'sweeps.kind' and t.value = 'sweep'")
        first.send_signal(signal.SIGINT)
        _, first_err = first.communicate(timeout=120)
    finally:
        _kill(first)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    (line,) = _error_lines(second.stderr)
    assert line.startswith(f"error: study shared is in use by pid {first.pid} on host {socket.gethostname()}, since ")
    assert "one sweep per study at a time" in line
    assert len(parents) == 1, "the second start wrote nothing"
    assert first.returncode == 130 and "UpdateFinishedTrialError" not in first_err, first_err[-3000:]
    (trial,) = _study(tmp_path).trials
    assert trial.state == optuna.trial.TrialState.FAIL  # ended by the first sweep's own Ctrl-C clean-up
    again = run_cli(tmp_path, *common, "hydra.sweeper.n_trials=2", "epochs=1", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]  # the study is free once its sweep has ended


def test_a_trial_left_running_by_a_killed_process_is_closed_and_not_counted(tmp_path):
    db = tmp_path / "mlflow.db"
    common = [*OPTUNA, "hydra.sweeper.study_name=killed", *FAST, "rate=tag(log, interval(1e-6, 1e-2))"]
    proc = start_cli(tmp_path, *common, "hydra.sweeper.n_trials=1", "epochs=400")
    try:
        run_id, _ = _wait_for(lambda: _rows(db, JOBS), 180, proc, "the first trial's run")[0]
        _wait_for(lambda: _rows(db, "select 1 from metrics where run_uuid = ? and key = 'loss'", run_id),
                  120, proc, "the first epoch")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        _kill(proc)
    assert [t.state.name for t in _study(tmp_path).trials] == ["RUNNING"], "premise: SIGKILL left it RUNNING"
    again = run_cli(tmp_path, *common, "hydra.sweeper.n_trials=1", "epochs=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [t.state.name for t in _study(tmp_path).trials] == ["FAIL", "COMPLETE"], "closed, and not counted"
    _, _, jobs = _runs(tmp_path)
    killed = next(j for j in jobs if j.info.run_id == run_id)
    assert killed.info.status == "FAILED" and killed.data.tags["sweeps.stale"] == "true"
