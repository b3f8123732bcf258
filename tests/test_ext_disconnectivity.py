"""The pieces of the disconnectivity experiment that choose minima and edges."""
import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.sparse.csgraph import minimum_spanning_tree as scipy_mst
from scipy.spatial.distance import cdist

from relunet.experiments import ext_disconnectivity as ed
from relunet.experiments import quench_minima as qm


def test_select_prefers_certified_minima_and_drops_saddles():
    types = np.array(["uncertified", "saddle", "minimum", "degenerate-kink", "kink-minimum",
                      "kink-saddle", "uncertified"])
    cert = np.array([False, True, True, True, True, True, False])
    np.testing.assert_array_equal(qm.preference(types, cert), [2, 3, 0, 1, 0, 3, 2])
    np.testing.assert_array_equal(qm.select(types, cert, 3), [2, 4, 3])
    np.testing.assert_array_equal(qm.select(types, cert, 10), [2, 4, 3, 0, 6])


def test_deduplicate_keeps_the_first_of_each_group():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [1e-6, 0.0], [1.0, 1e-7], [3.0, 0.0]])
    np.testing.assert_array_equal(ed.deduplicate(points, 1e-4), [True, True, False, False, True])


def test_minimum_spanning_tree_matches_scipy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    D = cdist(X, X)
    ours = ed.minimum_spanning_tree(D)
    assert len(ours) == 29 and len(set(ours)) == 29
    ref = scipy_mst(D).toarray()
    assert np.isclose(sum(D[i, j] for i, j in ours), ref.sum())


def test_choose_edges_is_connected_and_contains_nearest_neighbours():
    rng = np.random.default_rng(1)
    # two far-apart clusters: a 2-nearest-neighbour graph alone falls apart
    X = np.concatenate([rng.normal(size=(10, 3)), 100 + rng.normal(size=(10, 3))])
    D = cdist(X, X)
    knn = ed.choose_edges(D, 2, 0, spanning_tree=False)
    A = np.zeros((20, 20))
    A[knn[:, 0], knn[:, 1]] = 1
    assert connected_components(A, directed=False)[0] == 2
    E = ed.choose_edges(D, 2, 5, spanning_tree=True)
    assert (E[:, 0] < E[:, 1]).all() and len(np.unique(E, axis=0)) == len(E)
    A = np.zeros((20, 20))
    A[E[:, 0], E[:, 1]] = 1
    assert connected_components(A, directed=False)[0] == 1
    pairs = {tuple(p) for p in E}
    for i in range(20):
        d = D[i].copy()
        d[i] = np.inf
        for j in np.argsort(d)[:5 if i == 0 else 2]:
            assert (min(i, j), max(i, j)) in pairs


def test_bottleneck_edge_sets_the_minimax_barrier():
    from relunet import disconnectivity as dg
    rng = np.random.default_rng(2)
    n = 15
    E = rng.uniform(0, 1, n)
    E[0] = -1.0
    X = rng.normal(size=(n, 2))
    pairs = ed.choose_edges(cdist(X, X), 2, 3, spanning_tree=False)
    e = np.maximum(E[pairs[:, 0]], E[pairs[:, 1]]) + rng.uniform(0, 1, len(pairs))
    barriers = dg.barrier_matrix((E, np.column_stack([pairs, e])))
    bn = ed.bottleneck_edges(n, pairs, e)
    assert bn[0] == -1
    for j in range(1, n):
        if np.isfinite(barriers[0, j]):
            assert e[bn[j]] == barriers[0, j]
        else:
            assert bn[j] == -1
