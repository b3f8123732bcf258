"""The string method's preconditioned climbing image (``climb_hessian``): a hand-worked
step, a known saddle behind a stiff wall, bad input; and the refined band of Fig. 4's
convergence study. The network bands with it (alone = in a batch, one thread = two) are
in tests/test_neb.py beside the other string-method network tests."""
import numpy as np
import pytest

from relunet.neb_surfaces import stiff_valley
from relunet.string_method import _central_tangents, _ClimbPreconditioner, string_method

SV_KW = dict(n_images=9, step=1e-3, step_max=0.5, max_step=0.05, gs_radius=1e-4, gs_tol=1e-3,
             etol=1e-9, regrid_every=50, regrid_until=200, climb=True, watch="image")


def _sv_path():
    """The straight line y = c = 0.5 between the minima, bent off the valley floor across
    the stiff wall (z = 0.05 sin): every image starts off the path in both directions."""
    x = np.linspace(-1.0, 1.0, 41)
    P = np.stack([x, np.full_like(x, 0.5), 0.05 * np.sin(np.pi * (x + 1) / 2)], axis=1)
    P[[0, -1], 2] = 0.0
    return P


def test_stiff_valley_derivatives_match_central_differences(rng):
    X = rng.uniform(-1.5, 1.5, size=(10, 4))
    E, G, H = stiff_valley(X, hessian=True)
    eps = 1e-6
    for j in range(4):
        e = np.zeros(4)
        e[j] = eps
        Ep, Gp = stiff_valley(X + e)
        Em, Gm = stiff_valley(X - e)
        # the energy is a quartic: central differences are exact up to eps^2 |E'''| ~ 1e-11
        np.testing.assert_allclose(G[:, j], (Ep - Em) / (2 * eps), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(H[:, :, j], (Gp - Gm) / (2 * eps), rtol=1e-7, atol=1e-3)
    # the closed forms of the docstring: minima, saddle and its Hessian
    E0, G0, H0 = stiff_valley(np.array([[1.0, 0.5, 0.0], [-1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]),
                              hessian=True)
    np.testing.assert_array_equal(E0, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(G0, 0.0)
    np.testing.assert_array_equal(H0[2], np.diag([-4.0, 2.0, 2e4]))


def test_climb_hessian_finds_the_stiff_valley_saddle():
    hfun = lambda X: stiff_valley(X, hessian=True)[2]  # noqa: E731
    r = string_method(stiff_valley, [-1.0, 0.5, 0.0], [1.0, 0.5, 0.0], path=_sv_path(),
                      max_iter=3000, climb_hessian=hfun, **SV_KW).squeeze()
    assert r.converged and r.peak_measure <= 1e-3
    c = r.peak_image()
    # the climbing image is the saddle, the origin, at E = 1 (measured: 1e-67 away, E = 1,
    # at iteration 470)
    np.testing.assert_allclose(r.images[c], 0.0, atol=1e-9)
    np.testing.assert_allclose(r.energies[c], 1.0, atol=1e-14)
    assert np.sum(np.linalg.eigvalsh(stiff_valley(r.images[c][None], hessian=True)[2][0]) < 0) == 1
    # plain steepest descent, the same settings: its steps are held below 1 / b by the wall,
    # and it is still far off the saddle across the valley (measured: y = 0.29 at 2,000
    # iterations, 1.6e-3 at 20,000)
    p = string_method(stiff_valley, [-1.0, 0.5, 0.0], [1.0, 0.5, 0.0], path=_sv_path(),
                      max_iter=3000, **SV_KW).squeeze()
    assert not p.converged
    assert abs(p.images[p.peak_image(), 1]) > 1e-2
    assert p.energies[p.peak_image()] > 1.0 + 1e-3


@pytest.mark.parametrize("width", [0, 1])
def test_climb_preconditioner_hand_worked(width, rng):
    D, B, Bn = 4, 5, 3
    Q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    lam = np.array([-50.0, 0.01, 2.0, 1e4])              # a negative, a weak and a stiff one
    mu = 0.5
    calls = []

    def hfun(X):                  # H(x) = Q diag(lam (1 + x_0^2)) Q^T, a Hessian per point
        calls.append(len(X))
        return np.einsum("ij,nj,kj->nik", Q, lam * (1 + X[:, :1] ** 2), Q)

    def metric_inv(x):            # |H|_mu^-1 in closed form from the construction
        return Q @ np.diag(1.0 / np.maximum(np.abs(lam) * (1 + x[0] ** 2), mu)) @ Q.T

    X = rng.normal(size=(Bn, B, D))
    E = np.array([[0.0, 1.0, 3.0, 2.0, 0.5],              # climber: image 2
                  [0.0, 1.0, 2.0, 3.0, 4.0],               # rises to its end: no climber
                  [0.0, 5.0, 1.0, 6.0, 0.0]])              # climber: image 3 (max 6)
    G = rng.normal(size=(Bn, B, D))
    pre = _ClimbPreconditioner(hfun, Bn, B, D, mu, every=3, width=width)
    line_max = np.array([10.0, 10.0, 10.0])
    a = np.arange(Bn)
    Gm, changed = pre(X, E, G, a, line_max)
    # the windows: the climber and its movable neighbours up to ``width`` away
    win = {0: [2], 2: [3]} if width == 0 else {0: [1, 2, 3], 2: [2, 3]}
    assert sorted(zip(changed[0].tolist(), changed[1].tolist())) == sorted(
        (b, i) for b in win for i in win[b])
    for b in win:
        for i in win[b]:
            tau = _central_tangents(X[b][None])[0, i - 1]
            P = np.eye(D) - np.outer(tau, tau)
            want = (G[b, i] @ tau) * tau + P @ metric_inv(X[b, i]) @ P @ G[b, i]
            np.testing.assert_allclose(Gm[b, i], want, rtol=1e-10, atol=1e-12)
        rest = np.delete(np.arange(B), win[b])
        np.testing.assert_array_equal(Gm[b, rest], G[b, rest])
    np.testing.assert_array_equal(Gm[1], G[1])
    # a climber above the initial path's maximum does not climb: its band is left alone,
    # and its window's images change metric
    Gh, changed = pre(X, E, G, a, np.array([2.5, 10.0, 10.0]))
    np.testing.assert_array_equal(Gh[0], G[0])
    assert changed[0].tolist() == [0] * len(win[0]) and changed[1].tolist() == win[0]
    # Hessians: the windows at the first call, then each band's again once it has had a
    # climber ``every`` times since (band 2 had one in the call above, band 0 did not)
    n0, n2 = len(win[0]), len(win[2])
    assert calls == [n0 + n2]
    for k in range(3):
        changed = pre(X, E, G, a, line_max)[1]
        # band 0's window came back at the first of them, then nothing changed
        assert changed[1].tolist() == (win[0] if k == 0 else [])
    assert calls == [n0 + n2, n2]
    pre(X, E, G, a, line_max)
    assert calls == [n0 + n2, n2, n0] and pre.n_hessians == 2 * (n0 + n2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(climb_hessian=1.0), "climb_hessian"),
    (dict(precond_floor=0.0), "precond_floor"),
    (dict(precond_every=0), "precond_every"),
    (dict(precond_width=-1), "precond_width"),
])
def test_climb_hessian_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        string_method(stiff_valley, [-1.0, 0.5], [1.0, 0.5], max_iter=5, climb=True, **kwargs)


def test_refine_band_keeps_the_images_and_the_string_keeps_them_too():
    from relunet.experiments.fig4_neb import refine_band
    X = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]]])
    P, f = refine_band(X)
    np.testing.assert_array_equal(P[0], [[0, 0], [0.5, 0], [1, 0], [1, 1], [1, 2]])
    np.testing.assert_allclose(f[0], [0, 0.5 / 3, 1 / 3, 2 / 3, 1], rtol=1e-15)
    # started at the path's own fractions the string's images are the path's points, and on a
    # frozen grid a converged band stays converged: the double well's MEP, refined
    kw = dict(n_images=9, max_iter=3000, step=0.01, step_max=0.5, max_step=0.05,
              gs_radius=1e-4, gs_tol=1e-3, etol=1e-9, regrid_every=50, regrid_until=200,
              climb=True, watch="image")
    from relunet.neb_surfaces import double_well
    curved = lambda X: double_well(X, c=0.5)  # noqa: E731
    r = string_method(curved, [-1.0, 0.5], [1.0, 0.5], **kw)
    assert r.converged[0]
    P, f = refine_band(r.images)
    r0 = string_method(curved, [-1.0, 0.5], [1.0, 0.5], path=P, fractions=f,
                       **{**kw, "n_images": 17, "max_iter": 0, "regrid_every": 0})
    np.testing.assert_allclose(r0.images, P, atol=1e-14)
    r2 = string_method(curved, [-1.0, 0.5], [1.0, 0.5], path=P, fractions=f,
                       **{**kw, "n_images": 17, "regrid_every": 0})
    assert r2.converged[0]
    # the old climbing image (now image 2c) is still the saddle, E = 1 to rounding
    c = np.argmax(r.energies[0])
    assert np.argmax(r2.energies[0]) == 2 * c
    np.testing.assert_allclose(r2.energies[0, 2 * c], r.energies[0, c], atol=1e-12)


@pytest.mark.parametrize("fractions", [np.linspace(0, 1, 8), np.linspace(0.1, 1, 9),
                                       np.array([0, .2, .1, .3, .4, .5, .6, .7, 1.0])])
def test_string_fractions_bad_input(fractions):
    with pytest.raises(ValueError, match="fractions"):
        string_method(stiff_valley, [-1.0, 0.5], [1.0, 0.5], n_images=9, max_iter=5,
                      path=np.array([[-1.0, 0.5], [1.0, 0.5]]), fractions=fractions)
