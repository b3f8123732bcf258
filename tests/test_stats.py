"""Tests for relunet.stats: lowess against brute-force weighted least squares,
logistic regression against scipy.optimize and finite differences."""
import math
import time
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

from relunet.stats import LogisticFit, logistic_fit, lowess


# ----------------------------------------------------------------------------
# lowess: independent brute-force reference
# ----------------------------------------------------------------------------
def _tricube_weights(x, x0, frac, r=None):
    """Cleveland's weights at x0 by sorting all distances (no windows); r nearest
    points, by default floor(frac n) (at least 2) as in Cleveland's code and R."""
    d = np.abs(x - x0)
    if r is None:
        r = max(2, int(math.floor(frac * x.size + 1e-7)))
    h = np.sort(d)[r - 1]
    if h == 0:
        return (d == 0).astype(float)
    return np.clip(1 - (d / h) ** 3, 0, None) ** 3


def _wls_at(x, y, x0, w):
    """Intercept of the weighted line y ~ a + b (x - x0), via lstsq."""
    keep = w > 0
    A = np.column_stack([np.ones(keep.sum()), x[keep] - x0]) * np.sqrt(w[keep])[:, None]
    coef, *_ = np.linalg.lstsq(A, y[keep] * np.sqrt(w[keep]), rcond=None)
    return coef[0]


def _brute_lowess(x, y, x0s, frac, rob=None, r=None):
    rob = np.ones_like(x) if rob is None else rob
    return np.array([_wls_at(x, y, x0, _tricube_weights(x, x0, frac, r) * rob)
                     for x0 in x0s])


def test_lowess_neighbour_count_rounds_down_as_cleveland_and_r():
    from relunet.stats import neighbours
    # R's clowess: ns = max(2, min(n, (int)(f * n + 1e-7)))
    assert neighbours(0.3, 512) == 153          # 153.6 -> 153 (ceil would give 154)
    assert neighbours(2 / 3, 100) == 66
    assert neighbours(0.57, 100) == 57          # 0.57 * 100 = 56.99999999999999 in fp
    assert neighbours(0.3, 10) == 3 and neighbours(1.0, 7) == 7
    assert neighbours(0.01, 50) == 2 and neighbours(0.5, 1) == 1


def test_lowess_fig5_size_matches_bruteforce_with_floor_neighbours(rng):
    # Fig. 5's size: n = 512, frac = 0.3 -> 153 neighbours, not 154
    x = rng.uniform(0.0, 2.0, 512)
    y = (x > 1).astype(float) + rng.normal(0, 0.1, x.size)
    xv = np.linspace(0.0, 2.0, 9)
    got = lowess(x, y, frac=0.3, xvals=xv)
    np.testing.assert_allclose(got, _brute_lowess(x, y, xv, 0.3, r=153), rtol=0, atol=1e-10)
    assert np.max(np.abs(got - _brute_lowess(x, y, xv, 0.3, r=154))) > 1e-5


@pytest.mark.parametrize("frac", [0.1, 0.25, 0.5, 2 / 3, 1.0])
def test_lowess_reproduces_straight_line(rng, frac):
    x = rng.uniform(-1.0, 2.0, 60)
    y = 1.5 - 0.7 * x
    xs, ys = lowess(x, y, frac=frac)
    np.testing.assert_array_equal(xs, np.sort(x))
    np.testing.assert_allclose(ys, 1.5 - 0.7 * xs, rtol=0, atol=1e-12)
    xv = np.linspace(-1.5, 2.5, 17)  # including extrapolation beyond the data
    np.testing.assert_allclose(lowess(x, y, frac=frac, xvals=xv), 1.5 - 0.7 * xv,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("frac", [0.15, 0.4, 0.8])
def test_lowess_matches_bruteforce_wls(rng, frac):
    x = np.round(rng.uniform(0.0, 3.0, 80), 1)  # rounding makes ties
    y = np.sin(2 * x) + rng.normal(0, 0.2, x.size)
    xs, ys = lowess(x, y, frac=frac)
    np.testing.assert_allclose(ys, _brute_lowess(x, y, xs, frac), rtol=0, atol=1e-10)
    xv = np.array([-0.3, 0.05, 1.234, 2.0, 3.3])
    np.testing.assert_allclose(lowess(x, y, frac=frac, xvals=xv),
                               _brute_lowess(x, y, xv, frac), rtol=0, atol=1e-10)


def test_lowess_one_robustness_iteration_matches_bruteforce(rng):
    # Cleveland 1979 Sec. 2: residuals of the plain fit -> bisquare(e / 6 median|e|)
    x = rng.uniform(0.0, 1.0, 50)
    y = x**2 + rng.standard_t(2, x.size) * 0.1
    fit0 = _brute_lowess(x, y, x, 0.5)
    e = y - fit0
    u = np.clip(np.abs(e) / (6 * np.median(np.abs(e))), 0, 1)
    fit1 = _brute_lowess(x, y, x, 0.5, rob=(1 - u**2) ** 2)
    o = np.argsort(x, kind="stable")
    np.testing.assert_allclose(lowess(x, y, frac=0.5, it=1)[1], fit1[o], atol=1e-10)


def test_lowess_robustness_resists_outlier(rng):
    x = np.linspace(0.0, 1.0, 101)
    y = 2 * x + rng.normal(0, 0.02, x.size)
    y[50] += 10.0  # gross outlier at x = 0.5
    plain = lowess(x, y, frac=0.3, it=0)[1]
    robust = lowess(x, y, frac=0.3, it=3)[1]
    # r = floor(0.3 * 101) = 30 neighbours: offsets -14..14 and one at 15, so
    # h = 15 grid steps (weight 0 at 15); the weights are symmetric about x = 0.5,
    # so the local line's value there is the weighted mean, lifted by
    # 10 * 1 / sum_k (1 - (|k|/15)^3)^3 = 10 / 17.35 ~ 0.576
    lift = 10.0 / np.sum((1 - (np.abs(np.arange(-14, 15)) / 15) ** 3) ** 3)
    assert abs(plain[50] - 1.0 - lift) < 0.02 and lift > 0.5
    assert abs(robust[50] - 1.0) < 0.03
    assert np.max(np.abs(robust - 2 * x)) < 0.05


def test_lowess_zero_one_data_stays_symmetric():
    # statsmodels issue #2108: iterated lowess on 10 zeros then 10 ones must be
    # antisymmetric about 1/2 (x -> 19 - x, y -> 1 - y maps the data to itself)
    x, y = np.arange(20.0), np.r_[np.zeros(10), np.ones(10)]
    for it in (0, 1, 2, 5):
        with warnings.catch_warnings():  # MAD = 0 must stop cleanly, no 0/0
            warnings.simplefilter("error")
            fit = lowess(x, y, it=it)[1]
        assert np.all(np.isfinite(fit))
        np.testing.assert_allclose(fit + fit[::-1], 1.0, atol=1e-12)
    fit = lowess(x, y, it=2)[1]  # MAD = 0 after one round -> iterations stop
    assert fit.min() >= 0.0 and fit.max() <= 1.0


def test_lowess_robust_iterations_collapse_on_basin_like_data(rng):
    # Why it=0 is the default: Fig. 5-like losses, ~0 for runs that return (70%)
    # and 0.1 for the rest. The plain fit tracks the mean loss, 0.3 * 0.1 = 0.03;
    # robustness weights discard the minority as outliers and the curve -> 0.
    # (Values for this seed: it=0..4 max 0.033, 0.027, 0.021, 0.005, 6e-13.)
    x = rng.uniform(0.0, 2.0, 400)
    loss = np.where(rng.random(x.size) < 0.7, 1e-12 * rng.random(x.size), 0.1)
    mean = loss.mean()
    plain = lowess(x, loss)[1]
    assert np.all(np.abs(plain - mean) < 0.015) and abs(mean - 0.03) < 0.01
    assert np.all(np.abs(lowess(x, loss, it=3)[1]) < 0.2 * mean)
    assert np.all(np.abs(lowess(x, loss, it=4)[1]) < 1e-9)  # then MAD ~0: stop


def test_lowess_ties_with_zero_bandwidth():
    # r = floor(1/3 * 9) = 3 nearest of x0 = 0 are the three tied zeros -> h = 0,
    # so the fit there is their mean (1 + 2 + 6) / 3 = 3, likewise at 1 and 2.
    x = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], float)
    y = np.array([1, 2, 6, 0, 0, 3, 5, 5, 8], float)
    xs, ys = lowess(x, y, frac=1 / 3)
    np.testing.assert_allclose(ys, [3, 3, 3, 1, 1, 1, 6, 6, 6], atol=1e-14)


def test_lowess_delta_interpolates_between_anchors(rng):
    x = rng.uniform(0.0, 1.0, 200)
    y = np.cos(3 * x) + rng.normal(0, 0.1, x.size)
    xs, exact = lowess(x, y, frac=0.3)
    _, fast = lowess(x, y, frac=0.3, delta=0.05)
    anchors = [0]  # greedy: next anchor is the first point beyond last + delta
    while True:
        j = np.searchsorted(xs, xs[anchors[-1]] + 0.05, side="right")
        if j >= xs.size:
            break
        anchors.append(j)
    anchors.append(xs.size - 1)
    assert 15 <= len(anchors) <= 25
    np.testing.assert_allclose(fast[anchors], exact[anchors], atol=1e-12)
    np.testing.assert_allclose(fast, np.interp(xs, xs[anchors], exact[anchors]),
                               atol=1e-12)


@pytest.mark.parametrize("kwargs, name", [
    (dict(x=np.ones((3, 2)), y=np.ones(6)), "x"),
    (dict(x=np.arange(3.0), y=np.ones(4)), "same length"),
    (dict(x=[0.0, np.nan, 1.0], y=[1.0, 2, 3]), "x"),
    (dict(x=[0.0, 1.0, 2.0], y=[1.0, np.inf, 3]), "y"),
    (dict(x=[], y=[]), "x"),
    (dict(x=[0.0, 1, 2], y=[1.0, 2, 3], frac=0.0), "frac"),
    (dict(x=[0.0, 1, 2], y=[1.0, 2, 3], frac=1.5), "frac"),
    (dict(x=[0.0, 1, 2], y=[1.0, 2, 3], it=-1), "it"),
    (dict(x=[0.0, 1, 2], y=[1.0, 2, 3], it=1.5), "it"),
    (dict(x=[0.0, 1, 2], y=[1.0, 2, 3], delta=-0.1), "delta"),
    (dict(x=[0.0, 1, 2], y=[1.0, 2, 3], xvals=[[0.5]]), "xvals"),
])
def test_lowess_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lowess(**kwargs)


# ----------------------------------------------------------------------------
# logistic regression
# ----------------------------------------------------------------------------
def _loglik(beta, x, y):
    eta = beta[0] + beta[1] * x
    return np.sum(y * eta - np.logaddexp(0, eta))


@pytest.fixture(scope="module")
def simulated():
    rng = np.random.default_rng(2017)
    b0, b1 = -3.0, 2.5
    x = rng.uniform(0.0, 2.4, 4000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(b0 + b1 * x)))).astype(float)
    return x, y, np.array([b0, b1]), logistic_fit(x, y)


def test_logistic_recovers_simulated_coefficients(simulated):
    x, y, true, fit = simulated
    assert fit.status == "ok" and fit.converged and not fit.separable
    assert fit.n == 4000 and 3 <= fit.n_iter <= 15
    assert np.all(np.abs(fit.coef - true) < 3 * fit.stderr)
    assert 0.05 < fit.stderr[1] < 0.15  # ~ 1/sqrt(n var(x) p(1-p)) ~ 0.08
    np.testing.assert_allclose(fit.loglik, _loglik(fit.coef, x, y), rtol=1e-12)
    assert fit.predict(fit.x_half) == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(fit.x_half, -fit.coef[0] / fit.coef[1])


def test_logistic_matches_direct_likelihood_maximisation(simulated):
    x, y, _, fit = simulated

    def nll(b):
        return -_loglik(b, x, y) / x.size

    def grad(b):
        p = 1 / (1 + np.exp(-(b[0] + b[1] * x)))
        return -np.array([np.sum(y - p), np.sum((y - p) * x)]) / x.size

    res = minimize(nll, np.zeros(2), jac=grad, method="BFGS",
                   options=dict(gtol=1e-11, maxiter=1000))
    np.testing.assert_allclose(fit.coef, res.x, rtol=1e-6, atol=1e-6)
    assert fit.loglik >= -res.fun * x.size - 1e-9  # Newton is at least as high


def test_logistic_stderr_matches_finite_difference_hessian(simulated):
    x, y, _, fit = simulated
    eps = 1e-3  # central second differences of the log-likelihood itself
    H = np.empty((2, 2))
    E = np.eye(2) * eps
    for i in range(2):
        for j in range(2):
            H[i, j] = (_loglik(fit.coef + E[i] + E[j], x, y)
                       - _loglik(fit.coef + E[i] - E[j], x, y)
                       - _loglik(fit.coef - E[i] + E[j], x, y)
                       + _loglik(fit.coef - E[i] - E[j], x, y)) / (4 * eps**2)
    se = np.sqrt(np.diag(np.linalg.inv(-H)))
    np.testing.assert_allclose(fit.stderr, se, rtol=1e-3)


def test_logistic_two_group_closed_form():
    # Saturated two-point design: p(0) = 1/5, p(1) = 2/3, so
    # b0 = logit(1/5) = -ln 4, b1 = logit(2/3) - logit(1/5) = ln 2 + ln 4 = 3 ln 2,
    # x_half = 2 ln 2 / (3 ln 2) = 2/3; Var b0 = 1/(5*.2*.8) = 1.25,
    # Var b1 = 1.25 + 1/(3 * 2/3 * 1/3) = 2.75.
    x = np.array([0, 0, 0, 0, 0, 1, 1, 1], float)
    y = np.array([0, 1, 0, 0, 0, 1, 0, 1], bool)
    fit = logistic_fit(x, y)
    np.testing.assert_allclose(fit.coef, [-math.log(4), 3 * math.log(2)], atol=1e-9)
    np.testing.assert_allclose(fit.stderr, np.sqrt([1.25, 2.75]), rtol=1e-8)
    assert fit.x_half == pytest.approx(2 / 3, abs=1e-9)
    np.testing.assert_allclose(fit.predict([0.0, 1.0]), [0.2, 2 / 3], atol=1e-9)


def test_logistic_symmetric_case_has_x_half_at_centre():
    # (x, y) -> (2 - x, 1 - y) maps the data to itself, so b0 + b1 * 1 = 0.
    x = np.array([0.0, 0.5, 1.5, 2.0, 0.5, 1.5])
    y = np.array([0, 0, 1, 1, 1, 0])
    fit = logistic_fit(x, y)
    assert fit.status == "ok"
    assert fit.x_half == pytest.approx(1.0, abs=1e-10)
    p = fit.predict(x)
    np.testing.assert_allclose([np.sum(y - p), np.sum((y - p) * x)], 0, atol=1e-10)


@pytest.mark.parametrize("value", [0, 1])
def test_logistic_constant_outcome_is_reported_fast(value):
    x = np.linspace(0, 2, 200_000)
    t = time.perf_counter()
    fit = logistic_fit(x, np.full(x.size, value))
    assert time.perf_counter() - t < 0.5
    assert fit.status == "constant" and fit.n_iter == 0 and not fit.converged
    np.testing.assert_array_equal(fit.predict([-1.0, 0.5, 3.0]), [value] * 3)
    assert math.isnan(fit.x_half) and fit.loglik == 0.0
    assert "constant" in fit.summary()


def test_logistic_separable_is_reported_with_step():
    x = np.arange(6.0)
    fit = logistic_fit(x, [0, 0, 0, 1, 1, 1])
    assert fit.status == "separable" and fit.separable and fit.n_iter == 0
    assert fit.x_half == 2.5 and fit.loglik == 0.0
    np.testing.assert_array_equal(fit.predict([0, 2.4, 2.5, 2.6, 9]),
                                  [0, 0, 0.5, 1, 1])
    down = logistic_fit(x, [1, 1, 1, 0, 0, 0])  # ones on the left
    np.testing.assert_array_equal(down.predict([0, 2.5, 9]), [1, 0.5, 0])


def test_logistic_quasi_separable_limit():
    # the tie at x = 2 holds one 0 and two 1s: the MLE diverges with p(2) -> 2/3,
    # so the supremum of the log-likelihood is 2 ln(2/3) + ln(1/3).
    x = np.array([0, 1, 2, 2, 2, 3, 4], float)
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    fit = logistic_fit(x, y)
    assert fit.status == "separable" and fit.x_half == 2.0
    np.testing.assert_allclose(fit.predict([1.0, 2.0, 3.0]), [0, 2 / 3, 1])
    sup = 2 * math.log(2 / 3) + math.log(1 / 3)
    assert fit.loglik == pytest.approx(sup, abs=1e-12)
    # a steep finite fit with p(2) = 2/3 (b0 + 2 b1 = ln 2) approaches it
    steep = _loglik(np.array([math.log(2) - 2 * 40.0, 40.0]), x, y)
    assert fit.loglik - 1e-12 < steep <= fit.loglik


def test_logistic_nearly_separated_converges():
    x = np.arange(6.0)
    y = np.array([0, 0, 1, 0, 1, 1])  # one overlap: the MLE exists
    fit = logistic_fit(x, y)
    assert fit.status == "ok" and fit.converged
    p = fit.predict(x)
    np.testing.assert_allclose([np.sum(y - p), np.sum((y - p) * x)], 0, atol=1e-10)
    assert fit.x_half == pytest.approx(2.5, abs=1e-10)  # symmetric about 2.5


def test_logistic_constant_x_is_degenerate():
    fit = logistic_fit([1.0, 1.0, 1.0, 1.0], [0, 1, 1, 1])
    assert fit.status == "degenerate"
    assert fit.coef[0] == pytest.approx(math.log(3)) and math.isnan(fit.coef[1])
    np.testing.assert_allclose(fit.predict([0.0, 5.0]), 0.75)


@pytest.mark.parametrize("args, kwargs, name", [
    (([0.0, 1.0], [0, 2]), {}, "y must contain only 0/1"),
    (([0.0, 1.0], [0, 0.5]), {}, "y must contain only 0/1"),
    (([0.0, 1.0], [0, np.nan]), {}, "y"),
    (([0.0, np.inf], [0, 1]), {}, "x"),
    ((np.zeros((2, 2)), [0, 1, 0, 1]), {}, "x must be a 1-D"),
    (([0.0, 1.0], [[0, 1]]), {}, "y must be a 1-D"),
    (([0.0, 1.0, 2.0], [0, 1]), {}, "same length"),
    (([], []), {}, "x must be non-empty"),
    (([0.0, 1.0], [0, 1]), dict(max_iter=0), "max_iter"),
    (([0.0, 1.0], [0, 1]), dict(tol=0.0), "tol"),
])
def test_logistic_bad_input(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        logistic_fit(*args, **kwargs)


def test_logistic_fit_is_frozen(simulated):
    fit = simulated[3]
    assert isinstance(fit, LogisticFit)
    with pytest.raises(AttributeError):
        fit.status = "ok"
    s = fit.summary()
    assert "[ok]" in s and f"{fit.coef[1]:.6g}" in s and "\n" not in s
