"""The shared batched backtracking line search, by hand-worked cases."""
import numpy as np

from relunet.linesearch import backtrack


def parabola(X):
    return np.sum(X ** 2, axis=1), 2 * X


def test_backtracking_by_hand():
    # row 0: E = x^2 from x = 1 along -grad (d = -2, slope -4): step 1 lands on E = 1,
    # not below 1 - 4e-4; step 1/2 lands on 0: accepted. Row 1: uphill, never accepted.
    X = np.array([[1.0], [1.0]])
    E, G = parabola(X)
    d = np.array([[-2.0], [2.0]])
    slope = np.sum(G * d, axis=1)
    step, found, E_new, G_new, evals = backtrack(parabola, X, E, d, slope, 1e-4,
                                                 max_halvings=5)
    assert step.tolist() == [0.5, 0.0] and found.tolist() == [True, False]
    assert E_new[0] == 0.0 and G_new[0, 0] == 0.0 and E_new[1] == E[1]
    assert evals.tolist() == [2, 5]


def test_strict_refuses_a_flat_step_that_armijo_accepts():
    def flat(X):
        return np.ones(len(X)), np.zeros_like(X)
    X = np.zeros((1, 3))
    d = np.ones((1, 3))
    for strict, expect in ((False, [1.0]), (True, [0.0])):
        step, found, *_ = backtrack(flat, X, np.ones(1), d, np.zeros(1), 1e-4, strict=strict)
        assert step.tolist() == expect and found[0] == (not strict)
