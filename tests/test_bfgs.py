"""Full BFGS with the weak-Wolfe line search (relunet.bfgs), and the quench's SQP step.

References: the dense inverse BFGS update (Nocedal & Wright 2006, eq. 6.17) written
as V^T H V + rho s s^T; line searches worked by hand on |x - 1.1|; Rosenbrock's
and the nonsmooth Nesterov-Chebyshev-Rosenbrock function's known minimisers (the
latter is Lewis & Overton's own test, minimum at (1, 1) on a kink); the same
points run alone; a certified kink minimum of a network, displaced.
"""
import numpy as np
import pytest

from relunet import Arch, init_stack, kernels
from relunet.bfgs import (
    _direction,
    _direction_numpy,
    _update,
    _update_numpy,
    bfgs,
    weak_wolfe,
)
from relunet.kinks import preactivations
from relunet.neb_surfaces import crease_well
from relunet.quench import _manifold_step, certify, symmetry_modes

from netcases import rosenbrock, tiny_quench_case


def ncr(X):
    """Nonsmooth Nesterov-Chebyshev-Rosenbrock (Lewis & Overton 2013, Sec. 5.3, n = 2):
    1/4 (x - 1)^2 + |y - 2 x^2 + 1|, minimum 0 at (1, 1), on the kink y = 2 x^2 - 1."""
    x, y = X[:, 0], X[:, 1]
    r = y - 2 * x * x + 1
    s = np.sign(r)
    E = 0.25 * (x - 1) ** 2 + np.abs(r)
    G = np.stack([0.5 * (x - 1) - 4 * x * s, s], axis=1)
    return E, G


def abs_line(X):
    """|x - 1.1| in one dimension."""
    return np.abs(X[:, 0] - 1.1), np.sign(X[:, :1] - 1.1)


def test_kernels_are_their_numpy_twins_and_the_dense_update(rng):
    P, M = 9, 5
    A = rng.standard_normal((M, P, P))
    H = A @ A.transpose(0, 2, 1) + np.eye(P)
    G = rng.standard_normal((M, P))
    rows = np.array([3, 0, 4])
    np.testing.assert_array_equal(_direction(H, rows, G[:3]), _direction_numpy(H[rows], G[:3]))
    np.testing.assert_allclose(_direction(H, rows, G[:3]),
                               -np.einsum("mpq,mq->mp", H[rows], G[:3]), rtol=1e-13)
    S = rng.standard_normal((3, P))
    Y = S @ (2 * np.eye(P)) + 0.3 * rng.standard_normal((3, P))
    first = np.array([True, False, False])
    H1, H2 = H.copy(), H[rows].copy()
    G_new = rng.standard_normal((3, P))
    D = _update(H1, rows, S, Y, first, G_new)
    np.testing.assert_array_equal(D, _direction(H1, rows, G_new))   # the same pass, same bits
    _update_numpy(H2, S, Y, first)
    np.testing.assert_allclose(H1[rows], H2, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(H1[[1, 2]], H[[1, 2]])        # other rows untouched
    for i, m in enumerate(rows):
        s, y = S[i], Y[i]
        r = 1.0 / (s @ y)
        H0 = (s @ y) / (y @ y) * np.eye(P) if first[i] else H[m]
        V = np.eye(P) - r * np.outer(y, s)
        want = V.T @ H0 @ V + r * np.outer(s, s)
        np.testing.assert_allclose(H1[m], want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(H1[m] @ y, s, rtol=1e-10, atol=1e-10)   # secant equation


def test_weak_wolfe_steps_worked_by_hand():
    """From x = 0 on |x - 1.1| (slope -1 along d > 0):
    d = 3: t = 1 lands at 3 (E = 1.9 > 1.1 - 3e-4: too long), t = 1/2 at 1.5 (E = 0.4,
    slope +3 >= -1.5): accepted after 2 trials. d = 0.25: t = 1, 2, 4 stay left of the
    kink with slope -0.25 < -0.125 (too short, doubling), t = 8 lands at 2 (E = 0.9,
    slope +0.25): accepted after 4 trials."""
    X = np.zeros((2, 1))
    E, G = abs_line(X)
    d = np.array([[3.0], [0.25]])
    step, wolfe, E_new, G_new, evals = weak_wolfe(abs_line, X, E, d, np.sum(G * d, axis=1))
    np.testing.assert_array_equal(step, [0.5, 8.0])
    assert wolfe.all()
    np.testing.assert_array_equal(evals, [2, 4])
    np.testing.assert_allclose(E_new, [0.4, 0.9], rtol=1e-15)
    np.testing.assert_array_equal(G_new, [[1.0], [1.0]])
    # with the doubling capped at t = 3: 1, 2, then 3 (x = 0.75, still short) is taken
    step, wolfe, E_new, _, evals = weak_wolfe(abs_line, X[1:], E[1:], d[1:], np.array([-0.25]),
                                              t_max=3.0)
    assert step[0] == 3.0 and not wolfe[0] and evals[0] == 3
    np.testing.assert_allclose(E_new, [0.35], rtol=1e-15)


def test_weak_wolfe_without_a_wolfe_point_keeps_the_longest_armijo_step():
    """E = -x for x <= 1, then a wall: every step that passes Armijo is too short, every
    longer one fails it; the search ends on the longest Armijo point it tried."""
    def wall(X):
        x = X[:, 0]
        return np.where(x <= 1.0, -x, 1e3), np.where(x[:, None] <= 1.0, -1.0, 0.0)
    X = np.zeros((1, 1))
    step, wolfe, E_new, _, _ = weak_wolfe(wall, X, np.zeros(1), np.array([[0.3]]),
                                          np.array([-0.3]), max_trials=30)
    assert not wolfe[0] and 0.3 * step[0] <= 1.0
    assert 1.0 - 0.3 * step[0] < 0.3 * 2.0 ** -20          # bisected up to the wall
    np.testing.assert_allclose(E_new, -0.3 * step, rtol=1e-15)


def test_bfgs_lands_on_the_minimum_of_a_smooth_surface():
    r = bfgs(rosenbrock, np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0]]), max_iter=500)
    np.testing.assert_allclose(r.W, 1.0, rtol=0, atol=1e-8)
    assert np.all(r.reason == "gradient norm <= gtol") and np.all(r.iterations < 200)


def test_bfgs_lands_on_kink_minima():
    """Lewis & Overton's nonsmooth Rosenbrock (minimum on its kink) and the crease well
    (minima at the bottom of a V-shaped crease): BFGS descends onto the kink, where
    its line search finally fails (two of the first three) or the gradient vanishes."""
    r = bfgs(ncr, np.array([[-0.9, 1.3], [0.5, -0.7], [2.0, 0.0]]), max_iter=2000)
    np.testing.assert_allclose(r.W, 1.0, rtol=0, atol=1e-6)
    assert np.all(r.loss < 1e-12)
    X0 = np.array([[0.6, 0.9], [-0.5, -0.3], [1.5, 0.2], [0.3, 0.0]])
    r = bfgs(crease_well, X0, max_iter=2000)
    want = np.array([[1, 0.5], [-1, 0.5], [1, 0.5], [1, 0.5]])
    np.testing.assert_allclose(r.W, want, rtol=0, atol=1e-6)
    assert np.all(r.loss < crease_well(X0)[0])


def test_bfgs_rows_are_independent_of_the_stack_and_threads():
    """20 rows run on two threads; 3 of them alone on one: the same bits. The energy
    never increases along the way."""
    arch = Arch(2, 4)
    x = np.linspace(-1, 1, 40)
    t = np.sin(4 * x)
    W0 = init_stack(arch, range(20))

    def efun(V):
        return kernels.loss_and_grad(V, arch, x, t)
    L0 = efun(W0)[0]
    r = bfgs(efun, W0, max_iter=60)
    assert np.all(r.loss < L0)
    np.testing.assert_array_equal(r.loss, efun(r.W)[0])
    alone = bfgs(efun, W0[[4, 11, 17]], max_iter=60)
    np.testing.assert_array_equal(alone.W, r.W[[4, 11, 17]])
    np.testing.assert_array_equal(alone.evaluations, r.evaluations[[4, 11, 17]])
    short = bfgs(efun, W0[:3], max_iter=20)
    assert np.all(short.loss >= r.loss[:3])
    # a stack too big for MAX_H_BYTES runs in chunks of rows: the same bits
    import relunet.bfgs as B
    keep, B.MAX_H_BYTES = B.MAX_H_BYTES, 7 * 8 * W0.shape[1] ** 2     # 7 rows per chunk
    try:
        seen = []
        chunked = bfgs(efun, W0, max_iter=60, progress=lambda n, m: seen.append((n, m)))
    finally:
        B.MAX_H_BYTES = keep
    for f in ("W", "loss", "iterations", "evaluations", "reason"):
        np.testing.assert_array_equal(getattr(chunked, f), getattr(r, f))
    assert seen[-1] == (20, 20) and all(m == 20 for _, m in seen)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_iter=0), "max_iter"), (dict(max_step=0.0), "max_step"),
    (dict(patience=0), "patience"), (dict(c1=0.6, c2=0.5), "Wolfe")])
def test_bfgs_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bfgs(rosenbrock, np.zeros((1, 2)), **kwargs)
    with pytest.raises(ValueError, match="efun"):
        bfgs(None, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="finite"):
        bfgs(rosenbrock, np.full((1, 2), np.inf))


def test_sqp_step_returns_a_displaced_kink_minimum_to_its_kinks():
    """A network quenched onto a certified kink point, then displaced by 1e-8: the
    kinks it sat on are within TAU of 0 again, and the SQP step along them puts it
    back (certified, the same loss to rounding, within 1e-7 of where it was once moves
    along its rescaling orbit, on which the loss is exactly flat, are set aside)."""
    arch, x, t, _, q, rng = tiny_quench_case()
    kk = np.flatnonzero(q.kind == "kink")
    assert kk.size >= 1
    X, T = kernels.check_data(arch, x, t)
    for m in kk:
        w0 = q.W[m]
        w = w0 + 1e-8 * rng.standard_normal(arch.P)
        L = float(kernels.loss_ref(w[None], arch, x, t)[0])
        before = certify(w[None], arch, x, t)
        assert not before["certified"][0]
        for _ in range(4):
            step = _manifold_step(w, L, preactivations(w[None], arch, x)[0], arch, x, t, X, T)
            assert step is not None and step[1] <= L * (1 + 1e-15)
            w, L = step
        after = certify(w[None], arch, x, t)
        assert after["certified"][0] and after["kind"][0] == "kink"
        np.testing.assert_allclose(L, q.loss[m], rtol=1e-12)
        R = symmetry_modes(w0, arch)
        orbit, _ = np.linalg.qr(R[np.linalg.norm(R, axis=1) > 0].T)
        assert np.linalg.norm((w - w0) - orbit @ (orbit.T @ (w - w0))) < 1e-7


def test_descend_runs_each_network_in_a_compiled_loop_with_the_batched_bits():
    """descend() gives each network's BFGS one compiled loop (bfgs_networks: no Python
    between steps, its H in the core's cache); the batched driver bfgs() on the same
    kernel is its reference: the same points, losses, step and evaluation counts and
    stopping reasons, bit for bit, on rows that stop in each of the four ways, on one
    thread or two, and whatever the batches the progress reports come in."""
    from relunet.bfgs import bfgs_networks
    from relunet.fast.stack import kernel_and_data
    from relunet.quench import descend
    arch = Arch(2, 4)
    x = np.linspace(-1, 1, 40)
    t = kernels.forward(init_stack(arch, [99]), arch, x)[0] + 0.3 * np.sin(5 * x)
    W0 = init_stack(arch, range(21))
    ref = bfgs(kernels.loss_and_grad_fn(arch, x, t), W0, max_iter=1500)
    assert set(ref.reason) == {"gradient norm <= gtol", "iteration budget (1500) spent",
                               "line search failed along -grad (a kink)",
                               "loss stagnant for 25 steps"}
    seen = []
    got = descend(W0, arch, x, t, max_iter=1500, progress=lambda n, m: seen.append((n, m)))
    X, T = kernels.check_data(arch, x, t)
    mod, data = kernel_and_data(arch.K, arch.N, X, T)
    one = bfgs_networks(mod, data, W0, max_iter=1500, threads=1)
    for f in ("W", "loss", "iterations", "evaluations", "reason"):
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f))
        np.testing.assert_array_equal(getattr(one, f), getattr(ref, f))
    assert seen[-1] == (21, 21)
    np.testing.assert_array_equal(got.loss, kernels.loss(got.W, arch, x, t))
    with pytest.raises(ValueError, match="patience"):
        bfgs_networks(mod, data, W0, patience=0)
