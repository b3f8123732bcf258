"""Distances, paths and a 2-D view of weight space (Gamst & Walker 2017, Sec. 3.3, Fig. 4).

The paper measures where trained networks sit relative to the hand-built
global minimum W_f: Euclidean distances in weight space after every network
has been de-symmetrised (``symmetry.canonicalize``: minimal-norm rescaling,
then units sorted by norm), so that two networks computing the same function
in the same way are at distance 0. It reads a basin radius of about 2 and
finds most local minima at distance 9.5-10.5 from W_f.

Along a nudged elastic band (B images w_0..w_{B-1}, an array (B, P)) it looks
at the loss, at the network function, and at how the path turns: the angle
between successive difference vectors d_i = w_{i+1} - w_i,

    theta_i = angle(d_i, d_{i+1}),  i = 0..B-3,

computed as 2 atan2(|a - b|, |a + b|) for the unit vectors a, b (Kahan's
formula: accurate near 0 and pi, where arccos of a dot product is not).

``components`` reads a network's function in the terms f is built from:
the least-squares coefficients (a, b, c) of a s(x) + b z(x) + c on the training
points, s the spline block's output and z the sawtooth block's (their sum is
f: W_f itself is (1, 1, 0)), with the residual mean square. A network that
computes the spline alone, the teeth given up, has b = 0; the lowest loss such
a function can have is ``spline_level`` (the mean square of the teeth left
after the best fit a s + c; var(z) = 0.169 if z and s were uncorrelated). The
string method's bands from W_f to the trained minima cross that level
(relunet.experiments.fig4_neb).

``embed_2d`` is classical multidimensional scaling (Torgerson 1952; Gower
1966): double-centre the squared distances, B = -1/2 J D^2 J, and take the
two leading eigenvectors scaled by sqrt(eigenvalue). It reproduces the
distances exactly when they come from points in a plane, and is the best
rank-2 fit of B otherwise.

Only NumPy/SciPy; network evaluation goes through ``relunet.kernels.forward``.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from .kernels import forward
from .net import Arch, check_stack
from .symmetry import canonicalize

__all__ = ["distances_from", "pairwise_distances", "path_angles", "path_functions",
           "path_length", "embed_2d", "components", "spline_level"]


def _stack(W, arch, name):
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    W = check_stack(W, arch, name)
    if not np.all(np.isfinite(W)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return W


def _images(images, min_count):
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 2 or images.shape[0] < min_count:
        raise ValueError(f"images must have shape (B, P) with B >= {min_count}, "
                         f"got {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contains non-finite values (NaN or inf)")
    return images


def distances_from(W_ref, W, arch: Arch, canonical: bool = True) -> np.ndarray:
    """Distance of every network of W (M, P) from one reference network W_ref (P,).

    With ``canonical`` both are canonicalised first (the paper's distances from
    W_f). Returns (M,).
    """
    ref = _stack(W_ref, arch, "W_ref")
    if ref.shape[0] != 1:
        raise ValueError(f"W_ref must be one network of shape ({arch.P},), got "
                         f"{np.shape(W_ref)}")
    W = _stack(W, arch, "W")
    if canonical:
        ref, W = canonicalize(ref, arch), canonicalize(W, arch)
    return np.linalg.norm(W.astype(np.float64) - ref.astype(np.float64), axis=1)


def pairwise_distances(W, arch: Arch, canonical: bool = True) -> np.ndarray:
    """(M, M) Euclidean distances between the networks of W (canonicalised first)."""
    W = _stack(W, arch, "W")
    if canonical:
        W = canonicalize(W, arch)
    D = cdist(W.astype(np.float64), W.astype(np.float64))
    np.fill_diagonal(D, 0.0)
    return D


def path_angles(images) -> np.ndarray:
    """Angles (radians, in [0, pi]) between successive steps of a path of images (B, P).

    Returns (B-2,): angle i is between w_{i+1} - w_i and w_{i+2} - w_{i+1}; NaN
    where either step has zero length (the angle is undefined there).
    """
    X = _images(images, 3)
    d = np.diff(X, axis=0)                                    # (B-1, P) steps
    n = np.linalg.norm(d, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = d / n[:, None]
    a, b = e[:-1], e[1:]
    ang = 2.0 * np.arctan2(np.linalg.norm(a - b, axis=1), np.linalg.norm(a + b, axis=1))
    ang[(n[:-1] == 0) | (n[1:] == 0)] = np.nan
    return ang


def path_length(images) -> np.ndarray:
    """Cumulative arc length along a path of images (B, P): (B,), starting at 0."""
    X = _images(images, 1)
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(X, axis=0), axis=1))])


def path_functions(images, arch: Arch, x) -> np.ndarray:
    """The network function of every image at inputs x (S,): (B, S), or (B, S, n_out)."""
    X = _stack(_images(images, 1), arch, "images")
    return forward(X, arch, x)


def _teacher_parts(x, heights=None):
    """The spline block's and the sawtooth block's outputs at x (S,): s, z (S,) each,
    f = s + z (relunet.construct.build_wf with the teeth, then the spline, switched off)."""
    from .construct import WF_ARCH, build_wf
    x = np.asarray(x, dtype=np.float64)
    s = forward(build_wf(heights, amplitude=0.0), WF_ARCH, x)[0]
    z = forward(build_wf(np.zeros(4)), WF_ARCH, x)[0]
    return s, z


def components(W, arch: Arch, x, heights=None):
    """Coefficients (n, 3) of each network's function in the basis (spline, teeth, 1)
    of W_f's blocks (module docstring), least squares on the points x (S,), and the
    residual mean square (n,). W_f: (1, 1, 0) and 0; a network that computes the
    spline alone: teeth coefficient 0."""
    W = _stack(W, arch, "W")
    s, z = _teacher_parts(x, heights)
    A = np.stack([s, z, np.ones_like(s)], axis=1)
    Y = forward(np.asarray(W, np.float64), arch, np.asarray(x, np.float64))
    Y = Y.reshape(len(W), -1)
    coef = np.linalg.lstsq(A, Y.T, rcond=None)[0].T
    return coef, np.mean((Y - coef @ A.T) ** 2, axis=1)


def spline_level(x, heights=None) -> float:
    """The lowest MSE against f = s + z on the points x of any function a s + c: the
    loss of the best network that computes the spline and none of the teeth."""
    s, z = _teacher_parts(x, heights)
    B = np.stack([s, np.ones_like(s)], axis=1)
    f = s + z
    return float(np.mean((f - B @ np.linalg.lstsq(B, f, rcond=None)[0]) ** 2))


def embed_2d(D, return_eigenvalues: bool = False):
    """Classical MDS of a distance matrix D (M, M): coordinates (M, 2).

    Coordinates are unique up to a rotation/reflection and the sign of each
    axis. With ``return_eigenvalues`` also returns all eigenvalues of the
    double-centred matrix in decreasing order (negative ones mean D is not
    Euclidean; their size says how much the 2-D view loses).
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1] or D.shape[0] < 2:
        raise ValueError(f"D must be a square (M, M) distance matrix with M >= 2, "
                         f"got shape {D.shape}")
    if not np.all(np.isfinite(D)) or (D < 0).any():
        raise ValueError("D must hold finite, non-negative distances")
    if not np.allclose(D, D.T, rtol=1e-10, atol=1e-12 * max(D.max(), 1e-300)):
        raise ValueError("D must be symmetric")
    M = D.shape[0]
    J = np.eye(M) - 1.0 / M
    Bm = -0.5 * J @ (D ** 2) @ J
    lam, V = np.linalg.eigh(0.5 * (Bm + Bm.T))
    lam, V = lam[::-1], V[:, ::-1]
    Y = V[:, :2] * np.sqrt(np.maximum(lam[:2], 0.0))
    return (Y, lam) if return_eigenvalues else Y
