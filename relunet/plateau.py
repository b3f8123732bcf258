"""The plateau of constant networks: a path between ANY two networks that never rises above
the loss of the best constant predictor.

Why it matters
--------------
A band (NEB, string) between two minima gives an upper bound on the barrier
between them: the highest loss along an actual path. On the ReLU loss, bands
that are not converged can end far above anything training crosses; is such a
barrier real? For the MSE of a network with a linear output layer it cannot be
higher than the loss of the constant predictor, whatever the two networks:

Let the training targets be t (S points, n_out outputs), c = mean(t) per output
and E_c = mean((c - t)^2) (the variance of the targets, ``var(t)`` in the
report). Write a network as (hidden layers theta, output layer W_out, b_out),
its output y(x) = W_out h_theta(x) + b_out. The path from A to B has three legs:

1. shrink A's output layer onto the constant: W_out = (1 - s) W_out^A,
   b_out = (1 - s) b_out^A + s c, s from 0 to 1. Its output is
   y_s = (1 - s) y_A + s c, so

       E(s) = mean(((1 - s)(y_A - t) + s (c - t))^2)
            = (1 - s)^2 E_A + 2 s (1 - s) C_A + s^2 E_c,   C_A = mean((y_A - t)(c - t)),

   a quadratic in s with E''(s) = 2 mean((y_A - c)^2) >= 0: convex, so on
   [0, 1] it never exceeds max(E_A, E_c);
2. on the plateau W_out = 0, b_out = c, move the hidden layers from theta_A to
   theta_B in a straight line: the output is c whatever theta, and E = E_c
   exactly (every point of this leg is a network that predicts the mean);
3. leg 1 of B, backwards.

So the mountain-pass barrier between any two networks is at most
max(E_A, E_B, E_c) above the lower of them, and a band whose maximum exceeds
var(t) is under-relaxed: an artefact of the band, not of the landscape. The
bound is the loss's, not the band method's; it holds for any depth and width,
any hidden activation and any data (it needs only the linear output layer and
the mean squared error). Its path is not a minimum energy path (leg 2 is flat,
and lower paths may exist: many relaxed bands stay below E_c); it is a
certificate that a reader can check point by point, which
:func:`plateau_path` builds and the report evaluates.
"""
from __future__ import annotations

import numpy as np

from .net import Arch, check_stack

__all__ = ["constant_fit", "plateau_path", "plateau_bound", "band_start", "corner_grid"]


def constant_fit(t, n_out: int = 1):
    """The best constant predictor of targets t: (c (n_out,), E_c), E_c its MSE
    (the mean over points and outputs, as the loss of :mod:`relunet.kernels`)."""
    T = np.asarray(t, dtype=np.float64).reshape(len(t), -1)
    if T.shape[1] != n_out:
        raise ValueError(f"t must have {n_out} output column(s), got shape {np.shape(t)}")
    c = T.mean(axis=0)
    return c, float(np.mean((T - c) ** 2))


def _to_plateau(W, arch: Arch, c, s):
    """Leg 1 at fractions s (k,): (len(W), k, P) networks with the output layer of
    each W shrunk onto the constant c."""
    o, ob = arch.offset("Wout"), arch.offset("bout")
    n_out = arch.n_out
    out = np.repeat(W[:, None, :], len(s), axis=1)
    keep = (1.0 - s)[None, :, None]
    out[:, :, o:o + n_out * arch.N] = keep * W[:, None, o:o + n_out * arch.N]
    out[:, :, ob:ob + n_out] = keep * W[:, None, ob:ob + n_out] + s[None, :, None] * c
    return out


def plateau_path(start, end, arch: Arch, t, n_per_leg: int = 32) -> np.ndarray:
    """The three-leg path of the module docstring from each start to its end.

    Parameters
    ----------
    start, end : (P,) or (Bn, P) networks (a single start is shared by all ends).
    arch : their architecture (the output layer is ``Wout``, ``bout``).
    t : (S,) or (S, n_out) training targets.
    n_per_leg : points per leg, both ends included (>= 2).

    Returns
    -------
    (Bn, 3 n_per_leg - 2, P) points: start, ..., the start's plateau point, ...,
    the end's plateau point, ..., end (the legs share their corners).
    """
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    if not isinstance(n_per_leg, (int, np.integer)) or n_per_leg < 2:
        raise ValueError(f"n_per_leg must be an integer >= 2, got {n_per_leg!r}")
    B = np.atleast_2d(check_stack(np.asarray(end, dtype=np.float64), arch, "end"))
    A = np.atleast_2d(check_stack(np.asarray(start, dtype=np.float64), arch, "start"))
    if len(A) == 1:
        A = np.repeat(A, len(B), axis=0)
    if len(A) != len(B):
        raise ValueError(f"start must be one network or one per end, got {len(A)} starts "
                         f"for {len(B)} ends")
    c, _ = constant_fit(t, arch.n_out)
    s = np.linspace(0.0, 1.0, n_per_leg)
    leg1 = _to_plateau(A, arch, c, s)
    leg3 = _to_plateau(B, arch, c, s)[:, ::-1]
    pa, pb = leg1[:, -1], leg3[:, 0]
    leg2 = pa[:, None] + s[None, 1:-1, None] * (pb - pa)[:, None]
    return np.concatenate([leg1, leg2, leg3], axis=1)


def band_start(kind: str, start, end, arch: Arch, t, n_images: int):
    """The initial path and grid of bands between networks, for the ``path`` and
    ``fractions`` arguments of :func:`relunet.string_method.string_method`: ``kind``
    "plateau", (the plateau path with ``n_images`` points per leg, :func:`corner_grid`
    of it); "straight", (None, None) (the straight line on the uniform grid, the string
    method's own start)."""
    if kind not in ("plateau", "straight"):
        raise ValueError(f"start must be 'plateau' or 'straight', got {kind!r}")
    if kind == "straight":
        return None, None
    path = plateau_path(start, end, arch, t, n_per_leg=n_images)
    return path, corner_grid(path, n_images)


def corner_grid(path, n_images: int) -> np.ndarray:
    """The initial grid of a band started on :func:`plateau_path`: arc-length fractions
    (Bn, n_images), uniform except that the two grid points nearest the path's corners
    (where a leg ends) sit exactly on them.

    Why: a band on the uniform grid has its images on the legs, and its polyline cuts
    each corner with a chord. The string method reparametrises along that polyline,
    so its first step puts images on the chords, off the path; next to a minimum
    whose walls curve at 1e5 and more, the chord across the corner of legs 2 and 3
    runs over a wall (measured on Fig. 4's bands: an image at a loss of 244 after
    the first step, from a path that never exceeds 0.228). With the corners among
    the images the band's polyline IS the plateau path, and the bound holds on it.

    path : (Bn, 3 n - 2, P) or (3 n - 2, P), as returned by :func:`plateau_path`
        (n points per leg). A leg of length zero keeps the uniform grid point.
    """
    path = np.asarray(path, dtype=np.float64)
    path = path[None] if path.ndim == 2 else path
    K = path.shape[1]
    if path.ndim != 3 or K < 4 or (K + 2) % 3:
        raise ValueError(f"path must be a plateau path of shape (Bn, 3 n - 2, P), got "
                         f"{np.shape(path)}")
    if not isinstance(n_images, (int, np.integer)) or n_images < 4:
        raise ValueError(f"n_images must be an integer >= 4 (two endpoints and two "
                         f"corners), got {n_images!r}")
    n = (K + 2) // 3
    seg = np.linalg.norm(np.diff(path, axis=1), axis=-1)
    s = np.concatenate([np.zeros((len(path), 1)), np.cumsum(seg, axis=1)], axis=1)
    g = np.linspace(0.0, 1.0, n_images)
    out = np.tile(g, (len(path), 1))
    for b in range(len(path)):
        if s[b, -1] <= 0:
            continue
        f1, f2 = s[b, n - 1] / s[b, -1], s[b, 2 * n - 2] / s[b, -1]
        i1 = int(np.clip(np.argmin(np.abs(g - f1)), 1, n_images - 3))
        i2 = int(np.clip(np.argmin(np.abs(g - f2)), i1 + 1, n_images - 2))
        if 0.0 < f1 < f2 < 1.0:
            out[b, i1], out[b, i2] = f1, f2
    return out


def plateau_bound(E_start, E_end, t, n_out: int = 1) -> np.ndarray:
    """The bound of the module docstring: max(E_start, E_end, E_c) per band, the
    highest loss on the plateau path (an upper bound on the barrier's top)."""
    _, e_c = constant_fit(t, n_out)
    return np.maximum(np.maximum(np.asarray(E_start, dtype=np.float64),
                                 np.asarray(E_end, dtype=np.float64)), e_c)
