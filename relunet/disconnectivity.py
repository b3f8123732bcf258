"""Disconnectivity graphs: how the minima of an energy landscape are connected.

What a disconnectivity graph is
-------------------------------
A landscape with many minima cannot be drawn in its own (here 25-dimensional) space,
but the part of it that governs how a system moves between minima can: which minima
are separated from which by how high a barrier. Take the minima, with energies E_i,
and the edges between them: an edge (i, j, E_ij) says that a path from minimum i to
minimum j exists whose highest point has energy E_ij (a transition state, or the
highest image of a converged nudged-elastic-band path), so E_ij >= max(E_i, E_j).

Now flood the landscape. At an energy level L, call minimum i *present* when E_i < L,
and call two present minima part of one *superbasin* when they are joined by a chain
of edges whose energies are all below L: a walker with energy L can go from one to
the other. Superbasins at level L are the connected components of the graph of
present minima and edges with E_ij < L (found here by union-find). Raising L, minima
appear and superbasins merge, never split. A disconnectivity graph (Becker & Karplus,
J. Chem. Phys. 106, 1495 (1997); Wales, Miller & Walsh, Nature 394, 758 (1998);
Wales, "Energy Landscapes", Cambridge University Press 2003) draws this
for a ladder of levels L_0 < L_1 < ... < L_{K-1}:

* energy runs up the vertical axis; the horizontal axis carries no meaning except
  to keep branches apart;
* each minimum is a line that starts at its energy E_i and runs up to the level at
  which its superbasin first merges with another one (or with a newly appearing
  minimum);
* where superbasins merge, at level L_k, their lines meet at a *node*, and the
  node's line runs on up to the next merge; where everything has merged, one line
  (the root) remains.

Reading one: the energy of the lowest node above both i and j brackets the *minimax
barrier* between them, the lowest energy a path from i to j must climb to,
minimised over all paths (the lowest possible highest edge). Long lines from deep
minima that merge late mean a funnel separated by high barriers; many short lines
merging at once mean a rough, glassy region. The ladder's spacing sets the
resolution: merges that happen between two levels are drawn at the upper one, so
barrier heights read from the graph are accurate to one level spacing.
``barrier_between`` computes the minimax barrier exactly, without the ladder, from
a minimum spanning tree (Kruskal's algorithm: add edges in order of energy; i and j
become connected at the barrier between them).

Conventions used here
---------------------
* A superbasin's *label* is the index of its lowest-energy member (ties broken by
  the smaller index); a minimum that is not present at a level has label -1.
* Tree ids: minima are leaves 0..n-1; merge nodes are numbered n, n+1, ... in the
  order they are created (by level, then by the energy of their lowest member).
  A node drawn at level index k joins the superbasins (and newly present minima)
  that become one superbasin at L_k; a superbasin that is unchanged since the
  level below is not a new node.
* Leaf order (left to right): a depth-first walk of the tree in which the children
  of every node, and the separate trees, are sorted by the energy of their lowest
  minimum, lowest on the left. Every superbasin at every level is therefore a
  contiguous run of the leaf order, and the global minimum is the leftmost leaf.
  Leaves sit at x = 0, 1, 2, ... with a gap of one extra unit between separate
  trees; a node sits at the mean x of its children.
* Minima that are still not connected at the top level (because no chain of edges
  joins them) stay separate trees, side by side: the graph is a forest. Each tree's
  root line runs up to the top level. ``barrier_between`` returns ``np.inf`` for
  minima in different trees.

This module is the computation only: one subject, the flooding of a landscape,
longer than one sitting because over a third of it is this explanation and the
input checks that give every bad argument its one-line error. The drawing is
:func:`relunet.plots.disconnectivity_graph`.

Example
-------
>>> import numpy as np
>>> from relunet import disconnectivity as dg
>>> E = [0.0, 1.0, 0.5]
>>> edges = [(0, 2, 1.2), (1, 2, 1.4)]
>>> dg.barrier_between((E, edges), 0, 1)
1.4
>>> tree = dg.build(E, edges, levels=[0.25, 1.25, 1.75])
>>> tree.basin.tolist()
[[0, -1, -1], [0, 1, 0], [0, 0, 0]]
>>> tree.order.tolist()
[0, 2, 1]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DisconnectivityTree", "build", "barrier_between", "barrier_matrix"]


# ----------------------------------------------------------------------------
# input checking
# ----------------------------------------------------------------------------
def _check_energies(energies):
    try:
        E = np.array(energies, dtype=float)  # a copy: the tree must not change under us
    except (TypeError, ValueError):
        raise ValueError("energies: expected a 1-D array of numbers") from None
    if E.ndim != 1 or E.size == 0:
        raise ValueError(f"energies: expected a non-empty 1-D array, got shape {E.shape}")
    if not np.all(np.isfinite(E)):
        raise ValueError(f"energies: all must be finite, got {E[~np.isfinite(E)][0]}")
    return E


def _check_edges(edges, E):
    """Edges as an (m, 3) float array (i, j, E_ts) with checked integer ends."""
    try:
        A = np.asarray(edges, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("edges: expected an (m, 3) array or a list of (i, j, E_ts)") from None
    if A.size == 0:
        A = A.reshape(0, 3)
    if A.ndim != 2 or A.shape[1] != 3:
        raise ValueError(f"edges: expected shape (m, 3) of (i, j, E_ts), got {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError("edges: all entries must be finite")
    ends = A[:, :2]
    if np.any(ends != np.round(ends)):
        raise ValueError("edges: the minimum indices (columns 0 and 1) must be integers")
    ends = ends.astype(np.int64)
    n = E.size
    if np.any((ends < 0) | (ends >= n)):
        raise ValueError(f"edges: minimum indices must lie in 0..{n - 1}")
    if np.any(ends[:, 0] == ends[:, 1]):
        k = int(np.flatnonzero(ends[:, 0] == ends[:, 1])[0])
        raise ValueError(f"edges: edge {k} joins minimum {ends[k, 0]} to itself")
    low = A[:, 2] < np.maximum(E[ends[:, 0]], E[ends[:, 1]])
    if np.any(low):
        k = int(np.flatnonzero(low)[0])
        raise ValueError(f"edges: edge {k} has E_ts = {A[k, 2]:g} below the energy of one of "
                         f"its minima {ends[k, 0]}, {ends[k, 1]}")
    return ends, A[:, 2].copy()


def _graph(graph):
    """(energies, ends, edge_energies) from a tree or an (energies, edges) pair."""
    if isinstance(graph, DisconnectivityTree):
        return graph.energies, graph.edges[:, :2].astype(np.int64), graph.edges[:, 2]
    try:
        energies, edges = graph
    except (TypeError, ValueError):
        raise ValueError("graph: expected a DisconnectivityTree or a pair "
                         "(energies, edges)") from None
    E = _check_energies(energies)
    ends, e = _check_edges(edges, E)
    return E, ends, e


def check_index(name, i, n):
    """``i`` as the int index of one of ``n`` items, or a one-line error naming ``name``."""
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise ValueError(f"{name}: expected an integer index of a minimum, got {i!r}")
    if not 0 <= i < n:
        raise ValueError(f"{name}: index {i} out of range 0..{n - 1}")
    return int(i)


def _default_levels(E, e, n_levels):
    """An even ladder from just above the lowest minimum to just above everything."""
    if isinstance(n_levels, (bool, np.bool_)) or not isinstance(n_levels, (int, np.integer)) \
            or n_levels < 2:
        raise ValueError(f"n_levels: expected an integer >= 2, got {n_levels!r}")
    lo = E.min()
    hi = max(E.max(), e.max()) if e.size else E.max()
    step = (hi - lo) / (n_levels - 1) if hi > lo else 1.0
    return lo + step * (np.arange(n_levels) + 0.5)


def _check_levels(levels, E):
    try:
        L = np.array(levels, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("levels: expected a 1-D array of numbers") from None
    if L.ndim != 1 or L.size == 0:
        raise ValueError(f"levels: expected a non-empty 1-D array, got shape {L.shape}")
    if not np.all(np.isfinite(L)) or np.any(np.diff(L) <= 0):
        raise ValueError("levels: must be finite and strictly increasing")
    if L[-1] <= E.max():
        raise ValueError(f"levels: the top level {L[-1]:g} must lie above every minimum "
                         f"(highest energy {E.max():g})")
    return L


# ----------------------------------------------------------------------------
# union-find whose root is always the lowest-energy member
# ----------------------------------------------------------------------------
class _LowestFirstUnionFind:
    """Disjoint sets of minima; ``find(i)`` is the lowest-energy member of i's set.

    ``rank[i]`` is minimum i's position when sorted by (energy, index), so the
    representative does not depend on the order in which edges are added.
    """

    def __init__(self, rank):
        self.rank = rank
        self.up = np.arange(rank.size)

    def find(self, i):
        up = self.up
        while up[i] != i:
            up[i] = up[up[i]]  # path halving
            i = up[i]
        return i

    def union(self, i, j):
        a, b = self.find(i), self.find(j)
        if a == b:
            return False
        if self.rank[b] < self.rank[a]:
            a, b = b, a
        self.up[b] = a
        return True


def _energy_rank(E):
    rank = np.empty(E.size, dtype=np.int64)
    rank[np.lexsort((np.arange(E.size), E))] = np.arange(E.size)
    return rank


# ----------------------------------------------------------------------------
# the tree
# ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DisconnectivityTree:
    """Superbasins at each level, the merge tree and plotting positions.

    Ids: minima are 0..n-1, merge nodes n..n+p-1 (see the module docstring).

    Attributes
    ----------
    energies : ndarray, shape (n,)
        Energy of each minimum.
    edges : ndarray, shape (m, 3)
        The validated edges (i, j, E_ts), as given.
    levels : ndarray, shape (K,)
        The energy ladder, strictly increasing; the top level lies above every minimum.
    basin : ndarray of int, shape (K, n)
        ``basin[k, i]``: label of minimum i's superbasin at level k (the index of its
        lowest-energy member), or -1 if E_i >= levels[k] (not yet present).
    parent : ndarray of int, shape (n + p,)
        Parent node of each leaf and node; -1 for the root of each separate tree.
    node_level : ndarray of int, shape (p,)
        Level index at which node n + q is drawn (where its children merge).
    children : tuple of tuples
        ``children[q]``: ids of the leaves and nodes that merge at node n + q, in
        left-to-right order (lowest minimum first).
    roots : tuple of int
        Ids of the roots of the separate trees, left to right; one root if everything
        is connected at the top level.
    order : ndarray of int, shape (n,)
        Minima in left-to-right order; each superbasin is a contiguous run.
    x : ndarray, shape (n + p,)
        Horizontal position of every leaf and node.
    """

    energies: np.ndarray
    edges: np.ndarray
    levels: np.ndarray
    basin: np.ndarray
    parent: np.ndarray
    node_level: np.ndarray
    children: tuple
    roots: tuple
    order: np.ndarray
    x: np.ndarray

    @property
    def n_minima(self):
        """Number of minima n."""
        return self.energies.size

    @property
    def n_nodes(self):
        """Number of merge nodes p."""
        return self.node_level.size

    @property
    def node_energy(self):
        """Energy level of each merge node, shape (p,)."""
        return self.levels[self.node_level]

    def members(self, tree_id):
        """Minima below a leaf or node, in left-to-right order.

        Parameters
        ----------
        tree_id : int
            A minimum (0..n-1) or a node (n..n+p-1).

        Returns
        -------
        ndarray of int
        """
        n = self.n_minima
        tree_id = check_index("tree_id", tree_id, n + self.n_nodes)
        out, stack = [], [tree_id]
        while stack:
            t = stack.pop()
            if t < n:
                out.append(t)
            else:
                stack.extend(reversed(self.children[t - n]))
        return np.array(out, dtype=np.int64)

    def superbasins(self, k):
        """The superbasins at level index k, each an array of minima (sorted by index).

        Listed in order of their lowest minimum's energy; absent minima are left out.
        """
        k = check_index("k", k, self.levels.size)
        lab = self.basin[k]
        labels = sorted(set(lab[lab >= 0].tolist()),
                        key=lambda a: (self.energies[a], a))
        return [np.flatnonzero(lab == a) for a in labels]


def build(energies, edges, levels=None, n_levels=20):
    """Build the disconnectivity tree of minima joined by barrier edges.

    Parameters
    ----------
    energies : array_like, shape (n,)
        Energy of each minimum.
    edges : array_like, shape (m, 3), or list of (i, j, E_ts)
        Minima i and j are joined by a path whose highest energy is E_ts
        (E_ts >= E_i and E_ts >= E_j). Repeated pairs are allowed; the lowest counts.
    levels : array_like, shape (K,), optional
        Energy ladder, strictly increasing, top level above every minimum. Edges
        with E_ts at or above the top level never join anything.
    n_levels : int, default 20
        If ``levels`` is None: K = n_levels evenly spaced levels with spacing
        s = (hi - lo) / (K - 1), from lo + s/2 to hi + s/2, where lo is the lowest
        minimum and hi the highest minimum or edge energy (s = 1 if hi == lo).

    Returns
    -------
    DisconnectivityTree

    Raises
    ------
    ValueError
        On malformed input, with a one-line message naming the argument.
    """
    E = _check_energies(energies)
    ends, e = _check_edges(edges, E)
    L = _default_levels(E, e, n_levels) if levels is None else _check_levels(levels, E)
    n, K = E.size, L.size
    rank = _energy_rank(E)

    # 1. superbasin labels at each level: union-find, adding edges in order of energy
    basin = np.full((K, n), -1, dtype=np.int64)
    sets = _LowestFirstUnionFind(rank)
    by_energy = np.argsort(e, kind="stable")
    added = 0
    for k, level in enumerate(L):
        while added < e.size and e[by_energy[added]] < level:
            i, j = ends[by_energy[added]]
            sets.union(i, j)
            added += 1
        for i in np.flatnonzero(E < level):
            basin[k, i] = sets.find(i)

    # 2. merge tree: a node wherever two or more things become one superbasin
    parent = list(np.full(n, -1))
    node_level, children, lowest = [], [], list(range(n))  # lowest: lowest minimum of id
    id_of = {}  # label of a superbasin at the previous level -> its tree id
    for k in range(K):
        now = basin[k]
        new_id_of = {}
        kids_of = {}  # label -> ids of what it is made of at the previous level
        for i in np.flatnonzero(now >= 0):
            before = basin[k - 1, i] if k > 0 else -1
            kids_of.setdefault(now[i], set()).add(id_of[before] if before >= 0 else int(i))
        for a in sorted(kids_of, key=lambda a: rank[a]):
            kids = kids_of[a]
            if len(kids) == 1:
                new_id_of[a] = kids.pop()
                continue
            node = n + len(node_level)
            node_level.append(k)
            children.append(tuple(sorted(kids, key=lambda t: rank[lowest[t]])))
            lowest.append(a)
            parent.append(-1)
            for t in kids:
                parent[t] = node
            new_id_of[a] = node
        id_of = new_id_of
    roots = tuple(sorted(id_of.values(), key=lambda t: rank[lowest[t]]))

    # 3. leaf order (depth-first, lowest branch on the left) and x positions
    order, x = [], np.zeros(n + len(node_level))
    slot = 0.0
    for r in roots:
        stack = [r]
        while stack:
            t = stack.pop()
            if t < n:
                order.append(t)
                x[t] = slot
                slot += 1.0
            else:
                stack.extend(reversed(children[t - n]))
        slot += 1.0  # gap between separate trees
    for q, kids in enumerate(children):  # children are created before their parents
        x[n + q] = np.mean(x[list(kids)])

    return DisconnectivityTree(
        energies=E, edges=np.column_stack([ends, e]) if e.size else np.empty((0, 3)),
        levels=L, basin=basin, parent=np.array(parent, dtype=np.int64),
        node_level=np.array(node_level, dtype=np.int64), children=tuple(children),
        roots=roots, order=np.array(order, dtype=np.int64), x=x)


# ----------------------------------------------------------------------------
# minimax barriers, independent of the ladder
# ----------------------------------------------------------------------------
def barrier_between(graph, i, j):
    """Minimax barrier between minima i and j (Kruskal's algorithm, no levels).

    The lowest energy E such that some path of edges from i to j has every edge
    energy <= E: the energy at which i and j first share a superbasin.

    Parameters
    ----------
    graph : DisconnectivityTree or (energies, edges)
        The minima and edges (see ``build``).
    i, j : int
        Indices of two minima.

    Returns
    -------
    float
        The barrier; ``E_i`` if i == j; ``np.inf`` if no path joins them.
    """
    E, ends, e = _graph(graph)
    i = check_index("i", i, E.size)
    j = check_index("j", j, E.size)
    if i == j:
        return float(E[i])
    sets = _LowestFirstUnionFind(_energy_rank(E))
    for k in np.argsort(e, kind="stable"):
        sets.union(*ends[k])
        if sets.find(i) == sets.find(j):
            return float(e[k])
    return np.inf


def barrier_matrix(graph):
    """All minimax barriers at once, shape (n, n), symmetric; diagonal = energies.

    Kruskal's algorithm: add edges in order of energy; when an edge of energy E_ts
    merges two components A and B, every pair (a, b) with a in A, b in B gets the
    barrier E_ts. Pairs never joined get ``np.inf``. O(m log m + n^2).

    Parameters
    ----------
    graph : DisconnectivityTree or (energies, edges)

    Returns
    -------
    ndarray, shape (n, n)
    """
    E, ends, e = _graph(graph)
    n = E.size
    barrier = np.full((n, n), np.inf)
    barrier[np.arange(n), np.arange(n)] = E
    component = {i: [i] for i in range(n)}  # representative -> members
    sets = _LowestFirstUnionFind(_energy_rank(E))
    for k in np.argsort(e, kind="stable"):
        a, b = sets.find(ends[k, 0]), sets.find(ends[k, 1])
        if a == b:
            continue
        ca, cb = component.pop(a), component.pop(b)
        barrier[np.ix_(ca, cb)] = e[k]
        barrier[np.ix_(cb, ca)] = e[k]
        sets.union(a, b)
        component[sets.find(a)] = ca + cb
    return barrier
