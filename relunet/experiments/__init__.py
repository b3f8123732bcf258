"""The experiments of Gamst & Walker (2017), one module each, in figure order.

:func:`registry` lists them; :mod:`relunet.run.runner` (behind ``run_all.py``)
computes, plots and reports each in turn. What every module defines, and what
the frame does for it (presets, compute once, store), is in
:mod:`relunet.experiments.frame`; the trained students they share in
:mod:`relunet.experiments.students`; the Markdown of the report (claims
tables) in :mod:`relunet.experiments.tables`.
"""
from __future__ import annotations

import importlib

_MODULES = [
    "fig1_wf",
    "fig2_fits",
    "quench_minima",
    "fig4_neb",
    "transition_states",
    "fig5_basin",
    "hessian_spectra",
    "minima_geometry",
    "ext_sensitivity",
    "ext_disconnectivity",
    "wide_10x10",
    "high_freq",
]


def registry():
    """The experiment modules, in figure order."""
    return [importlib.import_module(f"{__name__}.{m}") for m in _MODULES]


def names() -> list[str]:
    return list(_MODULES)
