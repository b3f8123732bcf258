"""The Markdown of the report sections: numbers, quantiles, tables, claims.

Every section of figures/REPORT.md ends with a claims table: what the paper
states, what we measured, and a verdict (*reproduced*, *differs* and how, or
*unknown in the paper*); :func:`claims` writes it, :func:`table` any other,
:func:`spread` the "median [10%, 90%]" cells most of them hold.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fmt", "spread", "quantile_table", "table", "claims", "CLAIM", "CLAIM_OF_PAPER"]

#: headers of the claims tables
CLAIM_OF_PAPER = ("claim of the paper", "ours", "verdict")
CLAIM = ("claim", "ours", "verdict")


def fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else (f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}")


def spread(values, empty: str = "-") -> str:
    """``median [10%, 90%]`` of the finite values (``empty`` when there are none)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return empty
    return f"{fmt(np.median(v))} [{fmt(np.quantile(v, 0.1))}, {fmt(np.quantile(v, 0.9))}]"


def quantile_table(values, qs=(0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {q: float("nan") for q in qs}
    return {q: float(v) for q, v in zip(qs, np.quantile(values, qs))}


def table(header, rows) -> list[str]:
    """Lines of a Markdown table: the header, its rule, one line per row of cells
    (an empty cell, such as the corner of a table with row names, is ``| |``)."""
    def line(cells):
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def claims(*rows, header=CLAIM_OF_PAPER) -> list[str]:
    """The claims table of a report section (and the blank line that ends it):
    one row ``(claim, ours, verdict)`` per claim."""
    return table(header, rows) + [""]
