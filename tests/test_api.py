"""`sweeps.load_sweep` & co. on a real digits sweep with seeds, and the statistics behind grouped rows.

The sweep is the session's `seed_sweep` (tests/conftest.py), trained once by the command line and
also read by test_readme.py:
  reg=l1,l2 seed=0,1 (rate=1e-2)      4 jobs, grouped into one row per reg
The statistics (95 % interval, Welch's t-test) are checked against textbook t quantiles and an
independent computation: Welch's statistic and degrees of freedom by formula, the p-value by
integrating Student's t density with numpy.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import sweeps
from sweeps import compare
from sweeps.reporting import table
from sweeps.errors import SweepsError
from conftest import SEED_SWEEP

T975 = {1: 12.706, 2: 4.303, 4: 2.776}  # Student's t, 97.5 % quantile, from a printed table


@pytest.fixture(scope="module")
def sweep(seed_sweep) -> dict:
    return seed_sweep


def load(sweep: dict, **kwargs):
    return sweeps.load_sweep(tracking_uri=sweep["uri"], metric="val_loss", **kwargs)


def test_one_row_per_job_with_the_numbers_mlflow_returns(sweep):
    frame = load(sweep)
    client = sweep["client"]
    assert len(frame) == 4 and frame.attrs["sweep_id"] == sweep["id"] and frame.attrs["swept"] == ["reg", "seed"]
    assert sorted(zip(frame["reg"], frame["seed"])) == [("l1", 0), ("l1", 1), ("l2", 0), ("l2", 1)]
    assert list(frame["final_val_loss"]) == sorted(frame["final_val_loss"])  # best first
    for row in frame.to_dict("records"):
        run = client.get_run(row["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == sweep["id"]
        assert (row["status"], row["run_name"]) == (run.info.status, run.info.run_name)
        assert row["reg"] == run.data.params["reg.kind"] and row["seed"] == int(run.data.params["seed"])
        for name, value in run.data.metrics.items():
            assert row[f"final_{name}" if f"final_{name}" in row else name] == value, name
        assert {k: row[f"params.{k}"] for k in run.data.params} == run.data.params
        assert row["n_params"] == int(run.data.params["n_params"])


def test_latest_sweep_by_default_and_a_prefix_picks_it(sweep):
    assert set(sweeps.load_sweep(tracking_uri=sweep["uri"])["run_id"]) == set(load(sweep)["run_id"])
    assert set(load(sweep, sweep_id=sweep["id"][:6])["run_id"]) == set(load(sweep)["run_id"])


def test_group_seeds_means_intervals_and_ties_of_the_real_runs(sweep):
    frame = load(sweep)
    grouped = sweeps.group_seeds(frame)
    assert list(grouped["final_val_loss_mean"]) == sorted(grouped["final_val_loss_mean"])
    assert "seed" not in grouped and list(grouped["n"]) == [2, 2] and list(grouped["status"]) == ["2 FINISHED"] * 2
    for row in grouped.to_dict("records"):
        members = frame[frame["reg"] == row["reg"]]
        for column in ("final_val_loss", "test_accuracy", "generalization_gap", "hidden_0/sparsity"):
            values = members[column].to_numpy()
            assert row[f"{column}_mean"] == pytest.approx(values.mean())
            assert row[f"{column}_ci95"] == pytest.approx(T975[1] * values.std(ddof=1) / math.sqrt(2), rel=1e-3)
        assert row["n_params"] == members["n_params"].iloc[0] and set(row["run_ids"].split(",")) == set(members["run_id"])
    best, other = (frame[frame["reg"] == reg]["final_val_loss"].to_numpy() for reg in grouped["reg"])
    ties = [row["tied_with_best"] for row in grouped.to_dict("records")]
    assert ties == [True, welch_p_by_hand(best, other) >= 0.05]
    assert load(sweep, group_seeds=True).equals(grouped)
    assert len(sweeps.group_seeds(frame[frame["reg"] == "l2"])) == 1  # a filtered frame groups too


def test_grouped_rows_are_the_ones_compare_prints(sweep, capsys):
    assert compare.main(["--tracking-uri", sweep["uri"], "--format", "json", "--metric", "val_loss"]) == 0
    printed = json.loads(capsys.readouterr().out)
    grouped = sweeps.group_seeds(load(sweep)).to_dict("records")
    assert [r["reg"] for r in printed] == [r["reg"] for r in grouped]
    for shown, ours in zip(printed, grouped):
        assert {k: shown[k] for k in shown} == {k: ours[k] for k in shown}


def test_histories_long_format_match_mlflow(sweep):
    curves = sweeps.load_histories(metrics=["val_loss", "test_accuracy"], tracking_uri=sweep["uri"])
    client = sweep["client"]
    assert list(curves.columns) == ["run_id", "run_name", "reg", "seed", "metric", "epoch", "value"]
    assert len(curves) == 4 * (2 + 1)
    for run_id, rows in curves.groupby("run_id"):
        logged = client.get_metric_history(run_id, "val_loss")
        val = rows[rows["metric"] == "val_loss"]
        logged = sorted(logged, key=lambda m: m.step)
        assert list(val["epoch"]) == [m.step for m in logged] and len(logged) == 2
        assert list(val["value"]) == [m.value for m in logged]
        assert list(rows[rows["metric"] == "test_accuracy"]["value"]) == [client.get_run(run_id).data.metrics["test_accuracy"]]
    one = sweeps.load_histories(metrics="val_loss", tracking_uri=sweep["uri"])  # a name, not its characters
    assert one.equals(curves[curves["metric"] == "val_loss"].reset_index(drop=True))
    every = sweeps.load_histories(sweep_id=sweep["id"], tracking_uri=sweep["uri"])
    run_id = curves["run_id"].iloc[0]
    assert set(every[every["run_id"] == run_id]["metric"]) == set(client.get_run(run_id).data.metrics)


def test_list_sweeps(sweep):
    listed = sweeps.list_sweeps(tracking_uri=sweep["uri"])
    assert listed.to_dict("records")[0] | {"started": ""} == {
        "sweep": sweep["id"], "started": "", "status": "FINISHED", "jobs": 4, "statuses": "4 FINISHED",
        "command": " ".join(SEED_SWEEP)}


@pytest.mark.parametrize("kwargs, message", [
    ({"sweep_id": "feedbeef"}, "sweep_id='feedbeef' is not a sweep in experiment 'sweeps'; sweeps.list_sweeps() shows"),
    ({"experiment": "nope"}, "no experiment named 'nope' in the store (experiments: "),
    ({"metric": "val_los"}, "metric 'val_los': no job of sweep "),
])
def test_mistakes_raise_one_line(sweep, kwargs, message):
    with pytest.raises(SweepsError) as err:
        sweeps.load_sweep(tracking_uri=sweep["uri"], **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_an_unknown_history_metric_raises_one_line(sweep):
    with pytest.raises(SweepsError, match="^metric 'nope': no job of sweep .* available: "):
        sweeps.load_histories(metrics=["nope"], tracking_uri=sweep["uri"])


def test_no_store_raises_one_line_and_creates_nothing(tmp_path):
    with pytest.raises(SweepsError, match=f"^no tracking store at {tmp_path}/none.db: .* tracking_uri= "):
        sweeps.load_sweep(tracking_uri=f"sqlite:///{tmp_path}/none.db")
    assert not (tmp_path / "none.db").exists()


def test_a_frame_without_its_sweep_attributes_says_so(sweep):
    frame = load(sweep)
    frame.attrs.clear()
    with pytest.raises(SweepsError, match="^group_seeds: the frame does not say which keys were swept"):
        sweeps.group_seeds(frame)


@pytest.mark.slow
def test_import_sweeps_is_light():
    code = ("import sys, sweeps; light = sorted(m for m in ('mlflow', 'pandas') if m in sys.modules); "
            "sweeps.load_sweep; heavy = [m for m in ('tensorflow', 'keras', 'matplotlib.pyplot') if m in sys.modules]; "
            "print(light, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split("\n")[0] == "[] []"


# --- the statistics, on known numbers -------------------------------------------------------------

A = [0.412, 0.398, 0.405, 0.421, 0.401]
B = [0.455, 0.441, 0.470]


def t_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (any df >= 1), integrating its density.

    With x = tan(theta), the density times dx is df^((df+1)/2) cos^(df-1) / (df cos^2 + sin^2)^((df+1)/2)
    times the normalizing constant: smooth on [atan(t), pi/2]."""
    theta = np.linspace(math.atan(t), math.pi / 2, 400_001)
    c, s = np.cos(theta), np.sin(theta)
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    density = const * df ** ((df + 1) / 2) * np.abs(c) ** (df - 1) / (df * c ** 2 + s ** 2) ** ((df + 1) / 2)
    return float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(theta)))


def welch_p_by_hand(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = abs(a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * t_tail(t, df)


def test_the_tail_integral_is_right_on_textbook_quantiles():
    for df, quantile in T975.items():
        assert t_tail(quantile, df) == pytest.approx(0.025, abs=5e-5)


def test_confidence_interval_is_the_t_half_width():
    assert table.mean_ci([1.0, 2.0, 3.0]) == pytest.approx((2.0, T975[2] / math.sqrt(3)), rel=1e-3)
    mean, ci = table.mean_ci(A)
    assert mean == pytest.approx(np.mean(A)) and ci == pytest.approx(T975[4] * np.std(A, ddof=1) / math.sqrt(5), rel=1e-3)
    assert table.mean_ci([0.5]) == (0.5, None) and table.mean_ci([]) == (None, None)


@pytest.mark.parametrize("a, b", [(A, B), (A, A[:2]), ([1.0, 2.0], [1.5, 2.5, 2.0, 1.9]), (B, [0.46, 0.47])])
def test_welch_p_value_matches_an_independent_computation(a, b):
    assert table.welch_p(a, b) == pytest.approx(welch_p_by_hand(a, b), rel=1e-4)


def test_welch_edge_cases():
    assert table.welch_p(A, [0.5]) is None and table.welch_p([0.5], A) is None
    assert table.welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0 and table.welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert table.tied(A, B) is (welch_p_by_hand(A, B) >= 0.05) and table.tied(A, [0.5]) is None


def test_grouped_rows_rank_by_mean_and_tie_by_welch():
    def rows(reg: str, values: list) -> list[dict]:
        return [{"status": "FINISHED" if v is not None else "FAILED", "reg": reg, "seed": str(i), "final_val_loss": v,
                 "n_params": 100 if v is not None else None, "run_name": f"{reg}-{i}", "run_id": f"{reg}{i}"}
                for i, v in enumerate(values)]

    jobs = rows("l1", B) + rows("l2", A) + rows("none", [0.40, 0.43, None]) + rows("one", [0.41])
    grouped = table.group_rows(jobs, ["reg"], "val_loss")
    assert [g["reg"] for g in grouped] == ["l2", "one", "none", "l1"]  # by mean: 0.4074, 0.41, 0.415, 0.4553
    by_reg = {g["reg"]: g for g in grouped}
    assert by_reg["l2"]["tied_with_best"] is True and by_reg["l1"]["tied_with_best"] is (welch_p_by_hand(A, B) >= 0.05)
    assert by_reg["l1"]["tied_with_best"] is False  # 0.455 vs 0.407 (p about 0.01): told apart
    assert by_reg["none"]["tied_with_best"] is True and by_reg["one"]["tied_with_best"] is None  # n=1: unknown
    assert by_reg["none"]["status"] == "1 FAILED, 2 FINISHED" and by_reg["none"]["n"] == 2
    assert by_reg["none"]["n_params"] == 100 and by_reg["one"]["final_val_loss_ci95"] is None
    assert "seed" not in by_reg["l2"] and by_reg["l2"]["run_ids"] == "l20,l21,l22,l23,l24"
