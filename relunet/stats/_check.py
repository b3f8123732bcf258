"""The input check of both regressions: a finite 1-D float64 array, or a one-line error."""
from __future__ import annotations

import numpy as np


def vector(a, name: str, allow_empty: bool = False) -> np.ndarray:
    """Return ``a`` as a finite 1-D float64 array or raise ValueError naming it."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} must be non-empty")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr
