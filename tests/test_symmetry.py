"""Tests of relunet.symmetry: rescaling/permutation symmetries and the canonical form."""
import numpy as np
import pytest
from scipy.optimize import minimize

from relunet.construct import WF_ARCH, build_wf
from relunet.kernels import forward_ref
from relunet.net import Arch, init_stack
from relunet.symmetry import (
    apply_permutation,
    apply_rescaling,
    canonicalize,
    dead_units,
    distance_modulo_symmetry,
    random_symmetry,
    rescale_min_norm,
    sort_units,
)

A34 = Arch(3, 4)
X_DENSE = np.linspace(-3.0, 3.0, 2001)


def random_nets(arch, M, seed=0):
    """Glorot weights plus non-zero biases (init_stack's biases are all zero)."""
    W = init_stack(arch, np.arange(M) + 100 * seed)
    rng = np.random.default_rng(seed)
    for name, shape, _ in arch.table:
        if name.startswith("b"):
            arch.unpack(W)[name][...] = rng.normal(0, 0.5, size=(M,) + shape)
    return W


def assert_same_function(W1, W2, arch):
    y1, y2 = forward_ref(W1, arch, X_DENSE), forward_ref(W2, arch, X_DENSE)
    np.testing.assert_allclose(y2, y1, rtol=1e-10, atol=1e-10 * np.abs(y1).max())


def unit_sums(W, arch):
    """Independent per-unit squared norms In (incoming + bias), Out (outgoing): (M, K, N)."""
    v = arch.unpack(np.atleast_2d(W))
    In = np.stack([(v[f"W{layer}"] ** 2).sum(2) + v[f"b{layer}"] ** 2
                   for layer in range(1, arch.K + 1)], 1)
    nxt = [f"W{layer}" for layer in range(2, arch.K + 1)] + ["Wout"]
    Out = np.stack([(v[n] ** 2).sum(1) for n in nxt], 1)
    return In, Out


# ---------------------------------------------------------------- primitives
def test_apply_rescaling_hand_worked():
    a = Arch(1, 1)                       # layout W1 b1 Wout bout
    w = np.array([2.0, 3.0, 5.0, 7.0])
    # c = 2: W1 2*2 = 4, b1 3*2 = 6, Wout 5/2 = 2.5, bout unchanged
    np.testing.assert_allclose(apply_rescaling(w, a, [[np.log(2.0)]]), [4.0, 6.0, 2.5, 7.0])


def test_apply_permutation_hand_worked():
    a = Arch(1, 2)                       # W1 (2,1), b1 (2,), Wout (1,2), bout
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    np.testing.assert_array_equal(apply_permutation(w, a, [[1, 0]]),
                                  [2.0, 1.0, 4.0, 3.0, 6.0, 5.0, 7.0])


def test_random_symmetry_keeps_function():
    W = random_nets(A34, 6)
    Wp, u, perms = random_symmetry(W, A34, np.random.default_rng(1), return_transform=True)
    assert np.all((u >= np.log(0.2)) & (u <= np.log(5.0)))
    assert not np.allclose(Wp, W)
    assert_same_function(W, Wp, A34)


# ---------------------------------------------------------------- canonical form
@pytest.fixture(scope="module")
def stack_and_canon():
    W = random_nets(A34, 20, seed=3)
    Wc, info = canonicalize(W, A34, return_info=True)
    return W, Wc, info


def test_canonical_keeps_function_and_converges(stack_and_canon):
    W, Wc, info = stack_and_canon
    assert info["converged"].all() and (info["rel_grad"] <= 1e-11).all()
    assert not info["dead"].any()
    assert_same_function(W, Wc, A34)
    assert (info["norm_after"] < info["norm_before"]).all()


def test_canonical_is_idempotent(stack_and_canon):
    _, Wc, _ = stack_and_canon
    np.testing.assert_allclose(canonicalize(Wc, A34), Wc, rtol=0, atol=1e-10)


def test_canonical_form_unique_on_orbit(stack_and_canon):
    W, Wc, _ = stack_and_canon
    rng = np.random.default_rng(7)
    for _ in range(3):
        Wp = random_symmetry(W, A34, rng, scale_range=(0.2, 5.0))
        np.testing.assert_allclose(canonicalize(Wp, A34), Wc, rtol=0, atol=1e-8)


def test_sorted_by_incoming_norm_and_balanced(stack_and_canon):
    W, Wc, info = stack_and_canon
    In, Out = unit_sums(Wc, A34)
    assert (np.diff(In, axis=2) >= 0).all()                 # increasing within each layer
    np.testing.assert_allclose(In, Out, rtol=1e-10)       # balance = zero gradient
    # perm reported = the permutation applied after rescaling
    Wr = rescale_min_norm(W, A34)
    np.testing.assert_allclose(apply_permutation(Wr, A34, info["perm"]), Wc, atol=1e-14)


def test_optimum_is_true_minimum(stack_and_canon):
    _, Wc, _ = stack_and_canon
    w = Wc[0]
    F0 = w @ w
    KN = A34.K * A34.N
    # central differences of ||rescale(w, u)||^2 at u = 0, h = 1e-5
    h = 1e-5
    g = np.empty(KN)
    for k in range(KN):
        e = np.zeros(KN)
        e[k] = h
        Fp = np.sum(apply_rescaling(w, A34, e.reshape(A34.K, A34.N)) ** 2)
        Fm = np.sum(apply_rescaling(w, A34, -e.reshape(A34.K, A34.N)) ** 2)
        g[k] = (Fp - Fm) / (2 * h)
    assert np.abs(g).max() < 1e-7 * F0
    U = np.random.default_rng(0).normal(0, 1e-2, size=(300, A34.K, A34.N))
    F = np.sum(apply_rescaling(np.tile(w, (300, 1)), A34, U) ** 2, axis=1)
    assert (F >= F0 * (1 - 1e-14)).all()


def test_min_norm_matches_scipy_reference():
    a = Arch(2, 3)
    w = random_nets(a, 1, seed=5)[0]
    res = minimize(lambda u: np.sum(apply_rescaling(w, a, u.reshape(2, 3)) ** 2),
                   np.zeros(6), method="BFGS", options=dict(gtol=1e-12))
    wr, info = rescale_min_norm(w, a, return_info=True)
    np.testing.assert_allclose(wr @ wr, res.fun, rtol=1e-9)
    np.testing.assert_allclose(info["log_scales"][0].ravel(), res.x, atol=1e-5)


def test_tie_broken_by_incoming_row():
    # |x| = relu(x) + relu(-x): both units have In = Out = 1 (exact tie); the
    # tie-break puts the unit with incoming weight -1 first.
    a = Arch(1, 2)
    w = np.array([1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    want = np.array([-1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    rng = np.random.default_rng(2)
    for _ in range(5):
        wp = random_symmetry(w, a, rng)
        np.testing.assert_allclose(canonicalize(wp, a), want, atol=1e-12)


def test_wf_canonical_norm():
    w = build_wf()
    wc, info = canonicalize(w, WF_ARCH, return_info=True)
    # the construction's check: raw norm ~50.7, ~11.7 after rescaling; measured 11.714833028
    np.testing.assert_allclose(np.linalg.norm(w), 50.7407, atol=1e-3)
    assert abs(np.linalg.norm(wc) - 11.7) < 0.05
    assert info["converged"][0] and not info["dead"].any()   # zero blocks, no dead unit
    assert_same_function(w, wc, WF_ARCH)
    np.testing.assert_allclose(canonicalize(wc, WF_ARCH), wc, atol=1e-10)
    wp = random_symmetry(w, WF_ARCH, np.random.default_rng(4))
    np.testing.assert_allclose(canonicalize(wp, WF_ARCH), wc, atol=1e-8)
    # the zero pattern of W_f survives: rescaling never makes a zero non-zero
    assert (wc == 0).sum() == (w == 0).sum() == 136 - 46


# ---------------------------------------------------------------- dead units
def dead_net():
    """Arch(2, 2): x -> L1u1 -> L2u0 -> out is the live chain, no biases on it.

    L1u0 has zero incoming weight and bias (output always 0) but weight 0.7 into
    L2u0; L2u1 receives 0.9 from L1u1 and bias 0.3 but its output weight is 0.
    """
    a = Arch(2, 2)
    v = {"W1": [[0.0], [2.0]], "b1": [0.0, 0.0],
         "W2": [[0.7, 3.0], [0.0, 0.9]], "b2": [0.0, 0.3],
         "Wout": [[0.5, 0.0]], "bout": [0.25]}
    return a, a.pack(v)


def test_dead_units_hand_made():
    a, w = dead_net()
    np.testing.assert_array_equal(dead_units(w, a)[0], [[True, False], [False, True]])
    wc, info = canonicalize(w, a, return_info=True)
    assert info["converged"][0]
    assert_same_function(w, wc, a)
    # live chain weights 2, 3, 0.5: min of sum of squares with fixed product 3 is
    # 3 * 3^(2/3) (AM-GM, all three equal to 3^(1/3)); plus bout^2 = 0.0625
    np.testing.assert_allclose(wc @ wc, 3 * 3 ** (2 / 3) + 0.0625, rtol=1e-12)
    v = a.unpack(wc)                # dead units sort first (norm 0): all their params 0
    r = 3 ** (1 / 3)
    np.testing.assert_allclose(v["W1"], [[0.0], [r]], atol=1e-12)
    np.testing.assert_allclose(v["W2"], [[0.0, 0.0], [0.0, r]], atol=1e-12)
    np.testing.assert_allclose(v["b2"], [0.0, 0.0], atol=0)
    np.testing.assert_allclose(v["Wout"], [[0.0, r]], atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(3):
        np.testing.assert_allclose(canonicalize(random_symmetry(w, a, rng), a), wc, atol=1e-10)


def test_dead_units_cascade():
    # Arch(3, 2): L1u0 has no input and no bias; L2u0 is fed only by L1u0 -> dead too.
    a = Arch(3, 2)
    w = random_nets(a, 1, seed=1)[0]
    v = a.unpack(w)
    v["W1"][0], v["b1"][0] = 0.0, 0.0
    v["W2"][0] = [1.5, 0.0]
    v["b2"][0] = 0.0
    d = dead_units(w, a)[0]
    np.testing.assert_array_equal(d, [[True, False], [True, False], [False, False]])
    wc = canonicalize(w, a)
    assert_same_function(w, wc, a)
    assert np.count_nonzero(a.unpack(wc)["W3"][:, 0]) == 0


# ---------------------------------------------------------------- distances
def test_distance_modulo_symmetry():
    W = random_nets(A34, 3, seed=2)
    Wp = random_symmetry(W, A34, np.random.default_rng(3))
    np.testing.assert_allclose(distance_modulo_symmetry(W, Wp, A34), 0, atol=1e-8)
    d = distance_modulo_symmetry(W[0], W[1:], A34)
    want = np.linalg.norm(canonicalize(W[1:], A34) - canonicalize(W[0], A34), axis=1)
    np.testing.assert_allclose(d, want, rtol=1e-12)
    da, info = distance_modulo_symmetry(W[0], W[1:], A34, align=True, return_info=True)
    np.testing.assert_allclose(da, np.minimum(info["canonical"], info["aligned"]))
    assert (da <= d + 1e-12).all()


def test_align_fixes_swapped_near_tie():
    # Arch(1, 2), out weights w: balanced units are (+-sqrt|w_j|, sqrt|w_j|).
    # A = |x| (tie, canonical order [-1, +1]); B has out weights [0.999, 1.001]
    # so its + unit sorts first: sorting swaps the pair and alignment undoes it.
    a = Arch(1, 2)
    A = np.array([1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    B = np.array([1.0, -1.0, 0.0, 0.0, 0.999, 1.001, 0.0])
    p, q = np.sqrt(0.999), np.sqrt(1.001)
    d_can = np.sqrt((p + 1) ** 2 + (q + 1) ** 2 + (p - 1) ** 2 + (q - 1) ** 2)
    d_al = np.sqrt(2 * (q - 1) ** 2 + 2 * (p - 1) ** 2)
    d, info = distance_modulo_symmetry(A, B, a, align=True, return_info=True)
    np.testing.assert_allclose(info["canonical"], [d_can], rtol=1e-10)
    np.testing.assert_allclose(info["aligned"], [d_al], rtol=1e-8)
    np.testing.assert_allclose(d, d_al, rtol=1e-8)


# ---------------------------------------------------------------- speed smoke test
def test_many_networks_converge():
    W = random_nets(WF_ARCH, 300, seed=9)
    _, info = canonicalize(W, WF_ARCH, return_info=True)
    assert info["converged"].all() and info["iterations"].max() <= 30


# ---------------------------------------------------------------- bad input
def test_bad_input():
    w = np.zeros(A34.P)
    with pytest.raises(ValueError, match="W must have shape"):
        canonicalize(np.zeros(A34.P + 1), A34)
    with pytest.raises(ValueError, match="non-finite"):
        canonicalize(np.full(A34.P, np.nan), A34)
    with pytest.raises(ValueError, match="arch"):
        canonicalize(w, (3, 4))
    with pytest.raises(ValueError, match="scale_range"):
        random_symmetry(w, A34, np.random.default_rng(0), scale_range=(0.0, 2.0))
    with pytest.raises(ValueError, match="rng"):
        random_symmetry(w, A34, 0)
    with pytest.raises(ValueError, match="perms"):
        apply_permutation(w, A34, np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match="log_scales"):
        apply_rescaling(w, A34, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="gtol"):
        rescale_min_norm(w, A34, gtol=0.0)
    with pytest.raises(ValueError, match="same number"):
        distance_modulo_symmetry(np.zeros((2, A34.P)), np.zeros((3, A34.P)), A34)
    with pytest.raises(ValueError, match="tie_rtol"):
        sort_units(w, A34, tie_rtol=-1.0)


def test_unconverged_is_reported_and_dtype_kept():
    W = random_nets(A34, 4, seed=6)
    _, info = rescale_min_norm(W, A34, max_iter=1, return_info=True)
    assert (info["iterations"] == 1).all() and not info["converged"].any()
    assert (info["rel_grad"] > 1e-11).all()
    W32 = canonicalize(W.astype(np.float32), A34)
    assert W32.dtype == np.float32
    np.testing.assert_allclose(W32, canonicalize(W, A34), rtol=1e-5, atol=1e-6)


def test_block_tridiagonal_newton_solve_matches_dense():
    from relunet.balance import block_tridiag_solve
    rng = np.random.default_rng(8)
    m, K, N = 3, 4, 3
    off = [-rng.uniform(0, 1, size=(m, N, N)) for _ in range(K - 1)]
    H = np.zeros((m, K * N, K * N))
    for layer in range(1, K):
        H[:, layer * N:(layer + 1) * N, (layer - 1) * N:layer * N] = off[layer - 1]
        H[:, (layer - 1) * N:layer * N, layer * N:(layer + 1) * N] = np.swapaxes(
            off[layer - 1], 1, 2)
    diag = np.abs(H).sum(axis=2).reshape(m, K, N) + 0.5     # diagonally dominant: PD
    H += np.stack([np.diag(d) for d in diag.reshape(m, -1)])
    g = rng.normal(size=(m, K, N))
    want = np.linalg.solve(H, g.reshape(m, -1, 1))[:, :, 0]
    np.testing.assert_allclose(block_tridiag_solve(diag, off, g).reshape(m, -1), want,
                               rtol=1e-10, atol=1e-12)
