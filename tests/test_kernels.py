"""numba kernels against their NumPy twins and against finite differences."""
import numba
import numpy as np
import pytest

from relunet import kernels as kn
from relunet.gradcheck import block_errors, directional_check, fd_gradient
from relunet.net import Arch, init_stack

from netcases import data_off_kinks, random_stack


@pytest.mark.parametrize("K,N", [(1, 1), (2, 3), (5, 5), (10, 10)])
def test_kernels_match_numpy_twins(K, N, rng):
    arch = Arch(K, N)
    for M in (1, 3, 17):
        W = random_stack(arch, M, rng)
        x = rng.uniform(-1.2, 1.2, 57)
        t = rng.standard_normal(57)
        np.testing.assert_allclose(kn.forward(W, arch, x), kn.forward_ref(W, arch, x),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(kn.loss(W, arch, x, t), kn.loss_ref(W, arch, x, t),
                                   rtol=1e-12, atol=1e-14)
        loss, g = kn.loss_and_grad(W, arch, x, t)
        lr, gr = kn.loss_and_grad_ref(W, arch, x, t)
        np.testing.assert_allclose(loss, lr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g, gr, rtol=1e-10, atol=1e-12)


def test_multi_input_output_matches_twin(rng):
    arch = Arch(2, 4, n_in=3, n_out=2)
    W = random_stack(arch, 5, rng)
    x = rng.standard_normal((31, 3))
    t = rng.standard_normal((31, 2))
    np.testing.assert_allclose(kn.forward(W, arch, x), kn.forward_ref(W, arch, x), rtol=1e-12)
    loss, g = kn.loss_and_grad(W, arch, x, t)
    lr, gr = kn.loss_and_grad_ref(W, arch, x, t)
    np.testing.assert_allclose(loss, lr, rtol=1e-12)
    np.testing.assert_allclose(g, gr, rtol=1e-10, atol=1e-12)


def test_float32_matches_float64_twin(rng):
    arch = Arch(5, 5)
    W = random_stack(arch, 4, rng)
    x = rng.uniform(-1, 1, 100)
    t = np.sin(3 * x)
    l32, g32 = kn.loss_and_grad(W.astype(np.float32), arch, x, t)
    assert l32.dtype == np.float32 and g32.dtype == np.float32
    l64, g64 = kn.loss_and_grad_ref(W, arch, x, t)
    np.testing.assert_allclose(l32, l64, rtol=1e-4)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4 * np.abs(g64).max())


@pytest.mark.parametrize("K,N", [(1, 1), (2, 3), (3, 2)])
def test_full_finite_difference_gradient_per_block(K, N, rng):
    arch = Arch(K, N)
    W = random_stack(arch, 2, rng)
    x, t = data_off_kinks(W, arch, 40, rng)
    _, g = kn.loss_and_grad(W, arch, x, t)
    for m in range(2):
        fd = fd_gradient(W[m], arch, x, t, eps=1e-6)   # error ~eps^2 + 1e-16/eps ~ 1e-10
        errs = block_errors(g[m], fd, arch)
        assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("K,N", [(5, 5), (10, 10)])
def test_random_direction_finite_differences(K, N, rng):
    arch = Arch(K, N)
    W = random_stack(arch, 1, rng)
    x, t = data_off_kinks(W, arch, 60, rng, margin=1e-3)
    a, fd = directional_check(W[0], arch, x, t, n_dirs=10, eps=1e-7, rng=1)
    np.testing.assert_allclose(a, fd, rtol=1e-5, atol=1e-8 * np.abs(a).max())


def test_stack_is_bit_identical_to_single_calls(rng):
    from relunet.data import wf_training_set
    arch = Arch(5, 5)
    W = init_stack(arch, np.arange(1000))
    x, t = wf_training_set()
    loss, g = kn.loss_and_grad(W, arch, x, t)       # one kernel call for 1,000 networks
    for m in range(0, 1000, 37):
        l1, g1 = kn.loss_and_grad(W[m], arch, x, t)
        assert l1[0] == loss[m]
        assert np.array_equal(g1[0], g[m])


def test_thread_count_does_not_change_bits(rng):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    arch = Arch(5, 5)
    W = random_stack(arch, 64, rng)
    x = rng.uniform(-1, 1, 341)
    t = np.cos(5 * x)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        l1, g1 = kn.loss_and_grad(W, arch, x, t)
        y1 = kn.forward(W, arch, x)
        numba.set_num_threads(2)
        l2, g2 = kn.loss_and_grad(W, arch, x, t)
        y2 = kn.forward(W, arch, x)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(l1, l2) and np.array_equal(g1, g2) and np.array_equal(y1, y2)


def test_bad_input_names_the_argument():
    arch = Arch(2, 2)
    W = init_stack(arch, [0])
    x = np.linspace(-1, 1, 5)
    with pytest.raises(ValueError, match="W must have shape"):
        kn.loss(np.zeros((1, 3)), arch, x, x)
    with pytest.raises(ValueError, match="W must be float32 or float64"):
        kn.loss(W.astype(np.int64), arch, x, x)
    with pytest.raises(ValueError, match="x must be a real numeric"):
        kn.forward(W, arch, x.astype(complex))
    with pytest.raises(ValueError, match="x must have shape"):
        kn.forward(W, arch, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="x is empty"):
        kn.loss(W, arch, np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="x contains non-finite"):
        kn.loss(W, arch, np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="t contains non-finite"):
        kn.loss(W, arch, np.zeros(2), np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="same number of points"):
        kn.loss(W, arch, np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="arch must be"):
        kn.loss(W, (2, 2), x, x)


# -- the two loss-and-gradient kernels: plain numba loops and the fast vector kernel ----------
from relunet import fast  # noqa: E402
from relunet.optim import Momentum  # noqa: E402
from relunet.train import train_stack  # noqa: E402

WIDTHS = fast.BITS if fast.native_bits() == 512 else (256,)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("arch,S", [(Arch(5, 5), 341), (Arch(2, 3, n_in=2, n_out=2), 800)])
def test_fast_and_plain_kernels_match_the_numpy_twin(bits, arch, S, rng, monkeypatch):
    """Both kernels against loss_and_grad_ref, at every vector width this CPU
    runs, with one chunk of points and several (S = 800 > 352 per chunk).
    (Sizes the training tests also compile: each new size is a new kernel.)"""
    monkeypatch.setenv(fast.simd.ENV, str(bits))
    W = random_stack(arch, 7, rng)
    x = rng.uniform(-1.2, 1.2, (S, arch.n_in))
    t = rng.standard_normal((S, arch.n_out))
    lr, gr = kn.loss_and_grad_ref(W, arch, x, t)
    for kernel in ("fast", "plain"):
        loss, g = kn.loss_and_grad(W, arch, x, t, kernel=kernel)
        np.testing.assert_allclose(loss, lr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g, gr, rtol=1e-10, atol=1e-12 * np.abs(gr).max())
        assert np.array_equal(kn.loss(W, arch, x, t, kernel=kernel), loss)   # bit for bit
    l32, g32 = kn.loss_and_grad(W.astype(np.float32), arch, x, t, kernel="fast")
    assert g32.dtype == np.float32
    np.testing.assert_allclose(l32, lr, rtol=2e-4)
    np.testing.assert_allclose(g32, gr, rtol=1e-2, atol=1e-3 * np.abs(gr).max())


@pytest.mark.parametrize("bits", WIDTHS)
def test_fast_loss_is_the_training_kernels_loss_bit_for_bit(bits, rng):
    """The fast kernel is a training step without its update: the loss it
    returns is what train_stack records at step 0 of the same width."""
    arch = Arch(5, 5)
    W = random_stack(arch, 5, rng)
    x = rng.uniform(-1, 1, 341)
    t = np.sin(4 * x)
    import os
    old = os.environ.get(fast.simd.ENV)
    os.environ[fast.simd.ENV] = str(bits)
    try:
        loss, _ = kn.loss_and_grad(W, arch, x, t, kernel="fast")
    finally:
        if old is None:
            del os.environ[fast.simd.ENV]
        else:
            os.environ[fast.simd.ENV] = old
    r = train_stack(W, arch, x, t, Momentum(lr=1e-3, momentum=0.9), 1, record_every=1,
                    vector_bits=bits)
    assert np.array_equal(r.history[:, 0], loss)


def test_plain_kernel_serves_layers_wider_than_the_generator(rng):
    arch = Arch(1, fast.NMAX + 1)
    W = random_stack(arch, 2, rng)
    x = rng.uniform(-1, 1, 20)
    t = rng.standard_normal(20)
    loss, g = kn.loss_and_grad(W, arch, x, t)            # auto: the plain kernel
    lr, gr = kn.loss_and_grad_ref(W, arch, x, t)
    np.testing.assert_allclose(g, gr, rtol=1e-10, atol=1e-12 * np.abs(gr).max())
    with pytest.raises(ValueError, match="kernel='fast' supports N <="):
        kn.loss_and_grad(W, arch, x, t, kernel="fast")
    with pytest.raises(ValueError, match="kernel must be 'auto', 'fast' or 'plain'"):
        kn.loss(W, arch, x, t, kernel="vector")
