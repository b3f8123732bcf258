"""The hand-built network W_f of Gamst & Walker (2017), Sec. 2 and Fig. 1.

W_f is a 5x5 ReLU network (136 parameters) whose output

    f(x) = sawtooth(x) + spline(x),   x in [-1, 1],

is a 16-tooth sawtooth of height 1.4 plus a low-frequency linear spline. Units
0-1 of every layer form the sawtooth block and units 2-4 the spline block; the
two blocks never feed each other (every number used is written out below).

Sawtooth block (2 units per layer). Layer 1 makes u0 = relu(x + 1), u1 = relu(x)
and the combination t = u0 - 2 u1 is a tent on [-1, 1] with peak 1 at x = 0
(negative for x > 1, zero for x < -1). Every later layer applies the tent map

    T_p(t) = relu(t) - 2 relu(t - p/2)

to a tent of peak p: both units receive t (weights [1, -2] on the previous
pair) with biases [0, -p/2]. Each application doubles the teeth and halves
the height, so after K layers there are 2^(K-1) teeth of height 2^-(K-1);
output weights [a, -2a] with a = amplitude / 2^-(K-1) give teeth of height
``amplitude`` (22.4 = 1.4 * 16 for K = 5), and the block is zero outside [-1, 1].

Spline block (one unit per spline segment). Layer 1 makes relu(x - k) for the
left knots k of each segment; later layers pass the (non-negative) values on
through identity weights; the output weights are the slope increments
[s1, s2 - s1, s3 - s2, ...], so the block is the linear spline through
``heights`` at ``knots`` (continued linearly to the right of the last knot,
zero to the left of the first).

The heights of the paper are lost (the authors set no seed). Our default draws
z ~ N(0, 1)^3 from ``numpy.random.default_rng(0)`` and uses heights
[0, z1 - z0, z2 - z0, 0] = [0, -0.2578, 0.5147, 0] (rounded).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .net import Arch

__all__ = ["Block", "sawtooth_block", "zigzag_block", "spline_block", "combine_blocks",
           "default_heights", "build_wf", "build_hf", "teacher", "TEACHERS", "WF_ARCH",
           "WF_KNOTS", "HF_KNOTS", "HF_HEIGHTS", "f_closed_form"]

WF_ARCH = Arch(5, 5)
#: knots of the spline block of W_f
WF_KNOTS = (-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0)


@dataclass(frozen=True)
class Block:
    """A block of ``width`` units in each of K layers, fed only by x and itself.

    Ws[0]: (width, 1) first-layer weights; Ws[l] (width, width) for l >= 1;
    bs[l]: (width,); out: (width,) output weights.
    """

    Ws: tuple
    bs: tuple
    out: np.ndarray
    bias: float = 0.0   # added to the network's output bias

    @property
    def width(self) -> int:
        return self.out.shape[0]

    @property
    def K(self) -> int:
        return len(self.Ws)


def sawtooth_block(K: int = 5, amplitude: float = 1.4) -> Block:
    """2-unit-wide block whose output is 2^(K-1) teeth of height ``amplitude`` on [-1, 1]."""
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    Ws = [np.array([[1.0], [1.0]])]
    bs = [np.array([1.0, 0.0])]
    peak = 1.0                               # tent made by layer 1 has peak 1
    for _ in range(1, K):
        Ws.append(np.array([[1.0, -2.0], [1.0, -2.0]]))
        bs.append(np.array([0.0, -peak / 2.0]))
        peak /= 2.0
    # after the last layer the pair (v0, v1) combines as v0 - 2 v1 with peak `peak`
    a = amplitude / peak
    return Block(tuple(Ws), tuple(bs), np.array([a, -2.0 * a]))


def zigzag_block(K: int = 5, amplitude: float = 1.4) -> Block:
    """3-unit-wide block: a tent in layer 1, then the *tripling* map in layers 2..K.

    The tripling map of a tent of peak p uses three units,

        Z_p(t) = relu(t) - 2 relu(t - p/3) + 2 relu(t - 2p/3),

    which folds [0, p] into three pieces of range [0, p/3]: every layer triples
    the number of linear pieces (the doubling tent map of the sawtooth block
    cannot do better than 2 with 2 units). After K layers there are
    2 * 3^(K-1) pieces on [-1, 1] (81 teeth for K = 5), scaled to height
    ``amplitude``; zero outside [-1, 1]. Layer 1 computes relu(x + 1), relu(x)
    and a unit that stays off; the tent is then relu(x+1) - 2 relu(x).
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    # first layer: units (relu(x+1), relu(x), 0); the tent is u0 - 2 u1
    Ws = [np.array([[1.0], [1.0], [0.0]])]
    bs = [np.array([1.0, 0.0, 0.0])]
    comb = np.array([1.0, -2.0, 0.0])        # how the previous layer forms t
    peak = 1.0
    for _ in range(1, K):
        Ws.append(np.outer(np.ones(3), comb))          # every unit receives t
        bs.append(np.array([0.0, -peak / 3.0, -2.0 * peak / 3.0]))
        comb = np.array([1.0, -2.0, 2.0])
        peak /= 3.0
    a = amplitude / peak
    return Block(tuple(Ws), tuple(bs), a * comb)


def spline_block(K: int = 5, knots=WF_KNOTS, heights=None) -> Block:
    """Block of len(knots)-1 units computing the linear spline through (knots, heights)."""
    knots = np.asarray(knots, dtype=np.float64)
    if knots.ndim != 1 or knots.size < 2 or np.any(np.diff(knots) <= 0):
        raise ValueError("knots must be a strictly increasing 1-D sequence of >= 2 values")
    heights = default_heights() if heights is None else np.asarray(heights, dtype=np.float64)
    if heights.shape != knots.shape or not np.all(np.isfinite(heights)):
        raise ValueError(f"heights must be {knots.size} finite values (one per knot), "
                         f"got {heights!r}")
    n = knots.size - 1
    slopes = np.diff(heights) / np.diff(knots)            # s1, s2, ...
    out = np.concatenate([[slopes[0]], np.diff(slopes)])  # s1, s2 - s1, ...
    Ws = [np.ones((n, 1))] + [np.eye(n) for _ in range(1, K)]
    bs = [-knots[:-1]] + [np.zeros(n) for _ in range(1, K)]
    # the units are relu(x - k) >= 0, so the first height lives in the output bias
    return Block(tuple(Ws), tuple(bs), out, float(heights[0]))


def combine_blocks(blocks, dtype=np.float64):
    """Place blocks side by side (block-diagonal weights) in one K x N network.

    The output is the sum of the blocks' outputs (output bias: sum of their biases).

    Returns (arch, w) with N the sum of the block widths.
    """
    K = blocks[0].K
    if any(b.K != K for b in blocks):
        raise ValueError("all blocks must have the same number of layers K")
    N = sum(b.width for b in blocks)
    arch = Arch(K, N)
    w = np.zeros(arch.P, dtype=np.float64)
    v = arch.unpack(w)
    lo = 0
    for b in blocks:
        hi = lo + b.width
        v["W1"][lo:hi, :] = b.Ws[0]
        v["b1"][lo:hi] = b.bs[0]
        for layer in range(2, K + 1):
            v[f"W{layer}"][lo:hi, lo:hi] = b.Ws[layer - 1]
            v[f"b{layer}"][lo:hi] = b.bs[layer - 1]
        v["Wout"][0, lo:hi] = b.out
        lo = hi
    v["bout"][0] = sum(b.bias for b in blocks)
    return arch, w.astype(dtype)


def default_heights(seed: int = 0) -> np.ndarray:
    """Spline heights [0, z1 - z0, z2 - z0, 0] with z from default_rng(seed)."""
    z = np.random.default_rng(seed).standard_normal(3)
    return np.array([0.0, z[1] - z[0], z[2] - z[0], 0.0])


def build_wf(heights=None, K: int = 5, amplitude: float = 1.4, knots=WF_KNOTS,
             dtype=np.float64) -> np.ndarray:
    """The flat parameter vector of W_f (136 values for the default 5x5).

    ``K`` and ``amplitude`` give sawtooth teachers of other depths (2^(K-1)
    teeth); ``knots``/``heights`` other splines. The architecture is
    ``Arch(K, 2 + len(knots) - 1)``, i.e. :data:`WF_ARCH` by default.
    """
    blocks = [sawtooth_block(K, amplitude), spline_block(K, knots, heights)]
    _, w = combine_blocks(blocks, dtype=dtype)
    return w


#: knots and heights of the spline block of the high-frequency teacher
HF_KNOTS = (-1.0, 0.0, 1.0)
HF_HEIGHTS = (0.0, 0.5, 0.0)


def build_hf(K: int = 5, amplitude: float = 1.4, dtype=np.float64) -> np.ndarray:
    """A 5x5 teacher of far higher frequency built the same way as W_f (G&W Sec. 3.5:
    "it is easy to construct 5x5 networks with far higher frequency components").

    Units 0-2: the tripling zigzag block (81 teeth of height ``amplitude`` on
    [-1, 1] for K = 5, against W_f's 16); units 3-4: a 2-segment spline through
    HF_HEIGHTS at HF_KNOTS. Architecture ``Arch(K, 5)``.
    """
    blocks = [zigzag_block(K, amplitude), spline_block(K, HF_KNOTS, HF_HEIGHTS)]
    _, w = combine_blocks(blocks, dtype=dtype)
    return w


#: teachers by name: name -> builder(heights) returning (arch, w)
TEACHERS = {
    "wf": lambda heights=None: (WF_ARCH, build_wf(heights)),
    "hf": lambda heights=None: (Arch(5, 5), build_hf()),
}


def teacher(name: str = "wf", heights=None):
    """(arch, w) of a named teacher: 'wf' (W_f) or 'hf' (high-frequency variant)."""
    if name not in TEACHERS:
        raise ValueError(f"teacher must be one of {sorted(TEACHERS)}, got {name!r}")
    return TEACHERS[name](heights)


def f_closed_form(x, heights=None, amplitude: float = 1.4, K: int = 5) -> np.ndarray:
    """f(x) written independently of any network, for tests (valid on [-1, 1]).

    sawtooth: amplitude * (1 - |(2^(K-1) x mod 2) - 1|) on [-1, 1];
    spline: linear interpolation of the heights at the knots of W_f.
    """
    x = np.asarray(x, dtype=np.float64)
    heights = default_heights() if heights is None else np.asarray(heights)
    teeth = 2.0 ** (K - 1)
    saw = amplitude * (1.0 - np.abs(np.mod(teeth * x, 2.0) - 1.0))
    saw = np.where(np.abs(x) <= 1.0, saw, 0.0)
    return saw + np.interp(x, WF_KNOTS, heights)
