"""Quench: descend from any networks to certified stationary points of the loss.

Training stops after a fixed step budget, not at a critical point: the
students of Figs. 2-3 still have gradient norms of ~1e-2 and dozens of
negative Hessian eigenvalues. A smooth optimiser cannot finish the job,
because the loss is only piecewise smooth (:mod:`relunet.kinks`): near a
minimum that sits on kinks, the gradient jumps and never becomes small, and
quasi-Newton line searches stall (Lewis & Overton 2013, Math. Program. 141).
In energy-landscape practice a *quench* is a descent to the nearest minimum
(pele's ``lbfgs_cpp``, GMIN and OPTIM: Wales, "Energy Landscapes", CUP 2003);
here it also hands back a certificate that a reader can check. (For an energy
given only as a function of points, without a network's kinks to enumerate,
:mod:`relunet.gradient_sampling` descends and certifies from sampled gradients.)

Stage 1: the descent
--------------------
The trained students are not near a minimum: they sit on long, weakly curved
descents (dozens of negative curvatures of order -1e-2) that training has not
finished. Newton steps on the piecewise model crawl there (each step is held
back by the kinks it would cross; benchmarks/bench_quench.py times both), while
a quasi-Newton method crosses kinks at the cost of one gradient per trial
step. So a quench first runs :func:`descend`, as pele and GMIN quench with
L-BFGS, until it stalls at a kink, stagnates or spends its budget
(``descent_iter``); the second stage finishes from there. The method is full
BFGS with a weak-Wolfe line search (:mod:`relunet.bfgs`; Lewis & Overton 2013,
Math. Program. 141:135), which keeps descending along kinks where the
limited-memory, backtracking :func:`lbfgs` (``descent="lbfgs"``) stalls: on
the 150 students of the default run (10,000 steps, then 30 Newton
iterations) it ended lower on 111 and the quench certified 29 of them against
11 after L-BFGS.

Stage 2: Newton steps on the piecewise model of the loss, and along the kinks
------------------------------------------------------------------------------
Near a kink minimum (the Clarke measure over the kinks within 1e-6 of 0 at
most 1e-3) each iteration first tries the SQP step of :func:`_manifold_step`:
Newton on the loss restricted to the kinks the point sits on, the kinks held at
0 to second order; it converges quadratically where the model below crawls.
Elsewhere, or where that step does not lower the loss, the piecewise model:

Each network is treated separately (the loop is batched: all networks that
are still moving share one call of the exact-Hessian kernel per iteration;
given enough work, chunks of networks run in worker processes,
:mod:`relunet.procpool`, with the same results bit for bit). At the current
point w:

1. *Near kinks.* The pre-activations within ``delta`` of their kink are
   gathered (:func:`relunet.kinks.vertices`): kinks that switch together
   (parallel normals) form families, and each family is one kink of the
   model, with its jump (the coupling of kinks of one point in several
   layers is left to the acceptance test; the certificate enumerates it).
   The base is "all of them off" (loss L0, gradient g0).
2. *Model.* With H the exact Hessian of the current piece
   (:mod:`relunet.hessian`) and mu >= 0 a damping,

       m(d) = L0 + g0.d + d.(H + mu I) d / 2 + sum_families max(0, J_f.d + off_f),

   J_f, off_f the gradient and value changes when family f switches on,
   over the V-shaped kinks (the loss rises on both sides; the kinks a descent
   method piles up on), where the maximum is exact to first order. A ridge
   (the loss falls on both sides) keeps the piece of the side it is on: an
   upper bound that is tight at d = 0, so a decrease of the model is a
   decrease of the loss to first order (max(0, .) over a ridge would not be
   tight there, and its steps climbed; measured). This is the convex
   piecewise model of bundle and prox-linear methods (Lewis & Wright 2016,
   Math. Program. 158:501), with the exact
   Hessian of the piece as its curvature (the VU idea of Mifflin &
   Sagastizabal 2005, Math. Program. 104:583: Newton along the kinks, a
   sharp model across them).
3. *Step.* Writing max(0, a) as max over u in [0, 1] of u a, the minimiser
   for fixed weights u is d(u) = -(H + mu)^-1 (g0 + J u), and u solves the
   concave dual, a bounded least-squares problem (BVLS, exact;
   :func:`relunet.kinks.hull_qp`). A kink whose weight ends strictly inside
   (0, 1) is held at z = 0 by the step, so Newton converges along the kink
   manifold; the eigen-decomposition of H makes mu >= -lambda_min cheap, so
   the step follows negative curvature out of saddles.
4. *Acceptance.* Levenberg-Marquardt: the step is taken only if the true loss
   does not increase, and mu shrinks or grows with the ratio of actual to
   predicted decrease. The loss never increases (beyond 4 ulp of rounding
   noise in the last, ~1e-18 steps, where a decrease is invisible in L
   itself). If no damping gives a decrease (the model misses kinks that
   interact), one gradient-sampling step is tried (Burke, Lewis & Overton
   2005: the shortest vector in the hull of gradients sampled within 1e-7,
   halving steps along it); a network that cannot descend that way either is
   reported as stalled. After such a fallback the damping stays where the failed
   tries left it: a network whose model keeps failing (it crawls along kinks the
   model misses) then pays one trial step per iteration instead of twelve. Measured
   on the 300 momentum students of the default run after their BFGS descent:
   restarting the ramp at mu <= 1 took 29-32 s for 106 certified, keeping it 24 s for
   the same 106 (one network with 297 near kinks had spent 0.35 s per iteration in
   twelve bounded least-squares solves).

Stage 3: the polish, onto the kinks a point nearly sits on
----------------------------------------------------------
The Newton stage leaves many points Clarke stationary to 1e-10 or better once
every pre-activation within 1e-6 of its kink is counted as on it, yet
uncertified: one pre-activation sits at 1e-9 from its kink, neither on it nor
clear of it. Usually that kink carries no weight in the certificate (the
minimum touches it without needing it), so the SQP step, which holds only
kinks with an interior weight, never puts it on. :func:`_polish` holds every
kink within 1e-6 of 0, snaps the point onto them (moves of ~1e-9), takes SQP
steps along them, and certifies; it is taken only if the loss, evaluated in
extended precision, has not increased. On the default run's 121 points that
the Newton stage left uncertified it certified 26 (about 10 s on one core).

The certificate
---------------
A quench ends when a network is *certified* or its iteration budget is spent.
With eps_on (default 1e-10) the distance to a kink that counts as "on it" and
gap (default 1e-6) a margin:

* **smooth**: no pre-activation within ``gap`` of 0, and |grad L| <= gtol
  (default 1e-9). Then L is a polynomial in a ball around w of radius about
  gap / max_a |dz_a/dw| (to first order; the normals are
  :func:`relunet.kinks.preactivation_grads`), and w is a stationary point
  of it.
* **zero-loss**: L(w) = 0 exactly (by the plain kernel, ``kernel="plain"``,
  the one W_f's targets are computed with), a global minimum of a sum of
  squares (W_f itself: 1,426 of its pre-activations sit exactly on kinks).
* **kink**: every pre-activation is either on its kink (|z_a| <= eps_on) or
  farther than ``gap``; the kink families' normals are linearly independent
  (so every on/off pattern of them occurs arbitrarily close to w); and the
  Clarke measure, dist(0, conv of the one-sided gradients) (for lone kinks
  min_{lam in [0,1]} |g_off + J lam|; :func:`relunet.kinks.clarke_measure`),
  is at most gtol. This is Clarke
  eps-stationarity in the sense of gradient sampling (Burke, Lewis & Overton
  2005, SIAM J. Optim. 15:751): 0 lies within gtol of the hull of the
  gradients of every piece that touches a ball of radius eps_on / min|dz_a/dw|.
  The measure is |g0 + V u| at an exactly feasible u: an upper bound of the
  distance, equal to it up to the QP solver's accuracy.

Everything is recorded per network in :class:`QuenchResult`: loss before
and after, distance moved, iterations of each stage, certificate kind and its numbers, so
that any reader can recheck a point with :func:`certify`.

Classification (:func:`classify`) then reads the second-order conditions: the
Hessian at a smooth point; at a kink point the creases (V-shaped, falling, or flat
to first order) and the Hessian along the held ones; where creases are flat to
first order (no error signal reaches the unit: c = dL/dh = 0), the Hessian of
every piece of their flat sides (:func:`_flat_sides`). :func:`probe` checks the
result independently with random probes.

One subject, the stationary points of the piecewise-smooth loss (the descent
to them, their certificate and their type, which use one another's pieces),
longer than one sitting because half of it is the explanation above.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import scipy.linalg
from numba import njit

from ._numba import STRICT
from .bfgs import stop_reason
from .hessian import _one_blas_thread, hessian
from .kernels import _forward_ref_acts, check_data, loss, loss_ref
from .kinks import (
    clarke_measure,
    hull_qp,
    kink_groups,
    masked_loss_and_grad,
    masked_sums,
    preactivation_grads,
    preactivations,
    vertices,
)
from .linesearch import backtrack
from .net import Arch, check_stack
from .procpool import run_tasks, usable_cores

__all__ = ["quench", "descend", "lbfgs", "certify", "classify", "near_stationarity",
           "probe", "QuenchResult", "DescentResult", "symmetry_modes"]

GTOL = 1e-9        #: certified when the (Clarke) gradient measure is at most this
EPS_ON = 1e-10     #: |z| at most this: the pre-activation sits on its kink
GAP = 1e-6         #: no pre-activation may lie between EPS_ON and GAP
DELTA = 1e-3       #: near-kink set of the Newton step
ROUND = 4 * np.finfo(float).eps   #: last steps may move L by rounding noise, no more
MU_MAX = 1e12      #: a network whose damping reaches this without a decrease has stalled


@dataclass
class QuenchResult:
    """Quenched networks and their certificates; every array has a leading M axis."""

    W: np.ndarray            # (M, P) quenched networks
    loss0: np.ndarray        # (M,) loss before
    loss: np.ndarray         # (M,) loss after (not above loss0: up to 4 ulp, or the polish's
    #                          float64 rounding, ~1e-15 relative, of a loss that its
    #                          extended-precision check found not to increase)
    moved: np.ndarray        # (M,) |W - W0|
    descent_iterations: np.ndarray   # (M,) BFGS (or L-BFGS) steps of the first stage (descend)
    iterations: np.ndarray   # (M,) Newton iterations of the second stage
    polished: np.ndarray     # (M,) steps of the third stage (_polish) where it certified, else -1
    certified: np.ndarray    # (M,) bool: smooth or kink certificate holds
    kind: np.ndarray         # (M,) str: 'smooth', 'kink', 'zero-loss' or 'uncertified'
    measure: np.ndarray      # (M,) |grad| (smooth) or Clarke measure (kink)
    n_kinks: np.ndarray      # (M,) pre-activations on their kink (|z| <= eps_on)
    min_gap: np.ndarray      # (M,) smallest |z| among those not on a kink
    rank: np.ndarray         # (M,) rank of the kink families' normals
    coupled: np.ndarray      # (M,) bool: a point with kinks in several layers (enumerated)
    reason: np.ndarray       # (M,) str: why uncertified ('' if certified)

    def __len__(self):
        return len(self.W)

    def take(self, idx) -> "QuenchResult":
        return QuenchResult(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


# =============================================================================
# Certificate
# =============================================================================
def _on_and_gap(z, eps_on):
    a = np.abs(z)
    on = a <= eps_on
    off = a[~on]
    return on, (float(off.min()) if off.size else np.inf)


def certify(W, arch: Arch, x, t, gtol: float = GTOL, eps_on: float = EPS_ON,
            gap: float = GAP) -> dict:
    """Check the stationarity certificate of every network (see the module docstring).

    Returns a dict of (M,) arrays: certified, kind, measure, n_kinks, min_gap,
    rank, coupled, reason, and ``lam`` (a list of (n_kinks,) arrays: the weight
    of the 'on' side of each kink in the nearest point of the subdifferential)
    and ``entries`` (a list of (n_kinks, 3) arrays (l, j, s), l = 1..K).
    """
    W = np.asarray(check_stack(W, arch), dtype=np.float64)
    M = len(W)
    Z = preactivations(W, arch, x)
    L = loss(W, arch, x, t, kernel="plain")     # the kernel that made W_f's targets: 0 exactly
    out = {k: [] for k in ("certified", "kind", "measure", "n_kinks", "min_gap", "rank",
                           "coupled", "reason", "lam", "entries", "c", "families")}
    for m in range(M):
        on, mgap = _on_and_gap(Z[m], eps_on)
        ent = np.argwhere(on)
        ent[:, 0] += 1
        n = len(ent)
        reason = []
        try:
            cm = clarke_measure(W[m], arch, x, t, ent, Z[m] > 0) if L[m] > 0.0 else None
        except ValueError as e:         # too many coupled kinks at one point to enumerate
            cm = None
            reason.append(str(e))
        if cm is None:
            zero = L[m] == 0.0          # a global minimum of a sum of squares: nothing to check
            for k, v in (("certified", zero), ("kind", "zero-loss" if zero else "uncertified"),
                         ("measure", 0.0 if zero else np.inf), ("n_kinks", n),
                         ("min_gap", mgap), ("rank", -1), ("coupled", True),
                         ("reason", "; ".join(reason)), ("lam", np.zeros(n)),
                         ("entries", ent), ("c", np.zeros(n)), ("families", [])):
                out[k].append(v)
            continue
        if mgap <= gap:
            reason.append(f"a pre-activation at {mgap:.1e} from its kink (gap {gap:g})")
        if n and cm.rank < cm.n_families:
            reason.append(f"dependent kink normals (rank {cm.rank} < {cm.n_families} "
                          f"independent kinks)")
        if cm.measure > gtol:
            reason.append(f"gradient measure {cm.measure:.1e} > {gtol:g}")
        ok = not reason
        out["certified"].append(ok)
        out["kind"].append(("kink" if n else "smooth") if ok else "uncertified")
        out["measure"].append(cm.measure)
        out["n_kinks"].append(n)
        out["min_gap"].append(mgap)
        out["rank"].append(cm.rank)
        out["coupled"].append(cm.coupled)
        out["reason"].append("; ".join(reason))
        out["lam"].append(cm.lam)
        out["entries"].append(ent)
        out["c"].append(cm.c)
        out["families"].append(cm.families)
    for k in ("certified", "kind", "measure", "n_kinks", "min_gap", "rank", "coupled",
              "reason"):
        out[k] = np.array(out[k])
    return out


# =============================================================================
# One step: the convex piecewise-quadratic model, solved through its dual
# =============================================================================
def _near_entries(z, delta):
    """Pre-activations within delta of their kink, (E, 3) rows (l, j, s), nearest first."""
    near = np.argwhere(np.abs(z) <= delta)
    near = near[np.argsort(np.abs(z[tuple(near.T)]), kind="stable")]
    near[:, 0] += 1
    return near


def _quench_one(w, L, g, H, z, arch, x, t, mu, delta, max_tries=12):
    """Steps of the piecewise model (module docstring, steps 1-4) from one network,
    raising the damping mu until the loss does not increase.

    Returns (w_new, L_new, mu_new, accepted).
    """
    X, T = check_data(arch, x, t)                   # once, not once per trial step
    e, Ve = scipy.linalg.eigh(H, check_finite=False)
    mu_min = max(0.0, -e[0]) + 1e-12 * max(abs(e[-1]), 1.0)
    mu = min(max(mu, mu_min), MU_MAX)
    near = _near_entries(z, delta)
    if len(near):
        L0, g0, V, off, gid, info = vertices(w, arch, x, t, near, z > 0, coupled=False)
        # max(0, J.d + off) is tight at d = 0 only for a V-shaped kink (the jump points
        # up the normal). A ridge keeps the side it is on: its piece joins the base.
        first = np.array([f[0] for f in info["families"]])     # a family's first kink
        vee = np.einsum("fp,fp->f", V, info["Nz"][first]) > 0
        on = z[near[first, 0] - 1, near[first, 1], near[first, 2]] > 0
        ridge_on = ~vee & on
        L0, g0 = L0 + off[ridge_on].sum(), g0 + V[ridge_on].sum(axis=0)
        V, off, gid = V[vee], off[vee], np.arange(int(vee.sum()))
    else:
        L0, g0, V, off, gid = L, g, np.zeros((0, w.size)), np.zeros(0), np.zeros(0, int)
    n_groups = int(gid.max()) + 1 if gid.size else 0

    def model(d):
        """m(d) - L0 (L0 cancels in every difference; keeping it would round away
        the last decreases, which are ~1e-18 against L ~ 0.1)."""
        grp = np.zeros(n_groups)
        if n_groups:
            np.maximum.at(grp, gid, V @ d + off)
        return g0 @ d + 0.5 * d @ H @ d + grp.sum()

    m0 = model(np.zeros(w.size))
    for _ in range(max_tries):
        f = 1.0 / np.sqrt(e + mu)
        b = f * (Ve.T @ g0)
        A = f[:, None] * (Ve.T @ V.T)
        u = hull_qp(A, b, gid, lin=off) if V.shape[0] else np.zeros(0)
        d = -(Ve @ (f * (b + A @ u)))
        pred = m0 - model(d)
        Lt = _loss_one(w + d, arch, X, T)           # NumPy: no thread start-up
        # below ~1e-15 L a decrease cannot be seen in L itself: accept rounding noise
        tiny = pred < 1e-14 * abs(L)
        if pred > 0 and (Lt < L or (tiny and Lt <= L + ROUND * abs(L))):
            rho = (L - Lt) / pred
            mu_new = mu / 3.0 if rho > 0.75 else (mu if rho > 0.25 else 2.0 * mu)
            if tiny:        # rho is rounding noise there: the next step is the full one
                mu_new = 0.0
            return w + d, Lt, max(mu_new, 1e-12), True
        mu = max(4.0 * mu, 1e-8)
        if mu > MU_MAX:
            break
    # the damping the failed tries reached is kept: the next call starts there, not at
    # the bottom of the ramp again (a point where the model keeps failing pays one try
    # per iteration, not max_tries; module docstring, step 4)
    mu = min(mu, MU_MAX)
    w2, L2 = _sampling_step(w, L, arch, x, t)
    if L2 < L:
        return w2, L2, mu, True
    return w, L, mu, False


def _lagrangian_hessian(w, arch, x, t, masks, Q, fd_step, cache=None):
    """Q^T H_lam Q, symmetrised: the Hessian of the piece with (real) ``masks``, on the
    columns of Q. Along the kinks that masks weight by lam this is the Hessian of the
    loss restricted to them (Lewis 2002); used by the SQP step and by classify.

    The loss is a sum over points, and only the points where the masks differ from
    the network's own [z > 0] (the kinks they weight), or where a pre-activation is
    within TAU of its kink (so that the kernels' side of it is not certain), need
    the masks: their share is taken by central differences of the masked gradient on
    those few points (2 Q.shape[1] gradients), the rest exactly
    (:func:`relunet.hessian.hessian` on the other points). Measured on 60 certified
    kink points of the default run: within 2e-11 of the largest curvature of central
    differences on all points (the loss is a polynomial on a piece: that is
    rounding), 2x faster there and 6x inside the Newton stage's SQP steps. ``cache``
    (a dict, for many calls at one point and one Q with masks that differ only near
    kinks, as in :func:`_flat_sides`) keeps the exact part between calls.
    """
    X, T = check_data(arch, x, t)
    S = X.shape[1]
    z = preactivations(w[None], arch, x)[0]
    odd = np.any((masks != (z > 0)) | (np.abs(z) <= TAU), axis=(0, 1))
    cols, rest = np.flatnonzero(odd), np.flatnonzero(~odd)
    k = Q.shape[1]
    key = rest.tobytes()
    Hr = None if cache is None else cache.get(key)
    if Hr is None:
        H = np.zeros((arch.P, arch.P))
        if rest.size:
            H = hessian(w[None], arch, X[:, rest].T, T[:, rest].T)[0] * (rest.size / S)
        Hr = Q.T @ H @ Q
        if cache is not None:
            cache[key] = Hr
    if cols.size:
        Wp = np.concatenate([w + fd_step * Q.T, w - fd_step * Q.T])
        m = np.ascontiguousarray(np.broadcast_to(masks[..., cols], (2 * k,) + masks.shape[:2]
                                                 + (cols.size,)), dtype=np.float64)
        _, G = masked_sums(Wp, arch, X[:, cols], T[:, cols], m, S)
        Hr = Hr + Q.T @ ((G[:k] - G[k:]).T / (2 * fd_step))       # Q^T (H_cols Q)
    return 0.5 * (Hr + Hr.T)


@dataclass(frozen=True)
class _Creases:
    """The creases of a point on kinks, as the classification reads them.

    ent (E, 3) the kinks (l, j, s);  lam (E,) the weight of each kink's 'on' side
    in the nearest point of the Clarke subdifferential;  fams the kink families
    (index arrays into ent: kinks that switch together form one crease);  Nz (E, P)
    the kink normals dz_a/dw;  and per crease f: lam_f, its 'on' weight, and
    c_f = sum_a c_a |dz_a/dw|, the jump of the loss's slope along its unit normal
    (c_a = dL/dh_a)."""

    ent: np.ndarray
    lam: np.ndarray
    fams: list
    Nz: np.ndarray
    lam_f: np.ndarray
    c_f: np.ndarray

    @classmethod
    def at(cls, w, arch, x, ent, lam, c, families, masks) -> "_Creases":
        """The creases of network w at its kinks ``ent`` (masks: the pieces below)."""
        Nz = preactivation_grads(w, arch, x, ent, masks)
        fams = families or [np.array([i]) for i in range(len(lam))]
        nrm = np.linalg.norm(Nz, axis=1)
        c_f = np.array([np.sum(c[f] * nrm[f]) for f in fams])
        lam_f = np.array([lam[f[0]] for f in fams])
        return cls(ent, lam, fams, Nz, lam_f, c_f)


TAU = 1e-6         #: kinks this close to 0, with an interior weight, are held on by the SQP step


def _held_creases(w, arch, x, t, z, tau):
    """The creases a point nearly sits on, as the steps along them hold them: the
    Clarke certificate over the kinks within ``tau`` of 0 (``cm``), the masks with
    its weights lam on those kinks (the Lagrangian's piece), and the kinks with
    0 < lam < 1 (``held``). None where they are too many coupled kinks to enumerate.
    Shared by :func:`_manifold_step` and :func:`relunet.saddle.newton_stationary`."""
    near = _near_entries(z, tau)
    try:
        cm = clarke_measure(w, arch, x, t, near, z > 0)
    except ValueError:              # too many coupled kinks to enumerate
        return None
    masks = (z > 0).astype(float)
    if len(near):
        masks[near[:, 0] - 1, near[:, 1], near[:, 2]] = cm.lam
    return cm, masks, near[(cm.lam > 1e-9) & (cm.lam < 1 - 1e-9)]


def _manifold_step(w, L, z, arch, x, t, X, T, tau=TAU, fd_step=1e-6, max_tries=8,
                   near_tol=1e-3):
    """One Newton step along the kinks the point sits on (the SQP / VU step), or None.

    At a point near a kink minimum the piecewise model of :func:`_quench_one`
    is not enough: its curvature is the Hessian of the piece the point happens
    to be on, and a kink held at z = 0 by its step drifts off again to second
    order, so its steps are rejected and it crawls. This step is sequential
    quadratic programming on the kink manifold M = {z_a = 0, a in A} (Nocedal &
    Wright 2006, Ch. 18; the VU-Newton step of Mifflin & Sagastizabal 2005, the
    manifold of partial smoothness of Lewis 2002), with A the kinks within
    ``tau`` of 0 whose weight lam_a in the nearest point of the Clarke
    subdifferential (:func:`relunet.kinks.clarke_measure`) is strictly inside
    (0, 1), the creases the minimum holds:

    * tangent step: Newton on the loss restricted to M, with the gradient g_min
      (the Clarke measure's nearest point) and the Hessian of the piece with
      masks lam_a on the kinks (its multiplier term vanishes as g_min -> 0),
      on a basis of M's tangent space (:func:`_lagrangian_hessian`), damped by
      mu >= -lambda_min so that it descends;
    * normal step: the least-norm move that puts z_A back to 0, before the
      step and once more after it (the second-order correction against the
      Maratos effect, Nocedal & Wright Sec. 15.6).

    Tried only where the Clarke measure over the kinks within ``tau`` is at
    most ``near_tol`` (farther out the manifold is not yet the right one), and
    taken only if the loss does not increase (the rule of :func:`_quench_one`),
    raising mu up to ``max_tries`` times. Near a kink minimum it converges
    quadratically: measured, Clarke measures 6e-7 -> 2e-8 -> 2e-12 in two steps.
    Returns (w_new, L_new) or None.
    """
    creases = _held_creases(w, arch, x, t, z, tau)
    if creases is None or creases[0].measure > near_tol:
        return None
    cm, masks, held = creases
    N = preactivation_grads(w, arch, x, held, z > 0) if len(held) else np.zeros((0, w.size))

    def z_held(v):
        if not len(held):
            return np.zeros(0)
        zv = preactivations(v[None], arch, x)[0]
        return zv[held[:, 0] - 1, held[:, 1], held[:, 2]]

    def back_onto(v, zv):           # least-norm move putting z_held back to 0
        return v - np.linalg.lstsq(N, zv, rcond=None)[0] if len(held) else v

    return _sqp_step(w, back_onto(w, z_held(w)), L, cm.g_min, masks, N, arch, x, t,
                     onto=lambda v: back_onto(v, z_held(v)),
                     loss_at=lambda v: _loss_one(v, arch, X, T),
                     fd_step=fd_step, max_tries=max_tries)


def _sqp_step(w, w0, L, g, masks, N, arch, x, t, onto, loss_at, fd_step, max_tries):
    """The SQP step along the kinks with normals N (rows), shared by
    :func:`_manifold_step` and :func:`_polish`: tangent Newton with the gradient g
    (the Clarke certificate's nearest point) and the Lagrangian Hessian at w (masks
    lam on the kinks), damped by mu >= -lambda_min, from the point w0 on the kinks,
    each trial put back onto them by ``onto``; taken if ``loss_at`` (the loss) does
    not increase (beyond ROUND where the predicted decrease is below 1e-14 L), mu
    raised up to ``max_tries`` times. Returns (w1, L1) or None."""
    Q = _null_basis(N, w.size)
    e, V = np.linalg.eigh(_lagrangian_hessian(w, arch, x, t, masks, Q, fd_step))
    gt = V.T @ (Q.T @ g)
    mu = max(0.0, -e[0]) + 1e-10 * max(abs(e[-1]), 1.0)
    for _ in range(max_tries):
        c = -gt / (e + mu)
        pred = -(gt @ c + 0.5 * c @ (e * c))
        w1 = onto(w0 + Q @ (V @ c))
        L1 = loss_at(w1)
        if L1 < L or (pred < 1e-14 * abs(L) and L1 <= L + ROUND * abs(L)):
            return w1, L1
        mu = max(4.0 * mu, 1e-8)
    return None


POLISH_TOL = 1e-3  #: polish where the Clarke measure over the kinks within TAU is this small


def _onto_kinks(w, arch, x, held, n_newton=6, ztol=1e-13):
    """The point near w with z_a = 0 for every kink in ``held``: Gauss-Newton on the
    least-norm correction (the normal step of :func:`_manifold_step`, repeated)."""
    for _ in range(n_newton):
        z = preactivations(w[None], arch, x)[0]
        zh = z[held[:, 0] - 1, held[:, 1], held[:, 2]]
        if np.abs(zh).max() <= ztol:
            break
        N = preactivation_grads(w, arch, x, held, z > 0)
        w = w - np.linalg.lstsq(N, zh, rcond=None)[0]
    return w


def _polish(w, arch, x, t, X, T, gtol, eps_on, gap, tau=TAU, max_iter=30,
            near_tol=POLISH_TOL, fd_step=1e-6, patience=5, max_tries=12):
    """Stage 3: snap a nearly stationary point onto the kinks it nearly sits on, and
    finish there. Returns (w, iterations) of a certified point, or None.

    What it is for: after the Newton stage, many uncertified points are Clarke
    stationary to 1e-10 or better once every pre-activation within ``tau`` of
    its kink is counted as on it (:func:`near_stationarity`), yet fail the
    certificate's gap rule: a pre-activation at 1e-9 from its kink, neither on
    it (|z| <= eps_on) nor clear of it (>= gap). Such a kink usually carries
    no weight in the Clarke certificate (lam = 0 or 1: the minimum touches the
    kink without needing it, a degenerate, weakly active constraint), so the
    SQP step of :func:`_manifold_step`, which holds only the kinks with an
    interior weight, never puts it on, and Newton steps on the piece cannot
    tell 1e-9 from 0. The polish holds them all:

    1. S = every kink within ``tau`` of 0 (and every kink held before: the set
       only grows, so the point cannot slide back and forth across one);
    2. snap onto {z_a = 0, a in S} (:func:`_onto_kinks`, moves of order
       tau / |dz/dw|);
    3. if :func:`certify` holds there, done; else one SQP step along the
       manifold of S (tangent Newton on the Lagrangian Hessian with masks lam,
       the step of :func:`_manifold_step` with every kink of S held), taken if
       the loss does not increase (the Newton stage's rule, but with the loss
       in extended precision, :func:`_loss_ext`: here the predicted decreases
       fall to 1e-17, below the float64 loss's own rounding of ~1e-16, which
       refused them at random), and back to 1.

    It stops when the step is refused, after ``max_iter`` steps, or when the
    Clarke measure has not halved in ``patience`` steps. Holding a degenerate
    kink can only restrict the search; a point where the hold is wrong (its
    multiplier would leave [0, 1]) keeps a measure above gtol and fails the
    certificate, which stays the only judge. This is the active-set
    "identification" step of nonsmooth optimisation (Lewis 2002, SIAM J.
    Optim. 13:702; Wright 1993, SIAM J. Optim. 3:485: once the near-active set
    is identified, hold it exactly and solve the smooth problem on it).
    """
    z = preactivations(w[None], arch, x)[0]
    held = _near_entries(z, tau)
    try:
        if clarke_measure(w, arch, x, t, held, z > 0).measure > near_tol:
            return None
    except ValueError:              # too many coupled kinks to enumerate
        return None
    v, best, since = w.copy(), np.inf, 0
    for it in range(max_iter + 1):
        z = preactivations(v[None], arch, x)[0]
        new = _near_entries(z, tau)
        if len(new):
            seen = {tuple(r) for r in held.tolist()}
            new = np.array([r for r in new.tolist() if tuple(r) not in seen],
                           dtype=np.int64).reshape(-1, 3)
            held = np.vstack([held, new]) if len(held) else new
        if len(held):
            v = _onto_kinks(v, arch, x, held)
            z = preactivations(v[None], arch, x)[0]
        if certify(v[None], arch, x, t, gtol, eps_on, gap)["certified"][0]:
            return v, it
        if it == max_iter:
            return None
        Lv = _loss_ext(v, arch, X, T)
        try:
            cm = clarke_measure(v, arch, x, t, held, z > 0)
        except ValueError:
            return None
        if cm.measure < 0.5 * best:
            best, since = cm.measure, 0
        else:
            since += 1
            if since >= patience:
                return None
        masks = (z > 0).astype(float)
        if len(held):
            masks[held[:, 0] - 1, held[:, 1], held[:, 2]] = cm.lam
        N = preactivation_grads(v, arch, x, held, z > 0) if len(held) else \
            np.zeros((0, v.size))
        step = _sqp_step(v, v, Lv, cm.g_min, masks, N, arch, x, t,
                         onto=lambda u: _onto_kinks(u, arch, x, held) if len(held) else u,
                         loss_at=lambda u: _loss_ext(u, arch, X, T),
                         fd_step=fd_step, max_tries=max_tries)
        if step is None:
            return None
        v = step[0]
    return None


def _loss_ext(w, arch, X, T) -> float:
    """The loss of one network in extended precision (np.longdouble: 64-bit mantissa on
    x86-64), to compare points whose float64 losses differ by rounding alone."""
    _, y = _forward_ref_acts(w[None].astype(np.longdouble), arch, X.astype(np.longdouble))
    return np.mean((y - T.astype(np.longdouble)) ** 2)


def _loss_one(w, arch, X, T) -> float:
    """loss_ref(w[None], arch, x, t)[0] (the same operations) for data checked already."""
    _, y = _forward_ref_acts(w[None], arch, X)
    return float(np.mean((y - T) ** 2, axis=(1, 2))[0])


def _sampling_step(w, L, arch, x, t, n_samples: int = 40, radius: float = 1e-7):
    """Fallback when no step of the model lowers the loss: one gradient-sampling step.

    Gradients at w and at n_samples points within ``radius`` (deterministic
    directions), the shortest vector g_min of their hull (NNLS with a heavy
    row for the convex weights: Burke, Lewis & Overton 2005), then halving
    steps along -g_min from |d| = 0.1 until the loss decreases. Returns (w, L)
    unchanged if none does.
    """
    from scipy.optimize import nnls
    U = np.random.default_rng(0).standard_normal((n_samples, w.size))
    U *= radius / np.linalg.norm(U, axis=1, keepdims=True)
    Ws = np.vstack([w, w + U])
    _, G = masked_loss_and_grad(Ws, arch, x, t, preactivations(Ws, arch, x) > 0)
    big = 1e3 * max(np.abs(G).max(), 1e-300)
    u, _ = nnls(np.vstack([G.T, big * np.ones(len(G))]),
                np.concatenate([np.zeros(w.size), [big]]), maxiter=50 * len(G))
    d = -(G.T @ u)
    nd = np.linalg.norm(d)
    if nd == 0.0:
        return w, L
    step = 0.1 / nd
    for _ in range(40):
        Lt = float(loss_ref((w + step * d)[None], arch, x, t)[0])
        if Lt < L:
            return w + step * d, Lt
        step *= 0.5
    return w, L


# =============================================================================
# Stage 1: the descent (batched L-BFGS, as pele and GMIN quench)
# =============================================================================
@dataclass
class DescentResult:
    """Networks after :func:`descend`; every array has a leading M axis."""

    W: np.ndarray            # (M, P) networks after the descent
    loss: np.ndarray         # (M,) loss (kernel rounding), never above the start
    iterations: np.ndarray   # (M,) accepted steps
    evaluations: np.ndarray  # (M,) loss-and-gradient evaluations
    reason: np.ndarray       # (M,) str: why the descent stopped


def _descent_input(efun, W, max_step, **counts) -> np.ndarray:
    """The checks every batched descent makes of its arguments; returns W as a float64 copy."""
    if not callable(efun):
        raise ValueError(f"efun must be callable X (n, D) -> (E, G), got {type(efun).__name__}")
    return _descent_start(W, max_step, **counts)


def _descent_start(W, max_step, **counts) -> np.ndarray:
    """:func:`_descent_input` without an energy (a descent on the networks' own kernel)."""
    W = np.array(W, dtype=np.float64)
    if W.ndim != 2 or not np.all(np.isfinite(W)):
        raise ValueError(f"W must be a finite (n, D) array, got shape {W.shape}")
    for name, v in counts.items():
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not (np.isfinite(max_step) and max_step > 0):
        raise ValueError(f"max_step must be a finite number > 0, got {max_step!r}")
    return W


def _take_steps(W, L, G, m, s, L_new, G_new, iters, slow, active, reason, gtol, patience):
    """Move rows m of a descent by their accepted steps s (in place), and stop those
    whose gradient is below gtol or whose loss has fallen by less than 1e-14 of itself
    in ``patience`` consecutive steps (the same rule for every descent)."""
    small = L[m] - L_new <= 1e-14 * np.abs(L[m])
    slow[m] = np.where(small, slow[m] + 1, 0)
    W[m] += s
    L[m], G[m] = L_new, G_new
    iters[m] += 1
    conv = np.linalg.norm(G[m], axis=1) <= gtol
    stag = ~conv & (slow[m] >= patience)
    active[m[conv | stag]] = False
    reason[m[conv]] = stop_reason("gtol")
    reason[m[stag]] = stop_reason("stagnant", patience=patience)


def _two_loop(G, S, Y, rho, n_mem, head, rows=None):
    """L-BFGS directions -H G for a stack (Nocedal & Wright 2006, Alg. 7.4).

    S, Y (M, m, P) hold the pairs in ring buffers (the newest in slot
    head - 1), rho = 1 / s.y, n_mem pairs valid per network; H0 = (s.y / y.y) I
    from the newest pair (I when there is none). One network at a time in
    numba (:func:`_two_loop_kernel`): the same sums for a network whatever the
    stack holds. ``rows``: compute for these networks only (G, d have one row
    per entry of rows; S, Y, rho, n_mem, head are the whole stack's, not copied).
    """
    if rows is None:
        rows = np.arange(len(G))
    d = np.empty((len(rows), S.shape[2]))
    _two_loop_kernel(np.ascontiguousarray(G, dtype=np.float64), S, Y, rho,
                     np.asarray(n_mem, dtype=np.int64), np.asarray(head, dtype=np.int64),
                     np.asarray(rows, dtype=np.int64), d)
    return d


@njit(cache=True, fastmath=STRICT)
def _two_loop_kernel(G, S, Y, rho, n_mem, head, rows, d):
    _, memory, P = S.shape
    alpha = np.empty(memory)
    for i in range(len(rows)):
        m = rows[i]
        q = d[i]
        for p in range(P):
            q[p] = -G[i, p]
        for k in range(n_mem[m]):                # newest to oldest
            slot = (head[m] - 1 - k) % memory
            a = 0.0
            for p in range(P):
                a += S[m, slot, p] * q[p]
            a *= rho[m, slot]
            alpha[k] = a
            for p in range(P):
                q[p] -= a * Y[m, slot, p]
        gamma = 1.0
        if n_mem[m] > 0:
            newest = (head[m] - 1) % memory
            sy, yy = 0.0, 0.0
            for p in range(P):
                sy += S[m, newest, p] * Y[m, newest, p]
                yy += Y[m, newest, p] * Y[m, newest, p]
            if yy > 0:
                gamma = sy / yy
        for p in range(P):
            q[p] *= gamma
        for k in range(n_mem[m] - 1, -1, -1):     # oldest to newest
            slot = (head[m] - 1 - k) % memory
            beta = 0.0
            for p in range(P):
                beta += Y[m, slot, p] * q[p]
            beta *= rho[m, slot]
            for p in range(P):
                q[p] += (alpha[k] - beta) * S[m, slot, p]


def descend(W, arch: Arch, x, t, max_iter: int = 2000, memory: int = 20,
            max_step: float = 0.5, gtol: float = GTOL, patience: int = 25,
            method: str = "bfgs", progress=None) -> DescentResult:
    """The first stage of :func:`quench` on the loss of a stack of networks.

    ``method``: "bfgs" (default), full BFGS with the weak-Wolfe line search
    (:func:`relunet.bfgs.bfgs`), which keeps descending across kinks, or
    "lbfgs", :func:`lbfgs` with ``memory`` pairs and backtracking, which stalls at
    them (measured: :mod:`relunet.bfgs`).
    """
    from .bfgs import bfgs, bfgs_networks
    from .fast.stack import kernel_and_data
    from .kernels import _which, check_data, loss_and_grad_fn
    if method not in ("bfgs", "lbfgs"):
        raise ValueError(f"method must be 'bfgs' or 'lbfgs', got {method!r}")
    if not isinstance(memory, (int, np.integer)) or memory < 1:
        raise ValueError(f"memory must be an integer >= 1, got {memory!r}")
    W = np.array(check_stack(W, arch), dtype=np.float64)
    if method == "bfgs" and _which("auto", arch) == "fast":
        # the generated kernel's networks: each descended in one compiled loop, the
        # same bits as bfgs() below (relunet.bfgs.bfgs_networks)
        X, T = check_data(arch, x, t, np.float64)
        module, data_args = kernel_and_data(arch.K, arch.N, X, T)
        return bfgs_networks(module, data_args, W, max_iter=max_iter, max_step=max_step,
                             gtol=gtol, patience=patience, progress=progress)
    efun = loss_and_grad_fn(arch, x, t)      # loss_and_grad's numbers, the lookups done once
    if method == "bfgs":
        return bfgs(efun, W, max_iter=max_iter, max_step=max_step, gtol=gtol,
                    patience=patience, progress=progress)
    return lbfgs(efun, W, max_iter=max_iter, memory=memory, max_step=max_step, gtol=gtol,
                 patience=patience, progress=progress)


def lbfgs(efun, W, max_iter: int = 2000, memory: int = 20, max_step: float = 0.5,
          gtol: float = GTOL, patience: int = 25, progress=None) -> DescentResult:
    """Batched L-BFGS with a backtracking (Armijo) line search over a stack of points.

    ``efun``: X (n, D) -> (E (n,), G (n, D)), rows independent (the networks' loss
    in :func:`descend`; any batched energy, e.g. :mod:`relunet.neb_surfaces`).

    The first stage of a quench, as in pele's ``LBFGS`` and GMIN: limited-memory
    BFGS directions (Nocedal & Wright 2006, Alg. 7.4, the two-loop recursion with
    H0 = s.y / y.y), steps capped at ``max_step`` in weight norm, and halving
    until the loss falls by at least 1e-4 of the predicted first-order decrease.
    On the piecewise-smooth loss this is what a smooth method does well: it runs
    down the long, weakly curved descents that training has not finished (the
    trained students sit on them with dozens of negative curvatures of order
    -1e-2), crossing kinks freely, at the cost of one batched kernel call per
    trial step. It is also what it does badly: it stalls where the gradient
    jumps (Lewis & Overton 2013, Math. Program. 141:135), and there the Newton
    stage of :func:`quench` takes over. A pair (s, y) is kept only if
    s.y > 1e-10 |s| |y| (across a kink it may not be), so the inverse-Hessian
    model stays positive definite; a direction that is not a descent, or a line
    search that fails, clears the memory and retries along -grad.

    A network stops when |grad| <= gtol, when a steepest-descent line search
    fails too (a kink: nothing in the direction of -grad decreases the loss
    over 30 halvings), when the loss has fallen by less than 1e-14 of itself in
    ``patience`` consecutive steps, or after ``max_iter`` steps. Every network
    is treated on its own: the stack and its chunking do not change any bit.
    """
    W = _descent_input(efun, W, max_step, max_iter=max_iter, memory=memory, patience=patience)
    M, P = W.shape
    L, G = efun(W)
    S, Y = np.zeros((M, memory, P)), np.zeros((M, memory, P))
    rho = np.zeros((M, memory))
    n_mem = np.zeros(M, int)             # pairs held
    head = np.zeros(M, int)              # slot of the next pair
    iters = np.zeros(M, int)
    evals = np.ones(M, int)
    slow = np.zeros(M, int)              # consecutive steps with a negligible decrease
    reason = np.full(M, stop_reason("budget", max_iter=max_iter), dtype=object)
    active = np.ones(M, bool)
    gn = np.linalg.norm(G, axis=1)
    active[gn <= gtol] = False
    reason[gn <= gtol] = stop_reason("gtol")
    for _ in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        d = _two_loop(G[a], S, Y, rho, n_mem, head, rows=a)
        gd = np.sum(G[a] * d, axis=1)
        bad = ~(gd < 0) | ~np.all(np.isfinite(d), axis=1)
        d[bad] = -G[a[bad]]
        n_mem[a[bad]] = 0
        nd = np.linalg.norm(d, axis=1)
        d *= np.minimum(1.0, max_step / np.where(nd > 0, nd, 1.0))[:, None]
        gd = np.sum(G[a] * d, axis=1)
        # --- backtracking line search, batched over the networks still searching
        step, found, Lnew, Gnew, ev = backtrack(efun, W[a], L[a], d, gd, 1e-4)
        evals[a] += ev
        # --- failed searches: clear the memory once, then stop (a kink)
        fail = a[~found]
        stop = fail[(n_mem[fail] == 0) & ~bad[~found]]
        active[stop] = False
        reason[stop] = stop_reason("kink")
        n_mem[fail] = 0
        # --- accepted steps: update the networks and the memory
        i = np.flatnonzero(found)
        m = a[i]
        s_ = step[i, None] * d[i]
        y_ = Gnew[i] - G[m]
        sy_ = np.sum(s_ * y_, axis=1)
        keep = sy_ > 1e-10 * np.linalg.norm(s_, axis=1) * np.linalg.norm(y_, axis=1)
        mk = m[keep]
        S[mk, head[mk]], Y[mk, head[mk]], rho[mk, head[mk]] = s_[keep], y_[keep], 1.0 / sy_[keep]
        head[mk] = (head[mk] + 1) % memory
        n_mem[mk] = np.minimum(n_mem[mk] + 1, memory)
        _take_steps(W, L, G, m, s_, Lnew[i], Gnew[i], iters, slow, active, reason, gtol,
                    patience)
        if progress is not None:
            progress(int((~active).sum()), M)
    return DescentResult(W=W, loss=L, iterations=iters, evaluations=evals,
                         reason=reason.astype(str))


def _newton(Wc, Lc, mu, arch, x, t, max_iter, gtol, eps_on, gap, delta, certify_every,
            polish_iter=0, progress=None):
    """Stages 2 and 3 of :func:`quench` on a stack of networks (none at zero loss),
    batched: the Newton iterations, then :func:`_polish` on the networks they leave
    uncertified (at most ``polish_iter`` steps each; 0: none).

    Every network is treated on its own (a network's iterations do not depend on
    the others in the stack), so a stack may be cut into chunks for worker
    processes. Returns (W, L, mu, iterations, stalled, polished), modified copies;
    ``polished`` holds the polish steps of the networks it certified, -1 elsewhere.
    """
    Wc, Lc, mu = Wc.copy(), Lc.copy(), mu.copy()
    M = len(Wc)
    iters = np.zeros(M, int)
    done = np.zeros(M, bool)
    stalled = np.zeros(M, bool)
    polished = np.full(M, -1)
    for it in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        if it % certify_every == certify_every - 1 or it == max_iter - 1:
            cert = certify(Wc[act], arch, x, t, gtol, eps_on, gap)
            done[act[cert["certified"]]] = True
            act = np.flatnonzero(~done)
            if act.size == 0:
                break
        # gradient on the pieces that preactivations() sees: the kernels may round a
        # pre-activation that is exactly 0 here to +-1e-17 and pick the other side
        Z = preactivations(Wc[act], arch, x)
        X, T = check_data(arch, x, t)
        model = []                # networks the SQP step did not move: the piecewise model
        with _one_blas_thread():
            for i, m in enumerate(act):
                sqp = _manifold_step(Wc[m], Lc[m], Z[i], arch, x, t, X, T)
                if sqp is None:
                    model.append(i)
                else:
                    Wc[m], Lc[m] = sqp
        if model:
            sub = act[model]      # their points are unchanged since Z was taken
            _, G = masked_loss_and_grad(Wc[sub], arch, x, t, Z[model] > 0)
            H = hessian(Wc[sub], arch, x, t)
            with _one_blas_thread():
                for j, (i, m) in enumerate(zip(model, sub)):
                    Wc[m], Lc[m], mu[m], ok = _quench_one(Wc[m], Lc[m], G[j], H[j], Z[i],
                                                          arch, x, t, mu[m], delta)
                    if not ok and mu[m] >= MU_MAX:
                        stalled[m] = done[m] = True
        iters[act] += 1
        if progress is not None:
            progress(int(done.sum()), M)
    act = np.flatnonzero(~done | stalled)         # a stalled network may be nearly stationary
    if polish_iter and act.size:
        act = act[~certify(Wc[act], arch, x, t, gtol, eps_on, gap)["certified"]]
        X, T = check_data(arch, x, t)
        with _one_blas_thread():
            for m in act:
                r = _polish(Wc[m], arch, x, t, X, T, gtol, eps_on, gap, max_iter=polish_iter)
                # taken only if the loss, free of float64 rounding, has not increased
                if r is not None and (_loss_ext(r[0], arch, X, T)
                                      <= _loss_ext(Wc[m], arch, X, T) + ROUND * abs(Lc[m])):
                    Wc[m], Lc[m], polished[m] = r[0], _loss_one(r[0], arch, X, T), r[1]
    return Wc, Lc, mu, iters, stalled, polished


#: Newton iterations of 5x5 networks (P = 136, ~10 ms each) per worker process that
#: pay for starting it (~1 s of imports and cached kernels)
_WORK_PER_WORKER = 300


def _n_workers(workers, n_networks, max_iter, P):
    """Worker processes for the Newton stage: as asked, or (None) one per usable core
    when the stage may run long enough (at most n_networks x max_iter iterations, each
    costing about P / 136 of a 5x5 network's) to pay for them."""
    if workers is not None:
        return int(min(workers, max(n_networks, 1)))
    work = n_networks * max_iter * P / 136
    return int(max(1, min(usable_cores(), work // _WORK_PER_WORKER)))


# =============================================================================
# The batched driver
# =============================================================================
def quench(W, arch: Arch, x, t, max_iter: int = 200, gtol: float = GTOL,
           eps_on: float = EPS_ON, gap: float = GAP, delta: float = DELTA,
           mu0: float = 1e-3, certify_every: int = 5, descent_iter: int = 1000,
           descent: str = "bfgs", polish_iter: int = 30, workers: int | None = None,
           progress=None) -> QuenchResult:
    """Quench a stack of networks to certified stationary points (module docstring).

    Three stages: ``descent_iter`` batched BFGS steps (:func:`descend`; 0 skips
    it) run down the long descents cheaply, then at most ``max_iter`` Newton
    iterations (the SQP step along the kinks near a kink minimum, the
    piecewise model elsewhere) finish at the kinks and certify, and the points
    they leave uncertified but nearly stationary are snapped onto the kinks
    they nearly sit on and finished there (:func:`_polish`, at most
    ``polish_iter`` steps; 0 skips it).

    Parameters
    ----------
    W : (M, P) or (P,) networks (float32 is promoted to float64).
    arch, x, t : architecture and training data.
    max_iter : Newton iterations at most per network.
    descent_iter : descent steps at most per network before the Newton stage.
    descent : the first stage's method, "bfgs" or "lbfgs" (:func:`descend`).
    polish_iter : steps at most of the third stage per network (0: none).
    gtol, eps_on, gap : the certificate's tolerances.
    delta : pre-activations within delta of 0 are treated as kinks by the step.
    mu0 : initial Levenberg-Marquardt damping.
    certify_every : check the certificate every this many iterations.
    workers : processes for the Newton stage (:mod:`relunet.procpool`; the
        networks are independent and every result is the same bit for bit
        whatever the number). None: one per usable core when the stage has
        enough work to pay for starting them (about 300 Newton iterations of
        5x5 networks each), else 1 (in this process).
    progress : optional callable(n_done, n_total).

    Returns
    -------
    QuenchResult (loss never increases; read ``certified`` and ``reason``).
    """
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    W0 = np.array(check_stack(W, arch), dtype=np.float64)
    if not np.all(np.isfinite(W0)):
        raise ValueError("W contains non-finite values: quench only finite networks "
                         "(drop diverged ones first)")
    for name, v in (("max_iter", max_iter), ("certify_every", certify_every)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(polish_iter, (int, np.integer)) or polish_iter < 0:
        raise ValueError(f"polish_iter must be an integer >= 0, got {polish_iter!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"workers must be None or an integer >= 1, got {workers!r}")
    if not isinstance(descent_iter, (int, np.integer)) or descent_iter < 0:
        raise ValueError(f"descent_iter must be an integer >= 0, got {descent_iter!r}")
    if descent not in ("bfgs", "lbfgs"):
        raise ValueError(f"descent must be 'bfgs' or 'lbfgs', got {descent!r}")
    for name, v in (("gtol", gtol), ("eps_on", eps_on), ("gap", gap), ("delta", delta),
                    ("mu0", mu0)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if gap <= eps_on:
        raise ValueError(f"gap must be larger than eps_on, got gap={gap}, eps_on={eps_on}")
    M = len(W0)
    d_iters = np.zeros(M, int)
    if descent_iter:
        if progress is not None:
            progress(0, M)
        dr = descend(W0, arch, x, t, max_iter=int(descent_iter), gtol=gtol, method=descent)
        Wc, d_iters = dr.W, dr.iterations
    else:
        Wc = W0.copy()
    Lc = loss_ref(Wc, arch, x, t)          # the same (NumPy) rounding as every trial step
    mu = np.full(M, float(mu0))
    iters = np.zeros(M, int)
    stalled = np.zeros(M, bool)
    polished = np.full(M, -1)
    done0 = loss(Wc, arch, x, t, kernel="plain") == 0.0   # a zero loss: a global minimum already
    act = np.flatnonzero(~done0)
    n_workers = _n_workers(workers, act.size, max_iter, arch.P)
    args = (arch, x, t, max_iter, gtol, eps_on, gap, delta, certify_every, int(polish_iter))
    if n_workers > 1:
        # compile (or load) the stage's kernels here first, on one network whose result is
        # thrown away: on a cold numba cache every worker would otherwise compile the same
        # kernels at the same time (~10 s each), and this process again for the certificate
        _newton(Wc[act[:1]], Lc[act[:1]], mu[act[:1]], arch, x, t, 1, gtol, eps_on, gap,
                delta, 1)
        # the networks are independent: chunks of them run in worker processes, several
        # chunks per worker so that a chunk of slow networks does not hold up the end
        chunks = np.array_split(act, min(act.size, 4 * n_workers))
        n_done = [int(done0.sum())]

        def chunk_done(i):
            n_done[0] += len(chunks[i])
            if progress is not None:
                progress(n_done[0], M)
        res = run_tasks(_newton, [(Wc[c], Lc[c], mu[c]) + args for c in chunks], n_workers,
                        on_done=chunk_done)
        for c, (w_, l_, mu_, it_, st_, po_) in zip(chunks, res):
            Wc[c], Lc[c], mu[c], iters[c], stalled[c], polished[c] = w_, l_, mu_, it_, st_, po_
    elif act.size:
        def sub_progress(n, _):
            progress(int(done0.sum()) + n, M)
        Wc[act], Lc[act], mu[act], iters[act], stalled[act], polished[act] = _newton(
            Wc[act], Lc[act], mu[act], *args,
            progress=None if progress is None else sub_progress)
    cert = certify(Wc, arch, x, t, gtol, eps_on, gap)
    reason = cert["reason"].astype(object)
    for m in np.flatnonzero(~cert["certified"]):
        why = "stalled: no decrease from the model's step" if stalled[m] else \
            f"not certified after {iters[m]} iterations"
        reason[m] = f"{why}; {reason[m]}"
    return QuenchResult(W=Wc, loss0=loss(W0, arch, x, t), loss=loss(Wc, arch, x, t),
                        moved=np.linalg.norm(Wc - W0, axis=1),
                        descent_iterations=d_iters, iterations=iters, polished=polished,
                        certified=cert["certified"], kind=cert["kind"],
                        measure=cert["measure"], n_kinks=cert["n_kinks"],
                        min_gap=cert["min_gap"], rank=cert["rank"], coupled=cert["coupled"],
                        reason=reason.astype(str))


def _interior(lam_f):
    """Creases whose certificate weight lies strictly inside (0, 1) (to 1e-6): both
    sides of the crease take part in the Clarke certificate's nearest point."""
    lam_f = np.asarray(lam_f, dtype=float)
    return (lam_f > 1e-6) & (lam_f < 1 - 1e-6)


def _ridges(lam_f, c_f, gtol):
    """Which creases are ridges: an interior weight (0 < lam < 1) and c < 0, so the loss
    falls on both sides, with slopes (1 - lam) |c| and lam |c| along the two normals;
    a slope of at most ``gtol`` is zero at the certificate's resolution, so a crease
    whose smaller slope is that flat is not counted (measured on quenched students:
    most creases with c < 0 had |c| of 1e-13 to 1e-8, a unit whose error signal has
    all but vanished, and pushing off them lowered no loss)."""
    lam_f, c_f = np.asarray(lam_f, dtype=float), np.asarray(c_f, dtype=float)
    return _interior(lam_f) & (c_f < 0) & (np.minimum(lam_f, 1 - lam_f) * np.abs(c_f) > gtol)


def _falls(lam_f, c_f, gtol):
    """Which creases the loss falls across, on at least one side, by a slope above
    ``gtol``: c < 0 and max(lam, 1 - lam) |c| > gtol. A ridge (:func:`_ridges`) falls on
    both sides; a crease whose certificate weight sits at lam = 0 (or 1) with c < 0
    falls on one: with every other crease held, stepping by s along its normal changes
    the loss by c (s_+ - lam s) to first order, so by c s < 0 into its 'on' side (for
    lam = 1, by -c s < 0 into its 'off' side) while the other side is flat to first
    order. Either way the point is not a minimum: there is a direction of descent."""
    lam_f, c_f = np.asarray(lam_f, dtype=float), np.asarray(c_f, dtype=float)
    return (c_f < 0) & (np.maximum(lam_f, 1 - lam_f) * np.abs(c_f) > gtol)


def probe(W, arch: Arch, x, t, radii=(1e-6, 1e-4, 1e-2), n_probes: int = 200,
          seed: int = 0) -> np.ndarray:
    """Random probes around each network: the lowest relative change of the loss,
    (L(w + r u) - L(w)) / L(w), over ``n_probes`` random unit directions u at each
    radius r. An independent check of a classification, not a certificate: at a
    minimum no probe at small radii may fall below rounding (about 1e-15), while a
    saddle's descent directions fill a cone that random directions hit often in
    ~100 dimensions when it is wide. Directions are drawn per network from
    ``seed + m`` (network m of the stack), so any chunking gives the same numbers.
    Returns (M, len(radii)).
    """
    W = np.asarray(check_stack(W, arch), dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64).ravel()
    if radii.size == 0 or not np.all(np.isfinite(radii) & (radii > 0)):
        raise ValueError(f"radii must be finite numbers > 0, got {radii!r}")
    if not isinstance(n_probes, (int, np.integer)) or n_probes < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    L0 = loss(W, arch, x, t)
    out = np.empty((len(W), radii.size))
    for m in range(len(W)):
        U = np.random.default_rng(seed + m).standard_normal((n_probes, arch.P))
        U /= np.linalg.norm(U, axis=1)[:, None]
        for k, r in enumerate(radii):
            out[m, k] = (loss(W[m] + r * U, arch, x, t).min() - L0[m]) / max(L0[m], 1e-300)
    return out


def near_stationarity(W, arch: Arch, x, t, tau: float = TAU, gtol: float = GTOL) -> dict:
    """What an uncertified point is, read with a coarser eye: every pre-activation
    within ``tau`` of its kink counted as on it.

    For each network: ``measure``, the Clarke measure over those kinks
    (:func:`relunet.kinks.clarke_measure`; inf where they are too many coupled
    ones to enumerate), and ``ridges``, the creases among them with an interior
    weight (0 < lam < 1) and dL/dh < 0, both downhill slopes above ``gtol``:
    ridges, across which the loss falls on both sides (a nonsmooth saddle, not a
    minimum; :func:`classify` counts them the same way, :func:`_ridges`). A point
    with a small measure and no ridge is a minimum candidate whose certificate
    fails only on its rules (a pre-activation
    between ``eps_on`` and ``gap``, or a measure between 1e-9 and this one).
    Returns a dict of (M,) arrays: measure, ridges, n_near, and ``vees``, the
    creases with an interior weight and dL/dh > 0 (V-shaped: the loss rises on
    both sides, as at a kink minimum), and ``falls``, the creases the loss falls
    across on at least one side (:func:`_falls`; ridges included).
    """
    W = np.asarray(check_stack(W, arch), dtype=np.float64)
    Z = preactivations(W, arch, x)
    out = {"measure": np.full(len(W), np.inf), "ridges": np.zeros(len(W), int),
           "n_near": np.zeros(len(W), int), "vees": np.zeros(len(W), int),
           "falls": np.zeros(len(W), int)}
    for m in range(len(W)):
        near = _near_entries(Z[m], tau)
        out["n_near"][m] = len(near)
        try:
            cm = clarke_measure(W[m], arch, x, t, near, Z[m] > 0)
        except ValueError:
            continue
        out["measure"][m] = cm.measure
        if len(near):
            cr = _Creases.at(W[m], arch, x, near, cm.lam, cm.c, cm.families, Z[m] > 0)
            out["ridges"][m] = int(np.sum(_ridges(cr.lam_f, cr.c_f, gtol)))
            out["falls"][m] = int(np.sum(_falls(cr.lam_f, cr.c_f, gtol)))
            out["vees"][m] = int(np.sum(_interior(cr.lam_f) & (cr.c_f > 0)))
    return out


# =============================================================================
# Classification: second-order conditions on the smooth piece or the kink manifold
# =============================================================================
def symmetry_modes(w, arch: Arch) -> np.ndarray:
    """The rescaling directions of the K N hidden units at w: (K N, P), not normalised.

    Scaling unit j of layer l by e^a (incoming weights and bias times e^a,
    outgoing weights times e^-a) leaves the network's function unchanged, so
    the loss is constant along these curves and the Hessian has a zero mode in
    each tangent direction (an exact flat direction of the landscape's
    parametrisation, not of its function).
    """
    w = np.asarray(w, dtype=np.float64)
    v = arch.unpack(w)
    R = np.zeros((arch.K * arch.N, arch.P))
    blocks = {n: (off, shape) for n, shape, off in arch.table}
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        on, _ = arch.layer_blocks(layer + 1)
        (woff, wshape), (boff, _), (ooff, oshape) = blocks[wn], blocks[bn], blocks[on]
        for j in range(arch.N):
            r = R[(layer - 1) * arch.N + j]
            cols = woff + j * wshape[1] + np.arange(wshape[1])
            r[cols] = v[wn][j]
            r[boff + j] = v[bn][j]
            ocols = ooff + np.arange(oshape[0]) * oshape[1] + j
            r[ocols] = -v[on][:, j]
    return R


def _null_basis(A, P, rtol=1e-10):
    """Orthonormal basis (P, k) of the vectors orthogonal to the rows of A."""
    if len(A) == 0:
        return np.eye(P)
    _, sv, Vt = np.linalg.svd(A, full_matrices=True)
    rank = int(np.sum(sv > rtol * max(sv.max(), 1e-300)))
    return Vt[rank:].T


#: flat creases whose pieces are all enumerated by :func:`_flat_sides` (2^16 pieces, ~5 s)
MAX_FLAT_PIECES = 2 ** 16


def _flat_sides(w, arch, x, t, cr: _Creases, R, z, gtol, tol_rel, fd_step):
    """The second-order test of a Clarke-stationary kink point with creases that are
    flat to first order on one side or both (c = dL/dh = 0, or lam at 0 or 1).

    To first order the loss changes across crease f by c_f ((1 - lam_f) s^+ + lam_f s^-)
    (s the step along its normal), so a side is flat where its slope is at most
    ``gtol``. Creases with no flat side (V-shaped) are held: T is the tangent space of
    their manifold minus the rescaling modes. Each flat side is a piece of the loss
    (masks 1 on an 'on' side, 0 on an 'off' side; the held creases weighted by lam as
    in the Lagrangian, Lewis 2002), and along T the loss is, to second order, the
    quadratic form of the piece of the orthant a step enters (the pieces agree on the
    creases to second order because the jumps there vanish). A sufficient condition
    for a minimum to second order is that every piece's Hessian is positive
    semidefinite on T; a piece with a negative curvature whose direction (or its
    opposite) lies in that piece's own orthant is a direction of descent to second
    order (a nonsmooth saddle). Anything else is left open.

    The loss is a sum over training points, so with the creases grouped by shared
    points (:func:`relunet.kinks.kink_groups` with ``second_order``) the Hessian of
    a piece is H_0 (every two-sided flat crease off) plus one change per group
    (measured to ~1e-16 of the largest curvature): one Hessian (:func:`_lagrangian_hessian`)
    per group pattern, then a Cholesky test of H_0 + tol I + the changes for every
    combination (at most MAX_FLAT_PIECES; patterns whose change is positive
    semidefinite are dominated by 'all off' and dropped), stopping at the first
    piece that descends. Returns ('minimum' | 'saddle' | 'open', pieces).

    ``cr``: the point's creases; R: its rescaling modes (rows); z: its pre-activations.

    Cost: one Hessian per group pattern (k + 1 for k creases at different points)
    and up to 2^16 Cholesky factorisations of ~110 x 110 (~4 s); classify on the
    default run's 350 quenched points (104 with flat creases) 13 s in all. The 2^16
    cap leaves a point with about 17 or more flat creases open (measured once: the
    default run's one such point, 21 creases, has all 2,097,152 pieces positive
    semidefinite, in 5 minutes).
    """
    ent, fams = cr.ent, cr.fams
    on_flat = (1 - cr.lam_f) * np.abs(cr.c_f) <= gtol
    off_flat = cr.lam_f * np.abs(cr.c_f) <= gtol
    held = ~on_flat & ~off_flat
    unit = cr.Nz / np.linalg.norm(cr.Nz, axis=1)[:, None]
    normals = np.array([unit[f[0]] for f in fams])
    Q = _null_basis(np.vstack([normals[held], R]), arch.P)
    base = (z > 0).astype(float)
    base[ent[:, 0] - 1, ent[:, 1], ent[:, 2]] = cr.lam
    for f in np.flatnonzero(~held):          # a one-sided flat crease: its flat side
        e = ent[fams[f]]
        base[e[:, 0] - 1, e[:, 1], e[:, 2]] = 0.0 if off_flat[f] else 1.0
    two = np.flatnonzero(on_flat & off_flat)       # creases flat on both sides
    rows = [fams[f] for f in two]
    ends = np.cumsum([0] + [len(r) for r in rows])
    groups = [two[g].tolist() for g in kink_groups(
        ent[np.concatenate(rows)] if rows else ent[:0],
        [np.arange(ends[i], ends[i + 1]) for i in range(len(rows))], second_order=True)]

    def piece(on):
        m = base.copy()
        for f in on:
            e = ent[fams[f]]
            m[e[:, 0] - 1, e[:, 1], e[:, 2]] = 1.0
        return m
    same_point = {}                          # the exact part, shared by every piece
    H0 = _lagrangian_hessian(w, arch, x, t, base, Q, fd_step, same_point)
    big = max(np.abs(np.linalg.eigvalsh(H0)).max(), 1e-300)
    tol = tol_rel * big
    options = []                             # per group: (pattern, change) of its pieces
    for g in groups:
        opts = [((), np.zeros_like(H0))]
        for code in range(1, 2 ** len(g)):
            on = tuple(f for b, f in enumerate(g) if code >> b & 1)
            D = _lagrangian_hessian(w, arch, x, t, piece(on), Q, fd_step, same_point) - H0
            # a change that is positive semidefinite (to tol / groups, so that the dropped
            # ones add up to at most tol) is dominated by the group's 'all off' pattern
            if np.linalg.eigvalsh(D)[0] < -tol / len(groups):
                opts.append((on, D))
        options.append(opts)
    n_pieces = int(np.prod([len(o) for o in options]))
    if n_pieces > MAX_FLAT_PIECES:
        return "open", 0
    shift = tol * np.eye(len(H0))
    free = np.flatnonzero(~held)
    A = normals[free] @ Q

    def descends(H, on):
        """A negative curvature of piece ``on`` inside its own orthant (a descent)."""
        ev, V = np.linalg.eigh(H)
        sign = np.where(on_flat[free] & ~off_flat[free], 1.0, -1.0)     # one-sided: its side
        sign[np.isin(free, on)] = 1.0
        return any(np.all(sign * (A @ y) >= -1e-9) or np.all(sign * (A @ y) <= 1e-9)
                   for y in V[:, ev < -tol].T)

    def walk(i, H, on):
        """'minimum' if every piece below is positive semidefinite, 'saddle' at the first
        piece that descends, else 'open'."""
        if i == len(options):
            try:
                np.linalg.cholesky(H + shift)
                return "minimum"
            except np.linalg.LinAlgError:
                return "saddle" if descends(H, on) else "open"
        verdict = "minimum"
        for o, D in options[i]:
            v = walk(i + 1, H + D, on + o)
            if v == "saddle":
                return v
            if v == "open":
                verdict = "open"
        return verdict
    return walk(0, H0, ()), n_pieces


def classify(W, arch: Arch, x, t, cert: dict | None = None, tol_rel: float = 1e-8,
             fd_step: float = 1e-5, gtol: float = GTOL) -> dict:
    """Type of each (certified) stationary point, from second-order information.

    * smooth points: eigenvalues of the exact Hessian (:func:`relunet.hessian.hessian`)
      on the complement of the rescaling modes (:func:`symmetry_modes`);
    * kink points: each kink is a *crease* of the loss. With c_a = dL/dh_a and
      lam_a the weight of the 'on' side in the Clarke certificate, a crease is
      V-shaped (the loss rises on both sides) when c_a > 0 and 0 < lam_a < 1,
      and a ridge (it falls on both sides: a nonsmooth saddle) when c_a < 0,
      0 < lam_a < 1 and both downhill slopes exceed ``gtol`` (:func:`_ridges`).
      A crease with c_a < 0 that falls on one side only (lam_a at 0 or 1, or one
      slope below ``gtol``) also offers a descent direction (:func:`_falls`)
      and counts in the index like a ridge; what is left (c_a = 0, or lam_a at
      0 or 1 with c_a > 0: flat to first order on one side or both) the
      first-order test cannot settle: the second-order test of every piece on
      the flat sides does (:func:`_flat_sides`): all positive semidefinite, a
      kink minimum; a negative curvature inside its piece's orthant, a kink
      saddle; otherwise (or beyond 2^16 pieces) 'degenerate-kink', left open.
      Along the kink manifold
      the loss is smooth; its Hessian there (the Hessian of the Lagrangian,
      the piece with masks lam_a on the kinks, Lewis 2002) is taken on the
      tangent space minus the rescaling modes (:func:`_lagrangian_hessian`:
      exact on the points the masks leave alone, central differences of the
      masked gradient on the others).

    A curvature counts as zero when |lambda| <= tol_rel * max|lambda|.

    Returns a dict of (M,) arrays: ``type`` ('global-minimum' for zero loss,
    'minimum', 'saddle', 'kink-minimum', 'kink-saddle', 'degenerate-kink' or
    'uncertified'), ``index`` (negative curvatures, plus creases the loss falls
    across: ridges and one-sided ones), ``n_flat`` (zero curvatures beyond the
    symmetry modes: dead units and other flat directions), ``n_sym`` (rescaling
    modes removed), ``n_creases``, ``min_curv`` (lowest reduced eigenvalue),
    ``n_flat_creases`` (creases flat to first order, settled or left open by the
    second-order test), ``pieces`` (the pieces that test enumerated) and ``margin``
    (no falling crease decides the type, and whether a curvature is negative changes
    with a zero tolerance 10x tighter or looser: the type rests on a curvature near
    the tolerance, rounding's level for the central differences it is computed with).
    """
    W = np.asarray(check_stack(W, arch), dtype=np.float64)
    if cert is None:
        cert = certify(W, arch, x, t)
    M = len(W)
    out = {"type": np.empty(M, object), "index": np.full(M, -1), "n_flat": np.full(M, -1),
           "n_sym": np.zeros(M, int), "n_creases": np.zeros(M, int),
           "min_curv": np.full(M, np.nan), "n_flat_creases": np.zeros(M, int),
           "margin": np.zeros(M, bool),
           "pieces": np.zeros(M, int)}
    smooth = np.flatnonzero(cert["certified"] & (cert["n_kinks"] == 0))
    Hs = hessian(W[smooth], arch, x, t) if smooth.size else np.zeros((0, arch.P, arch.P))
    Hs_of = dict(zip(smooth.tolist(), Hs))
    Z = preactivations(W, arch, x)
    for m in range(M):
        if not cert["certified"][m]:
            out["type"][m] = "uncertified"
            continue
        if cert["kind"][m] == "zero-loss":
            out["type"][m] = "global-minimum"
            out["index"][m] = 0
            continue
        R = symmetry_modes(W[m], arch)
        R = R[np.linalg.norm(R, axis=1) > 0]
        ent = cert["entries"][m]
        if m in Hs_of:
            Q = _null_basis(R, arch.P)
            Hr = Q.T @ Hs_of[m] @ Q
            n_fall, n_deg = 0, 0
        else:
            cr = _Creases.at(W[m], arch, x, ent, cert["lam"][m], cert["c"][m],
                             cert["families"][m], Z[m] > 0)
            falls = _falls(cr.lam_f, cr.c_f, gtol)              # ridges and one-sided ones
            n_fall = int(np.sum(falls))
            # neither V-shaped nor falling: flat to first order on a side
            n_deg = int(np.sum(~falls & ~(_interior(cr.lam_f) & (cr.c_f > 0))))
            masks = (Z[m] > 0).astype(float)
            masks[ent[:, 0] - 1, ent[:, 1], ent[:, 2]] = cr.lam
            Q = _null_basis(np.vstack([cr.Nz, R]), arch.P)
            Hr = _lagrangian_hessian(W[m], arch, x, t, masks, Q, fd_step)
            out["n_creases"][m] = len(cr.fams)
        ev = np.linalg.eigvalsh(Hr) if Hr.size else np.zeros(0)
        big = np.abs(ev).max() if ev.size else 0.0
        zero = np.abs(ev) <= tol_rel * max(big, 1e-300)
        n_neg = int(np.sum((ev < 0) & ~zero))
        # the curvature's verdict (any negative?) with a zero tolerance 10x tighter and
        # 10x looser: where they differ, and no falling crease decides, the type rests on
        # a curvature near the tolerance
        tight = np.any(ev < -0.1 * tol_rel * big)
        loose = np.any(ev < -10.0 * tol_rel * big)
        out["margin"][m] = n_fall == 0 and tight != loose
        out["n_sym"][m] = arch.P - Q.shape[1] - (cert["rank"][m] if m not in Hs_of else 0)
        out["n_flat"][m] = int(zero.sum())
        out["index"][m] = n_neg + n_fall
        out["min_curv"][m] = float(ev[0]) if ev.size else np.nan
        if m in Hs_of:
            out["type"][m] = "minimum" if n_neg == 0 else "saddle"
        elif n_neg + n_fall > 0:
            out["type"][m] = "kink-saddle"
        elif n_deg:
            verdict, out["pieces"][m] = _flat_sides(W[m], arch, x, t, cr, R, Z[m], gtol,
                                                    tol_rel, fd_step)
            out["n_flat_creases"][m] = n_deg
            out["type"][m] = {"minimum": "kink-minimum", "saddle": "kink-saddle",
                              "open": "degenerate-kink"}[verdict]
            out["index"][m] += verdict == "saddle"
        else:
            out["type"][m] = "kink-minimum"
    out["type"] = out["type"].astype(str)
    return out
