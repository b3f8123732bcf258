"""The first stage of a quench: batched L-BFGS (relunet.quench.descend).

References: the dense BFGS inverse-Hessian update (Nocedal & Wright 2006,
eq. 6.17) for the two-loop recursion; a closed form (a dead network, whose
loss is mean((b_out - t)^2)); the numba loss kernel; the same networks run
alone.
"""
import numpy as np
import pytest

from relunet import Arch, init_stack, kernels
from relunet.neb_surfaces import crease_well
from relunet.quench import _two_loop, certify, descend, lbfgs, quench

from netcases import rosenbrock


def test_two_loop_is_the_dense_bfgs_inverse_hessian(rng):
    P, memory = 7, 5
    A = rng.standard_normal((P, P))
    A = A @ A.T + P * np.eye(P)                 # SPD: every pair has s.y > 0
    n_mem = np.array([0, 3, 5, 5])
    head = np.array([0, 3, 2, 0])               # ring buffers that have wrapped
    M = len(n_mem)
    S, Y = np.zeros((M, memory, P)), np.zeros((M, memory, P))
    rho = np.zeros((M, memory))
    pairs = []
    for m in range(M):
        order = [(head[m] - n_mem[m] + k) % memory for k in range(n_mem[m])]  # oldest first
        for slot in order:
            s = rng.standard_normal(P)
            S[m, slot], Y[m, slot] = s, A @ s
            rho[m, slot] = 1.0 / (s @ (A @ s))
        pairs.append([(S[m, k], Y[m, k]) for k in order])
    G = rng.standard_normal((M, P))
    d = _two_loop(G, S, Y, rho, n_mem, head)
    for m in range(M):
        if not pairs[m]:
            np.testing.assert_array_equal(d[m], -G[m])
            continue
        s_new, y_new = pairs[m][-1]
        H = (s_new @ y_new) / (y_new @ y_new) * np.eye(P)
        for s, y in pairs[m]:                    # H <- V^T H V + rho s s^T
            r = 1.0 / (s @ y)
            V = np.eye(P) - r * np.outer(y, s)
            H = V.T @ H @ V + r * np.outer(s, s)
        np.testing.assert_allclose(d[m], -H @ G[m], rtol=1e-10, atol=1e-12)


def test_lbfgs_lands_on_the_minimum_of_a_smooth_surface():
    """Rosenbrock's valley, minimum (1, 1), from the classic start and two others."""
    r = lbfgs(rosenbrock, np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0]]), max_iter=500)
    np.testing.assert_allclose(r.W, 1.0, rtol=0, atol=1e-9)
    assert np.all(r.reason == "gradient norm <= gtol") and np.all(r.iterations < 100)


def test_lbfgs_lands_on_the_kink_minima_of_the_crease_well():
    """crease_well: minima (+-1, c) at the bottom of a V-shaped crease (closed form in
    relunet.neb_surfaces); each start descends into the well on its side."""
    X0 = np.array([[0.6, 0.9], [-0.5, -0.3], [1.5, 0.2], [0.3, 0.0]])
    r = lbfgs(crease_well, X0, max_iter=2000)
    want = np.array([[1, 0.5], [-1, 0.5], [1, 0.5], [1, 0.5]])
    np.testing.assert_allclose(r.W, want, rtol=0, atol=1e-9)
    assert np.all(r.loss < 1e-18) and np.all(r.loss < crease_well(X0)[0])


def test_descend_finds_the_minimum_of_a_dead_network(rng):
    """Every unit dead: the loss is mean((b_out - t)^2), minimised at b_out = mean(t);
    every other gradient component is exactly 0, so nothing else may move."""
    arch = Arch(2, 3)
    w = np.zeros(arch.P)
    v = arch.unpack(w)
    for layer in (1, 2):
        v[arch.layer_blocks(layer)[1]][...] = -1.0
    v["bout"][...] = 0.3
    x = np.linspace(-1, 1, 17)
    t = rng.standard_normal(17)
    r = descend(w[None], arch, x, t, max_iter=50)
    wo = arch.unpack(r.W[0])
    assert r.reason[0] == "gradient norm <= gtol"
    np.testing.assert_allclose(wo["bout"][0], t.mean(), rtol=0, atol=1e-12)
    keep = np.ones(arch.P, bool)
    keep[arch.table[-1][2]] = False             # offset of b_out, the last block
    np.testing.assert_array_equal(r.W[0][keep], w[keep])
    assert r.iterations[0] <= 5


def test_descend_is_monotone_consistent_and_chunk_invariant():
    arch = Arch(2, 4)
    x = np.linspace(-1, 1, 40)
    t = np.sin(4 * x)
    W0 = init_stack(arch, range(6))
    L0 = kernels.loss(W0, arch, x, t)
    r = descend(W0, arch, x, t, max_iter=80)
    assert np.all(r.loss <= L0) and np.all(r.loss < L0)   # every network descends
    np.testing.assert_array_equal(r.loss, kernels.loss(r.W, arch, x, t))
    assert np.all(r.evaluations >= r.iterations + 1)
    alone = descend(W0[2:4], arch, x, t, max_iter=80)
    np.testing.assert_array_equal(alone.W, r.W[2:4])
    np.testing.assert_array_equal(alone.iterations, r.iterations[2:4])


def test_quench_runs_the_descent_first():
    arch = Arch(1, 3)
    x = np.linspace(-1, 1, 20)
    t = np.sin(3 * x)
    W0 = init_stack(arch, range(4))
    q = quench(W0, arch, x, t, max_iter=10, descent_iter=40)
    r = descend(W0, arch, x, t, max_iter=40)
    np.testing.assert_array_equal(q.descent_iterations, r.iterations)
    assert np.all(q.loss <= r.loss * (1 + 1e-15))            # stage 2 never climbs
    np.testing.assert_array_equal(certify(q.W, arch, x, t)["certified"], q.certified)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_iter=0), "max_iter"), (dict(memory=0), "memory"),
    (dict(max_step=-1.0), "max_step"), (dict(patience=1.5), "patience")])
def test_descend_bad_input(kwargs, match):
    arch = Arch(1, 2)
    x = np.linspace(-1, 1, 5)
    with pytest.raises(ValueError, match=match):
        descend(init_stack(arch, [0]), arch, x, x, **kwargs)
    with pytest.raises(ValueError, match="efun"):
        lbfgs("not a function", np.zeros((1, 2)))
    with pytest.raises(ValueError, match="finite"):
        lbfgs(rosenbrock, np.full((1, 2), np.nan))
    with pytest.raises(ValueError, match="descent_iter"):
        quench(init_stack(arch, [0]), arch, x, x, descent_iter=-1)
    with pytest.raises(ValueError, match="descent must be 'bfgs' or 'lbfgs'"):
        quench(init_stack(arch, [0]), arch, x, x, descent="newton")
    with pytest.raises(ValueError, match="method must be 'bfgs' or 'lbfgs'"):
        descend(init_stack(arch, [0]), arch, x, x, method="adam")
