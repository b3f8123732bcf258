"""Transition states: refine a band's highest point into a first-order saddle.

A nudged elastic band or string gives a path and its highest image; the
transition state is the saddle point of index 1 near that image, where the
gradient vanishes and the Hessian has exactly one negative eigenvalue. We
find it by eigenvector-following with the exact Hessian, in the partitioned
rational-function form (P-RFO: Banerjee, Adams, Simons & Shepard, J. Phys.
Chem. 89, 52 (1985); Baker, J. Comput. Chem. 7, 385 (1986); the hybrid
eigenvector-following of Munro & Wales, Phys. Rev. B 59, 3969 (1999) is its
close relative in pele and OPTIM).

The step
--------
In the eigenbasis of H (eigenvalues l_0 <= l_1 <= ..., gradient components
g_i), the lowest mode is maximised and all others minimised:

    s_0 = -g_0 / (l_0 - m_up),    m_up = (l_0 + sqrt(l_0^2 + 4 g_0^2)) / 2   (> l_0)
    s_i = -g_i / (l_i - m_dn),    m_dn = lowest eigenvalue of [[diag(l_i), g], [g^T, 0]]
                                          over i >= 1                           (< l_i)

so the step climbs along mode 0 and descends along the rest whatever the
signs of the l_i; it is then capped at the trust radius. A step that raises
the gradient norm is refused and the radius shrinks; an accepted one lets it
grow back up to ``radius`` (on a ReLU loss the Hessian of one piece says
little about the next, so long steps are never trusted). Directions in which the
energy is exactly constant by symmetry (for networks: the rescaling of each
hidden unit, :func:`relunet.quench.symmetry_modes`) are projected out first,
so a zero mode is never mistaken for the mode to climb.

Certificate
-----------
A point counts as a transition state when |grad| <= gtol, the reduced
Hessian has exactly one eigenvalue below -tol_rel max|l|, and (for networks,
:func:`network_saddles`) no pre-activation lies within ``gap`` of its kink,
so the energy is smooth there. A ReLU loss can also peak ON a kink (a ridge
crease); such a point is reported as ``kink`` and not refined further.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SaddleResult", "StationaryResult", "find_saddles", "network_saddles",
           "newton_stationary"]


@dataclass
class SaddleResult:
    X: np.ndarray            # (n, D) final points
    E: np.ndarray            # (n,) energies there
    gnorm: np.ndarray        # (n,) gradient norms
    index: np.ndarray        # (n,) negative eigenvalues of the reduced Hessian
    converged: np.ndarray    # (n,) bool: gnorm <= gtol and index == 1 (and smooth)
    iterations: np.ndarray   # (n,) int
    moved: np.ndarray        # (n,) distance from the start
    kind: np.ndarray         # (n,) str: 'saddle', 'kink', 'not-index-1', 'not-converged'


def _reduced(H, g, modes):
    """Eigenpairs of H and components of g on the complement of ``modes`` (k, D)."""
    D = H.shape[0]
    if modes is None or len(modes) == 0:
        Q = np.eye(D)
    else:
        _, sv, Vt = np.linalg.svd(np.atleast_2d(modes), full_matrices=True)
        Q = Vt[int(np.sum(sv > 1e-10 * max(sv.max(), 1e-300))):].T
    lam, U = np.linalg.eigh(Q.T @ H @ Q)
    return lam, Q @ U, U.T @ (Q.T @ g)


def prfo_step(g, H, radius, modes=None, reduced=None):
    """One P-RFO step (module docstring), capped at ``radius``. Returns (s, lam).

    ``reduced``: ``_reduced(H, g, modes)`` if the caller has it already."""
    lam, V, gv = _reduced(H, g, modes) if reduced is None else reduced
    s = np.zeros_like(gv)
    up = 0.5 * (lam[0] + np.sqrt(lam[0] ** 2 + 4.0 * gv[0] ** 2))
    s[0] = -gv[0] / (lam[0] - up) if lam[0] != up else 0.0
    if lam.size > 1:
        A = np.zeros((lam.size, lam.size))
        A[:-1, :-1] = np.diag(lam[1:])
        A[:-1, -1] = A[-1, :-1] = gv[1:]
        dn = np.linalg.eigvalsh(A)[0]
        den = lam[1:] - dn
        s[1:] = -gv[1:] / np.where(np.abs(den) > 1e-300, den, 1e-300)
    step = V @ s
    n = np.linalg.norm(step)
    if n > radius:
        step *= radius / n
    return step, lam


def find_saddles(grad_hess, X0, modes=None, gtol: float = 1e-9, tol_rel: float = 1e-8,
                 max_iter: int = 100, radius: float = 0.05, smooth=None,
                 grad=None) -> SaddleResult:
    """Refine starting points X0 (n, D) into index-1 saddles by P-RFO.

    grad_hess : callable X (m, D) -> (E (m,), G (m, D), H (m, D, D)).
    grad : optional callable X (m, D) -> (E, G), the same E and G as grad_hess.
        Trial points are then judged by it, and Hessians are computed only where
        a step is accepted (most steps near a kink are refused, and a Hessian
        costs P gradients).
    modes : optional callable x (D,) -> (k, D) exact zero modes to project out.
    smooth : optional callable x (D,) -> bool, False when x sits on (or too
        near) a kink; such points are reported as kind 'kink'.
    """
    X = np.array(np.atleast_2d(X0), dtype=np.float64)
    X0 = X.copy()
    n = len(X)
    rad = np.full(n, float(radius))
    it = np.zeros(n, int)
    done = np.zeros(n, bool)
    index = np.full(n, -1)
    E, G, H = grad_hess(X)
    gn = np.linalg.norm(G, axis=1)
    # the reduced eigenproblem of each point (the costly part of an iteration), kept
    # for the step and for the next iterations until the point moves
    red = [None] * n
    for _ in range(max_iter + 1):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        for i in act:
            if red[i] is None:
                red[i] = _reduced(H[i], G[i], modes(X[i]) if modes else None)
            lam = red[i][0]
            tol = tol_rel * max(np.abs(lam).max(), 1e-300)
            index[i] = int(np.sum(lam < -tol))
            if gn[i] <= gtol and index[i] == 1:
                done[i] = True
        act = np.flatnonzero(~done & (it < max_iter))
        if act.size == 0:
            break
        S = np.array([prfo_step(G[i], H[i], rad[i], reduced=red[i])[0] for i in act])
        if grad is None:
            E2, G2, H2 = grad_hess(X[act] + S)
        else:
            E2, G2 = grad(X[act] + S)
        gn2 = np.linalg.norm(G2, axis=1)
        better = gn2 < gn[act]                 # a step that raises |grad| is refused
        ok = act[better]
        for i in ok:
            red[i] = None
        X[ok] += S[better]
        E[ok], G[ok], gn[ok] = E2[better], G2[better], gn2[better]
        if grad is None:
            H[ok] = H2[better]
        elif ok.size:
            H[ok] = grad_hess(X[ok])[2]
        step = np.linalg.norm(S, axis=1)
        rad[act] = np.where(better, np.minimum(2.0 * np.maximum(rad[act], step), radius),
                            0.25 * step)
        it[act] += 1
    kind = np.where(done, "saddle", np.where(gn > gtol, "not-converged", "not-index-1"))
    if smooth is not None:
        on_kink = np.array([not smooth(x) for x in X])
        kind = np.where(on_kink, "kink", kind)
        done &= ~on_kink
    return SaddleResult(X=X, E=E, gnorm=gn, index=index, converged=done, iterations=it,
                        moved=np.linalg.norm(X - X0, axis=1), kind=kind.astype(str))


def network_saddles(W0, arch, x, t, gap: float = 1e-6, **kw) -> SaddleResult:
    """:func:`find_saddles` on the MSE of networks: exact Hessians from
    :mod:`relunet.hessian`, gradients on the pieces :mod:`relunet.kinks` sees,
    rescaling modes projected out, and points within ``gap`` of a kink
    reported as 'kink'."""
    from .hessian import _one_blas_thread, hessian
    from .kinks import masked_loss_and_grad, preactivations
    from .quench import symmetry_modes

    def grad(X):
        return masked_loss_and_grad(X, arch, x, t, preactivations(X, arch, x) > 0)

    def grad_hess(X):
        return grad(X) + (hessian(X, arch, x, t),)

    def smooth(w):
        return bool(np.abs(preactivations(w[None], arch, x)).min() > gap)

    # every matrix here is P x P or smaller: BLAS threads cost more than they bring
    # (4x the time on a busy 2-core machine; the results are the same)
    with _one_blas_thread():
        return find_saddles(grad_hess, W0, modes=lambda w: symmetry_modes(w, arch),
                            smooth=smooth, grad=grad, **kw)


@dataclass
class StationaryResult:
    X: np.ndarray            # (n, P) final points
    E: np.ndarray            # (n,) losses there
    certified: np.ndarray    # (n,) bool: relunet.quench.certify holds
    type: np.ndarray         # (n,) str: relunet.quench.classify's type ('uncertified' if not)
    index: np.ndarray        # (n,) its index (negative curvatures + creases the loss falls across)
    measure: np.ndarray      # (n,) the certificate's stationarity measure at the end
    iterations: np.ndarray   # (n,) Newton steps taken
    moved: np.ndarray        # (n,) distance from the start


def newton_stationary(W0, arch, x, t, max_iter: int = 25, max_step: float = 0.01,
                      tau: float | None = None) -> StationaryResult:
    """Newton's method on the stationarity conditions of a ReLU network's loss, from
    each row of W0, to the nearest stationary point whatever its index.

    The quench's SQP step (:func:`relunet.quench._manifold_step`) minimises along the
    kinks a point sits on and takes a step only if the loss falls; a saddle is not a
    minimum, so here nothing is asked of the loss. At each iterate the kinks within
    ``tau`` (default :data:`relunet.quench.TAU`) of zero are taken, the nearest point
    g of their Clarke subdifferential to 0 gives each one's weight lam
    (:func:`relunet.kinks.clarke_measure`), those with 0 < lam < 1 are held (the
    creases the point would sit on), and the step solves the Newton equation of the
    loss restricted to them on their tangent space minus the rescaling modes,
    H_lam s = -g (H_lam: the Hessian of the piece with masks lam,
    :func:`relunet.quench._lagrangian_hessian`; eigenvalues below 1e-8 of the
    largest left out), capped at ``max_step``, then put back onto the held kinks.
    This is the Newton-KKT iteration of the manifold of partial smoothness (Lewis
    2002; the VU-Newton of Mifflin & Sagastizabal 2005; Nocedal & Wright 2006,
    Ch. 18) with no merit function: it converges quadratically to a stationary
    point on that manifold from close enough and may wander from farther. Where no
    kink is near it is plain Newton on the smooth loss. Stops when the quench's
    certificate holds (:func:`relunet.quench.certify`) or after ``max_iter`` steps;
    the certified points are then typed by :func:`relunet.quench.classify` (an index-1
    saddle is a transition state, smooth or on kinks).
    """
    from .hessian import _one_blas_thread
    from .kernels import check_data
    from .kinks import preactivation_grads, preactivations
    from .net import check_stack
    from .quench import (
        TAU,
        _held_creases,
        _lagrangian_hessian,
        _loss_one,
        _null_basis,
        _onto_kinks,
        certify,
        classify,
        symmetry_modes,
    )
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not (np.isfinite(max_step) and max_step > 0):
        raise ValueError(f"max_step must be a finite number > 0, got {max_step!r}")
    tau = TAU if tau is None else tau
    W = np.array(check_stack(W0, arch), dtype=np.float64)
    if not np.all(np.isfinite(W)):
        raise ValueError("W0 contains non-finite values: refine only finite networks "
                         "(drop diverged ones first)")
    W0 = W.copy()
    X, T = check_data(arch, x, t)
    its = np.zeros(len(W), int)
    with _one_blas_thread():
        for m in range(len(W)):
            w = W[m]
            for _ in range(max_iter):
                if certify(w[None], arch, x, t)["certified"][0]:
                    break
                z = preactivations(w[None], arch, x)[0]
                creases = _held_creases(w, arch, x, t, z, tau)
                if creases is None:         # too many coupled kinks to enumerate
                    break
                cm, masks, held = creases
                R = symmetry_modes(w, arch)
                R = R[np.linalg.norm(R, axis=1) > 0]
                N = preactivation_grads(w, arch, x, held, z > 0) if len(held) else \
                    np.zeros((0, arch.P))
                Q = _null_basis(np.vstack([N, R]), arch.P)
                e, V = np.linalg.eigh(_lagrangian_hessian(w, arch, x, t, masks, Q, 1e-6))
                keep = np.abs(e) > 1e-8 * max(np.abs(e).max(), 1e-300)
                c = np.zeros(len(e))
                c[keep] = -(V[:, keep].T @ (Q.T @ cm.g_min)) / e[keep]
                s = Q @ (V @ c)
                n = np.linalg.norm(s)
                if n > max_step:
                    s *= max_step / n
                w = w + s
                if len(held):
                    w = _onto_kinks(w, arch, x, held)
                its[m] += 1
            W[m] = w
    cert = certify(W, arch, x, t)
    cl = classify(W, arch, x, t, cert)
    return StationaryResult(X=W, E=np.array([_loss_one(w, arch, X, T) for w in W]),
                            certified=cert["certified"], type=cl["type"], index=cl["index"],
                            measure=cert["measure"], iterations=its,
                            moved=np.linalg.norm(W - W0, axis=1))
