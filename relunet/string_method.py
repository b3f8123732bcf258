"""The string method for piecewise-smooth energies: minimum energy paths on a ReLU loss.

Used for G&W Sec. 3.3 / Fig. 4 and the disconnectivity graph. The energy is any
batched function ``efun(X) -> (E, G)`` with X (n, D), E (n,), G (n, D) (for
networks: ``lambda X: kernels.loss_and_grad(X, arch, x, t)``); the band (a stack
of B images, both ends fixed, started on the straight line or a given path) and its helpers are
those of :mod:`relunet.neb`. One subject, the string method and its
convergence test, which needs more than a sitting's 300 lines: the relaxation,
the grid, the climbing image and the nonsmooth stationarity test are read
together.

Why the NEB criterion fails on a ReLU loss: the gradient jumps across every
kink (a training point's pre-activation changing sign), so an image sitting on
or oscillating across a kink has a perpendicular force bounded below by the
jump, whatever the optimiser. On :func:`relunet.neb_surfaces.crease_well`, whose
minimum energy path is a sharp V-shaped crease, the climbing-image NEB above
finds the saddle energy yet ends with max |F| = 2.1 (the jump is 2a = 4): the
criterion max |F| <= fmax measures the kink, not the band.

Relaxation (E, Ren & Vanden-Eijnden, Phys. Rev. B 66, 052301 (2002); "simplified
string", J. Chem. Phys. 126, 164103 (2007)). Each movable image moves along its
perpendicular force F_i = -(G_i - (G_i . tau_i) tau_i); then the band is
reparametrised: the images are put back at fixed arc-length fractions (the
"grid") of the polyline through them, by linear interpolation (which cannot
overshoot). There are no springs; the grid fixes where the images sit along
the path. Details that turned out to matter (each measured on the test
surfaces of :mod:`relunet.neb_surfaces`):

* tangent: the three-point derivative on a non-uniform grid,
  tau ~ (h-/h+) (R_{i+1} - R_i) + (h+/h-) (R_i - R_{i-1}). It is second-order
  accurate; the plain central difference is first order on a non-uniform grid,
  and its error angle leaks |G . tau| into F_perp where the band climbs
  steeply (Mueller-Brown with a refined grid: |F_perp| ~ 10 that never decayed);
* optimiser: steepest descent per image with its own step h_i ("bold driver"):
  h_i grows by ``grow`` while the image's force keeps its direction and halves
  when it turns back (F_new . F_old < 0). An image crossing a kink back and
  forth therefore takes halving steps and settles on the crease, as a
  subgradient method with diminishing steps does. FIRE with its momentum was
  tried and dropped: with the reparametrisation it left persistent zig-zags in
  the curved double well (F_perp ~ 1 after 3,000 steps);
* grid: refined AutoNEB-style (Kolsbjerg, Groves & Hammer, J. Chem. Phys. 145,
  094107 (2016), who insert images where the energy changes fast and next to
  the maximum) by equidistribution of a monitor: every segment gets an equal
  share of (1 - a - p) arc length + a energy variation + p a window of three
  uniform spacings around the peak. The grid is re-equidistributed every
  ``regrid_every`` iterations up to ``regrid_until`` and then frozen, so that
  "converged" refers to a fixed problem.

Climbing image (optional, ``climb=True``; climbing string of Ren &
Vanden-Eijnden, J. Chem. Phys. 138, 134105 (2013)). On the frozen grid the
highest image, if it is a maximum along the band, climbs along the tangent
with a step of its own (an image crossing a crease sideways halves only its
perpendicular step) and is left in place by the reparametrisation, which
spreads the other images on either side of it. It converges to a point that
is a maximum along the path and a minimum across it: a saddle estimate, which
on a rugged landscape can lie well below the path maximum, because a straight
segment between two relaxed images can cut across a ridge. Its energy is then
the better-resolved barrier, and ``watch="image"`` makes the window watch it.

Two safeguards keep a band from running away on a network's loss, where the
landscape has stiff walls (curvatures ~1e3) beside weak directions and
ridges that keep rising: each image's step is also capped by 1.5 / L, L =
|F - F_old| / |last step| the force's local Lipschitz estimate (the sign test
of the step rule watches the whole force, which the weak directions dominate),
and an image's first step, before it has an estimate, is at most
``first_move`` long; and an image climbs only while its energy is below the maximum of the
initial path (the straight line between the ends, unless ``path`` gives
another: the minimax barrier is at most the maximum along any path, so a
climber above it has left the valley). Without them,
bands to students quenched by L-BFGS climbed walls by orders of magnitude.
The estimate is kept when the grid is refined (only the steps h restart): a
first step of h |F| = 0.2 next to a quenched minimum whose walls curve at
1e5 threw its neighbours up to losses of 1e4, from a path that never rose
above 0.23 (measured on the default run's bands started on the plateau path,
relunet.plateau: 20 of 100 converged with both rules at 1,500 iterations, 16
without).

Preconditioned climbing image (optional, ``climb_hessian``). On a network's loss a
steepest-descent step that is stable across a wall of curvature 1e4 moves the
image by 1e-4 of the force along the weak directions, so the climbing image
creeps across its hyperplane and the band can pass the stability window while
its saddle estimate is still on a slope. Given the exact Hessians, the climbing
image and its neighbours up to ``precond_width`` images away move along
-P |H|_mu^-1 P G instead, |H|_mu = V max(|lambda|, mu) V^T the absolute-value
metric of the saddle-free Newton method (Dauphin et al., NeurIPS 2014; the same
|lambda| scaling as eigenvector-following in the landscape codes, Wales, Energy
Landscapes, 2003): stiff directions are divided by their curvature, weak ones
keep the plain scale (mu), and negative curvature across the path is descended,
not climbed. The step rule above then acts on the preconditioned force. The
matrix is positive definite on the hyperplane, so a fixed point still has
P G = 0: the method finds the same saddle estimate, faster (on
:func:`relunet.neb_surfaces.stiff_valley`, curvatures 2 and 2e4 across the
path: converged to the exact saddle at iteration 470, where the plain steps
are 1.6e-3 away after 20,000). Only the images near the climber are
preconditioned: every image preconditioned drifted apart from its neighbours
along the weak directions, and the polyline between them rose. An image entering
or leaving the preconditioned window restarts its step rule, as at its first
step: a step grown on preconditioned forces threw an image that had stopped
climbing up a wall, to losses of 1e4.

Barrier. The band's peak is the maximum of the true energy on the polyline
through the images: ``n_dense`` points per segment, then zoomed in three
rounds. It is the highest point of an actual path between the endpoints, hence
an upper bound on the mountain-pass barrier, whether or not the band has
converged; ``peak_segment``, ``peak_t`` and ``peak_point`` say where it is, for
a later refinement into a saddle point. :func:`refine_segments` tightens the
bound afterwards: the segments that rise above the band's highest image (chords
cutting across a curved valley's wall) are relaxed as strings of their own.

Convergence criterion (both must hold, judged at checks every ``check_every``
iterations on a frozen grid):

1. stability of the barrier: max - min of the peak energy (``watch="path"``)
   or of the highest image's energy (``watch="image"``; with ``climb`` the
   climbing image, the saddle estimate) over the last ``window`` checks <=
   ``etol``. This is the quantity the band is run for, and it is insensitive
   to force jumps. Draxler et al. (ICML 2018), who ran
   AutoNEB on ReLU networks, read their barriers off the same dense
   interpolation but stopped on a fixed budget, with no tolerance at all;
2. nonsmooth stationarity where the barrier is read off: at the images that
   bound the peak segment, the gradient-sampling measure (Burke, Lewis &
   Overton, SIAM J. Optim. 15, 751 (2005); Kiwiel, SIAM J. Optim. 18, 379
   (2007)) of the perpendicular force is <= ``gs_tol``: the norm of the
   smallest element of the convex hull of the perpendicular gradients at the
   image and at ``gs_samples`` points at distance ``gs_radius`` from it in its
   hyperplane (fixed random directions; :func:`sampled_min_norm`). Across a
   V-shaped crease the sampled gradients point both ways and the hull
   contains (nearly) zero, while a real slope gives a real value: the measure
   approximates the distance of 0 from the Clarke subdifferential (Clarke,
   Optimization and Nonsmooth Analysis, 1983) of the energy restricted to the
   hyperplane, the nonsmooth meaning of "F_perp = 0". A single gradient at a
   kink is one arbitrary element of it. Fewer samples can only raise the
   measure, so the test errs on the side of "not converged". It is evaluated
   at the check after (1) first holds, and must find the peak on the same
   segment. A band that fails it has its steps restarted (the halving rule
   can stall an image on a slope it keeps overshooting; the samples see the
   slope). With a climbing image the test is taken at the climbing image
   itself, with the FULL gradient sampled in a full ball: a small value says
   the point is Clarke epsilon-stationary, the nonsmooth meaning of "saddle
   candidate" (whose index a later refinement has to settle).

Implementation. Each iteration's band arithmetic (tangents, forces, the step
rule, the climber, the step cap, the reparametrisation) runs in two numba
kernels, ``_step_kernel`` and ``_reparam_kernel``, band by band; the NumPy
functions ``_step_numpy`` and ``_reparam_numpy`` (with :func:`reparametrize`,
``_reparametrize_split`` and ``_central_tangents``) state the same equations
readably, and the tests hold the kernels to them over whole runs (to ~1e-12:
the sums over D run in another order). From 8 bands on they run in two
threads, half of the bands each (the same bits: no step mixes bands). The
grid's re-equidistribution (rare), the checks and the final bookkeeping stay
in NumPy.

Images away from the peak need not be relaxed for the barrier to be right
(descent elsewhere can only lower the path); their single-point forces are
returned as a diagnostic (``fperp``), not used. Every iteration makes ONE
``efun`` call holding the movable images of all unfinished bands, plus, at
checks, the peak samples and the dense points where they are read (before the
grid is frozen, with ``watch="path"``, and for bands without a climbing image:
once the climbing image is watched, skipping the others' cut the evaluations
of Fig. 4 by 37%, with the same bits; a band whose climber has just left its
maximum gets its dense points in a second call that iteration, which is rare);
the final bookkeeping takes one more for the dense points skipped at the last
check, and the final peak location three more. With ``climb_hessian`` there is
also one Hessian call at iterations where some band's preconditioner is due, and
the metric is applied by the small kernel ``_apply_metric`` in the main thread,
before the step. Each band has its own optimiser state and grid and no step
mixes bands, so a band's result is bit-identical alone or in a batch (given a
row-independent ``efun`` and ``climb_hessian``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numba
import numpy as np
import scipy.linalg
from numba import njit

from ._numba import STRICT
from .fast.stack import thread_pool
from .hessian import _one_blas_thread
from .neb import (
    _arc_length,
    _cap,
    _check_endpoints,
    _check_number,
    _dot,
    _evaluate,
    _rows,
    _vdot,
    linear_path,
)

__all__ = ["StringResult", "string_method", "reparametrize", "smooth", "min_across",
           "dense_profile", "min_norm_hull", "sampled_min_norm", "SegmentRefinement",
           "refine_segments"]


# =============================================================================
# String method with a nonsmooth convergence criterion
# =============================================================================
@dataclass
class StringResult:
    """Relaxed strings. Bn = number of bands, B = images per band incl. endpoints,
    M = (B - 1) n_dense + 1 points of the dense profile.

    The maximum of a band ("peak") is the highest point of the dense profile:
    it lies on segment ``peak_segment`` j, at ``R_j + peak_t (R_{j+1} - R_j)``
    (``peak_point``), at arc length ``peak_distance`` from the start. After
    :meth:`squeeze` (single band) the leading Bn axis is gone.
    """

    images: np.ndarray          # (Bn, B, D)
    energies: np.ndarray        # (Bn, B)
    distance: np.ndarray        # (Bn, B) cumulative arc length
    fractions: np.ndarray       # (Bn, B) the grid: target arc-length fractions of the images
    converged: np.ndarray       # (Bn,) bool, the criterion of the module docstring
    iterations: np.ndarray      # (Bn,) int
    peak_energy: np.ndarray     # (Bn,) max of the dense profile
    peak_segment: np.ndarray    # (Bn,) int j: the peak lies between images j and j+1
    peak_t: np.ndarray          # (Bn,) position of the peak on that segment, in [0, 1]
    peak_distance: np.ndarray   # (Bn,) arc length from the start to the peak
    peak_point: np.ndarray      # (Bn, D)
    barrier_change: np.ndarray  # (Bn,) max - min of the watched barrier over the last window
    #                             (inf: none)
    peak_measure: np.ndarray    # (Bn,) sampled min-norm perpendicular force at the peak images
    #                             (nan: not measured)
    fperp: np.ndarray           # (Bn, B-2) single-point |F_perp| per movable image
    #                             (diagnostic only)
    dense_distance: np.ndarray  # (Bn, M) arc length of the dense profile
    dense_energies: np.ndarray  # (Bn, M) energies of the dense profile
    step: np.ndarray | None = None   # (Bn, B-2) each movable image's last perpendicular step h
    #                             (diagnostic: a tiny h on a real slope is a stalled image)

    def barrier(self, from_end: bool = False) -> np.ndarray:
        """Peak energy minus the start energy (or the end's)."""
        ref = self.energies[..., -1] if from_end else self.energies[..., 0]
        return self.peak_energy - ref

    def peak_image(self) -> np.ndarray:
        """Index of each band's highest image (the peak itself may lie between images)."""
        return np.argmax(self.energies, axis=-1)

    def squeeze(self) -> "StringResult":
        """Drop the band axis of a single-band result."""
        if self.images.ndim != 3 or self.images.shape[0] != 1:
            raise ValueError(f"squeeze needs a result with exactly one band, "
                             f"got images of shape {self.images.shape}")
        return replace(self, **{f: getattr(self, f)[0] for f in self.__dataclass_fields__
                                if getattr(self, f) is not None})


def _gather(X, j):
    """X[b, j[b, k]] for every band b: (n, k, D) (one fancy index; ten times faster
    than np.take_along_axis with broadcast indices, the same values)."""
    return X[np.arange(len(X))[:, None], j]


def reparametrize(X, fractions) -> np.ndarray:
    """Images at given arc-length fractions along each band's polyline.

    X : (Bn, B, D) bands;  fractions : (Bn, B') or (B',) increasing, from 0 to 1.
    Returns (Bn, B', D): linear interpolation along the polyline through X (it
    cannot overshoot), endpoints copied exactly.
    """
    X = np.asarray(X, dtype=np.float64)
    n, B, D = X.shape
    f = np.broadcast_to(np.asarray(fractions, dtype=np.float64), (n, np.shape(fractions)[-1]))
    s = _arc_length(X)                                  # (n, B)
    target = f * s[:, -1:]
    j = np.clip((s[:, None, 1:-1] <= target[:, :, None]).sum(-1), 0, B - 2)   # segment per target
    s0, s1 = np.take_along_axis(s, j, 1), np.take_along_axis(s, j + 1, 1)
    w = np.clip((target - s0) / np.where(s1 > s0, s1 - s0, 1.0), 0.0, 1.0)
    X0 = _gather(X, j)
    Y = X0 + w[..., None] * (_gather(X, j + 1) - X0)
    Y[:, 0], Y[:, -1] = X[:, 0], X[:, -1]
    return Y


def smooth(X, sweeps: int, hold=None) -> np.ndarray:
    """Bands with their corners cut: ``sweeps`` steps of discrete curve-shortening flow,
    X_i += (X_{i-1} - 2 X_i + X_{i+1}) / 4 on every interior image (Jacobi: all images
    from the previous sweep), the endpoints fixed, and the images where ``hold`` is True
    fixed too.

    A straight, evenly spaced band is a fixed point; any other band gets shorter, and
    many sweeps take it to the straight line (with held images: to the polyline through
    them). Used to restart a relaxed band from a shorter path (the shortening rounds of
    relunet.experiments.fig4_neb): the string method's fixed points are the minimum
    energy paths near its start, and on a landscape with many of them the start decides
    how long the path is. Holding the climbing image shortens the path around the pass
    it has found instead of cutting across to another one.

    X : (Bn, B, D) or (B, D);  sweeps : an integer >= 0;  hold : None, or booleans of
    X's shape without its last axis ((Bn, B) or (B,)).  Returns a new array.
    """
    if not isinstance(sweeps, (int, np.integer)) or isinstance(sweeps, bool) or sweeps < 0:
        raise ValueError(f"sweeps must be an integer >= 0, got {sweeps!r}")
    Y = np.array(X, dtype=np.float64)
    if Y.ndim not in (2, 3) or Y.shape[-2] < 2:
        raise ValueError(f"X must be bands (Bn, B, D) or one band (B, D) with B >= 2, "
                         f"got shape {np.shape(X)}")
    move = np.ones(Y.shape[:-1])
    if hold is not None:
        hold = np.asarray(hold)
        if hold.shape != Y.shape[:-1] or hold.dtype != bool:
            raise ValueError(f"hold must be booleans of shape {Y.shape[:-1]} (one per image), "
                             f"got {hold.dtype} of shape {hold.shape}")
        move[hold] = 0.0
    move = 0.25 * move[..., 1:-1, None]
    for _ in range(sweeps):
        Y[..., 1:-1, :] += move * (Y[..., :-2, :] - 2.0 * Y[..., 1:-1, :] + Y[..., 2:, :])
    return Y


def min_across(efun, X, E, max_iter: int = 300):
    """Is each band's climbing image a minimum across its band? The loss descended from
    it within the hyperplane through it perpendicular to the band (the tangent there: the
    chord between its two neighbours), by batched BFGS (:func:`relunet.bfgs.bfgs`, weak
    Wolfe line search: it keeps going along kinks) for at most ``max_iter`` steps.

    At a transition state (a saddle of index 1 whose unstable direction the band follows)
    no direction in that hyperplane descends: the drop is 0 and the point does not move.
    The climbing image of a converged band only passed the band's own test (its energy
    stable, a sampled measure at most the tolerance); a drop here says that it still lies
    on a slope or over negative curvature across the band: its energy is the top of a
    path, an upper bound on the barrier, and not a saddle's. (A lower point across the
    band does not by itself make a lower path: the band still has to cross the hyperplane
    elsewhere, relunet.experiments.fig4_neb measures what re-relaxing through it gives.)
    This is the "minimise in the hyperplane, maximise along the path" split of the
    synchronous-transit and line-then-plane saddle searches (Halgren & Lipscomb 1977,
    Chem. Phys. Lett. 49:225; Peng & Schlegel 1993, Isr. J. Chem. 33:449), used here as a
    test.

    X : (Bn, B, D) bands, E : (Bn, B) their energies. The descent runs on the state
    [w, tangent] (2D values per row) with the gradient's tangential component and the
    tangent's own gradient set to 0, so every step stays in the hyperplane (up to
    rounding, projected out at the end). Returns (points (Bn, D), energies (Bn,), distance
    moved (Bn,)).
    """
    from .bfgs import bfgs
    X, E = np.asarray(X, dtype=np.float64), np.asarray(E, dtype=np.float64)
    if X.ndim != 3 or E.shape != X.shape[:2] or X.shape[1] < 3:
        raise ValueError(f"X must be bands (Bn, B, D) with B >= 3 and E their energies "
                         f"(Bn, B), got shapes {X.shape} and {E.shape}")
    n, _, D = X.shape
    i = np.arange(n)
    c = np.argmax(E[:, 1:-1], axis=1) + 1
    tau = X[i, c + 1] - X[i, c - 1]
    tau /= np.linalg.norm(tau, axis=1, keepdims=True)

    def across(S):
        W, T = np.ascontiguousarray(S[:, :D]), S[:, D:]
        L, G = efun(W)
        G = G - np.sum(G * T, axis=1)[:, None] * T
        return L, np.concatenate([G, np.zeros_like(G)], axis=1)

    top = X[i, c]
    r = bfgs(across, np.concatenate([top, tau], axis=1), max_iter=max_iter)
    W = r.W[:, :D]
    W -= np.sum((W - top) * tau, axis=1)[:, None] * tau
    L = np.asarray(efun(W)[0], dtype=np.float64)
    return W, L, np.linalg.norm(W - top, axis=1)


def _dense_points(X, n_dense):
    """Interior points of every segment at fractions k / n_dense, k = 1..n_dense-1:
    (Bn, B-1, n_dense-1, D)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    n, B, D = X.shape
    P = np.empty((n, B - 1, n_dense - 1, D))
    _dense_kernel(X, n_dense, P)
    return P


@njit(cache=True, nogil=True, fastmath=STRICT)
def _dense_kernel(X, n_dense, P):
    """P[b, j, q] = X[b, j] + f (X[b, j+1] - X[b, j]), f = (q + 1) / n_dense: the
    NumPy expression X[:, :-1, None] + f[:, None] * np.diff(X, axis=1)[:, :, None]
    bit for bit (element-wise, no sums), five times faster (no temporaries)."""
    n, B, D = X.shape
    for b in range(n):
        for j in range(B - 1):
            for q in range(n_dense - 1):
                f = (q + 1) / n_dense
                for d in range(D):
                    P[b, j, q, d] = X[b, j, d] + f * (X[b, j + 1, d] - X[b, j, d])


def _profile(X, E, Ed):
    """Dense profile (distance, energy) from image energies E (n, B) and interior
    energies Ed (n, B-1, n_dense-1): arrays (n, (B-1) n_dense + 1)."""
    n, B = E.shape
    nd = Ed.shape[2] + 1
    prof = np.concatenate([E[:, :-1, None], Ed], axis=2).reshape(n, -1)
    prof = np.concatenate([prof, E[:, -1:]], axis=1)
    seg = np.sqrt(_dot(np.diff(X, axis=1), np.diff(X, axis=1)))         # (n, B-1)
    s0 = np.concatenate([np.zeros((n, 1)), np.cumsum(seg, axis=1)], axis=1)
    dist = (s0[:, :-1, None] + seg[:, :, None] * (np.arange(nd) / nd)).reshape(n, -1)
    return np.concatenate([dist, s0[:, -1:]], axis=1), prof


def dense_profile(efun, X, n_dense: int = 8):
    """Energy along each band's polyline at n_dense points per segment.

    X : (Bn, B, D).  Returns (distance, energy), each (Bn, (B-1) n_dense + 1):
    the true energy on the piecewise-linear path through the images (one
    ``efun`` call), so its maximum is the highest point of an actual path.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3 or X.shape[1] < 2:
        raise ValueError(f"X must have shape (Bn, B, D) with B >= 2, got {X.shape}")
    _check_number("n_dense", n_dense, integer=True)
    n, B, D = X.shape
    P = _dense_points(X, n_dense).reshape(-1, D)
    E, _ = _evaluate(efun, np.concatenate([X.reshape(-1, D), P]))
    Ed = E[n * B:].reshape(n, B - 1, n_dense - 1)
    return _profile(X, E[:n * B].reshape(n, B), Ed)


def _proj_simplex(V):
    """Euclidean projection of each row of V (N, m) onto the probability simplex."""
    N, m = V.shape
    U = -np.sort(-V, axis=1)
    css = np.cumsum(U, axis=1) - 1.0
    ok = U - css / np.arange(1, m + 1) > 0
    r = m - np.argmax(ok[:, ::-1], axis=1)              # number of positive entries
    theta = css[np.arange(N), r - 1] / r
    return np.maximum(V - theta[:, None], 0.0)


def _fista_numpy(Q, L, iters):
    """The FISTA iterations of :func:`min_norm_hull` in NumPy, batched over N: the
    readable twin of :func:`_fista_kernel` (tests hold one to the other)."""
    N, m, _ = Q.shape
    lam = np.full((N, m), 1.0 / m)
    z, tk = lam.copy(), 1.0
    for _ in range(iters):
        new = _proj_simplex(z - np.einsum("nij,nj->ni", Q, z) / L[:, None])
        tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
        z = new + ((tk - 1.0) / tn) * (new - lam)
        lam, tk = new, tn
    return lam


@njit(cache=True, nogil=True, fastmath=STRICT)
def _fista_kernel(Q, L, iters):
    """:func:`_fista_numpy` one problem at a time (the same steps; the sums of
    Q z run in index order, so the weights differ from NumPy's in the last bits).
    The NumPy version pays ~10 array calls per iteration, ~20 us whatever N; the
    string method's checks call it with a handful of problems, 1,000 iterations."""
    N, m = Q.shape[0], Q.shape[1]
    out = np.empty((N, m))
    lam, z, v, u = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    for n in range(N):
        lam[:] = 1.0 / m
        z[:] = lam
        tk = 1.0
        for _ in range(iters):
            for i in range(m):                      # v = z - Q z / L
                s = 0.0
                for j in range(m):
                    s += Q[n, i, j] * z[j]
                v[i] = z[i] - s / L[n]
            for i in range(m):                      # projection onto the simplex:
                x, k = v[i], i                      # u = v sorted descending (insertion)
                while k > 0 and u[k - 1] < x:
                    u[k] = u[k - 1]
                    k -= 1
                u[k] = x
            css, theta = 0.0, 0.0                   # theta from the last positive entry
            for i in range(m):
                css += u[i]
                if u[i] - (css - 1.0) / (i + 1) > 0:
                    theta = (css - 1.0) / (i + 1)
            tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
            for i in range(m):
                new = max(v[i] - theta, 0.0)
                z[i] = new + ((tk - 1.0) / tn) * (new - lam[i])
                lam[i] = new
            tk = tn
        out[n] = lam
    return out


def min_norm_hull(P, iters: int = 1000, kernel: bool = True):
    """Smallest-norm point of the convex hull of the rows of each P[k] (N, m, D).

    Accelerated projected gradient (FISTA, Beck & Teboulle 2009) on
    min_{lam in simplex} |lam P|^2, batched over N (``kernel``: the numba
    kernel; False: its NumPy twin). The weights returned are
    always feasible, so the norm is an upper bound on the exact minimum norm
    and converges to it. Returns (norm (N,), lam (N, m)).
    """
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 3 or P.shape[1] == 0:
        raise ValueError(f"P must have shape (N, m, D) with m >= 1, got {P.shape}")
    Q = np.einsum("nid,njd->nij", P, P)
    L = np.linalg.eigvalsh(Q)[:, -1]                    # Lipschitz constant of the gradient
    L = np.where(L > 0, L, 1.0)
    lam = _fista_kernel(Q, L, int(iters)) if kernel else _fista_numpy(Q, L, int(iters))
    d = np.einsum("nm,nmd->nd", lam, P)
    return np.sqrt(_dot(d, d)), lam


def _sample_directions(n_samples, D, seed):
    """The fixed random unit directions of gradient sampling, (n_samples, D)."""
    U = np.random.default_rng(seed).standard_normal((n_samples, D))
    return U


def _sample_points(points, tangents, radius, U):
    """points (N, D), tangents (N, D) or None -> (N, m, D) points at distance
    ``radius`` in the directions U, projected perpendicular to the tangent."""
    V = np.broadcast_to(U, (len(points),) + U.shape).copy()
    if tangents is not None:
        V -= _dot(V, tangents[:, None])[..., None] * tangents[:, None]
    V /= np.sqrt(_dot(V, V))[..., None]
    return points[:, None] + radius * V


def _sampled_measure(G0, Gs, tangents):
    """Min norm of the hull of {G0, Gs} (projected perpendicular to tangents)."""
    P = np.concatenate([G0[:, None], Gs], axis=1)
    if tangents is not None:
        P = P - _dot(P, tangents[:, None])[..., None] * tangents[:, None]
    return min_norm_hull(P)[0]


def sampled_min_norm(efun, points, radius: float, n_samples: int = 16, tangents=None,
                     seed: int = 0) -> np.ndarray:
    """Gradient-sampling stationarity measure at each point (Burke, Lewis & Overton,
    SIAM J. Optim. 15, 751 (2005)).

    The gradient at each point and at ``n_samples`` points at distance ``radius``
    from it (fixed random directions) are collected; the measure is the norm of
    the smallest element of their convex hull. With ``tangents`` (N, D) the
    samples lie in the hyperplane perpendicular to the tangent and the gradients
    are projected onto it (the perpendicular force of a band image). A small
    value says that no direction in the ball descends at a slope above it (the
    point is approximately Clarke stationary at scale ``radius``); a large value
    is a descent slope that is really there. Few samples can only make the
    measure larger (the hull of a subset is smaller), never smaller.

    points : (N, D).  Returns (N,). One ``efun`` call.
    """
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if pts.ndim != 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"points must be a finite array of shape (N, D), got shape {pts.shape}")
    _check_number("radius", radius)
    _check_number("n_samples", n_samples, integer=True)
    N, D = pts.shape
    tau = None
    if tangents is not None:
        tau = np.atleast_2d(np.asarray(tangents, dtype=np.float64))
        if tau.shape != pts.shape:
            raise ValueError(f"tangents must have the shape of points {pts.shape}, got {tau.shape}")
        tau = tau / np.sqrt(_dot(tau, tau))[:, None]
    S = _sample_points(pts, tau, radius, _sample_directions(n_samples, D, seed))
    _, G = _evaluate(efun, np.concatenate([pts, S.reshape(-1, D)]))
    return _sampled_measure(G[:N], G[N:].reshape(N, n_samples, D), tau)


def _central_tangents(X):
    """Unit tangents at the movable images, (n, B-2, D): the three-point derivative
    of the curve on a non-uniform grid, (h-/h+) (R_{i+1} - R_i) + (h+/h-) (R_i - R_{i-1})
    with h+- the neighbouring segment lengths; second-order accurate, and
    (R_{i+1} - R_{i-1}) on a uniform grid."""
    dX = np.diff(X, axis=1)
    seg = np.sqrt(_dot(dX, dX))
    hp, hm = seg[:, 1:], seg[:, :-1]
    ok = (hp > 0) & (hm > 0)
    wp = np.where(ok, hm / np.where(ok, hp, 1.0), 1.0)
    wm = np.where(ok, hp / np.where(ok, hm, 1.0), 1.0)
    t = wp[..., None] * dX[:, 1:] + wm[..., None] * dX[:, :-1]
    norm = np.sqrt(_dot(t, t))
    return t / np.where(norm > 0, norm, 1.0)[..., None]


@njit(cache=True, nogil=True, fastmath=STRICT)
def _apply_metric(U, wt, n, inv_mu, b, k, q, out):
    """out[r] = (I / mu + sum_{j < n} wt_j u_j u_j^T) q[r], u_j = U[b[r], k[r], j] (the
    metric of :class:`_ClimbPreconditioner`, read without gathering its matrices)."""
    D = q.shape[1]
    for r in range(q.shape[0]):
        bb, kk = b[r], k[r]
        for i in range(D):
            out[r, i] = inv_mu * q[r, i]
        for j in range(n[bb, kk]):
            c = 0.0
            for i in range(D):
                c += U[bb, kk, j, i] * q[r, i]
            c *= wt[bb, kk, j]
            for i in range(D):
                out[r, i] += c * U[bb, kk, j, i]


def _equidistribute(X, E, Ed, energy_weight, peak_weight):
    """New grid fractions (n, B) that give every segment an equal share of the monitor

        w(s) ds = (1 - a - p) ds / L + a |dE| / TV + p [|s - s*| <= d] ds / (2 d)

    integrated on the dense profile: L the band's length, TV the total variation
    of its energy, s* the arc length of its peak, d = 1.5 L / (B - 1) (the peak
    window spans three uniform spacings), a = energy_weight, p = peak_weight."""
    n, B, _ = X.shape
    dist, prof = _profile(X, E, Ed)                     # (n, M)
    ds = np.diff(dist, axis=1)
    dE = np.abs(np.diff(prof, axis=1))
    L = dist[:, -1:]
    tv = dE.sum(axis=1, keepdims=True)
    w = (1.0 - energy_weight - peak_weight) * ds / L
    w += energy_weight * np.where(tv > 0, dE / np.where(tv > 0, tv, 1.0), ds / L)
    s_pk = dist[np.arange(n), np.argmax(prof, axis=1)][:, None]
    half = 1.5 * L / (B - 1)
    over = np.clip(np.minimum(dist[:, 1:], s_pk + half) - np.maximum(dist[:, :-1], s_pk - half),
                   0.0, None)
    w += peak_weight * over / over.sum(axis=1, keepdims=True)
    cw = np.concatenate([np.zeros((n, 1)), np.cumsum(w, axis=1)], axis=1)
    cw /= cw[:, -1:]
    g = np.linspace(0.0, 1.0, B)
    out = np.empty((n, B))
    for b in range(n):                      # per band: results independent of the batch
        out[b] = np.interp(g, cw[b], dist[b] / dist[b, -1])
    out[:, 0], out[:, -1] = 0.0, 1.0
    return out


def string_method(efun, start, end, n_images: int = 32, max_iter: int = 2000, step: float = 1e-3,
                  step_max: float = 0.5, grow: float = 1.1, max_step: float = 0.2, n_dense: int = 8,
                  regrid_every: int = 100, regrid_until: int = 500, energy_weight: float = 0.5,
                  peak_weight: float = 0.25,
                  check_every: int = 10, window: int = 20, etol: float = 1e-4,
                  gs_radius: float = 1e-2, gs_samples: int = 16, gs_tol: float = 1e-2,
                  climb: bool = False, watch: str = "path", seed: int = 0,
                  path=None, first_move: float | None = None, climb_hessian=None,
                  precond_floor: float = 1.0, precond_every: int = 50,
                  precond_width: int = 1, fractions=None) -> StringResult:
    """Relax Bn strings at once and stop each on the nonsmooth criterion (module docstring).

    Parameters
    ----------
    efun : callable X (n, D) -> (E (n,), G (n, D)), rows treated independently;
        called ONCE per iteration on all rows needed by the unfinished bands.
    start, end : (D,) or (Bn, D) fixed endpoints.
    n_images : B, images per band including both endpoints (>= 3).
    max_iter : at most this many steps per band.
    step, step_max, grow : each image moves by h F_perp with its own step h:
        initially ``step``, multiplied by ``grow`` while its force keeps its
        direction, halved when the force turns back (F_new . F_old < 0), never
        above ``step_max``.
    max_step : largest displacement of one image in one step (units of the problem).
    first_move : largest displacement of an image's first step, taken before it has
        a Lipschitz estimate to cap its step (None: ``max_step``). Next to a sharp
        endpoint h |F| can be long enough to fling the image far up a wall.
    n_dense : points per segment of the dense profile (>= 2).
    regrid_every, regrid_until : the grid is re-equidistributed every
        ``regrid_every`` iterations up to iteration ``regrid_until`` (0: never),
        then frozen; convergence is only judged on a frozen grid.
    energy_weight : share a of the monitor given to the energy variation (0: plain
        arc length).
    peak_weight : share p of the monitor given to a window of three uniform
        spacings around the peak (AutoNEB-style refinement where the barrier is
        read off).
    check_every, window : the dense profile is evaluated every ``check_every``
        iterations; the window is the last ``window`` checks.
    etol : largest change (max - min) of the peak energy over the window.
    gs_radius, gs_samples, gs_tol : gradient sampling at the peak images: radius,
        number of samples, and the largest admissible sampled min-norm
        perpendicular force.
    climb : on the frozen grid, the highest movable image climbs (climbing string,
        Ren & Vanden-Eijnden, J. Chem. Phys. 138, 134105 (2013)): its force is
        -G + 2 (G . tau) tau, its perpendicular and parallel parts with steps of
        their own (a crease crossed sideways must not stall the climb along it),
        it is left where it is by the reparametrisation
        (the images on either side are spread over their own part of the band
        by the grid), and the stationarity test samples the FULL gradient in a
        ball around it (a Clarke epsilon-stationary point: a saddle candidate).
        Only an image that is a maximum along the band climbs, and it moves at
        most half way to a neighbour per step; a band whose highest point is an
        endpoint has no climber and is tested as without ``climb``.
    watch : the barrier whose stability over the window is required: "path", the
        maximum of the dense profile, or "image", the highest image's energy
        (with ``climb``: the climbing image, the saddle estimate, which does not
        depend on how the straight segments next to it cut corners).
    seed : seed of the fixed sampling directions (shared by all bands).
    path : None (default: start on the straight line) or an initial path, (Bn, K, D)
        or (K, D) points from each start to its end (K >= 2, its first and last
        points the endpoints), e.g. :func:`relunet.plateau.plateau_path`; the band
        starts at uniform arc-length fractions of its polyline.

    fractions : None (default: uniform) or the initial grid, (Bn, B) or (B,) arc-length
        fractions increasing from 0 to 1: with ``path`` the images start at these
        fractions of its polyline (a converged band with a midpoint inserted in every
        segment, at its own fractions and with ``regrid_every=0``, is the same band
        refined, its images where they were).
    climb_hessian : None (default) or a callable X (n, D) -> H (n, D, D), the exact
        Hessians of the energy. With ``climb``, the climbing image's perpendicular
        step is then preconditioned (module docstring): it moves along
        -P |H|_mu^-1 P G, |H|_mu = V max(|lambda|, mu) V^T, P the projector across
        the tangent, the Hessian taken where the image climbs and again every
        ``precond_every`` steps or when another image becomes the climber.
    precond_floor : mu, in the energy's units per squared length (default 1: on the
        networks' loss, curvatures below 1 keep steepest descent's scale, and the
        walls, up to 1e5, are divided by theirs).
    precond_every : steps between two Hessians of a band.
    precond_width : w, the climbing image's neighbours up to w images away are
        preconditioned too (their own Hessians), so that the metric stays when the
        climber moves to one of them.

    Returns
    -------
    StringResult with band axis Bn. Bands that never met the criterion have
    ``converged`` False and report what they reached (``barrier_change``,
    ``peak_measure``).
    """
    if not callable(efun):
        raise ValueError(f"efun must be callable X (n, D) -> (E, G), got {type(efun).__name__}")
    S, T = _check_endpoints(start, end)
    _check_number("n_images", n_images, integer=True)
    if n_images < 3:
        raise ValueError(f"n_images must be >= 3 (two endpoints and a movable image), "
                         f"got {n_images}")
    first_move = max_step if first_move is None else first_move
    for name, val in (("step", step), ("step_max", step_max), ("max_step", max_step),
                      ("first_move", first_move),
                      ("etol", etol), ("gs_radius", gs_radius), ("gs_tol", gs_tol)):
        _check_number(name, val)
    if climb_hessian is not None and not callable(climb_hessian):
        raise ValueError(f"climb_hessian must be None or callable X (n, D) -> H (n, D, D), "
                         f"got {type(climb_hessian).__name__}")
    _check_number("precond_floor", precond_floor)
    _check_number("precond_every", precond_every, integer=True)
    _check_number("precond_width", precond_width, integer=True, zero_ok=True)
    if step_max < step:
        raise ValueError(f"step_max must be >= step, got step_max={step_max} < step={step}")
    _check_number("grow", grow)
    if grow < 1.0:
        raise ValueError(f"grow must be >= 1, got {grow}")
    for name, val in (("n_dense", n_dense), ("check_every", check_every), ("window", window),
                      ("gs_samples", gs_samples)):
        _check_number(name, val, integer=True)
    if watch not in ("path", "image"):
        raise ValueError(f"watch must be 'path' or 'image', got {watch!r}")
    if n_dense < 2:
        raise ValueError(f"n_dense must be >= 2 (one interior point per segment), got {n_dense}")
    for name, val in (("max_iter", max_iter), ("regrid_every", regrid_every),
                      ("regrid_until", regrid_until), ("seed", seed)):
        _check_number(name, val, integer=True, zero_ok=True)
    for name, val in (("energy_weight", energy_weight), ("peak_weight", peak_weight)):
        if not (isinstance(val, (int, float)) and not isinstance(val, bool) and 0.0 <= val <= 1.0):
            raise ValueError(f"{name} must be a number in [0, 1], got {val!r}")
    if energy_weight + peak_weight > 1.0:
        raise ValueError(f"energy_weight + peak_weight must be <= 1, got "
                         f"{energy_weight} + {peak_weight}")

    Bn, D = S.shape
    B, nd, m = n_images, n_dense, gs_samples
    U = _sample_directions(m, D, seed)
    frac = np.tile(np.linspace(0.0, 1.0, B), (Bn, 1))
    if fractions is not None:
        f = np.asarray(fractions, dtype=np.float64)
        if f.shape == (B,):
            f = np.broadcast_to(f, (Bn, B))
        if (f.shape != (Bn, B) or not np.all(np.isfinite(f)) or np.any(f[:, 0] != 0.0)
                or np.any(f[:, -1] != 1.0) or np.any(np.diff(f, axis=1) <= 0)):
            raise ValueError(f"fractions must be increasing from 0 to 1 with shape ({Bn}, {B}) "
                             f"or ({B},), got shape {np.shape(fractions)}")
        frac = f.copy()
    if path is None:
        X = linear_path(S, T, B)
    else:
        path = np.asarray(path, dtype=np.float64)
        path = np.broadcast_to(path, (Bn,) + path.shape) if path.ndim == 2 else path
        if path.ndim != 3 or path.shape[0] != Bn or path.shape[1] < 2 or path.shape[2] != D:
            raise ValueError(f"path must have shape ({Bn}, K, {D}) with K >= 2 (or (K, {D})), "
                             f"got {np.shape(path)}")
        if not (np.array_equal(path[:, 0], S) and np.array_equal(path[:, -1], T)):
            raise ValueError("path must start at start and end at end (its first and last "
                             "points are the band's fixed endpoints)")
        X = reparametrize(path, frac)
    # optimiser state per image: step and last perpendicular force
    h = np.full((Bn, B - 2), float(step))
    F_old = np.zeros((Bn, B - 2, D))
    h_par, g_old = np.full((Bn, B - 2), float(step)), np.zeros((Bn, B - 2))    # climbing
    c_old = np.full(Bn, -1, dtype=np.int64)
    ci = np.zeros(Bn, dtype=np.int64)                # each step's climber (image index, 0: none)
    step_bands, reparam_bands = _STEPS
    dr_len = np.zeros((Bn, B - 2))                  # length of each image's last step
    line_max = np.full(Bn, np.inf)                  # the initial path's maximum (set at it 0)
    done, converged = np.zeros(Bn, bool), np.zeros(Bn, bool)
    iters = np.zeros(Bn, int)
    hist = np.full((Bn, window), np.nan)            # peak energies of the last checks (ring)
    n_hist = np.zeros(Bn, int)
    peak_E, peak_j, peak_t = np.full(Bn, np.nan), np.zeros(Bn, int), np.zeros(Bn)
    b_change, p_meas = np.full(Bn, np.inf), np.full(Bn, np.nan)
    gs_want = np.zeros(Bn, bool)                    # sample the peak images at the next check
    gs_seg = np.full(Bn, -1)
    gs_climb = np.zeros(Bn, bool)                   # ... at the climbing image
    Ed_last = np.zeros((Bn, B - 1, nd - 1))
    stale = np.zeros(Bn, bool)                      # Ed_last not at the current images
    E, G = np.zeros((Bn, B)), np.zeros((Bn, B, D))
    pre = _ClimbPreconditioner(climb_hessian, Bn, B, D, precond_floor, precond_every,
                               precond_width) \
        if climb and climb_hessian is not None else None

    def frozen_at(it):
        return regrid_every == 0 or it > regrid_until

    def move(rows, c, climbing, reparam, Gm):       # bands rows: a step (then reparametrise)
        step_bands(X, E, Gm, rows, h, F_old, dr_len, h_par, g_old, c_old, line_max, climbing,
                   float(grow), float(step), float(step_max), float(max_step),
                   float(first_move), c)
        if reparam:
            reparam_bands(X, rows, frac, c)

    def regrid_move(rows, c):
        reparam_bands(X, rows, frac, c)

    # the band arithmetic in two threads, each on half of the bands, as in relunet.neb (the
    # kernels release the GIL and a band's bits do not depend on the thread): between two
    # energy calls the machine's second core is otherwise idle (the process's pool of the
    # energy kernels' threads, relunet.fast.stack.thread_pool)
    pool = thread_pool(1) if Bn >= 8 and numba.get_num_threads() > 1 else None

    for it in range(max_iter + 1):
        a = np.flatnonzero(~done)
        if a.size == 0:
            break
        if it > 0:
            # ---- one step per image along its perpendicular force, then reparametrise
            regrid = regrid_every > 0 and it % regrid_every == 0 and it <= regrid_until
            climbing = climb and frozen_at(it)
            # the climbing images' perpendicular gradients preconditioned (here, in this
            # thread: the Hessians use the energy kernels' threads)
            Gm = G
            if pre is not None and climbing:
                Gm, (cb, ci_) = pre(X, E, G, a, line_max)
                # an image whose metric changes starts its step rule afresh, as at its first
                # step (a step grown in one metric is not safe in the other: an image that
                # stopped climbing, h grown to ~0.5 on preconditioned forces, was thrown up a
                # wall of curvature 1e4 by its plain force, to losses of 1e4)
                h[cb, ci_ - 1], dr_len[cb, ci_ - 1], F_old[cb, ci_ - 1] = float(step), 0.0, 0.0
            _split(pool, move, a, ci, climbing, not regrid, Gm)
            if regrid:                              # the grid from the moved images
                frac[a] = _equidistribute(X[a], E[a], Ed_last[a], energy_weight, peak_weight)
                _split(pool, regrid_move, a, ci)
            if regrid:                              # fresh steps and window on a new grid
                h[a] = float(step)                  # (the Lipschitz estimate is kept)
                n_hist[a], gs_want[a] = 0, False
                hist[a] = np.nan
        # ---- ONE efun call: images, dense points of checked bands, peak samples
        check = it % check_every == 0 or it == max_iter
        parts = [X[a].reshape(-1, D) if it == 0 else X[a, 1:-1].reshape(-1, D)]
        if check:
            # the dense profile where it is read: before the grid is frozen (the regrid
            # reads it), when the window watches the path maximum, and for bands without a
            # climbing image (the stationarity test samples their peak segment); the
            # others' is left to the final bookkeeping (the same points, the same bits)
            if it == 0 or not frozen_at(it) or watch == "path" or not climb:
                dsel = np.ones(a.size, bool)
            else:
                dsel = ~gs_climb[a]
            a_d = a[dsel]
            parts.append(_dense_points(X[a_d], nd).reshape(-1, D))
            g_b = a[gs_want[a]]
            # a climbing image: full ball, full gradient (zero tangent); otherwise the
            # images bounding the peak segment, in their perpendicular hyperplanes
            mode = gs_climb[g_b]
            pk = np.stack([gs_seg[g_b], np.where(mode, gs_seg[g_b], gs_seg[g_b] + 1)], axis=1)
            g_tau = _central_tangents(X[g_b])[np.arange(g_b.size)[:, None],
                                              np.clip(pk - 1, 0, B - 3)]
            g_tau = np.where(mode[:, None, None], 0.0, g_tau).reshape(-1, D)
            pk_ok = (pk >= 1) & (pk <= B - 2)
            g_pts = X[g_b[:, None], pk]                                    # (ng, 2, D)
            if g_b.size:
                parts.append(_sample_points(g_pts.reshape(-1, D), g_tau, gs_radius,
                                            U).reshape(-1, D))
        Eall, Gall = _evaluate(efun, np.concatenate(parts) if len(parts) > 1 else parts[0])
        k = parts[0].shape[0]
        sel = _rows(a, Bn)                          # a view when every band is active
        if it == 0:
            E[sel], G[sel] = Eall[:k].reshape(-1, B), Gall[:k].reshape(-1, B, D)
        else:
            E[sel, 1:-1], G[sel, 1:-1] = Eall[:k].reshape(-1, B - 2), \
                Gall[:k].reshape(-1, B - 2, D)
        # the new rows suffice: the endpoints were checked at iteration 0, where a band
        # with a non-finite one stopped
        bad = ~(np.isfinite(Eall[:k]).reshape(a.size, -1).all(1)
                & np.isfinite(Gall[:k]).reshape(a.size, -1).all(1))
        if check:
            kd = parts[1].shape[0]
            Ed = Eall[k:k + kd].reshape(a_d.size, B - 1, nd - 1)
            top = np.argmax(E[a, 1:-1], axis=1) + 1                    # highest movable image
            ra = np.arange(a.size)
            interior = (E[a][ra, top] >= E[a][ra, top - 1]) & (E[a][ra, top] >= E[a][ra, top + 1])
            late = ~dsel & ~(climb & interior)
            if late.any():                          # a climber is gone: its band's profile is
                a_l = a[late]                       # read after all (a call of its own, rare)
                Ed_l = _evaluate(efun, _dense_points(X[a_l], nd).reshape(-1, D))[0]
                Ed_all = np.empty((a.size, B - 1, nd - 1))
                Ed_all[dsel], Ed_all[late] = Ed, Ed_l.reshape(a_l.size, B - 1, nd - 1)
                dsel = dsel | late
                a_d, Ed = a[dsel], Ed_all[dsel]
            Ed_last[a_d] = Ed
            stale[a] = ~dsel
            bad[dsel] |= ~np.isfinite(Ed).all((1, 2))
            new_j = peak_j[a].copy()
            if a_d.size:
                _, prof = _profile(X[a_d], E[a_d], Ed)
                idx = np.argmax(prof, axis=1)
                peak_E[a_d] = prof[np.arange(a_d.size), idx]
                new_j[dsel] = np.minimum(idx // nd, B - 2)
                peak_t[a_d] = np.where(idx // nd > B - 2, 1.0, (idx % nd) / nd)
            if it == 0:
                line_max[a] = peak_E[a]
            # the window: only on a frozen grid
            if frozen_at(it):
                hist[a, n_hist[a] % window] = peak_E[a] if watch == "path" else E[a].max(axis=1)
                n_hist[a] += 1
            full_w = n_hist[a] >= window              # then every entry is filled
            b_change[a] = np.inf
            if full_w.any():
                hw = hist[a[full_w]]
                b_change[a[full_w]] = hw.max(axis=1) - hw.min(axis=1)
            e_ok = full_w & (b_change[a] <= etol)
            # gradient sampling at the peak images requested at the previous check
            if g_b.size:
                Gs = Gall[k + kd:].reshape(g_b.size * 2, m, D)
                G0 = G[g_b[:, None], pk].reshape(-1, D)
                rho = _sampled_measure(G0, Gs, g_tau).reshape(g_b.size, 2)
                rho = np.where(pk_ok, rho, 0.0).max(axis=1)             # fixed endpoints: no force
                p_meas[g_b] = rho
                pos = np.searchsorted(a, g_b)
                same = np.where(mode, top[pos], new_j[pos]) == gs_seg[g_b]
                ok = e_ok[pos] & same & (rho <= gs_tol)
                converged[g_b[ok]] = True
                # stable but not stationary: the steps may have collapsed (halved at every
                # turn) on a slope the samples see; restart them
                fail = g_b[~ok & (rho > gs_tol)]
                h[fail] = np.maximum(h[fail], float(step))
                h_par[fail] = np.maximum(h_par[fail], float(step))
            peak_j[a] = new_j
            gs_want[a] = e_ok & ~converged[a]
            gs_climb[a] = climb & interior
            gs_seg[a] = np.where(gs_climb[a], top, new_j)
        if bad.any():
            warnings.warn(f"{bad.sum()} band(s) met non-finite energies or forces and were "
                          f"stopped (converged=False)", RuntimeWarning, stacklevel=2)
            converged[a[bad]] = False
        stop = converged[a] | bad | (it == max_iter)
        done[a[stop]] = True
        iters[a[stop]] = it

    # final bookkeeping: profile of every band at its final images, the peak
    # located to within (B - 1) / (n_dense 16^3) of the band's parameter, forces
    st = np.flatnonzero(stale)
    if st.size:                                     # the dense points skipped at the last check
        Ed_last[st] = _evaluate(efun, _dense_points(X[st], nd).reshape(-1, D))[0].reshape(
            st.size, B - 1, nd - 1)
    dist, prof = _profile(X, E, Ed_last)
    u, peak_E = _refine_peak(efun, X, dist, prof, nd)
    jj = np.minimum(np.floor(u).astype(int), B - 2)
    peak_t = u - jj
    tau = _central_tangents(X)
    Gm = G[:, 1:-1]
    Fp = Gm - _dot(Gm, tau)[..., None] * tau
    seg = np.diff(X, axis=1)
    r = np.arange(Bn)
    point = X[r, jj] + peak_t[:, None] * seg[r, jj]
    s_img = _arc_length(X)
    pdist = s_img[r, jj] + peak_t * np.sqrt(_dot(seg, seg))[r, jj]
    return StringResult(images=X, energies=E, distance=s_img, fractions=frac, converged=converged,
                        iterations=iters, peak_energy=peak_E, peak_segment=jj, peak_t=peak_t,
                        peak_distance=pdist, peak_point=point, barrier_change=b_change,
                        peak_measure=p_meas, fperp=np.sqrt(_dot(Fp, Fp)), dense_distance=dist,
                        dense_energies=prof, step=h.copy())


@dataclass
class SegmentRefinement:
    """Path maxima of relaxed bands with their highest segments relaxed again
    (:func:`refine_segments`). Bn bands of B images; k segments refined."""

    peak: np.ndarray             # (Bn,) the highest energy on the refined path
    segment_max: np.ndarray      # (Bn, B-1) each segment's maximum: its chord's, or its own
    #                              string's where that is lower
    segments: np.ndarray         # (k, 2) (band, segment j) pairs relaxed as strings of their own
    sub: StringResult | None     # their strings, from image j to image j + 1 (None: k = 0)


def refine_segments(efun, res: StringResult, n_images: int = 5, max_iter: int = 500,
                    tol: float = 1e-4, **kw) -> SegmentRefinement:
    """Tighter upper bounds on the barriers of relaxed bands: their highest segments
    relaxed as strings of their own.

    A band's path maximum is read on the straight segments between its images. Where
    two relaxed images sit in a curved valley, the chord between them cuts across its
    wall and the energy on it rises above both images: on Fig. 4's bands, 878 of 3,100
    segments rose above their band's highest image, and 59 of 100 bands peaked above
    var(t) only there. This is the refinement of AutoNEB (Kolsbjerg, Groves & Hammer,
    J. Chem. Phys. 145, 094107 (2016): new images where the band is under-resolved),
    done afterwards and locally: every segment whose maximum exceeds both its images
    and the band's highest image by more than ``tol`` becomes a string of ``n_images``
    from image j to image j + 1 (started on the chord, no climbing image, the grid
    uniform), relaxed for at most ``max_iter`` iterations in one batch; each segment
    keeps the lower of the two maxima (either is the maximum of an actual path between
    the same two images, so the band with its segments replaced is a path, and its
    maximum an upper bound on the barrier, converged or not). The band itself is not
    changed.

    res : a :class:`StringResult` of Bn bands (its images, image energies and dense
        profile; the segment that holds ``peak_energy`` keeps that zoomed value where
        it is not refined). ``kw`` : further arguments of :func:`string_method`
        (``first_move``, ``step``, ...).
    """
    _check_number("n_images", n_images, integer=True)
    _check_number("max_iter", max_iter, integer=True)
    _check_number("tol", tol)
    if n_images < 3:
        raise ValueError(f"n_images must be >= 3 (a movable image between the two ends), "
                         f"got {n_images}")
    X, E, prof = res.images, res.energies, res.dense_energies
    if X.ndim != 3 or E.shape != X.shape[:2] or prof.ndim != 2:
        raise ValueError(f"res must hold Bn bands (images (Bn, B, D)); got images of shape "
                         f"{np.shape(X)} (squeezed results: pass the batch)")
    n, B = E.shape
    nd = (prof.shape[1] - 1) // (B - 1)
    seg = np.concatenate([prof[:, :-1].reshape(n, B - 1, nd), prof[:, nd::nd, None]], axis=2)
    smax = seg.max(axis=2)
    r = np.arange(n)
    smax[r, res.peak_segment] = np.maximum(smax[r, res.peak_segment], res.peak_energy)
    rise = (smax > np.maximum(E[:, :-1], E[:, 1:]) + tol) & (smax > E.max(axis=1)[:, None] + tol)
    off = np.argwhere(rise)
    out, sub = smax.copy(), None
    if len(off):
        sub = string_method(efun, X[off[:, 0], off[:, 1]], X[off[:, 0], off[:, 1] + 1],
                            n_images=n_images, max_iter=max_iter, n_dense=nd, regrid_every=0,
                            **kw)
        out[off[:, 0], off[:, 1]] = np.minimum(smax[off[:, 0], off[:, 1]], sub.peak_energy)
    return SegmentRefinement(peak=out.max(axis=1), segment_max=out, segments=off, sub=sub)


class _ClimbPreconditioner:
    """The perpendicular gradients of the climbing image and its neighbours in the
    metric of |H|_mu.

    Called before each step on a frozen grid: for every band whose highest movable
    image c will climb (the kernel's own test: a maximum along the band, not above
    the initial path's maximum), it returns a copy of G in which the gradient of
    each movable image i with |i - c| <= w, g = (g . tau) tau + q with q its part
    across its tangent tau, is replaced by (g . tau) tau + P V diag(1 / max(|lambda|,
    mu)) V^T q, with lambda, V the eigenpairs of the Hessian at that image. The
    kernel's step rule (the bold driver and the Lipschitz cap) then acts on the
    preconditioned force, whose stiff components no longer collapse the step. A
    fixed point still has q = 0 (the matrix is positive definite on the
    hyperplane), so the band's fixed points are unchanged; only the way there
    changes. The neighbours (w >= 1) keep the metric when the climber moves to one
    of them, which happens often between images of nearly equal energy.

    A band's Hessians are taken, one per slot i - c + w, at its first climber and
    again every ``every`` steps on which it has one, wherever its climber then is: a
    metric taken at a neighbouring image is still positive definite, and
    recomputing at every change of climber cost Fig. 4 three times the Hessians for
    no more converged bands (measured on 20 bands: 9 converged against 10).
    """

    def __init__(self, hfun, Bn, B, D, mu, every, width):
        self.hfun, self.mu, self.every, self.w = hfun, float(mu), int(every), int(width)
        S = 2 * self.w + 1
        # |H|_mu^-1 = I / mu + sum_j w_j u_j u_j^T over the n eigenvectors u_j with
        # |lambda_j| > mu, w_j = 1 / |lambda_j| - 1 / mu: per band and slot, rows u_j
        # first (on the networks' loss a median 3 of 136 curvatures exceed 1 at the
        # climbing images, at most 48: the full matrices were too slow to read back)
        self.U = np.zeros((Bn, S, D, D))
        self.wt = np.zeros((Bn, S, D))
        self.n = np.zeros((Bn, S), np.int64)
        self.has = np.zeros(Bn, bool)
        self.age = np.zeros(Bn, int)
        self.inwin = np.zeros((Bn, B), bool)     # the images preconditioned at the last step
        self.n_hessians = 0

    def __call__(self, X, E, G, a, line_max):
        """(G with the windows' rows preconditioned, (bands, images) whose metric changed
        at this step: images entering or leaving the window, whose step rule restarts)."""
        B = X.shape[1]
        r = np.arange(a.size)
        c = np.argmax(E[a, 1:-1], axis=1) + 1                 # the image that may climb
        Ea = E[a]
        ok = (Ea[r, c] >= Ea[r, c - 1]) & (Ea[r, c] >= Ea[r, c + 1]) & (Ea[r, c] <= line_max[a])
        S = 2 * self.w + 1
        img = c[:, None] + np.arange(S)[None, :] - self.w      # (n, S) the window's images
        valid = ok[:, None] & (img >= 1) & (img <= B - 2)
        win = np.zeros((a.size, B), bool)
        rr, kk = np.nonzero(valid)
        win[rr, img[rr, kk]] = True
        changed = np.nonzero(win != self.inwin[a])
        changed = (a[changed[0]], changed[1])
        self.inwin[a] = win
        if not ok.any():
            return G, changed
        due = ok & (~self.has[a] | (self.age[a] >= self.every))
        self.age[a[ok]] += 1
        dr, dk = np.nonzero(valid & due[:, None])
        if dr.size:
            H = np.asarray(self.hfun(X[a[dr], img[dr, dk]]), dtype=np.float64)
            H = 0.5 * (H + np.transpose(H, (0, 2, 1)))
            lam, V = np.empty(H.shape[:2]), np.empty(H.shape)
            with _one_blas_thread():        # small matrices: one thread, the same bits
                for k in range(dr.size):
                    lam[k], V[k] = scipy.linalg.eigh(H[k], driver="evd", check_finite=False)
            big = np.abs(lam) > self.mu
            order = np.argsort(~big, axis=1, kind="stable")       # the large ones first
            rows = np.arange(dr.size)[:, None]
            self.U[a[dr], dk] = np.transpose(V, (0, 2, 1))[rows, order]
            self.wt[a[dr], dk] = np.where(big, 1.0 / np.where(big, np.abs(lam), 1.0)
                                          - 1.0 / self.mu, 0.0)[rows, order]
            self.n[a[dr], dk] = big.sum(axis=1)
            self.n_hessians += dr.size
        bd = a[due]
        self.has[bd], self.age[bd] = True, 0
        vr, vk = np.nonzero(valid)
        b, i = a[vr], img[vr, vk]
        ub, inv = np.unique(b, return_inverse=True)             # each band's tangents once
        tau = _central_tangents(X[ub])[inv, i - 1]
        g = G[b, i]
        gp = _dot(g, tau)
        q = g - gp[:, None] * tau
        p = np.empty_like(q)
        _apply_metric(self.U, self.wt, self.n, 1.0 / self.mu, b, vk, q, p)
        p -= _dot(p, tau)[:, None] * tau
        Gm = G.copy()
        Gm[b, i] = p + gp[:, None] * tau
        return Gm, changed


def _reparametrize_split(X, frac, c):
    """Reparametrise each band on both sides of its image c (n,), which stays put
    (c <= 0: no such image, the band is reparametrised as a whole):
    images 0..c at fractions frac[:c+1] / frac[c] of the part up to it, images
    c..B-1 likewise on the rest. All bands at once: the targets are arc
    lengths along the whole polyline (s_c f_i / f_c before the climber,
    s_c + (s_end - s_c) (f_i - f_c) / (1 - f_c) after it)."""
    n, B, D = X.shape
    c = np.asarray(c)
    if np.all(c <= 0):
        return reparametrize(X, frac)
    r = np.arange(n)
    s = _arc_length(X)                                  # (n, B)
    ci = np.where(c > 0, c, B - 1)                      # no climber: one part, split at the end
    fc, sc, se = frac[r, ci][:, None], s[r, ci][:, None], s[:, -1:]
    before = np.arange(B)[None, :] <= ci[:, None]
    after_w = np.where(fc < 1.0, (frac - fc) / np.where(fc < 1.0, 1.0 - fc, 1.0), 0.0)
    target = np.where(before, frac / fc * sc, sc + after_w * (se - sc))
    j = np.clip((s[:, None, 1:-1] <= target[:, :, None]).sum(-1), 0, B - 2)
    s0, s1 = np.take_along_axis(s, j, 1), np.take_along_axis(s, j + 1, 1)
    w = np.clip((target - s0) / np.where(s1 > s0, s1 - s0, 1.0), 0.0, 1.0)
    X0 = _gather(X, j)
    Y = X0 + w[..., None] * (_gather(X, j + 1) - X0)
    Y[:, 0], Y[:, -1] = X[:, 0], X[:, -1]
    Y[r, ci] = X[r, ci]                                 # the climber stays where it is
    return Y


# =============================================================================
# One iteration's band arithmetic: the NumPy twin and the numba kernels
# =============================================================================
def _step_numpy(X, E, G, rows, h, F_old, dr_len, h_par, g_old, c_old, line_max, climbing,
                grow, step, step_max, max_step, first_move, ci):
    """One step of the movable images of bands ``rows`` along their perpendicular
    forces (the step rule of the module docstring; with ``climbing``, the highest
    image also climbs), in place in X; the optimiser state h, F_old, dr_len, h_par,
    g_old, c_old (indexed by band) is updated, and ci[j] receives the image index
    of band rows[j]'s climber (0: none) for :func:`_reparam_numpy`."""
    a = rows
    tau = _central_tangents(X[a])
    Ga = G[a, 1:-1]
    g_par = _dot(Ga, tau)
    F = g_par[..., None] * tau - Ga
    ha = h[a]
    ha = np.where(_dot(F, F_old[a]) < 0.0, 0.5 * ha, np.minimum(grow * ha, step_max))
    # and never above 1.5 / L, L = |F - F_old| / |last step| the force's local
    # Lipschitz estimate: the sign test above watches the whole force, which the weak
    # directions dominate, so a step too long for a stiff one could grow unchecked
    # and fling images up the walls (seen on network bands)
    dF = np.sqrt(_dot(F - F_old[a], F - F_old[a]))
    lip = np.where(dF > 0, 1.5 * dr_len[a] / np.where(dF > 0, dF, 1.0), np.inf)
    # no estimate yet (the first step): a move of at most ``first_move``
    fn = np.sqrt(_dot(F, F))
    first = np.where(fn > 0, first_move / np.where(fn > 0, fn, 1.0), np.inf)
    ha = np.where(dr_len[a] > 0, np.minimum(ha, lip), np.minimum(ha, first))
    h[a], F_old[a] = ha, F
    dr = ha[..., None] * F
    c = np.full(a.size, -1)
    if climbing:        # the highest image also climbs: + (G.tau) tau, own step
        r = np.arange(a.size)
        c = np.argmax(E[a, 1:-1], axis=1)
        Ea = E[a]
        # only a maximum along the band climbs (not an image below a higher endpoint),
        # and only while it is below the initial path's maximum: the minimax barrier
        # is at most the maximum along ANY path between the ends, so a climber above
        # it has left the valley (without this bound a climber on a ridge that rises
        # without end dragged its band far up it: seen on network bands)
        ok = (Ea[r, c + 1] >= Ea[r, c]) & (Ea[r, c + 1] >= Ea[r, c + 2]) & \
            (Ea[r, c + 1] <= line_max[a])
        gp, hp = g_par[r, c], h_par[a, c]
        hp = np.where(gp * g_old[a, c] < 0.0, 0.5 * hp, np.minimum(grow * hp, step_max))
        hp = np.where(c == c_old[a], hp, float(step))            # a new climber
        h_par[a, c], g_old[a, c], c_old[a] = hp, gp, np.where(ok, c, -1)
        # at most half way to the neighbour it moves towards: it stays inside the band
        seg = np.sqrt(_dot(np.diff(X[a], axis=1), np.diff(X[a], axis=1)))
        room = 0.5 * np.where(gp > 0, seg[r, c + 1], seg[r, c])
        move = np.clip(hp * gp, -room, room)
        dr[r, c] += np.where(ok, move, 0.0)[:, None] * tau[r, c]
        c = np.where(ok, c, -1)
    Xa = X[a]
    Xa[:, 1:-1] += _cap(dr, max_step)
    X[a] = Xa
    dr_len[a] = np.sqrt(_dot(dr, dr))
    ci[:a.size] = c + 1


def _split(pool, fn, a, ci, *args):
    """fn(rows, ci rows, *args) on the bands a: the first half in the pool's thread,
    the rest here (all here without a pool or with fewer than 8 bands, where handing
    work to the thread costs about what it saves)."""
    h = a.size // 2
    if pool is None or a.size < 8:
        return fn(a, ci, *args)
    other = pool.submit(fn, a[:h], ci[:h], *args)
    fn(a[h:], ci[h:a.size], *args)
    other.result()


def _reparam_numpy(X, rows, frac, ci):
    """Bands ``rows`` of X put back on their grids frac (indexed by band), in place:
    :func:`reparametrize`, or :func:`_reparametrize_split` around image ci[j] > 0."""
    X[rows] = _reparametrize_split(X[rows], frac[rows], ci[:rows.size])


# The NumPy functions above are the readable reference, held to these kernels by
# the tests; :func:`string_method` runs the kernels. As in :mod:`relunet.neb`
# (whose ``_vdot`` they use): one band at a time in a sequential loop of its own,
# so that a band's bits do not depend on the batch, serial, sums over D in the
# fixed order of ``_vdot`` (they differ from NumPy's einsum in the last bits), the
# element-wise equations those of the twin, term for term.
@njit(cache=True, nogil=True, fastmath=STRICT)
def _step_kernel(X, E, G, rows, h, F_old, dr_len, h_par, g_old, c_old, line_max, climbing,
                 grow, step, step_max, max_step, first_move, ci):
    """:func:`_step_numpy` (same arguments, same outputs), band by band."""
    B, D = X.shape[1], X.shape[2]
    dX, seg = np.empty((B - 1, D)), np.empty(B - 1)
    tau, dr = np.empty((B - 2, D)), np.empty((B - 2, D))
    g_par, F, t = np.empty(B - 2), np.empty(D), np.empty(D)
    for j in range(rows.size):
        b = rows[j]
        for i in range(B - 1):                      # segments R_{i+1} - R_i, their lengths
            for d in range(D):
                dX[i, d] = X[b, i + 1, d] - X[b, i, d]
            seg[i] = np.sqrt(_vdot(dX[i], dX[i]))
        for k in range(B - 2):                      # movable image i = k + 1
            hm, hp = seg[k], seg[k + 1]             # central tangent on the non-uniform grid
            wp, wm = 1.0, 1.0
            if hp > 0.0 and hm > 0.0:
                wp, wm = hm / hp, hp / hm
            for d in range(D):
                t[d] = wp * dX[k + 1, d] + wm * dX[k, d]
            norm = np.sqrt(_vdot(t, t))
            if not norm > 0.0:
                norm = 1.0
            for d in range(D):
                tau[k, d] = t[d] / norm
            gp = _vdot(G[b, k + 1], tau[k])
            g_par[k] = gp
            for d in range(D):
                F[d] = gp * tau[k, d] - G[b, k + 1, d]
            hk = h[b, k]
            if _vdot(F, F_old[b, k]) < 0.0:         # the force turned back: halve
                hk = 0.5 * hk
            else:
                hk = min(grow * hk, step_max)
            for d in range(D):                      # Lipschitz cap 1.5 |last step| / |dF|
                t[d] = F[d] - F_old[b, k, d]
            dF = np.sqrt(_vdot(t, t))
            if dr_len[b, k] > 0.0:
                lip = 1.5 * dr_len[b, k] / dF if dF > 0.0 else np.inf
                hk = min(hk, lip)
            else:                                   # the first step: at most first_move
                fn = np.sqrt(_vdot(F, F))
                if fn > 0.0:
                    hk = min(hk, first_move / fn)
            h[b, k] = hk
            for d in range(D):
                F_old[b, k, d] = F[d]
                dr[k, d] = hk * F[d]
        c_img = 0
        if climbing:                                # np.argmax: first maximum, first NaN
            c, best = 0, E[b, 1]
            if best == best:
                for k in range(1, B - 2):
                    e = E[b, k + 1]
                    if e != e:
                        c = k
                        break
                    if e > best:
                        c, best = k, e
            Ec = E[b, c + 1]
            ok = Ec >= E[b, c] and Ec >= E[b, c + 2] and Ec <= line_max[b]
            gp = g_par[c]
            hp = h_par[b, c]
            if gp * g_old[b, c] < 0.0:
                hp = 0.5 * hp
            else:
                hp = min(grow * hp, step_max)
            if c != c_old[b]:                       # a new climber
                hp = step
            h_par[b, c], g_old[b, c] = hp, gp
            c_old[b] = c if ok else -1
            room = 0.5 * (seg[c + 1] if gp > 0.0 else seg[c])
            move = min(max(hp * gp, -room), room) if ok else 0.0
            for d in range(D):
                dr[c, d] += move * tau[c, d]
            if ok:
                c_img = c + 1
        ci[j] = c_img
        for k in range(B - 2):                      # cap each image's step, move it
            norm = np.sqrt(_vdot(dr[k], dr[k]))
            if norm > max_step:
                scale = max_step / norm
                for d in range(D):
                    dr[k, d] *= scale
                norm = np.sqrt(_vdot(dr[k], dr[k]))
            for d in range(D):
                X[b, k + 1, d] += dr[k, d]
            dr_len[b, k] = norm                     # |dr| after the cap


@njit(cache=True, nogil=True, fastmath=STRICT)
def _reparam_kernel(X, rows, frac, ci):
    """:func:`_reparam_numpy` (same arguments, same outputs), band by band."""
    B, D = X.shape[1], X.shape[2]
    Y, s, tmp = np.empty((B, D)), np.empty(B), np.empty(D)
    for j in range(rows.size):
        b = rows[j]
        s[0] = 0.0
        for i in range(B):
            for d in range(D):
                Y[i, d] = X[b, i, d]
        for i in range(B - 1):                      # cumulative arc length
            for d in range(D):
                tmp[d] = Y[i + 1, d] - Y[i, d]
            s[i + 1] = s[i] + np.sqrt(_vdot(tmp, tmp))
        c = ci[j] if ci[j] > 0 else B - 1           # no climber: one part, split at the end
        fc, sc, se = frac[b, c], s[c], s[B - 1]
        for i in range(1, B - 1):
            if i == c:                              # the climber stays where it is
                continue
            f = frac[b, i]
            if i <= c:
                target = f / fc * sc
            else:
                aw = (f - fc) / (1.0 - fc) if fc < 1.0 else 0.0
                target = sc + aw * (se - sc)
            n = 0                                   # the segment holding the target
            for k in range(1, B - 1):
                if s[k] <= target:
                    n += 1
            n = min(max(n, 0), B - 2)
            s0, s1 = s[n], s[n + 1]
            w = (target - s0) / (s1 - s0 if s1 > s0 else 1.0)
            w = min(max(w, 0.0), 1.0)
            for d in range(D):
                X[b, i, d] = Y[n, d] + w * (Y[n + 1, d] - Y[n, d])


_STEPS = (_step_kernel, _reparam_kernel)    #: what :func:`string_method` runs; tests swap
_NUMPY_STEPS = (_step_numpy, _reparam_numpy)


def _polyline_points(X, u):
    """Points at band parameters u (n, k) in [0, B-1] (u = j + t: segment j, fraction t)."""
    B = X.shape[1]
    j = np.clip(np.floor(u).astype(int), 0, B - 2)
    t = u - j
    X0 = _gather(X, j)
    return X0 + t[..., None] * (_gather(X, j + 1) - X0)


def _refine_peak(efun, X, dist, prof, n_dense, rounds: int = 3, k: int = 33):
    """Zoom in on the highest point of each band's polyline: start from the best
    dense point, sample k points within +-1 dense spacing, keep the best, shrink
    the bracket 16-fold, ``rounds`` times (one efun call per round). Returns the
    band parameter u (n,) and the energy there (n,), never below the dense max."""
    n, B, D = X.shape
    i = np.argmax(prof, axis=1)
    u, best = i / n_dense, prof[np.arange(n), i]
    half = 1.0 / n_dense
    for _ in range(rounds):
        cand = np.clip(u[:, None] + np.linspace(-half, half, k)[None, :], 0.0, B - 1.0)
        Ec, _ = _evaluate(efun, _polyline_points(X, cand).reshape(-1, D))
        Ec = Ec.reshape(n, k)
        j = np.argmax(Ec, axis=1)
        better = Ec[np.arange(n), j] > best
        u = np.where(better, cand[np.arange(n), j], u)
        best = np.where(better, Ec[np.arange(n), j], best)
        half /= 16.0
    return u, best
