"""Logistic regression by IRLS (McCullagh & Nelder 1989, Generalized Linear Models, Ch. 4).

Fig. 5 fits P(return to the global minimum | noise norm r) with it.

Model: P(y = 1 | x) = p(x) = 1 / (1 + exp(-(b0 + b1 x))). With the design X = [1, x]
(n, 2), the log-likelihood and its derivatives are::

    l(beta)   = sum_i y_i eta_i - log(1 + exp(eta_i)),     eta = X beta
    grad l    = X'(y - p),        -Hess l = X'WX,   W = diag(p (1 - p)).

Newton's method (= iteratively reweighted least squares for the canonical link)::

    beta <- beta + (X'WX)^{-1} X'(y - p),

halving the step if the log-likelihood would decrease. Standard errors come from
the inverse Fisher information at the optimum: se = sqrt(diag((X'WX)^{-1})). x is
centred and scaled before the iteration for conditioning; coefficients and
covariance are mapped back exactly.

The MLE does not exist when all y are equal (status 'constant'; e.g. Adadelta
never returns in Fig. 5) or when the classes are (quasi-)separated (Albert &
Anderson 1984): with one regressor this happens iff max x over one class is <= min
x over the other, a check made in closed form before iterating, so these cases
return at once instead of driving coefficients to infinity. A constant x with
mixed y leaves the slope unidentifiable (status 'degenerate', intercept only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._check import vector

__all__ = ["logistic_fit", "LogisticFit"]


def _expit(eta):
    """1 / (1 + exp(-eta)) without overflow warnings."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(eta, dtype=np.float64)))


@dataclass(frozen=True)
class LogisticFit:
    """Result of :func:`logistic_fit`; p(x) = 1 / (1 + exp(-(b0 + b1 x))).

    status is 'ok' (MLE found), 'constant' (all y equal; coef = (+-inf, 0), stderr
    inf, predict is the constant 0 or 1), 'separable' (classes (quasi-)separated at
    x = c; coef and stderr are NaN / inf, and predict is a step at c: the class seen
    on each side, and at x == c the fraction of ones among the data tied at c, or
    1/2 if none -- the limit of the diverging MLE), or 'degenerate' (x has no
    spread and y is mixed: the slope is not identifiable; intercept-only fit,
    slope NaN, predict is the mean of y).
    """

    coef: np.ndarray  # (2,) intercept b0, slope b1
    stderr: np.ndarray  # (2,) sqrt(diag(inverse Fisher information))
    loglik: float  # log-likelihood at coef (its supremum when no MLE exists)
    n_iter: int
    converged: bool
    separable: bool
    status: str
    n: int
    step: tuple | None = None  # separable only: (c, sign, p(c)); sign +1: ones above c

    def predict(self, xnew) -> np.ndarray:
        """Fitted P(y = 1) at ``xnew`` (any shape; same shape returned)."""
        xn = np.asarray(xnew, dtype=np.float64)
        if self.status == "constant":
            return np.full(xn.shape, 1.0 if self.coef[0] > 0 else 0.0)
        if self.status == "degenerate":
            return np.full(xn.shape, float(_expit(self.coef[0])))
        if self.status == "separable":
            c, sign, pc = self.step
            return np.where(xn == c, pc, (sign * (xn - c) > 0).astype(np.float64))
        return _expit(self.coef[0] + self.coef[1] * xn)

    @property
    def x_half(self) -> float:
        """x where p = 1/2: -b0 / b1 (the step point c if separable; else NaN)."""
        if self.status == "separable":
            return float(self.step[0])
        b0, b1 = self.coef
        if self.status != "ok" or b1 == 0:
            return float("nan")
        return float(-b0 / b1)

    def summary(self) -> str:
        """One line: status, coefficients with standard errors, x_half, loglik."""
        b0, b1 = self.coef
        s0, s1 = self.stderr
        return (f"logistic [{self.status}] n={self.n}: b0={b0:.6g} (se {s0:.3g}), "
                f"b1={b1:.6g} (se {s1:.3g}), x_half={self.x_half:.6g}, "
                f"loglik={self.loglik:.6g}, {self.n_iter} Newton steps"
                f"{'' if self.converged else ' (not converged)'}")


def _bernoulli_loglik(y, p):
    """sum y log p + (1 - y) log(1 - p), with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(y == 1, np.log(p), np.log1p(-p))
    return float(np.sum(np.where((p == y), 0.0, t)))


def logistic_fit(x, y, max_iter: int = 100, tol: float = 1e-10) -> LogisticFit:
    """Maximum-likelihood logistic regression of 0/1 ``y`` on ``x`` by Newton/IRLS.

    Parameters
    ----------
    x : array_like (n,)
        Finite regressor values.
    y : array_like (n,)
        Outcomes, 0/1 (bool or numbers equal to 0 or 1).
    max_iter : int
        Most Newton steps.
    tol : float
        Stop when every coefficient step (in standardised units) is below
        tol * (1 + |coefficient|).

    Returns
    -------
    LogisticFit
        See its docstring for the meaning of each status.
    """
    x = vector(x, "x")
    y = vector(y, "y")
    if x.size != y.size:
        raise ValueError(f"x and y must have the same length, got {x.size} and "
                         f"{y.size}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must contain only 0/1 (or booleans)")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) \
            or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not (isinstance(tol, (int, float, np.floating)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    n = x.size
    inf2, nan2 = np.full(2, np.inf), np.full(2, np.nan)

    # -- no MLE: constant outcome, or (quasi-)separated classes ----------------
    ybar = y.mean()
    if ybar in (0.0, 1.0):
        return LogisticFit(np.array([np.inf if ybar else -np.inf, 0.0]), inf2, 0.0,
                           0, False, False, "constant", n)
    x0, x1 = x[y == 0], x[y == 1]
    if x.min() == x.max():  # slope not identifiable: intercept-only MLE
        se0 = 1.0 / math.sqrt(n * ybar * (1.0 - ybar))
        return LogisticFit(np.array([math.log(ybar / (1.0 - ybar)), np.nan]),
                           np.array([se0, np.nan]),
                           _bernoulli_loglik(y, np.full(n, ybar)), 0, True, False,
                           "degenerate", n)
    for sign, lo, hi in ((1, x0, x1), (-1, x1, x0)):
        if lo.max() <= hi.min():  # all `lo`-class x <= all `hi`-class x
            c = 0.5 * (lo.max() + hi.min())  # gap midpoint; = tie value if quasi
            tied = x == c
            pc = float(y[tied].mean()) if tied.any() else 0.5
            ll = _bernoulli_loglik(y[tied], np.full(tied.sum(), pc))  # others: p = y
            return LogisticFit(nan2, inf2, ll, 0, False, True, "separable", n,
                               (float(c), sign, pc))

    # -- Newton / IRLS on standardised x ------------------------------------------
    mu, sd = x.mean(), x.std()
    X = np.column_stack([np.ones(n), (x - mu) / sd])  # (n, 2)

    def loglik(beta):
        eta = X @ beta
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    beta = np.array([math.log(ybar / (1.0 - ybar)), 0.0])
    ll = loglik(beta)
    converged, k = False, 0
    for k in range(1, max_iter + 1):
        p = _expit(X @ beta)
        info = X.T @ (X * (p * (1.0 - p))[:, None])  # (2, 2) X'WX
        step = np.linalg.solve(info, X.T @ (y - p))
        t = 1.0
        while True:  # step halving keeps the log-likelihood monotone
            cand = beta + t * step
            ll_c = loglik(cand)
            if ll_c >= ll - 1e-12 * abs(ll) or t < 1e-10:
                break
            t *= 0.5
        beta, ll = cand, ll_c
        if np.all(np.abs(t * step) <= tol * (1.0 + np.abs(beta))):
            converged = True
            break
    p = _expit(X @ beta)
    cov_std = np.linalg.inv(X.T @ (X * (p * (1.0 - p))[:, None]))
    A = np.array([[1.0, -mu / sd], [0.0, 1.0 / sd]])  # beta_x = A beta_std
    coef = A @ beta
    cov = A @ cov_std @ A.T
    return LogisticFit(coef, np.sqrt(np.diag(cov)), ll, k, converged, False, "ok", n)
