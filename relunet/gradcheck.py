"""Finite-difference checks of analytic gradients, reported per parameter block.

Central differences, in float64:

    dL/dw_p  ~  (L(w + eps e_p) - L(w - eps e_p)) / (2 eps),   error O(eps^2),

for every coordinate (tiny networks), or along random unit directions u
(``u . grad`` against the same difference along u) for larger ones, as in JAX's
``check_grads``. ReLU networks are only piecewise smooth: move the inputs off
the kinks (no pre-activation within ~eps of 0) or the check compares two sides
of a kink. :func:`eps_sweep` prints the error against eps, the classic picture
(truncation error falls as eps^2 until rounding error, ~1e-16/eps, takes over).
"""
from __future__ import annotations

import numpy as np

from .kernels import loss, loss_and_grad
from .net import Arch

__all__ = ["fd_gradient", "block_errors", "directional_check", "eps_sweep"]


def fd_gradient(w, arch: Arch, x, t, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the MSE at one network w (P,), all coordinates."""
    w = np.asarray(w, dtype=np.float64)
    E = np.eye(arch.P) * eps
    lp = loss(w[None, :] + E, arch, x, t)       # all +eps perturbations in one call
    lm = loss(w[None, :] - E, arch, x, t)
    return (lp - lm) / (2.0 * eps)


def block_errors(g, g_ref, arch: Arch) -> dict[str, float]:
    """Max relative error per named block: max|g - g_ref| / (max|g_ref| + 1e-12)."""
    a, b = arch.unpack(np.asarray(g)), arch.unpack(np.asarray(g_ref))
    return {n: float(np.max(np.abs(a[n] - b[n])) / (np.max(np.abs(b[n])) + 1e-12))
            for n in arch.names()}


def directional_check(w, arch: Arch, x, t, n_dirs: int = 8, eps: float = 1e-6, rng=None):
    """(analytic u.g, finite-difference u.g) along ``n_dirs`` random unit directions."""
    rng = np.random.default_rng(rng)
    w = np.asarray(w, dtype=np.float64)
    U = rng.standard_normal((n_dirs, arch.P))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    _, g = loss_and_grad(w, arch, x, t)
    analytic = U @ g[0]
    fd = (loss(w + eps * U, arch, x, t) - loss(w - eps * U, arch, x, t)) / (2 * eps)
    return analytic, fd


def eps_sweep(w, arch: Arch, x, t, eps_list=(1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9),
              out=print):
    """Print the max gradient error for each eps (the V-shaped error curve)."""
    _, g = loss_and_grad(w, arch, x, t)
    rows = []
    for eps in eps_list:
        err = float(np.max(np.abs(fd_gradient(w, arch, x, t, eps) - g[0])))
        rows.append((eps, err))
        out(f"eps={eps:8.1e}  max|fd - grad| = {err:.3e}")
    return rows
