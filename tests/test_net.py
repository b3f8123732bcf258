import numpy as np
import pytest

from relunet.net import Arch, block_offset, check_stack, init_stack


def test_parameter_counts_are_computed():
    assert Arch(5, 5).P == 136
    assert Arch(10, 10).P == 1021
    assert Arch(1, 1).P == 4                      # w1, b1, wout, bout
    assert Arch(2, 3, n_in=2, n_out=4).P == 3 * 2 + 3 + 3 * 3 + 3 + 4 * 3 + 4


def test_table_tiles_the_vector_without_gaps():
    a = Arch(4, 3)
    end = 0
    for name, shape, off in a.table:
        assert off == end, name
        end += int(np.prod(shape))
    assert end == a.P
    assert a.names()[:2] == ["W1", "b1"] and a.names()[-2:] == ["Wout", "bout"]


@pytest.mark.parametrize("arch", [Arch(1, 1), Arch(5, 5), Arch(3, 4, n_in=2, n_out=3),
                                  Arch(10, 10), Arch(2, 7, n_in=3)], ids=str)
def test_block_offset_of_the_numba_kernels_is_the_table(arch):
    """The one formula every numba kernel takes its offsets from, against the
    table, for every block (compiled and as plain Python)."""
    K, N, n_in = arch.K, arch.N, arch.n_in
    for layer in range(1, K + 2):
        wn, bn = arch.layer_blocks(layer)
        fan_out, fan_in = dict((n, s) for n, s, _ in arch.table)[wn]
        for f in (block_offset, block_offset.py_func):
            assert f(layer, N, n_in) == arch.offset(wn)
            assert f(layer, N, n_in) + fan_out * fan_in == arch.offset(bn)


def test_unpack_gives_views_and_pack_roundtrips(rng):
    a = Arch(3, 4)
    w = rng.standard_normal(a.P)
    v = a.unpack(w)
    assert v["W2"].shape == (4, 4) and v["Wout"].shape == (1, 4)
    v["b2"][1] = 123.0
    assert w[a.offset("b2") + 1] == 123.0          # writing a view writes w
    np.testing.assert_array_equal(a.pack(v), w)
    W = rng.standard_normal((7, a.P))
    assert a.unpack(W)["W3"].shape == (7, 4, 4)


def test_init_is_glorot_uniform_with_zero_bias_and_per_seed():
    a = Arch(5, 5)
    W = init_stack(a, [3, 4, 5])
    v = a.unpack(W)
    assert np.all(v["b1"] == 0) and np.all(v["bout"] == 0)
    assert np.all(np.abs(v["W2"]) <= np.sqrt(6 / 10))
    assert np.all(np.abs(v["W1"]) <= np.sqrt(6 / 6))
    # network m depends only on its own seed
    np.testing.assert_array_equal(init_stack(a, [5])[0], W[2])
    big = init_stack(a, np.arange(200))
    np.testing.assert_array_equal(big[4], W[1])
    # Glorot-uniform variance: L^2/3 with L = sqrt(6/10) for 5x5 -> 0.2
    assert abs(a.unpack(big)["W3"].var() - 0.2) < 0.03


@pytest.mark.parametrize("bad", [dict(K=0), dict(N=0), dict(K=-1), dict(N=2.5), dict(K=True)])
def test_bad_arch(bad):
    with pytest.raises(ValueError, match="K|N"):
        Arch(**bad)


def test_bad_stack_and_seeds():
    a = Arch(2, 2)
    with pytest.raises(ValueError, match="W must have shape"):
        check_stack(np.zeros((3, a.P + 1)), a)
    with pytest.raises(ValueError, match="float32 or float64"):
        check_stack(np.zeros((3, a.P), dtype=np.int64), a)
    with pytest.raises(ValueError, match="seeds"):
        init_stack(a, [])
    with pytest.raises(ValueError, match="seeds"):
        init_stack(a, [1.5])
    with pytest.raises(ValueError, match="dtype"):
        init_stack(a, [1], dtype=np.int32)


def test_perturbed_stack_has_the_drawn_norms():
    from relunet.net import perturbed_stack
    c = np.arange(10.0)
    W, r = perturbed_stack(c, [1, 2, 3, 4], (0.5, 2.0))
    np.testing.assert_allclose(np.linalg.norm(W - c, axis=1), r, rtol=1e-12)
    assert np.all((r >= 0.5) & (r <= 2.0))
    W1, r1 = perturbed_stack(c, [3], (0.5, 2.0))
    np.testing.assert_array_equal(W1[0], W[2])
    with pytest.raises(ValueError, match="radius_range"):
        perturbed_stack(c, [1], (2.0, 1.0))
