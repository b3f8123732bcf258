"""Nudged elastic band and string method: hand-worked tangents and forces, known saddles,
honesty.

References used here are independent of relunet.neb and relunet.string_method:
closed forms, hand-worked numbers, central differences, and a plain per-image loop
re-implementation of the NEB force (H&J 2000 Eqs. 8-11) written below.
"""
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from relunet import Arch, init_stack, kernels
from relunet.neb import NEBResult, linear_path, neb, neb_forces, tangents
from relunet.neb_surfaces import MB_MINIMA, MB_SADDLES, crease_well, double_well, mueller_brown
from relunet.string_method import (
    dense_profile,
    min_norm_hull,
    reparametrize,
    sampled_min_norm,
    string_method,
)

MB_A, MB_B, MB_C = (np.array(MB_MINIMA[k][0]) for k in "ABC")
MB_KW = dict(n_images=16, fmax=1e-3, dt=1e-3, max_step=0.01, max_iter=5000)


def curved(X):
    return double_well(X, c=0.5)


def ref_forces(X, E, G, k, climbing=-1):
    """Per-image loop: perpendicular true force and parallel force of one band (B, D)."""
    perp, par = [], []
    for i in range(1, len(X) - 1):
        tp, tm = X[i + 1] - X[i], X[i] - X[i - 1]
        if E[i + 1] > E[i] > E[i - 1]:
            tau = tp
        elif E[i + 1] < E[i] < E[i - 1]:
            tau = tm
        else:
            hi = max(abs(E[i + 1] - E[i]), abs(E[i - 1] - E[i]))
            lo = min(abs(E[i + 1] - E[i]), abs(E[i - 1] - E[i]))
            tau = hi * tp + lo * tm if E[i + 1] > E[i - 1] else lo * tp + hi * tm
        tau = tau / np.linalg.norm(tau)
        g = G[i]
        perp.append(-(g - (g @ tau) * tau))
        if i == climbing:
            par.append((g @ tau) * tau)
        else:
            par.append(k * (np.linalg.norm(tp) - np.linalg.norm(tm)) * tau)
    return np.array(perp), np.array(par)


# -- the test surfaces ---------------------------------------------------------
@pytest.mark.parametrize("efun, D, lo, hi", [(mueller_brown, 2, [-1.5, -0.5], [1.0, 2.0]),
                                            (curved, 4, -1.5, 1.5), (crease_well, 3, -1.5, 1.5)])
def test_potential_gradients_match_central_differences(efun, D, lo, hi, rng):
    X = rng.uniform(lo, hi, size=(20, D))
    if efun is crease_well:      # keep the difference stencil off the kinks
        r = X[:, 1:] - 0.5 * X[:, :1] ** 2
        X[:, 1:] += np.where(np.abs(r) < 0.01, 0.02 * np.sign(r + 1e-300), 0.0)
    _, G = efun(X)
    eps = 1e-6
    G_fd = np.empty_like(G)
    for j in range(D):
        e = np.zeros(D)
        e[j] = eps
        G_fd[:, j] = (efun(X + e)[0] - efun(X - e)[0]) / (2 * eps)
    # truncation error ~ eps^2 |E'''| and rounding ~ 1e-16 |E| / eps: both << 1e-6 |G|
    np.testing.assert_allclose(G, G_fd, rtol=1e-6, atol=1e-6)


def test_potential_known_values():
    E, _ = mueller_brown(np.array([MB_MINIMA[k][0] for k in "ABC"]))
    np.testing.assert_allclose(E, [MB_MINIMA[k][1] for k in "ABC"], atol=0.01)
    # double well: E(0) = 1, E(+-1, c x^2 = 0.5) = 0, E(0, 1) = 1 + 1 = 2
    E, G = curved(np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, 0.5], [0.0, 1.0]]))
    np.testing.assert_array_equal(E, [1.0, 0.0, 0.0, 2.0])
    np.testing.assert_array_equal(G[:3], 0.0)
    # crease well (a = 2, c = 0.5): minima (+-1, 0.5) and saddle (0, 0) on the kink, E = 0, 0, 1;
    # on the crease y = x^2 / 2, E = (x^2 - 1)^2; at (0.5, 0) r = -1/8: E = 9/16 + 2/8
    E, G = crease_well(np.array([[1.0, 0.5], [-1.0, 0.5], [0.0, 0.0], [0.5, 0.125], [0.5, 0.0]]))
    np.testing.assert_allclose(E, [0.0, 0.0, 1.0, 9 / 16, 9 / 16 + 0.25], rtol=1e-15)
    # gradient at (0.5, 0): dU/dx = 4 x (x^2 - 1) = -1.5; a sign(r) (-2 c x, 1) = -2 (-0.5, 1)
    np.testing.assert_allclose(G[4], [-1.5 + 1.0, -2.0], rtol=1e-15)


# -- tangent and forces, worked by hand --------------------------------------------
def test_tangent_cases_of_henkelman_jonsson():
    # one movable image at (1, 0) between (0, 0) and (1, 1): tau+ = (0, 1), tau- = (1, 0)
    X = np.broadcast_to(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), (5, 3, 2))
    E = np.array([[0, 1, 2],    # uphill: tau+            (Eq. 8)
                  [2, 1, 0],    # downhill: tau-          (Eq. 8)
                  [0, 3, 1],    # max, V+ > V-: dVmax=3 on tau+, dVmin=2 on tau-  (Eq. 10)
                  [1, 3, 0],    # max, V+ < V-: dVmin=2 on tau+, dVmax=3 on tau-  (Eq. 11)
                  [1, 1, 1]],   # flat: tau+ + tau-
                 dtype=float)
    want = np.array([[0, 1], [1, 0], [2, 3], [3, 2], [1, 1]]) / np.sqrt([1, 1, 13, 13, 2])[:, None]
    np.testing.assert_allclose(tangents(X, E)[:, 0], want, rtol=1e-15)


def test_force_hand_worked():
    # image (1, 0) between (0, 0) and (1, 3); E uphill so tau = (0, 1); gradient (5, 7), k = 2
    X = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 3.0]]] * 2)
    E = np.array([[0.0, 1.0, 2.0]] * 2)
    G = np.array([[[0.0, 0.0], [5.0, 7.0], [0.0, 0.0]]] * 2)
    F = neb_forces(X, E, G, k=2.0, climbing=np.array([-1, 1]))
    # plain: perpendicular -(5, 0); spring 2 * (|(0,3)| - |(1,0)|) = 4 along (0, 1)
    np.testing.assert_allclose(F[0, 0], [-5.0, 4.0])
    # climbing: -G + 2 (G.tau) tau = (-5, -7) + (0, 14) = (-5, 7), no spring
    np.testing.assert_allclose(F[1, 0], [-5.0, 7.0])


# -- known saddles ------------------------------------------------------------------
def test_mueller_brown_climbing_image_finds_saddle():
    r = neb(mueller_brown, MB_A, MB_B, climb=True, **MB_KW).squeeze()
    assert r.converged and r.fmax_final <= 1e-3
    assert r.climbing == np.argmax(r.energies)
    # tabulated saddle between minima A and C (MB 1979): E = -40.66 at (-0.822, 0.624)
    np.testing.assert_allclose(r.energies.max(), -40.66, atol=0.01)
    np.testing.assert_allclose(r.peak(), [-0.822, 0.624], atol=0.01)
    # the climbing force -G + 2(G.tau)tau has |G|'s norm: the gradient vanishes there
    _, G = mueller_brown(r.peak()[None])
    assert np.linalg.norm(G) <= 1e-3
    np.testing.assert_allclose(r.barrier(), -40.66 - mueller_brown(MB_A[None])[0][0], atol=0.01)


def test_double_well_climbing_barrier_is_exactly_one():
    r = neb(curved, [-1.0, 0.5], [1.0, 0.5], n_images=8, climb=True, fmax=1e-7,
            dt=0.01, max_step=0.05, max_iter=3000)
    assert r.converged[0]
    # endpoints are minima (E = 0); the saddle is (0, 0) with E = 1; |G| <= 1e-7 puts the
    # image within ~1e-7 of it and E within ~1e-14
    np.testing.assert_allclose(r.barrier(), [1.0], atol=1e-9)
    np.testing.assert_allclose(r.peak(), [[0.0, 0.0]], atol=1e-6)


def _steepest_descent_path(c=0.5, x_end=0.999):
    """Reference MEP of the curved double well, y(x) for 0 < x < x_end: integrate
    dy/dx = G_y / G_x from the saddle. Near (0, 0), y = a x^2 with 2a = -(a - c)/2,
    i.e. y ~ (c/5) x^2, which sets the starting value."""
    def rhs(x, y):
        _, G = double_well(np.array([[x, y[0]]]), c)
        return [G[0, 1] / G[0, 0]]
    x0 = 1e-4
    return solve_ivp(rhs, (x0, x_end), [c / 5 * x0 ** 2], rtol=1e-11, atol=1e-13,
                     dense_output=True).sol


def test_plain_band_below_barrier_and_approaching_the_mep():
    # straight start crosses x = +-1/7 at y = 0.5: E = (1/49-1)^2 + (0.5 - 0.5/49)^2 ~ 1.199
    E0 = curved(linear_path(np.array([[-1.0, 0.5]]), np.array([[1.0, 0.5]]), 8)[0])[0]
    np.testing.assert_allclose(E0.max(), (1 / 49 - 1) ** 2 + (0.5 - 0.5 / 49) ** 2, rtol=1e-12)
    mep = _steepest_descent_path()
    err = []
    for n in (16, 32):
        r = neb(curved, [-1.0, 0.5], [1.0, 0.5], n_images=n, fmax=1e-7, dt=0.01,
                max_step=0.05, max_iter=3000).squeeze()
        assert r.converged
        # no image sits on the saddle: the plain band's peak is below the barrier 1;
        # the highest images are near x = +-1/(n-1) where E ~ (1 - x^2)^2 > 0.98
        assert 0.98 < r.energies.max() < 1.0
        x, y = r.images[1:-1].T
        near = np.abs(x) < 0.9
        err.append(np.abs(y[near] - mep(np.abs(x[near]))[0]).max())
    # the discrete band cuts the path's corners; doubling the images brings it closer
    # (measured: 0.038 and 0.022)
    assert err[1] < 0.03 and err[1] < 0.7 * err[0]


# -- bookkeeping and honesty ----------------------------------------------------------
def test_endpoints_fixed_distance_and_forces_recomputed():
    start = np.array([[-1.0, 0.5], [-1.0, 0.4]])
    end = np.array([[1.0, 0.5], [0.9, 0.6]])
    rows = []

    def efun(X):
        rows.append(len(X))
        return curved(X)
    r = neb(efun, start, end, n_images=9, k_spring=0.5, fmax=1e-4, dt=0.01,
            max_step=0.05, max_iter=3000)
    # one call for all 2 x 9 images, then one per step for the 7 movable images of each
    # band still running: a converged band is no longer evaluated
    assert rows[0] == 18 and len(rows) == 1 + r.iterations.max()
    assert sum(rows) == 18 + 7 * r.iterations.sum() and r.iterations[0] != r.iterations[1]
    np.testing.assert_array_equal(r.images[:, 0], start)
    np.testing.assert_array_equal(r.images[:, -1], end)
    seg = np.linalg.norm(np.diff(r.images, axis=1), axis=-1)
    np.testing.assert_allclose(r.distance[:, 1:], np.cumsum(seg, axis=1), rtol=1e-13)
    assert np.all(r.distance[:, 0] == 0) and np.all(np.diff(r.distance, axis=1) > 0)
    assert r.converged.all()
    for b in range(2):
        E, G = curved(r.images[b])
        np.testing.assert_array_equal(E, r.energies[b])
        perp, par = ref_forces(r.images[b], E, G, k=0.5)
        assert np.linalg.norm(perp, axis=1).max() <= 1e-4
        np.testing.assert_allclose(np.linalg.norm(perp + par, axis=1).max(), r.fmax_final[b],
                                   rtol=1e-9)


def test_unconverged_band_reports_honestly():
    r = neb(mueller_brown, MB_A, MB_B, climb=True, climb_after=10, **{**MB_KW, "max_iter": 40})
    assert not r.converged[0] and r.iterations[0] == 40
    E, G = mueller_brown(r.images[0])
    perp, par = ref_forces(r.images[0], E, G, k=1.0, climbing=r.climbing[0])
    assert r.climbing[0] == np.argmax(E)
    np.testing.assert_allclose(r.fmax_final[0], np.linalg.norm(perp + par, axis=1).max(),
                               rtol=1e-9)
    assert r.fmax_final[0] > 1e-3


def test_steepest_descent_option_converges_too():
    r = neb(curved, [-1.0, 0.5], [1.0, 0.5], n_images=8, climb=True, optimizer="sd",
            fmax=1e-6, dt=0.05, max_iter=5000)
    assert r.converged[0]
    np.testing.assert_allclose(r.barrier(), [1.0], atol=1e-9)


def test_non_finite_band_is_stopped_not_converged():
    def efun(X):                 # NaN energy beyond x = 5
        E, G = double_well(X)
        return np.where(X[:, 0] > 5, np.nan, E), G
    with pytest.warns(RuntimeWarning, match="non-finite"):
        r = neb(efun, [[-1.0, 0.0], [4.0, 0.0]], [[1.0, 0.0], [6.0, 0.0]], n_images=5,
                fmax=1e-6, dt=0.01, max_step=0.05)
    np.testing.assert_array_equal(r.converged, [True, False])
    assert r.iterations[1] == 0 and not np.isfinite(r.fmax_final[1])


def test_band_alone_equals_band_in_batch():
    alone = neb(mueller_brown, MB_A, MB_B, climb=True, **{**MB_KW, "max_iter": 400})
    batch = neb(mueller_brown, np.array([MB_C, MB_A, MB_A]), np.array([MB_B, MB_B, MB_C]),
                climb=True, **{**MB_KW, "max_iter": 400})
    for f in ("images", "energies", "iterations", "fmax_final", "climbing", "converged"):
        np.testing.assert_array_equal(getattr(alone, f)[0], getattr(batch, f)[1])
    assert not np.array_equal(batch.images[0], batch.images[1])



# -- the numba kernels of the driver against their NumPy twins ----------------------
def _twin_band_set(rng):
    """4 bands of 9 images in D = 5 with every tangent case: random energies, a
    monotone rise, a flat stretch (equal energies), a coincident pair of images."""
    X = rng.normal(size=(4, 9, 5))
    E = rng.normal(size=(4, 9))
    E[1] = np.arange(9.0)                          # Eq. 8, uphill everywhere
    E[2, 2:6] = 0.25                               # flat: tau+ + tau-
    X[3, 4] = X[3, 5]                              # zero segment
    G = rng.normal(size=(4, 9, 5))
    return X, E, G


def test_force_kernel_matches_numpy_twin(rng):
    from relunet import neb as nb
    X, E, G = _twin_band_set(rng)
    rows = np.array([3, 0, 2, 1])
    climb_on = np.array([True, True, False, True])
    out = {}
    for name, forces in (("numba", nb._forces_kernel), ("numpy", nb._forces_numpy)):
        F, F2, ci = np.full((4, 7, 5), np.nan), np.full((4, 7), np.nan), np.zeros(4, np.int64)
        forces(X, E, G, rows, 1.7, climb_on, F, F2, ci)
        out[name] = F, F2, ci
    np.testing.assert_array_equal(out["numba"][2], out["numpy"][2])
    np.testing.assert_array_equal(out["numba"][2], [1 + np.argmax(E[3, 1:-1]),
                                                    1 + np.argmax(E[0, 1:-1]), -1, 7])
    np.testing.assert_allclose(out["numba"][0], out["numpy"][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out["numba"][1], out["numpy"][1], rtol=1e-12, atol=1e-14)
    # and both equal the per-image loop reference on a band with a climbing image
    perp, par = ref_forces(X[0], E[0], G[0], 1.7, climbing=out["numba"][2][1])
    np.testing.assert_allclose(out["numba"][0][1], perp + par, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fire", [True, False])
def test_move_kernel_matches_numpy_twin(fire, rng):
    from relunet import neb as nb
    X, _, _ = _twin_band_set(rng)
    F, F2 = rng.normal(size=(3, 7, 5)), None
    F2 = np.einsum("nid,nid->ni", F, F)
    v = rng.normal(size=(4, 7, 5))
    v[2] = 0.0                                     # fresh start: no verdict, n_pos kept
    v[0] = -0.3 * F[1]                             # P < 0: stop, dt shrinks
    v[3] = 0.2 * F[0]                              # P > 0, n_pos > N_MIN: dt grows
    dtb, alpha = np.array([0.05, 0.1, 0.2, 0.3]), np.array([0.1, 0.05, 0.1, 0.08])
    n_pos = np.array([3, 0, 7, 9])
    jrows, bands = np.array([1, 2, 0]), np.array([0, 2, 3])
    out = {}
    for name, move in (("numba", nb._move_kernel), ("numpy", nb._move_numpy)):
        st = [a.copy() for a in (X, v, dtb, alpha, n_pos)]
        Xout = np.full((3 * 7, 5), np.nan)
        move(st[0], F, F2, jrows, bands, *st[1:], fire, 0.3, 0.5, 0.25, Xout)
        out[name] = st + [Xout]
    for a, b in zip(out["numba"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    Xn, vn = out["numba"][:2]
    np.testing.assert_array_equal(Xn[1], X[1])     # band 1 does not move
    np.testing.assert_array_equal(Xn[:, [0, -1]], X[:, [0, -1]])
    assert np.linalg.norm(Xn - X, axis=-1).max() <= 0.25 * (1 + 1e-15)   # the cap holds
    if fire:                                       # the FIRE branches taken
        np.testing.assert_allclose(out["numba"][2], [0.025, 0.1, 0.2, 0.33])
        np.testing.assert_array_equal(out["numba"][4], [0, 0, 7, 10])
        np.testing.assert_array_equal(vn[1], v[1])


def _neb_with(monkeypatch, steps, *args, **kw):
    from relunet import neb as nb
    monkeypatch.setattr(nb, "_STEPS", steps)
    return neb(*args, **kw)


def test_neb_driver_matches_numpy_twin(monkeypatch):
    from relunet import neb as nb
    kw = dict(climb=True, **{**MB_KW, "max_iter": 300})
    ends = (np.array([MB_C, MB_A]), np.array([MB_B, MB_B]))
    r_nb = _neb_with(monkeypatch, nb._STEPS, mueller_brown, *ends, **kw)
    r_np = _neb_with(monkeypatch, nb._NUMPY_STEPS, mueller_brown, *ends, **kw)
    for f in ("iterations", "climbing", "converged"):
        np.testing.assert_array_equal(getattr(r_nb, f), getattr(r_np, f))
    for f in ("images", "energies", "fmax_final"):
        np.testing.assert_allclose(getattr(r_nb, f), getattr(r_np, f), rtol=1e-10, atol=1e-12)


def test_neb_network_band_independent_of_thread_count(tiny_minima):
    """3 bands x 22 movable images: 66 rows, enough for the energy kernel to use threads."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    arch, x, t, W = tiny_minima
    kw = dict(n_images=24, climb=True, climb_after=10, dt=0.01, max_step=0.02, max_iter=40)
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = neb(efun, W[[2, 0, 1]], W[[1, 1, 2]], **kw)
        numba.set_num_threads(2)
        two = neb(efun, W[[2, 0, 1]], W[[1, 1, 2]], **kw)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.energies, two.energies)


def _on_one_and_two_threads(method, efun, W, kw):
    """``method`` (neb or string_method) on 9 bands between the tiny minima, with numba
    at one thread and at two: the two results."""
    import numba
    starts, ends = W[[2, 0, 1] * 3], W[[1, 1, 2] * 3] + 0.01 * np.arange(9)[:, None]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = method(efun, starts, ends, **kw)
        numba.set_num_threads(2)
        two = method(efun, starts, ends, **kw)
    finally:
        numba.set_num_threads(before)
    return one, two

def test_neb_band_arithmetic_split_over_two_threads_gives_the_same_bits(tiny_minima):
    """From 8 bands the forces and moves run on two threads, half of the bands each:
    the same bits as one thread (9 bands, so the halves differ in size)."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    arch, x, t, W = tiny_minima
    kw = dict(n_images=8, climb=True, climb_after=10, dt=0.01, max_step=0.02, max_iter=40)
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    one, two = _on_one_and_two_threads(neb, efun, W, kw)
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.energies, two.energies)
    np.testing.assert_array_equal(one.climbing, two.climbing)


def test_result_helpers():
    E = np.array([[0.0, 3.0, 1.0], [2.0, 1.0, 0.5]])
    X = np.arange(12.0).reshape(2, 3, 2)
    r = NEBResult(X, E, np.zeros((2, 3)), np.ones(2, bool), np.ones(2, int), np.zeros(2),
                  np.full(2, -1))
    np.testing.assert_array_equal(r.barrier(), [3.0, 0.0])          # max - E[0]
    np.testing.assert_array_equal(r.barrier(from_end=True), [2.0, 1.5])
    np.testing.assert_array_equal(r.peak(), [[2.0, 3.0], [6.0, 7.0]])
    with pytest.raises(ValueError, match="one band"):
        r.squeeze()


# -- ReLU networks ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_minima():
    """Two 2x3 networks trained to gradient < 1e-10 on 8 random points (losses 1.031
    and 1.035, not the constant fit t.var() = 1.54), plus a third for batching."""
    arch = Arch(2, 3)
    rng = np.random.default_rng(4)
    x, t = np.sort(rng.uniform(-1, 1, 8)), rng.normal(size=8)
    W = init_stack(arch, [6, 8, 0])
    V = np.zeros_like(W)
    for _ in range(600):         # heavy-ball momentum: v = 0.9 v - 0.03 g
        V = 0.9 * V - 0.03 * kernels.loss_and_grad_ref(W, arch, x, t)[1]
        W = W + V
    return arch, x, t, W


def test_network_band(tiny_minima):
    arch, x, t, W = tiny_minima
    assert np.linalg.norm(kernels.loss_and_grad(W[:2], arch, x, t)[1], axis=1).max() < 1e-10
    r = neb(lambda X: kernels.loss_and_grad(X, arch, x, t), W[0], W[1], n_images=8,
            fmax=1e-4, dt=0.01, max_step=0.02, max_iter=100).squeeze()
    np.testing.assert_array_equal(r.images[[0, -1]], W[:2])
    np.testing.assert_allclose(r.energies[[0, -1]], kernels.loss(W[:2], arch, x, t), rtol=1e-14)
    np.testing.assert_allclose(r.energies, kernels.loss_ref(r.images, arch, x, t), rtol=1e-10)
    # between two minima the band must rise above the higher one
    assert r.energies[1:-1].max() > r.energies[[0, -1]].max()
    # relaxing lowered the straight path's peak (measured: 1.56 -> 1.06)
    straight = kernels.loss_ref(linear_path(W[:1], W[1:2], 8)[0], arch, x, t)
    assert r.energies.max() < straight.max() - 0.1
    # honest report: ReLU kinks keep this band's force far above fmax
    assert not r.converged and r.iterations == 100 and r.fmax_final > 1e-4


def test_network_band_alone_equals_band_in_batch(tiny_minima):
    arch, x, t, W = tiny_minima
    kw = dict(n_images=6, climb=True, climb_after=10, dt=0.01, max_step=0.02, max_iter=40)
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    alone = neb(efun, W[0], W[1], **kw)
    batch = neb(efun, W[[2, 0, 1]], W[[1, 1, 2]], **kw)
    np.testing.assert_array_equal(alone.images[0], batch.images[1])
    np.testing.assert_array_equal(alone.energies[0], batch.energies[1])


# -- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(start=[0.0, 0.0, 0.0]), "start and end"),
    (dict(start=np.zeros((2, 2)), end=np.ones((3, 2))), "start and end"),
    (dict(start=np.zeros((2, 2, 2))), "start"),
    (dict(end=[np.nan, 1.0]), "end"),
    (dict(start=["a", "b"]), "start"),
    (dict(n_images=2), "n_images"),
    (dict(n_images=3.0), "n_images"),
    (dict(k_spring=0.0), "k_spring"),
    (dict(fmax=-1.0), "fmax"),
    (dict(fmax=np.inf), "fmax"),
    (dict(max_iter=-1), "max_iter"),
    (dict(dt=0.1, dt_max=0.01), "dt_max"),
    (dict(optimizer="bfgs"), "optimizer"),
    (dict(efun=3), "efun"),
    (dict(efun=lambda X: (X[:, 0], X[:, :1])), "G of shape"),
])
def test_bad_input(kwargs, match):
    args = dict(efun=double_well, start=[-1.0, 0.0], end=[1.0, 0.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        neb(args.pop("efun"), args.pop("start"), args.pop("end"), max_iter=args.pop("max_iter", 5),
            **args)


# =====================================================================================
# String method and its nonsmooth convergence criterion
# =====================================================================================
A_CW, C_CW = 2.0, 0.5                    # crease_well defaults


def test_reparametrize_hand_worked():
    # polyline (0,0) -> (1,0) -> (1,1), length 2: quarter fractions fall every 0.5
    X = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]])
    Y = reparametrize(X, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(Y[0], [[0, 0], [0.5, 0], [1, 0], [1, 0.5], [1, 1]], atol=1e-15)


def test_dense_profile_on_a_known_line():
    # E = x0^2 + x1 along the band (0,0) -> (1,0) -> (1,2); 4 points per segment
    X = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]]])
    dist, E = dense_profile(lambda P: (P[:, 0] ** 2 + P[:, 1], np.zeros_like(P)), X, n_dense=4)
    s = np.array([0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0])
    np.testing.assert_allclose(dist[0], s, atol=1e-15)
    want = np.where(s <= 1, s ** 2, 1.0 + (s - 1))
    np.testing.assert_allclose(E[0], want, atol=1e-15)


def test_min_norm_hull_hand_worked_and_against_nnls(rng):
    from scipy.optimize import nnls
    # segment from u = (1, 0) to v = (-1, 1): closest point u + s (v - u), s = 2/5 -> (0.2, 0.4)
    P = np.array([[[1.0, 0.0], [-1.0, 1.0]],
                  [[1.0, 0.0], [-1.0, 0.0]],          # hull contains 0
                  [[3.0, 4.0], [3.0, 4.0]]])          # one point: its norm 5
    norm, lam = min_norm_hull(P)
    np.testing.assert_allclose(norm, [np.sqrt(0.2), 0.0, 5.0], atol=1e-9)
    np.testing.assert_allclose(lam[0], [0.6, 0.4], atol=1e-8)
    # random hulls against an independent solver: NNLS with a heavily weighted sum row
    Q = rng.normal(size=(20, 6, 4)) + 0.5
    norm, lam = min_norm_hull(Q)
    np.testing.assert_allclose(lam.sum(1), 1.0, rtol=1e-12)
    assert (lam >= 0).all()
    for k in range(20):
        A = np.vstack([Q[k].T, 1e4 * np.ones((1, 6))])
        w, _ = nnls(A, np.r_[np.zeros(4), 1e4])
        ref = np.linalg.norm((w / w.sum()) @ Q[k])
        assert ref - 1e-6 <= norm[k] <= ref + 1e-8


def test_min_norm_hull_kernel_matches_its_numpy_twin(rng):
    # the numba FISTA and its NumPy statement take the same steps; only the order of the
    # sums in Q z differs, so the weights agree to rounding after 300 iterations
    P = rng.normal(size=(7, 17, 136)) + 0.1 * rng.normal(size=(7, 1, 136))
    P[3] = P[3, :1]                                       # identical rows
    n_k, lam_k = min_norm_hull(P, iters=300)
    n_np, lam_np = min_norm_hull(P, iters=300, kernel=False)
    np.testing.assert_allclose(lam_k, lam_np, rtol=0, atol=1e-12)
    np.testing.assert_allclose(n_k, n_np, rtol=1e-12, atol=1e-14)


def test_sampled_min_norm_on_and_off_the_crease():
    # on the crease at x = 0.5: the one-sided gradients are g+- = (dU/dx -+ 2ac x, +-a) =
    # (-1.5 -+ 1, +-2); the min-norm point of their segment is (-1.5 - 1 + 2s, 2 - 4s)... the
    # hull of {(-2.5, 2), (-0.5, -2)}: s = argmin |(-2.5 + 2s, 2 - 4s)|^2 = (5 + 8)/(4 + 16) = 0.65
    g_min = np.linalg.norm([-2.5 + 1.3, 2 - 2.6])
    pts = np.array([[0.5, 0.125], [0.5, 0.3]])
    rho = sampled_min_norm(crease_well, pts, radius=1e-4, n_samples=24)
    # dU/dx changes by at most 1e-4 * max|U''| ~ 1e-3 inside the ball
    np.testing.assert_allclose(rho[0], g_min, atol=2e-3)
    # off the kink all samples see the same smooth piece: the measure is |grad E| there
    _, G = crease_well(pts[1:])
    np.testing.assert_allclose(rho[1], np.linalg.norm(G[0]), atol=2e-3)
    # perpendicular to the crease tangent (1, 2 c x) = (1, 0.5) the hull contains 0: a valley
    tau = np.array([[1.0, 0.5]])
    assert sampled_min_norm(crease_well, pts[:1], 1e-4, 24, tangents=tau)[0] < 1e-9
    # a single gradient evaluation at the kink point picks one piece and is far from 0
    assert np.linalg.norm(crease_well(pts[:1])[1]) > 1.0


CW_KW = dict(max_iter=3000, step=0.01, step_max=0.5, max_step=0.05, regrid_every=50,
             regrid_until=200, gs_radius=1e-3, gs_tol=1e-3, etol=1e-8, window=10)


def test_string_converges_on_the_crease_with_the_exact_barrier():
    r = string_method(crease_well, [-1.0, 0.5], [1.0, 0.5], n_images=33, **CW_KW).squeeze()
    assert r.converged and r.barrier_change <= 1e-8 and r.peak_measure <= 1e-3
    # the images sit on the crease y = c x^2, the minimum energy path
    x, y = r.images.T
    assert np.abs(y - C_CW * x ** 2).max() < 1e-9
    # every point of the polyline has U <= 1 and lies above the crease by at most the chord's
    # sagitta c h^2 / 4 (h its x-extent), and it crosses x = 0 (E >= 1): the barrier is
    # 1 <= peak <= 1 + a c h^2 / 4 on the peak segment, closed form
    j = r.peak_segment
    h = abs(x[j + 1] - x[j])
    assert 1.0 <= r.peak_energy <= 1.0 + A_CW * C_CW * h * h / 4 + 1e-12
    assert r.peak_energy - 1.0 < 1e-4          # measured 6.9e-5: the peak window refines h
    np.testing.assert_allclose(r.peak_point, [0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(crease_well(r.peak_point[None])[0][0], r.peak_energy, rtol=1e-14)
    np.testing.assert_allclose(r.barrier(), r.peak_energy, rtol=1e-15)   # E(start) = 0
    # the old criterion cannot be met here: the force jumps by 2a across the crease
    old = neb(crease_well, [-1.0, 0.5], [1.0, 0.5], n_images=17, climb=True, fmax=1e-3,
              dt=0.01, max_step=0.05, max_iter=1000).squeeze()
    assert not old.converged and old.fmax_final > 1.0


def test_climbing_string_lands_on_the_kink_saddle():
    for n in (8, 16):
        r = string_method(crease_well, [-1.0, 0.5], [1.0, 0.5], n_images=n, climb=True,
                          **CW_KW).squeeze()
        assert r.converged and r.peak_measure <= 1e-3   # full-ball sampled min-norm
        c = r.peak_image()
        # the climbing image sits on the saddle (0, 0) of the crease, E = 1 (measured: 1 - 3e-10
        # with 8 images, 1 - 3e-14 with 16)
        np.testing.assert_allclose(r.energies[c], 1.0, atol=1e-8)
        np.testing.assert_allclose(r.images[c], [0.0, 0.0], atol=1e-4)
        # the path through the images still cuts the crease's curve: its maximum is higher
        assert r.peak_energy >= r.energies[c]


def test_climbing_string_final_profile_is_the_energy_at_its_final_images():
    # once the climbing image is watched, the dense profile is skipped at checks and
    # evaluated at the end: it must be the loss between the FINAL images, converged
    # bands and bands stopped by the budget alike
    for max_iter in (3000, 237):
        r = string_method(mueller_brown, np.array([MB_A, MB_A]), np.array([MB_B, MB_C]),
                          n_images=9, max_iter=max_iter, step=1e-5, step_max=1e-2,
                          max_step=0.01, gs_radius=1e-4, gs_tol=1e-2, etol=1e-6,
                          regrid_every=50, regrid_until=100, climb=True, watch="image")
        nd = (r.dense_energies.shape[1] - 1) // 8
        s = np.arange(nd) / nd
        seg = np.diff(r.images, axis=1)[:, :, None]
        pts = r.images[:, :-1, None] + s[None, None, :, None] * seg
        E = mueller_brown(pts.reshape(-1, 2))[0].reshape(2, -1)
        np.testing.assert_array_equal(r.dense_energies[:, :-1], E)
        np.testing.assert_array_equal(r.dense_energies[:, -1], r.energies[:, -1])
        assert r.converged.any() if max_iter == 3000 else not r.converged.any()


def test_climbing_string_mueller_brown_saddle_is_stationary():
    r = string_method(mueller_brown, MB_A, MB_B, n_images=16, max_iter=5000, step=1e-5,
                      step_max=1e-2, max_step=0.01, gs_radius=1e-4, gs_tol=1e-2, etol=1e-6,
                      regrid_every=100, regrid_until=500, climb=True).squeeze()
    assert r.converged
    c = r.peak_image()
    (xs, ys), Es = MB_SADDLES["AC"]
    np.testing.assert_allclose(r.images[c], [xs, ys], atol=1e-3)
    np.testing.assert_allclose(r.energies[c], Es, atol=0.01)
    # a smooth saddle: the gradient itself vanishes there (the 3-decimal tabulated point: 0.19)
    assert np.linalg.norm(mueller_brown(r.images[c][None])[1]) < 1e-2
    # double well, even image count: the climbing image, not a grid point, finds E = 1
    r = string_method(curved, [-1.0, 0.5], [1.0, 0.5], n_images=16, max_iter=3000, step=0.01,
                      step_max=0.5, max_step=0.05, gs_radius=1e-4, gs_tol=1e-3, etol=1e-9,
                      regrid_every=50, regrid_until=200, climb=True).squeeze()
    assert r.converged
    np.testing.assert_allclose(r.energies.max(), 1.0, atol=1e-12)


def test_climbing_string_without_an_interior_maximum_stays_put():
    # from the minimum (-1, 0.5) up to the saddle (0, 0) itself: the energy rises all the way,
    # so no image may climb (it would run off past the end); the barrier is the end, E = 1
    r = string_method(curved, [-1.0, 0.5], [0.0, 0.0], n_images=9, max_iter=2000, step=0.01,
                      step_max=0.5, max_step=0.05, gs_radius=1e-4, gs_tol=1e-4, etol=1e-9,
                      regrid_every=0, climb=True, watch="image").squeeze()
    assert r.converged
    assert r.peak_energy == r.energies[-1] == 1.0 and r.peak_segment == 7 and r.peak_t == 1.0
    assert np.all(np.diff(r.energies) > 0)
    assert r.distance[-1] < 1.5 * np.hypot(1.0, 0.5)


def test_string_barrier_error_shrinks_like_h_squared_on_the_crease():
    ex = []
    for n in (9, 17, 33):
        r = string_method(crease_well, [-1.0, 0.5], [1.0, 0.5], n_images=n,
                          **{**CW_KW, "regrid_every": 0}).squeeze()
        assert r.converged
        ex.append(r.peak_energy - 1.0)
    # uniform grid, h ~ 2/(n-1): excess ~ a c h^2 / 4 * (fraction); measured 6.7e-3, 1.7e-3, 4.3e-4
    assert 0 < ex[2] < ex[1] < ex[0] and ex[0] / ex[2] > 10


def test_string_mueller_brown_saddle():
    kw = dict(n_images=16, max_iter=5000, step=1e-5, step_max=1e-2, max_step=0.01,
              gs_radius=1e-4, gs_tol=1e-2, etol=1e-6)
    (xs, ys), Es = MB_SADDLES["AC"]
    for rg in (0, 100):
        r = string_method(mueller_brown, MB_A, MB_B, regrid_every=rg, regrid_until=500,
                          **kw).squeeze()
        assert r.converged and r.peak_measure <= 1e-2
        # every path from A to B crosses the ridge at or above the saddle AC (mountain pass)
        # and the string passes close to it: tabulated E = -40.66 at (-0.822, 0.624)
        assert Es - 0.01 <= r.peak_energy <= Es + 0.01
        np.testing.assert_allclose(r.peak_point, [xs, ys], atol=0.01)


def test_string_double_well_barrier_is_exactly_one_and_path_is_the_mep():
    r = string_method(curved, [-1.0, 0.5], [1.0, 0.5], n_images=17, max_iter=3000, step=0.01,
                      step_max=0.5, max_step=0.05, gs_radius=1e-4, gs_tol=1e-4, etol=1e-9,
                      regrid_every=0).squeeze()
    assert r.converged
    # odd image count, symmetric band: the middle image sits on the saddle (0, 0), E = 1
    np.testing.assert_allclose(r.peak_energy, 1.0, atol=1e-12)
    np.testing.assert_allclose(r.images[8], [0.0, 0.0], atol=1e-8)
    # the images lie near the steepest-descent path of the reference ODE (measured 0.014;
    # the plain NEB above with as many images: 0.038)
    mep = _steepest_descent_path()
    x, y = r.images[1:-1].T
    near = np.abs(x) < 0.9
    assert np.abs(y[near] - mep(np.abs(x[near]))[0]).max() < 0.02


def test_string_one_call_per_iteration_and_bookkeeping():
    calls = []

    def efun(X):
        calls.append(len(X))
        return curved(X)
    start = np.array([[-1.0, 0.5], [-1.0, 0.4]])
    end = np.array([[1.0, 0.5], [0.9, 0.6]])
    r = string_method(efun, start, end, n_images=9, max_iter=400, step=0.01, check_every=5,
                      window=4, etol=1e-9, regrid_every=20, regrid_until=100, gs_radius=1e-4,
                      gs_tol=1e-5)
    # one call at iteration 0 and one per iteration after it, then 3 rounds locating the peak
    assert len(calls) == 1 + r.iterations.max() + 3
    np.testing.assert_array_equal(r.images[:, 0], start)
    np.testing.assert_array_equal(r.images[:, -1], end)
    E, _ = curved(r.images.reshape(-1, 2))
    np.testing.assert_array_equal(E.reshape(2, 9), r.energies)
    np.testing.assert_allclose(curved(r.peak_point)[0], r.peak_energy, rtol=1e-14)
    assert (r.peak_energy >= r.dense_energies.max(1)).all()
    seg = np.linalg.norm(np.diff(r.images, axis=1), axis=-1)
    np.testing.assert_allclose(r.distance[:, 1:], np.cumsum(seg, axis=1), rtol=1e-13)
    b = np.arange(2)
    np.testing.assert_allclose(r.peak_distance,
                               r.distance[b, r.peak_segment] + r.peak_t * seg[b, r.peak_segment])
    # the images sit at the grid's arc-length fractions
    np.testing.assert_allclose(r.distance / r.distance[:, -1:], r.fractions, atol=1e-12)


def test_string_unconverged_band_reports_honestly():
    r = string_method(mueller_brown, MB_A, MB_B, n_images=16, max_iter=60, step=1e-5,
                      step_max=1e-2, max_step=0.01).squeeze()
    assert not r.converged and r.iterations == 60
    assert r.barrier_change == np.inf and np.isnan(r.peak_measure)   # no full window yet


def test_string_band_alone_equals_band_in_batch():
    kw = dict(n_images=16, max_iter=300, step=1e-5, step_max=1e-2, max_step=0.01,
              regrid_every=50, regrid_until=150, check_every=5, window=5, etol=1e-3,
              gs_radius=1e-4, gs_tol=1.0)
    alone = string_method(mueller_brown, MB_A, MB_B, **kw)
    batch = string_method(mueller_brown, np.array([MB_C, MB_A, MB_A]),
                          np.array([MB_B, MB_B, MB_C]), **kw)
    for f in ("images", "energies", "iterations", "converged", "peak_energy", "peak_point",
              "barrier_change", "peak_measure", "fractions"):
        np.testing.assert_array_equal(getattr(alone, f)[0], getattr(batch, f)[1])
    assert alone.converged[0] and not np.array_equal(batch.images[0], batch.images[1])


def test_string_network_band(tiny_minima):
    arch, x, t, W = tiny_minima
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    kw = dict(n_images=8, max_iter=200, step=1e-3, max_step=0.02, check_every=5, window=5,
              regrid_every=50, regrid_until=100)
    r = string_method(efun, W[0], W[1], **kw).squeeze()
    np.testing.assert_allclose(r.energies, kernels.loss_ref(r.images, arch, x, t), rtol=1e-10)
    np.testing.assert_allclose(r.peak_energy, kernels.loss_ref(r.peak_point[None], arch, x, t)[0],
                               rtol=1e-10)
    # between two minima the band rises above the higher one, and below the straight path
    straight = kernels.loss_ref(linear_path(W[:1], W[1:2], 8)[0], arch, x, t)
    assert r.energies[[0, -1]].max() < r.peak_energy < straight.max() - 0.1
    batch = string_method(efun, W[[2, 0, 1]], W[[1, 1, 2]], **kw)
    np.testing.assert_array_equal(r.images, batch.images[1])


@pytest.mark.parametrize("kwargs, match", [
    (dict(start=[0.0, 0.0, 0.0]), "start and end"),
    (dict(n_images=2), "n_images"),
    (dict(step=0.0), "step"),
    (dict(step=0.1, step_max=0.01), "step_max"),
    (dict(grow=0.5), "grow"),
    (dict(n_dense=1), "n_dense"),
    (dict(energy_weight=1.5), "energy_weight"),
    (dict(energy_weight=0.8, peak_weight=0.4), "energy_weight \\+ peak_weight"),
    (dict(gs_tol=-1.0), "gs_tol"),
    (dict(window=0), "window"),
    (dict(regrid_every=-1), "regrid_every"),
    (dict(watch="both"), "watch"),
    (dict(efun=None), "efun"),
])
def test_string_bad_input(kwargs, match):
    args = dict(efun=double_well, start=[-1.0, 0.0], end=[1.0, 0.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        string_method(args.pop("efun"), args.pop("start"), args.pop("end"), max_iter=5, **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(points=np.ones((2, 3)), tangents=np.ones((2, 2))), "tangents"),
    (dict(radius=0.0), "radius"),
    (dict(points=np.array([[np.nan, 0.0]])), "points"),
])
def test_sampled_min_norm_bad_input(kwargs, match):
    args = dict(points=np.zeros((1, 2)), radius=1e-3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sampled_min_norm(crease_well, args.pop("points"), **args)


def test_fig4_basin_radius_is_the_first_ridge():
    from relunet.experiments.fig4_neb import basin_radius
    # one band along the x axis, images at 0, 1, 2, 3 (n_dense = 2: points every 0.5);
    # the profile rises to a ridge at x = 1.5 (0.3), dips (0.2) and rises to 0.5 at the end
    images = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]])
    dist = np.array([[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]])
    prof = np.array([[0.0, 0.1, 0.2, 0.3, 0.2, 0.4, 0.5]])
    r, s, e = basin_radius(images, dist, prof, tol=1e-4)
    np.testing.assert_allclose([r[0], s[0], e[0]], [1.5, 1.5, 0.3])
    # a dip smaller than tol is not a ridge: the profile then counts as rising to its end
    prof2 = prof.copy()
    prof2[0, 4] = 0.3 - 1e-5
    r, s, e = basin_radius(images, dist, prof2, tol=1e-4)
    np.testing.assert_allclose([r[0], e[0]], [3.0, 0.5])


def test_string_started_on_a_given_path():
    """A band started on a given path begins at uniform arc-length fractions of it;
    from a detour over the curved double well's slope it converges to the same saddle
    (E = 1 at the origin) as from the straight line; a path whose ends are not the
    endpoints is refused."""
    from relunet.string_method import reparametrize
    a, b = np.array([-1.0, 0.5]), np.array([1.0, 0.5])
    bend = np.array([[-1.0, 0.5], [-0.5, 1.2], [0.5, 1.2], [1.0, 0.5]])
    kw = dict(n_images=15, max_iter=4000, climb=True, watch="image")
    r0 = string_method(curved, a, b, **kw).squeeze()
    r1 = string_method(curved, a, b, path=bend, **kw).squeeze()
    assert r0.converged and r1.converged
    assert abs(r0.energies.max() - 1.0) < 1e-4 and abs(r1.energies.max() - 1.0) < 1e-4
    r2 = string_method(curved, a, b, n_images=5, max_iter=0, path=bend).squeeze()
    np.testing.assert_array_equal(r2.images, reparametrize(bend[None], np.linspace(0, 1, 5))[0])
    with pytest.raises(ValueError, match="path must start at start"):
        string_method(curved, a, b, n_images=5, path=bend[::-1])
    with pytest.raises(ValueError, match="path must have shape"):
        string_method(curved, a, b, n_images=5, path=bend[:, :1])


# -- the string method's numba kernels against their NumPy twins ----------------------
def _string_step_state(rng):
    """4 bands of 9 images in D = 6 (sums over D in partial sums of 4 plus a remainder),
    with the cases of the step rule: forces that turn back (F.F_old < 0) or not, images
    with and without a last step (the Lipschitz cap, or the first move's), steps over
    max_step (band 3, image 1: a long last step and no old force), a zero segment;
    climbers that are a maximum (band 0: a new one; band 3: the same as last time), below
    a higher endpoint (band 1) and above the initial path's maximum (band 2)."""
    Bn, B, D = 4, 9, 6
    X = np.linspace(0.0, 1.0, B)[None, :, None] * rng.normal(size=(Bn, 1, D)) \
        + 0.05 * rng.normal(size=(Bn, B, D))
    X[3, 4] = X[3, 5]                               # zero segment: tangent weights 1, 1
    E = rng.normal(size=(Bn, B))
    E[0, 4] = E[3, 6] = E[2, 3] = 5.0               # interior maxima
    E[1] = np.arange(B)                             # rising to the end: no climber
    line_max = np.array([6.0, 10.0, 4.0, 6.0])     # band 2's maximum is above it
    G = rng.normal(size=(Bn, B, D))
    h = rng.uniform(0.01, 0.1, size=(Bn, B - 2))
    F_old = rng.normal(size=(Bn, B - 2, D))
    F_old[0] = 0.0                                  # fresh optimiser
    dr_len = rng.uniform(0.0, 0.05, size=(Bn, B - 2))
    dr_len[0] = dr_len[1, :3] = 0.0
    h[3, 0], F_old[3, 0], dr_len[3, 0] = 0.1, 0.0, 10.0
    h_par, g_old = rng.uniform(0.01, 0.1, size=(Bn, B - 2)), rng.normal(size=(Bn, B - 2))
    c_old = np.array([-1, 2, -1, 5], dtype=np.int64)   # band 3: image 6 climbed last time
    return [X, E, G, h, F_old, dr_len, h_par, g_old, c_old, line_max]


@pytest.mark.parametrize("climbing", [True, False])
def test_string_step_kernel_matches_numpy_twin(climbing, rng):
    from relunet import string_method as sm
    st0 = _string_step_state(rng)
    rows = np.array([2, 0, 3, 1])
    out = {}
    for name, step in (("numba", sm._step_kernel), ("numpy", sm._step_numpy)):
        st = [a.copy() for a in st0]
        X, E, G, h, F_old, dr_len, h_par, g_old, c_old, line_max = st
        ci = np.full(4, -7, dtype=np.int64)
        step(X, E, G, rows, h, F_old, dr_len, h_par, g_old, c_old, line_max, climbing,
             1.1, 1e-3, 0.08, 0.1, 0.03, ci)
        out[name] = st + [ci]
    for a, b in zip(out["numba"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    X0, h0, F_old0, dr_len0 = st0[0], st0[3], st0[4], st0[5]
    X1, h1, ci = out["numba"][0], out["numba"][3], out["numba"][-1]
    np.testing.assert_array_equal(X1[:, [0, -1]], X0[:, [0, -1]])     # endpoints fixed
    dx = np.linalg.norm(X1 - X0, axis=-1)[:, 1:-1]
    assert dx.max() <= 0.1 * (1 + 1e-15) and np.isclose(dx, 0.1, rtol=1e-14).any()   # cap
    np.testing.assert_allclose(out["numba"][5], dx, rtol=1e-14)      # dr_len: the step taken
    # the cases of the step rule were all met: halved, grown, capped at step_max, and by
    # the Lipschitz estimate (below 0.5 h and 1.1 h)
    turned = np.einsum("bkd,bkd->bk", out["numba"][4], F_old0) < 0
    assert turned.any() and (~turned).any()
    fresh = dr_len0 == 0                            # no estimate: the first move's cap
    fn = np.linalg.norm(out["numba"][4], axis=-1)   # |F|
    np.testing.assert_allclose(h1[turned & fresh],
                               np.minimum(0.5 * h0, 0.03 / fn)[turned & fresh])
    np.testing.assert_allclose(h1[fresh], np.minimum(np.where(turned, 0.5 * h0, 1.1 * h0),
                                                     0.03 / fn)[fresh])
    climber = np.zeros_like(fresh)                  # its climb comes on top
    for j, band in enumerate(rows):
        if ci[j] > 0:
            climber[band, ci[j] - 1] = True
    assert (dx[fresh & ~climber] <= 0.03 * (1 + 1e-15)).all()
    assert np.isclose(dx[fresh & ~climber], 0.03, rtol=1e-14).any()
    assert (h1 == 0.08).any() and (h1 < np.minimum(0.5 * h0, 1.1 * h0 - 1e-12)).any()
    if climbing:
        np.testing.assert_array_equal(ci, [0, 4, 6, 0])   # rows 2, 0, 3, 1
        np.testing.assert_array_equal(out["numba"][8], [3, -1, -1, 5])
        np.testing.assert_array_equal(out["numba"][6][0, 3], 1e-3)   # a new climber: step
    else:
        np.testing.assert_array_equal(ci, 0)
        np.testing.assert_array_equal(out["numba"][6], st0[6])


def test_string_reparam_kernel_matches_numpy_twin(rng):
    from relunet import string_method as sm
    X = _string_step_state(rng)[0]
    X[1, 3] = X[1, 2]                               # a zero segment
    frac = np.sort(rng.uniform(size=(4, 9)), axis=1)
    frac[:, 0], frac[:, -1] = 0.0, 1.0
    rows, ci = np.array([3, 1, 0, 2]), np.array([4, 0, 1, 7], dtype=np.int64)
    out = {}
    for name, reparam in (("numba", sm._reparam_kernel), ("numpy", sm._reparam_numpy)):
        Y = X.copy()
        reparam(Y, rows, frac, ci)
        out[name] = Y
    np.testing.assert_allclose(out["numba"], out["numpy"], rtol=1e-12, atol=1e-14)
    Y = out["numba"]
    np.testing.assert_array_equal(Y[:, [0, -1]], X[:, [0, -1]])
    for b, c in zip(rows, ci):
        if c > 0:                                   # the climber stays put
            np.testing.assert_array_equal(Y[b, c], X[b, c])
    # band 1 (no climber): its images lie on the old polyline at the grid's fractions of it
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(X[1], axis=0), axis=1))])
    for i in range(9):
        j = min(np.searchsorted(s, frac[1, i] * s[-1], side="right") - 1, 7)
        w = (frac[1, i] * s[-1] - s[j]) / (s[j + 1] - s[j])
        np.testing.assert_allclose(Y[1, i], X[1, j] + w * (X[1, j + 1] - X[1, j]), atol=1e-14)


def _string_with(monkeypatch, steps, *args, **kw):
    from relunet import string_method as sm
    monkeypatch.setattr(sm, "_STEPS", steps)
    return string_method(*args, **kw)


STRING_TWIN_CASES = {
    "mueller_brown": (mueller_brown, np.array([MB_C, MB_A]), np.array([MB_B, MB_B]),
                      dict(n_images=16, max_iter=800, step=1e-5, step_max=1e-2, max_step=0.01,
                           gs_radius=1e-4, gs_tol=1e-2, etol=1e-6, regrid_every=100,
                           regrid_until=300, climb=True)),
    "curved": (curved, [-1.0, 0.5], [1.0, 0.5],
               dict(n_images=16, max_iter=600, step=0.01, step_max=0.5, max_step=0.05,
                    gs_radius=1e-4, gs_tol=1e-3, etol=1e-9, regrid_every=50,
                    regrid_until=200, climb=True)),
    "crease_well": (crease_well, [-1.0, 0.5], [1.0, 0.5], dict(n_images=16, climb=True,
                                                                **CW_KW)),
}


@pytest.mark.parametrize("case", sorted(STRING_TWIN_CASES))
def test_string_driver_matches_numpy_twin(case, monkeypatch):
    """Whole runs (regridding, then climbing on the frozen grid, to convergence) with the
    kernels and with the NumPy twin agree (measured: bit for bit in D = 2, where the sums
    over D have the same order)."""
    from relunet import string_method as sm
    efun, a, b, kw = STRING_TWIN_CASES[case]
    r_nb = _string_with(monkeypatch, sm._STEPS, efun, a, b, **kw)
    r_np = _string_with(monkeypatch, sm._NUMPY_STEPS, efun, a, b, **kw)
    assert r_nb.converged.all()
    for f in ("iterations", "converged", "peak_segment"):
        np.testing.assert_array_equal(getattr(r_nb, f), getattr(r_np, f))
    for f in ("images", "energies", "fractions", "peak_energy", "peak_point", "step",
              "peak_measure"):
        np.testing.assert_allclose(getattr(r_nb, f), getattr(r_np, f), rtol=1e-12, atol=1e-12)


def test_string_network_driver_matches_numpy_twin(tiny_minima, monkeypatch):
    """3 network bands (D = 22), regridding then climbing: the sums over D run in another
    order, and 100 iterations later the two agree to ~1e-14 (measured 5e-15)."""
    from relunet import string_method as sm
    arch, x, t, W = tiny_minima
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    kw = dict(n_images=8, max_iter=100, step=1e-3, max_step=0.02, check_every=5, window=5,
              regrid_every=20, regrid_until=60, climb=True)
    r_nb = _string_with(monkeypatch, sm._STEPS, efun, W[[2, 0, 1]], W[[1, 1, 2]], **kw)
    r_np = _string_with(monkeypatch, sm._NUMPY_STEPS, efun, W[[2, 0, 1]], W[[1, 1, 2]], **kw)
    assert not np.array_equal(r_nb.images, r_np.images)      # the sums differ
    for f in ("images", "energies", "fractions", "peak_energy", "step"):
        np.testing.assert_allclose(getattr(r_nb, f), getattr(r_np, f), rtol=1e-12, atol=1e-12)


def test_string_band_arithmetic_split_over_two_threads_gives_the_same_bits(tiny_minima):
    """From 8 bands the string method's step and reparametrisation run on two threads,
    half of the bands each: the same bits as one thread (9 bands, climbing, regridding)."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    arch, x, t, W = tiny_minima
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    kw = dict(n_images=8, max_iter=60, step=1e-3, max_step=0.02, check_every=5, window=5,
              regrid_every=20, regrid_until=40, climb=True)
    one, two = _on_one_and_two_threads(string_method, efun, W, kw)
    for f in ("images", "energies", "fractions", "step", "peak_energy"):
        np.testing.assert_array_equal(getattr(one, f), getattr(two, f))


def test_string_dense_points_kernel_is_the_numpy_expression_bit_for_bit(rng):
    from relunet.string_method import _dense_points
    X = rng.normal(size=(3, 6, 7))
    for nd in (2, 5, 8):
        f = np.arange(1, nd) / nd
        want = X[:, :-1, None] + f[None, None, :, None] * np.diff(X, axis=1)[:, :, None]
        np.testing.assert_array_equal(_dense_points(X, nd), want)
    # a non-contiguous view gives the same points as its copy
    np.testing.assert_array_equal(_dense_points(X[:, ::-1], 4), _dense_points(X[:, ::-1].copy(), 4))


def test_string_climb_hessian_network_band_alone_equals_band_in_batch(tiny_minima):
    from relunet.hessian import hessian
    arch, x, t, W = tiny_minima
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    hfun = lambda X: hessian(X, arch, x, t)  # noqa: E731
    kw = dict(n_images=8, max_iter=300, step=1e-3, max_step=0.02, check_every=5, window=5,
              regrid_every=50, regrid_until=100, climb=True, watch="image", climb_hessian=hfun,
              precond_every=7)
    alone = string_method(efun, W[0], W[1], **kw)
    batch = string_method(efun, W[[2, 0, 1]], W[[1, 1, 2]], **kw)
    np.testing.assert_array_equal(alone.images[0], batch.images[1])
    np.testing.assert_array_equal(alone.energies[0], batch.energies[1])
    # the preconditioning changed the band: it is not the plain climbing string
    plain = string_method(efun, W[0], W[1], **{**kw, "climb_hessian": None})
    assert not np.array_equal(plain.images, alone.images)


def test_string_climb_hessian_network_bands_independent_of_thread_count(tiny_minima):
    """9 network bands (the band arithmetic split over two threads from 8 bands, the
    Hessians and energies on the kernels' threads): the same bits on one thread and two."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    from relunet.hessian import hessian
    arch, x, t, W = tiny_minima
    efun = lambda X: kernels.loss_and_grad(X, arch, x, t)  # noqa: E731
    kw = dict(n_images=8, max_iter=150, step=1e-3, max_step=0.02, check_every=5, window=5,
              regrid_every=25, regrid_until=50, climb=True, watch="image",
              climb_hessian=lambda X: hessian(X, arch, x, t), precond_every=7)
    one, two = _on_one_and_two_threads(string_method, efun, W, kw)
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.energies, two.energies)
