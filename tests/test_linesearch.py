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


def test_several_halvings_per_call_give_the_one_by_one_result(rng):
    # rows that need 0 to ~25 halvings (directions scaled up to 2^25 too long), against
    # the halvings done one at a time, row by row, in plain Python
    def quartic(X):
        return np.sum(X ** 4 - X ** 2, axis=1), 4 * X ** 3 - 2 * X
    X = rng.normal(size=(40, 5))
    E, G = quartic(X)
    d = -G * 2.0 ** rng.integers(0, 26, size=(40, 1))
    d[-1] = G[-1]                                         # uphill: never accepted
    slope = np.sum(G * d, axis=1)
    calls = []

    def counted(P):
        calls.append(len(P))
        return quartic(P)
    step, found, E_new, G_new, evals = backtrack(counted, X, E, d, slope, 1e-4)
    for i in range(40):
        s, k = 1.0, 0
        while k < 30:
            e, g = quartic(X[i:i + 1] + s * d[i:i + 1])
            k += 1
            if e[0] <= E[i] + 1e-4 * s * slope[i]:
                break
            s *= 0.5
        else:
            assert not found[i] and step[i] == 0.0 and evals[i] == 30 and E_new[i] == E[i]
            continue
        assert found[i] and step[i] == s and evals[i] == k
        assert E_new[i] == e[0] and np.array_equal(G_new[i], g[0])
    assert not found[-1] and len(calls) <= 6          # 1 + 4 + 8 + 16 + 1 trials per row
