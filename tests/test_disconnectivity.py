"""Tests for relunet.disconnectivity: a hand-worked example, minimax barriers against a
brute-force search over all simple paths, superbasins against breadth-first search,
disconnected graphs, invariance to edge order and relabelling, plotting, bad inputs."""
import itertools

import numpy as np
import pytest

from relunet import disconnectivity as dg
from relunet.plots import disconnectivity_graph

# ----------------------------------------------------------------------------
# The hand-worked example (five minima)
#
#   minimum   0    1    2    3    4
#   energy   0.0  1.0  0.5  2.0  1.5
#   edges: 0-2 at 1.2, 1-2 at 1.4, 0-1 at 3.0, 3-4 at 2.5, 1-4 at 2.8, 2-3 at 3.5
#
# Minimax barriers: 0-2: 1.2 (direct).  0-1: 1.4 (0-2-1 beats the direct 3.0).
# 1-2: 1.4.  3-4: 2.5.  {0,1,2} to {3,4}: 2.8 (via 1-4 and 4-3; 2-3 is 3.5).
#
# Levels 0.25, 1.25, 1.75, 2.25, 2.75, 3.25 (present: E < L; active edges: E_ts < L):
#   L0 = 0.25  present {0}                 superbasins {0}
#   L1 = 1.25  present {0,1,2}, 0-2        {0,2} {1}
#   L2 = 1.75  + minimum 4, + 1-2          {0,1,2} {4}
#   L3 = 2.25  + minimum 3                 {0,1,2} {3} {4}
#   L4 = 2.75  + 3-4                       {0,1,2} {3,4}   (label 4: E_4 < E_3)
#   L5 = 3.25  + 1-4, 0-1                  {0,1,2,3,4}
# Merge nodes: 5 = (0, 2) at level 1; 6 = (5, 1) at level 2; 7 = (4, 3) at level 4;
# 8 = (6, 7) at level 5 (the root). Children lowest-first, so the leaf order is
# 0, 2, 1, 4, 3: x = 0..4 in that order; x5 = 0.5, x6 = (0.5 + 2)/2 = 1.25,
# x7 = 3.5, x8 = (1.25 + 3.5)/2 = 2.375.
# ----------------------------------------------------------------------------
E5 = [0.0, 1.0, 0.5, 2.0, 1.5]
EDGES5 = [(0, 2, 1.2), (1, 2, 1.4), (0, 1, 3.0), (3, 4, 2.5), (1, 4, 2.8), (2, 3, 3.5)]
LEVELS5 = [0.25, 1.25, 1.75, 2.25, 2.75, 3.25]


@pytest.fixture
def tree5():
    return dg.build(E5, EDGES5, levels=LEVELS5)


def test_hand_example_superbasin_labels(tree5):
    assert tree5.basin.tolist() == [
        [0, -1, -1, -1, -1],
        [0, 1, 0, -1, -1],
        [0, 0, 0, -1, 4],
        [0, 0, 0, 3, 4],
        [0, 0, 0, 4, 4],
        [0, 0, 0, 0, 0],
    ]
    assert [s.tolist() for s in tree5.superbasins(4)] == [[0, 1, 2], [3, 4]]


def test_hand_example_merge_tree(tree5):
    assert tree5.n_nodes == 4
    assert tree5.children == ((0, 2), (5, 1), (4, 3), (6, 7))
    assert tree5.node_level.tolist() == [1, 2, 4, 5]
    np.testing.assert_array_equal(tree5.node_energy, [1.25, 1.75, 2.75, 3.25])
    assert tree5.parent.tolist() == [5, 6, 5, 7, 7, 6, 8, 8, -1]
    assert tree5.roots == (8,)
    assert tree5.order.tolist() == [0, 2, 1, 4, 3]
    np.testing.assert_allclose(tree5.x, [0, 2, 1, 4, 3, 0.5, 1.25, 3.5, 2.375])
    assert tree5.members(7).tolist() == [4, 3]


def test_hand_example_barriers(tree5):
    expect = {(0, 2): 1.2, (0, 1): 1.4, (1, 2): 1.4, (3, 4): 2.5}
    for i, j in itertools.combinations(range(5), 2):
        want = expect.get((i, j), 2.8)
        assert dg.barrier_between((E5, EDGES5), i, j) == want
        assert dg.barrier_between(tree5, j, i) == want
    assert dg.barrier_between(tree5, 3, 3) == 2.0
    B = dg.barrier_matrix(tree5)
    assert B[0, 1] == 1.4 and B[3, 0] == 2.8 and B[4, 3] == 2.5
    np.testing.assert_array_equal(np.diag(B), E5)
    np.testing.assert_array_equal(B, B.T)


def test_default_levels_span_minima_and_edges():
    tree = dg.build(E5, EDGES5, n_levels=8)
    step = (3.5 - 0.0) / 7
    np.testing.assert_allclose(tree.levels, step * (np.arange(8) + 0.5))
    assert np.all(tree.basin[-1] == 0)       # all edges active at the top: one tree
    assert tree.roots == (5 + tree.n_nodes - 1,)
    single = dg.build([2.0], [], n_levels=3)  # no spread: unit spacing
    np.testing.assert_allclose(single.levels, [2.5, 3.5, 4.5])
    assert single.roots == (0,) and single.n_nodes == 0


# ----------------------------------------------------------------------------
# random graphs: brute force references
# ----------------------------------------------------------------------------
def random_graph(rng, n, m, n_parts=1):
    """Random minima and edges; with n_parts > 1, no edge crosses between the parts
    i % n_parts. Every E_ts is at least both endpoints' energies."""
    E = rng.uniform(0, 1, n)
    edges = []
    while len(edges) < m:
        i, j = rng.integers(0, n, 2)
        if i != j and i % n_parts == j % n_parts:
            edges.append((i, j, max(E[i], E[j]) + rng.exponential(0.3)))
    return E, edges


def brute_force_barrier(n, edges, i, j):
    """min over all simple paths i -> j of the highest edge energy on the path."""
    if i == j:
        raise ValueError("not for i == j")
    best = np.inf
    adjacency = {a: [] for a in range(n)}
    for a, b, e in edges:
        adjacency[a].append((b, e))
        adjacency[b].append((a, e))

    def walk(here, seen, highest):
        nonlocal best
        if here == j:
            best = min(best, highest)
            return
        for there, e in adjacency[here]:
            if there not in seen:
                walk(there, seen | {there}, max(highest, e))

    walk(i, {i}, -np.inf)
    return best


def bfs_components(E, edges, level):
    """Sets of present minima joined by edges below level, by breadth-first search."""
    present = [i for i in range(len(E)) if E[i] < level]
    adjacency = {i: set() for i in present}
    for a, b, e in edges:
        if e < level:
            adjacency[a].add(b)
            adjacency[b].add(a)
    seen, parts = set(), []
    for s in present:
        if s in seen:
            continue
        part, queue = {s}, [s]
        while queue:
            for t in adjacency[queue.pop()]:
                if t not in part:
                    part.add(t)
                    queue.append(t)
        seen |= part
        parts.append(frozenset(part))
    return set(parts)


@pytest.mark.parametrize("seed", range(4))
def test_minimax_barrier_matches_brute_force_over_simple_paths(seed):
    rng = np.random.default_rng(seed)
    E, edges = random_graph(rng, n=7, m=11)
    B = dg.barrier_matrix((E, edges))
    for i, j in itertools.combinations(range(7), 2):
        want = brute_force_barrier(7, edges, i, j)
        assert dg.barrier_between((E, edges), i, j) == want
        assert B[i, j] == want


@pytest.mark.parametrize("seed", range(3))
def test_superbasins_are_components_and_tree_agrees_with_barriers(seed):
    rng = np.random.default_rng(100 + seed)
    E, edges = random_graph(rng, n=12, m=16)
    tree = dg.build(E, edges, n_levels=15)
    for k, level in enumerate(tree.levels):
        got = {frozenset(s.tolist()) for s in tree.superbasins(k)}
        assert got == bfs_components(E, edges, level)
        for part in got:  # the label is the lowest-energy member
            assert all(tree.basin[k, i] == min(part, key=lambda a: E[a]) for i in part)
    # the ladder brackets the exact barrier: i, j first share a superbasin at the
    # lowest level above it, which is the level of their lowest common node
    B = dg.barrier_matrix(tree)
    L = tree.levels
    for i, j in itertools.combinations(range(12), 2):
        shared = np.flatnonzero((tree.basin[:, i] == tree.basin[:, j]) & (tree.basin[:, i] >= 0))
        if not np.isfinite(B[i, j]) or B[i, j] >= L[-1]:
            assert shared.size == 0
            continue
        k = shared[0]
        assert L[k] > B[i, j] and (k == 0 or L[k - 1] <= B[i, j])
        assert np.all(np.diff(shared) == 1) and shared[-1] == L.size - 1  # never split
        ancestors_i = set(_ancestors(tree, i))
        common = next(t for t in _ancestors(tree, j) if t in ancestors_i)
        assert tree.node_level[common - tree.n_minima] == k


def _ancestors(tree, t):
    out = []
    while tree.parent[t] >= 0:
        t = tree.parent[t]
        out.append(t)
    return out


def test_leaf_order_keeps_every_superbasin_contiguous():
    rng = np.random.default_rng(7)
    E, edges = random_graph(rng, n=30, m=40, n_parts=3)
    tree = dg.build(E, edges, n_levels=25)
    position = np.empty(30, dtype=int)
    position[tree.order] = np.arange(30)
    assert np.all(np.diff(tree.x[tree.order]) > 0)
    for k in range(tree.levels.size):
        for part in tree.superbasins(k):
            p = np.sort(position[part])
            assert p[-1] - p[0] == p.size - 1, (k, part)
    for q, kids in enumerate(tree.children):  # lowest-energy branch on the left
        lows = [E[tree.members(t)].min() for t in kids]
        assert lows == sorted(lows)
        assert tree.x[tree.n_minima + q] == pytest.approx(np.mean(tree.x[list(kids)]))
    assert tree.order[0] == np.argmin(E)


# ----------------------------------------------------------------------------
# disconnected graphs
# ----------------------------------------------------------------------------
def test_disconnected_components_stay_separate_trees():
    # the hand example plus minimum 5 (alone) and minima 6, 7 joined only to each other
    E = E5 + [0.8, 0.3, 0.9]
    edges = EDGES5 + [(6, 7, 1.0)]
    tree = dg.build(E, edges, levels=LEVELS5)
    top = {frozenset(s.tolist()) for s in tree.superbasins(len(LEVELS5) - 1)}
    assert top == {frozenset(range(5)), frozenset({5}), frozenset({6, 7})}
    assert len(tree.roots) == 3
    # roots by lowest energy: the big tree (0.0), then {6, 7} (0.3), then {5} (0.8)
    assert tree.roots[2] == 5 and tree.children[tree.roots[1] - 8] == (6, 7)
    assert tree.order.tolist() == [0, 2, 1, 4, 3, 6, 7, 5]
    # a gap of one extra unit between separate trees
    np.testing.assert_allclose(tree.x[tree.order], [0, 1, 2, 3, 4, 6, 7, 9])
    assert dg.barrier_between(tree, 0, 5) == np.inf
    assert dg.barrier_between(tree, 6, 3) == np.inf
    assert dg.barrier_between(tree, 7, 6) == 1.0
    B = dg.barrier_matrix(tree)
    assert np.isinf(B[5, :5]).all() and np.isinf(B[:5, 6:]).all() and B[6, 7] == 1.0


def test_levels_are_strict_upper_bounds():
    # present means E < L and active means E_ts < L: a minimum or an edge exactly at a
    # level belongs to the next one; an edge at the top level joins nothing
    tree = dg.build([0.0, 0.5], [(0, 1, 1.0)], levels=[0.5, 1.0])
    assert tree.basin.tolist() == [[0, -1], [0, 1]]
    assert tree.roots == (0, 1) and tree.n_nodes == 0
    assert dg.barrier_between(tree, 0, 1) == 1.0  # the exact barrier still knows it
    joined = dg.build([0.0, 0.5], [(0, 1, 1.0)], levels=[0.5, 1.0, 1.5])
    assert joined.basin[-1].tolist() == [0, 0] and joined.node_level.tolist() == [2]


# ----------------------------------------------------------------------------
# invariance
# ----------------------------------------------------------------------------
def _same_tree(a, b):
    np.testing.assert_array_equal(a.basin, b.basin)
    np.testing.assert_array_equal(a.parent, b.parent)
    np.testing.assert_array_equal(a.node_level, b.node_level)
    assert a.children == b.children and a.roots == b.roots
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.x, b.x)


@pytest.mark.parametrize("seed", range(3))
def test_invariant_to_edge_order_and_direction(seed):
    rng = np.random.default_rng(200 + seed)
    E, edges = random_graph(rng, n=15, m=22, n_parts=2)
    tree = dg.build(E, edges, n_levels=12)
    shuffled = [edges[k] if rng.random() < 0.5 else (edges[k][1], edges[k][0], edges[k][2])
                for k in rng.permutation(len(edges))]
    _same_tree(tree, dg.build(E, shuffled, levels=tree.levels))
    np.testing.assert_array_equal(dg.barrier_matrix(tree), dg.barrier_matrix((E, shuffled)))


@pytest.mark.parametrize("seed", range(3))
def test_invariant_to_relabelling_minima(seed):
    rng = np.random.default_rng(300 + seed)
    n = 15
    E, edges = random_graph(rng, n=n, m=22, n_parts=2)
    tree = dg.build(E, edges, n_levels=12)
    new = rng.permutation(n)  # old minimum i is called new[i]
    E2 = np.empty(n)
    E2[new] = E
    edges2 = [(new[a], new[b], e) for a, b, e in edges]
    tree2 = dg.build(E2, edges2, levels=tree.levels)
    present = tree.basin >= 0
    np.testing.assert_array_equal(tree2.basin[:, new][present], new[tree.basin[present]])
    assert np.all(tree2.basin[:, new][~present] == -1)
    np.testing.assert_array_equal(tree2.order, new[tree.order])
    np.testing.assert_array_equal(tree2.x[new], tree.x[:n])
    np.testing.assert_array_equal(tree2.x[n:], tree.x[n:])
    np.testing.assert_array_equal(tree2.node_level, tree.node_level)
    rename = np.concatenate([new, np.arange(n, n + tree.n_nodes)])
    assert tree2.children == tuple(tuple(int(rename[t]) for t in kids)
                                   for kids in tree.children)
    np.testing.assert_array_equal(dg.barrier_matrix(tree2)[np.ix_(new, new)],
                                  dg.barrier_matrix(tree))


# ----------------------------------------------------------------------------
# plotting
# ----------------------------------------------------------------------------
def _lines_by_gid(ax, prefix):
    return {ln.get_gid(): ln for ln in ax.get_lines()
            if ln.get_gid() and ln.get_gid().startswith(prefix)}


def test_plot_one_line_per_minimum_from_energy_to_merge_node():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    E = E5 + [0.8, 0.3, 0.9]
    edges = EDGES5 + [(6, 7, 1.0)]
    tree = dg.build(E, edges, levels=LEVELS5)
    colors = ["C0", "C2", "C0"] + ["C1"] * 5
    ax = disconnectivity_graph(tree, colors=colors, labels=[f"m{i}" for i in range(8)], highlight=4)
    try:
        leaves = _lines_by_gid(ax, "minimum ")
        assert sorted(leaves) == [f"minimum {i}" for i in range(8)]
        for i, line in leaves.items():
            i = int(i.split()[1])
            xs, ys = line.get_data()
            assert (xs[0], ys[0]) == (tree.x[i], E[i])     # starts at its energy
            p = tree.parent[i]
            if p >= 0:                                     # ends at its merge node
                assert (xs[-1], ys[-1]) == (tree.x[p], tree.node_energy[p - 8])
            else:                                          # or at the top (lone 5)
                assert i == 5 and ys[-1] == LEVELS5[-1]
            assert to_rgba(line.get_color()) == to_rgba(colors[i])
        # minimum 0 merges at node 5 (level 1 = 1.25): vertical, then slanted
        np.testing.assert_allclose(leaves["minimum 0"].get_ydata(), [0.0, 0.25, 1.25])
        assert leaves["minimum 4"].get_linewidth() == 3 * leaves["minimum 3"].get_linewidth()
        assert len(_lines_by_gid(ax, "highlight 4")) == 1
        nodes = _lines_by_gid(ax, "node ")
        assert len(nodes) == tree.n_nodes
        # a node takes its minima's shared colour, black if they differ
        node_color = {tuple(tree.members(int(g.split()[1])).tolist()): to_rgba(ln.get_color())
                      for g, ln in nodes.items()}
        assert node_color == {(0, 2): to_rgba("C0"), (6, 7): to_rgba("C1"),
                              (4, 3): to_rgba("C1"), (0, 2, 1): to_rgba("k"),
                              (0, 2, 1, 4, 3): to_rgba("k")}
        assert [t.get_text().strip() for t in ax.texts] == [f"m{i}" for i in range(8)]
    finally:
        plt.close(ax.figure)


def test_plot_on_given_axes():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        assert disconnectivity_graph(dg.build(E5, EDGES5), ax=ax) is ax
        assert len(_lines_by_gid(ax, "minimum ")) == 5
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------
# bad inputs: one-line ValueErrors naming the argument
# ----------------------------------------------------------------------------
BAD_BUILDS = [
    (dict(energies=[[0.0, 1.0]], edges=[]), "energies"),
    (dict(energies=[], edges=[]), "energies"),
    (dict(energies=[0.0, np.nan], edges=[]), "energies"),
    (dict(energies=[0.0, 1.0], edges=[(0, 1)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[(0, 2, 3.0)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[(-1, 1, 3.0)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[(0, 0.5, 3.0)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[(1, 1, 3.0)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[(0, 1, 0.5)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[(0, 1, np.inf)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[(0, 1, 2.0), (0, 1)]), "edges"),
    (dict(energies=[0.0, 1.0], edges=[], levels=[0.5, 0.5, 2.0]), "levels"),
    (dict(energies=[0.0, 1.0], edges=[], levels=[0.5, 1.0]), "levels"),
    (dict(energies=[0.0, 1.0], edges=[], levels=[]), "levels"),
    (dict(energies=[0.0, 1.0], edges=[], n_levels=1), "n_levels"),
    (dict(energies=[0.0, 1.0], edges=[], n_levels=2.5), "n_levels"),
]


@pytest.mark.parametrize("kwargs, name", BAD_BUILDS)
def test_build_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError) as err:
        dg.build(**kwargs)
    message = str(err.value)
    assert message.startswith(name + ":") and "\n" not in message


def test_edge_below_its_minimum_names_the_edge():
    with pytest.raises(ValueError, match=r"^edges: edge 1 has E_ts = 0\.5 below"):
        dg.build([0.0, 1.0, 0.2], [(0, 2, 0.3), (1, 2, 0.5)])


@pytest.mark.parametrize("call, name", [
    (lambda t: dg.barrier_between(t, 0, 5), "j"),
    (lambda t: dg.barrier_between(t, 1.0, 2), "i"),
    (lambda t: dg.barrier_between(([0.0, 1.0], [(0, 1, 0.2)]), 0, 1), "edges"),
    (lambda t: dg.barrier_between([0.0, 1.0, 2.0], 0, 1), "graph"),
    (lambda t: dg.barrier_matrix(3.0), "graph"),
    (lambda t: t.members(9), "tree_id"),
    (lambda t: t.superbasins(6), "k"),
    (lambda t: disconnectivity_graph(t, colors=["k"] * 4), "colors"),
    (lambda t: disconnectivity_graph(t, labels=["a"] * 6), "labels"),
    (lambda t: disconnectivity_graph(t, highlight=5), "highlight"),
    (lambda t: disconnectivity_graph((E5, EDGES5)), "tree"),
])
def test_other_functions_reject_bad_input(tree5, call, name):
    with pytest.raises(ValueError) as err:
        call(tree5)
    message = str(err.value)
    assert message.startswith(name + ":") and "\n" not in message
