"""One colour per job in every figure of a sweep: the regularizer's family, darker for a higher rate."""

import matplotlib.colors as mcolors
import pytest

from sweeps.reporting import plots


def _hue(color) -> float:
    return mcolors.rgb_to_hsv(mcolors.to_rgb(color))[0]


def _lightness(color) -> float:
    return sum(mcolors.to_rgb(color)) / 3


def test_the_regularizer_picks_the_family_the_rate_the_shade_and_none_is_the_baseline():
    jobs = [("l2 rate=1e-3", "l2", 1e-3), ("none", "none", 0.0), ("l1 rate=1e-4", "l1", 1e-4),
            ("l1 rate=1e-3", "l1", 1e-3), ("l2 rate=1e-4", "l2", 1e-4)]
    styles = plots.job_styles(jobs)
    assert styles["none"] == plots.Style("black", baseline=True)
    assert all(not styles[label].baseline for label, kind, _ in jobs if kind != "none")
    l1 = [styles["l1 rate=1e-4"].color, styles["l1 rate=1e-3"].color]
    l2 = [styles["l2 rate=1e-4"].color, styles["l2 rate=1e-3"].color]
    assert all(0.5 < _hue(c) < 0.7 for c in l1) and all(0.02 < _hue(c) < 0.12 for c in l2)  # blue vs orange
    assert _lightness(l1[1]) < _lightness(l1[0]) and _lightness(l2[1]) < _lightness(l2[0])  # stronger = darker
    assert plots.job_styles(list(reversed(jobs))) == styles  # the order the jobs come in does not matter


def test_without_a_varied_penalty_every_job_gets_its_own_colour():
    jobs = [(f"dropout={d}", "l2", 1e-4) for d in (0, 0.2, 0.5)]
    styles = plots.job_styles(jobs)
    assert len({s.color for s in styles.values()}) == 3 and not any(s.baseline for s in styles.values())
    families = {mcolors.to_hex(plots.family_color(kind, shade)) for kind in ("l1", "l2", "l1_l2") for shade in (0, .5, 1)}
    assert not {mcolors.to_hex(s.color) for s in styles.values()} & families
    assert not any(0.02 < _hue(s.color) < 0.12 or 0.5 < _hue(s.color) < 0.7 for s in styles.values()), "no L1/L2 hue"
    unpenalized = plots.job_styles([("a", "none", None), ("b", None, None)])
    assert len({s.color for s in unpenalized.values()}) == 2


def test_the_overlay_draws_each_job_in_its_style():
    styles = plots.job_styles([("none", "none", 0.0), ("l1 rate=1e-3", "l1", 1e-3)])
    fig = plots.overlay_figure({"none": [1.0, 0.5], "l1 rate=1e-3": [1.2, 0.9]}, "val data loss", "t", styles=styles)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["none"].get_linestyle() == "--" and mcolors.to_hex(lines["none"].get_color()) == "#000000"
    assert lines["l1 rate=1e-3"].get_linestyle() == "-"
    assert mcolors.to_hex(lines["l1 rate=1e-3"].get_color()) == mcolors.to_hex(styles["l1 rate=1e-3"].color)
    assert list(lines["none"].get_xdata()) == [1, 2]  # epochs counted from 1, as MLflow's steps


def test_a_band_is_drawn_around_a_mean_curve_and_only_there():
    fig = plots.overlay_figure({"l1 (n=3)": [1.0, 0.8, 0.7], "l2": [1.1, 0.9, 0.8]}, "val data loss", "t",
                               bands={"l1 (n=3)": [0.1, 0.05, float("nan")]})
    (band,) = fig.axes[0].collections  # fill_between: one shaded area, for the curve with a band
    xs, ys = band.get_paths()[0].vertices.T  # epochs 1 and 2 (NaN at 3: no interval there), mean ± half-width
    assert set(xs) == {1, 2} and min(ys) == pytest.approx(0.8 - 0.05) and max(ys) == pytest.approx(1.0 + 0.1)


def test_the_expected_best_figure_draws_the_curve_and_the_best_so_far():
    fig = plots.expected_best_figure([0.5, 0.45, 0.42], [0.5, 0.6, 0.4], "val data loss", "t", higher_is_better=False)
    expected, running = fig.axes[0].get_lines()
    assert list(expected.get_ydata()) == [0.5, 0.45, 0.42] and list(running.get_ydata()) == [0.5, 0.5, 0.4]
