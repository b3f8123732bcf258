"""Tests of relunet.geometry: distances, path angles/lengths/functions, classical MDS."""
import numpy as np
import pytest

from relunet.construct import WF_ARCH, build_wf
from relunet.geometry import (
    distances_from,
    embed_2d,
    pairwise_distances,
    path_angles,
    path_functions,
    path_length,
)
from relunet.kernels import forward_ref
from relunet.net import Arch, init_stack
from relunet.symmetry import canonicalize, random_symmetry

A23 = Arch(2, 3)


def test_angles_straight_path_are_zero():
    d = np.random.default_rng(0).normal(size=7)
    t = np.array([0.0, 0.1, 0.5, 0.6, 2.0])       # uneven spacing, same direction
    np.testing.assert_allclose(path_angles(t[:, None] * d), 0.0, atol=1e-12)


def test_angles_zigzag_and_known_turns():
    zig = np.array([[0, 0], [1, 0], [1, 1], [2, 1], [2, 2]], dtype=float)
    np.testing.assert_allclose(path_angles(zig), [np.pi / 2] * 3, rtol=1e-14)
    # (1,0) then (cos 60, sin 60): 60 degrees; then straight back: 180 degrees
    p = np.array([[0, 0], [1, 0], [1.5, np.sqrt(3) / 2], [1, 0]])
    np.testing.assert_allclose(path_angles(p), [np.pi / 3, np.pi], rtol=1e-12)
    # in 3-D: x step then z step, embedded with two zero coordinates
    p3 = np.zeros((3, 5))
    p3[1, 0], p3[2, 0], p3[2, 3] = 2.0, 2.0, 0.5
    np.testing.assert_allclose(path_angles(p3), [np.pi / 2])


def test_angles_repeated_image_is_nan():
    p = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 1.0]])
    a = path_angles(p)
    assert np.isnan(a).all() and a.shape == (2,)


def test_path_length_known_polyline():
    p = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 10.0], [0.0, 6.0]])
    np.testing.assert_allclose(path_length(p), [0.0, 5.0, 11.0, 16.0])   # 5, 6, 5
    np.testing.assert_array_equal(path_length(p[:1]), [0.0])


def test_path_functions_match_forward():
    images = init_stack(A23, [1, 2, 3, 4])
    x = np.linspace(-1, 1, 37)
    y = path_functions(images, A23, x)
    assert y.shape == (4, 37)
    for b in range(4):
        np.testing.assert_allclose(y[b], forward_ref(images[b], A23, x)[0], rtol=1e-12,
                                   atol=1e-14)


def test_distances_from_agree_with_direct_computation():
    W = init_stack(A23, np.arange(5))
    ref = init_stack(A23, [99])[0]
    want = np.array([np.linalg.norm(canonicalize(w, A23) - canonicalize(ref, A23)) for w in W])
    np.testing.assert_allclose(distances_from(ref, W, A23), want, rtol=1e-12)
    np.testing.assert_allclose(distances_from(ref, W, A23, canonical=False),
                               np.sqrt(((W - ref) ** 2).sum(1)), rtol=1e-12)
    # copies of W_f under random symmetries are at distance 0 from W_f
    wf = build_wf()
    copies = random_symmetry(np.tile(wf, (3, 1)), WF_ARCH, np.random.default_rng(0))
    assert distances_from(wf, copies, WF_ARCH, canonical=False).min() > 1.0
    np.testing.assert_allclose(distances_from(wf, copies, WF_ARCH), 0.0, atol=1e-8)


def test_pairwise_distances():
    W = init_stack(A23, np.arange(6))
    D = pairwise_distances(W, A23)
    Wc = canonicalize(W, A23)
    want = np.linalg.norm(Wc[:, None, :] - Wc[None, :, :], axis=2)
    np.testing.assert_allclose(D, want, rtol=1e-12, atol=1e-14)
    assert np.array_equal(D, D.T) and (np.diag(D) == 0).all()
    np.testing.assert_allclose(pairwise_distances(W, A23, canonical=False),
                               np.linalg.norm(W[:, None] - W[None], axis=2), rtol=1e-12)


def test_mds_reproduces_planar_configuration():
    rng = np.random.default_rng(5)
    Y = rng.normal(size=(12, 2)) * [3.0, 1.0]
    D = np.linalg.norm(Y[:, None] - Y[None], axis=2)
    Z, lam = embed_2d(D, return_eigenvalues=True)
    np.testing.assert_allclose(np.linalg.norm(Z[:, None] - Z[None], axis=2), D,
                               atol=1e-10 * D.max())
    assert lam[1] > 0 and np.abs(lam[2:]).max() < 1e-10 * lam[0]
    # points in a plane embedded in 10-D (rotated): same distances recovered
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    X = np.concatenate([Y, np.zeros((12, 8))], axis=1) @ Q.T
    D10 = np.linalg.norm(X[:, None] - X[None], axis=2)
    Z10 = embed_2d(D10)
    np.testing.assert_allclose(np.linalg.norm(Z10[:, None] - Z10[None], axis=2), D,
                               atol=1e-9 * D.max())


def test_bad_input():
    with pytest.raises(ValueError, match="images"):
        path_angles(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="images"):
        path_length(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        path_length(np.array([[0.0, np.inf]]))
    with pytest.raises(ValueError, match="W_ref"):
        distances_from(np.zeros((2, A23.P)), np.zeros((3, A23.P)), A23)
    with pytest.raises(ValueError, match="images"):
        path_functions(np.zeros((2, A23.P + 1)), A23, np.zeros(3))
    with pytest.raises(ValueError, match="D must"):
        embed_2d(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="symmetric"):
        embed_2d(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="arch"):
        pairwise_distances(np.zeros((2, A23.P)), "2x3")


def test_components_of_w_f_its_blocks_and_a_constant():
    """geometry.components in the basis (spline, teeth, 1) of W_f's two blocks: W_f is
    (1, 1, 0); W_f with its teeth switched off (sawtooth amplitude 0) is (1, 0, 0); with a
    flat spline (heights 0) (0, 1, 0); the teeth's output weights scaled by 0.3 give
    (1, 0.3, 0); a network whose only nonzero weight is its output bias 0.7 is (0, 0, 0.7);
    all with residual 0 (to rounding)."""
    from relunet.data import wf_training_set
    from relunet.geometry import components
    x, _ = wf_training_set()
    W = np.stack([build_wf(), build_wf(amplitude=0.0), build_wf(np.zeros(4))])
    scaled = build_wf()
    sv = WF_ARCH.unpack(scaled)
    sv["Wout"][0, :2] *= 0.3                  # the sawtooth block: the first two units
    const = np.zeros(WF_ARCH.P)
    WF_ARCH.unpack(const)["bout"][0] = 0.7
    coef, res = components(np.vstack([W, scaled, const]), WF_ARCH, x)
    want = [[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0.3, 0], [0, 0, 0.7]]
    np.testing.assert_allclose(coef, want, atol=1e-12)
    np.testing.assert_allclose(res, 0.0, atol=1e-26)


def test_spline_level_is_the_simple_regression_residual():
    """geometry.spline_level: the residual of the least-squares line f ~ a s + c, in closed
    form var(f) - cov(s, f)^2 / var(s) (s the spline block's output, f = s + teeth)."""
    from relunet.data import wf_training_set
    from relunet.geometry import spline_level
    from relunet.kernels import forward
    x, t = wf_training_set()
    s = forward(build_wf(amplitude=0.0), WF_ARCH, x)[0]
    f = t.ravel()
    cov = np.mean((s - s.mean()) * (f - f.mean()))
    assert spline_level(x) == pytest.approx(np.var(f) - cov ** 2 / np.var(s), rel=1e-12)
    assert 0.1 < spline_level(x) < np.var(f)
