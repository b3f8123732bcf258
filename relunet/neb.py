"""Batched band methods: minimum energy paths between two points.

Used for G&W Sec. 3.3 / Fig. 4: paths in the 136-dimensional weight space from
the global minimum W_f to trained minima. The methods are generic: the energy
is any batched function ``efun(X) -> (E, G)`` with X (n, D), E (n,), G (n, D)
(for networks: ``lambda X: kernels.loss_and_grad(X, arch, x, t)``).

This module: :func:`neb`, the nudged elastic band with the improved tangent,
climbing image and FIRE, converged on the largest force (for smooth energies).
On a piecewise-smooth energy such as a ReLU network's loss that criterion
cannot be met (the force jumps at every kink); :mod:`relunet.string_method`
holds the string method with a criterion that keeps its meaning there, and
Fig. 4 uses it. Both report per band whether they converged and what they
measured; the band's helpers (straight start, tangents, arc length, checks)
live here and serve both.

The band
--------
A band is a stack R[B, D] of B images, R_0 = start and R_{B-1} = end fixed,
the B - 2 images between them movable (``n_images`` = B counts both
endpoints). It starts on the straight line R_i = start + i/(B-1) (end - start).
Many bands are relaxed together: all movable images of all unfinished bands go
through ONE ``efun`` call per iteration. The rest of an iteration (tangents,
forces, FIRE, step cap) runs in two numba kernels over the band arrays,
``_forces_kernel`` and ``_move_kernel``; the NumPy functions :func:`tangents`,
:func:`neb_forces`, ``_fire_step`` and ``_cap`` state the same equations
readably, and the tests hold the kernels to them (to ~1e-12: the sums run in
another order).

Forces (Jonsson, Mills & Jacobsen 1998; Henkelman & Jonsson 2000, "H&J")
-----------------------------------------------------------------------
With tau_i the unit tangent at image i, the NEB force is

    F_i = -grad V(R_i) + (grad V(R_i) . tau_i) tau_i                (true force, perp.)
          + k (|R_{i+1} - R_i| - |R_i - R_{i-1}|) tau_i             (spring force, par.)

The true force pulls the band downhill sideways only, the springs act only
along the band and keep the images evenly spaced; neither disturbs the other
("nudging"). Tangent: the improved tangent of H&J, J. Chem. Phys. 113, 9978
(2000), Eqs. 8-11. With tau+ = R_{i+1} - R_i, tau- = R_i - R_{i-1}:

    tau = tau+                       if V_{i+1} > V_i > V_{i-1}       (Eq. 8)
    tau = tau-                       if V_{i+1} < V_i < V_{i-1}       (Eq. 8)
    otherwise (image i is an extremum along the band), with
    dVmax = max(|V_{i+1}-V_i|, |V_{i-1}-V_i|), dVmin = min(...)      (Eq. 9)
    tau = tau+ dVmax + tau- dVmin    if V_{i+1} > V_{i-1}             (Eq. 10)
    tau = tau+ dVmin + tau- dVmax    if V_{i+1} <= V_{i-1}            (Eq. 11)

then normalised. Taking the uphill neighbour avoids the kinks that the
central-difference tangent produces where the path curves. (If both energy
differences vanish, a flat stretch, we use tau+ + tau-.)

Climbing image (Henkelman, Uberuaga & Jonsson, J. Chem. Phys. 113, 9901
(2000), Eq. 5): the highest image i_max feels no spring and the inverted
parallel true force,

    F_imax = -grad V + 2 (grad V . tau) tau,

so it climbs along the band and descends across it: at convergence it sits on
the saddle point. It is switched on per band after ``climb_after`` iterations,
or earlier once that band's plain NEB force is below ``climb_fmax``, and i_max
is re-chosen at every iteration.

Optimiser: FIRE (Bitzek et al., PRL 97, 170201 (2006)) per band
---------------------------------------------------------------
Velocity Verlet-like MD with unit mass; the band's velocity v (all its movable
images as one vector) is mixed toward the force direction,
v <- (1 - a) v + a |v| F/|F|. If P = F.v > 0 for more than N_min steps, dt
grows (x f_inc, up to dt_max) and a shrinks (x f_alpha); if P <= 0 the band
stops (v = 0), dt shrinks (x f_dec) and a resets. Then v += dt F, and each
image moves by dt v, capped at ``max_step`` (per image). Standard parameters:
N_min 5, f_inc 1.1, f_dec 0.5, a_start 0.1, f_alpha 0.99. Every band has its
own (v, dt, a, counter), so a band's result does not depend on which other
bands share the batch (bit for bit, given a row-independent ``efun``).
Stability: this explicit integrator diverges on a mode of curvature lambda when
dt > 2/sqrt(lambda), and FIRE does not notice (P stays > 0 while the mode
grows with alternating sign), so dt_max must respect the stiffest curvature,
including the springs' 4k: dt_max < 2/sqrt(max(lambda_max, 4k)). ``max_step``
bounds the damage; on ReLU networks (lambda_max ~ 1e3 at W_f) the kinks reset
FIRE often enough that dt stays near 0.02 with the defaults.

Convergence, honestly reported
------------------------------
A band has converged when max_i |F_i| <= ``fmax`` over its movable images (with
climbing: only after climbing started, the climbing image counted with its full
force). Converged bands are frozen and no longer evaluated. ReLU networks make
the forces discontinuous (gradients jump across kinks), so a network band may
oscillate above a tight ``fmax`` until ``max_iter``: the result says per band
whether it converged and what its final force is; nothing is assumed.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numba
import numpy as np
from numba import njit

from ._numba import STRICT
from .fast.stack import thread_pool

__all__ = ["NEBResult", "neb", "linear_path", "tangents", "neb_forces"]

# FIRE's standard parameters (Bitzek et al. 2006).
FIRE_N_MIN, FIRE_F_INC, FIRE_F_DEC, FIRE_ALPHA_START, FIRE_F_ALPHA = 5, 1.1, 0.5, 0.1, 0.99


def _dot(a, b):
    """Row-wise dot product over the last axis: (..., D), (..., D) -> (...)."""
    return np.einsum("...d,...d->...", a, b)


@dataclass
class NEBResult:
    """Relaxed bands. Bn = number of bands, B = images per band incl. endpoints.

    After :meth:`squeeze` (single band) the leading Bn axis is gone; the
    methods work on both forms.
    """

    images: np.ndarray       # (Bn, B, D)  band positions; [:, 0] = start, [:, -1] = end
    energies: np.ndarray     # (Bn, B)     efun energies of the images
    distance: np.ndarray     # (Bn, B)     cumulative arc length, distance[:, 0] = 0
    converged: np.ndarray    # (Bn,) bool  max NEB force <= fmax reached
    iterations: np.ndarray   # (Bn,) int   optimiser steps taken
    fmax_final: np.ndarray   # (Bn,)       max NEB force norm at the final images
    climbing: np.ndarray     # (Bn,) int   climbing image index, -1 if none

    def barrier(self, from_end: bool = False) -> np.ndarray:
        """Highest band energy minus the start energy (or the end's): (Bn,)."""
        ref = self.energies[..., -1] if from_end else self.energies[..., 0]
        return self.energies.max(axis=-1) - ref

    def peak(self) -> np.ndarray:
        """The highest-energy image of each band: (Bn, D)."""
        i = np.argmax(self.energies, axis=-1)[..., None, None]
        return np.take_along_axis(self.images, i, axis=-2)[..., 0, :]

    def squeeze(self) -> "NEBResult":
        """Drop the band axis of a single-band result."""
        if self.images.ndim != 3 or self.images.shape[0] != 1:
            raise ValueError(f"squeeze needs a result with exactly one band, "
                             f"got images of shape {self.images.shape}")
        return replace(self, **{f: getattr(self, f)[0] for f in self.__dataclass_fields__})


# =============================================================================
# Band geometry and forces (vectorised over bands)
# =============================================================================
def linear_path(start, end, n_images: int) -> np.ndarray:
    """Straight bands: (Bn, D) start/end -> (Bn, B, D), endpoints copied exactly."""
    s = np.linspace(0.0, 1.0, n_images)[None, :, None]
    X = (1.0 - s) * start[:, None, :] + s * end[:, None, :]
    X[:, 0], X[:, -1] = start, end
    return X


def tangents(X, E) -> np.ndarray:
    """Improved unit tangents (H&J 2000, Eqs. 8-11) at the movable images.

    X : (Bn, B, D) bands;  E : (Bn, B) energies.  Returns tau : (Bn, B-2, D).
    """
    return _tangents(np.diff(X, axis=1), E)


def _tangents(dX, E):
    """Tangents from the segments dX[:, i] = R_{i+1} - R_i, (Bn, B-1, D)."""
    tp, tm = dX[:, 1:], dX[:, :-1]                  # tau+, tau- (Bn, B-2, D)
    Ep, E0, Em = E[:, 2:], E[:, 1:-1], E[:, :-2]
    up = (Ep > E0) & (E0 > Em)                      # Eq. 8, first case
    down = (Ep < E0) & (E0 < Em)                    # Eq. 8, second case
    dmax = np.maximum(np.abs(Ep - E0), np.abs(Em - E0))   # Eq. 9
    dmin = np.minimum(np.abs(Ep - E0), np.abs(Em - E0))
    wp = np.where(Ep > Em, dmax, dmin)              # Eq. 10 / Eq. 11
    wm = np.where(Ep > Em, dmin, dmax)
    flat = dmax == 0.0
    wp = np.where(up, 1.0, np.where(down, 0.0, np.where(flat, 1.0, wp)))
    wm = np.where(up, 0.0, np.where(down, 1.0, np.where(flat, 1.0, wm)))
    tau = wp[..., None] * tp
    tau += wm[..., None] * tm
    norm = np.sqrt(_dot(tau, tau))
    tau /= np.where(norm > 0.0, norm, 1.0)[..., None]   # coincident images: tau = 0
    return tau


def neb_forces(X, E, G, k: float, climbing) -> np.ndarray:
    """NEB force on the movable images.

    X : (Bn, B, D), E : (Bn, B), G : (Bn, B, D) gradients, k : spring constant,
    climbing : (Bn,) int index of each band's climbing image, -1 for none.
    Returns F : (Bn, B-2, D).
    """
    dX = np.diff(X, axis=1)                         # (Bn, B-1, D) segments
    tau = _tangents(dX, E)                          # (Bn, B-2, D)
    Gm = G[:, 1:-1]
    g_par = _dot(Gm, tau)                           # (Bn, B-2)
    seg = np.sqrt(_dot(dX, dX))                     # (Bn, B-1) segment lengths
    c_par = k * (seg[:, 1:] - seg[:, :-1])          # spring, along tau only
    is_climb = np.arange(1, X.shape[1] - 1)[None, :] == np.asarray(climbing)[:, None]
    c_par = np.where(is_climb, g_par, c_par)        # climbing: -G + 2 (G.tau) tau
    # perpendicular true force (g_par tau - G) plus the parallel part c_par tau
    F = (g_par + c_par)[..., None] * tau
    F -= Gm
    return F


def _rows(idx, n):
    """Index for rows idx of n: a slice (view, no copy) when idx is all of them."""
    return slice(None) if idx.size == n else idx


def _arc_length(X) -> np.ndarray:
    """(Bn, B, D) -> (Bn, B) cumulative distance along each band."""
    seg = np.sqrt(_dot(np.diff(X, axis=1), np.diff(X, axis=1)))
    return np.concatenate([np.zeros_like(seg[:, :1]), np.cumsum(seg, axis=1)], axis=1)


# =============================================================================
# Optimisers: one step for a set of bands, each band with its own state
# =============================================================================
def _fire_step(F, F2, v, dt, alpha, n_pos, dt_max):
    """One FIRE step (Bitzek et al. 2006) for n bands, each with its own state.

    F, v : (n, B-2, D) forces and velocities;  F2 : (n, B-2) squared per-image
    force norms;  dt, alpha : (n,) float;  n_pos : (n,) int steps since P <= 0.
    Returns (dr (n, B-2, D) uncapped displacement, v, dt, alpha, n_pos).
    """
    P = _dot(F, v).sum(axis=1)                      # (n,) power of each band
    Fn = np.sqrt(F2.sum(axis=1))
    vn = np.sqrt(_dot(v, v).sum(axis=1))
    pos = P > 0.0
    neg = ~pos & (vn > 0.0)                         # v = 0: fresh start, no verdict yet
    # v <- (1 - a) v + a |v| F/|F| if P > 0;  v <- 0 if P <= 0;  then v += dt F
    c_v = np.where(pos, 1.0 - alpha, np.where(neg, 0.0, 1.0))
    c_F = np.where(pos & (Fn > 0.0), alpha * vn / np.where(Fn > 0.0, Fn, 1.0), 0.0)
    grow = pos & (n_pos > FIRE_N_MIN)
    dt = np.where(grow, np.minimum(dt * FIRE_F_INC, dt_max), np.where(neg, dt * FIRE_F_DEC, dt))
    alpha = np.where(grow, alpha * FIRE_F_ALPHA, np.where(neg, FIRE_ALPHA_START, alpha))
    n_pos = np.where(pos, n_pos + 1, np.where(neg, 0, n_pos))
    v = c_v[:, None, None] * v
    v += (c_F + dt)[:, None, None] * F
    return dt[:, None, None] * v, v, dt, alpha, n_pos


def _cap(dr, max_step):
    """Scale each image's displacement dr (n, B-2, D) in place to length <= max_step."""
    norm = np.sqrt(_dot(dr, dr))
    dr *= np.where(norm > max_step, max_step / np.where(norm > 0, norm, 1.0), 1.0)[..., None]
    return dr



# =============================================================================
# numba kernels: the same arithmetic, one band at a time
# =============================================================================
# The functions above are the readable reference (the NumPy twin, held to these
# kernels by the tests); the driver runs these. The element-wise equations are
# those of the twin, term for term. Each band is a sequential loop of its own,
# so its bits do not depend on the other bands of the batch, and the kernels are
# serial (no prange): numba's thread pool next to the energy kernel's threads
# made them several times slower on a busy machine, and serial they take well
# under the energy call. Sums over D run in 4 interleaved partial sums
# (:func:`_vdot`, a fixed order that the compiler vectorises on every CPU), so
# they differ from NumPy's (einsum, pairwise) in the last bits.
@njit(cache=True, fastmath=STRICT)
def _vdot(a, b):
    """a . b of two 1-d arrays: partial sums over d = 0, 1, 2, 3 (mod 4), then
    (s0 + s1) + (s2 + s3), then the remaining n % 4 terms in order."""
    n = a.size
    n4 = n - n % 4
    s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
    for d in range(0, n4, 4):
        s0 += a[d] * b[d]
        s1 += a[d + 1] * b[d + 1]
        s2 += a[d + 2] * b[d + 2]
        s3 += a[d + 3] * b[d + 3]
    s = (s0 + s1) + (s2 + s3)
    for d in range(n4, n):
        s += a[d] * b[d]
    return s


@njit(cache=True, fastmath=STRICT)
def _tangent_weights(Ep, E0, Em):
    """(w+, w-) of the improved tangent tau = w+ tau+ + w- tau- (Eqs. 8-11), as in
    :func:`_tangents`, NaN in any energy giving NaN weights as there."""
    if Ep > E0 and E0 > Em:                         # Eq. 8, first case
        return 1.0, 0.0
    if Ep < E0 and E0 < Em:                         # Eq. 8, second case
        return 0.0, 1.0
    dp, dm = abs(Ep - E0), abs(Em - E0)             # Eq. 9
    if dp != dp or dm != dm:
        return np.nan, np.nan
    dmax, dmin = (dp, dm) if dp >= dm else (dm, dp)
    if dmax == 0.0:                                 # flat stretch: tau+ + tau-
        return 1.0, 1.0
    if Ep > Em:                                     # Eq. 10
        return dmax, dmin
    return dmin, dmax                               # Eq. 11


@njit(cache=True, nogil=True, fastmath=STRICT)
def _forces_kernel(X, E, G, rows, k, climb_on, F, F2, ci):
    """NEB forces of bands ``rows`` (see :func:`neb_forces`), written to row j of
    F (n, B-2, D), their squared norms to F2 (n, B-2) and the climbing image
    (argmax of the movable energies if ``climb_on[band]``, else -1) to ci (n,)."""
    B, D = X.shape[1], X.shape[2]
    dX, seg, tau = np.empty((B - 1, D)), np.empty(B - 1), np.empty(D)
    for j in range(rows.size):
        b = rows[j]
        c = -1
        if climb_on[b]:                             # np.argmax: first maximum, first NaN
            c, best = 1, E[b, 1]
            if best == best:
                for i in range(2, B - 1):
                    e = E[b, i]
                    if e != e:
                        c = i
                        break
                    if e > best:
                        c, best = i, e
        ci[j] = c
        for i in range(B - 1):                      # segments R_{i+1} - R_i, their lengths
            for d in range(D):
                dX[i, d] = X[b, i + 1, d] - X[b, i, d]
            seg[i] = np.sqrt(_vdot(dX[i], dX[i]))
        for i in range(1, B - 1):
            wp, wm = _tangent_weights(E[b, i + 1], E[b, i], E[b, i - 1])
            for d in range(D):
                tau[d] = wp * dX[i, d] + wm * dX[i - 1, d]
            norm = np.sqrt(_vdot(tau, tau))
            if norm > 0.0:                          # coincident images: tau = 0
                for d in range(D):
                    tau[d] /= norm
            g_par = _vdot(G[b, i], tau)
            c_par = g_par if i == c else k * (seg[i] - seg[i - 1])
            for d in range(D):
                F[j, i - 1, d] = (g_par + c_par) * tau[d] - G[b, i, d]
            F2[j, i - 1] = _vdot(F[j, i - 1], F[j, i - 1])


@njit(cache=True, nogil=True, fastmath=STRICT)
def _move_kernel(X, F, F2, jrows, bands, v, dtb, alpha, n_pos, fire, dt_sd, dt_max, max_step,
                 Xout):
    """Move band ``bands[q]`` by its force row ``jrows[q]`` of F: one FIRE step
    (:func:`_fire_step`, updating v, dtb, alpha, n_pos of the band) or a steepest
    descent step dt_sd F, capped per image (:func:`_cap`); the new movable images
    also go to rows q (B-2) ... (q+1) (B-2) - 1 of Xout, the next ``efun`` call."""
    B, D = X.shape[1], X.shape[2]
    dr = np.empty(D)
    for q in range(bands.size):
        j, b = jrows[q], bands[q]
        dt = dt_sd                                  # steepest descent: dr = dt F
        if fire:
            P, F2s, V2 = 0.0, 0.0, 0.0
            for i in range(B - 2):
                P += _vdot(F[j, i], v[b, i])
                F2s += F2[j, i]
                V2 += _vdot(v[b, i], v[b, i])
            Fn, vn, dt, a = np.sqrt(F2s), np.sqrt(V2), dtb[b], alpha[b]
            pos = P > 0.0
            neg = not pos and vn > 0.0              # v = 0: fresh start, no verdict yet
            c_v = 1.0 - a if pos else (0.0 if neg else 1.0)
            c_F = a * vn / Fn if pos and Fn > 0.0 else 0.0
            if pos and n_pos[b] > FIRE_N_MIN:
                dt, a = min(dt * FIRE_F_INC, dt_max), a * FIRE_F_ALPHA
            elif neg:
                dt, a = dt * FIRE_F_DEC, FIRE_ALPHA_START
            n_pos[b] = n_pos[b] + 1 if pos else (0 if neg else n_pos[b])
            dtb[b], alpha[b] = dt, a
            c_F += dt
        for i in range(B - 2):
            if fire:
                for d in range(D):
                    v[b, i, d] = c_v * v[b, i, d] + c_F * F[j, i, d]
                    dr[d] = dt * v[b, i, d]
            else:
                for d in range(D):
                    dr[d] = dt * F[j, i, d]
            norm = np.sqrt(_vdot(dr, dr))
            scale = max_step / norm if norm > max_step else 1.0
            row = q * (B - 2) + i
            for d in range(D):
                X[b, i + 1, d] += dr[d] * scale
                Xout[row, d] = X[b, i + 1, d]


def _forces_numpy(X, E, G, rows, k, climb_on, F, F2, ci):
    """The NumPy twin of :func:`_forces_kernel` (same arguments, same outputs)."""
    Ea = E[rows]
    c = np.where(climb_on[rows], np.argmax(Ea[:, 1:-1], axis=1) + 1, -1)
    Fa = neb_forces(X[rows], Ea, G[rows], k, c)
    n = rows.size
    F[:n], F2[:n], ci[:n] = Fa, _dot(Fa, Fa), c


def _move_numpy(X, F, F2, jrows, bands, v, dtb, alpha, n_pos, fire, dt_sd, dt_max, max_step,
                Xout):
    """The NumPy twin of :func:`_move_kernel` (same arguments, same outputs)."""
    Fm, F2m = F[jrows], F2[jrows]
    if fire:
        dr, v[bands], dtb[bands], alpha[bands], n_pos[bands] = _fire_step(
            Fm, F2m, v[bands], dtb[bands], alpha[bands], n_pos[bands], dt_max)
    else:
        dr = dt_sd * Fm
    X[bands, 1:-1] += _cap(dr, max_step)
    Xout[:] = X[bands, 1:-1].reshape(Xout.shape)


_STEPS = (_forces_kernel, _move_kernel)     #: what :func:`neb` runs; tests swap in the twins
_NUMPY_STEPS = (_forces_numpy, _move_numpy)

# =============================================================================
# Driver
# =============================================================================
def _evaluate(efun, X):
    """efun on (n, D) points, checked: returns E (n,), G (n, D) float64."""
    out = efun(X)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("efun must return a tuple (E, G)")
    E, G = np.asarray(out[0], dtype=np.float64), np.asarray(out[1], dtype=np.float64)
    if E.shape != X.shape[:1] or G.shape != X.shape:
        raise ValueError(f"efun(X) with X of shape {X.shape} must return E of shape "
                         f"{X.shape[:1]} and G of shape {X.shape}, got {E.shape} and {G.shape}")
    return E, G


def _check_endpoints(start, end):
    arrs = []
    for name, a in (("start", start), ("end", end)):
        a = np.asarray(a)
        if a.dtype.kind not in "fiu" or a.ndim not in (1, 2) or a.size == 0:
            raise ValueError(f"{name} must be a real array of shape (D,) or (Bn, D), "
                             f"got {a.dtype} array of shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains non-finite values")
        arrs.append(np.atleast_2d(a.astype(np.float64)))
    s, e = arrs
    same_bn = s.shape[0] == e.shape[0] or 1 in (s.shape[0], e.shape[0])
    if s.shape[1] != e.shape[1] or not same_bn:
        raise ValueError(f"start and end must have shapes (D,) or (Bn, D) with the same D "
                         f"and Bn, got {np.shape(start)} and {np.shape(end)}")
    Bn = max(s.shape[0], e.shape[0])
    return np.broadcast_to(s, (Bn, s.shape[1])), np.broadcast_to(e, (Bn, s.shape[1]))


def _check_number(name, value, integer=False, zero_ok=False):
    """ValueError unless value is a finite (integer) number > 0 (>= 0 if zero_ok)."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'>= 0' if zero_ok else '> 0'}, got {value!r}")


def neb(efun, start, end, n_images: int = 32, k_spring: float = 1.0, climb: bool = False,
        climb_after: int = 100, climb_fmax: float | None = None, fmax: float = 1e-3,
        max_iter: int = 10000, optimizer: str = "fire", dt: float = 0.1,
        dt_max: float | None = None, max_step: float = 0.2) -> NEBResult:
    """Relax Bn nudged elastic bands at once (see the module docstring).

    Parameters
    ----------
    efun : callable X (n, D) -> (E (n,), G (n, D)); called once per iteration on
        the movable images of all unfinished bands. It must treat rows
        independently for bands to be independent of each other.
    start, end : (D,) or (Bn, D) fixed endpoints; a (D,) one is shared by all bands.
    n_images : B, images per band INCLUDING both endpoints (>= 3).
    k_spring : spring constant k (> 0).
    climb : use a climbing image, switched on per band at iteration
        ``climb_after`` or once the band's force is <= ``climb_fmax``
        (default 10 * fmax), whichever comes first.
    fmax : convergence threshold on the largest per-image NEB force norm.
    max_iter : at most this many optimiser steps per band.
    optimizer : "fire" (default) or "sd" (steepest descent: R += dt F).
    dt, dt_max : FIRE's initial and largest time step (dt_max default 10 dt).
    max_step : largest displacement of one image in one step.
        dt, dt_max and max_step carry the units of the problem: choose them so that
        dt^2 |F| and max_step are small against the features of the surface
        (Mueller-Brown: dt 1e-3, max_step 0.01; double well: dt 0.01).

    Returns
    -------
    NEBResult with band axis Bn (also for one band; see ``NEBResult.squeeze``).
    ``converged`` is True only for bands whose final force is <= fmax; others
    stopped at ``max_iter`` (or on non-finite values, with a RuntimeWarning).
    On ReLU networks the force jumps across kinks and many bands stay above a
    tight fmax: read ``converged`` and ``fmax_final``, do not assume convergence.
    """
    if not callable(efun):
        raise ValueError(f"efun must be callable X (n, D) -> (E, G), got {type(efun).__name__}")
    S, T = _check_endpoints(start, end)             # (Bn, D) each
    _check_number("n_images", n_images, integer=True)
    if n_images < 3:
        raise ValueError(f"n_images must be >= 3 (two endpoints and a movable image), "
                         f"got {n_images}")
    for name, val in (("k_spring", k_spring), ("fmax", fmax), ("dt", dt), ("max_step", max_step)):
        _check_number(name, val)
    _check_number("max_iter", max_iter, integer=True, zero_ok=True)
    _check_number("climb_after", climb_after, integer=True, zero_ok=True)
    climb_fmax = 10.0 * fmax if climb_fmax is None else climb_fmax
    _check_number("climb_fmax", climb_fmax)
    dt_max = 10.0 * dt if dt_max is None else dt_max
    _check_number("dt_max", dt_max)
    if dt_max < dt:
        raise ValueError(f"dt_max must be >= dt, got dt_max={dt_max} < dt={dt}")
    if optimizer not in ("fire", "sd"):
        raise ValueError(f"optimizer must be 'fire' or 'sd', got {optimizer!r}")

    Bn, D = S.shape
    B = n_images
    X = linear_path(S, T, B)                        # (Bn, B, D)
    E, G = _evaluate(efun, X.reshape(Bn * B, D))
    E, G = E.reshape(Bn, B), G.reshape(Bn, B, D)
    v = np.zeros((Bn, B - 2, D))                    # FIRE state, per band
    dtb, alpha = np.full(Bn, float(dt)), np.full(Bn, FIRE_ALPHA_START)
    n_pos = np.zeros(Bn, np.int64)
    climbing_on = np.zeros(Bn, bool)
    done, converged = np.zeros(Bn, bool), np.zeros(Bn, bool)
    iters, f_now, c_idx = np.zeros(Bn, int), np.full(Bn, np.inf), np.full(Bn, -1)

    forces_all, move_all = _STEPS
    F, F2 = np.empty((Bn, B - 2, D)), np.empty((Bn, B - 2))    # rows: unfinished bands
    ci = np.empty(Bn, dtype=np.int64)
    # the band arithmetic in two threads, each on half of the bands (the kernels
    # release the GIL; every band is computed by the same code whichever thread takes
    # it, so the bits do not depend on the split): between two energy calls the
    # machine's second core is otherwise idle
    pool = thread_pool(1) if Bn >= 8 and numba.get_num_threads() > 1 else None

    def forces(X, E, G, a, k, climbing_on, F, F2, ci):
        h = a.size // 2
        if pool is None or h == 0:
            return forces_all(X, E, G, a, k, climbing_on, F, F2, ci)
        other = pool.submit(forces_all, X, E, G, a[:h], k, climbing_on, F[:h], F2[:h], ci[:h])
        forces_all(X, E, G, a[h:], k, climbing_on, F[h:a.size], F2[h:a.size], ci[h:a.size])
        other.result()

    def move(X, F, F2, jm, m, v, dtb, alpha, n_pos, fire, dt, dt_max, max_step, Xm):
        h = m.size // 2
        if pool is None or h == 0:
            return move_all(X, F, F2, jm, m, v, dtb, alpha, n_pos, fire, dt, dt_max, max_step,
                            Xm)
        cut = h * (B - 2)
        other = pool.submit(move_all, X, F, F2, jm[:h], m[:h], v, dtb, alpha, n_pos, fire, dt,
                            dt_max, max_step, Xm[:cut])
        move_all(X, F, F2, jm[h:], m[h:], v, dtb, alpha, n_pos, fire, dt, dt_max, max_step,
                 Xm[cut:])
        other.result()
    return _neb_loop(efun, X, E, G, v, dtb, alpha, n_pos, climbing_on, done, converged,
                     iters, f_now, c_idx, F, F2, ci, forces, move, max_iter, k_spring,
                     climb, climb_after, climb_fmax, fmax, optimizer, dt, dt_max,
                     max_step, Bn, B, D)


def _neb_loop(efun, X, E, G, v, dtb, alpha, n_pos, climbing_on, done, converged, iters, f_now,
              c_idx, F, F2, ci, forces, move, max_iter, k_spring, climb, climb_after,
              climb_fmax, fmax, optimizer, dt, dt_max, max_step, Bn, B, D):
    """The iterations of :func:`neb` (its state passed in, updated in place)."""
    for it in range(max_iter + 1):
        a = np.flatnonzero(~done)                   # unfinished bands
        if a.size == 0:
            break
        na = a.size
        forces(X, E, G, a, float(k_spring), climbing_on, F, F2, ci)     # F[:na] of bands a
        fb = np.sqrt(F2[:na].max(axis=1))           # (na,) largest image force
        if climb:
            switch = ~climbing_on[a] & ((it >= climb_after) | (fb <= climb_fmax))
            if switch.any():                        # start climbing with a fresh FIRE state
                climbing_on[a[switch]] = True
                v[a[switch]], n_pos[a[switch]] = 0.0, 0
                alpha[a[switch]] = FIRE_ALPHA_START
                forces(X, E, G, a, float(k_spring), climbing_on, F, F2, ci)
                fb = np.sqrt(F2[:na].max(axis=1))
        f_now[a], c_idx[a] = fb, ci[:na]
        conv = (fb <= fmax) & (climbing_on[a] | (not climb))
        bad = ~np.isfinite(fb)
        stop = conv | bad | (it == max_iter)
        converged[a[conv]] = True
        done[a[stop]] = True
        iters[a[stop]] = it
        if bad.any():
            warnings.warn(f"{bad.sum()} band(s) met non-finite energies or forces and were "
                          f"stopped (converged=False)", RuntimeWarning, stacklevel=3)
        if stop.all():
            continue
        jm = np.flatnonzero(~stop)                  # rows of F that move, bands m
        m = a[jm]
        Xm = np.empty((m.size * (B - 2), D))        # their new movable images
        move(X, F, F2, jm, m, v, dtb, alpha, n_pos, optimizer == "fire", float(dt),
             float(dt_max), float(max_step), Xm)
        Em, Gm = _evaluate(efun, Xm)
        sel = _rows(m, Bn)
        E[sel, 1:-1], G[sel, 1:-1] = Em.reshape(-1, B - 2), Gm.reshape(-1, B - 2, D)

    return NEBResult(images=X, energies=E, distance=_arc_length(X), converged=converged,
                     iterations=iters, fmax_final=f_now, climbing=c_idx)
