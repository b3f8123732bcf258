"""Exact Hessians (R-operator kernels) against their NumPy twin, finite
differences of the analytic gradient, directional second differences, and the
known structure of W_f (flat rescaling directions, top eigenvalue ~1.7e3)."""
import numba
import numpy as np
import pytest

from relunet import fast, symmetry
from relunet import hessian as hs
from relunet import kernels as kn
from relunet.construct import WF_ARCH, build_wf
from relunet.data import wf_training_set
from relunet.net import Arch

import netcases
from netcases import random_stack


# =============================================================================
# helpers
# =============================================================================
def data_off_kinks(W, arch, S, rng):
    return netcases.data_off_kinks(W, arch, S, rng, margin=1e-3, oversample=8)


def fd_hessian(w, arch, x, t, eps):
    """Central differences of the analytic gradient: column p = (g(w + eps e_p) -
    g(w - eps e_p)) / (2 eps); error O(eps^2) + O(u |g| / eps)."""
    E = eps * np.eye(arch.P)
    _, g = kn.loss_and_grad(np.concatenate([w + E, w - E]), arch, x, t, kernel="plain")
    return (g[:arch.P] - g[arch.P:]).T / (2 * eps)


def grad_second_difference(w, arch, x, t, v, eps):
    """v . (g(w + eps v) - g(w - eps v)) / (2 eps)  ~  v^T H v."""
    _, g = kn.loss_and_grad(np.stack([w + eps * v, w - eps * v]), arch, x, t, kernel="plain")
    return v @ (g[0] - g[1]) / (2 * eps)


# =============================================================================
# kernels against the NumPy twin
# =============================================================================
ARCHS = [Arch(1, 1), Arch(2, 3), Arch(5, 5), Arch(3, 4), Arch(2, 3, n_in=2, n_out=2)]


# the plain kernel on every shape (one compilation serves all); the generated one, a
# module per width N and fan-in/out, on K = 1, the 5x5 and a 2-in/2-out shape
@pytest.mark.parametrize("arch,kernel", [(a, "plain") for a in ARCHS]
                         + [(ARCHS[0], "fast"), (ARCHS[2], "fast"), (ARCHS[4], "fast")])
def test_hvp_and_hessian_match_numpy_twin(arch, kernel, rng):
    for M in (1, 3, 7):
        W = random_stack(arch, M, rng)
        x = rng.uniform(-1.2, 1.2, (41, arch.n_in))
        t = rng.standard_normal((41, arch.n_out))
        V = rng.standard_normal(W.shape)
        a, b = hs.hvp(W, arch, x, t, V, kernel=kernel), hs.hvp_ref(W, arch, x, t, V)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())
        H = hs.hessian(W, arch, x, t, symmetrize=False, kernel=kernel)
        Hr = hs.hessian_ref(W, arch, x, t)
        np.testing.assert_allclose(H, Hr, rtol=0, atol=1e-12 * np.abs(Hr).max())
        # row p of H is H e_p, so H^T v must reproduce the HVP along v
        HtV = np.einsum("mpq,mp->mq", H, V)
        np.testing.assert_allclose(HtV, b, rtol=0, atol=1e-12 * np.abs(b).max())


WIDTHS = fast.BITS if fast.native_bits() == 512 else (256,)


@pytest.mark.parametrize("bits", WIDTHS)
def test_fast_hvp_at_every_width_with_several_chunks(bits, rng, monkeypatch):
    """The generated R-operator pass at each vector width this CPU runs, on 800
    points (three chunks of the point layout), against the NumPy twin; a row's
    bits do not depend on the other rows or on the thread count."""
    from relunet.fast import stack
    monkeypatch.setenv(fast.simd.ENV, str(bits))
    arch = Arch(5, 5)
    W = random_stack(arch, 6, rng)
    x, t = rng.uniform(-1.2, 1.2, 800), rng.standard_normal(800)
    V = rng.standard_normal(W.shape)
    b = hs.hvp_ref(W, arch, x, t, V)
    a = hs.hvp(W, arch, x, t, V, kernel="fast")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())
    _, X, T, _ = hs.prepare(W, arch, x, t)
    for threads in (1, 2):
        assert np.array_equal(stack.hvp(W, V, 5, 5, X, T, threads=threads), a)
    assert np.array_equal(hs.hvp(W[2], arch, x, t, V[2], kernel="fast")[0], a[2])


def test_stack_and_thread_count_give_identical_bits(rng):
    # the plain kernel's prange over networks (the vector kernel's own test is above)
    arch = Arch(3, 4)
    W = random_stack(arch, 9, rng)
    x, t = rng.uniform(-1, 1, 50), rng.standard_normal(50)
    H = hs.hessian(W, arch, x, t, kernel="plain")
    for m in (0, 4, 8):
        assert np.array_equal(hs.hessian(W[m], arch, x, t, kernel="plain")[0], H[m])
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        H1 = hs.hessian(W, arch, x, t, kernel="plain")
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(H1, H)


# =============================================================================
# against finite differences of the analytic gradient (points off the kinks)
# =============================================================================
@pytest.mark.parametrize("arch", [Arch(1, 1), Arch(2, 3), Arch(3, 2), Arch(5, 5)])
def test_hessian_matches_central_differences_of_gradient(arch, rng):
    W = random_stack(arch, 2, rng)
    x, t = data_off_kinks(W, arch, 40, rng)
    kernel = "auto" if arch.N == 5 else "plain"     # a generated module per N costs seconds
    H, asym = hs.hessian(W, arch, x, t, return_asymmetry=True, kernel=kernel)
    assert np.all(asym < 1e-13)                     # symmetric to rounding before (H+H^T)/2
    assert np.array_equal(H, np.transpose(H, (0, 2, 1)))
    for m in range(2):
        # eps = 1e-5: truncation ~ eps^2 |g'''| ~ 1e-10, rounding ~ 1e-16 |g| / eps ~ 1e-11
        # (measured: 1e-12 - 1e-11 of max|H|; dropping one R-term gives ~5e-2)
        fd = fd_hessian(W[m], arch, x, t, eps=1e-5)
        np.testing.assert_allclose(H[m], fd, rtol=0, atol=1e-9 * np.abs(fd).max())


def test_gauss_newton_part_is_whole_hessian_at_zero_residual(rng):
    """H = (2/S) J^T J + (2/S) sum_s r_s d^2 y_s: with t = y the second term vanishes."""
    arch = Arch(2, 3)
    W = random_stack(arch, 1, rng)
    x, _ = data_off_kinks(W, arch, 30, rng)
    E = 1e-6 * np.eye(arch.P)
    J = (kn.forward(W[0] + E, arch, x) - kn.forward(W[0] - E, arch, x)).T / 2e-6  # (S, P)
    gn = 2.0 / x.size * J.T @ J
    y = kn.forward(W, arch, x)[0]
    H0 = hs.hessian(W, arch, x, y, kernel="plain")[0]
    np.testing.assert_allclose(H0, gn, rtol=0, atol=1e-9 * np.abs(gn).max())  # measured 5e-11
    # with residuals the second term is there, and not small
    H1 = hs.hessian(W, arch, x, y + rng.standard_normal(x.size), kernel="plain")[0]
    assert np.abs(H1 - gn).max() > 1e-2 * np.abs(gn).max()


def test_eigenpairs_by_directional_second_difference(rng):
    arch = Arch(5, 5)
    W = random_stack(arch, 1, rng)
    x, t = data_off_kinks(W, arch, 60, rng)
    evals, evecs = hs.eigen(W, arch, x, t, vectors=True)
    lam, U = evals[0], evecs[0]
    assert lam[0] < 0 < lam[-1]                     # a random point is not a minimum
    H = hs.hessian(W, arch, x, t)[0]
    np.testing.assert_allclose(H @ U, U * lam, rtol=0, atol=1e-12 * np.abs(lam).max())
    np.testing.assert_allclose(U.T @ U, np.eye(arch.P), atol=1e-12)
    # genuine curvatures (dead units of a random net give exactly flat ones)
    idx = np.flatnonzero(np.abs(lam) > 1e-4 * np.abs(lam).max())
    assert idx.size >= 10
    for i in idx[[0, 1, idx.size // 2, -2, -1]]:
        q = grad_second_difference(W[0], arch, x, t, U[:, i], eps=1e-5)
        # measured |q - lambda| <= 6e-11 max|lambda|
        assert abs(q - lam[i]) <= 1e-9 * np.abs(lam).max(), (i, q, lam[i])


# =============================================================================
# W_f: the global minimum, zero loss, training points on kinks
# =============================================================================
def live_units(w, arch):
    """(layer, unit) of hidden units with nonzero incoming (weights or bias) and
    nonzero outgoing weights."""
    v = arch.unpack(w)
    out = []
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        nxt, _ = arch.layer_blocks(layer + 1)
        for j in range(arch.N):
            if (np.any(v[wn][j] != 0) or v[bn][j] != 0) and np.any(v[nxt][:, j] != 0):
                out.append((layer, j))
    return out


def scale_vector(arch, c):
    """Per-parameter factors D (P,) of the rescaling by c (K, N) (unit j of layer
    l: incoming weights and bias times c[l-1, j], outgoing weights divided)."""
    d = arch.unpack(np.ones(arch.P))
    prev = np.ones(arch.n_in)
    for layer in range(1, arch.K + 1):
        d[f"W{layer}"][...] = c[layer - 1][:, None] / prev[None, :]
        d[f"b{layer}"][...] = c[layer - 1]
        prev = c[layer - 1]
    d["Wout"][...] = 1.0 / prev[None, :]
    return np.concatenate([d[n].ravel() for n in arch.names()])


@pytest.fixture(scope="module")
def wf():
    x, t = wf_training_set()
    w = build_wf()
    H, asym = hs.hessian(w, WF_ARCH, x, t, return_asymmetry=True)
    return w, x, t, H[0], asym[0]


def test_wf_hessian_is_psd_with_rescaling_flat_directions(wf):
    w, x, t, H, asym = wf
    arch = WF_ARCH
    assert kn.loss(w, arch, x, t, kernel="plain")[0] == 0.0
    assert asym < 1e-13
    # both kernels keep W_f's exact zeros: the same Hessian, the same flat directions
    Hp = hs.hessian(w, arch, x, t, kernel="plain")[0]
    np.testing.assert_allclose(H, Hp, rtol=0, atol=1e-13 * np.abs(Hp).max())
    sp, sf = hs.spectrum_summary(hs.eigen(Hp)), hs.spectrum_summary(hs.eigen(H))
    assert (sp["n_neg"], sp["n_zero"], sp["n_pos"]) == (sf["n_neg"], sf["n_zero"], sf["n_pos"])
    Hr = hs.hessian_ref(w, arch, x, t)[0]           # same relu'(0) = 0 branch
    np.testing.assert_allclose(H, Hr, rtol=0, atol=1e-12 * np.abs(Hr).max())
    # generator of each live unit's rescaling: +incoming, +bias, -outgoing
    units = live_units(w, arch)
    assert len(units) == 25                         # every hidden unit of W_f is live
    xi = []
    for layer, j in units:
        c = np.ones((arch.K, arch.N))
        c[layer - 1, j] = np.e
        xi.append(np.log(scale_vector(arch, c)) * w)  # d/da of D(a) w at a = 0
    xi = np.array(xi)                               # (25, P)
    assert np.linalg.matrix_rank(xi) == 25
    assert np.abs(xi @ H).max() <= 1e-12 * np.abs(H).max() * np.abs(xi).max()
    s = hs.spectrum_summary(hs.eigen(H))
    assert s["n_neg"] == 0                          # residuals 0: H = (2/S) J^T J >= 0
    assert s["n_zero"] >= 25


def test_wf_canonical_top_eigenvalue(wf):
    """H(D w) = D^-1 H(w) D^-1 (differentiate L(D w) = L(w) twice); positive
    rescalings keep every pre-activation's sign, zeros included, so this is the
    Hessian at the rescaled point on the same relu'(0) = 0 branch."""
    w, x, t, H, _ = wf
    wr, info = symmetry.rescale_min_norm(w, WF_ARCH, return_info=True)
    D = scale_vector(WF_ARCH, np.exp(info["log_scales"][0]))
    np.testing.assert_allclose(D * w, wr, rtol=1e-12, atol=1e-12)   # same rescaling
    assert abs(np.linalg.norm(wr) - 11.71) < 0.01         # the construction's check: about 11.7
    lam_c = np.linalg.eigvalsh(H / np.outer(D, D))
    lam = np.linalg.eigvalsh(H)
    assert 1.6e3 < lam_c[-1] < 1.8e3                      # the construction's check: about 1.7e3
    assert lam[-1] > 5 * lam_c[-1]                        # raw W_f: 1.47e4, much stiffer
    # Sylvester's law of inertia: same counts of negative/zero/positive eigenvalues
    s, sc = hs.spectrum_summary(lam), hs.spectrum_summary(lam_c)
    assert (s["n_neg"], s["n_zero"], s["n_pos"]) == (sc["n_neg"], sc["n_zero"], sc["n_pos"])
    # Evaluated directly at canonical W_f the exact zeros of W_f's pre-activations
    # have become +-1e-17 and rounding picks their side (see hessian.py): close,
    # not equal (measured 1720.4 against 1702.9).
    lam_d = hs.eigen(symmetry.canonicalize(w, WF_ARCH), WF_ARCH, x, t)[0]
    assert 1.6e3 < lam_d[-1] < 1.8e3 and abs(lam_d[-1] / lam_c[-1] - 1) < 0.03


def test_power_of_two_rescaling_is_exact(wf):
    """Scaling by powers of 2 is exact in floating point, so the kernel's Hessian at
    the rescaled W_f must be D^-1 H D^-1 to rounding (kinks stay exactly on 0)."""
    w, x, t, H, _ = wf
    _, info = symmetry.rescale_min_norm(w, WF_ARCH, return_info=True)
    k = np.round(info["log_scales"][0] / np.log(2))
    D = scale_vector(WF_ARCH, 2.0 ** k)
    H2 = hs.hessian(D * w, WF_ARCH, x, t)[0]
    ref = H / np.outer(D, D)
    np.testing.assert_allclose(H2, ref, rtol=0, atol=1e-13 * np.abs(ref).max())


# =============================================================================
# spectrum summary, histogram, input checks
# =============================================================================
def test_spectrum_summary_hand_worked():
    ev = np.array([5.0, -2.0, 0.0, 1e-3, -1e-13])
    s = hs.spectrum_summary(ev, tol_rel=1e-9, tol_abs=0.0)   # zero_tol = 1e-9 * 5
    assert (s["n_neg"], s["n_zero"], s["n_pos"]) == (1, 2, 2)
    assert s["zero_tol"] == 5e-9 and s["min"] == -2.0 and s["max"] == 5.0
    assert s["min_pos"] == 1e-3 and s["cond_pos"] == pytest.approx(5000.0)
    assert s["neg_ratio"] == pytest.approx(0.4)               # |-2| / 5
    np.testing.assert_array_equal(s["sorted"], np.sort(ev))
    s = hs.spectrum_summary(ev, tol_rel=1e-9, tol_abs=1e-2)   # now 1e-3 counts as zero
    assert (s["n_neg"], s["n_zero"], s["n_pos"]) == (1, 3, 1) and s["cond_pos"] == 1.0
    s = hs.spectrum_summary(np.stack([ev, -ev]), tol_rel=1e-9, tol_abs=0.0)
    np.testing.assert_array_equal(s["n_neg"], [1, 2])
    np.testing.assert_array_equal(s["n_pos"], [2, 1])


def test_log_histogram_hand_worked():
    ev = np.array([1e-3, 5.0, -2.0, 0.0, 20.0])
    h = hs.log_histogram(ev, bins=[-4, -2, 0, 2], tol_rel=1e-9, tol_abs=0.0)
    # log10: 1e-3 -> -3 (bin 0); 5 -> 0.70, 20 -> 1.30 (bin 2); |-2| -> 0.30 (bin 2)
    np.testing.assert_array_equal(h["pos"], [1, 0, 2])
    np.testing.assert_array_equal(h["neg"], [0, 0, 1])
    assert h["n_zero"] == 1
    h = hs.log_histogram(ev)
    assert h["edges"][0] <= -3 and h["edges"][-1] >= np.log10(20)
    assert h["pos"].sum() == 3 and h["neg"].sum() == 1


def test_bad_input_raises(rng):
    arch = Arch(2, 3)
    W = random_stack(arch, 2, rng)
    x, t = rng.uniform(-1, 1, 10), rng.standard_normal(10)
    with pytest.raises(ValueError, match="V must have shape"):
        hs.hvp(W, arch, x, t, np.ones((3, arch.P)))
    with pytest.raises(ValueError, match="arch"):
        hs.hessian(W, (2, 3), x, t)
    with pytest.raises(ValueError, match="H must have shape"):
        hs.eigen(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="need arch"):
        hs.eigen(W, None, x, t)
    with pytest.raises(ValueError, match="tol_rel"):
        hs.spectrum_summary([1.0, 2.0], tol_rel=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        hs.hvp(W, arch, x, t, np.full(W.shape, np.nan))
