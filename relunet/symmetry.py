"""Symmetries of ReLU networks and a canonical representative ("de-symmetrisation").

Two kinds of transformations leave the function of a K x N ReLU network
unchanged (Gamst & Walker 2017, Sec. 3.3: the symmetry group contains
R_+^{KN} x S_N^K):

* positive rescaling of a hidden unit, since relu(c z) = c relu(z) for c > 0:
  with c_{l,j} = exp(u_{l,j}) for hidden unit j of layer l, and c = 1 for the
  input and the output,

      W_l[j, i] -> W_l[j, i] * c_{l,j} / c_{l-1,i},    b_l[j] -> b_l[j] * c_{l,j}

  (Badrinarayanan et al. 2015, arXiv:1511.01754; Neyshabur et al. 2015, Path-SGD);
* permutation of the units within a hidden layer: rows of W_l and entries of
  b_l, together with the columns of W_{l+1} (or Wout).

The paper picks one representative per orbit: "first, we found the invariant
weight scaling minimizing the L_2 norm of the entire weight vector. Then we
permuted the nodes in each layer so the columns of the weight matrices were in
increasing L_2 norm order." This module does exactly that, with these choices.

Rescaling. Every parameter p is a weight or bias w_p whose rescaled square is
w_p^2 exp(2 a_p . u), with a_p = +1 at the unit it feeds and -1 at the unit it
comes from. The squared norm F(u) = sum_p w_p^2 exp(2 a_p . u) is convex (a sum
of exponentials of linear forms), with

    dF/du_k = 2 (In_k - Out_k),     In_k / Out_k = squared norm of unit k's
                                    incoming weights+bias / outgoing weights,

so the optimum is the *balanced* network: every hidden unit has as much
(squared) weight coming in as going out. F is minimised by Newton's method
with a block-tridiagonal Hessian (:mod:`relunet.balance`), until
max_k |In_k - Out_k| / (In_k + Out_k) <= gtol.

Dead units. Call a hidden unit *live* if it lies on a path of non-zero
parameters from the input or a bias to the output, and *dead* otherwise (e.g.
all incoming weights and its bias are zero, or all outgoing weights are zero,
or it is fed only by such units). If every unit is live, F has a unique
finite minimiser (each u_k is pinned on a path whose exponents telescope to 0,
so F is coercive and strictly convex). A dead unit gives a direction along
which F decreases forever: its output is identically zero, or nobody uses it,
and scaling the dead units towards infinity (unreachable ones) or 0 (unused
ones), by amounts growing layer by layer, sends every parameter touching a
dead unit to zero while leaving the others unchanged.
We take that limit explicitly: **every weight and bias into or out of a dead
unit is set to exactly 0** (the network function does not change, exactly),
and the dead unit's log-scale stays 0. The result is the minimum-norm point of
the closure of the orbit, and is the same for every member of the orbit.
W_f (construct.py) has zero blocks but no dead units.

Sorting. Units of layer l = 1..K are sorted, in that order, by increasing
squared norm of their incoming weights and bias (row j of W_l plus b_l[j]).
At the balanced optimum this equals the squared norm of their outgoing column
(In_k = Out_k), so it is at once the paper's "columns of the weight matrices"
(in Keras' (in, out) kernels a column holds a unit's incoming weights; we add
the bias) and the unit's column of W_{l+1} in our (out, in) layout. Because the
optimum is unique and permutation-equivariant, sorting gives one canonical
form per orbit and canonicalising twice changes nothing. Ties (norms within
``tie_rtol``) are broken deterministically by the incoming row (whose
previous layer is already canonical), then the bias, then the sorted entries
of the outgoing column (invariant under the later sorting of layer l+1). Units
equal in all of these keep their given order, so the form is unique except for
such exact coincidences with outgoing columns that differ only in order (a
measure-zero case; dead units, all zero, are never a problem).
"""
from __future__ import annotations

import functools

import numpy as np
from scipy.optimize import linear_sum_assignment

from .balance import newton, unit_sums
from .net import Arch, check_stack

__all__ = ["apply_rescaling", "apply_permutation", "dead_units", "rescale_min_norm",
           "sort_units", "canonicalize", "random_symmetry", "distance_modulo_symmetry"]


# =============================================================================
# Blocks and checks
# =============================================================================
def _check(W, arch, name="W"):
    """Validate; return (float64 (M, P) copy, was_1d, dtype)."""
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    W0 = check_stack(W, arch, name)
    if not np.all(np.isfinite(W0)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return W0.astype(np.float64, copy=True), np.ndim(W) == 1, W0.dtype


def _out(W, was_1d, dtype):
    W = W.astype(dtype, copy=False)
    return W[0] if was_1d else W


def _layers(W, arch):
    """Views [(W_l (M, N_l, fan_in), b_l (M, N_l)) for l = 1..K+1] into W (M, P)."""
    v = arch.unpack(W)
    return [(v[wn], v[bn]) for wn, bn in map(arch.layer_blocks, range(1, arch.K + 2))]


def _check_per_unit(a, arch, M, name):
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.broadcast_to(a, (M,) + a.shape)
    if a.shape != (M, arch.K, arch.N):
        raise ValueError(f"{name} must have shape (M, K, N) = ({M}, {arch.K}, {arch.N}) "
                         f"or (K, N), got {a.shape}")
    return a


def apply_rescaling(W, arch: Arch, log_scales) -> np.ndarray:
    """Rescale hidden unit (l, j) by c = exp(log_scales[m, l-1, j]) in every network.

    Incoming weights and bias are multiplied by c, outgoing weights divided by
    it (module docstring). ``log_scales``: (M, K, N) or (K, N). Returns W's shape.
    """
    W, was_1d, dtype = _check(W, arch)
    u = _check_per_unit(log_scales, arch, W.shape[0], "log_scales").astype(np.float64)
    if not np.all(np.isfinite(u)):
        raise ValueError("log_scales contains non-finite values")
    c = np.exp(u)                                             # (M, K, N)
    for layer, (Wl, bl) in enumerate(_layers(W, arch)):       # layer = 0..K (0-based)
        if layer < arch.K:
            Wl *= c[:, layer, :, None]
            bl *= c[:, layer, :]
        if layer > 0:
            Wl /= c[:, layer - 1, None, :]
    return _out(W, was_1d, dtype)


def apply_permutation(W, arch: Arch, perms) -> np.ndarray:
    """Permute hidden units: new unit j of layer l is old unit perms[m, l-1, j].

    ``perms``: (M, K, N) or (K, N) integer array, each row a permutation of
    0..N-1. Rows of W_l and b_l and columns of W_{l+1} move together.
    """
    W, was_1d, dtype = _check(W, arch)
    p = _check_per_unit(perms, arch, W.shape[0], "perms")
    if not np.issubdtype(p.dtype, np.integer) or not np.array_equal(
            np.sort(p, axis=-1), np.broadcast_to(np.arange(arch.N), p.shape)):
        raise ValueError("perms must hold a permutation of 0..N-1 in every (m, l) row")
    layers = _layers(W, arch)
    for layer in range(arch.K):
        Wl, bl = layers[layer]
        Wn, _ = layers[layer + 1]
        Wl[...] = np.take_along_axis(Wl, p[:, layer, :, None], axis=1)
        bl[...] = np.take_along_axis(bl, p[:, layer, :], axis=1)
        Wn[...] = np.take_along_axis(Wn, p[:, layer, None, :], axis=2)
    return _out(W, was_1d, dtype)


# =============================================================================
# Rescaling to minimal L2 norm
# =============================================================================
def dead_units(W, arch: Arch) -> np.ndarray:
    """Boolean (M, K, N): hidden units on no non-zero path from input/biases to output."""
    W, _, _ = _check(W, arch)
    L = _layers(W, arch)
    reach, fed = [], None                  # fed: (M, fan_in) live-from-source flags
    for Wl, bl in L[:-1]:
        nz = Wl != 0
        r = (bl != 0) | (nz.any(axis=2) if fed is None else (nz & fed[:, None, :]).any(axis=2))
        reach.append(r)
        fed = r
    co = [None] * arch.K
    used = np.ones((W.shape[0], arch.n_out), dtype=bool)  # the outputs are always used
    for layer in range(arch.K - 1, -1, -1):
        co[layer] = ((L[layer + 1][0] != 0) & used[:, :, None]).any(axis=1)
        used = co[layer]
    return ~(np.stack(reach, axis=1) & np.stack(co, axis=1))


def rescale_min_norm(W, arch: Arch, gtol: float = 1e-11, max_iter: int = 100,
                     return_info: bool = False):
    """Rescale hidden units to minimise the L2 norm of each network (module docstring).

    Parameters
    ----------
    W : (M, P) or (P,) stack.
    gtol : stop when max_k |In_k - Out_k| / (In_k + Out_k) <= gtol (live units).
    max_iter : Newton iterations at most.

    Returns
    -------
    W_rescaled : same shape as W (parameters touching dead units set to 0);
    info (if ``return_info``): dict with converged (M,) bool, iterations (M,),
    rel_grad (M,) final max relative imbalance, grad_norm (M,) final
    ||dF/du||_2, log_scales (M, K, N), dead (M, K, N) bool, norm_before (M,),
    norm_after (M,).
    """
    if not (gtol > 0) or int(max_iter) < 1:
        raise ValueError(f"gtol must be > 0 and max_iter >= 1, got {gtol}, {max_iter}")
    W64, was_1d, dtype = _check(W, arch)
    norm_before = np.linalg.norm(W64, axis=1)
    dead = dead_units(W64, arch)
    L = _layers(W64, arch)
    for layer in range(arch.K):                   # zero all parameters touching dead units
        L[layer][0][dead[:, layer]] = 0.0
        L[layer][1][dead[:, layer]] = 0.0
        Wn = L[layer + 1][0]
        Wn[np.broadcast_to(dead[:, layer, None, :], Wn.shape)] = 0.0
    Q = [(Wl ** 2, bl ** 2) for Wl, bl in L]
    u, conv, it, rel = newton(Q, dead, gtol, int(max_iter))
    Wr = apply_rescaling(W64, arch, u)
    _, In, Out, _ = unit_sums(Q, u)
    info = dict(converged=conv, iterations=it, rel_grad=rel,
                grad_norm=np.linalg.norm(2.0 * (In - Out), axis=(1, 2)),
                log_scales=u, dead=dead, norm_before=norm_before,
                norm_after=np.linalg.norm(Wr, axis=1))
    Wr = _out(Wr, was_1d, dtype)
    return (Wr, info) if return_info else Wr


# =============================================================================
# Sorting units
# =============================================================================
def _tie_cmp(keys, tol):
    """Comparator on per-unit key rows [s, row..., bias, sorted out...] with tolerance."""
    def cmp(a, b):
        ka, kb = keys[a], keys[b]
        scale = np.sqrt(max(ka[0], kb[0], 1e-300))
        if abs(ka[0] - kb[0]) > tol * max(ka[0], kb[0]):
            return -1 if ka[0] < kb[0] else 1
        for x, y in zip(ka[1:], kb[1:]):
            if abs(x - y) > tol * scale:
                return -1 if x < y else 1
        return 0
    return cmp


def sort_units(W, arch: Arch, tie_rtol: float = 1e-9, return_perm: bool = False):
    """Sort the units of each hidden layer by increasing norm of incoming weights+bias.

    Layers are sorted from 1 to K; ties are broken as in the module docstring.
    Returns the sorted stack (W's shape) and, if ``return_perm``, perms (M, K, N):
    new unit j of layer l = old unit perms[m, l-1, j] (as :func:`apply_permutation`).
    """
    if not (tie_rtol >= 0):
        raise ValueError(f"tie_rtol must be >= 0, got {tie_rtol}")
    W64, was_1d, dtype = _check(W, arch)
    M, K, N = W64.shape[0], arch.K, arch.N
    perms = np.empty((M, K, N), dtype=np.intp)
    L = _layers(W64, arch)
    for layer in range(K):
        Wl, bl = L[layer]
        Wn = L[layer + 1][0]
        s = (Wl ** 2).sum(axis=2) + bl ** 2                         # (M, N)
        p = np.argsort(s, axis=1, kind="stable")
        ss = np.take_along_axis(s, p, axis=1)
        tied = (np.diff(ss, axis=1) <= tie_rtol * ss[:, 1:]).any(axis=1)
        for m in np.flatnonzero(tied):                             # rare: exact comparator
            keys = np.concatenate([s[m][:, None], Wl[m], bl[m][:, None],
                                   np.sort(Wn[m], axis=0).T], axis=1)
            p[m] = sorted(range(N), key=functools.cmp_to_key(_tie_cmp(keys, tie_rtol)))
        perms[:, layer] = p
        Wl[...] = np.take_along_axis(Wl, p[:, :, None], axis=1)
        bl[...] = np.take_along_axis(bl, p, axis=1)
        Wn[...] = np.take_along_axis(Wn, p[:, None, :], axis=2)
    W64 = _out(W64, was_1d, dtype)
    return (W64, perms) if return_perm else W64


# =============================================================================
# Canonical form, random symmetries, distances
# =============================================================================
def canonicalize(W, arch: Arch, return_info: bool = False, gtol: float = 1e-11,
                 max_iter: int = 100, tie_rtol: float = 1e-9):
    """The paper's de-symmetrisation: :func:`rescale_min_norm`, then :func:`sort_units`.

    Returns the canonical stack (W's shape) and, if ``return_info``, the info
    dict of :func:`rescale_min_norm` plus ``perm`` (M, K, N).
    """
    Wr, info = rescale_min_norm(W, arch, gtol=gtol, max_iter=max_iter, return_info=True)
    Wc, perm = sort_units(Wr, arch, tie_rtol=tie_rtol, return_perm=True)
    info["perm"] = perm
    return (Wc, info) if return_info else Wc


def random_symmetry(W, arch: Arch, rng, scale_range=(0.2, 5.0), permute: bool = True,
                    return_transform: bool = False):
    """Apply a random symmetry: log-uniform scales in ``scale_range``, then permutations.

    ``rng``: a numpy Generator. Returns W' (W's shape), plus (log_scales (M, K, N),
    perms (M, K, N)) if ``return_transform``. The function of every network is unchanged.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    lo, hi = (float(v) for v in scale_range)
    if not (0 < lo <= hi < np.inf):
        raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
    W64, was_1d, dtype = _check(W, arch)
    M, K, N = W64.shape[0], arch.K, arch.N
    u = rng.uniform(np.log(lo), np.log(hi), size=(M, K, N))
    perms = np.stack([rng.permuted(np.tile(np.arange(N), (K, 1)), axis=1) if permute
                      else np.tile(np.arange(N), (K, 1)) for _ in range(M)])
    Wp = apply_permutation(apply_rescaling(W64, arch, u), arch, perms)
    Wp = _out(Wp, was_1d, dtype)
    return (Wp, u, perms) if return_transform else Wp


def _align(A, B, arch):
    """Permute B's units (both (P,), canonical) to match A's, layer by layer from 1 up.

    Cost of matching unit a of A to unit b of B in layer l: squared distance of
    incoming rows+bias (B's layer l-1 already aligned), plus for l = K the
    squared distance of outgoing Wout columns (the output is never permuted).
    """
    B = B.copy()
    LA, LB = _layers(A[None], arch), _layers(B[None], arch)
    for layer in range(arch.K):
        ra = np.concatenate([LA[layer][0][0], LA[layer][1][0][:, None]], axis=1)
        rb = np.concatenate([LB[layer][0][0], LB[layer][1][0][:, None]], axis=1)
        cost = ((ra[:, None, :] - rb[None, :, :]) ** 2).sum(axis=2)
        if layer == arch.K - 1:
            oa, ob = LA[layer + 1][0][0].T, LB[layer + 1][0][0].T
            cost += ((oa[:, None, :] - ob[None, :, :]) ** 2).sum(axis=2)
        _, cols = linear_sum_assignment(cost)          # unit a of A <- unit cols[a] of B
        Wl, bl, Wn = LB[layer][0][0], LB[layer][1][0], LB[layer + 1][0][0]
        Wl[...], bl[...], Wn[...] = Wl[cols], bl[cols], Wn[:, cols]
    return B


def distance_modulo_symmetry(W1, W2, arch: Arch, align: bool = False,
                             return_info: bool = False):
    """Euclidean distance between the canonical forms of W1 and W2.

    W1, W2: (P,) or (M, P) (a single network is broadcast against a stack).
    With ``align=True`` the units of canonical W2 are additionally permuted to
    match canonical W1 (linear_sum_assignment, greedily from layer 1 up; see
    :func:`_align`) and the smaller of the two distances is returned. This is
    a distance between two members of the orbits, an upper bound on the true
    distance between orbits (scales are not re-optimised against each other).

    Returns (M,) distances (a float if both inputs are single networks), plus
    dict(canonical=(M,), aligned=(M,) or None) if ``return_info``.
    """
    A = np.atleast_2d(canonicalize(W1, arch))
    B = np.atleast_2d(canonicalize(W2, arch))
    single = np.ndim(W1) == 1 and np.ndim(W2) == 1
    if A.shape[0] != B.shape[0] and 1 not in (A.shape[0], B.shape[0]):
        raise ValueError(f"W1 and W2 must hold the same number of networks or one, "
                         f"got shapes {np.shape(W1)} and {np.shape(W2)}")
    A, B = np.broadcast_arrays(A, B)
    d_can = np.linalg.norm(A - B, axis=1)
    d_al = None
    d = d_can
    if align:
        d_al = np.array([np.linalg.norm(a - _align(a, b, arch)) for a, b in zip(A, B)])
        d = np.minimum(d_can, d_al)
    d = float(d[0]) if single else d
    return (d, dict(canonical=d_can, aligned=d_al)) if return_info else d
