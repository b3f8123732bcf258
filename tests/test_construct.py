"""W_f fits what the paper says it fits (the construction in relunet/construct.py)."""
import numpy as np
import pytest

from relunet import kernels as kn
from relunet.construct import (
    WF_ARCH,
    build_wf,
    combine_blocks,
    default_heights,
    f_closed_form,
    sawtooth_block,
)
from relunet.data import sample_points, training_set, wf_training_set
from relunet.knots import knots, linear_regions
from relunet.net import Arch, init_stack


def test_wf_has_136_parameters_and_the_documented_numbers():
    w = build_wf()
    assert WF_ARCH.P == 136 and w.shape == (136,)
    np.testing.assert_allclose(default_heights(), [0, -0.2578, 0.5147, 0], atol=1e-4)
    assert np.linalg.norm(w) == pytest.approx(50.7, abs=0.05)
    v = WF_ARCH.unpack(w)
    np.testing.assert_allclose(v["Wout"][0, :2], [22.4, -44.8])
    np.testing.assert_allclose(v["b1"], [1, 0, 1, 1 / 3, -1 / 3])
    np.testing.assert_allclose(v["b5"], [0, -1 / 16, 0, 0, 0])
    # the two blocks never feed each other
    for layer in range(2, 6):
        W = v[f"W{layer}"]
        assert np.all(W[:2, 2:] == 0) and np.all(W[2:, :2] == 0)


def test_wf_matches_independent_closed_form():
    x = np.linspace(-1, 1, 4001)
    y = kn.forward(build_wf(), WF_ARCH, x)[0]
    np.testing.assert_allclose(y, f_closed_form(x), atol=1e-12)
    h = np.array([0.0, 0.3, -0.7, 0.0])
    np.testing.assert_allclose(kn.forward(build_wf(h), WF_ARCH, x)[0],
                               f_closed_form(x, heights=h), atol=1e-12)


def test_sixteen_teeth_of_height_1p4_zero_outside():
    arch, w = combine_blocks([sawtooth_block(5, 1.4)])
    x = np.linspace(-3, 3, 96001)
    y = kn.forward(w, arch, x)[0]
    assert np.all(y[np.abs(x) > 1] == 0)
    peaks = np.arange(-15, 16, 2) / 16            # odd multiples of 1/16
    assert peaks.size == 16
    np.testing.assert_allclose(kn.forward(w, arch, peaks)[0], 1.4, rtol=1e-12)
    np.testing.assert_allclose(kn.forward(w, arch, np.arange(-8, 9) / 8)[0], 0, atol=1e-12)
    assert y.max() == pytest.approx(1.4, abs=1e-3) and y.min() >= 0


def test_35_knots_in_interval():
    k = knots(build_wf(), WF_ARCH)
    expected = np.union1d(np.arange(-16, 17) / 16, [-1 / 3, 1 / 3])
    assert k.size == 35
    np.testing.assert_allclose(k, expected, atol=1e-12)


def test_training_set_341_points_and_zero_loss_in_both_precisions():
    x, t = wf_training_set()
    assert x.size == 341 and np.unique(x).size == 341
    assert x.min() == -1 and x.max() == 1
    np.testing.assert_allclose(t, f_closed_form(x), atol=1e-12)
    # the targets are W_f's outputs by the plain kernel: exactly zero there; the
    # fast kernel sums in another order, so only to rounding (residuals ~1e-16)
    assert kn.loss(build_wf(), WF_ARCH, x, t, kernel="plain")[0] == 0.0
    assert kn.loss(build_wf(), WF_ARCH, x, t)[0] < 1e-30
    x32, t32 = wf_training_set(dtype=np.float32)
    assert x32.dtype == np.float32
    assert kn.loss(build_wf(dtype=np.float32), WF_ARCH, x32, t32, kernel="plain")[0] == 0.0
    assert kn.loss(build_wf(dtype=np.float32), WF_ARCH, x32, t32)[0] < 1e-12
    xa, _ = wf_training_set(variant="authors350")
    assert xa.size == 350 and np.sum(xa == -1) == 11 and not np.any(xa == 1)


def test_knot_finder_against_dense_sampling(rng):
    """Every slope change seen on a dense grid lies next to a reported knot and
    every reported knot shows a slope change."""
    for K, N in [(1, 3), (3, 4), (5, 5)]:
        arch = Arch(K, N)
        for W in init_stack(arch, rng.integers(0, 2**31, 4)):
            W = W + 0.2 * rng.standard_normal(W.shape)
            k = knots(W, arch, -2, 2)
            x = np.linspace(-2, 2, 200_001)
            h = x[1] - x[0]
            y = kn.forward(W, arch, x)[0]
            d2 = np.abs(np.diff(y, 2))
            kinked = x[1:-1][d2 > 1e-9 * (1 + np.abs(y).max())]
            for xk in kinked:                     # each sampled kink is near a knot
                assert np.min(np.abs(k - xk)) <= 1.01 * h
            for xk in k:                          # each knot is a real slope change
                sl = (kn.forward(W, arch, [xk - 1e-6, xk])[0] @ [-1, 1]) / 1e-6
                sr = (kn.forward(W, arch, [xk, xk + 1e-6])[0] @ [-1, 1]) / 1e-6
                assert abs(sl - sr) > 1e-6


def test_linear_regions_reproduce_the_network(rng):
    arch = Arch(4, 3)
    w = init_stack(arch, [7])[0] + 0.3 * rng.standard_normal(arch.P)
    bounds, slopes, icpt = linear_regions(w, arch)
    x = rng.uniform(-3, 3, 500)
    r = np.searchsorted(bounds, x) - 1
    np.testing.assert_allclose(icpt[r] + slopes[r] * x, kn.forward(w, arch, x)[0],
                               atol=1e-10)


def test_bad_input():
    with pytest.raises(ValueError, match="heights"):
        build_wf(heights=[0, 1, 2])
    with pytest.raises(ValueError, match="kn must be"):
        sample_points([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="variant"):
        sample_points([0.0, 1.0], variant="nope")
    with pytest.raises(ValueError, match="per_interval"):
        sample_points([0.0, 1.0], per_interval=-1)
    with pytest.raises(ValueError, match="lo < hi"):
        knots(build_wf(), WF_ARCH, 1, -1)
    with pytest.raises(ValueError, match="w must be one network"):
        knots(np.zeros((2, 136)), WF_ARCH)
    with pytest.raises(ValueError, match="n_in = n_out = 1"):
        training_set(np.zeros(Arch(1, 1, n_in=2).P), Arch(1, 1, n_in=2))
