"""KxN ReLU networks as one flat parameter vector with named views.

A K x N network (Gamst & Walker 2017, Sec. 2) has one input, K hidden layers of
N ReLU units and one linear output:

    h_0 = x,   h_l = relu(W_l h_{l-1} + b_l)  (l = 1..K),   y = w_out . h_K + b_out

Every network is ONE flat float vector of P parameters; a stack of M networks
is an array ``W[M, P]``. The single table built here, ``Arch.table``, says
where each named block lives in that vector. Python code (the kernels' NumPy
twins, construct, symmetry, kinks, ...) reads offsets from it through
``unpack``, ``offset`` and ``layer_blocks``. The numba kernels cannot read a
Python table; they take the first offset of each layer from
``block_offset(layer, N, n_in)`` below, the same layout as a formula, which a
test holds to the table (``kernels.py``, ``hvp_kernels.py`` and the generated
training kernel of ``relunet/fast``, which widens each entry to a vector of
lanes, all call it). Within a block, entry (j, i) of W_l is at
``j * fan_in + i`` (row-major) and bias j at ``fan_out * fan_in + j``.

Letters used in shape comments throughout the package:

    M  networks in a stack         P  parameters per network
    S  training samples (points)   K  hidden layers      N  units per layer
    B  images on a nudged elastic band

Layout of the flat vector (row-major blocks, in this order)::

    W1   (N, n_in)   b1 (N,)
    W2   (N, N)      b2 (N,)      ...      WK (N, N)   bK (N,)
    Wout (n_out, N)  bout (n_out,)

so P = N*n_in + N + (K-1)*(N*N + N) + n_out*N + n_out: 136 for 5x5, 1,021 for
10x10. A matrix is stored (out, in): row j holds the weights INTO unit j.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

__all__ = ["Arch", "block_offset", "init_stack", "perturbed_stack", "check_stack"]


@dataclass(frozen=True)
class Arch:
    """Architecture of a K x N ReLU MLP with ``n_in`` inputs and ``n_out`` outputs."""

    K: int = 5
    N: int = 5
    n_in: int = 1
    n_out: int = 1
    table: tuple = field(init=False, repr=False, compare=False)
    _slices: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("K", "N", "n_in", "n_out"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        rows = []  # (name, shape, offset)
        off = 0
        fan_in = self.n_in
        for layer in range(1, self.K + 1):
            for name, shape in ((f"W{layer}", (self.N, fan_in)), (f"b{layer}", (self.N,))):
                rows.append((name, shape, off))
                off += int(np.prod(shape))
            fan_in = self.N
        for name, shape in (("Wout", (self.n_out, self.N)), ("bout", (self.n_out,))):
            rows.append((name, shape, off))
            off += int(np.prod(shape))
        object.__setattr__(self, "table", tuple(rows))
        # (name, shape, start, stop) of every block: unpack() runs thousands of times a
        # second in the quench, where np.prod per block per call was most of its cost
        object.__setattr__(self, "_slices", tuple((n, s, off, off + int(np.prod(s)))
                                                  for n, s, off in rows))

    # -- sizes ----------------------------------------------------------------
    @property
    def P(self) -> int:
        """Number of parameters: the end of the table's last block."""
        return self._slices[-1][3]

    @property
    def n_layers(self) -> int:
        """Number of affine maps (K hidden + 1 output)."""
        return self.K + 1

    def __str__(self) -> str:
        return f"{self.K}x{self.N}"

    # -- views ----------------------------------------------------------------
    def offset(self, name: str) -> int:
        for n, _, off in self.table:
            if n == name:
                return off
        raise KeyError(f"no parameter block named {name!r}; have {self.names()}")

    def names(self) -> list[str]:
        return [n for n, _, _ in self.table]

    def layer_blocks(self, layer: int):
        """(weight_name, bias_name) of affine map ``layer`` (1..K+1, K+1 = output)."""
        if layer == self.K + 1:
            return "Wout", "bout"
        return f"W{layer}", f"b{layer}"

    def unpack(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into ``w[..., P]`` (no copy; writing a view writes ``w``).

        Works for one network (P,) or a stack (M, P); the views then have a
        leading M axis.
        """
        w = np.asarray(w)
        if w.shape[-1] != self.P:
            raise ValueError(f"w must have last dimension P={self.P} for a {self} "
                             f"network, got shape {w.shape}")
        lead = w.shape[:-1]
        return {n: w[..., a:b].reshape(lead + s) for n, s, a, b in self._slices}

    def pack(self, blocks: dict, dtype=np.float64) -> np.ndarray:
        """Inverse of :meth:`unpack` for one network: dict of arrays -> (P,)."""
        w = np.zeros(self.P, dtype=dtype)
        views = self.unpack(w)
        missing = set(views) - set(blocks)
        if missing:
            raise ValueError(f"blocks is missing {sorted(missing)}")
        for n, v in views.items():
            a = np.asarray(blocks[n], dtype=dtype)
            if a.shape != v.shape:
                raise ValueError(f"blocks[{n!r}] must have shape {v.shape}, got {a.shape}")
            v[...] = a
        return w


@njit(cache=True)
def block_offset(layer, N, n_in):
    """Offset of the block W_layer in the flat vector: layer 1..K+1 (K+1 = Wout).

    ``Arch.table`` as a formula, for the numba kernels: W_1 starts at 0, W_2
    after W_1 and b_1 (N n_in + N), each further layer N^2 + N later; its bias
    follows the matrix. Callable from Python as well."""
    if layer == 1:
        return 0
    return (N * n_in + N) + (layer - 2) * (N * N + N)


def check_stack(W, arch: Arch, name: str = "W") -> np.ndarray:
    """Validate a stack argument: returns a C-contiguous float (M, P) array.

    A single network (P,) is promoted to (1, P).
    """
    W = np.asarray(W)
    if W.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got dtype {W.dtype}")
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2 or W.shape[1] != arch.P:
        raise ValueError(f"{name} must have shape (M, {arch.P}) for a {arch} network, "
                         f"got {W.shape}")
    return np.ascontiguousarray(W)


def init_stack(arch: Arch, seeds, dtype=np.float64) -> np.ndarray:
    """Initialise one network per seed: Glorot-uniform kernels, zero biases.

    Keras' defaults at the time of the paper: each weight matrix of shape
    (fan_out, fan_in) is drawn from U(-L, L) with L = sqrt(6 / (fan_in + fan_out))
    (Glorot & Bengio 2010); all biases are zero. Network m's draws come only from
    ``numpy.random.default_rng(seeds[m])``, so it is the same network whether it
    is built alone or in a stack of 10,000.

    Parameters
    ----------
    seeds : int or sequence of non-negative ints, length M.

    Returns
    -------
    W : (M, P) array of ``dtype``.
    """
    seeds = np.atleast_1d(np.asarray(seeds))
    if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be a non-empty 1-D sequence of integers, got {seeds!r}")
    if (seeds < 0).any():
        raise ValueError("seeds must be non-negative")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    W = np.zeros((seeds.size, arch.P), dtype=np.float64)
    for m, s in enumerate(seeds):
        rng = np.random.default_rng(int(s))
        views = arch.unpack(W[m])
        for name, shape, _ in arch.table:
            if name.startswith("W"):
                fan_out, fan_in = shape
                lim = np.sqrt(6.0 / (fan_in + fan_out))
                views[name][...] = rng.uniform(-lim, lim, size=shape)
    return W.astype(dtype)


def perturbed_stack(center, seeds, radius_range=(0.0, 2.0), dtype=np.float64):
    """Networks ``center + r u``: u a uniformly random unit direction, r ~ U(radius_range).

    G&W Sec. 3.4 add "Gaussian noise (with L2 norm chosen approximately
    uniformly in [0, 2])" to W_f: a standard normal vector normalised to unit
    length is a uniformly random direction, and its norm is then set to r.
    Network m's draws come only from ``default_rng(seeds[m])`` (first r, then u).

    Returns
    -------
    W : (M, P) start points;  radii : (M,) the noise norms ||W[m] - center||.
    """
    center = np.asarray(center, dtype=np.float64)
    if center.ndim != 1 or not np.all(np.isfinite(center)):
        raise ValueError("center must be one finite parameter vector (P,)")
    lo, hi = (float(v) for v in radius_range)
    if not (0.0 <= lo <= hi) or not np.isfinite(hi):
        raise ValueError(f"radius_range must be (lo, hi) with 0 <= lo <= hi, got {radius_range}")
    seeds = np.atleast_1d(np.asarray(seeds))
    if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be a non-empty 1-D sequence of integers, got {seeds!r}")
    W = np.empty((seeds.size, center.size))
    radii = np.empty(seeds.size)
    for m, s in enumerate(seeds):
        rng = np.random.default_rng(int(s))
        radii[m] = rng.uniform(lo, hi)
        u = rng.standard_normal(center.size)
        W[m] = center + radii[m] * u / np.linalg.norm(u)
    return W.astype(dtype), radii
