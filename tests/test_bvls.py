"""The compiled BVLS (relunet.bvls) against scipy's lsq_linear(method="bvls") and NumPy's lstsq.

The kernel follows scipy's algorithm operation for operation; its LAPACK and BLAS
are scipy's build, NumPy's are another, so the comparison is to rounding here
(on the machine it was written on, the answers were identical bit for bit).
"""
import numpy as np
import pytest
from scipy.optimize import lsq_linear

from relunet.bvls import bvls01, lstsq


def problems(rng):
    """Random box-constrained problems: interior, on the bounds, mixed; with a ridge."""
    for m, n, scale in [(8, 3, 0.1), (20, 5, 3.0), (40, 12, 1.0), (141, 17, 2.0), (60, 30, 5.0),
                        (6, 6, 1.0), (30, 1, 4.0)]:
        for _ in range(6):
            A = rng.standard_normal((m, n)) * rng.uniform(0.1, 10, n)
            b = A @ rng.uniform(-scale, scale + 1, n) + 0.1 * rng.standard_normal(m)
            yield A, b
    # the quench's shape: a rank-deficient block plus a small ridge (kinks.hull_qp)
    for _ in range(6):
        n = 10
        A = rng.standard_normal((40, 4)) @ rng.standard_normal((4, n))
        A = np.vstack([A, 1e-8 * np.abs(A).max() * np.eye(n)])
        yield A, rng.standard_normal(50) * 3


def test_bvls01_is_scipys_bvls(rng):
    n_bound = 0
    for A, b in problems(rng):
        ref = lsq_linear(A, b, bounds=(0.0, 1.0), method="bvls", tol=1e-14)
        u = bvls01(A, b, tol=1e-14)
        scale = max(np.abs(ref.x).max(), 1.0)
        np.testing.assert_allclose(u, ref.x, rtol=0, atol=1e-9 * scale)
        # and it is the constrained minimum: the KKT conditions
        g = A.T @ (A @ u - b)
        inner = (u > 1e-9) & (u < 1 - 1e-9)
        assert np.all(np.abs(g[inner]) <= 1e-7 * max(np.abs(A.T @ b).max(), 1.0))
        assert np.all(g[u <= 1e-9] >= -1e-7 * max(np.abs(A.T @ b).max(), 1.0))
        n_bound += int(np.sum(~inner))
    assert n_bound > 50          # the bounds were active in many problems, not just inside


def test_bvls01_edge_cases():
    A = np.eye(3)
    np.testing.assert_array_equal(bvls01(A, np.array([0.5, 0.25, 0.0])), [0.5, 0.25, 0.0])
    np.testing.assert_array_equal(bvls01(A, np.array([-2.0, 3.0, 0.5])), [0.0, 1.0, 0.5])
    assert bvls01(np.zeros((4, 0)), np.zeros(4)).shape == (0,)
    with pytest.raises(ValueError, match="m >= n"):
        bvls01(np.ones((2, 3)), np.ones(2))


def test_lstsq_is_numpys(rng):
    for m, n in [(10, 3), (3, 10), (136, 20), (20, 156)]:
        A, b = rng.standard_normal((m, n)), rng.standard_normal(m)
        np.testing.assert_allclose(lstsq(A, b), np.linalg.lstsq(A, b, rcond=None)[0],
                                   rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="b"):
        lstsq(np.ones((3, 2)), np.ones(2))
