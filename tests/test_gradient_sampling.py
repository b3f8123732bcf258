"""Gradient sampling (relunet.gradient_sampling) against closed forms on analytic
piecewise-smooth surfaces: a minimum ON a kink, certified, where the single
gradient stays large."""
import numpy as np
import pytest

from relunet.gradient_sampling import gradient_sampling, min_norm_point
from relunet.neb_surfaces import crease_well

A, C, TILT = 2.0, 0.5, 0.5


def tilted_crease(X):
    """crease_well + TILT * y: E = (x^2 - 1)^2 + A |y - C x^2| + TILT y.
    Across the crease the V (slopes A +- TILT, both signs since A > TILT) keeps the
    minimum on it; along it E = (u - 1)^2 + TILT C u, u = x^2, so the minima are
    at u* = 1 - TILT C / 2, y* = C u*, with E* = TILT C - (TILT C)^2 / 4."""
    E, G = crease_well(X, a=A, c=C)
    X = np.atleast_2d(X)
    return E + TILT * X[:, 1], G + np.array([0.0, TILT])


U_STAR = 1 - TILT * C / 2
E_STAR = TILT * C - (TILT * C) ** 2 / 4


def test_min_norm_point_closed_forms(rng):
    P = np.array([[[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]],    # segment: its midpoint (1, 0)
                  [[1.0, 0.0], [-1.0, 0.5], [0.0, -2.0]],   # a triangle around 0
                  [[3.0, 4.0], [3.0, 4.0], [6.0, 8.0]]])    # nearest vertex (3, 4)
    g, nrm = min_norm_point(P)
    np.testing.assert_allclose(g, [[1, 0], [0, 0], [3, 4]], atol=1e-12)
    np.testing.assert_allclose(nrm, [1, 0, 5], atol=1e-12)
    # three random points in the plane against a brute-force search over the simplex
    Q = rng.standard_normal((4, 3, 2)) + np.array([2.0, 0.0])
    g, nrm = min_norm_point(Q)
    s = np.linspace(0, 1, 401)
    u1, u2 = np.meshgrid(s, s)
    keep = u1 + u2 <= 1
    W = np.stack([u1[keep], u2[keep], 1 - u1[keep] - u2[keep]], axis=1)
    for k in range(4):
        brute = np.linalg.norm(W @ Q[k], axis=1).min()
        assert nrm[k] <= brute + 1e-12 and nrm[k] >= brute - 1e-2


def test_certifies_the_kink_minimum_of_the_tilted_crease():
    X0 = np.array([[0.6, 0.9], [-0.5, -0.3], [1.5, 0.2], [0.3, 0.0]])
    E0 = tilted_crease(X0)[0]
    r = gradient_sampling(tilted_crease, X0, radius=1e-2, radius_min=1e-8, tol=1e-7,
                          n_samples=20)
    assert np.all(r.certified), r.reason
    # either well (a long first step may cross the barrier); on the crease, at u*
    np.testing.assert_allclose(np.abs(r.X[:, 0]), np.sqrt(U_STAR), rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.X[:, 1], C * U_STAR, rtol=0, atol=1e-6)
    # E - E* ~ slope of the V (A + TILT) x distance from the crease (<~ radius_min)
    assert np.all(r.energy >= E_STAR - 1e-12) and np.all(r.energy <= E_STAR + 5e-8)
    assert np.all(r.energy < E0) and np.all(r.measure <= 1e-7)
    # the point sits on the kink: one gradient there is far from zero (the jump),
    # the sampled hull is not
    g = tilted_crease(r.X)[1]
    assert np.all(np.linalg.norm(g, axis=1) > 0.3)


def test_smooth_minimum_and_batch_independence():
    H = np.array([[3.0, 1.0], [1.0, 2.0]])
    xm = np.array([0.3, -0.7])

    def quad(X):
        d = np.atleast_2d(X) - xm
        return 0.5 * np.einsum("ni,ij,nj->n", d, H, d), d @ H

    X0 = np.array([[1.0, 1.0], [-2.0, 0.5], [0.0, 0.0]])
    r = gradient_sampling(quad, X0, tol=1e-9, radius_min=1e-9)
    assert np.all(r.certified)
    np.testing.assert_allclose(r.X, np.tile(xm, (3, 1)), atol=1e-8)
    alone = gradient_sampling(quad, X0[1:2], tol=1e-9, radius_min=1e-9)
    assert np.array_equal(alone.X[0], r.X[1]) and alone.iterations[0] == r.iterations[1]


def test_a_slope_is_not_certified():
    """A plain slope: the hull of sampled gradients is the slope itself."""
    def ramp(X):
        X = np.atleast_2d(X)
        return X @ np.array([1.0, 2.0]), np.tile([1.0, 2.0], (len(X), 1))
    r = gradient_sampling(ramp, np.zeros((1, 2)), max_iter=5)
    assert not r.certified[0] and abs(r.measure[0] - np.sqrt(5)) < 1e-9
    assert r.energy[0] < 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(radius=0.0), "radius must be"), (dict(radius_min=1.0, radius=0.1), "radius_min must"),
    (dict(shrink=1.0), "shrink must"), (dict(n_samples=0), "n_samples must"),
    (dict(max_iter=0), "max_iter must"), (dict(tol=float("nan")), "tol must")])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_sampling(tilted_crease, np.zeros((1, 2)), **kwargs)
    with pytest.raises(ValueError, match="efun must be callable"):
        gradient_sampling(None, np.zeros((1, 2)))
