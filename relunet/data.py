"""Training sets: a teacher network sampled at its knots and between them.

G&W Sec. 3.1: "sampling the function f, a linear spline, at all of its knots
and at 9 points between each pair of knots". For W_f the knots in [-1, 1] are
the 33 multiples of 1/16 and +-1/3 (35 in all), so the set has
34 intervals x 10 + 1 = 341 distinct points. The targets are the teacher's own
outputs, computed by the same forward kernel in the working dtype, so the
teacher's loss on its training set is exactly 0.

The authors' script produced 350 rows instead (x = -1 repeated 11 times
through a duplicated first knot, x = 1 missing); ``variant="authors350"``
reproduces it.
"""
from __future__ import annotations

import numpy as np

from .kernels import forward
from .knots import knots as find_knots
from .net import Arch

__all__ = ["sample_points", "training_set", "wf_training_set"]


def sample_points(kn, per_interval: int = 9, variant: str = "distinct") -> np.ndarray:
    """Knots plus ``per_interval`` equally spaced interior points per interval."""
    kn = np.asarray(kn, dtype=np.float64)
    if kn.ndim != 1 or kn.size < 2 or np.any(np.diff(kn) <= 0):
        raise ValueError("kn must be a strictly increasing 1-D array of >= 2 knots")
    if int(per_interval) != per_interval or per_interval < 0:
        raise ValueError(f"per_interval must be an integer >= 0, got {per_interval!r}")
    per_interval = int(per_interval)
    if variant == "distinct":
        pieces = [np.linspace(a, b, per_interval + 2)[:-1] for a, b in zip(kn[:-1], kn[1:])]
        return np.concatenate(pieces + [kn[-1:]])
    if variant == "authors350":
        dup = np.concatenate([kn[:1], kn])
        pieces = [np.linspace(a, b, per_interval + 2)[:-1] for a, b in zip(dup[:-1], dup[1:])]
        return np.concatenate(pieces)
    raise ValueError(f"variant must be 'distinct' or 'authors350', got {variant!r}")


def training_set(w, arch: Arch, lo: float = -1.0, hi: float = 1.0, per_interval: int = 9,
                 variant: str = "distinct", dtype=np.float64):
    """(x[S], t[S]) for a teacher network ``w``: its knots in [lo, hi] (with lo and
    hi added if they are not knots) and the points between them."""
    kn = find_knots(w, arch, lo, hi)
    kn = np.union1d(kn, [lo, hi])
    x = sample_points(kn, per_interval, variant).astype(dtype)
    t = forward(np.asarray(w, dtype=dtype), arch, x)[0]
    return x, t


def wf_training_set(heights=None, variant: str = "distinct", dtype=np.float64):
    """The 341-point training set of W_f (350 rows for ``variant='authors350'``)."""
    from .construct import WF_ARCH, build_wf
    return training_set(build_wf(heights), WF_ARCH, variant=variant, dtype=dtype)
