"""Exact Hessian of the MSE of K x N ReLU networks, from R-operator HVPs.

G&W Sec. 3.5 study "the eigenvalues of the energy Hessian at all minima". This
module gives the exact Hessian H = d^2 L / dw dw of the loss of every network
of a stack, its eigenpairs, and a summary of its spectrum with explicit
tolerances.

The R-operator (Pearlmutter 1994, "Fast exact multiplication by the Hessian",
Neural Computation 6:147)
--------------------------------------------------------------------------
For a direction v in parameter space define, for any quantity f computed from
the weights,

    R_v{f} = d/dr f(w + r v) |_{r=0}      (a forward-mode directional derivative).

Then R_v{grad L} = H v. R obeys the rules of differentiation (linear, product
rule, R{w} = v, R{data} = 0, R{sigma(z)} = sigma'(z) R{z}), so applying it line
by line to the forward AND the backward pass gives H v exactly, at the cost of
about two gradients. With delta = dL/d(.), scale = 2 / (S n_out), V_l, c_l the
blocks of v that sit where W_l, b_l sit, and * the elementwise product:

    forward                          R-forward (R{h_0} = 0)
    z_l = W_l h_{l-1} + b_l          R{z_l} = V_l h_{l-1} + W_l R{h_{l-1}} + c_l
    h_l = relu(z_l)                  R{h_l} = relu'(z_l) * R{z_l}
    y   = W_o h_K + b_o              R{y}   = V_o h_K + W_o R{h_K} + c_o

    backward                         R-backward = H v, block by block
    dy     = scale (y - t)           R{dy}     = scale R{y}
    g_Wo   = dy h_K^T                R{g_Wo}   = R{dy} h_K^T + dy R{h_K}^T
    g_bo   = sum_s dy                R{g_bo}   = sum_s R{dy}
    dh_K   = W_o^T dy                R{dh_K}   = V_o^T dy + W_o^T R{dy}
    dz_l   = relu'(z_l) * dh_l       R{dz_l}   = relu'(z_l) * R{dh_l}
    g_Wl   = dz_l h_{l-1}^T          R{g_Wl}   = R{dz_l} h_{l-1}^T + dz_l R{h_{l-1}}^T
    g_bl   = sum_s dz_l              R{g_bl}   = sum_s R{dz_l}
    dh_l-1 = W_l^T dz_l              R{dh_l-1} = V_l^T dz_l + W_l^T R{dz_l}

The R{dz_l} line would carry a term relu''(z_l) R{z_l} * dh_l; relu'' is zero
everywhere except at the kink z = 0, a set of measure zero, so it is dropped.
Within one activation region (a fixed on/off pattern of every unit at every
training point) y(x_s; w) is a polynomial in w (multilinear across layers), the
loss is smooth, and the formulas above are its exact Hessian; off the kinks
this is THE Hessian. The full Hessian is H e_p for all P unit vectors (P HVPs,
batched in one kernel call: by default the R-operator pass generated beside
the training kernel, vectors over points, :mod:`relunet.fast.codegen`; or the
plain numba loops of :mod:`relunet.hvp_kernels`, ``kernel="plain"``); in floating point
H is symmetric to rounding (~1e-15 relative, reported by :func:`hessian`)
and is then symmetrised as (H + H^T) / 2.

Gauss-Newton decomposition
--------------------------
With residuals r_s = y_s - t_s and J the (S n_out, P) Jacobian of the outputs,

    H = (2 / (S n_out)) J^T J  +  (2 / (S n_out)) sum_s r_s d^2 y_s / dw^2.

The R{dy} path of the R-backward pass gives the first (Gauss-Newton) term, the
dy R{h}^T and V^T dz terms (both proportional to the residuals) the second.
d^2 y_s is NOT zero for a ReLU network: y is multilinear in the weights of
different layers, so it has off-diagonal blocks between layers.

On kinks, and at W_f
--------------------
ReLU'(0) is taken as 0 (a unit exactly at its kink counts as off), as in
:mod:`relunet.kernels` (and TensorFlow/Keras). At W_f many pre-activations are
EXACTLY 0: at the knots (x = k/16, +-1/3), and on whole intervals where a unit
passes on the exact 0 of an upstream unit that is off (the zero-bias spline
pass-through units, the sawtooth pairs): 1,426 of the 25 x 341 (unit, point)
pairs. The loss is not twice differentiable there; H is the Hessian of the
smooth branch on which all those units are off, the branch whose gradient
training uses. It is convention-dependent: relu'(0) = 1 would give another top
eigenvalue and more flat directions at raw W_f. The loss and every residual are
0 at W_f, so the second term vanishes and H = (2/S) J^T J (relu'(0) = 0 Jacobian) is positive
semi-definite. Every live hidden unit (nonzero incoming and outgoing weights)
gives one flat direction (incoming weights and bias times a, outgoing weights
over a, leaves y unchanged), so H has at least 25 zero eigenvalues; W_f has more
(the count is in figures/REPORT.md, section Hessian spectra).

Rounding decides the branch at such points. A positive rescaling w -> D w
keeps every sign, zeros included, in exact arithmetic, so H(D w) = D^-1 H(w)
D^-1 (differentiate L(D w) = L(w) twice). In floating point only powers of 2
keep the zeros exact: after the norm-minimising rescaling with real factors
those zeros become +-1e-17 whose signs depend on the summation order (the
kernel and its NumPy twin then differ there by far more than rounding), so H
computed directly at ``relunet.symmetry.canonicalize(W_f)`` lies on another
branch: its top eigenvalue within a few percent, its count of flat directions
different (tests/test_hessian.py, ``test_wf_canonical_top_eigenvalue``, bounds
the eigenvalue). The clean way to the Hessian of canonical W_f is the
congruence above applied to H at raw W_f, with D from the log-scales of
``relunet.symmetry.rescale_min_norm``; its top eigenvalue is the
construction's own check, about 1.7e3.

Zero eigenvalues: the tolerance
-------------------------------
:func:`spectrum_summary` counts lambda as zero when

    |lambda| <= max(tol_abs, tol_rel * max_i |lambda_i|)

per network. Default tol_rel = 1e-11: 300 times the rounding floor (eigh's
backward error is at most ~ P u ||H|| ~ 3e-14 ||H|| for P = 136; the HVPs'
rounding is of the same order) and more than two orders of magnitude below the
smallest genuine curvature of W_f, raw or canonical (its flat eigenvalues sit
at the rounding floor).
tol_abs = 1e-12 makes an all-zero Hessian read as all-zero. Both are
arguments: a small genuine curvature below the tolerance counts as flat.
"""
from __future__ import annotations

import contextlib

import numpy as np
import scipy.linalg

from .fast.stack import hvp as fast_hvp
from .hvp_kernels import hessian_ref, hvp_ref, prepare, rop_kernel
from .kernels import _which
from .net import Arch

__all__ = ["hvp", "hvp_ref", "hessian", "hessian_ref", "eigen", "spectrum_summary",
           "log_histogram", "TOL_REL", "TOL_ABS"]

TOL_REL = 1e-11     #: default relative zero tolerance (see module docstring)
TOL_ABS = 1e-12     #: default absolute zero tolerance

_BLOCK = 34         # directions per prange iteration (136 = 4 x 34)
_FAST_BATCH = 64    # networks per call of the vector kernel (64 x 136 rows of 136)


# =============================================================================
# Hessian-vector products and full Hessians
# =============================================================================
def hvp(W, arch: Arch, x, t, V, kernel: str = "auto") -> np.ndarray:
    """Exact Hessian-vector products H(w_m) v_m for a stack of networks.

    Parameters
    ----------
    W : (M, P) or (P,) parameters (computed in float64).
    arch : the networks' :class:`~relunet.net.Arch`.
    x, t : (S,) / (S, n_in) inputs and (S,) / (S, n_out) targets.
    V : (M, P) or (P,), one direction per network.
    kernel : 'fast' the R-operator pass generated beside the training kernel
        (``relunet.fast.stack.hvp``, vectors over points), 'plain'
        :func:`relunet.hvp_kernels.rop_kernel`, 'auto' (default) 'fast' when
        N <= ``fast.NMAX``. They agree to rounding. Where a pre-activation is
        exactly 0 the rounding decides the branch (module docstring); at raw
        W_f both kernels keep its exact zeros (products and sums of its dyadic
        weights are exact in either order: the same Hessian to 3e-15 and the same
        93 zero eigenvalues, tests/test_hessian.py).

    Returns
    -------
    HV : (M, P) float64.
    """
    W, X, T, V = prepare(W, arch, x, t, V)
    if _which(kernel, arch) == "fast":
        return fast_hvp(W, V, arch.K, arch.N, X, T)
    return rop_kernel(W, X, T, V[:, None, :], False, arch.K, arch.N, 1)[:, 0, :]


def hessian(W, arch: Arch, x, t, *, symmetrize: bool = True,
            return_asymmetry: bool = False, kernel: str = "auto"):
    """Exact Hessians of the MSE of every network: H e_p for all unit vectors.

    Parameters
    ----------
    W : (M, P) or (P,) parameters;  x, t : data as in :func:`hvp`.
    symmetrize : return (H + H^T) / 2 (default) or the raw rows H[m, p] = (H e_p)^T.
    return_asymmetry : also return max|H - H^T| / max|H| per network (taken
        before symmetrising; 0 for H = 0): rounding level, a check of the kernel.
    kernel : as in :func:`hvp` ('auto': the vector kernel, P unit directions per
        network as P rows).

    Returns
    -------
    H : (M, P, P) float64 [, asym : (M,)]. Memory 8 M P^2 bytes (148 MB for
    1,000 5x5 networks): chunk larger stacks.
    """
    W, X, T, _ = prepare(W, arch, x, t)
    if _which(kernel, arch) == "fast":
        M, P = W.shape
        H = np.empty((M, P, P))
        eye = np.eye(P)
        for m0 in range(0, M, _FAST_BATCH):         # P rows per network: bounded memory
            m1 = min(M, m0 + _FAST_BATCH)
            rows = np.repeat(W[m0:m1], P, axis=0)
            H[m0:m1] = fast_hvp(rows, np.tile(eye, (m1 - m0, 1)), arch.K, arch.N, X,
                                T).reshape(m1 - m0, P, P)
    else:
        H = rop_kernel(W, X, T, W[:, None, :], True, arch.K, arch.N, min(_BLOCK, arch.P))
    if return_asymmetry:
        HT = np.transpose(H, (0, 2, 1))
        big = np.abs(H).max(axis=(1, 2))
        asym = np.abs(H - HT).max(axis=(1, 2)) / np.where(big > 0, big, 1.0)
    if symmetrize:
        H = 0.5 * (H + np.transpose(H, (0, 2, 1)))
    return (H, asym) if return_asymmetry else H


# =============================================================================
# Eigenpairs and the summary of a spectrum
# =============================================================================
_BLAS = []          # the process's threadpoolctl controller, found once (about 2 ms each time)


def _one_blas_thread():
    """Single-threaded BLAS for a loop of small eigh calls, when threadpoolctl is
    installed (a no-op otherwise). For P = 136, OpenBLAS's threads cost far more
    than they bring (``benchmarks/bench_hessian.py`` times eigh this way)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def eigen(H_or_W, arch: Arch | None = None, x=None, t=None, *, vectors: bool = False):
    """Eigenvalues (ascending) and optionally eigenvectors of symmetric Hessians.

    Call as ``eigen(H)`` with H (M, P, P) or (P, P), or as
    ``eigen(W, arch, x, t)`` to build the Hessians first. Uses
    scipy.linalg.eigh on each matrix (only the lower triangle is read).

    Returns
    -------
    evals : (M, P) ascending [, evecs : (M, P, P), evecs[m][:, i] the unit
    eigenvector of evals[m, i]]. A single (P, P) matrix gives (P,) [, (P, P)].
    """
    single = False
    if arch is not None:
        H = hessian(H_or_W, arch, x, t)
    else:
        if x is not None or t is not None:
            raise ValueError("x and t need arch: call eigen(W, arch, x, t) or eigen(H)")
        H = np.asarray(H_or_W, dtype=np.float64)
        single = H.ndim == 2
        if single:
            H = H[None]
        if H.ndim != 3 or H.shape[1] != H.shape[2] or H.shape[1] == 0:
            raise ValueError(f"H must have shape (P, P) or (M, P, P), got {np.shape(H_or_W)}")
        if not np.all(np.isfinite(H)):
            raise ValueError("H contains non-finite values (NaN or inf)")
    M, P, _ = H.shape
    evals = np.empty((M, P))
    evecs = np.empty((M, P, P)) if vectors else None
    with _one_blas_thread():
        for m in range(M):
            if vectors:
                evals[m], evecs[m] = scipy.linalg.eigh(H[m], check_finite=False)
            else:
                evals[m] = scipy.linalg.eigh(H[m], eigvals_only=True, check_finite=False)
    if single:
        return (evals[0], evecs[0]) if vectors else evals[0]
    return (evals, evecs) if vectors else evals


def _check_evals(evals, tol_rel, tol_abs):
    ev = np.asarray(evals, dtype=np.float64)
    single = ev.ndim == 1
    ev = ev[None] if single else ev
    if ev.ndim != 2 or ev.shape[1] == 0 or not np.all(np.isfinite(ev)):
        raise ValueError(f"evals must be a finite (P,) or (M, P) array, "
                         f"got shape {np.shape(evals)}")
    if not all(np.isscalar(v) and v >= 0 for v in (tol_rel, tol_abs)):
        raise ValueError(f"tol_rel and tol_abs must be scalars >= 0, "
                         f"got {tol_rel!r}, {tol_abs!r}")
    ev = np.sort(ev, axis=1)
    zero_tol = np.maximum(tol_abs, tol_rel * np.abs(ev).max(axis=1))   # (M,)
    return ev, single, zero_tol


def spectrum_summary(evals, tol_rel: float = TOL_REL, tol_abs: float = TOL_ABS) -> dict:
    """Counts of negative / zero / positive eigenvalues, extremes, conditioning.

    lambda counts as zero when |lambda| <= zero_tol = max(tol_abs, tol_rel max|lambda|)
    (per network; see the module docstring for the defaults).

    Parameters
    ----------
    evals : (P,) or (M, P) eigenvalues, any order.

    Returns
    -------
    dict of (M,) arrays (scalars for (P,) input): ``n_neg``, ``n_zero``,
    ``n_pos``, ``min``, ``max``, ``zero_tol``, ``min_pos`` (smallest eigenvalue
    above zero_tol; nan if none), ``cond_pos`` = max / min_pos (condition number
    of H restricted to its non-flat positive part; nan if none),
    ``neg_ratio`` = |min| / max|lambda| if n_neg > 0 else 0 (how negative the
    most negative curvature is, relative); plus ``sorted``: (M, P) or (P,)
    ascending eigenvalues, for figures.
    """
    ev, single, zero_tol = _check_evals(evals, tol_rel, tol_abs)
    tol = zero_tol[:, None]
    neg, pos = ev < -tol, ev > tol
    n_neg, n_pos = neg.sum(axis=1), pos.sum(axis=1)
    min_pos = np.where(pos, ev, np.inf).min(axis=1)
    min_pos = np.where(np.isfinite(min_pos), min_pos, np.nan)
    big = np.abs(ev).max(axis=1)
    out = {
        "n_neg": n_neg, "n_zero": ev.shape[1] - n_neg - n_pos, "n_pos": n_pos,
        "min": ev[:, 0], "max": ev[:, -1], "zero_tol": zero_tol, "min_pos": min_pos,
        "cond_pos": ev[:, -1] / min_pos,
        "neg_ratio": np.where(n_neg > 0, -ev[:, 0] / np.where(big > 0, big, 1.0), 0.0),
        "sorted": ev,
    }
    if single:
        out = {k: (v[0] if k == "sorted" else v[0].item()) for k, v in out.items()}
    return out


def log_histogram(evals, bins=None, tol_rel: float = TOL_REL, tol_abs: float = TOL_ABS) -> dict:
    """Histogram of log10|lambda| of the nonzero eigenvalues, by sign (for figures).

    Parameters
    ----------
    evals : (P,) or (M, P), pooled over all networks.
    bins : edges in log10|lambda| (default: one per half decade spanning the data).

    Returns
    -------
    dict: ``edges`` (B+1,), ``pos`` (B,) counts of lambda > zero_tol, ``neg`` (B,)
    counts of lambda < -zero_tol (by |lambda|), ``n_zero`` (int).
    """
    ev, _, zero_tol = _check_evals(evals, tol_rel, tol_abs)
    tol = zero_tol[:, None]
    pos, neg = ev[ev > tol], -ev[ev < -tol]
    logs = np.log10(np.concatenate([pos, neg]))
    if bins is None:
        lo = np.floor(2 * logs.min()) / 2 if logs.size else 0.0
        hi = np.ceil(2 * logs.max()) / 2 if logs.size else 1.0
        bins = np.arange(lo, max(hi, lo + 0.5) + 0.25, 0.5)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bins must be a strictly increasing 1-D array of >= 2 edges")

    def counts(a):
        return np.histogram(np.log10(a), edges)[0] if a.size else np.zeros(edges.size - 1, int)

    return {"edges": edges, "pos": counts(pos), "neg": counts(neg),
            "n_zero": int(ev.size - pos.size - neg.size)}
