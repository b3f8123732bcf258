"""The plateau path: never above max(E_A, E_B, var(t)), checked point by point against
its closed form (leg 1 a convex quadratic in s, leg 2 exactly the constant's loss)."""
import numpy as np
import pytest

from relunet import Arch
from relunet.construct import WF_ARCH, build_wf
from relunet.data import wf_training_set
from relunet.kernels import forward, loss, loss_and_grad
from relunet.net import init_stack
from relunet.plateau import constant_fit, plateau_bound, plateau_path
from relunet.string_method import dense_profile, reparametrize
from relunet.symmetry import random_symmetry


def _closed_form_leg1(wa, arch, x, t, s):
    """(1 - s)^2 E_A + 2 s (1 - s) C_A + s^2 E_c from A's outputs (module docstring)."""
    T = np.asarray(t, dtype=np.float64).reshape(len(t), -1)
    y = forward(wa, arch, x).reshape(len(T), -1)
    c, e_c = constant_fit(t, arch.n_out)
    e_a = np.mean((y - T) ** 2)
    c_a = np.mean((y - T) * (c - T))
    return (1 - s) ** 2 * e_a + 2 * s * (1 - s) * c_a + s ** 2 * e_c


@pytest.mark.parametrize("arch, n_points", [(WF_ARCH, None), (Arch(K=2, N=3, n_in=2, n_out=2), 40)])
def test_plateau_path_stays_below_the_bound_and_matches_its_closed_form(arch, n_points):
    if n_points is None:
        x, t = wf_training_set()
        A = np.vstack([build_wf(), init_stack(arch, [1])[0]])
    else:
        rng = np.random.default_rng(3)
        x, t = rng.uniform(-1, 1, (n_points, 2)), rng.normal(size=(n_points, 2))
        A = init_stack(arch, [1, 2]) * 3.0
    B = init_stack(arch, [7, 8]) * 2.0 + 0.1          # far from A, biases nonzero
    n = 33
    path = plateau_path(A, B, arch, t, n_per_leg=n)
    assert path.shape == (2, 3 * n - 2, arch.P)
    assert np.array_equal(path[:, 0], A) and np.array_equal(path[:, -1], B)
    E = loss(path.reshape(-1, arch.P), arch, x, t, kernel="plain").reshape(2, -1)
    bound = plateau_bound(E[:, 0], E[:, -1], t, arch.n_out)
    _, e_c = constant_fit(t, arch.n_out)
    assert np.all(E.max(axis=1) <= bound * (1 + 1e-12))
    s = np.linspace(0, 1, n)
    for b in range(2):
        np.testing.assert_allclose(E[b, :n], _closed_form_leg1(A[b], arch, x, t, s),
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(E[b, ::-1][:n], _closed_form_leg1(B[b], arch, x, t, s),
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(E[b, n - 1:2 * n - 1], e_c, rtol=1e-13)   # the plateau

def test_two_images_of_w_f_joined_at_var_t_where_the_straight_line_climbs_to_1e3():
    """W_f and a rescaled, permuted copy of it (loss 0 both): the straight line between
    them climbs above 1,000, the plateau path no higher than var(t)."""
    x, t = wf_training_set()
    A = build_wf()
    B = np.asarray(random_symmetry(A[None], WF_ARCH, np.random.default_rng(0))).reshape(-1)
    line = A + np.linspace(0, 1, 97)[:, None] * (B - A)
    assert loss(line, WF_ARCH, x, t, kernel="plain").max() > 1e3
    E = loss(plateau_path(A, B, WF_ARCH, t)[0], WF_ARCH, x, t, kernel="plain")
    _, e_c = constant_fit(t)
    assert E.max() <= e_c * (1 + 1e-12) and E.max() >= e_c * (1 - 1e-12)


def test_constant_fit_is_the_mean_and_its_mse():
    t = np.array([1.0, 2.0, 6.0])
    c, e = constant_fit(t)
    assert c[0] == 3.0 and e == pytest.approx((4 + 1 + 9) / 3)


def test_plateau_path_bad_input():
    A = init_stack(WF_ARCH, [1])
    _, t = wf_training_set()
    with pytest.raises(ValueError, match="n_per_leg must be an integer >= 2"):
        plateau_path(A, A, WF_ARCH, t, n_per_leg=1)
    with pytest.raises(ValueError, match="one per end"):
        plateau_path(np.vstack([A, A]), np.vstack([A, A, A]), WF_ARCH, t)
    with pytest.raises(ValueError, match="arch must be a relunet.Arch"):
        plateau_path(A, A, "5x5", t)
    with pytest.raises(ValueError, match="output column"):
        constant_fit(np.zeros((4, 2)), 1)


def test_band_start_is_the_plateau_path_on_its_corner_grid_or_the_straight_line():
    from relunet.plateau import band_start, corner_grid
    x, t = wf_training_set()
    a, b = build_wf(), init_stack(WF_ARCH, [3, 4, 5])
    path, frac = band_start("plateau", a, b, WF_ARCH, t, 5)
    np.testing.assert_array_equal(path, plateau_path(a, b, WF_ARCH, t, n_per_leg=5))
    np.testing.assert_array_equal(frac, corner_grid(path, 5))
    assert path.shape == (3, 13, WF_ARCH.P) and frac.shape == (3, 5)
    assert band_start("straight", a, b, WF_ARCH, t, 5) == (None, None)
    with pytest.raises(ValueError, match="start must be 'plateau' or 'straight'"):
        band_start("line", a, b, WF_ARCH, t, 5)


def test_corner_grid_hand_worked():
    """Legs of lengths 1, 3 and 1.5 (corners at arc-length fractions 2/11 and 8/11): on
    the uniform grid of 9 points (spacing 1/8) the nearest points are 1/8 and 6/8, and
    they move onto the corners; the others stay."""
    from relunet.plateau import corner_grid
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 3.0], [-0.5, 3.0]])
    path = np.concatenate([corners[k] + np.linspace(0, 1, 3)[:-1, None] * (corners[k + 1]
                                                                         - corners[k])
                           for k in range(3)] + [corners[-1:]])          # 3 points per leg
    assert path.shape == (7, 2)
    want = np.arange(9) / 8.0
    want[1], want[6] = 2.0 / 11.0, 8.0 / 11.0
    np.testing.assert_allclose(corner_grid(path, 9)[0], want, rtol=1e-15)
    X = reparametrize(path[None], corner_grid(path, 9))[0]
    np.testing.assert_allclose(X[[1, 6]], corners[[1, 2]], atol=1e-15)


def test_corner_grid_keeps_the_band_on_the_plateau_path():
    """W_f and a permuted, rescaled copy (loss 0 both): a band on the uniform grid has
    chords across the path's corners that climb far above var(t); on the corner grid
    its polyline is the plateau path, never above the bound (the string method's start)."""
    from relunet.plateau import corner_grid
    x, t = wf_training_set()
    A = build_wf()
    B = np.asarray(random_symmetry(A[None], WF_ARCH, np.random.default_rng(0))).reshape(-1)
    _, e_c = constant_fit(t)
    ef = lambda X: loss_and_grad(X, WF_ARCH, x, t)                       # noqa: E731
    for n in (6, 10):
        path = plateau_path(A, B, WF_ARCH, t, n_per_leg=n)
        E_uniform = dense_profile(ef, reparametrize(path, np.linspace(0, 1, n)), 8)[1]
        E_corner = dense_profile(ef, reparametrize(path, corner_grid(path, n)), 8)[1]
        assert E_uniform.max() > 1.0 > e_c
        assert E_corner.max() <= e_c * (1 + 1e-12)


def test_corner_grid_bad_input():
    from relunet.plateau import corner_grid
    with pytest.raises(ValueError, match="path must be a plateau path"):
        corner_grid(np.zeros((2, 6, 3)), 8)
    with pytest.raises(ValueError, match="n_images must be an integer >= 4"):
        corner_grid(np.zeros((7, 3)), 3)
