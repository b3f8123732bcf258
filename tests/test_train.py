"""train_stack against step-by-step NumPy training, and its invariances.

Compile cost (first run, numba cache empty): one generated module per
(N, n_in, n_out, dtype, vector width) -- 1x1, 2x3 (2 in, 2 out) in float64 and
float32, 5x5 -- about 2-4 s each, plus the generic fallback kernel. Later runs
load them from the cache.

The fused-kernel tests run at every vector width this CPU supports (``WIDTHS``:
256 bits everywhere, 512 where it has AVX-512), each against the NumPy
reference and for its own bit-for-bit invariances.
"""
import os

import numba
import numpy as np
import pytest
from numba import njit

from relunet import fast
from relunet.data import wf_training_set
from relunet.fast import pack_points
from relunet.fast.simd import (
    vhsum,
    vhsum_block,
    vhsum_block512,
    vload,
    vload512,
    vmask,
    vrelu,
    vsplat512,
    vstore,
)
from relunet.kernels import loss_and_grad_ref, loss_ref
from relunet.net import Arch, init_stack
from relunet.optim import Adadelta, Momentum, adadelta_step, momentum_step
from relunet.train import train_stack, train_stack_ref

OPTS = [Momentum(lr=1e-2, momentum=0.9), Adadelta()]
WIDTHS = fast.BITS if fast.native_bits() == 512 else (256,)   # what this CPU runs natively


@pytest.fixture(params=WIDTHS, ids=lambda b: f"{b}bit")
def bits(request):
    """Each vector width this CPU supports (the tests pass it explicitly)."""
    return request.param


def reference(W0, arch, x, t, opt, steps):
    """``train.train_stack_ref``, the package's NumPy training reference.
    Returns W, history (M, steps), final loss, state (n_state, M, P)."""
    r = train_stack_ref(W0, arch, x, t, opt, steps, record_every=1)
    assert not r.status.any()
    return r.W, r.history, r.loss, r.state


def toy_data(arch, S, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(S, arch.n_in))
    t = rng.normal(size=(S, arch.n_out))
    return x, t


def assert_same(r1, r2):
    for name in ("W", "loss", "history", "status", "steps_done"):
        np.testing.assert_array_equal(getattr(r1, name), getattr(r2, name), err_msg=name)


# =============================================================================
# The NumPy reference itself: two steps written out by hand
# =============================================================================
def test_reference_is_loss_and_grad_ref_then_the_optim_rules():
    arch = Arch(2, 3)
    x, t = toy_data(arch, 20, seed=4)
    W0 = init_stack(arch, [0, 1])
    for opt in OPTS:
        W, st = W0.copy(), np.zeros((opt.n_state,) + W0.shape)
        hist = []
        for _ in range(2):
            loss, G = loss_and_grad_ref(W, arch, x, t)
            hist.append(loss)
            if opt.name == "momentum":
                momentum_step(W, G, st[0], opt.lr, opt.momentum)
            else:
                adadelta_step(W, G, st[0], st[1], opt.lr, opt.rho, opt.eps)
        r = train_stack_ref(W0, arch, x, t, opt, 2)
        np.testing.assert_array_equal(r.W, W)
        np.testing.assert_array_equal(r.state, st)
        np.testing.assert_array_equal(r.history, np.array(hist).T)
        np.testing.assert_array_equal(r.loss, loss_ref(W, arch, x, t))


def test_reference_divergence_matches_the_fused_kernel(bits):
    """Both divergence cases of train_stack's contract: a non-finite loss at step
    0 (network 1) and an update that overflows (lr = 1e308)."""
    arch = Arch(5, 5)
    x, t = wf_training_set()
    W0 = init_stack(arch, [0, 1, 2])
    W0[1] *= 1e26
    for opt in (Momentum(lr=1e-2), Momentum(lr=1e308)):
        got = train_stack(W0, arch, x, t, opt, 6, record_every=2, vector_bits=bits)
        with np.errstate(over="ignore", invalid="ignore"):     # NumPy meets the overflow
            ref = train_stack_ref(W0, arch, x, t, opt, 6, record_every=2)
        for name in ("status", "steps_done"):
            np.testing.assert_array_equal(getattr(ref, name), getattr(got, name), err_msg=name)
        np.testing.assert_allclose(ref.W, got.W, rtol=1e-12)
        np.testing.assert_allclose(ref.history, got.history, rtol=1e-12)
    # network 1 stops at step 0 (loss inf); the others take one step, to weights
    # of order 1e308, and stop at step 1
    assert list(ref.status) == [1, 1, 1] and list(ref.steps_done) == [1, 0, 1]


# =============================================================================
# Building blocks of the fused kernel
# =============================================================================
@njit
def _apply_intrinsics(z, h, d, out):
    vstore(out, 0, vrelu(vload(z, 0)))
    vstore(out, 4, vmask(vload(d, 0), vload(h, 0)))
    return vhsum(vload(d, 0))


def test_vector_intrinsics():
    z = np.array([-1.0, 0.0, 2.5, np.nan])
    h = np.array([0.0, -0.0, 3.0, np.nan])
    d = np.array([1.5, 2.0, 4.0, 8.0])
    out = np.zeros(8)
    total = _apply_intrinsics(z, h, d, out)
    # relu keeps NaN (like numpy.maximum); the ReLU derivative is 0 at h = +-0 and NaN
    np.testing.assert_array_equal(out[:4], [0.0, 0.0, 2.5, np.nan])
    np.testing.assert_array_equal(out[4:], [0.0, 0.0, 4.0, 0.0])
    assert total == (1.5 + 2.0) + (4.0 + 8.0)


@njit
def _apply_intrinsics_512(z, d, out):
    vstore(out, 0, vrelu(vload512(z, 0)))
    vstore(out, 8, vsplat512(d[0]))
    return vhsum(vload512(d, 0))


def test_vector_intrinsics_512_bits():
    z = np.array([-1.0, 0.0, 2.5, np.nan, -3.0, 7.0, -0.5, 1.0])
    d = 2.0 ** np.arange(8)
    out = np.zeros(16)
    total = _apply_intrinsics_512(z, d, out)
    np.testing.assert_array_equal(out[:8], [0.0, 0.0, 2.5, np.nan, 0.0, 7.0, 0.0, 1.0])
    np.testing.assert_array_equal(out[8:], 1.0)
    assert total == ((1.0 + 2.0) + (4.0 + 8.0)) + ((16.0 + 32.0) + (64.0 + 128.0))


@njit
def _block_sums_256(d, out, L):
    for k in range(0, out.size, L):
        vstore(out, k, vhsum_block(d, k * L))


@njit
def _lane_sums_256(d, out, L):
    for k in range(out.size):
        out[k] = vhsum(vload(d, k * L))


@njit
def _block_sums_512(d, out, L):
    for k in range(0, out.size, L):
        vstore(out, k, vhsum_block512(d, k * L))


@njit
def _lane_sums_512(d, out, L):
    for k in range(out.size):
        out[k] = vhsum(vload512(d, k * L))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transposed_lane_sums_are_vhsum_bit_for_bit(dtype, rng):
    """vhsum_block (L vectors reduced together by shuffles) adds every vector's
    lanes in vhsum's pairwise order: the same bits, on values whose sums round."""
    for bits, block, lane in ((256, _block_sums_256, _lane_sums_256),
                              (512, _block_sums_512, _lane_sums_512)):
        L = fast.simd.lanes(dtype, bits)
        n = 3 * L                                   # three blocks of L vectors
        d = (rng.standard_normal(n * L) * 10.0 ** rng.integers(-8, 8, n * L)).astype(dtype)
        got, want = np.zeros(n, dtype), np.zeros(n, dtype)
        block(d, got, L)
        lane(d, want, L)
        v = d.reshape(n, L)                         # the pairwise tree in NumPy
        while v.shape[1] > 1:
            v = v[:, 0::2] + v[:, 1::2]
        assert np.array_equal(got, want) and np.array_equal(got, v[:, 0])


def test_vector_bits_choice(monkeypatch):
    from relunet.fast import simd
    monkeypatch.delenv(simd.ENV, raising=False)
    assert fast.vector_bits() == fast.native_bits() in (256, 512)
    assert fast.vector_bits(256) == 256 and fast.vector_bits("512") == 512
    monkeypatch.setenv(simd.ENV, "256")
    assert fast.vector_bits() == 256 and fast.vector_bits(512) == 512   # argument wins
    from relunet.run.files import versions
    assert versions()["vector_bits"] == 256                  # what a run store records
    monkeypatch.setenv(simd.ENV, "128")
    with pytest.raises(ValueError, match="RELUNET_VECTOR_BITS must be 256 or 512"):
        fast.vector_bits()
    with pytest.raises(ValueError, match="vector_bits must be 256 or 512"):
        fast.vector_bits(True)


def test_kernel_modules_are_keyed_by_width():
    a = fast.kernel_module(2, 1, 1, np.float64, 256)
    b = fast.kernel_module(2, 1, 1, np.float64, 512)
    assert a is not b and "_b256_" in a.__name__ and "_b512_" in b.__name__
    assert (a.L, b.L) == (4, 8) and fast.kernel_module(2, 1, 1, np.float32, 512).L == 16


def test_pack_points_layout():
    S, CM, block = 700, 352, 8
    X = np.arange(2 * S, dtype=np.float64).reshape(2, S)      # 2 input rows
    T = -np.arange(S, dtype=np.float64)[None, :]
    data, nchunks, clen = pack_points(X, T, CM, block)
    # 700 points > 352: 2 chunks of ceil(700 / 2) = 350 -> 352 points (a block multiple)
    assert (nchunks, clen) == (2, 352) and data.ctypes.data % 64 == 0
    rows = data.reshape(nchunks, 4, CM)[:, :, :clen]          # x0, x1, t, valid
    flat = rows.transpose(1, 0, 2).reshape(4, nchunks * clen)
    np.testing.assert_array_equal(flat[:2, :S], X)
    np.testing.assert_array_equal(flat[2, :S], T[0])
    np.testing.assert_array_equal(flat[:3, S:], np.repeat(flat[:3, S - 1:S], 4, axis=1))
    np.testing.assert_array_equal(flat[3], np.r_[np.ones(S), np.zeros(4)])


# =============================================================================
# The fused kernel equals plain step-by-step training
# =============================================================================
CASES = [  # (arch, S): 1x1; 2x3 with 2 inputs / 2 outputs and 800 points (3 chunks)
    (Arch(1, 1), 37),
    (Arch(2, 3, n_in=2, n_out=2), 800),
]


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.name)
@pytest.mark.parametrize("arch, S", CASES, ids=["1x1", "2x3-2in-2out"])
def test_fused_matches_reference_small(arch, S, opt, bits):
    x, t = toy_data(arch, S)
    W0 = init_stack(arch, [3, 4, 5])
    W0_copy = W0.copy()
    steps = 25
    r = train_stack(W0, arch, x, t, opt, steps, record_every=1, return_state=True,
                    vector_bits=bits)
    W, hist, final, state = reference(W0, arch, x, t, opt, steps)
    np.testing.assert_array_equal(W0, W0_copy)             # input not modified
    # reassociated sums differ from NumPy's in the last bits only
    np.testing.assert_allclose(r.W, W, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(r.history, hist, rtol=1e-12)
    np.testing.assert_allclose(r.loss, final, rtol=1e-11)
    np.testing.assert_allclose(r.state, state, rtol=1e-10, atol=1e-16)
    np.testing.assert_array_equal(r.status, 0)
    np.testing.assert_array_equal(r.steps_done, steps)
    assert np.abs(W - W0).max() > 1e-3                      # training really moved


@pytest.mark.slow
def test_fused_matches_reference_wide_layers(bits):
    """N >= 7 takes the generator's other code paths (outputs and deltas in
    groups of 5); compiling the N = 8 kernel takes about 10 s."""
    arch = Arch(3, 8)
    x, t = toy_data(arch, 90, seed=2)
    W0 = init_stack(arch, [5, 6])
    for opt in OPTS:
        r = train_stack(W0, arch, x, t, opt, 15, record_every=1, vector_bits=bits)
        W, hist, final, _ = reference(W0, arch, x, t, opt, 15)
        np.testing.assert_allclose(r.W, W, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(r.history, hist, rtol=1e-12)


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.name)
def test_fused_matches_reference_5x5_on_wf_set(opt, bits):
    arch = Arch(5, 5)
    x, t = wf_training_set()
    W0 = init_stack(arch, [0, 1])
    r = train_stack(W0, arch, x, t, opt, 30, record_every=1, vector_bits=bits)
    W, hist, final, _ = reference(W0, arch, x, t, opt, 30)
    np.testing.assert_allclose(r.W, W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.history, hist, rtol=1e-11)
    np.testing.assert_allclose(r.loss, final, rtol=1e-10)
    assert np.all(r.history[:, -1] < r.history[:, 0])       # it learns


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.name)
def test_float32_computes_in_float32(opt, bits):
    arch = Arch(2, 3, n_in=2, n_out=2)
    x, t = toy_data(arch, 100)
    W0 = init_stack(arch, [7, 8])
    r = train_stack(W0, arch, x, t, opt, 10, record_every=1, dtype=np.float32, vector_bits=bits)
    assert r.W.dtype == r.loss.dtype == r.history.dtype == np.float32
    W, hist, final, _ = reference(W0, arch, x, t, opt, 10)
    np.testing.assert_allclose(r.W, W, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(r.history, hist, rtol=2e-5)
    r64 = train_stack(W0, arch, x, t, opt, 10, record_every=1, vector_bits=bits)
    assert np.abs(r.W - r64.W).max() > 1e-9                 # not float64 in disguise


@pytest.mark.skipif(len(WIDTHS) < 2, reason="this CPU runs only 256-bit vectors natively")
def test_the_widths_sum_in_different_orders(wf):
    """Both widths equal the reference to rounding (tests above), but they are
    different code: 4 against 8 per-lane partial sums over the points, so the
    trained weights differ in their last bits (the reason the width is part of
    a kernel's key and of a run's metadata)."""
    arch, x, t = wf
    W0 = init_stack(arch, [0, 1])
    a, b = (train_stack(W0, arch, x, t, OPTS[1], 30, vector_bits=w) for w in (256, 512))
    assert not np.array_equal(a.W, b.W)
    np.testing.assert_allclose(a.W, b.W, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.name)
def test_generic_kernel_matches_reference(opt):
    arch = Arch(2, 3, n_in=2, n_out=2)
    x, t = toy_data(arch, 50, seed=1)
    W0 = init_stack(arch, [1, 2])
    r = train_stack(W0, arch, x, t, opt, 20, record_every=1, kernel="generic")
    W, hist, final, _ = reference(W0, arch, x, t, opt, 20)
    np.testing.assert_allclose(r.W, W, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(r.history, hist, rtol=1e-12)
    np.testing.assert_allclose(r.loss, final, rtol=1e-11)


# =============================================================================
# Bit-for-bit invariances
# =============================================================================
@pytest.fixture(scope="module")
def wf():
    return Arch(5, 5), *wf_training_set()


def test_threads_and_stacking_do_not_change_bits(wf, bits, monkeypatch):
    arch, x, t = wf
    W0 = init_stack(arch, np.arange(7))
    opt = Adadelta()
    monkeypatch.setenv("RELUNET_VECTOR_BITS", str(bits))    # the width of every call below
    ref = train_stack(W0, arch, x, t, opt, 40, record_every=7, threads=1)
    assert_same(ref, train_stack(W0, arch, x, t, opt, 40, record_every=7, threads=2,
                                 vector_bits=bits))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        assert_same(ref, train_stack(W0, arch, x, t, opt, 40, record_every=7))
    finally:
        numba.set_num_threads(before)
    alone = train_stack(W0[3], arch, x, t, opt, 40, record_every=7)
    for name in ("W", "loss", "history", "steps_done"):
        np.testing.assert_array_equal(getattr(alone, name)[0], getattr(ref, name)[3])
    parts = [train_stack(W0[a:b], arch, x, t, opt, 40, record_every=7) for a, b in ((0, 2), (2, 7))]
    np.testing.assert_array_equal(np.concatenate([p.W for p in parts]), ref.W)


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.name)
def test_two_segments_equal_one_run(wf, opt, bits, monkeypatch):
    arch, x, t = wf
    monkeypatch.setenv("RELUNET_VECTOR_BITS", str(bits))
    W0 = init_stack(arch, [10, 11, 12])
    full = train_stack(W0, arch, x, t, opt, 12, record_every=1, return_state=True)
    a = train_stack(W0, arch, x, t, opt, 7, record_every=1, return_state=True)
    b = train_stack(a.W, arch, x, t, opt, 5, record_every=1, state=a.state, return_state=True)
    np.testing.assert_array_equal(b.W, full.W)
    np.testing.assert_array_equal(b.state, full.state)
    np.testing.assert_array_equal(b.loss, full.loss)
    np.testing.assert_array_equal(a.history, full.history[:, :7])
    np.testing.assert_array_equal(b.history, full.history[:, 7:])
    # the final loss is the loss the next step records, to the bit
    np.testing.assert_array_equal(a.loss, full.history[:, 7])


def test_history_every_k_steps(wf, bits, monkeypatch):
    arch, x, t = wf
    monkeypatch.setenv("RELUNET_VECTOR_BITS", str(bits))
    W0 = init_stack(arch, [4, 5])
    every = train_stack(W0, arch, x, t, OPTS[0], 10, record_every=1)
    sparse = train_stack(W0, arch, x, t, OPTS[0], 10, record_every=3)
    assert sparse.history.shape == (2, 4)                   # steps 0, 3, 6, 9
    np.testing.assert_array_equal(sparse.history, every.history[:, [0, 3, 6, 9]])
    np.testing.assert_array_equal(sparse.W, every.W)


# =============================================================================
# Divergence
# =============================================================================
def test_overflowing_network_is_flagged_and_neighbours_untouched(wf):
    arch, x, t = wf
    W0 = init_stack(arch, np.arange(4))
    bad = W0.copy()
    bad[1] *= 1e26                  # output ~ 1e26^6: the loss overflows at step 0
    opt = Momentum(lr=1e-2)
    r = train_stack(bad, arch, x, t, opt, 15, record_every=2)
    clean = train_stack(W0[[0, 2, 3]], arch, x, t, opt, 15, record_every=2)
    np.testing.assert_array_equal(r.status, [0, 1, 0, 0])
    assert r.steps_done[1] == 0 and np.isinf(r.loss[1])
    np.testing.assert_array_equal(r.W[1], bad[1])           # last finite weights
    assert np.all(np.isnan(r.history[1]))
    for name in ("W", "loss", "history", "status", "steps_done"):
        np.testing.assert_array_equal(getattr(r, name)[[0, 2, 3]], getattr(clean, name))


def test_divergence_mid_run_keeps_last_finite_weights(wf):
    arch, x, t = wf
    W0 = init_stack(arch, [0, 1])
    W0[1] *= 1e10                   # loss 1.7e118 at step 0, NaN after one update
    opt = Momentum(lr=1e-2)
    r = train_stack(W0, arch, x, t, opt, 6, record_every=1)
    np.testing.assert_array_equal(r.status, [0, 1])
    assert r.steps_done[1] == 1
    assert np.isfinite(r.history[1, 0]) and np.all(np.isnan(r.history[1, 1:]))
    one = train_stack(W0[1], arch, x, t, opt, 1)            # the weights it stopped at
    np.testing.assert_array_equal(r.W[1], one.W[0])
    assert one.status[0] == 0 and np.isfinite(r.W[1]).all()


def test_non_finite_update_restores_the_step_weights(wf):
    arch, x, t = wf
    W0 = 3 * init_stack(arch, [2])          # max |g| about 1e3
    r = train_stack(W0, arch, x, t, Momentum(lr=1e308), 3, record_every=1)
    # step 0: finite loss, but lr * g overflows: the update is undone
    assert r.status[0] == 1 and r.steps_done[0] == 0
    np.testing.assert_array_equal(r.W, W0)
    np.testing.assert_allclose(r.history[0, 0], loss_ref(W0, arch, x, t)[0], rtol=1e-12)
    assert r.loss[0] == r.history[0, 0] and np.all(np.isnan(r.history[0, 1:]))


# =============================================================================
# Bad input
# =============================================================================
@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"), (dict(steps=2.5), "steps"), (dict(steps=True), "steps"),
    (dict(record_every=0), "record_every"), (dict(threads=0), "threads"),
    (dict(W0=np.zeros((2, 7))), "W0"), (dict(W0=np.zeros((0, 16))), "W0"),
    (dict(W0=np.full((1, 16), np.nan)), "W0"), (dict(W0=np.zeros((1, 16), int)), "W0"),
    (dict(dtype=np.int32), "dtype"), (dict(x=np.zeros(5)), "same number of points"),
    (dict(t=np.zeros((10, 2))), "t must have shape"), (dict(opt="adadelta"), "opt"),
    (dict(arch=(1, 3)), "arch"), (dict(kernel="gpu"), "kernel"),
    (dict(state=np.zeros((2, 1, 16))), "state"),
    (dict(state=np.full((1, 1, 16), np.inf)), "state"),
    (dict(vector_bits=128), "vector_bits must be 256 or 512"),
])
def test_bad_input_raises_value_error(kwargs, match):
    arch = Arch(1, 3)                                       # P = 16
    args = dict(W0=init_stack(arch, [0]), arch=arch, x=np.linspace(-1, 1, 10),
                t=np.zeros(10), opt=Momentum(), steps=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_stack(**args)


# -- where the generated kernel sources go ------------------------------------------
def test_generated_sources_go_under_numba_cache_dir(tmp_path, monkeypatch):
    import numba

    from relunet.fast import build
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "nc"))
    monkeypatch.setattr(build, "_MODULES", {})             # force a fresh write
    mod = build.kernel_module(3, 1, 1, np.float64)
    assert os.path.dirname(mod.__file__) == str(tmp_path / "nc" / "relunet-generated")
    assert os.path.basename(mod.__file__).startswith(
        f"relunet_fused_n3_i1_o1_float64_b{fast.vector_bits()}_")


def test_stale_generated_modules_and_their_cache_files_are_pruned(tmp_path, monkeypatch):
    import numba

    from relunet.fast import build
    gen, nc = tmp_path / "gen", tmp_path / "nc"
    (gen / "__pycache__").mkdir(parents=True)
    (nc / "gen_abc").mkdir(parents=True)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(nc))
    pre = "relunet_fused_n5_i1_o1_float64_"
    for digest in ("old000000000", "new000000000", "young0000000"):
        (gen / f"{pre}{digest}.py").write_text("# generated")
        (gen / "__pycache__" / f"{pre}{digest}.train_range-11.py311.nbi").write_bytes(b"i")
        (nc / "gen_abc" / f"{pre}{digest}.train_range-11.py311.1.nbc").write_bytes(b"c")
    other = gen / "relunet_fused_n10_i1_o1_float64_old000000000.py"   # other sizes: kept
    other.write_text("# generated")
    now = 1e9
    for p in [other, gen / f"{pre}old000000000.py", gen / f"{pre}new000000000.py"]:
        os.utime(p, (now - 2 * build.PRUNE_AGE, now - 2 * build.PRUNE_AGE))
    os.utime(gen / f"{pre}young0000000.py", (now - 10, now - 10))
    gone = build._prune(str(gen), pre, pre + "new000000000", now=now)
    assert sorted(os.path.basename(g) for g in gone) == [
        f"{pre}old000000000.py", f"{pre}old000000000.train_range-11.py311.1.nbc",
        f"{pre}old000000000.train_range-11.py311.nbi"]
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert f"{pre}new000000000.py" in left and f"{pre}young0000000.py" in left
    assert other.name in left and not any("old000000000.train" in n for n in left)


# -- the committed exhibit of a generated kernel -------------------------------------
def test_committed_exhibit_is_the_generated_5x5_float64_kernel():
    """relunet/fast/exhibit_5x5_float64.py is what train_stack compiles for every
    K x 5 network in float64 at 256 bits (4 lanes, the AVX2 width; whatever the
    width of this CPU); regenerate it with
    ``python -m relunet.fast 5 > relunet/fast/exhibit_5x5_float64.py``."""
    import relunet.fast
    from relunet.fast import generate
    path = os.path.join(os.path.dirname(relunet.fast.__file__), "exhibit_5x5_float64.py")
    with open(path, encoding="utf-8", newline="") as f:
        committed = f.read()
    assert committed == generate(5, 1, 1, np.float64, 256), \
        "exhibit is stale: python -m relunet.fast 5 > relunet/fast/exhibit_5x5_float64.py"


def test_print_command_writes_the_kernel(capsys):
    from relunet.fast import generate
    from relunet.fast.__main__ import main
    main(["3", "--n-out", "2", "--dtype", "float32"])
    assert capsys.readouterr().out == generate(3, 1, 2, np.float32)
    main(["3", "--bits", "512"])
    text = capsys.readouterr().out
    assert text == generate(3, 1, 1, np.float64, 512) != generate(3, 1, 1, np.float64, 256)
    assert "L, CM = 3, 1, 1, 8, 352" in text and "vload512 as vload" in text
    with pytest.raises(SystemExit):
        main(["17"])
    assert "N must be an integer in 1..16, got 17" in capsys.readouterr().err
