"""How sure is the answer: the statistics behind grouped rows, as plain numpy/scipy functions (and
Optuna's fANOVA for the importances).

`table` (grouped rows), `report` (its plots and sections), `compare` and `api` call these; nothing
here knows about runs or MLflow. docs/statistics.md says what each one means and when to use it.

- `mean_ci`: the mean and the half-width of its 95 % interval (Student's t).
- `welch_p`, `welch_matrix`: Welch's t-test (unequal variances, two-sided).
- `holm`: Holm-Bonferroni step-down adjusted p-values (Holm 1979).
- `ties_with_best`: which rows cannot be told from the best one: Welch's test on every pair of
  rows, Holm-corrected, family-wise error `ALPHA`.
- `bootstrap_ci`, `stratified_bootstrap_ci`: percentile bootstrap intervals (Efron & Tibshirani
  1993), one sample or several resampled each within itself (Agarwal et al. 2021's stratified
  bootstrap, as in `rliable`).
- `probability_of_improvement`: P(X beats Y) + P(X = Y) / 2 (Agarwal et al. 2021, `rliable`).
- `expected_best`: the expected best of n trials drawn from N (Dodge et al. 2019; 2021).
- `importances`: which swept key mattered: fANOVA (Hutter et al. 2014) over the finished jobs.
- `pareto_front`: the jobs no other job beats on every objective at once (a trade-off's front).

Every function that says "better" takes `higher_is_better`: for a loss, better is lower.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Optional, Sequence

import numpy as np

CONFIDENCE = 0.95  # of every interval
ALPHA = 0.05  # family-wise error rate of the ties (Holm-Bonferroni over every pair of rows)
N_BOOT = 10_000  # bootstrap resamples
BOOT_SEED = 0  # the bootstrap's Generator seed: the same table every time it is printed
KINDS = ("t", "bootstrap")  # what grouped rows can show: Student's t intervals, or the bootstrap's too


def mean_ci(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """The mean and the half-width of its 95 % confidence interval (Student's t; None below two values)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    from scipy import stats  # here, not at the top: `import scipy.stats` takes a second or two

    quantile = stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)
    return mean, float(quantile * statistics.stdev(values) / math.sqrt(len(values)))


def welch_matrix(samples: Sequence[Sequence[float]]) -> np.ndarray:
    """Two-sided p-values of Welch's t-test for every pair of samples (k x k, symmetric, NaN where a
    side has fewer than two values; 1 on the diagonal). Two samples without spread: 1 when their
    means are equal, else 0 (the test's statistic is 0/0 or x/0 there)."""
    from scipy import stats

    k = len(samples)
    n = np.array([len(s) for s in samples], dtype=float)
    ok = n >= 2
    mean = np.array([np.mean(s) if len(s) else np.nan for s in samples])
    var = np.array([np.var(s, ddof=1) if len(s) >= 2 else np.nan for s in samples])
    with np.errstate(divide="ignore", invalid="ignore"):
        v = var / n  # squared standard error of each mean
        se2 = v[:, None] + v[None, :]
        t = np.abs(mean[:, None] - mean[None, :]) / np.sqrt(se2)
        df = se2 ** 2 / (v[:, None] ** 2 / (n[:, None] - 1) + v[None, :] ** 2 / (n[None, :] - 1))
        p = 2 * stats.t.sf(t, df)
    flat = se2 == 0
    p[flat] = (mean[:, None] == mean[None, :])[flat].astype(float)
    p[~(ok[:, None] & ok[None, :])] = np.nan
    p[np.arange(k), np.arange(k)] = np.where(ok, 1.0, np.nan)
    return np.minimum(p, 1.0)


def welch_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (unequal variances) that `a` and `b` share a mean; None below 2 each."""
    p = welch_matrix([a, b])[0, 1]
    return None if math.isnan(p) else float(p)


def tied(best: Sequence[float], values: Sequence[float]) -> Optional[bool]:
    """One comparison, no correction: whether Welch's test at `ALPHA` cannot tell `values` from `best`."""
    p = welch_p(best, values)
    return None if p is None else p >= ALPHA


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (Holm 1979, step-down).

    With the p-values sorted, p(1) <= ... <= p(m), the i-th adjusted one is
    max over j <= i of min(1, (m - j + 1) p(j)); rejecting every hypothesis whose adjusted p-value is
    below alpha keeps the chance of any false rejection among them below alpha, whatever the
    dependence between the tests."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled) if m else scaled
    return adjusted.tolist()


def ties_with_best(samples: Sequence[Sequence[float]], best: int = 0,
                   alpha: float = ALPHA) -> tuple[list[Optional[bool]], list[Optional[float]]]:
    """For each sample: whether it cannot be told from `samples[best]` (True for the best itself),
    and the Holm-adjusted p-value of that comparison; None where a side has fewer than two values.

    The family is every pair of samples with two or more values, not only the pairs with the best:
    the best row is picked by looking at the data (the lowest mean of k), so the comparisons with it
    are as many chances of a false difference as all k(k-1)/2 pairs. Holm over the k-1 comparisons
    with the best alone would call some row different in about 1 grid of 10 made of 16 identical
    configurations with 5 seeds each (tests/test_stats.py measures it); over every pair it stays
    below `alpha`."""
    k = len(samples)
    usable = [i for i in range(k) if len(samples[i]) >= 2]
    pairs = [(i, j) for a, i in enumerate(usable) for j in usable[a + 1:]]
    matrix = welch_matrix(samples)
    adjusted = dict(zip(pairs, holm([matrix[i, j] for i, j in pairs])))
    ties: list[Optional[bool]] = []
    ps: list[Optional[float]] = []
    for i in range(k):
        if i == best:
            ties.append(True if best in usable else None)
            ps.append(None)
            continue
        p = adjusted.get((min(i, best), max(i, best)))
        ties.append(None if p is None else p >= alpha)
        ps.append(p)
    return ties, ps


def mean_band(curves: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Per epoch, over the curves that reached it (early stopping ends some sooner): the mean, and
    the half-width of its 95 % interval (`mean_ci`; NaN where fewer than two curves reached it)."""
    pairs = [mean_ci([c[e] for c in curves if len(c) > e]) for e in range(max(map(len, curves), default=0))]
    return [m for m, _ in pairs], [math.nan if h is None else h for _, h in pairs]


# --- the bootstrap and the probability of improvement ------------------------------------------

def bootstrap_ci(values: Sequence[float], statistic: Callable[[np.ndarray], np.ndarray] = None,
                 n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                 confidence: float = CONFIDENCE) -> tuple[Optional[float], Optional[float]]:
    """Percentile bootstrap interval of `statistic` (default: the mean) of `values`: resample the
    values with replacement `n_boot` times (numpy Generator seeded `seed`), take the statistic of
    each resample and the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of those. None
    below two values. `statistic` maps an (n_boot, n) array to n_boot numbers (along axis 1).

    With 3 to 5 values the interval is too narrow (a resample can only repeat the values seen):
    it makes no normality assumption, which is its point next to the t-interval, not more coverage."""
    x = np.sort(np.asarray(values, dtype=float))  # sorted: the interval depends on the values, not their order
    if len(x) < 2:
        return None, None
    statistic = statistic or (lambda a: a.mean(axis=1))
    rng = np.random.default_rng(seed)
    resampled = statistic(x[rng.integers(0, len(x), size=(n_boot, len(x)))])
    low, high = np.percentile(resampled, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def probability_of_improvement(x: Sequence[float], y: Sequence[float], higher_is_better: bool) -> Optional[float]:
    """P(X beats Y) + P(X = Y) / 2 for X drawn from `x` and Y from `y` (every pair equally likely):
    the chance a random repeat of X does better than one of Y (Agarwal et al. 2021, `rliable`'s
    `probability_of_improvement`: the Mann-Whitney U statistic over len(x) len(y)). 0.5: no
    difference. None when a side is empty."""
    if not len(x) or not len(y):
        return None
    return float(_improvement(np.asarray(x, float)[None], np.asarray(y, float)[None], higher_is_better)[0])


def _improvement(x: np.ndarray, y: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """`probability_of_improvement` of each row of x (r, n) against the same row of y (r, m)."""
    diff = x[:, :, None] - y[:, None, :]
    wins = (diff > 0) if higher_is_better else (diff < 0)
    return (wins + 0.5 * (diff == 0)).mean(axis=(1, 2))


def stratified_bootstrap_ci(samples: Sequence[Sequence[float]], statistic: Callable[..., np.ndarray],
                            n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                            confidence: float = CONFIDENCE) -> tuple[Optional[float], Optional[float]]:
    """Percentile bootstrap interval of `statistic(*resamples)`, each sample resampled with
    replacement within itself (its stratum), `n_boot` times: `statistic` gets one (n_boot, n_i)
    array per sample and returns n_boot numbers. None when a sample has fewer than two values."""
    arrays = [np.sort(np.asarray(s, dtype=float)) for s in samples]  # sorted: as bootstrap_ci
    if any(len(a) < 2 for a in arrays):
        return None, None
    rng = np.random.default_rng(seed)
    resamples = [a[rng.integers(0, len(a), size=(n_boot, len(a)))] for a in arrays]
    values = statistic(*resamples)
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def improvement_ci(x: Sequence[float], y: Sequence[float], higher_is_better: bool,
                   **kwargs) -> tuple[Optional[float], Optional[float]]:
    """Stratified bootstrap interval of `probability_of_improvement(x, y)` (x and y each resampled
    within itself, as `rliable` does per task)."""
    return stratified_bootstrap_ci([x, y], lambda a, b: _improvement(a, b, higher_is_better), **kwargs)


# --- how many trials were needed ----------------------------------------------------------------

def expected_best(values: Sequence[float], n: int, higher_is_better: bool = True,
                  replacement: bool = False) -> float:
    """The expected best of `n` trials drawn from the `N` observed `values` (Dodge et al.'s
    expected validation performance; for a loss, `higher_is_better=False`, the expected minimum).

    With the values sorted, v(1) <= ... <= v(N), for the maximum:

    - `replacement=False` (default): n trials drawn without replacement, the unbiased estimator
      of E[max of n i.i.d. trials] (a U-statistic; Dodge et al. 2021, "Expected validation
      performance and estimation of a random variable's maximum", Findings of EMNLP):
      sum_i v(i) C(i-1, n-1) / C(N, n), for n <= N.
    - `replacement=True`: n draws from the empirical distribution, Dodge et al. 2019 ("Show your
      work", EMNLP) eq. 1 with the empirical CDF: sum_i v(i) [(i/N)^n - ((i-1)/N)^n]. Defined for
      any n, but biased low (a draw can repeat a value); the 2021 paper measures that bias.

    Both are 1 trial = the mean and n = N (without replacement) = the best observed.
    """
    v = np.sort(np.asarray(values, dtype=float))
    if not higher_is_better:
        return -expected_best(-v, n, True, replacement)
    big_n = len(v)
    if big_n == 0 or n < 1 or (not replacement and n > big_n):
        raise ValueError(f"expected_best: n={n} trials from {big_n} values")
    i = np.arange(1, big_n + 1)
    if replacement:
        weights = (i / big_n) ** n - ((i - 1) / big_n) ** n
    else:  # C(i-1, n-1) / C(N, n) in logs (no overflow for hundreds of trials)
        from scipy.special import gammaln

        log_c = lambda a, b: gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)  # noqa: E731
        weights = np.where(i >= n, np.exp(log_c(np.maximum(i - 1, n - 1), n - 1) - log_c(big_n, n)), 0.0)
    return float(np.dot(weights, v))


def expected_best_curve(values: Sequence[float], higher_is_better: bool = True) -> list[float]:
    """`expected_best` for n = 1 .. N (without replacement): the expected best after each trial."""
    return [expected_best(values, n, higher_is_better) for n in range(1, len(values) + 1)]



MIN_IMPORTANCE_JOBS = 4  # fewer finished jobs leave a forest nothing to split
NOT_SET = "(not set)"  # a key a job has no value for (its param does not apply, e.g. reg.target with reg=none)


def importances(points: Sequence[dict[str, Optional[str]]], values: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Each key's share of the variance of `values` over the configurations `points` (key -> value as
    text, one dict per job), by Optuna's fANOVA (Hutter et al., ICML 2014: a random forest fitted to
    the jobs, its variance decomposed per key), summing to 1, largest first. Keys with numbers only
    are numeric (log-scaled when they span a factor of 10 or more), the others categories. Grid
    sweeps and searches alike: the jobs are handed to Optuna as finished trials of a study of their
    own, in memory. Keys with one value are left out; {} when fewer than `MIN_IMPORTANCE_JOBS`."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    keys = [k for k in dict.fromkeys(k for p in points for k in p) if len({p.get(k) for p in points}) > 1]
    if len(values) < MIN_IMPORTANCE_JOBS or not keys:
        return {}
    distributions, params = {}, [{} for _ in points]
    for key in keys:
        raw = [p.get(key) for p in points]
        numbers = [_number(v) for v in raw]
        if all(n is not None for n in numbers):
            low, high = min(numbers), max(numbers)
            distributions[key] = FloatDistribution(low, high, log=low > 0 and high / low >= 10)
            column = numbers
        else:
            column = [NOT_SET if v is None else str(v) for v in raw]
            distributions[key] = CategoricalDistribution(sorted(set(column)))
        for row, value in zip(params, column):
            row[key] = value
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for row, value in zip(params, values):
        study.add_trial(optuna.trial.create_trial(params=row, distributions=distributions, value=float(value)))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    found = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    return dict(sorted(found.items(), key=lambda item: -item[1]))


def _number(value: Optional[str]) -> Optional[float]:
    try:
        number = float(value) if value is not None and str(value).lower() not in ("true", "false") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def pareto_front(points: Sequence[Sequence[float]], higher_is_better: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points: no other point is at least as good on every objective and
    better on one (each objective's direction in `higher_is_better`), in the order given."""
    signs = np.where(np.asarray(higher_is_better), -1.0, 1.0)  # as costs: lower is better on every axis
    cost = np.asarray(points, float) * signs
    return [i for i, c in enumerate(cost)
            if not any(np.all(o <= c) and np.any(o < c) for j, o in enumerate(cost) if j != i)]
