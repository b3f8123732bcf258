"""float32 end to end (``run_all.py --dtype float32``): what runs in float32, and the comparison.

G&W trained in Keras, whose default precision was float32; the project's
default is float64. ``run_all.py --dtype float32`` runs every experiment that
computes in a precision with float32 instead, each in store entries of its own
(the ``dtype`` field of its config is part of the store key), and writes its
figures and report to ``figures/float32/`` unless ``--figures`` says otherwise.

What "in float32" means, stage by stage:

* **Training** (main runs, basin restarts, 10x10 and high-frequency students):
  the fused training kernel in float32, weights, optimizer state, data and
  arithmetic (:func:`relunet.train.train_stack` with float32 weights), as the
  paper's Keras did.
* **Quench** (:func:`quench_float32`): stage 1 of :func:`relunet.quench.quench`,
  batched BFGS, on the *float32* loss: every energy and gradient is
  computed in float32 at the point rounded to float32 (:func:`energy`); the
  BFGS bookkeeping (directions, line search) stays float64, and the final
  point is rounded to float32, the point a float32 program holds. The second
  stage (Newton steps on the piecewise model and along the kinks, with exact
  Hessians) and the certificate (|grad| or the Clarke measure <= 1e-9) are float64
  instruments: the rounding noise of a float32 gradient is about 6e-8 (float32's
  unit roundoff) of its terms, and merely rounding a float64 minimum to float32
  moves it by ~1e-7 per weight, which the Hessian turns into gradients far above
  1e-9 (measured: canonical W_f, gradient 8e-14 in float64, rounded to float32
  has a float64 gradient of norm 1.2e-4). So the Newton stage is not run in float32; the float32
  point is *certified and classified in float64*, as it is, and the report
  says how many certify and what stationarity measure they reach.
* **Bands** (Fig. 4, the disconnectivity graph): the string method's energy
  and forces in float32 at the float32-rounded images (:func:`energy`); the
  images' positions and the method's bookkeeping in float64. The
  tolerances the bands are judged by (1e-4 in energy, 1e-2 for the sampled
  gradient) are far above float32's resolution of the loss.
* **Float64 instruments on float32 points**: the de-symmetrisation
  (canonical rescaling, a change of coordinates of the analysis), exact
  Hessians and their eigenvalues, the saddle refinement (P-RFO with the exact
  Hessian, certified at 1e-9), distances and fits stay float64; they read
  the float32 networks exactly (every float32 number is a float64 one).
* **The same in both**: W_f itself (Fig. 1, built exactly) and the
  sensitivity study (``ext_sensitivity``, which trains both precisions as one
  of its variants); their store entries are shared.

:func:`comparison` writes the float32 report's first section: each main claim's
float32 value beside the float64 value from the float64 store entries (when
they are stored), with the difference. The numbers come from each
experiment's ``numbers(cfg, ctx)``.
"""
from __future__ import annotations

import numpy as np

from ..hessian import hessian
from ..kernels import loss, loss_and_grad
from .frame import DTYPES, check_dtype
from .tables import fmt, table

__all__ = ["DTYPES", "energy", "hessians", "loss_in", "quench_float32", "comparison"]


def energy(arch, x, t, dtype: str = "float64"):
    """The loss as a batched energy X (n, P) -> (E (n,), G (n, P)) computed in ``dtype``.

    float64: :func:`relunet.kernels.loss_and_grad` itself (bit for bit what the
    experiments always used). float32: the points rounded to float32, the
    kernel run in float32, the results returned as float64 arrays holding the
    float32 values, so that the callers' own arithmetic (BFGS, the string
    method) is unchanged. Pass the data of that precision,
    ``wf_training_set(dtype=dtype)``, as training does (float32 targets are
    W_f's float32 outputs, on which W_f's float32 loss is exactly 0 by the
    plain kernel that computed them).
    """
    if check_dtype(dtype) == "float64":
        return lambda X: loss_and_grad(X, arch, x, t)

    def efun(X):
        E, G = loss_and_grad(np.asarray(X).astype(np.float32), arch, x, t)
        return E.astype(np.float64), G.astype(np.float64)
    return efun


def hessians(arch, x, t):
    """X (n, P) -> the exact Hessians of the loss (n, P, P), in float64 whatever the run's
    dtype (x, t are cast): the string method uses them only as the metric of its
    climbing image's steps (``climb_hessian``), which sets the way, not the point."""
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    return lambda X: hessian(X, arch, x, t)


def loss_in(W, arch, x, t, dtype: str = "float64") -> np.ndarray:
    """The loss of every network of W computed in ``dtype``, as float64."""
    if check_dtype(dtype) == "float64":
        return loss(W, arch, x, t)
    return loss(np.asarray(W).astype(np.float32), arch, x, t).astype(np.float64)


def quench_float32(W, arch, x, t, descent_iter: int, gtol: float, eps_on: float,
                   gap: float, data32=None, descent: str = "bfgs", progress=None) -> dict:
    """The float32 quench (module docstring): the descent (``descent``: "bfgs",
    :func:`relunet.bfgs.bfgs`, or "lbfgs", :func:`relunet.quench.lbfgs`) on the float32
    loss, the result rounded to float32, then certified in float64.

    ``x, t``: the float64 data of the certificate and ``loss64``; ``data32``: the
    float32 data of the descent (default: ``x, t`` rounded to float32; the
    experiments pass the training set of the float32 runs).

    The iterate is held in float64 between evaluations (its bookkeeping is the
    descent's), and every evaluation sees it rounded to
    float32; the last accepted point, rounded, is the result, so its float32 loss
    is the one the descent accepted. The descent stops at the float32 loss's
    resolution: once 25 steps in a row leave the float32 loss unchanged (their
    decrease is below its last bit), it is "stagnant" and the descent ends (measured
    with L-BFGS on 8 smoke-scale students with a budget of 2,000 steps: after
    218-1,224 steps, at MSE up to 0.025 above where float64 L-BFGS got).

    Returns the fields of :class:`relunet.quench.QuenchResult` that quench_minima
    stores (``iterations``, the Newton stage's, are 0; ``polished`` -1), plus ``loss64``: the
    float64 loss at the float32 point, and ``cert``: :func:`relunet.quench.certify`'s
    dict there. ``loss0`` and ``loss`` are float32 losses."""
    from ..bfgs import bfgs
    from ..quench import certify, lbfgs
    if descent not in ("bfgs", "lbfgs"):
        raise ValueError(f"descent must be 'bfgs' or 'lbfgs', got {descent!r}")
    W0 = np.asarray(W).astype(np.float32).astype(np.float64)
    x32, t32 = (x, t) if data32 is None else data32
    efun = energy(arch, x32, t32, "float32")
    run = bfgs if descent == "bfgs" else lbfgs
    dr = run(efun, W0, max_iter=int(descent_iter), gtol=gtol, progress=progress) \
        if descent_iter else None
    Wq = W0.copy() if dr is None else dr.W.astype(np.float32).astype(np.float64)
    cert = certify(Wq, arch, x, t, gtol, eps_on, gap)
    desc = ["no descent"] * len(W0) if dr is None else list(dr.reason)
    reason = [str(c) if ok else f"float32 {descent.upper()}: {r}; float64 certificate: {c}"
              for ok, r, c in zip(cert["certified"], desc, cert["reason"])]
    return dict(W=Wq, loss0=efun(W0)[0], loss=efun(Wq)[0], loss64=loss(Wq, arch, x, t),
                moved=np.linalg.norm(Wq - W0, axis=1),
                descent_iterations=np.zeros(len(W0), int) if dr is None else dr.iterations,
                iterations=np.zeros(len(W0), int), polished=np.full(len(W0), -1),
                certified=cert["certified"],
                kind=cert["kind"], measure=cert["measure"], n_kinks=cert["n_kinks"],
                reason=np.array(reason, dtype=str), cert=cert)


# =============================================================================
# The comparison section of the float32 report
# =============================================================================
def _is_count(v: float) -> bool:
    return np.isfinite(v) and float(v).is_integer() and abs(v) < 1e15


def _diff(a: float, b: float) -> str:
    """float32 - float64, and relative to float64 (in %, two digits)."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return "-"
    if a == b:
        return "0"
    d = a - b
    rel = f" ({100 * d / abs(b):+.2g}%)" if b != 0 else ""
    return (f"{int(d):+d}" if _is_count(a) and _is_count(b) else f"{d:+.3g}") + rel


def _value(v: float) -> str:
    return f"{int(v):,}" if _is_count(v) else fmt(v)


def comparison(scale: str, ctx, mods) -> str:
    """The float32 report's comparison: every main number of every experiment in
    ``mods`` that has a ``numbers`` function and a ``dtype`` field, float32 beside
    float64 (read from the store; "float64 not computed" where it is not stored)."""
    from dataclasses import fields

    from .frame import is_stored
    rows, missing, n_both = [], [], 0
    for mod in mods:
        if not hasattr(mod, "numbers") or "dtype" not in {f.name for f in fields(mod.Config)}:
            continue
        c32, c64 = mod.config(scale, "float32"), mod.config(scale, "float64")
        if not is_stored(mod, c32, ctx):
            continue
        n32 = mod.numbers(c32, ctx)
        n64 = None
        if is_stored(mod, c64, ctx):
            try:
                n64 = dict(mod.numbers(c64, ctx))
            except KeyError:      # stored by a version without one of these arrays
                n64 = None
        if n64 is None:
            missing.append(mod.NAME)
        else:
            n_both += 1
        for name, v in n32:
            v = float(v)
            if n64 is None:
                rows.append((mod.NAME, name, _value(v), "float64 not computed", "-"))
            else:
                w = float(n64.get(name, np.nan))
                rows.append((mod.NAME, name, _value(v), _value(w), _diff(v, w)))
    lines = ["## float32 against float64", "",
             f"Every number below was computed in float32 (`run_all.py --scale {scale} --dtype "
             "float32`: training, the quench's BFGS stage and the bands in float32; "
             "canonical coordinates, Hessians, certificates, saddles and fits in float64 on "
             "the float32 points: relunet/experiments/precision.py) and stands beside the "
             "same number from the float64 results of the same store, with the difference "
             "float32 - float64 (relative to float64 in brackets). fig1_wf and "
             "ext_sensitivity are the same in both precisions (W_f is built exactly; the "
             "sensitivity study trains float32 as one of its variants).", "",
             "Read the quench rows, and everything computed from the quenched points (bands, "
             "saddles, Hessians and distances of quenched points, the graph), with care: the "
             "float32 quench is the BFGS stage alone (a float32 point cannot be brought to "
             "a 1e-9 certificate), the float64 one adds the Newton stage, so those rows "
             "differ by a stage as well as by the precision. The rows of training (fits, "
             "basin, 10x10, high frequency; the students as trained) differ by the "
             "precision alone.", ""]
    if not rows:
        return "\n".join(lines + ["No float32 results stored yet.", ""])
    lines += table(("experiment", "quantity", "float32", "float64", "float32 - float64"), rows)
    lines += ["", (f"float64 not computed at this scale for: {', '.join(missing)} (run "
                   f"`python run_all.py --scale {scale}` with the same --store to fill them in)."
                   if missing else f"Both precisions computed for all {n_both} experiments."),
              ""]
    return "\n".join(lines)
