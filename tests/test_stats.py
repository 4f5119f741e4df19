"""How sure is the answer: `sweeps.reporting.stats` against direct computations, `repeat=K`, and one real sweep.

The pure functions are checked on numbers with known answers: Holm's adjusted p-values by hand,
Welch's test against scipy's, the ties on simulated grids (identical configurations: no row called
different in more than 5 % of the grids; a clearly better one found in every grid), the bootstrap
against the same draws made with numpy and against the exact bootstrap distribution (every
resample enumerated), the probability of improvement against a double loop and the Mann-Whitney
U, Dodge et al.'s expected best against every subset (or tuple) enumerated and against the uniform
distribution's n / (n + 1). The slow test runs `repeat=3` on digits and reads it back with
`python -m sweeps.compare --format json --stats bootstrap` and `sweeps.group_seeds`.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats as scipy_stats

from sweeps.reporting import stats, table
from sweeps.sweeping import repeats
from sweeps.errors import ConfigError


# --- Holm-Bonferroni and Welch ------------------------------------------------------------------

def test_holm_adjusts_step_down_as_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.2, 0.9]) == pytest.approx([0.4, 0.9]) and stats.holm([0.7]) == [0.7] and stats.holm([]) == []
    assert stats.holm([0.5, 0.5, 0.5]) == [1.0, 1.0, 1.0]  # capped at 1


def test_holm_rejects_what_the_step_down_rule_rejects():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 12))
        rejected = set()
        for rank, i in enumerate(np.argsort(p)):  # Holm 1979: stop at the first p(i) > alpha / (m - i + 1)
            if p[i] > 0.05 / (len(p) - rank):
                break
            rejected.add(int(i))
        assert {i for i, q in enumerate(stats.holm(p)) if q <= 0.05} == rejected


def test_welch_matrix_is_scipys_test_on_every_pair():
    rng = np.random.default_rng(4)
    samples = [list(rng.normal(m, s, n)) for m, s, n in ((0, 1, 3), (0.5, 2, 5), (1, 0.5, 4), (0, 1, 1))]
    p = stats.welch_matrix(samples)
    for i, j in itertools.combinations(range(3), 2):
        expected = scipy_stats.ttest_ind(samples[i], samples[j], equal_var=False).pvalue
        assert p[i, j] == p[j, i] == pytest.approx(expected, rel=1e-9)
    assert np.isnan(p[3]).all() and np.isnan(p[:, 3]).all()  # one value: no test
    assert stats.welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0 and stats.welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0


def grid_ties(k: int, n: int, shift: float, rng) -> tuple[int, list]:
    """One simulated grid: k configurations of n seeds, the first moved by `shift` standard deviations
    (a loss: lower is better); the best row (lowest mean) and `ties_with_best` against it."""
    x = rng.normal(size=(k, n))
    x[0] += shift
    best = int(np.argmin(x.mean(axis=1)))
    order = [best, *(i for i in range(k) if i != best)]  # as table.group_rows hands them: best first
    ties, _ = stats.ties_with_best([list(x[i]) for i in order])
    return best, dict(zip(order, ties))


@pytest.mark.parametrize("k, n", [(16, 3), (16, 5), (4, 5)])
def test_a_grid_of_identical_configurations_is_called_different_in_at_most_5_percent_of_grids(k, n):
    rng = np.random.default_rng(k * 100 + n)
    grids = 1000
    wrong = sum(any(tie is False for tie in grid_ties(k, n, 0.0, rng)[1].values()) for _ in range(grids))
    assert wrong / grids <= stats.ALPHA, f"{wrong} of {grids} grids had a row called different"


def test_holm_over_the_comparisons_with_the_best_alone_would_not_hold_5_percent():
    """Why ties_with_best's family is every pair: the best row is picked from the data (measured here)."""
    rng = np.random.default_rng(16)
    wrong = 0
    for _ in range(1000):
        x = rng.normal(size=(16, 5))
        best = int(np.argmin(x.mean(axis=1)))
        p = stats.welch_matrix(list(map(list, x)))[best]
        wrong += min(stats.holm(np.delete(p, best))) < stats.ALPHA
    assert wrong / 1000 > 0.07  # about 1 grid in 10


def test_a_clearly_better_configuration_is_still_found():
    rng = np.random.default_rng(5)
    for _ in range(200):  # 16 configurations of 5 seeds, one better by 10 standard deviations
        best, ties = grid_ties(16, 5, -10.0, rng)
        assert best == 0 and ties[0] is True and not any(ties[i] for i in range(1, 16))


def test_ties_need_two_values_on_each_side_and_report_the_adjusted_p():
    a, b, c = [0.40, 0.41, 0.42], [0.5, 0.52, 0.51], [0.41]
    ties, ps = stats.ties_with_best([a, b, c])
    assert ties == [True, False, None] and ps[0] is None and ps[2] is None
    assert ps[1] == pytest.approx(stats.welch_p(a, b))  # one pair with two values a side: Holm changes nothing
    assert stats.ties_with_best([[0.4], [0.5, 0.6]]) == ([None, None], [None, None])


# --- bootstrap and probability of improvement -------------------------------------------------------

def test_bootstrap_interval_is_numpys_percentiles_of_the_same_draws():
    values = [0.42, 0.40, 0.45, 0.39, 0.41]
    rng = np.random.default_rng(stats.BOOT_SEED)
    means = np.sort(values)[rng.integers(0, 5, size=(stats.N_BOOT, 5))].mean(axis=1)
    assert stats.bootstrap_ci(values) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=0)
    assert stats.bootstrap_ci([0.4]) == (None, None)


def exact_quantile(outcomes: np.ndarray, q: float) -> float:
    """The q-quantile of equally likely outcomes (the lower one)."""
    ordered = np.sort(outcomes)
    return float(ordered[min(len(ordered) - 1, int(math.floor(q * len(ordered))))])


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    values = np.array([0.30, 0.34, 0.41, 0.52])
    means = np.array([values[list(i)].mean() for i in itertools.product(range(4), repeat=4)])  # all 256 resamples
    low, high = stats.bootstrap_ci(values, n_boot=40_000)
    assert exact_quantile(means, 0.015) <= low <= exact_quantile(means, 0.035)
    assert exact_quantile(means, 0.965) <= high <= exact_quantile(means, 0.985)


def test_probability_of_improvement_is_the_share_of_pairs_won_ties_half():
    x, y = [0.30, 0.35, 0.35, 0.50], [0.35, 0.40, 0.45]
    wins = sum((a < b) + 0.5 * (a == b) for a in x for b in y) / (len(x) * len(y))  # a loss: lower wins
    assert stats.probability_of_improvement(x, y, higher_is_better=False) == pytest.approx(wins)
    u = scipy_stats.mannwhitneyu(x, y).statistic / (len(x) * len(y))  # U counts x > y, ties half
    assert stats.probability_of_improvement(x, y, higher_is_better=True) == pytest.approx(u)
    assert stats.probability_of_improvement(x, y, True) + stats.probability_of_improvement(x, y, False) == 1
    assert stats.probability_of_improvement(x, x, True) == 0.5 and stats.probability_of_improvement([], y, True) is None


def test_the_stratified_interval_of_the_improvement_matches_every_joint_resample():
    x, y = np.array([0.30, 0.36, 0.41]), np.array([0.35, 0.40, 0.47])
    resamples = list(itertools.product(range(3), repeat=3))  # each side resampled within itself: 27 x 27
    exact = np.array([stats.probability_of_improvement(x[list(i)], y[list(j)], False)
                      for i in resamples for j in resamples])
    low, high = stats.improvement_ci(x, y, higher_is_better=False, n_boot=40_000)
    assert exact_quantile(exact, 0.015) <= low <= exact_quantile(exact, 0.035)
    assert exact_quantile(exact, 0.965) <= high <= exact_quantile(exact, 0.985)
    assert stats.improvement_ci([0.3], y, False) == (None, None)


# --- expected best of n trials ----------------------------------------------------------------------

def test_expected_best_without_replacement_is_the_mean_best_of_every_subset():
    values = [0.61, 0.55, 0.70, 0.58, 0.66, 0.52, 0.63]
    for n in range(1, 8):
        subsets = list(itertools.combinations(values, n))
        assert stats.expected_best(values, n) == pytest.approx(np.mean([max(s) for s in subsets]))
        lowest = np.mean([min(s) for s in subsets])  # for a loss: the expected minimum
        assert stats.expected_best(values, n, higher_is_better=False) == pytest.approx(lowest)
    assert stats.expected_best(values, 1) == pytest.approx(np.mean(values)) and stats.expected_best(values, 7) == 0.70
    with pytest.raises(ValueError):
        stats.expected_best(values, 8)


def test_expected_best_with_replacement_is_dodge_2019_and_the_mean_best_of_every_tuple():
    values = [0.2, 0.5, 0.4, 0.9, 0.1]
    for n in (1, 2, 3, 6):
        tuples = list(itertools.product(values, repeat=n))
        assert stats.expected_best(values, n, replacement=True) == pytest.approx(np.mean([max(t) for t in tuples]))
        v, big_n = np.sort(values), len(values)
        dodge = sum(v[i - 1] * ((i / big_n) ** n - ((i - 1) / big_n) ** n) for i in range(1, big_n + 1))
        assert stats.expected_best(values, n, replacement=True) == pytest.approx(dodge)


def test_expected_best_on_a_known_distribution():
    """The maximum of n uniform(0, 1) draws has mean n / (n + 1); the minimum 1 / (n + 1)."""
    draws = np.random.default_rng(7).uniform(size=4000)
    curve = stats.expected_best_curve(draws[:50])
    assert len(curve) == 50 and all(b >= a for a, b in zip(curve, curve[1:]))  # more trials never hurt
    for n in (1, 2, 5, 20, 100):
        assert stats.expected_best(draws, n) == pytest.approx(n / (n + 1), abs=0.01)
        assert stats.expected_best(draws, n, higher_is_better=False) == pytest.approx(1 / (n + 1), abs=0.01)


def test_mean_band_is_the_t_interval_of_each_epoch():
    mean, half = stats.mean_band([[1.0, 2.0, 3.0], [2.0, 4.0], [3.0, 6.0]])
    assert mean == [2.0, 4.0, 3.0] and math.isnan(half[2])
    assert half[0] == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)  # t(0.975, 2) s / sqrt(n)


# --- grouped rows with the bootstrap --------------------------------------------------------------

def job(reg: str, seed: int, loss: float) -> dict:
    return {"status": "FINISHED", "reg": reg, "seed": str(seed), "data.val_seed": str(seed), "final_val_loss": loss,
            "n_params": 100, "run_name": f"{reg}-{seed}", "run_id": f"{reg}{seed}"}


LOSSES = {"l2": [0.40, 0.42, 0.41, 0.39], "l1": [0.47, 0.44, 0.49], "none": [0.41, 0.45, 0.43]}


def test_bootstrap_rows_carry_the_numbers_of_the_stats_functions():
    rows = [job(reg, i, v) for reg, values in LOSSES.items() for i, v in enumerate(values)]
    grouped = table.group_rows(rows, ["reg"], "val_loss", "bootstrap")
    assert [g["reg"] for g in grouped] == ["l2", "none", "l1"]
    best = LOSSES["l2"]
    ties, adjusted = stats.ties_with_best([LOSSES[g["reg"]] for g in grouped])
    for row, tie, p in zip(grouped, ties, adjusted):
        values = LOSSES[row["reg"]]
        assert (row["final_val_loss_boot95_low"], row["final_val_loss_boot95_high"]) == stats.bootstrap_ci(values)
        assert row["tied_with_best"] is tie and row["p_vs_best_holm"] == p
        if row["reg"] != "l2":
            assert row["p_beats_best"] == stats.probability_of_improvement(values, best, False)
            assert (row["p_beats_best_low"], row["p_beats_best_high"]) == stats.improvement_ci(values, best, False)
    assert grouped[0]["p_beats_best"] is None and grouped[2]["p_beats_best"] == 0.0  # every l1 job loses to every l2
    assert list(grouped[0])[:9] == ["status", "reg", "n", "tied_with_best", "p_beats_best", "p_beats_best_low",
                                    "p_beats_best_high", "p_vs_best_holm", "final_val_loss_mean"]
    plain = table.group_rows(rows, ["reg"], "val_loss")  # the default: the same rows without those columns
    assert [{k: r[k] for k in p} for r, p in zip(grouped, plain)] == plain
    none = grouped[1]  # 1 win and 1 tie of 12 pairs against l2: 1.5 / 12
    assert none["p_beats_best"] == 0.125 and table.reading([none])[0]["p_beats_best"] == table.Interval(
        0.125, none["p_beats_best_low"], none["p_beats_best_high"])
    text = table.to_text(grouped)
    assert f"0.125 [{table.fmt(none['p_beats_best_low'])}, {table.fmt(none['p_beats_best_high'])}]" in text
    low, high = grouped[0]["final_val_loss_boot95_low"], grouped[0]["final_val_loss_boot95_high"]
    assert f"[{table.fmt(low)}, {table.fmt(high)}]" in text and "final_val_loss_boot95" in text


def test_repeat_keys_never_make_a_configuration():
    assert table.config_keys(["reg", "seed", "rate", "data.val_seed"]) == ["reg", "rate"]


def test_group_seeds_takes_stats_and_refuses_an_unknown_kind_in_one_line():
    import pandas as pd

    import sweeps
    from sweeps.errors import CompareError

    frame = pd.DataFrame([job(reg, i, v) for reg, values in LOSSES.items() for i, v in enumerate(values)])
    frame.attrs.update(swept=["reg", "seed", "data.val_seed"], metric="val_loss")
    grouped = sweeps.group_seeds(frame, stats="bootstrap")
    rows = table.group_rows([job(reg, i, v) for reg, values in LOSSES.items() for i, v in enumerate(values)],
                            ["reg"], "val_loss", "bootstrap")
    assert list(grouped.columns) == list(rows[0]) and "seed" not in grouped and "data.val_seed" not in grouped
    assert list(grouped["p_beats_best"].iloc[1:]) == [r["p_beats_best"] for r in rows[1:]]
    with pytest.raises(CompareError, match=r"^group_seeds: stats='boot'; use one of 't', 'bootstrap'$"):
        sweeps.group_seeds(frame, stats="boot")


# --- repeat=K ------------------------------------------------------------------------------------

CFG = OmegaConf.create({"repeat": 3, "seed": 5, "data": {"val_seed": 0}})


def test_repeat_makes_k_jobs_per_configuration_seed_and_split_moved_together():
    jobs, swept = repeats.expand([["reg=l1", "epochs=2"], ["reg=l2", "epochs=2"]], ["reg"], CFG)
    assert swept == ["reg", "seed", "data.val_seed"]
    assert jobs == [[f"reg={r}", "epochs=2", f"seed={5 + k}", f"data.val_seed={k}"]
                    for r in ("l1", "l2") for k in range(3)]
    again, _ = repeats.expand([["reg=l1", "epochs=2"], ["reg=l2", "epochs=2"]], ["reg"], CFG)
    assert again == jobs  # the same jobs every time: a rerun resumes them
    more, _ = repeats.expand([["reg=l1", "epochs=2"]], ["reg"], OmegaConf.merge(CFG, {"repeat": 5}))
    assert more[:3] == jobs[:3]  # repeat=5 after repeat=3 adds repeats 3 and 4
    fixed, _ = repeats.expand([["seed=5", "reg=l1"]], ["reg"], CFG)
    assert fixed == [["reg=l1", f"seed={5 + k}", f"data.val_seed={k}"] for k in range(3)]  # no second seed=


@pytest.mark.parametrize("repeat", [0, 1, -2, None])
def test_no_repeat_leaves_the_grid_as_it_is(repeat):
    assert repeats.expand([["reg=l1"]], ["reg"], OmegaConf.merge(CFG, {"repeat": repeat})) == ([["reg=l1"]], ["reg"])
    assert repeats.expand([["reg=l1"]], ["reg"], OmegaConf.create({})) == ([["reg=l1"]], ["reg"])  # another app


def test_repeat_with_a_seed_sweep_is_one_line(make_cfg):
    with pytest.raises(ConfigError) as err:
        repeats.expand([["seed=0"], ["seed=1"]], ["seed"], CFG)
    assert str(err.value) == ("repeat=3 with a seed= sweep: repeat draws seed and data.val_seed itself; "
                              "drop the seed= values (seeds 5..7 are used)")
    from sweeps.config import config_hash, validate

    with pytest.raises(ConfigError, match=r"^repeat=1 is invalid: use 0 \(off\) or at least 2, e.g. repeat=3$"):
        validate(make_cfg("repeat=1"))
    assert config_hash(make_cfg("repeat=3")) == config_hash(make_cfg())  # repeat=5 after repeat=3 reuses the runs


# --- one real sweep ------------------------------------------------------------------------------

REPEAT_SWEEP = ["reg=l1,l2", "rate=1e-2", "repeat=3", "data=digits", "epochs=2", "model.hidden=[16]", "batch_size=64",
                "tracking.log_model=false"]


@pytest.mark.slow
def test_a_repeat_sweep_reads_back_through_compare_and_group_seeds(tmp_path):
    import sweeps
    from conftest import minimal_env
    from mlflow.tracking import MlflowClient

    env = minimal_env(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "sweeps.train", "-m", "reg=l1", "seed=0,1", "repeat=3", "data=digits"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: repeat=3 with a seed= sweep: repeat draws seed")
    proc = subprocess.run([sys.executable, "-m", "sweeps.train", "-m", *REPEAT_SWEEP], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    jobs = [r for r in client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
            if r.data.tags.get("sweeps.kind") == "job"]
    pairs = sorted((r.data.params["reg.kind"], r.data.params["seed"], r.data.params["data.val_seed"]) for r in jobs)
    assert pairs == [(reg, str(k), str(k)) for reg in ("l1", "l2") for k in range(3)]  # each repeat its own run
    assert all(r.data.params["repeat"] == "3" for r in jobs)

    out = subprocess.run([sys.executable, "-m", "sweeps.compare", "--format", "json", "--stats", "bootstrap"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    losses = {reg: [r.data.metrics["val_data_loss"] for r in jobs if r.data.params["reg.kind"] == reg]
              for reg in ("l1", "l2")}
    assert [r["n"] for r in rows] == [3, 3] and not {"seed", "data.val_seed"} & set(rows[0])
    best, other = (losses[r["reg"]] for r in rows)
    assert np.mean(best) <= np.mean(other) and rows[0]["final_val_data_loss_mean"] == pytest.approx(np.mean(best))
    assert rows[1]["tied_with_best"] is (stats.welch_p(best, other) >= 0.05)  # one pair: Holm changes nothing
    assert rows[1]["p_beats_best"] == pytest.approx(stats.probability_of_improvement(other, best, False))
    for row, values in zip(rows, (best, other)):
        assert (row["final_val_data_loss_boot95_low"], row["final_val_data_loss_boot95_high"]) == \
            pytest.approx(stats.bootstrap_ci(values))

    frame = sweeps.load_sweep(tracking_uri=uri)
    grouped = sweeps.group_seeds(frame, stats="bootstrap").to_dict("records")
    assert [g["reg"] for g in grouped] == [r["reg"] for r in rows]
    for shown, ours in zip(rows, grouped):
        for key, value in shown.items():
            assert (ours[key] is None or (isinstance(ours[key], float) and math.isnan(ours[key]))) if value is None \
                else ours[key] == pytest.approx(value) if isinstance(value, float) else ours[key] == value, key

    parent = next(r for r in client.search_runs([jobs[0].info.experiment_id])
                  if r.data.tags.get("sweeps.kind") == "sweep")
    report = Path(client.download_artifacts(parent.info.run_id, "report.md")).read_text()
    assert "One row per reg over seed, data.val_seed: n jobs" in report
    assert "Holm-Bonferroni corrected over every pair of rows (family-wise 5%" in report
    assert "Repeats varied seed (initial weights, batch order, dropout masks) and data.val_seed (the validation " \
           "split)." in report
    assert "## How sure is the answer" in report and "p\\_beats\\_best" not in report and "p_beats_best" in report
    assert {"expected_best.png", "val_data_loss.png"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}


def test_importances_rank_the_knob_that_matters_first_and_pure_noise_last():
    """A synthetic 3x3x2 grid: the metric moves a lot with `rate`, a little with `reg`, and `seed`
    is pure noise; fANOVA over the 18 jobs ranks them so, shares summing to 1."""
    rng = np.random.default_rng(0)
    points, values = [], []
    for rate in ("1e-4", "1e-3", "1e-2"):
        for reg in ("l1", "l2"):
            for seed in ("0", "1", "2"):
                points.append({"rate": rate, "reg": reg, "seed": seed})
                values.append(math.log10(float(rate)) * 1.0 + (0.2 if reg == "l1" else 0.0) + rng.normal(0, 0.02))
    found = stats.importances(points, values)
    assert list(found) == ["rate", "reg", "seed"], found
    assert sum(found.values()) == pytest.approx(1.0) and found["rate"] > 0.8 and found["seed"] < 0.05
    assert stats.importances(points[:3], values[:3]) == {}, "too few jobs"
    assert "reg" not in stats.importances([{**p, "reg": "l2"} for p in points], values), "one value: not a knob"


def test_the_pareto_front_is_the_non_dominated_set_by_brute_force():
    """Random 2-objective points (one minimised, one maximised), checked against a direct definition."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        points = rng.integers(0, 6, size=(12, 2)).astype(float)  # ties on purpose
        front = stats.pareto_front(points.tolist(), [False, True])
        dominated = {i for i, (a, b) in enumerate(points) for (c, d) in points
                     if c <= a and d >= b and (c < a or d > b)}
        assert front == [i for i in range(len(points)) if i not in dominated]
    assert stats.pareto_front([[1, 1], [2, 2], [0, 0]], [False, True]) == [0, 1, 2]  # a real trade-off
    assert stats.pareto_front([[1, 3], [2, 2]], [False, True]) == [0]
