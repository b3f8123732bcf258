"""Transition-state refinement (P-RFO with the exact Hessian; Newton on the stationarity
conditions) on surfaces and networks with known saddles."""
import numpy as np
import pytest

from relunet.neb_surfaces import MB_SADDLES, double_well, mueller_brown
from relunet.saddle import find_saddles, prfo_step


def fd_hessian(efun):
    """grad_hess from an analytic gradient and central differences of it."""
    def gh(X):
        E, G = efun(X)
        D, eps = X.shape[1], 1e-6
        H = np.empty((len(X), D, D))
        for j in range(D):
            e = np.zeros(D)
            e[j] = eps
            H[:, :, j] = (efun(X + e)[1] - efun(X - e)[1]) / (2 * eps)
        return E, G, 0.5 * (H + np.transpose(H, (0, 2, 1)))
    return gh


def test_mueller_brown_saddles_from_nearby_starts():
    starts = np.array([MB_SADDLES["AC"][0], MB_SADDLES["CB"][0]]) + [[0.04, -0.03], [-0.03, 0.04]]
    r = find_saddles(fd_hessian(mueller_brown), starts, gtol=1e-8)
    assert r.converged.all() and (r.index == 1).all() and list(r.kind) == ["saddle"] * 2
    for k, key in enumerate(("AC", "CB")):
        (xy, e) = MB_SADDLES[key]                  # tabulated to 3 decimals
        np.testing.assert_allclose(r.X[k], xy, atol=1.5e-3)
        assert abs(r.E[k] - e) < 0.01
    assert np.all(np.linalg.norm(mueller_brown(r.X)[1], axis=1) <= 1e-8)


def test_double_well_saddle_is_the_origin_with_barrier_one():
    """E = (x0^2 - 1)^2 + (x1 - c x0^2)^2: the only saddle is 0, E = 1 exactly."""
    def efun(X):
        return double_well(X, c=0.5)
    r = find_saddles(fd_hessian(efun), np.array([[0.3, 0.2], [-0.25, -0.1]]), gtol=1e-10)
    assert r.converged.all()
    np.testing.assert_allclose(r.X, 0.0, atol=1e-9)
    np.testing.assert_allclose(r.E, 1.0, rtol=0, atol=1e-15)


def test_zero_modes_are_projected_out():
    """A flat third coordinate: the Hessian has an exact zero mode; with it removed the
    step never moves along it and the saddle is found in the other two."""
    def efun(X):
        E, G = double_well(X[:, :2], c=0.0)
        return E, np.concatenate([G, np.zeros((len(X), 1))], axis=1)
    modes = lambda x: np.array([[0.0, 0.0, 1.0]])  # noqa: E731
    r = find_saddles(fd_hessian(efun), np.array([[0.2, 0.1, 0.7]]), modes=modes)
    assert r.converged[0] and r.index[0] == 1
    np.testing.assert_allclose(r.X[0], [0.0, 0.0, 0.7], atol=1e-9)


def test_prfo_step_climbs_the_lowest_mode_and_descends_the_rest():
    H = np.diag([-2.0, 3.0])
    g = np.array([0.5, 0.5])
    s, lam = prfo_step(g, H, radius=10.0)
    assert s[0] > 0 and s[1] < 0                   # uphill along mode 0, downhill along 1
    np.testing.assert_allclose(lam, [-2.0, 3.0])
    s_small, _ = prfo_step(g, H, radius=1e-3)
    np.testing.assert_allclose(np.linalg.norm(s_small), 1e-3)


def test_a_minimum_is_not_a_saddle():
    r = find_saddles(fd_hessian(lambda X: double_well(X, c=0.0)), np.array([[1.0, 0.0]]),
                     max_iter=5)
    assert not r.converged[0] and r.index[0] == 0 and r.kind[0] == "not-index-1"


def test_hessians_only_where_steps_are_accepted_change_nothing():
    """With ``grad`` the Hessian is computed only at accepted points: the same saddles,
    bit for bit, from fewer Hessian evaluations (some steps from far starts are refused)."""
    calls = []

    def efun(X):
        return double_well(X, c=0.5)
    gh = fd_hessian(efun)

    def counted(X):
        calls.append(len(X))
        return gh(X)
    starts = np.array([[0.3, 0.2], [-0.25, -0.1], [0.9, 0.7], [-0.8, 0.9]])
    a = find_saddles(counted, starts, gtol=1e-10, radius=0.3)
    n_full = sum(calls)
    calls.clear()
    b = find_saddles(counted, starts, gtol=1e-10, radius=0.3, grad=efun)
    for f in ("X", "E", "gnorm", "index", "converged", "iterations", "kind"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert sum(calls) < n_full


def test_newton_stationary_finds_a_known_smooth_saddle_of_a_network():
    """Hand-worked: y = v relu(a x + b) + c on x = -1..1 (9 points), t = x + 1/2. At
    a = v = 0, b = 2, c = 1/2 the unit is on everywhere (z = 2), the residual is -x and
    the gradient vanishes (dL/dv = 2 mean(-x b) = 0, dL/da = dL/db = 0 as v = 0, dL/dc =
    2 mean(-x) = 0): a stationary point with L = var(t). Along b the loss is flat (the
    unit's rescaling orbit (0, 2 alpha, 0), removed). On (a, v, c) the Hessian is
    [[0, -2 m, 0], [-2 m, 8, 4], [0, 4, 2]] with m = mean(x^2): determinant -8 m^2 < 0
    and trace 10 > 0, so exactly one negative curvature: an index-1 saddle. From 1e-3
    away, Newton on the stationarity conditions lands on it (no loss decrease is asked
    of it: the quench's descent would leave it)."""
    from relunet import Arch
    from relunet.saddle import newton_stationary
    arch = Arch(1, 1)
    x = np.linspace(-1.0, 1.0, 9)
    t = x + 0.5
    w = arch.pack({"W1": [[0.0]], "b1": [2.0], "Wout": [[0.0]], "bout": [0.5]})
    rng = np.random.default_rng(3)
    r = newton_stationary(w + 1e-3 * rng.standard_normal(arch.P), arch, x, t)
    assert r.certified[0] and r.type[0] == "saddle" and r.index[0] == 1
    np.testing.assert_allclose(r.E[0], np.var(t), rtol=1e-12)
    v = arch.unpack(r.X[0])
    assert abs(v["W1"][0, 0]) < 1e-9 and abs(v["Wout"][0, 0]) < 1e-9
    np.testing.assert_allclose(v["bout"][0], 0.5, atol=1e-9)
    assert r.iterations[0] <= 10


def test_newton_stationary_returns_a_displaced_kink_minimum_and_checks_input():
    """A network quenched onto a certified kink minimum, displaced by 1e-8: Newton on the
    stationarity conditions along the kinks it nearly sits on puts it back (certified on
    kinks, typed a kink minimum, the same loss to rounding). Bad input."""
    from relunet.quench import classify
    from relunet.saddle import newton_stationary

    from netcases import tiny_quench_case
    arch, x, t, _, q, rng = tiny_quench_case()
    cl = classify(q.W, arch, x, t)
    kk = np.flatnonzero(cl["type"] == "kink-minimum")
    assert kk.size >= 1
    W = q.W[kk] + 1e-8 * rng.standard_normal((kk.size, arch.P))
    r = newton_stationary(W, arch, x, t)
    assert np.all(r.certified) and np.all(r.type == "kink-minimum") and np.all(r.index == 0)
    np.testing.assert_allclose(r.E, q.loss[kk], rtol=1e-10)
    with pytest.raises(ValueError, match="max_iter"):
        newton_stationary(W, arch, x, t, max_iter=-1)
    with pytest.raises(ValueError, match="max_step"):
        newton_stationary(W, arch, x, t, max_step=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        newton_stationary(np.full(arch.P, np.nan), arch, x, t)
