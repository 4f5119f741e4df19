"""Per-epoch checkpoints: a job interrupted by a real SIGTERM and started again continues in the same run,
with the curves an uninterrupted job of the same config has."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from sweeps import interrupts
from sweeps.tracking import tags
from sweeps.training import checkpoint
from sweeps.config import config_hash
from sweeps.training.context import JobContext
from sweeps.training.job import train
from sweeps.sweeping.parent import open_parent
from sweeps.tracking import connect

CONFIG = ("epochs=8", "optimizer=adam", "dropout=0.2", "early_stopping.enabled=true", "early_stopping.patience=20",
          "tracking.log_model=false")


def sweep_job(make_cfg, tmp_path, experiment: str, *extra: str):
    cfg = make_cfg(*CONFIG, f"tracking.experiment={experiment}", *extra)
    tracker = connect(cfg.tracking)
    key = experiment.replace("_", "")
    parent = open_parent(tracker, "test", str(tmp_path / experiment), [], 1, key=key)
    return cfg, tracker, parent, JobContext(CONFIG, str(tmp_path / experiment), 1, 0, key)


def sigterm_once_saved(path, parent: str, cfg, after_epoch: int) -> threading.Thread:
    """SIGTERM to this process once the checkpoint holds `after_epoch` epochs (as SLURM's requeue sends it)."""

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            saved = checkpoint.load(path, parent, config_hash(cfg))
            if saved is not None and saved.epoch >= after_epoch:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_a_job_interrupted_after_some_epochs_continues_in_its_run_with_the_uninterrupted_curves(make_cfg, tmp_path):
    cfg, tracker, parent, job = sweep_job(make_cfg, tmp_path, "alone", "checkpoint=false")
    train(cfg, job)  # the reference: the same config, never interrupted, no checkpoint
    (reference,) = tracker.client.search_runs([tracker.experiment_id], "tags.`sweeps.kind` = 'job'")
    assert not (tmp_path / "alone" / checkpoint.FOLDER).exists()

    cfg, tracker, parent, job = sweep_job(make_cfg, tmp_path, "requeued", "checkpoint=true")
    path = checkpoint.path_of(job.sweep_dir, job.number)
    thread = sigterm_once_saved(path, parent, cfg, 2)
    with interrupts.handling(), pytest.raises(KeyboardInterrupt):
        train(cfg, job)
    thread.join()
    (first,) = tracker.client.search_runs([tracker.experiment_id], "tags.`sweeps.kind` = 'job'")
    assert first.info.status == "KILLED" and path.exists()  # interrupted: the checkpoint stays for the next start
    saved = checkpoint.load(path, parent, config_hash(cfg))
    assert saved.run_id == first.info.run_id and 2 <= saved.epoch <= 8

    train(cfg, job)  # the job started again (as SLURM requeues it): same sweep, same job number
    (run,) = tracker.client.search_runs([tracker.experiment_id], "tags.`sweeps.kind` = 'job'")
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags[tags.CONTINUED_AT] == str(saved.epoch) and tags.ERROR not in run.data.tags
    assert run.data.tags[tags.PID] == str(os.getpid())
    assert not path.exists()  # finished: nothing left to continue from
    for key in ("loss", "val_loss", "val_accuracy", "hidden_0/kernel_l2"):
        got, want = history(tracker.client, run.info.run_id, key), history(tracker.client, reference.info.run_id, key)
        assert [s for s, _ in got] == list(range(1, 9)), key  # every epoch once: none lost, none twice
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-4, err_msg=key)
    for key in ("best_epoch", "best_val_loss", "test_accuracy", "final_train_loss"):
        assert run.data.metrics[key] == pytest.approx(reference.data.metrics[key], rel=1e-4), key
    assert run.data.metrics["checkpoint_s"] >= 0
    assert run.data.metrics["train_time_s"] > saved.state["train_time_s"] > 0  # both starts' training counted


def test_a_checkpoint_of_another_sweep_or_config_is_not_continued(make_cfg, tmp_path):
    cfg, tracker, parent, job = sweep_job(make_cfg, tmp_path, "other", "checkpoint=true")
    path = checkpoint.path_of(job.sweep_dir, job.number)
    path.parent.mkdir(parents=True)
    np.savez(path, state=np.asarray('{"run_id": "x", "parent": "another", "config_hash": "%s", "epoch": 3}'
                                    % config_hash(cfg)))
    assert checkpoint.load(path, parent, config_hash(cfg)) is None
    path.write_bytes(b"half a file")
    assert checkpoint.load(path, parent, config_hash(cfg)) is None  # unreadable: the job starts over
    train(cfg, job)
    (run,) = tracker.client.search_runs([tracker.experiment_id], "tags.`sweeps.kind` = 'job'")
    assert run.info.status == "FINISHED" and tags.CONTINUED_AT not in run.data.tags and not path.exists()
    assert checkpoint.wanted(None, None) is False and checkpoint.wanted(True, str(tmp_path))
