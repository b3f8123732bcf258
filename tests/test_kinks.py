"""relunet.kinks's compiled parts against NumPy twins written out here, and the kink
families of a hand-built network whose normals are known.

The quench (tests/test_quench.py) checks the same functions end to end against the
numba kernels, central differences and brute-force grids; these tests pin the pieces.
"""
import numpy as np
import pytest

from relunet import Arch, init_stack
from relunet.kinks import kink_families, masked_loss_and_grad, masked_sums, preactivations, vertices


def masked_sums_twin(W, arch, X, T, masks, n_points):
    """NumPy: the forward and backward pass with h_l = m_l * z_l, batched over networks."""
    M = W.shape[0]
    v = arch.unpack(W)
    hs = [np.broadcast_to(X, (M,) + X.shape)]
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        hs.append(masks[:, layer - 1] * (v[wn] @ hs[-1] + v[bn][:, :, None]))
    r = v["Wout"] @ hs[-1] + v["bout"][:, :, None] - T
    scale = n_points * arch.n_out
    G = np.zeros_like(W)
    g = arch.unpack(G)
    dy = 2.0 * r / scale
    g["Wout"][...] = dy @ np.swapaxes(hs[-1], 1, 2)
    g["bout"][...] = dy.sum(axis=2)
    dh = np.swapaxes(v["Wout"], 1, 2) @ dy
    C = np.empty(masks.shape)
    for layer in range(arch.K, 0, -1):
        C[:, layer - 1] = dh
        wn, bn = arch.layer_blocks(layer)
        dz = dh * masks[:, layer - 1]
        g[wn][...] = dz @ np.swapaxes(hs[layer - 1], 1, 2)
        g[bn][...] = dz.sum(axis=2)
        dh = np.swapaxes(v[wn], 1, 2) @ dz
    return np.sum(r * r, axis=(1, 2)) / scale, G, C


@pytest.mark.parametrize("arch", [Arch(5, 5), Arch(3, 4, n_in=2, n_out=3)])
def test_masked_sums_match_the_numpy_twin(arch):
    rng = np.random.default_rng(1)
    S = 9
    W = rng.normal(size=(4, arch.P))
    X, T = rng.normal(size=(arch.n_in, S)), rng.normal(size=(arch.n_out, S))
    masks = rng.uniform(0.0, 1.0, (4, arch.K, arch.N, S))      # blends: every piece its own
    L, G, C = masked_sums(W, arch, X, T, masks, 20, return_adjoint=True)
    Lr, Gr, Cr = masked_sums_twin(W, arch, X, T, masks, 20)
    np.testing.assert_allclose(L, Lr, rtol=1e-13)
    np.testing.assert_allclose(G, Gr, rtol=1e-12, atol=1e-14 * np.abs(Gr).max())
    np.testing.assert_allclose(C, Cr, rtol=1e-12, atol=1e-14 * np.abs(Cr).max())
    assert np.abs(G).max() > 1e-3                 # a real gradient, not a vacuous comparison


def test_vertices_are_the_differences_of_whole_pieces():
    """Every piece's value and gradient change, summed point by point over the switched
    kinks' points, equals the difference of the whole loss and gradient on the two
    pieces (masked_loss_and_grad over all points), coupled groups included."""
    arch = Arch(3, 4)
    W = init_stack(arch, [3])
    w = W[0]
    x = np.linspace(-1.0, 1.0, 25)
    t = np.sin(3.0 * x)
    z = preactivations(W, arch, x)[0]
    order = np.argsort(np.abs(z), axis=None)[:7]          # the seven nearest kinks
    ent = np.stack(np.unravel_index(order, z.shape), axis=1)
    # and one more at the first one's point in another layer: a coupled group
    l0, _, s0 = ent[0]
    other = [(layer, j, s0) for layer in range(arch.K) for j in range(arch.N)
             if layer != l0 and not any((ent == (layer, j, s0)).all(axis=1))]
    ent = np.vstack([ent, other[:1]])
    ent[:, 0] += 1                                        # layers 1..K
    base = (z > 0).astype(float)
    base[tuple((ent - [1, 0, 0]).T)] = 0.0
    L0, G0 = masked_loss_and_grad(w[None], arch, x, t, base[None])
    for coupled in (True, False):
        Lb, gb, V, off, gid, info = vertices(w, arch, x, t, ent, z > 0, coupled=coupled)
        np.testing.assert_allclose(Lb, L0[0], rtol=1e-14)
        np.testing.assert_allclose(gb, G0[0], rtol=1e-13, atol=1e-15)
        assert len(V) == len(info["on"]) == len(off) == len(gid)
        if coupled:
            assert max(len(g) for g in info["groups"]) > 1   # the coupled group is there
        for k, on in enumerate(info["on"]):
            m = base.copy()
            e = np.concatenate([info["families"][f] for f in on])
            m[ent[e, 0] - 1, ent[e, 1], ent[e, 2]] = 1.0
            Lk, Gk = masked_loss_and_grad(w[None], arch, x, t, m[None])
            np.testing.assert_allclose(off[k], Lk[0] - L0[0], atol=1e-15)
            np.testing.assert_allclose(V[k], Gk[0] - G0[0], atol=1e-13)
        assert np.abs(V).max() > 1e-3
    # a row of a Fortran-ordered stack (not contiguous) gives the same pieces
    w_f = np.asfortranarray(np.vstack([w, w]))[0]
    assert not w_f.flags["C_CONTIGUOUS"]
    assert np.array_equal(vertices(w_f, arch, x, t, ent, z > 0, coupled=False)[2], V)


def test_kink_families_of_units_that_see_only_their_bias():
    """Layer 1 dead at every point (zero weights, negative biases): a layer-2 unit's
    pre-activation is its bias b at every point, so its kinks at all points share one
    normal (the unit vector of b): one family per unit, and as many independent
    normals as units listed."""
    arch = Arch(3, 4)
    w = init_stack(arch, [0])[0].copy()
    v = arch.unpack(w)
    v["W1"][...] = 0.0
    v["b1"][...] = -1.0
    v["b2"][:2] = 0.0                                      # units 0 and 1 sit on their kinks
    v["b2"][2:] = 0.5                                      # units 2 and 3 on at every point
    x = np.linspace(-1.0, 1.0, 9)
    ent = np.array([[2, 0, 1], [2, 1, 2], [2, 0, 4], [3, 2, 5], [2, 1, 4], [2, 0, 7],
                    [2, 2, 3]])
    families, rank, Nz = kink_families(w, arch, x, ent)
    assert [f.tolist() for f in families] == [[0, 2, 5], [1, 4], [3], [6]]
    assert rank == 4
    b2 = arch.offset("b2")
    for e, (layer, j, _) in enumerate(ent):
        if layer == 2:
            np.testing.assert_array_equal(Nz[e], np.eye(arch.P)[b2 + j])
    assert np.abs(Nz[3]).sum() > 1.5                     # a layer-3 kink: weights too
