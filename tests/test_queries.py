"""The store's questions (`tracking.queries`) on a real SQLite store: the runs each one finds."""

import pytest

from sweeps.tracking import queries, tags


@pytest.fixture
def experiment(client) -> str:
    return client.create_experiment("queries")


def _run(client, experiment, status="FINISHED", **run_tags):
    run = client.create_run(experiment, tags=run_tags)
    if status != "RUNNING":
        queries.end_run(client, run.info.run_id, status, reason=None if status == "FINISHED" else "why")
    return run.info.run_id


def test_a_sweeps_jobs_by_status_and_its_parent_by_key(client, experiment):
    parent = _run(client, experiment, "RUNNING", **{tags.KIND: "sweep", tags.SWEEP_KEY: "abc123"})
    done = _run(client, experiment, **{tags.PARENT: parent, tags.KIND: "job"})
    running = _run(client, experiment, "RUNNING", **{tags.PARENT: parent, tags.KIND: "job"})
    _run(client, experiment, **{tags.PARENT: "another", tags.KIND: "job"})
    assert queries.running_sweep(client, experiment, "abc123").info.run_id == parent
    assert queries.running_sweep(client, experiment, "abc' or '1") is None  # not a key of ours: no filter at all
    assert [r.info.run_id for r in queries.jobs_of(client, experiment, parent, oldest_first=True)] == [done, running]
    assert [r.info.run_id for r in queries.jobs_of(client, experiment, parent, "RUNNING")] == [running]
    assert {r.info.run_id for r in queries.running_runs(client, experiment)} == {parent, running}


def test_a_value_with_a_quote_is_found_not_broken(client, experiment):
    """MLflow's filter grammar has no escapes: a study named `it's` is quoted with the other quote."""
    trial = _run(client, experiment, **{tags.STUDY: "it's", tags.TRIAL: "3"})
    assert queries.trial_run(client, experiment, "it's", 3).info.run_id == trial
    assert queries.trial_run(client, experiment, "it's", 4) is None
    with pytest.raises(ValueError, match="both quotes"):
        queries.trial_run(client, experiment, "it's \"x\"", 3)


def test_end_run_writes_the_reason_before_the_status(client, experiment):
    run_id = _run(client, experiment, "RUNNING")
    queries.end_run(client, run_id, "FAILED", "x" * 5000)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[tags.ERROR] == "x" * 4000
