"""refine_segments: a band's rising segments relaxed as strings of their own give a path
whose maximum is a tighter upper bound; checked on the curved double well, whose barrier
is exactly 1 (closed form), and against the composite path's own dense profile."""
import numpy as np
import pytest

from relunet.neb_surfaces import double_well
from relunet.string_method import dense_profile, refine_segments, string_method

C = 2.0


def well(X):
    return double_well(X, c=C)


def _coarse_band():
    """Four images on the minimum energy path y = c x^2 (not relaxed: max_iter=0); the
    chord between the two inner images passes x = 0 at y = c / 4, above the saddle."""
    x0 = np.array([-1.0, -0.5, 0.5, 1.0])
    path = np.stack([x0, C * x0 ** 2], axis=1)
    return string_method(well, path[0], path[-1], n_images=4, path=path, max_iter=0)


def test_the_rising_segment_relaxes_onto_the_saddle():
    res = _coarse_band()
    ref = refine_segments(well, res, n_images=5, max_iter=500)
    # only the middle segment rises above its images and the band's highest image
    np.testing.assert_array_equal(ref.segments, [[0, 1]])
    assert res.peak_energy[0] > 1.4                       # the chord: 1 + (c/4)^2 and more
    # every path between the two minima crosses x = 0, where E >= 1: the barrier is 1
    assert 1.0 - 1e-12 <= ref.peak[0] <= 1.0 + 1e-6
    assert ref.peak[0] <= res.peak_energy[0]
    # the composite path (band images with the sub-string's inside the middle segment):
    # its own dense profile peaks where refine_segments says
    sub = ref.sub.images[0]
    X = np.concatenate([res.images[0, :2], sub[1:-1], res.images[0, 2:]])[None]
    _, prof = dense_profile(well, X, n_dense=16)
    assert prof.max() <= ref.peak[0] + 1e-12
    assert prof.max() >= ref.peak[0] - 1e-6
    # the other segments keep their own maxima
    for j in (0, 2):
        assert ref.segment_max[0, j] <= max(res.energies[0, j], res.energies[0, j + 1]) + 1e-4


def test_a_band_without_rising_segments_is_left_alone():
    """On the straight well (c = 0) with an image on the saddle no segment rises above
    the highest image: nothing is relaxed and the peak is the band's own, bit for bit."""
    def flat(X):
        return double_well(X, c=0.0)
    x0 = np.linspace(-1.0, 1.0, 5)
    path = np.stack([x0, np.zeros(5)], axis=1)
    res = string_method(flat, path[0], path[-1], n_images=5, path=path, max_iter=0)
    ref = refine_segments(flat, res)
    assert ref.segments.shape == (0, 2) and ref.sub is None
    assert ref.peak[0] == res.peak_energy[0] == 1.0


def test_refine_segments_bad_input():
    res = _coarse_band()
    with pytest.raises(ValueError, match="n_images must be >= 3"):
        refine_segments(well, res, n_images=2)
    with pytest.raises(ValueError, match="res must hold Bn bands"):
        refine_segments(well, res.squeeze())
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        refine_segments(well, res, tol=-1.0)


def test_smooth_keeps_a_straight_band_and_shortens_a_bent_one():
    """string_method.smooth: an evenly spaced straight band is a fixed point (to rounding);
    a V-shaped band keeps its ends and gets shorter with every sweep, towards the chord;
    many sweeps take it to the straight line; bad input is refused."""
    import numpy as np
    import pytest

    from relunet.string_method import smooth

    s = np.linspace(0.0, 1.0, 9)[:, None]
    line = np.hstack([s, 2.0 * s, -s])
    np.testing.assert_allclose(smooth(line, 10), line, atol=1e-15)
    vee = np.stack([np.linspace(-1, 1, 9), 1.0 - np.abs(np.linspace(-1, 1, 9))], axis=1)

    def length(X):
        return np.linalg.norm(np.diff(X, axis=0), axis=1).sum()

    lengths = [length(smooth(vee, k)) for k in range(6)]
    assert np.all(np.diff(lengths) < 0) and lengths[0] == pytest.approx(2 * np.sqrt(2))
    far = smooth(vee[None], 2000)[0]
    np.testing.assert_array_equal(far[[0, -1]], vee[[0, -1]])
    np.testing.assert_allclose(far[:, 1], 0.0, atol=1e-6)
    assert length(far) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="sweeps"):
        smooth(vee, -1)
    with pytest.raises(ValueError, match="X must be"):
        smooth(np.zeros(5), 1)


def test_smooth_with_a_held_image_straightens_the_band_on_each_side_of_it():
    """string_method.smooth(hold=...): the held images and the ends do not move; the rest
    tends to the polyline through them (here the two legs of a V held at its tip, each
    straightened with its images evenly spaced); the mask must match the images."""
    import numpy as np
    import pytest

    from relunet.string_method import smooth

    u = np.linspace(-1, 1, 9)
    bent = np.stack([u, 1.0 - np.abs(u) + 0.3 * np.sin(3 * np.pi * u)], axis=1)
    hold = np.zeros(9, bool)
    hold[4] = True                                        # the tip (0, 1)
    far = smooth(bent, 3000, hold=hold)
    np.testing.assert_array_equal(far[[0, 4, 8]], bent[[0, 4, 8]])
    vee = np.stack([u, 1.0 - np.abs(u)], axis=1)          # the legs (-1, 0)-(0, 1)-(1, 0)
    np.testing.assert_allclose(far, vee, atol=1e-9)
    two = smooth(np.stack([bent, bent]), 3000, hold=np.stack([hold, np.zeros(9, bool)]))
    np.testing.assert_array_equal(two[0], far)            # per band
    np.testing.assert_allclose(two[1][:, 1], 0.0, atol=1e-9)
    np.testing.assert_array_equal(smooth(bent, 7, hold=np.zeros(9, bool)), smooth(bent, 7))
    with pytest.raises(ValueError, match="hold must be booleans of shape"):
        smooth(bent, 1, hold=np.zeros(8, bool))
    with pytest.raises(ValueError, match="hold must be booleans"):
        smooth(bent, 1, hold=np.zeros(9))


def test_fig4_long_bands_are_sorted_by_why():
    """fig4_neb._long: the bands above 1.5 x chord split into those ending at a constant
    network (end MSE within etol of var(t)), unconverged ones, converged ones no round
    replaced, and replaced ones still long (hand-worked: six bands, one of each and two
    short ones)."""
    import numpy as np

    from relunet.experiments import fig4_neb as F
    cfg = F.config("smoke")
    var_t = 0.2276
    ends = np.array([var_t, 0.1, 0.1, 0.1, 0.1, var_t + 5e-5])
    d = {"energies": np.column_stack([np.zeros(6), np.full(6, 0.17), ends]),
         "shorten_round": np.array([0, 0, 0, 1, 0, 2])}
    ratio = np.array([1.6, 1.7, 1.55, 1.51, 1.2, 1.4])
    conv = np.array([True, False, True, True, True, True])
    row = F._long(cfg, d, ratio, conv, var_t)
    assert row == ("; of the 4 longer: 1 end at a network that predicts a constant (MSE within "
                   "1.00e-04 of var(t)), 1 not converged, 1 converged bands no shortening round "
                   "could replace (their shortened paths crossed a higher pass or did not "
                   "converge), 1 replaced but still longer")
    assert F._long(cfg, d, np.full(6, 1.5), conv, var_t) == ""


def test_shortening_rounds_keep_the_lower_pass_on_a_two_pass_surface():
    """fig4_neb.shorten on a 2-D surface with two passes between the minima (-1, 0) and
    (1, 0): E = (x^2 - 1)^2 + exp(-x^2 / 0.08) v(y), v(y) = 0.05 y^2 (y - 2)^2 - 0.05 y, so
    the passes sit at x = 0 where v'(y) = 0.2 y (y - 1)(y - 2) - 0.05 = 0 has its minima
    (roots of y^3 - 3y^2 + 2y - 1/4): a high one near the chord (y ~ 0.16, E ~ 0.9963)
    and a low one at y ~ 2.107 (E ~ 0.8972). A band started on a long detour over the low
    pass relaxes onto it; the free round's smoothing takes it to the chord, where it
    relaxes over the high pass: rejected (its highest point is higher); the held round
    (the climbing image held) keeps the low pass on a shorter path: replaced."""
    from types import SimpleNamespace

    import numpy as np

    from relunet.experiments.fig4_neb import shorten
    from relunet.string_method import smooth, string_method

    def efun(X):
        x, y = X[:, 0], X[:, 1]
        s = np.exp(-x ** 2 / 0.08)
        v = 0.05 * y ** 2 * (y - 2) ** 2 - 0.05 * y
        dv = 0.2 * y * (y - 1) * (y - 2) - 0.05
        gx = 4 * x * (x ** 2 - 1) - (2 * x / 0.08) * s * v
        return (x ** 2 - 1) ** 2 + s * v, np.stack([gx, s * dv], axis=1)

    roots = np.roots([1.0, -3.0, 2.0, -0.25]).real            # all three are real
    passes = {}
    for y in (roots.min(), roots.max()):                         # v's two minima
        passes[y] = 1.0 + 0.05 * y ** 2 * (y - 2) ** 2 - 0.05 * y
    (y_high, e_high), (y_low, e_low) = sorted(passes.items())
    assert e_low < e_high - 0.05
    a, b, n = np.array([-1.0, 0.0]), np.array([1.0, 0.0]), 9
    u = np.linspace(-1, 1, n)
    frac = np.linspace(0, 1, n)
    kw = dict(n_images=n, max_iter=4000, step=1e-3, step_max=0.05, max_step=0.05,
              climb=True, watch="image", regrid_every=0, etol=1e-6, gs_tol=1e-3,
              gs_radius=1e-3, window=10, check_every=10)

    def relax(rows, path, fractions):
        return string_method(efun, a, b, path=path, fractions=fractions, **kw)

    def length(r):
        return np.linalg.norm(np.diff(r.images, axis=1), axis=2).sum(axis=1)[0]

    first = relax(None, np.stack([u, 3.0 * (1 - u ** 2)], axis=1)[None], frac)   # via (0, 3)
    assert first.converged[0] and abs(first.energies.max() - e_low) < 1e-6
    cfg = SimpleNamespace(shorten_rounds=1, hold_widths=(0,), shorten_sweeps=300, etol=1e-4)
    free = relax(None, smooth(first.images, cfg.shorten_sweeps), frac)
    assert free.converged[0] and abs(free.energies.max() - e_high) < 1e-5   # the high pass
    res, kept = shorten(cfg, relax, first, lambda r: r.energies.max(axis=1))
    assert kept.tolist() == [2]                         # the held round, not the free one
    top = res.images[0, np.argmax(res.energies[0])]
    np.testing.assert_allclose(top, [0.0, y_low], atol=1e-3)
    assert abs(res.energies.max() - e_low) < 1e-6 and res.converged[0]
    assert length(res) < length(first) - 0.2


def _quadric(A, kink=None):
    """E(p) = sum_i A_i p_i^2 (+ |p_kink| instead of the kink's square), batched."""
    A = np.asarray(A, dtype=np.float64)

    def efun(X):
        X = np.asarray(X, dtype=np.float64)
        E = np.sum(A * X ** 2, axis=1)
        G = 2 * A * X
        if kink is not None:
            E += np.abs(X[:, kink]) - A[kink] * X[:, kink] ** 2
            G[:, kink] = np.sign(X[:, kink])
        return E, G
    return efun


def test_min_across_finds_the_constrained_minimum_of_a_saddle():
    """string_method.min_across on E = -x^2 + y^2 + 2 z^2 (a saddle at 0, unstable along x):
    from a band's top at (0, .5, .3) with the band along x the minimum across is the saddle
    itself (drop .43 = E there); with the band tilted the hyperplane's minimum is the KKT
    point A^-1 tau (tau.c) / (tau' A^-1 tau), A = diag(-1, 1, 2) (a closed form); from the
    saddle itself nothing descends (a transition state passes the test)."""
    from relunet.string_method import min_across
    A = np.array([-1.0, 1.0, 2.0])
    efun = _quadric(A)
    c = np.array([0.0, 0.5, 0.3])
    along = np.stack([c - [1, 0, 0], c, c + [1, 0, 0]])
    tilted = np.stack([c - [1, 0.1, 0], c, c + [1, 0.1, 0]])
    at_saddle = np.stack([[-1.0, 0, 0], [0, 0, 0], [1.0, 0, 0]])
    X = np.stack([along, tilted, at_saddle])
    E = efun(X.reshape(-1, 3))[0].reshape(3, 3)
    W, L, dist = min_across(efun, X, E, max_iter=200)
    tau = np.array([2.0, 0.2, 0.0]) / np.linalg.norm([2.0, 0.2, 0.0])
    kkt = (tau / A) * (tau @ c) / (tau @ (tau / A))
    np.testing.assert_allclose(W[0], 0.0, atol=1e-8)
    np.testing.assert_allclose(W[1], kkt, atol=1e-8)
    np.testing.assert_allclose(L[:2], [0.0, efun(kkt[None])[0][0]], atol=1e-12)
    np.testing.assert_allclose(dist[0], np.linalg.norm(c), rtol=1e-8)
    assert abs(tau @ (W[1] - c)) < 1e-14            # it stayed in the hyperplane
    assert L[2] == 0.0 and dist[2] == 0.0            # the saddle: no descent across


def test_min_across_reaches_a_kink_minimum_across_the_band():
    """On E = -x^2 + |y| + z^2 the minimum across a band along x through (0, .5, .3) sits on
    the kink y = 0 (the gradient jumps there): the weak-Wolfe BFGS reaches it, E = 0 to 1e-8
    (drop .59)."""
    from relunet.string_method import min_across
    efun = _quadric([-1.0, 1.0, 1.0], kink=1)
    c = np.array([0.0, 0.5, 0.3])
    X = np.stack([c - [1, 0, 0], c, c + [1, 0, 0]])[None]
    E = efun(X[0])[0][None]
    W, L, _ = min_across(efun, X, E, max_iter=300)
    assert abs(L[0]) < 1e-8 and abs(E[0, 1] - L[0] - 0.59) < 1e-8
    with pytest.raises(ValueError, match="B >= 3"):
        min_across(efun, X[:, :2], E[:, :2])
