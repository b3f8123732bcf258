"""Optimizers of the paper: gradient descent with momentum, and Adadelta.

Each optimizer is a frozen dataclass of hyper-parameters (validated when made)
plus a plain NumPy update rule that works in place on one network or a stack.
The NumPy rules (``momentum_step``, ``adadelta_step``) are the references; the
numba rule below them (``apply_update``, one network at a time, called inside
the training kernels of ``train.py`` and ``relunet/fast/``) applies the same
formulas in the same order, and the tests hold the two together.

Momentum (heavy ball; Polyak 1964, "Some methods of speeding up the
convergence of iteration methods"), in the convention of Keras' SGD with
``nesterov=False``::

    v <- mu v - lr g ;   w <- w + v          (v starts at 0; mu = 0 is plain GD)

Adadelta (Zeiler 2012, "ADADELTA: an adaptive learning rate method",
Algorithm 1), exactly as Keras 2.0 implements it (keras/optimizers.py,
``Adadelta.get_updates``), which adds a learning rate and puts epsilon inside
both square roots::

    a  <- rho a + (1 - rho) g^2                      (accumulator E[g^2], new)
    dx <- g sqrt(d + eps) / sqrt(a + eps)            (uses the OLD d = E[dx^2])
    w  <- w - lr dx
    d  <- rho d + (1 - rho) dx^2

Keras 2.0 defaults: lr = 1.0, rho = 0.95, eps = 1e-8 (the paper's setting).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from numba import njit

__all__ = ["Momentum", "Adadelta", "make_optimizer", "check_dtype", "momentum_step",
           "adadelta_step", "apply_update", "OPT_CODES"]


def _check_lr(lr):
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) \
            or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Momentum:
    """Gradient descent with heavy-ball momentum (Keras SGD, non-Nesterov)."""

    lr: float = 1e-3
    momentum: float = 0.9

    name = "momentum"
    n_state = 1           # state vectors per network: the velocity v

    def __post_init__(self):
        _check_lr(self.lr)
        _check_real("momentum", self.momentum)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must satisfy 0 <= momentum < 1, got {self.momentum!r}")

    def as_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class Adadelta:
    """Adadelta (Zeiler 2012) with Keras 2.0's learning rate and epsilon placement."""

    lr: float = 1.0
    rho: float = 0.95
    eps: float = 1e-8

    name = "adadelta"
    n_state = 2           # state vectors per network: E[g^2] and E[dx^2]

    def __post_init__(self):
        _check_lr(self.lr)
        _check_real("rho", self.rho)
        if not 0 < self.rho < 1:
            raise ValueError(f"rho must satisfy 0 < rho < 1, got {self.rho!r}")
        _check_real("eps", self.eps)
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")

    def as_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


_OPTIMIZERS = {"momentum": Momentum, "adadelta": Adadelta}


def make_optimizer(name: str, **hyper) -> Momentum | Adadelta:
    """``make_optimizer('adadelta', rho=0.9)``; unknown names or keys raise ValueError."""
    cls = _OPTIMIZERS.get(str(name).lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(hyper) - set(allowed))
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for {cls.name}; "
                         f"allowed: {allowed}")
    return cls(**hyper)


def check_dtype(opt, dtype) -> None:
    """ValueError unless every hyper-parameter of ``opt`` is still valid once
    rounded to ``dtype``, the precision the kernels compute in.

    The dataclasses check their values in float64; in float32 ``lr=1e39``
    overflows to inf, ``eps=1e-50`` underflows to 0 and ``rho=0.999999999``
    rounds to 1, and every network would "diverge" at step 0.
    """
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    with np.errstate(over="ignore", under="ignore"):
        rounded = {k: float(dt.type(v)) for k, v in asdict(opt).items()}
    try:
        type(opt)(**rounded)
    except ValueError as e:
        changed = ", ".join(f"{k}={v!r} rounds to {rounded[k]!r}" for k, v in asdict(opt).items()
                            if float(v) != rounded[k] and (rounded[k] in (0.0, 1.0)
                                                           or not math.isfinite(rounded[k])))
        raise ValueError(f"in {dt.name}, {changed or 'a hyper-parameter is out of range'}: "
                         f"{e}; choose a value representable in {dt.name} or use float64"
                         ) from None


def momentum_step(w, g, v, lr, mu) -> None:
    """One heavy-ball step in place: ``v <- mu v - lr g ; w <- w + v``.

    Keras SGD convention (momentum applied to the velocity, learning rate
    inside it), non-Nesterov. ``w``, ``g``, ``v``: arrays of one shape, (P,) or
    (M, P); ``w`` and ``v`` are overwritten.
    """
    v *= mu
    v -= lr * g
    w += v


def adadelta_step(w, g, Eg2, Edx2, lr, rho, eps) -> None:
    """One Keras 2.0 Adadelta step in place (see the module docstring).

    ``Eg2`` (a) is updated first and used new; ``Edx2`` (d) is used old, then
    updated with this step's dx (before the learning rate is applied).
    """
    Eg2 *= rho
    Eg2 += (1 - rho) * (g * g)
    dx = g * np.sqrt(Edx2 + eps) / np.sqrt(Eg2 + eps)
    w -= lr * dx
    Edx2 *= rho
    Edx2 += (1 - rho) * (dx * dx)


# =============================================================================
# The same rules in numba, one network at a time (inside the training kernels)
# =============================================================================
OPT_CODES = {"momentum": 0, "adadelta": 1}


# error_model="numpy": x / 0 gives inf/NaN instead of raising, so the loop has
# no exception branch and vectorises (vsqrtpd, vdivpd). No fast-math here: with
# reassociation/contraction allowed, the machine code numba compiled in-process
# and the code it loaded from its cache rounded differently (the Adadelta
# update; tests/test_cache_determinism.py). Strict IEEE order gives the same
# bits either way, and the finiteness test is a boolean AND-reduction, which
# vectorises without reassociation.
@njit(cache=True, error_model="numpy")
def apply_update(w, g, state1, state2, opt, lr, h1, h2, h3):
    """One update of one network in place (numba twin of ``momentum_step`` and
    ``adadelta_step``); returns True if the new weights are all finite. All
    scalars are of the dtype of w (lr > 0 finite).

    opt 0, momentum (h1 = mu; state1 = v):   v <- mu v - lr g ;  w <- w + v
    opt 1, Adadelta (h1 = rho, h2 = eps, h3 = 1 - rho; state1 = a = E[g^2],
    state2 = d = E[dx^2]), Keras 2.0 order:
        a <- rho a + (1 - rho) g^2 ;  dx <- g sqrt(d + eps) / sqrt(a + eps)
        w <- w - lr dx ;  d <- rho d + (1 - rho) dx^2
    """
    zero = lr - lr              # a zero of the working dtype
    ok = True
    if opt == 0:
        for p in range(w.shape[0]):
            v = h1 * state1[p] - lr * g[p]
            state1[p] = v
            wp = w[p] + v
            w[p] = wp
            ok &= wp * zero == zero     # finite weights give 0, inf/NaN give NaN
    else:
        for p in range(w.shape[0]):
            gp = g[p]
            a = h1 * state1[p] + h3 * (gp * gp)
            dx = gp * np.sqrt(state2[p] + h2) / np.sqrt(a + h2)
            wp = w[p] - lr * dx
            state1[p] = a
            state2[p] = h1 * state2[p] + h3 * (dx * dx)
            w[p] = wp
            ok &= wp * zero == zero
    return ok
