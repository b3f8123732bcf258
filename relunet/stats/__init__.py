"""Lowess smoothing and logistic regression for the basin experiment (Fig. 5).

Gamst & Walker (2017), Sec. 3.4 / Fig. 5, jitter the global minimum W_f by noise of
L2 norm ``r``, retrain, and plot the final loss against ``r`` with a lowess curve,
plus a logistic fit of P(return to the global minimum | r). Both methods are
written here in plain NumPy, readable first; SciPy serves only as the tests'
reference.

The two methods live one per module: :mod:`relunet.stats.smooth` (lowess) and
:mod:`relunet.stats.logistic` (logistic regression by IRLS); both are
imported here.
"""
from ._check import vector
from .logistic import LogisticFit, logistic_fit
from .smooth import lowess, neighbours

__all__ = ["lowess", "neighbours", "logistic_fit", "LogisticFit", "vector"]
