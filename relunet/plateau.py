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

__all__ = ["constant_fit", "plateau_path", "plateau_bound", "band_start"]


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
    """The initial path of bands between networks, for the ``path`` argument of
    :func:`relunet.string_method.string_method`: ``kind`` "plateau", the plateau path
    with ``n_images`` points per leg; "straight", None (the straight line, the
    string method's own start)."""
    if kind not in ("plateau", "straight"):
        raise ValueError(f"start must be 'plateau' or 'straight', got {kind!r}")
    return plateau_path(start, end, arch, t, n_per_leg=n_images) if kind == "plateau" else None


def plateau_bound(E_start, E_end, t, n_out: int = 1) -> np.ndarray:
    """The bound of the module docstring: max(E_start, E_end, E_c) per band, the
    highest loss on the plateau path (an upper bound on the barrier's top)."""
    _, e_c = constant_fit(t, n_out)
    return np.maximum(np.maximum(np.asarray(E_start, dtype=np.float64),
                                 np.asarray(E_end, dtype=np.float64)), e_c)
