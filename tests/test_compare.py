"""`sweeps.compare` on real small sweeps on digits: rows and order, formats, report folder, --list, errors.

Three sweeps are trained once for the module, in this process, the way `python -m sweeps.train -m`
runs them (a parent run, jobs nested under it, the report logged to the parent when it ends):
  A: reg=l1,l2 rate=1e-4,1e-2                        4 jobs, all finish
  C: reg=l2 rate=1e-4,1e-2 seed=0,1                  4 jobs, shown as 2 rows (one per rate, over 2 seeds)
  B: optimizer=sgd optimizer.lr=0.01,1e12            2 jobs, the second diverges (FAILED); the latest sweep
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from sweeps import compare
from sweeps.config import conf_dir
from sweeps.errors import SweepsError
from conftest import InProcessSweep
from sweeps.training.job import record_failure as log_failure, train

COMMON = ["data=digits", "epochs=2", "model.hidden=[16]", "batch_size=64", "tracking.log_model=false"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_sweep(store: str, swept: list[str], grid: list[list[str]], common: list[str], folder: Path) -> str:
    """What `python -m sweeps.train -m` does, in this process; returns the parent run id."""
    active = InProcessSweep(store, folder / f"multirun-{len(grid)}-{swept[0]}", swept, command=" ".join([*swept, *common]))
    try:
        for job in grid:
            overrides = [*job, *common]
            with initialize_config_dir(str(conf_dir()), version_base="1.3"):
                cfg = compose("config", overrides=[f"tracking.uri={store}", *overrides])
            job = active.job(overrides)
            try:
                train(cfg, job)
            except SweepsError as err:
                log_failure(cfg, job, err)
        return active.parent_run_id
    finally:
        active.end()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{folder}/mlflow.db"
    grid = [[f"reg={r}", f"rate={x}"] for r in ("l1", "l2") for x in ("1e-4", "1e-2")]
    a = run_sweep(uri, ["reg=l1,l2", "rate=1e-4,1e-2"], grid, COMMON, folder)
    seeds = [[f"rate={x}", f"seed={s}"] for x in ("1e-4", "1e-2") for s in (0, 1)]
    c = run_sweep(uri, ["rate=1e-4,1e-2", "seed=0,1"], seeds, ["reg=l2", *COMMON], folder)
    b = run_sweep(uri, ["optimizer.lr=0.01,1e12"], [["optimizer.lr=0.01"], ["optimizer.lr=1e12"]],
                  ["optimizer=sgd", *COMMON], folder)
    return {"uri": uri, "folder": folder, "a": a, "b": b, "c": c, "client": MlflowClient(uri)}


def cli(store: dict, capsys, *args: str) -> tuple[int, str, str]:
    """`python -m sweeps.compare ARGS` against the module's store, in this process."""
    code = compare.main(["--tracking-uri", store["uri"], *args])
    out, err = capsys.readouterr()
    return code, out, err


def table(store, capsys, *args: str) -> list[dict]:
    code, out, err = cli(store, capsys, "--format", "json", *args)
    assert code == 0, err
    return json.loads(out)


def test_rows_are_the_jobs_best_val_data_loss_first_with_the_numbers_from_mlflow(store, capsys):
    rows = table(store, capsys, "--sweep", store["a"])
    client = store["client"]
    assert sorted((r["reg"], r["rate"]) for r in rows) == [("l1", "1e-2"), ("l1", "1e-4"), ("l2", "1e-2"), ("l2", "1e-4")]
    assert [r["final_val_data_loss"] for r in rows] == sorted(r["final_val_data_loss"] for r in rows)
    for row in rows:
        run = client.get_run(row["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == store["a"] and row["status"] == "FINISHED"
        metrics = run.data.metrics
        assert row["final_val_data_loss"] == metrics["val_data_loss"]
        assert row["best_val_data_loss"] == metrics["best_val_data_loss"] == min(
            m.value for m in client.get_metric_history(row["run_id"], "val_data_loss"))
        assert row["final_val_loss"] == metrics["val_loss"] and row["best_val_loss"] == metrics["best_val_loss"]
        assert row["test_data_loss"] == metrics["test_data_loss"] < metrics["test_loss"]
        assert row["final_val_accuracy"] == metrics["val_accuracy"]
        assert row["test_loss"] == metrics["test_loss"] and row["test_accuracy"] == metrics["test_accuracy"]
        assert row["generalization_gap"] == metrics["generalization_gap"]
        assert row["train_time_s"] == metrics["train_time_s"]
        assert row["n_params"] == int(run.data.params["n_params"]) == 64 * 16 + 16 + 16 * 10 + 10


def test_csv_parses_back_to_the_same_numbers_as_json(store, capsys):
    code, out, _ = cli(store, capsys, "--sweep", store["a"], "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0].startswith("status,reg,rate,final_val_data_loss,best_val_data_loss,final_val_loss,")
    for parsed, row in zip(rows, table(store, capsys, "--sweep", store["a"])):
        assert parsed["run_id"] == row["run_id"]
        for key in ("final_val_data_loss", "best_val_accuracy", "test_accuracy", "generalization_gap", "train_time_s"):
            assert float(parsed[key]) == row[key], key
        assert int(parsed["n_params"]) == row["n_params"]


def test_markdown_format_is_a_table_without_run_ids(store, capsys):
    code, out, _ = cli(store, capsys, "--sweep", store["a"], "--format", "md")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 + 4 and lines[0].startswith("| status | reg | rate | final_val_data_loss |")
    assert store["a"] not in out


def test_accuracy_metric_ranks_highest_first(store, capsys):
    rows = table(store, capsys, "--sweep", store["a"], "--metric", "val_accuracy")
    assert list(rows[0])[:5] == ["status", "reg", "rate", "final_val_accuracy", "best_val_accuracy"]
    values = [r["final_val_accuracy"] for r in rows]
    assert values == sorted(values, reverse=True)


def test_group_by_averages_the_other_swept_keys(store, capsys):
    jobs = table(store, capsys, "--sweep", store["a"])
    groups = table(store, capsys, "--sweep", store["a"], "--group-by", "reg")
    assert sorted(g["reg"] for g in groups) == ["l1", "l2"] and all(g["n"] == 2 for g in groups)
    for group in groups:
        members = [j["final_val_data_loss"] for j in jobs if j["reg"] == group["reg"]]
        assert group["final_val_data_loss_mean"] == pytest.approx(sum(members) / 2)
        assert group["final_val_data_loss_ci95"] > 0 and "rate" not in group  # averaged over rate
    assert groups[0]["final_val_data_loss_mean"] <= groups[1]["final_val_data_loss_mean"]


def test_seeds_are_grouped_one_row_per_configuration(store, capsys):
    """seed=0,1 swept: one row per rate with n, mean and 95% CI of every column, tied_with_best (Welch)."""
    jobs = table(store, capsys, "--sweep", store["c"], "--metric", "val_loss", "--no-group")
    rows = table(store, capsys, "--sweep", store["c"], "--metric", "val_loss")
    assert len(jobs) == 4 and sorted(j["seed"] for j in jobs) == ["0", "0", "1", "1"]
    assert sorted(r["rate"] for r in rows) == ["1e-2", "1e-4"] and all("seed" not in r for r in rows)
    assert [r["final_val_loss_mean"] for r in rows] == sorted(r["final_val_loss_mean"] for r in rows)
    measured = [c for c, v in jobs[0].items() if isinstance(v, float)]
    assert {"final_val_loss", "best_val_loss", "test_accuracy", "generalization_gap"} <= set(measured)
    for row in rows:
        members = [j for j in jobs if j["rate"] == row["rate"]]
        assert row["status"] == "2 FINISHED" and row["n"] == 2 and row["n_params"] == members[0]["n_params"]
        assert set(row["run_ids"].split(",")) == {j["run_id"] for j in members}
        for column in measured:
            a, b = (m[column] for m in members)
            assert row[f"{column}_mean"] == pytest.approx((a + b) / 2), column
            assert row[f"{column}_ci95"] == pytest.approx(12.706 * abs(a - b) / 2, rel=1e-3), column  # t(0.975, 1) s/sqrt(2)
    best, other = ([j["final_val_loss"] for j in jobs if j["rate"] == r["rate"]] for r in rows)
    from scipy import stats

    p = stats.ttest_ind(best, other, equal_var=False).pvalue  # Welch's test, computed here on the rows' jobs
    assert rows[0]["tied_with_best"] is True and rows[1]["tied_with_best"] is bool(p >= 0.05)


def test_stats_bootstrap_adds_bootstrap_intervals_and_the_chance_of_beating_the_best(store, capsys):
    """--stats bootstrap: the default rows plus the ranking column's bootstrap interval and P(beats best)."""
    from sweeps.reporting import stats

    plain = table(store, capsys, "--sweep", store["c"])
    rows = table(store, capsys, "--sweep", store["c"], "--stats", "bootstrap")
    jobs = table(store, capsys, "--sweep", store["c"], "--no-group")
    assert [{k: r[k] for k in p} for r, p in zip(rows, plain)] == plain  # nothing of the default changes
    best, other = ([j["final_val_data_loss"] for j in jobs if j["rate"] == r["rate"]] for r in rows)
    assert (rows[1]["final_val_data_loss_boot95_low"], rows[1]["final_val_data_loss_boot95_high"]) == \
        pytest.approx(stats.bootstrap_ci(other))
    assert rows[1]["p_beats_best"] == stats.probability_of_improvement(other, best, higher_is_better=False)
    assert rows[0]["p_beats_best"] is None and rows[1]["p_vs_best_holm"] == pytest.approx(stats.welch_p(best, other))
    code, out, _ = cli(store, capsys, "--sweep", store["c"], "--stats", "bootstrap", "--out", str(store["folder"] / "rb"))
    assert code == 0 and all(len(line) <= 120 for line in table_lines(out)) and "p_beats" in out and "_boot" in out
    code, out, err = cli(store, capsys, "--sweep", store["a"], "--stats", "bootstrap")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --stats bootstrap: sweep {store['a']} has one job per configuration; group jobs")


def test_the_grouped_text_table_fits_120_columns_and_wide_shows_every_column(store, capsys):
    out_c = ("--out", str(store["folder"] / "report-c"))
    code, out, _ = cli(store, capsys, "--sweep", store["c"], *out_c)
    lines = table_lines(out)
    assert code == 0 and all(len(line) <= 120 for line in lines), max(lines, key=len)
    assert " ± " in out and "  tied" in out and "One row per rate over seed: n jobs, mean ± 95% confidence" in out
    assert "Welch's t-test" in out and "--no-group: one row per job" in out
    _, wide, _ = cli(store, capsys, "--sweep", store["c"], "--wide", "--format", "md")
    header = wide.splitlines()[0]
    assert all(f" {c} |" in header for c in ("tied_with_best", "best_val_loss", "train_time_s", "n_params"))
    _, text, _ = cli(store, capsys, "--sweep", store["c"], "--wide", *out_c)
    assert max(len(line) for line in table_lines(text)) > 120 and "best_val_loss" in text
    n_params = table(store, capsys, "--sweep", store["c"])[0]["n_params"]
    assert isinstance(n_params, int) and re.search(rf"  {n_params}\n", text)  # an integer, also when grouped
    code, out, _ = cli(store, capsys, "--sweep", store["a"], "--out", str(store["folder"] / "report-a"))
    assert code == 0 and all(len(line) <= 120 for line in table_lines(out)) and "left out to fit: " in out


def table_lines(out: str) -> list[str]:
    """The terminal output below the sweep's id and command, without the report folder's path."""
    return [line for line in out.splitlines()[2:] if not line.startswith("report written to")]


def test_the_report_of_a_seed_sweep_says_how_rows_were_grouped(store):
    client = store["client"]
    files = {f.path for f in client.list_artifacts(store["c"])}
    assert any(f.endswith("_vs_rate.png") for f in files)  # means with 95% error bars
    report = Path(client.download_artifacts(store["c"], "report.md")).read_text()
    assert "## Configurations, best mean " in report and "One row per rate over seed: n jobs" in report
    assert "Welch's t-test (two-sided, 5%)" in report and f"--sweep {store['c']} --no-group" in report
    assert re.search(r"- best \w+: [\d.]+ ± [\d.e-]+ \(rate=1e-[24], n=2\)", report)
    assert "## Every job" in report and report.count("| FINISHED | 1e-") == 4 and report.count("| 2 FINISHED | 1e-") == 2
    rows = json.loads(Path(client.download_artifacts(store["c"], "comparison.json")).read_text())
    assert [r["n"] for r in rows] == [2, 2] and rows[0]["tied_with_best"] is True


def test_a_report_folder_is_cleared_of_our_earlier_files_only(store, capsys, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "photo.png").write_bytes(b"mine")  # no report was written here: nothing is ours
    assert cli(store, capsys, "--sweep", store["a"], "--out", str(folder))[0] == 0
    assert (folder / "photo.png").read_bytes() == b"mine"
    assert (folder / "sparsity_vs_rate.png").is_file()  # A varies rate
    for name in ("old_vs_rate.png", "notes.txt", "data.csv"):
        (folder / name).write_text("x")  # the user's, next to the report
    assert cli(store, capsys, "--sweep", store["b"], "--out", str(folder))[0] == 0
    left = {p.name for p in folder.iterdir()}
    assert {"notes.txt", "data.csv", "old_vs_rate.png", "photo.png", "report.md", "comparison.csv"} <= left
    assert "sparsity_vs_rate.png" not in left, "A's plot that B does not draw is gone"  # B has no rate plot
    assert (folder / "photo.png").read_bytes() == b"mine" and (folder / "old_vs_rate.png").read_text() == "x"


def test_objectives_mark_the_front_of_a_grid_sweep(store, capsys):
    """`--objectives` on a sweep run with one metric: `pareto` is true on exactly the non-dominated jobs."""
    rows = table(store, capsys, "--sweep", store["a"], "--objectives", "val_data_loss,hidden_0/rel_sparsity")
    points = {r["run_id"]: (r["final_val_data_loss"], -r["hidden_0/rel_sparsity"]) for r in rows}  # as costs
    front = {a for a, p in points.items() if not any(all(o <= v for o, v in zip(q, p)) and q != p for q in points.values())}
    assert {r["run_id"] for r in rows if r["pareto"]} == front and all(r["pareto"] is not None for r in rows)
    groups = table(store, capsys, "--sweep", store["c"], "--objectives", "val_data_loss,hidden_0/rel_sparsity")
    means = [(r["final_val_data_loss_mean"], -r["hidden_0/rel_sparsity_mean"]) for r in groups]  # seeds grouped
    assert [r["pareto"] for r in groups] == [not any(all(o <= v for o, v in zip(q, p)) and q != p for q in means)
                                             for p in means]
    code, _, err = cli(store, capsys, "--sweep", store["a"], "--objectives", "val_data_loss")
    assert code == 2 and "--objectives val_data_loss: a front needs two or more different metrics" in err


def test_no_group_and_group_by_together_are_refused(store, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's own check: usage, then the error line
        compare.main(["--tracking-uri", store["uri"], "--no-group", "--group-by", "reg"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == "" and "error: argument --group-by: not allowed with argument --no-group" in err


def test_report_folder_has_the_report_the_table_and_every_plot(store, capsys, tmp_path):
    code, out, _ = cli(store, capsys, "--sweep", store["a"], "--out", str(tmp_path / "r"))
    folder = tmp_path / "r"
    assert code == 0 and f"report written to {folder}/" in out
    assert "reg  rate" in out and "  val_data_loss" in out  # the table, for reading (short headers)
    plots = ["val_data_loss.png", "penalty.png", "val_accuracy.png", "train_vs_val.png", "val_data_loss_vs_rate.png",
             "sparsity_vs_rate.png", "expected_best.png", "importance.png", "front.png"]
    for name in plots:
        assert png_size(folder / name) > (300, 200), name
    report = (folder / "report.md").read_text()
    assert all(f"]({name})" in report for name in plots) and "Not drawn" not in report
    knobs = report.split("## Which knob mattered")[1]  # fANOVA over the 4 jobs: both swept keys, shares summing to 1
    shares = {key: float(share) for key, share in re.findall(r"^\| `([\w.]+)` \| ([0-9.]+) \|$", knobs, re.M)}
    assert set(shares) == {"reg", "rate"} and sum(shares.values()) == pytest.approx(1.0, abs=2e-3), shares
    trade_off = report.split("## The trade-off: val_data_loss against sparsity")[1]  # the jobs no job beats on both
    listed = re.findall(r"^\| \d+ \| `([^`]+)` \| [0-9.]+ \| [0-9.]+ \|$", trade_off, re.M)
    from sweeps.reporting import runs as sweep_runs
    from sweeps.reporting.report import labels, mean_sparsity

    sweep = sweep_runs.sweep_of(MlflowClient(store["uri"]), store["a"])
    points = {labels(sweep)[j.id]: (j.metrics["val_data_loss"], mean_sparsity(j)) for j in sweep.jobs}
    dominated = {a for a, (x, y) in points.items() for (u, v) in points.values() if u <= x and v >= y and (u, v) != (x, y)}
    assert listed and set(listed) == set(points) - dominated, (listed, points)
    page = (folder / "report.html").read_text()  # self-contained: every plot embedded, nothing fetched
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(plots) and all(base64.b64decode(i)[:8] == PNG_SIGNATURE for i in images)
    assert 'src="http' not in page and "<table>" in page and page.count("<tr><td>FINISHED</td>") == 4
    assert f"`python -m sweeps.compare --sweep {store['a']}`" in report and "- jobs: 4 (4 FINISHED)" in report
    assert report.count("| FINISHED | l") == 4 and "- ranked by `val_data_loss`, lower is better (the data term" in report
    _, csv_out, _ = cli(store, capsys, "--sweep", store["a"], "--format", "csv")
    assert (folder / "comparison.csv").read_text() == csv_out
    assert len(json.loads((folder / "comparison.json").read_text())) == 4


def test_the_sweep_logged_the_same_report_to_its_parent_run(store):
    client = store["client"]
    files = {f.path for f in client.list_artifacts(store["a"])}
    assert {"report.md", "report.html", "comparison.csv", "comparison.json", "val_data_loss.png", "train_vs_val.png",
            "val_data_loss_vs_rate.png", "sparsity_vs_rate.png"} <= files
    assert png_size(Path(client.download_artifacts(store["a"], "val_data_loss_vs_rate.png")))[0] > 300
    rows = list(csv.DictReader(open(client.download_artifacts(store["a"], "comparison.csv"))))
    assert len(rows) == 4 and rows[0]["reg"] in ("l1", "l2")


def test_a_sweep_with_a_failed_job_still_reports(store, capsys, tmp_path):
    code, out, err = cli(store, capsys, "--format", "json", "--out", str(tmp_path))  # latest sweep: B
    rows = json.loads(out)
    assert code == 0 and [r["status"] for r in rows] == ["FINISHED", "FAILED"]
    assert rows[0]["optimizer.lr"] == "0.01" and rows[1]["optimizer.lr"] == "1e12"
    assert math.isfinite(rows[0]["final_val_data_loss"]) and rows[1]["test_loss"] is None
    assert f"report written to {tmp_path}/" in err  # stdout is only the table with --format
    report = (tmp_path / "report.md").read_text()
    assert "## Jobs that did not finish" in report and "`optimizer.lr=1e12`: FAILED: DivergedError" in report
    assert "Final validation data loss against rate: the sweep does not vary `rate`" in report
    assert png_size(tmp_path / "val_data_loss.png")[0] > 300 and not (tmp_path / "val_data_loss_vs_rate.png").exists()
    parent = store["client"].get_run(store["b"])
    assert parent.info.status == "FAILED" and "report.md" in {f.path for f in store["client"].list_artifacts(store["b"])}


def test_list_shows_each_sweep_newest_first(store, capsys):
    code, out, _ = cli(store, capsys, "--list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["sweep", "started", "status", "jobs", "statuses", "command"]
    assert lines[1].startswith(store["b"]) and lines[2].startswith(store["c"]) and lines[3].startswith(store["a"])
    assert len(lines) == 4
    b, _, a = (re.split(r"\s{2,}", line) for line in lines[1:])  # columns are two or more spaces apart
    assert b[2:5] == ["FAILED", "2", "1 FAILED, 1 FINISHED"] and b[5].startswith("optimizer.lr=0.01,1e12 optimizer=sgd")
    assert a[2:5] == ["FINISHED", "4", "4 FINISHED"] and a[5].startswith("reg=l1,l2 rate=1e-4,1e-2 data=digits")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", a[1])
    listed = table(store, capsys, "--list")
    assert [(s["sweep"], s["jobs"]) for s in listed] == [(store["b"], 2), (store["c"], 4), (store["a"], 4)]


def test_a_unique_prefix_picks_the_sweep(store, capsys):
    assert {r["run_id"] for r in table(store, capsys, "--sweep", store["a"][:8])} == \
        {r["run_id"] for r in table(store, capsys, "--sweep", store["a"])}


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "error: no experiment named 'nope' in the store (experiments: "),
    (["--sweep", "feedbeef"], "error: --sweep feedbeef is not a sweep in experiment 'sweeps'; "
                              "`python -m sweeps.compare --list` shows the sweeps"),
    (["--metric", "val_los"], "error: --metric val_los: no job of sweep "),
    (["--group-by", "regg"], "error: --group-by regg: not a swept key or param of sweep"),
    (["--out", "/proc/x"], "error: --out /proc/x: cannot write there ("),
])
def test_mistakes_are_one_line_and_exit_2(store, capsys, args, message):
    code, out, err = cli(store, capsys, *args)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1


def test_unknown_metric_lists_the_available_ones(store, capsys):
    _, _, err = cli(store, capsys, "--metric", "val_los")
    assert "available: " in err and "val_loss, " in err and "test_accuracy" in err and "hidden_0/" not in err


def test_no_sweeps_and_no_store_are_one_line_errors(store, capsys, tmp_path):
    MlflowClient(store["uri"]).create_experiment("empty")
    code, _, err = cli(store, capsys, "--experiment", "empty")
    assert code == 2 and err.startswith("error: no sweeps in experiment 'empty': run one with python -m sweeps.train")
    code = compare.main(["--tracking-uri", f"sqlite:///{tmp_path}/none.db"])
    assert code == 2 and capsys.readouterr().err.startswith(f"error: no tracking store at {tmp_path}/none.db")
    assert not (tmp_path / "none.db").exists()


def test_out_naming_a_file_is_refused_and_the_file_kept(store, capsys, tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    code, _, err = cli(store, capsys, "--out", str(existing))
    assert code == 2 and err == f"error: --out {existing}: that is a file; give a folder (it is created if missing)\n"
    assert existing.read_text() == "mine"


@pytest.mark.parametrize("content", [b"", b"\x00" * 100 + bytes(range(256)) * 50], ids=["empty", "not-a-database"])
def test_a_store_file_that_is_empty_or_not_a_database_is_one_line_and_left_untouched(capsys, tmp_path, content):
    """A read-only command must not write a schema into the file (MLflow would: 954 KB)."""
    db = tmp_path / "mlflow.db"
    db.write_bytes(content)
    code = compare.main(["--tracking-uri", f"sqlite:///{db}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(db) in err, err
    assert db.read_bytes() == content


def test_runs_from_an_earlier_version_still_compare(store, capsys):
    """Without the `sweeps.swept` tag (foundation) or any sweeps tag (plain nested runs): names and params."""
    client = store["client"]
    experiment = client.create_experiment("earlier")
    for tags in ({"sweeps.kind": "sweep"}, {}):
        parent = client.create_run(experiment, run_name="sweep", tags=tags).info.run_id
        for reg, loss in (("l1", 0.5), ("l2", 0.4)):
            job_tags = {"mlflow.parentRunId": parent}
            if tags:
                job_tags["sweeps.overrides"] = json.dumps([f"reg={reg}", "data=digits"])
            run = client.create_run(experiment, run_name=f"reg={reg},model.hidden=[16,8]", tags=job_tags).info.run_id
            client.log_param(run, "reg.kind", reg)
            client.log_param(run, "n_params", "100")
            for step, value in enumerate((loss + 0.2, loss)):
                client.log_metric(run, "val_loss", value, step=step)
            client.set_terminated(run)
        rows = table(store, capsys, "--experiment", "earlier", "--sweep", parent)
        assert [(r["reg"], r["final_val_loss"], r["best_val_loss"]) for r in rows] == [("l2", 0.4, 0.4), ("l1", 0.5, 0.5)]
        assert "rate" not in rows[0] and rows[0]["n_params"] == 100


@pytest.mark.slow
def test_python_m_sweeps_compare_writes_reports_in_the_current_folder(store, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}
    proc = subprocess.run([sys.executable, "-m", "sweeps.compare", "--sweep", store["a"]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"report written to reports/{store['a']}/" in proc.stdout
    assert (tmp_path / "reports" / store["a"] / "report.md").is_file()
    proc = subprocess.run([sys.executable, "-m", "sweeps.compare", "--metric", "nope"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --metric nope") and "Traceback" not in proc.stderr


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    blob = path.read_bytes()
    assert blob[:8] == PNG_SIGNATURE and blob[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", blob[16:24])
