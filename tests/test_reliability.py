"""Faults injected for real, in this process, against a real temporary SQLite store.

Divergence, an exception mid-run, stale runs of dead processes, resume, reproducibility, secrets,
the UI's bind address and model loading. The command-line faults (signals, SIGKILL, concurrent
writers, read-only store, bad files) are in test_faults_cli.py.
"""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from sweeps import tracking
from sweeps.tracking import recovery
from sweeps.config import check_overrides, config_hash
from sweeps.errors import ConfigError, DivergedError
from sweeps.training.context import JobContext
from sweeps.training.job import train

FAST = ("model.hidden=[16]", "tracking.log_model=false")
TIMING = {"epoch_time_s", "samples_per_s", "train_time_s", "logging_overhead_pct"}


def _runs(client, experiment="sweeps"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _jobs(client):
    return [r for r in _runs(client) if r.data.tags.get("sweeps.kind") == "job"]


# ---------------------------------------------------------------- failure isolation


def test_divergence_stops_training_after_the_block_of_steps_it_happens_in(make_cfg, client):
    """The check runs once per dispatched block (steps_per_execution), not per step: no round trip per step."""
    with pytest.raises(DivergedError, match=r"at epoch 1, batch \d+"):
        train(make_cfg("optimizer=sgd", "optimizer.lr=1e12", "epochs=5", "steps_per_execution=4", *FAST),
              JobContext(tuple([])))
    (run,) = _runs(client)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["sweeps.error"]
    batch = int(run.data.tags["sweeps.error"].rsplit("batch ", 1)[1].split(";")[0])
    assert batch < 20 and (batch + 1) % 4 == 0, "stopped at the end of an early block of 4, not at the epoch's end"
    assert len(_history(client, run, "loss")) <= 1  # epochs 1..4 never ran
    assert "traceback.txt" in {f.path for f in client.list_artifacts(run.info.run_id)}


def test_many_steps_per_call_give_the_same_history(make_cfg, client):
    """steps_per_execution changes how often Python is asked, not the updates (dropout on)."""
    histories = []
    for spe in (1, 64):
        train(make_cfg("dropout=0.2", "reg=l2", "rate=1e-3", "optimizer=sgd", f"steps_per_execution={spe}",
                       "tracking.log_model=false", "epochs=3"), JobContext(tuple([f"steps_per_execution={spe}"])))
        run = max(_runs(client), key=lambda r: r.info.start_time)
        histories.append({k: _history(client, run, k) for k in ("loss", "val_loss", "accuracy", "hidden_0/kernel_l2")})
    for key in histories[0]:
        assert [v for _, v in histories[0][key]] == pytest.approx([v for _, v in histories[1][key]], rel=1e-6), key


def test_an_exception_mid_run_ends_it_failed_with_the_reason_and_traceback(make_cfg, client, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sweeps.training.job.summary_text", disk_full)  # fails after the metrics, inside the run
    with pytest.raises(OSError):
        train(make_cfg(*FAST), JobContext(tuple([])))
    (run,) = _runs(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["sweeps.error"] == "OSError: [Errno 28] No space left on device"
    text = open(client.download_artifacts(run.info.run_id, "traceback.txt")).read()
    assert "disk_full" in text and "No space left on device" in text
    assert "test_loss" in run.data.metrics, "what was logged before the failure is kept"


# ---------------------------------------------------------------- stale runs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_running_runs_of_dead_processes_on_this_host_are_closed_failed(make_cfg, client):
    tracker = tracking.connect(make_cfg().tracking)
    host = tracking.process_tags()["sweeps.host"]
    cases = {"dead": {"sweeps.pid": str(_dead_pid()), "sweeps.host": host},
             "alive": {"sweeps.pid": str(os.getpid()), "sweeps.host": host},
             "other host": {"sweeps.pid": str(_dead_pid()), "sweeps.host": host + "-elsewhere"},
             "untagged": {}}
    ids = {name: client.create_run(tracker.experiment_id, run_name=name, tags=tags).info.run_id
           for name, tags in cases.items()}
    assert recovery.close_stale_runs(tracker) == [ids["dead"]]
    dead = client.get_run(ids["dead"])
    assert dead.info.status == "FAILED" and dead.data.tags["sweeps.stale"] == "true"
    assert dead.data.tags["sweeps.error"].startswith(f"stale: its process (pid {cases['dead']['sweeps.pid']}")
    for name in ("alive", "other host", "untagged"):
        assert client.get_run(ids[name]).info.status == "RUNNING", name


def test_every_run_records_its_pid_and_host(make_cfg, client, a_sweep):
    a = a_sweep(["seed=0"])
    train(make_cfg("seed=0", *FAST), a.job(["seed=0"]))
    for run in _runs(client):  # the job and the sweep's parent
        assert run.data.tags["sweeps.pid"] == str(os.getpid())
        assert run.data.tags["sweeps.host"] == tracking.process_tags()["sweeps.host"]


# ---------------------------------------------------------------- resume


def _history(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def test_a_rerun_reuses_finished_jobs_and_links_the_earlier_sweep(make_cfg, client, a_sweep):
    # reg=l2: without a penalty the two rates are one config (trained once, linked; tested apart)
    first = a_sweep(["rate=1e-4"])
    trained = train(make_cfg("reg=l2", "rate=1e-4", *FAST), first.job(["rate=1e-4"]))
    first_parent = first.parent_run_id
    first.end()

    second = a_sweep(["rate=1e-4,1e-3"])
    reused = train(make_cfg("reg=l2", "rate=1e-4", *FAST), second.job(["rate=1e-4"]))
    train(make_cfg("reg=l2", "rate=1e-3", *FAST), second.job(["rate=1e-3"]))
    parent_id = second.parent_run_id
    second.end()

    assert reused == trained, "the task returns the finished run's metric"
    cfg_hash = config_hash(make_cfg("reg=l2", "rate=1e-4", *FAST))
    same = [r for r in _jobs(client) if r.data.tags["sweeps.config_hash"] == cfg_hash]
    original = [r for r in same if "sweeps.resumed_from" not in r.data.tags]
    stand_in = [r for r in same if "sweeps.resumed_from" in r.data.tags]
    assert len(original) == 1 and len(stand_in) == 1, "rate=1e-4 was trained once"
    (original,), (stand_in,) = original, stand_in
    assert stand_in.data.tags["sweeps.resumed_from"] == original.info.run_id
    assert stand_in.data.tags["mlflow.parentRunId"] == parent_id and stand_in.info.status == "FINISHED"
    assert stand_in.data.params == original.data.params and stand_in.data.metrics == original.data.metrics
    assert _history(client, stand_in, "val_loss") == _history(client, original, "val_loss")
    parent = client.get_run(parent_id)
    assert parent.data.tags["sweeps.resumes"] == first_parent
    assert parent.data.metrics["jobs_reused"] == 1 and parent.data.metrics["jobs_finished"] == 2
    table = open(client.download_artifacts(parent_id, "comparison.csv")).read().splitlines()
    assert len(table) == 3, "both jobs appear in the new sweep's comparison"


def test_resume_false_retrains(make_cfg, client, a_sweep):
    first = a_sweep(["seed=0"])
    train(make_cfg("seed=0", *FAST), first.job(["seed=0"]))
    first.end()
    second = a_sweep(["seed=0"])
    train(make_cfg("seed=0", "resume=false", *FAST), second.job(["seed=0", "resume=false"]))
    second.end()
    jobs = _jobs(client)
    assert len(jobs) == 2 and not any("sweeps.resumed_from" in r.data.tags for r in jobs)


def test_a_single_run_is_never_skipped(make_cfg, client):
    train(make_cfg(*FAST), JobContext(tuple([])))
    train(make_cfg(*FAST), JobContext(tuple([])))
    assert len(_jobs(client)) == 2


# ---------------------------------------------------------------- reproducibility


def test_same_config_and_seed_give_the_same_history(make_cfg, client):
    cfg = make_cfg("seed=7", "dropout=0.2", "epochs=3", *FAST)
    values = [train(cfg, JobContext(tuple([]))) for _ in range(2)]
    first, second = sorted(_runs(client), key=lambda r: r.info.start_time)
    keys = set(first.data.metrics) - TIMING
    assert {"loss", "val_loss", "test_accuracy", "hidden_0/kernel_l1"} <= keys
    for key in keys:
        assert _history(client, first, key) == _history(client, second, key), key
    assert values[0] == values[1]


# ---------------------------------------------------------------- security

SECRETS = {"SWEEPS_TEST_API_TOKEN": "tok-9f8e7d6c5b4a3921", "AWS_SECRET_ACCESS_KEY": "aws-5ecret-8c1d2e",
           "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-77a1b2", "DATABASE_URL": "postgresql://bob:db-pw-4e5f6a@db/x"}


def _store_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_environment_secrets_appear_nowhere_in_the_store(make_cfg, tmp_path, monkeypatch, client):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    train(make_cfg("rate=1e-4", "model.hidden=[16]"), JobContext(tuple(["rate=1e-4"])))  # with the saved model
    blob = _store_bytes(tmp_path)  # mlflow.db and artifacts/ (config.yaml, model files, ...)
    (run,) = _runs(client)
    assert run.info.run_id.encode() in blob and b"sweeps.config_hash" in blob, "the scan reads the real store"
    assert list(tmp_path.rglob("model.keras")), "the saved model is scanned too"
    for key, value in SECRETS.items():
        assert value.encode() not in blob, key
        assert b"pw-" not in blob


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:s3cr3t@127.0.0.1:5000", "http://***@127.0.0.1:5000"),
    ("postgresql://u:pw@db:5432/mlflow?sslmode=require&password=zz", "postgresql://***@db:5432/mlflow?sslmode=require&password=***"),
    ("https://host/api?token=abc&X-Amz-Credential=k", "https://host/api?token=***&X-Amz-Credential=***"),
    ("sqlite:////tmp/x/mlflow.db?timeout=30", "sqlite:////tmp/x/mlflow.db?timeout=30"),
    (None, None),
])
def test_store_uris_are_logged_without_credentials(uri, shown):
    assert tracking.redact_uri(uri) == shown
    assert tracking.redact_text(f'["tracking.uri={uri}", "rate=1"]') == f'["tracking.uri={shown}", "rate=1"]'


@pytest.mark.parametrize("text, shown", [
    ("tracking.uri=http\\://alice\\:hunter2@127.0.0.1\\:5000", "tracking.uri=http\\://***@127.0.0.1\\:5000"),
    (json.dumps(["tracking.uri=http\\://alice\\:hunter2@h\\:1"]), json.dumps(["tracking.uri=http\\://***@h\\:1"])),
    ("#0 : reg=l1 tracking.uri='sqlite:////x.db?password=hunter2'", "#0 : reg=l1 tracking.uri='sqlite:////x.db?password=***'"),
    ("tracking.uri=http://alice:p,w'x]@h:1/", "tracking.uri=http://***@h:1/"),
    ("tracking.uri=http\\://alice\\:p\\,w@h", "tracking.uri=http\\://***@h"),
], ids=["hydra-escaped", "escaped-in-json", "query", "separators-in-password", "escaped-comma"])
def test_escaped_uris_are_redacted(text, shown):
    """Hydra escapes `:` in a job's overrides; the redaction must not depend on a literal `://`."""
    assert tracking.redact_text(text) == shown and "hunter2" not in tracking.redact_text(text)


def test_the_logging_filter_redacts_every_record():
    import logging

    from sweeps.tracking.redact import RedactCredentials

    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, "\t#%d : %s", (0, "tracking.uri=http\\://a\\:pw@h"),
                               None)
    assert RedactCredentials().filter(record) and record.getMessage() == "\t#0 : tracking.uri=http\\://***@h"


def test_the_logging_filter_redacts_tracebacks_too():
    import logging

    from sweeps.tracking.redact import RedactCredentials

    try:
        raise RuntimeError("API request to http://alice:hunter2@h:5000/api failed")
    except RuntimeError:
        record = logging.LogRecord("sweeps", logging.ERROR, __file__, 1, "job failed", (), sys.exc_info())
    RedactCredentials().filter(record)
    text = logging.Formatter().format(record)
    assert "hunter2" not in text and "http://***@h:5000/api" in text


def test_a_run_stopped_by_the_pruner_is_never_reused_as_a_finished_result(make_cfg, client):
    tracker = tracking.connect(make_cfg().tracking)
    ids = {}
    for pruned in (False, True):  # the newest one is the pruned trial
        extra = {"sweeps.config_hash": "h1", **({"sweeps.pruned_at_epoch": "2"} if pruned else {})}
        with tracker.job_run("trial", extra_tags=extra) as run:
            ids[pruned] = run.info.run_id
    assert recovery.find_finished(tracker, "h1").info.run_id == ids[False]


def test_a_swallowed_interrupt_is_raised_again_at_the_next_epoch():
    """A real SIGINT lands in a batch hook that swallows it (as a library can); the epoch still ends it."""
    import signal

    from sweeps import interrupts
    from sweeps.training.callbacks import StopOnInterrupt

    class Swallower(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1 and self.epochs_seen == 0:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)  # the handler runs here and raises
                except KeyboardInterrupt:
                    pass  # ...and is swallowed

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_seen += 1

    swallower = Swallower()
    swallower.epochs_seen = 0
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((64, 4), dtype=np.float32)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background
    with interrupts.handling():
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            model.fit(x, x[:, :1], batch_size=8, epochs=5, verbose=0, callbacks=[swallower, StopOnInterrupt()])
        assert interrupts.received() == "SIGINT"
    assert swallower.epochs_seen == 1, "stopped at the end of the epoch the signal arrived in"
    assert signal.getsignal(signal.SIGINT) is before, "handlers restored"


def test_sighup_is_an_interrupt_unless_nohup_ignores_it():
    """Issue 20 §3: the terminal closed (SIGHUP) ends a job like SIGTERM; under `nohup` (SIGHUP
    ignored when the process starts) the sweep goes on, as the user asked."""
    import signal

    from sweeps import interrupts

    before = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with interrupts.handling():
            with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(5)
            assert interrupts.received() == "SIGHUP"
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL, "handler restored"
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does before starting the command
        with interrupts.handling():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)
            assert interrupts.received() is None
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_locked_store_is_waited_for_as_long_as_tracking_lock_wait_s_and_not_in_clean_up(make_cfg, tmp_path):
    """The bound of the wait on a locked SQLite store (the real 30 s lock: test_faults_cli.py): a real
    `database is locked` from a write transaction another connection holds, MLflow's 20 s wait
    shortened for the test by SQLite's own busy timeout on that error's connection."""
    import sqlite3

    tracker = tracking.connect(make_cfg("tracking.lock_wait_s=2").tracking)
    assert tracker.lock_wait_s == 2
    db = tmp_path / "locked.db"
    sqlite3.connect(db).execute("create table t (x)").connection.commit()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    tries = []

    def write():
        tries.append(time.monotonic())
        with sqlite3.connect(db, timeout=0.1, isolation_level=None) as con:
            con.execute("insert into t values (1)")

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        tracking.patiently(write, 2)
    assert len(tries) >= 3 and 1.9 <= tries[-1] - tries[0] <= 5, "tried again for the configured 2 s, no longer"
    tries.clear()
    with tracking.impatient(), pytest.raises(sqlite3.OperationalError):
        tracking.patiently(write, 60)
    assert len(tries) == 1, "clean-up after Ctrl-C does not wait"
    holder.execute("COMMIT")
    tracking.patiently(write, 2)


def test_a_signal_inside_a_store_call_waits_for_its_end_and_a_second_one_does_not():
    import signal

    from sweeps import interrupts

    done = []
    with interrupts.handling():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # the handler runs here and holds the signal
                done.append("the call went on")
        assert done == ["the call went on"]
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C: at once
                time.sleep(5)
                done.append("not reached")
    assert done == ["the call went on"]


def test_a_signal_inside_a_gc_callback_prints_no_traceback_and_still_interrupts(monkeypatch):
    """JAX (which TensorFlow imports) runs Python in a gc callback; a signal landing there cannot raise,
    and Python prints the KeyboardInterrupt as an ignored exception's traceback."""
    import gc
    import signal

    from sweeps import interrupts

    def callback(phase, info):
        if phase == "start" and not interrupts.received():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, inside the callback

    printed = []  # what Python would print as "Exception ignored in ...", with its traceback
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    with interrupts.handling():
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
        assert interrupts.received() == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            interrupts.check()  # the swallowed interrupt still ends the job at the next safe point
    assert printed == []
    assert sys.unraisablehook == printed.append, "the hook is restored"


def test_an_interrupt_that_surfaces_as_another_error_still_ends_the_run_killed(tmp_path):
    import signal

    from sweeps import interrupts

    tracker = tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "sweeps", None)
    with interrupts.handling():
        with pytest.raises(RuntimeError):
            with tracker.job_run("job") as run:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)  # the handler raises here
                except KeyboardInterrupt:
                    raise RuntimeError("a library's own error") from None
    ended = tracker.client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["sweeps.error"] == "interrupted (RuntimeError: a library's own error)"


def test_runs_interrupted_while_logging_can_still_be_closed_killed(tmp_path):
    """Real signals at random moments of a logging loop into a real SQLite store: every run is then
    closed KILLED. An interrupted SQLite write would leave the database locked (5 of 40 without
    `interrupts.deferred`)."""
    import random
    import signal

    from mlflow.entities import Metric

    from sweeps import interrupts

    tracker = tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "sweeps", None)
    rng = random.Random(0)
    with interrupts.handling():
        alarm = signal.signal(signal.SIGALRM, signal.getsignal(signal.SIGINT))
        try:
            for _ in range(30):
                run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.001, 0.05))
                with pytest.raises(KeyboardInterrupt):
                    for step in range(100_000):
                        tracker.client.log_batch(run_id, metrics=[Metric("loss", 0.5, 0, step)])
                tracker.client.set_terminated(run_id, "KILLED")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, alarm)
    assert {r.info.status for r in _runs(tracker.client)} == {"KILLED"}


def test_credentials_in_overrides_stay_out_of_run_names_and_tags(make_cfg):
    overrides = ["tracking.artifact_root=s3://key:s3cr3t@bucket/x"]
    assert "s3cr3t" not in tracking.run_name(overrides)
    tags = tracking.job_tags(make_cfg(), overrides)
    assert "s3cr3t" not in json.dumps(tags) and "***@bucket" in tags["sweeps.overrides"]


@pytest.mark.parametrize("target", ["ui", "server"])
def test_the_ui_and_server_bind_localhost_even_with_host_exported(target):
    """`HOST=0.0.0.0` is exported by some shells and containers: it must not open the UI to the network."""
    root = Path(__file__).resolve().parents[1]

    def dry_run(**env):
        return subprocess.run(["make", "-n", target], cwd=root, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env}).stdout

    assert "--host 127.0.0.1" in dry_run() and "--host 127.0.0.1" in dry_run(HOST="0.0.0.0")
    assert "--host 0.0.0.0" in dry_run(SWEEPS_HOST="0.0.0.0")


def test_models_are_native_keras_files_loaded_in_safe_mode(make_cfg, client, store):
    train(make_cfg("model.hidden=[16]"), JobContext(tuple([])))
    (run,) = _runs(client)
    files = {f.path for f in client.list_artifacts(run.info.run_id, "model/data")}
    assert files == {"model/data/model.keras", "model/data/keras_module.txt"}, files  # MLflow's Keras 3 flavor
    keras_file = client.download_artifacts(run.info.run_id, "model/data/model.keras")
    with zipfile.ZipFile(keras_file) as archive:  # Keras 3's native format: config + weights in a zip
        assert {"config.json", "model.weights.h5", "metadata.json"} <= set(archive.namelist())
    assert not [f for f in files if "pickle" in f or f.endswith((".pb", ".h5"))], "no pickle, SavedModel or HDF5"
    model = tracking.load_keras_model(f"runs:/{run.info.run_id}/model")
    assert isinstance(model, keras.Model) and model.predict(np.zeros((2, 64)), verbose=0).shape == (2, 10)


def test_a_model_logged_in_tensorflows_flavor_before_the_keras_one_still_loads(make_cfg):
    import mlflow
    import mlflow.tensorflow

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    tracker = tracking.connect(make_cfg().tracking)
    with tracker.job_run("logged before") as run:
        mlflow.set_tracking_uri(tracker.uri)
        logged = tracker.client.create_logged_model(tracker.experiment_id, name="model", source_run_id=run.info.run_id)
        mlflow.tensorflow.log_model(model, name="model", run_id=run.info.run_id, model_id=logged.model_id,
                                    pip_requirements=["tensorflow"])  # as sweeps logged models before
    loaded = tracking.load_keras_model(f"runs:/{run.info.run_id}/model")
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_safe_mode_refuses_a_model_that_carries_code(make_cfg):
    inputs = keras.Input((3,))
    evil = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))  # bytecode inside the file
    tracker = tracking.connect(make_cfg().tracking)
    with tracker.job_run("evil") as run:
        tracker.log_keras_model(run.info.run_id, evil, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="safe_mode"):
        tracking.load_keras_model(f"runs:/{run.info.run_id}/model")


# ---------------------------------------------------------------- command-line checks


@pytest.mark.parametrize("override, message", [
    ("rat=1e-3", "rat: no such key; did you mean rate?"),
    ("rate=abc", "rate=abc: Value 'abc' of type 'str' could not be converted to Float"),
    ("rate=1e-4,abc", "rate=abc: Value 'abc'"),
    ("reg.kind=l3", "reg.kind=l3: Invalid value 'l3', expected one of [none, l1, l2, l1_l2]"),
    ("reg=l3", "reg=l3: no such option; choose one of l1, l1_l2, l2, none"),
    ("reg=l1,l3", "reg=l3: no such option; choose one of l1, l1_l2, l2, none"),
    ("data=imagenet", "data=imagenet: no such option; choose one of california_housing, circles, csv, custom, digits,"),
    ("optimizer=adamax", "optimizer=adamax: no such option; did you mean adam? choose one of adam, adamw, nadam, rmsprop, sgd"),
    ("+experiment=doesnotexist", "experiment=doesnotexist: no such option; choose one of california_warmup,"),
    ("+rat=1e-3", "rat: no such key; + adds keys the schema lacks, and every key of sweeps is in it; did you mean rate?"),
    ("+foo=1", "foo: no such key; + adds keys the schema lacks"),
    ("~rate", "~rate: keys of sweeps cannot be removed; set a value instead"),
    ("model.name='a\n![k](/etc/hostname)\nb'", "model.name='a\\n![k](/etc/hostname)\\nb': a value holds a control"),
    ("seed=1\x1b[2J", "seed=1\\x1b[2J: a value holds a control character"),
    ("reg=l1,l2\u2028x", "reg=l1,l2\\u2028x: a value holds a control character"),
])
def test_bad_overrides_are_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_good_overrides_pass_the_check():
    check_overrides(["data=digits", "reg=l1,l2", "rate=1e-4,1e-3", "model.hidden=[16]",
                     "epochs=range(1,3)", "hydra.sweep.dir=x", "data.root=null",
                     "tracking.uri=${oc.env:X,null}", "+experiment=fashion_architectures",
                     "variant/fashion_architectures=64_32_relu_sgd,128_64_32_tanh_adam"])
