"""Fig. 4: minimum energy paths from the global minimum to local minima (G&W Sec. 3.3).

Endpoints are de-symmetrised (relunet.symmetry.canonicalize: minimal-norm
rescaling, then units sorted): canonical W_f at one end, a canonical quenched
momentum-GD student (relunet.experiments.quench_minima) at the other: the certified
minima among the quenched students first (:func:`_chosen`), uncertified ones only where
there are too few.

Method: the string method (:func:`relunet.string_method.string_method`: perpendicular
relaxation, arc-length reparametrisation on a grid refined where the energy changes and
around the peak, climbing highest image), all bands at once, one kernel call per
iteration. The loss is piecewise smooth, so a band is called converged on a criterion
that holds where forces jump: the energy of its climbing image (the saddle estimate)
moved by at most ``etol`` over the last ``window`` checks on a frozen grid, AND the
gradient-sampling measure at the climbing image (smallest norm in the convex hull of the
gradients at it and at ``gs_samples`` points ``gs_radius`` away) is at most ``gs_tol``
(see relunet.string_method's module docstring). Two barriers are reported: the climbing
image's energy, and the maximum of the loss on the polyline through the images (sampled
densely), the top of an actual path and so an upper bound, higher where the straight
segments between images cut across the rugged landscape.

The climbing image and its neighbours (``precond_width``) take Hessian-preconditioned
steps (``climb_hessian``; the exact Hessian of the loss, its curvatures floored at
``precond_floor`` in absolute value, recomputed every ``precond_every`` steps): next to
walls that curve at 1e3-1e5 the plain step collapses and the climbing image crawls
along the weak directions, so that a band can look stable for 200 iterations while its
climbing image is still on a slope (the stationarity test rejected 16 such bands of the
default run). Measured on the default set (same endpoints, 12,000 iterations): 62 of
100 bands converged with plain steps, 79 with only the climbing image preconditioned,
81-86 with one neighbour on each side (the count moves by a few bands with the rounding
of the metric: the relaxation is chaotic), 89 with two (the default, 53 s for the 100
bands against 57 s with plain steps: the bands stop sooner), 86 with three, 90 with four
(80 s). Preconditioning every image converged faster still (17 of 20 in 3,000
iterations against 5) but let the images drift apart along the weak directions, and the
polyline between them rose (median path maximum 0.35 against 0.23). The fixed points
are those of the plain method: only the way there changes.

Start: the plateau path. No barrier can be real above var(t), the MSE of the network
that predicts the mean: the plateau path of :mod:`relunet.plateau` (shrink the output
layer onto the constant mean(t), cross the plateau of constant networks, grow the other
network's output layer) joins any two networks without rising above max(E_start, E_end,
var(t)). Every band starts on it (``start``), so the relaxation begins from a path that
is already low and only has to find a lower one. From the straight line the images start
where the interpolated networks are garbage (the straight segments peak at a median loss
of 69 on the default set) and each has to be trained down like a network; measured on
the default set with plain steps (before the climbing image was preconditioned): 8 of 100
bands converged in 1,500 iterations and 12 in 6,000 from the straight line, against 20
and 52 from the plateau path (62 in 12,000). The price is length: the plateau legs add
the two output layers' norms to the chord, and the bands relax to paths about as long
as it (a median 1.5 times the chord). ``plateau_max`` records the plateau path's maximum
per band.

Shortening rounds (``shorten_rounds``, ``shorten_sweeps``): the string method converges to
a minimum energy path near its start, and this landscape holds many (the plain at MSE
~0.17 between the walls is nearly flat, and on a flat stretch any path is one), so the
plateau start leaves paths as long as itself. Each round cuts every band's corners
(:func:`relunet.string_method.smooth`: 100 sweeps of discrete curve-shortening flow, the
ends fixed), relaxes it again with the same method and budget, and keeps the new band
where it converged and its highest image is not higher than the old one's by more than
``etol`` (or the old band had not converged): the lower pass is the better estimate of
the barrier (the barrier between two minima is the lowest pass over all paths), and of
two paths over the same pass the shorter. The highest image, ends included: the highest
point of a path is its barrier, and on a band whose far end lies higher than every
interior image (a network that predicts a constant, at var(t)) any path whose interior
stays below that end is as good. (Until 2026-12-03 the interior images were compared,
the climbing image alone; the measurements below were taken so.) Measured on the default
run's bands
(2026-12-03, restarted from the stored float32 copies of the images; bands within 1.5
times their chord, of 100, from 50; converged, from 91):

==========================  ==========  =========  ======================================
sweeps x rounds             within 1.5  converged  replaced bands' climbing image lower
==========================  ==========  =========  ======================================
15 x 1, 15 x 2              77, 79      94, 94     46 (median 1.5e-3), + 26 (8.6e-4)
30 x 1, 30 x 2, 30 x 3      81, 82, 82  96         48 (1.5e-3), + 22, + 15
100 x 1 (default), 100 x 2  82, 82      96         47 (1.2e-3), + 23 (2.9e-4)
==========================  ==========  =========  ======================================

(the fresh-clone run with 15 x 2: 79 and 94, the climbing image lower in 57 of 63).
About 18 bands cannot be shortened under the rule: their shortened paths cross a higher
pass or do not converge. Without the rule (every converged new band replaces the old)
three rounds of 15 reach 92 within 1.5, but about a third of the replaced bands then
cross a higher pass than before, and 30 or 100 sweeps leave fewer bands converged (84,
81). One round of 100 sweeps: about 140 s for the 100 bands.

Held rounds (``hold_widths``): a free round cuts across to whatever pass lies nearer the
chord, and on the bands it could not replace that pass was higher. Yet a short path over
the band's own pass exists: the polyline W_f -> climbing image -> end is 1.07-1.28 times
the chord on each of the 14 bands the default run had left above 1.5. So the bands no
round has replaced get a round of their own, the rest of the band smoothed while its
climbing image and w neighbours on each side are held (the ``hold`` of
:func:`relunet.string_method.smooth`; one round per entry w of ``hold_widths``: a second
round with the same w would repeat the first bit for bit), then relaxed and judged by the
same rule. Measured (2026-12-03) from the default run's stored bands, on the 40 not
replaced: 100 sweeps with 0, 1 or 2 neighbours held took 86 within 1.5 to 90, 92 and 91
(1 neighbour with 300 sweeps: 90); the whole procedure from the first relaxation with one
held round of 1 neighbour: 92 within 1.5, 97 converged, 17 bands replaced by the held
round (the same in the fresh-clone run, 211 s for both rounds). A second held round with
2 neighbours, from that run's stored bands on the 23 not replaced: 94 within 1.5 for 90 s
more (3 neighbours: 93), so not the default. Those measurements compared the interior
images only, and 3 of the bands left long end at a network that predicts a constant
(its MSE var(t) lies above every interior image): their shortened paths rose above the old
climbing image but stayed below that end. With the highest images compared ends
included (the present rule) they are replaced: 95 within 1.5, 97 converged, both from
the first relaxation and in the fresh-clone run (d422442). The bands left above 1.5 are
those whose shortened paths still cross a higher pass or do not converge.

Start study (``start_study``): the same bands, method and budget are also relaxed from
the straight line, and the report compares the two. It runs at the smoke, large and paper
scales and not at the default one (since 2026-12-03: it took 204-225 s of a default run
that came within 70 s of its 20-minute limit on 2 cores); its last default-scale result
(fresh-clone run of d1f188a, float64): 76 of 100 converged from the straight line, on
paths 1.08 times their chord (all 76 within 1.5); of the 75 converged from both starts
the straight band's climbing image was lower by more than 1e-4 in 19, the main band's in
42 (|difference| a median 1.8e-3), and 6 crossed a pass higher than the plateau path's
maximum; in float32 (the same run) 94 of 100 converged from the straight line, on paths
1.14 times their chord, and the main band's climbing image was the lower in 60 of the 94
converged from both. With the present method (climbing
image preconditioned) 70 of the 100 default bands converge from the straight line in
12,000 iterations (81 in 36,000, measured once), on paths a median 1.09 times their chord
(all within 1.5), against 93 from the plateau path; of the 64 converged from both, the
straight band's climbing image is lower by more than ``etol`` in 32, the plateau band's
in 21 (|difference| a median 1e-3): a shorter path is not a lower one, and neither start
gives both convergence and short paths. Capping the climb at the plateau path's bound
(max(E_ends, var(t)), a valid cap on the barrier) instead of the straight line's maximum
converged fewer (50 of 100): on the straight start the highest images sit above the cap
for thousands of iterations, and a band without a climber does not stop.

Budget: 20,000 iterations (12,000 until 2026-12-03). The slowest tenth of the bands
needs more than 12,000: on the ends of that day's quench (which differ from the earlier
ends in their last bits and in 2 of 100 networks) 12,000 converged 89 of 100 from the
plateau path and 59 from the straight line, 20,000 converged 94 and 73, for about a
minute more of the default run.
The band's images start on the corner grid (:func:`relunet.plateau.corner_grid`): two of
them exactly on the path's corners, so that the band's polyline IS the plateau path. On
the uniform grid the chords across the corners climbed above var(t) on 42 of the 100
default bands (up to a loss of 30), the string's first reparametrisation put images on
them, and 89 bands converged; on the corner grid 96 (same run otherwise).

Segments: a band's path maximum is read on the straight segments between its images,
and where two relaxed images sit in a curved valley the chord between them cuts across
its wall. Every segment that rises above its band's highest image is relaxed once more
as a string of ``refine_images`` images of its own (at most ``refine_iter`` iterations;
:func:`relunet.string_method.refine_segments`) and keeps the lower maximum; the band
with its refined segments is still a path, so ``segment_peak`` is an upper bound on the
barrier, tighter than ``peak_energy``.

Convergence study: up to ``n_study`` converged bands are relaxed again with
twice the images and twice the iterations, twice: from the start, as the band
was (is the whole procedure reproducible, or does a finer band find another
path?), and from the converged band itself, refined (:func:`refine_band`: a
midpoint inserted in every segment, every image kept where it was, the grid
frozen, so the climbing image starts on its saddle estimate with half the
spacing around it: does refining the discretisation move its barrier?). The
report gives how much their barriers move, and for the refined reruns whether
the highest image is still the old climbing image or another one (a different
saddle of the same path that rose above it). Why the 1e-4 target is out of reach with
this stopping rule: measured (2026-12-03) on the 10 study bands of the default run,
continued from where they stopped on a frozen grid with tighter criteria (``gs_tol``
1e-3, ``etol`` 1e-5, 20,000 more iterations), 1 of 10 met them; the climbing image went
on down in 7 (by 4e-4 to 6.8e-3), rose by 1.2e-3 in one and by 0.34 in another (thrown
up a wall); the same with a midpoint inserted in every segment ended a median 1.6e-3 from
those. A band that holds its barrier to 1e-4 over 200 iterations, its climbing image
passing the sampled test at radius 1e-2, can still be creeping along a shallow slope:
the barriers are good to about 1e-3. What the slope is: the next paragraph.

What the bands cross (``across_iter``; measured 2026-12-03 on the bands of the default
run of d422442): the climbing images of the 89 converged bands that peak below var(t)
compute W_f's spline and almost none of its teeth. Read in the basis of W_f's two blocks
(:func:`relunet.geometry.components`: f = spline + teeth, W_f is (1, 1, 0)), their teeth
coefficient is 0.010 [0.001, 0.022] (median [10%, 90%]) and their spline coefficient 0.98,
while the minima at the far ends keep 0.30 [0.00, 0.47] of the teeth; their energy lies
within -0.003..+0.007 of the spline level 0.1693 (:func:`relunet.geometry.spline_level`:
the lowest loss of any function a spline + c, nearly the teeth's variance 0.1693). So the
paths give up W_f's teeth, cross near the networks that compute the spline alone, and
the minima rebuild part of the teeth their own way. Those networks form a nearly flat set:
every climbing image has dead hidden units (off at every training point: a median 4 of
25, at least 1), whose weights move freely nearby at the same loss, as on the plateau of
constant networks (W_f has none). And the climbing images are not saddles on it: their gradient norm
is ~1e-2, their Hessians have dozens of negative curvatures (transition_states), and the
loss still falls across the band (:func:`relunet.string_method.min_across`, minimised in
the hyperplane through the climbing image perpendicular to the band: by 0.0044 [0, 0.033]
in 300 BFGS steps over a distance 1.2, by 0.025 in 1,000 steps over 5.6, still falling).
A lower point across the band is not a lower path: 20 bands whose climbing image was
replaced by its 300-step minimum across (held while the band was smoothed, then relaxed
again with the same method and budget) peaked again within -6e-3..+3e-3 of where they
had (10 converged no higher; median change of those -1e-3). The barrier seen from W_f is
the spline level to about 3e-3 on every band, and where on this flat set a band crosses
moves its top by ~1e-3: the convergence study's spread, and the reason no transition
state is found there. The report's row "what the bands cross" gives these numbers for each
run; the test across the band takes about 3 s for the 100 bands.

Basin radius (G&W: "about 2"): on a minimum energy path the loss rises
monotonically from W_f up to the first ridge the path crosses (going downhill
from any point before it leads back to W_f), so the radius of W_f's basin along
the path is the distance from W_f of the first local maximum of the loss along
the converged band. A maximum counts when the profile drops by at least
``etol`` after it (smaller wiggles are below the resolution of the band). The
report gives the Euclidean distance of that point from W_f (and its energy);
the paper's reading, the distance where the energy first reaches half its end
value, is kept beside it for comparison.

(a) energy against distance along the path for every band (dense profiles;
converged bands in colour); (b) one profile coloured along its length; (c) the
network's function along that path in the same colours; (d) the angle between
successive difference vectors along it.

In float32 (``dtype``, ``run_all.py --dtype float32``) the far ends are the
float32 quench's points and the string's energies and forces are computed in
float32 at the float32-rounded images (:func:`relunet.experiments.precision.energy`);
the images and the method's bookkeeping stay float64.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..construct import WF_ARCH
from ..data import wf_training_set
from ..geometry import components, path_angles, path_functions, spline_level
from ..plateau import band_start, plateau_path
from ..string_method import min_across, refine_segments, smooth, string_method
from .frame import preset
from .precision import energy, hessians
from .tables import claims, fmt, spread

NAME = "fig4_neb"
TITLE = "Fig. 4: minimum energy paths (string method) from W_f to local minima"
NEEDS = ("quench_minima",)   # experiments whose stored results compute() reads
RESULT = "bands"


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_paths: int = 100
    n_images: int = 32            # per band, both endpoints included
    max_iter: int = 20000
    step: float = 1e-3            # initial step h of every image (F_perp h)
    step_max: float = 0.5
    max_step: float = 0.2         # largest displacement of one image in one step
    first_move: float = 1e-3      # ... in its first step (no Lipschitz estimate yet)
    n_dense: int = 8              # points per segment of the dense profile
    regrid_every: int = 100
    regrid_until: int = 200       # grid frozen after this iteration
    energy_weight: float = 0.5
    peak_weight: float = 0.25
    check_every: int = 10
    window: int = 20              # checks: 200 iterations
    etol: float = 1e-4            # barrier change allowed over the window
    gs_radius: float = 1e-2       # gradient sampling at the climbing image
    gs_samples: int = 16
    gs_tol: float = 1e-2
    climb: bool = True
    watch: str = "image"          # the window watches the climbing image's energy
    climb_hessian: bool = True    # the climbing image's steps preconditioned by |H| (exact)
    precond_floor: float = 1.0    # ... with its curvatures floored at this
    precond_every: int = 200      # ... and recomputed every this many steps
    precond_width: int = 2        # ... for the climbing image and its neighbours this far
    n_study: int = 10             # converged bands rerun with 2x images, 2x iterations
    refine_images: int = 5        # segments rising above their band's highest image: relaxed
    refine_iter: int = 300        # ... as strings of this many images, this many iterations
    start: str = "plateau"        # initial path: "plateau" (relunet.plateau) or "straight"
    start_study: bool = True      # the same bands also relaxed from the straight line
    shorten_rounds: int = 1       # rounds of: smooth each band, relax it again (0: none)
    shorten_sweeps: int = 100     # ... curve-shortening sweeps per round (string_method.smooth)
    hold_widths: tuple = (1,)     # then a round per entry on the bands not yet replaced, the
                                  # ... climbing image and this many neighbours each side held
    across_iter: int = 300        # BFGS steps of the test across each band's climbing image
    source: str = "momentum"      # which main run supplies the local minima
    example: int = 0              # the band drawn in panels (b)-(d)
    n_plot: int = 801
    dtype: str = "float64"        # precision of the energy and forces (and of the minima)


PRESETS = {
    "smoke": dict(n_paths=3, n_images=8, max_iter=60, regrid_every=20, regrid_until=20,
                  check_every=5, window=3, n_study=2, refine_iter=20, shorten_sweeps=3),
    # 20,000 iterations: the slowest tenth of the bands needs more than 12,000 (on the ends
    # of 2026-12-03's quench 12,000 converged 89 of 100, 5 not yet stable; 20,000: 94, +1 min)
    # the start study (3.5-4 min of the default run, which must stay within 20 minutes on 2
    # cores) runs at the smoke, large and paper scales; its default-scale measurement is in
    # the module docstring
    "default": dict(n_paths=100, n_images=32, max_iter=20000, n_study=10, start_study=False),
    "large": dict(start_study=True),
    "paper": dict(n_paths=100, n_images=64, max_iter=40000, regrid_until=2000, n_study=100),
}


config = preset(Config, PRESETS)


def _chosen(cfg: Config, d) -> np.ndarray:
    """Which quenched points of the source run the bands end at: the certified minima
    first, then certified points of open type, then uncertified ones (certified saddles
    never), each in the quench's order (:func:`quench_minima.select`)."""
    from . import quench_minima
    return quench_minima.select(d[f"{cfg.source}_type"], d[f"{cfg.source}_certified"],
                                cfg.n_paths)


def endpoints(cfg: Config, ctx):
    """Canonical W_f (P,) and n_paths quenched minima of the source run, canonical.

    The far ends are students of the main run after quenching
    (:mod:`relunet.experiments.quench_minima`), certified minima where there are
    enough (:func:`_chosen`), not wherever training stopped. Returns (wf, ends,
    network_index)."""
    from . import quench_minima
    d = quench_minima.quenched(cfg.scale, ctx, cfg.dtype)
    sel = _chosen(cfg, d)
    return d["wf_c"], d[f"{cfg.source}_Wc"][sel], d[f"{cfg.source}_index"][sel]


def _relax(cfg: Config, wf, ends, n_images: int, max_iter: int, path=None, fractions=None,
           regrid_every=None):
    """The bands W_f -> ends, started on ``path`` if given (at ``fractions`` of it, and
    with the grid re-equidistributed every ``regrid_every`` iterations: default
    ``cfg``'s), else as ``cfg.start`` says (the plateau path on its corner grid,
    relunet.plateau.corner_grid, or the straight line)."""
    x, t = wf_training_set(dtype=cfg.dtype)
    if path is None:
        path, fractions = band_start(cfg.start, wf, ends, WF_ARCH, t, n_images)
    return string_method(energy(WF_ARCH, x, t, cfg.dtype), wf, ends, path=path,
                         n_images=n_images, max_iter=max_iter, step=cfg.step,
                         step_max=cfg.step_max, max_step=cfg.max_step,
                         first_move=cfg.first_move, n_dense=cfg.n_dense,
                         regrid_every=cfg.regrid_every if regrid_every is None else regrid_every,
                         regrid_until=cfg.regrid_until, fractions=fractions,
                         energy_weight=cfg.energy_weight, peak_weight=cfg.peak_weight,
                         check_every=cfg.check_every, window=cfg.window, etol=cfg.etol,
                         gs_radius=cfg.gs_radius, gs_samples=cfg.gs_samples, gs_tol=cfg.gs_tol,
                         climb=cfg.climb, watch=cfg.watch,
                         climb_hessian=hessians(WF_ARCH, x, t) if cfg.climb_hessian else None,
                         precond_floor=cfg.precond_floor, precond_every=cfg.precond_every,
                         precond_width=cfg.precond_width)


def _climbing(res):
    """Each band's highest movable image (its climbing image), (Bn, D)."""
    return res.images[np.arange(len(res.images)), np.argmax(res.energies[:, 1:-1], axis=1) + 1]


def _replace_rows(old, new, take, rows=None):
    """A StringResult with the bands ``rows[take]`` from ``new`` (``new`` holds the bands
    ``rows`` of ``old``; default all of them) and the rest from ``old``."""
    rows = np.arange(len(take)) if rows is None else rows
    out = {}
    for f in old.__dataclass_fields__:
        a, b = getattr(old, f), getattr(new, f)
        if a is None or b is None:
            out[f] = a
            continue
        a = np.array(a, copy=True)
        a[rows[take]] = b[take]
        out[f] = a
    return replace(old, **out)


def _climbers(E, width: int):
    """Booleans (Bn, B): each band's highest movable image (its climbing image) and its
    ``width`` neighbours on each side, the ends excluded."""
    n, B = E.shape
    c = np.argmax(E[:, 1:-1], axis=1) + 1
    j = np.arange(B)
    hold = np.abs(j[None, :] - c[:, None]) <= width
    hold[:, [0, -1]] = False
    return hold


def shorten(cfg, relax, res, barrier):
    """The shortening rounds of the module docstring, for any batch of bands. Each free
    round (``cfg.shorten_rounds``) smooths every band (:func:`relunet.string_method.smooth`,
    ``cfg.shorten_sweeps`` sweeps) and relaxes it again; then one held round per entry w of
    ``cfg.hold_widths`` does the same to the bands no round has replaced yet, with their
    climbing image and its w neighbours on each side held. A new band replaces the old one
    where it converged and its ``barrier`` is not higher than the old band's by more than
    ``cfg.etol`` (or the old one had not converged).

    relax(rows, path, fractions) : the bands ``rows`` of ``res`` relaxed again from
    ``path`` (the same method and budget); barrier(result) : each band's barrier estimate.
    Returns (bands, round each kept band comes from: 0 for the first relaxation, then the
    free rounds 1, 2, ..., then the held ones)."""
    n_images = res.images.shape[1]
    frac = np.linspace(0.0, 1.0, n_images)
    kept = np.zeros(len(res.images), int)
    widths = [None] * cfg.shorten_rounds + list(cfg.hold_widths)
    for r, width in enumerate(widths, start=1):
        rows = np.arange(len(kept)) if width is None else np.flatnonzero(kept == 0)
        if rows.size == 0:
            break
        hold = None if width is None else _climbers(res.energies[rows], width)
        new = relax(rows, smooth(res.images[rows], cfg.shorten_sweeps, hold=hold), frac)
        take = new.converged & (~res.converged[rows]
                                | (barrier(new) <= barrier(res)[rows] + cfg.etol))
        res = _replace_rows(res, new, take, rows)
        kept[rows[take]] = r
    return res, kept


def _shorten(cfg: Config, wf, ends, res, n_images: int, max_iter: int):
    """Fig. 4's bands W_f -> ends shortened (:func:`shorten`; the barrier: the highest
    image's energy)."""
    def relax(rows, path, fractions):
        return _relax(cfg, wf, ends[rows], n_images, max_iter, path=path, fractions=fractions)
    return shorten(cfg, relax, res, lambda r: r.energies.max(axis=1))


def compute(cfg: Config, ctx) -> dict:
    wf, ends, idx = endpoints(cfg, ctx)
    x, t = wf_training_set(dtype=cfg.dtype)
    # the plateau path W_f -> each minimum: never above max(E_ends, var(t)) (checked below)
    pp = plateau_path(wf, ends, WF_ARCH, t, n_per_leg=cfg.n_images)
    t0 = time.perf_counter()
    first = _relax(cfg, wf, ends, cfg.n_images, cfg.max_iter)
    t_main = time.perf_counter() - t0
    t0 = time.perf_counter()
    res, kept = _shorten(cfg, wf, ends, first, cfg.n_images, cfg.max_iter)
    t_short = time.perf_counter() - t0
    # the segments that rise above their band's highest image, relaxed as strings of their
    # own: a path with a lower maximum (a tighter upper bound on each barrier)
    t0 = time.perf_counter()
    efun = energy(WF_ARCH, x, t, cfg.dtype)
    seg = segments(cfg, efun, res)
    t_seg = time.perf_counter() - t0
    # convergence study: the first converged bands again, 2x images and 2x iterations,
    # from the start (is the procedure reproducible?) and from the converged band itself
    # (does refining the discretisation of that path move its barrier?)
    study = np.flatnonzero(res.converged)[:cfg.n_study]
    t0 = time.perf_counter()
    fine = refined = None
    if study.size:
        n2, it2 = 2 * cfg.n_images - 1, 2 * cfg.max_iter       # the whole procedure again
        fine = _shorten(cfg, wf, ends[study], _relax(cfg, wf, ends[study], n2, it2), n2, it2)[0]
        fine_path, fine_frac = refine_band(res.images[study])
        refined = _relax(cfg, wf, ends[study], 2 * cfg.n_images - 1, 2 * cfg.max_iter,
                         path=fine_path, fractions=fine_frac, regrid_every=0)
    t_study = time.perf_counter() - t0
    # the start study: the same bands, method and budget from the straight line. Does the
    # start decide the saddle estimate, or only the path's length?
    t0 = time.perf_counter()
    other = (_relax(replace(cfg, start="straight"), wf, ends, cfg.n_images, cfg.max_iter)
             if cfg.start_study and cfg.start == "plateau" else None)
    t_other = time.perf_counter() - t0
    # what the climbing images are: a minimum across the band (a saddle's signature) or
    # not, and what they compute (W_f's teeth, or the spline alone)
    t0 = time.perf_counter()
    top = _climbing(res)
    _, across_energy, across_distance = min_across(efun, res.images, res.energies,
                                                   cfg.across_iter)
    t_across = time.perf_counter() - t0
    tops = [_climbing(r) for r in (fine, refined) if r is not None]
    # ... and their path maxima with the rising segments relaxed, as the main bands'
    fine_seg = segments(cfg, efun, fine).peak if fine is not None else np.zeros(0)
    refined_seg = segments(cfg, efun, refined).peak if refined is not None else np.zeros(0)
    var_t = float(np.var(wf_training_set()[1]))   # MSE of the constant predictor mean(t)
    Ep, _ = energy(WF_ARCH, x, t, cfg.dtype)(pp.reshape(-1, pp.shape[-1]))
    xs = np.linspace(-1, 1, cfg.n_plot)
    ex = res.images[cfg.example]
    empty = np.zeros(0)
    return dict(
        images=res.images.astype(np.float32), energies=res.energies,
        # the highest movable image of each band (the climbing image, the saddle estimate)
        # in full precision: the transition-state search starts there (from the float32
        # copy above, rounded by ~1e-7 per weight, it certified one saddle fewer)
        top_images=top, top_grad=np.linalg.norm(efun(top)[1], axis=1),
        across_energy=across_energy, across_distance=across_distance,
        top_components=components(top, WF_ARCH, x)[0],
        end_components=components(ends, WF_ARCH, x)[0],
        study_top_components=(components(np.concatenate(tops), WF_ARCH, x)[0] if tops
                              else np.zeros((0, 3))),
        spline_level=spline_level(x),
        distance=res.distance, converged=res.converged, iterations=res.iterations,
        peak_energy=res.peak_energy, peak_segment=res.peak_segment, peak_t=res.peak_t,
        peak_distance=res.peak_distance, peak_point=res.peak_point.astype(np.float32),
        barrier_change=res.barrier_change, peak_measure=res.peak_measure,
        fperp_max=res.fperp.max(axis=1), dense_distance=res.dense_distance,
        dense_energies=res.dense_energies, network_index=idx, var_t=var_t, xs=xs,
        straight_max=_straight_max(wf, ends, cfg.n_images * cfg.n_dense, cfg.dtype),
        plateau_max=Ep.reshape(len(ends), -1).max(axis=1).astype(np.float64),
        plateau_length=np.linalg.norm(np.diff(pp, axis=1), axis=-1).sum(axis=1),
        example_functions=path_functions(ex, WF_ARCH, xs), example_angles=path_angles(ex),
        angles=np.array([path_angles(b) for b in res.images]),
        study_index=study,
        study_peak_energy=fine.peak_energy if fine is not None else empty,
        study_top_energy=fine.energies.max(axis=1) if fine is not None else empty,
        study_converged=fine.converged if fine is not None else empty.astype(bool),
        study_iterations=fine.iterations if fine is not None else empty.astype(int),
        refined_peak_energy=refined.peak_energy if refined is not None else empty,
        refined_top_energy=refined.energies.max(axis=1) if refined is not None else empty,
        refined_converged=refined.converged if refined is not None else empty.astype(bool),
        refined_top_index=(np.argmax(refined.energies, axis=1) if refined is not None
                           else empty.astype(int)),
        segment_peak=seg.peak, segment_bands=seg.segments[:, 0],
        study_segment_peak=fine_seg, refined_segment_peak=refined_seg,
        segment_converged=(seg.sub.converged if seg.sub is not None else empty.astype(bool)),
        straight_converged=other.converged if other is not None else empty.astype(bool),
        straight_energies=other.energies if other is not None else empty,
        straight_length=other.distance[:, -1] if other is not None else empty,
        straight_peak=other.peak_energy if other is not None else empty,
        straight_iterations=other.iterations if other is not None else empty.astype(int),
        # the first relaxation, before the shortening rounds, and the round of each band kept
        first_energies=first.energies, first_converged=first.converged,
        first_length=first.distance[:, -1], shorten_round=kept,
        seconds=np.array([t_main, t_study, t_seg, t_other, t_short, t_across]))


def segments(cfg, efun, res):
    """refine_segments on the bands ``res`` with the step rules and stopping test of
    ``cfg`` (this module's Config or another with the same string fields, as the
    disconnectivity graph's): their path maxima with the rising segments relaxed."""
    return refine_segments(efun, res, n_images=cfg.refine_images,
                           max_iter=cfg.refine_iter, tol=cfg.etol, step=cfg.step,
                           step_max=cfg.step_max, max_step=cfg.max_step,
                           first_move=cfg.first_move, check_every=cfg.check_every,
                           window=cfg.window, etol=cfg.etol, gs_radius=cfg.gs_radius,
                           gs_samples=cfg.gs_samples, gs_tol=cfg.gs_tol)


def _straight_max(wf, ends, n, dtype="float64"):
    """Highest loss on the straight segment W_f -> end, n + 1 points (n+1, per band)."""
    x, t = wf_training_set(dtype=dtype)
    s = np.linspace(0.0, 1.0, n + 1)[None, :, None]
    P = wf[None, None] + s * (ends - wf)[:, None]
    E, _ = energy(WF_ARCH, x, t, dtype)(P.reshape(-1, P.shape[-1]))
    return E.reshape(len(ends), -1).max(axis=1)


def _dense_points(images, dense_distance, k):
    """Positions (n, D) of dense-profile point k[b] of each band (n_dense per segment)."""
    n, B, _ = images.shape
    nd = (dense_distance.shape[1] - 1) // (B - 1)
    j = np.minimum(k // nd, B - 2)
    t = np.where(k // nd > B - 2, 1.0, (k % nd) / nd)
    r = np.arange(n)
    return images[r, j] + t[:, None] * (images[r, j + 1] - images[r, j])


def basin_radius(images, dense_distance, dense_energies, tol: float):
    """Distance from the start (W_f) of the first local maximum of each band's
    dense profile that the profile then drops below by more than ``tol``.

    Returns (euclidean distance from images[:, 0], arc length along the band,
    energy there), each (n,); a band that never drops by ``tol`` (it rises all
    the way to its end) gets its highest point.
    """
    images = np.asarray(images, dtype=np.float64)
    n = len(images)
    k = np.empty(n, int)
    for b, e in enumerate(dense_energies):
        run_max = np.maximum.accumulate(e)
        drop = np.nonzero(e < run_max - tol)[0]
        k[b] = np.argmax(e[:drop[0]]) if drop.size else np.argmax(e)
    P = _dense_points(images, dense_distance, k)
    r = np.arange(n)
    return (np.linalg.norm(P - images[:, 0], axis=1), dense_distance[r, k],
            dense_energies[r, k])


def half_energy_radius(distance, energies) -> np.ndarray:
    """The paper's reading (for comparison only): distance along the band where
    the energy first reaches half of the local minimum's energy."""
    out = np.empty(len(energies))
    for b, (d, e) in enumerate(zip(distance, energies)):
        above = np.nonzero(e >= 0.5 * e[-1])[0]
        out[b] = d[above[0]] if above.size else np.nan
    return out


def plot(cfg: Config, ctx) -> list[str]:
    import matplotlib.pyplot as plt

    from ..plots import F_COLOR, colored_line, figure, savefig
    d = ctx.results(NAME, cfg).load_array(RESULT)
    fig, axes = figure(2, 2, width=4.0, height=3.1)
    (a, b), (c, dd) = axes
    conv = d["converged"]
    for dist, e, ok in zip(d["dense_distance"], d["dense_energies"], conv):
        a.plot(dist, e, color=F_COLOR if ok else "0.6", alpha=0.45 if ok else 0.35,
               lw=0.8, ls="-" if ok else "--")
    a.axhline(float(d["var_t"]), color="k", lw=0.6, ls=":")
    a.annotate("var(t): no barrier is higher (plateau path)", (0.02, float(d["var_t"])),
               xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
               fontsize=6, va="bottom")
    if "spline_level" in d:     # the lowest loss of a network without W_f's teeth
        level = float(d["spline_level"])
        a.axhline(level, color="C3", lw=0.7, ls="--")
        a.annotate(f"spline alone, no teeth ({level:.3f})", (0.98, level),
                   xycoords=("axes fraction", "data"), xytext=(0, 2),
                   textcoords="offset points", fontsize=6, va="bottom", ha="right", color="C3",
                   bbox=dict(fc="white", ec="none", alpha=0.85, pad=0.5))
    # the straight segments between images of unconverged bands can rise far above the
    # landscape's bound; the axis shows the band of real barriers and counts the rest
    top = 2.5 * float(d["var_t"])
    high = np.max(d["dense_energies"], axis=1) > top
    a.set_ylim(0.0, top)
    if high.any():
        a.annotate(f"{int(high.sum())} profiles run above the axis (up to "
                   f"{np.max(d['dense_energies']):.3g})", (0.02, 0.97), xycoords="axes fraction",
                   fontsize=6, va="top")
    a.set_title(f"(a) {len(conv)} string profiles ({int(conv.sum())} converged, solid)")
    k = cfg.example
    dist, e = d["distance"][k], d["energies"][k]
    b.plot(d["dense_distance"][k], d["dense_energies"][k], color="0.6", lw=0.6, zorder=1,
           label="loss between the images")
    lc = colored_line(dist, e, dist, ax=b)
    b.scatter(dist, e, c=dist, cmap="viridis", s=10, zorder=3)
    if "spline_level" in d:
        b.axhline(float(d["spline_level"]), color="C3", lw=0.7, ls="--", zorder=0)
    b.set_title("(b) one path, coloured along its length")
    cmap = plt.get_cmap("viridis")
    for i, y in enumerate(d["example_functions"]):
        c.plot(d["xs"], y, color=cmap(dist[i] / dist[-1]), lw=0.8)
    c.set_title("(c) the network's function along that path")
    c.set_xlabel("x")
    c.set_ylabel("output")
    dd.plot(dist[1:-1], d["example_angles"], "o-", color="k", ms=3, lw=0.8)
    dd.set_title("(d) angle between successive steps")
    dd.set_ylabel("angle (radians)")
    for ax in (a, b, dd):
        ax.set_xlabel("distance along the path from W_f")
    for ax in (a, b):
        ax.set_ylabel("MSE")
    fig.colorbar(lc, ax=[b, dd], label="distance along the path from W_f", shrink=0.9)
    return savefig(fig, "fig4_neb", ctx.figures)


def _q(v):
    return spread(v, empty="none")


def _by_endpoint(cfg: Config, ctx, conv, chord) -> str:
    """How convergence depends on the far end: certified minimum or not, and how far."""
    from . import quench_minima
    q = quench_minima.quenched(cfg.scale, ctx, cfg.dtype)
    cert = q[f"{cfg.source}_certified"][_chosen(cfg, q)].astype(bool)
    if len(cert) != len(conv):
        return ""
    part = [f"; to certified stationary points {int(conv[cert].sum())} of "
            f"{int(cert.sum())}, to "
            f"uncertified points {int(conv[~cert].sum())} of {int((~cert).sum())}"]
    if conv.any() and (~conv).any():
        part.append(f"; distance W_f -> end {fmt(np.median(chord[conv]))} (converged) "
                    f"against {fmt(np.median(chord[~conv]))} (median)")
    return "".join(part)


def refine_band(X):
    """A band with a midpoint inserted in every segment, and the arc-length fractions of
    its 2B - 1 points: started there on a frozen grid (``regrid_every=0``), the string
    method keeps every image where it was (the climbing image at its saddle estimate)
    and only halves the spacing around it."""
    X = np.asarray(X, dtype=np.float64)
    n, B, D = X.shape
    out = np.empty((n, 2 * B - 1, D))
    out[:, ::2] = X
    out[:, 1::2] = 0.5 * (X[:, :-1] + X[:, 1:])
    seg = np.sqrt(np.sum(np.diff(out, axis=1) ** 2, axis=2))
    s = np.concatenate([np.zeros((n, 1)), np.cumsum(seg, axis=1)], axis=1)
    frac = s / s[:, -1:]
    frac[:, -1] = 1.0
    return out, frac


def _kept(idx, ok, top_index, top2, E, conv):
    """Refined reruns split by whether the highest image is still the old climbing image
    (now image 2c) or another one (a different saddle of the same path rose above it)."""
    ok = ok.astype(bool) & conv[idx]
    if not ok.any():
        return ""
    c_old = np.argmax(E[idx], axis=1)
    same = ok & (top_index == 2 * c_old)
    other = ok & ~same
    dT = np.abs(top2 - E[idx].max(axis=1))
    out = f"; the highest image still the old climbing image in {int(same.sum())}"
    if same.any():
        out += f" (|change| {_q(dT[same])}, max {fmt(dT[same].max())})"
    out += f", another image in {int(other.sum())}"
    if other.any():
        out += f" (|change| {_q(dT[other])}: another saddle of the path)"
    return out


def _study(idx, how, ok, top2, peak2, top, peak, conv, seg2=None, seg=None):
    """One rerun of the convergence study: its row text and verdict (``seg2``, ``seg``: the
    rerun's and the band's path maxima with the rising segments relaxed, if stored)."""
    ok = ok.astype(bool) & conv[idx] if idx.size else np.zeros(0, bool)
    if not ok.any():
        return f"{how}: no band converged in both runs ({idx.size} rerun)", "not measured"
    dT, dB = np.abs(top2 - top[idx])[ok], np.abs(peak2 - peak[idx])[ok]
    row = (f"{how}: {int(ok.sum())} of {idx.size} rerun bands converged again; |change| of "
           f"the climbing image energy (saddle estimate) {_q(dT)}, max {fmt(dT.max())}, "
           f"< 1e-4 for {np.mean(dT < 1e-4):.0%}; of the path maximum {_q(dB)}, max "
           f"{fmt(dB.max())}, < 1e-4 for {np.mean(dB < 1e-4):.0%}")
    verdict = ("met for the climbing image" if np.all(dT < 1e-4) else
               f"the climbing image moves >= 1e-4 in {np.mean(dT >= 1e-4):.0%}")
    verdict += ("; met for the path maximum" if np.all(dB < 1e-4) else
                "; not met for the path maximum (it depends on how the straight segments "
                "between images cut across the ridges)")
    if seg2 is not None and seg is not None and len(seg2) == idx.size:
        dS = np.abs(seg2 - seg[idx])[ok]
        row += (f"; of the path maximum with the rising segments relaxed {_q(dS)}, max "
                f"{fmt(dS.max())}, < 1e-4 for {np.mean(dS < 1e-4):.0%}")
        verdict += ("; met with the rising segments relaxed" if np.all(dS < 1e-4) else
                    f"; with the rising segments relaxed it still moves >= 1e-4 in "
                    f"{np.mean(dS >= 1e-4):.0%} (by a median {fmt(np.median(dS))} against "
                    f"{fmt(np.median(dB))} on the chords): the rerun's path is another path, "
                    f"not only cut differently")
    return row, verdict


def _start_study(cfg: Config, d, conv, chord, top):
    """The same bands from the straight line: (row, verdict, note for the path-length
    verdict), or None where not stored. Compared on the bands converged from both starts:
    the climbing images' energies (the saddle estimates) and the paths' lengths."""
    if "straight_converged" not in d or d["straight_converged"].size != len(conv):
        return None
    ok = d["straight_converged"].astype(bool)
    ratio = d["straight_length"] / chord
    top_s = d["straight_energies"].max(axis=1)
    both = ok & conv
    n, k, tol = len(conv), int(ok.sum()), cfg.etol
    row = (f"{k} of {n} converged (the first relaxation's method and budget; iterations "
           f"{_q(d['straight_iterations'])}); path length / chord {_q(ratio)}, max "
           f"{fmt(ratio.max())}; converged ones <= 1.5: {int((ok & (ratio <= 1.5)).sum())} of "
           f"{k}; converged from both starts: {int(both.sum())}, converged from "
           f"either: {int((ok | conv).sum())}")
    over = (f"; converged from the straight line with the climbing image above the plateau "
            f"path's maximum (a pass higher than one the plateau path shows exists, so not "
            f"the lowest one): {int((ok & (top_s > d['plateau_max'])).sum())}"
            if "plateau_max" in d else "")
    if not both.any():
        row += over
        return row, "not compared (no band converged from both starts)", ""
    dE = (top_s - top)[both]
    low, tie, high = (int(np.sum(dE < -tol)), int(np.sum(np.abs(dE) <= tol)),
                      int(np.sum(dE > tol)))
    row += (f"; on those, climbing image energy straight - main {_q(dE)} (|difference| "
            f"{_q(np.abs(dE))}): lower from the straight line by more than {fmt(tol)} in "
            f"{low}, within {fmt(tol)} in {tie}, higher in {high}; length / chord "
            f"{_q(ratio[both])} against {_q((d['distance'][:, -1] / chord)[both])}") + over
    meets = ok.mean() >= 0.9 and np.mean(ratio <= 1.5) >= 0.95     # the two targets
    verdict = ("the start sets the path's length; neither start gives the lower saddle "
               "throughout: "
               + (f"from the straight line {k} of {n} converge, on paths within 1.5 times "
                  f"their chord for {np.mean(ratio <= 1.5):.0%} (both targets met from this "
                  f"start)" if meets else
                  f"the straight line's paths are short, but {n - k} of {n} do not converge "
                  f"in the budget")
               + f", and on the bands converged from both the main band's saddle (plateau "
               f"start, shortened) is the lower by more than {fmt(tol)} in {high} of "
               f"{int(both.sum())} (the longer path is the lower one there), the straight "
               f"band's in {low}")
    note = (f"; from the straight line (start study, below) {k} of {n} converge and the "
            f"paths run {fmt(np.median(ratio))} times their chord ("
            + ("both targets met from that start" if meets else "no start gives both")
            + f"), and where both converge the longer main band has the lower saddle in "
            f"{high} of {int(both.sum())}")
    return row, verdict, note


def _shortening(cfg: Config, d, conv, chord):
    """The shortening rounds' row: (ours, verdict), or None where not stored."""
    if "shorten_round" not in d or cfg.shorten_rounds == 0:
        return None
    kept = d["shorten_round"].astype(int)
    c0 = d["first_converged"].astype(bool)
    r0 = d["first_length"] / chord
    r1 = d["distance"][:, -1] / chord
    top0 = d["first_energies"].max(axis=1)
    top = d["energies"].max(axis=1)               # the highest images, as _shorten compares
    new = kept > 0
    dE = (top - top0)[new & c0]
    n = len(kept)
    held = len(cfg.hold_widths)
    per = rounds_kept(cfg, kept)
    row = (f"{cfg.shorten_rounds} round(s) of {cfg.shorten_sweeps} curve-shortening sweeps "
           f"(relunet.string_method.smooth) on every band"
           + (f", then {held} round(s) on the bands not yet replaced with the climbing image "
              f"and {', then '.join(map(str, cfg.hold_widths))} neighbour(s) on each side "
              "held" if held else "")
           + f"; each band relaxed again with the same method and "
           f"budget and kept where it converged with its highest image (ends included) no "
           f"higher than before "
           f"(+ {fmt(cfg.etol)}): {int(new.sum())} of {n} bands replaced ({per}); "
           f"converged {int(c0.sum())} -> {int(conv.sum())}; path length / chord "
           f"{_q(r0)} -> {_q(r1)}, <= 1.5: {np.mean(r0 <= 1.5):.0%} -> "
           f"{np.mean(r1 <= 1.5):.0%}; highest image of the replaced bands that had converged "
           f"before: change {_q(dE)}, lower by more than {fmt(cfg.etol)} in "
           f"{int(np.sum(dE < -cfg.etol))} of {dE.size}")
    verdict = ("the first relaxation's path is one of many: cutting its corners and relaxing "
               "again finds shorter paths, often over a lower pass (a better upper bound on "
               "the barrier)" if np.sum(dE < -cfg.etol) else
               "the shortened paths cross no lower pass")
    return row, verdict


def rounds_kept(cfg, kept) -> str:
    """How many bands each shortening round (:func:`shorten`) replaced, as the reports say
    it: "60 from round 1, 17 from held round 2"."""
    return ", ".join(f"{int((kept == r).sum())} from {'held ' * (r > cfg.shorten_rounds)}round {r}"
                     for r in range(1, cfg.shorten_rounds + len(cfg.hold_widths) + 1))


def _long(cfg: Config, d, ratio, conv, var_t) -> str:
    """What the bands longer than 1.5 times their chord are: bands to a network that
    predicts a constant (its MSE within etol of var(t)), bands not converged, and the rest
    (no shortening round found a converged path over a pass no higher)."""
    long = ratio > 1.5
    if not long.any():
        return ""
    flat = long & (np.abs(d["energies"][:, -1] - var_t) <= cfg.etol)
    rest = long & ~flat & conv
    kept = d["shorten_round"] if "shorten_round" in d else np.zeros(len(long), int)
    return (f"; of the {int(long.sum())} longer: {int(flat.sum())} end at a network that "
            f"predicts a constant (MSE within {fmt(cfg.etol)} of var(t)), "
            f"{int((long & ~flat & ~conv).sum())} not converged, "
            f"{int((rest & (kept == 0)).sum())} converged bands no shortening round could "
            f"replace (their shortened paths crossed a higher pass or did not converge), "
            f"{int((rest & (kept > 0)).sum())} replaced but still longer")


def _unconverged(cfg: Config, d, conv, var_t) -> str:
    """Why the unconverged bands are not: stable but not stationary, or not stable (and of
    those, how many have an image above var(t): thrown up a wall)."""
    bad = ~conv
    if not bad.any():
        return ""
    stable = bad & (d["barrier_change"] <= cfg.etol)
    high = bad & ~stable & (d["energies"].max(axis=1) > var_t)
    return (f"; not converged {int(bad.sum())}: {int(stable.sum())} stable but not stationary "
            f"(sampled min-norm above {fmt(cfg.gs_tol)}), {int((bad & ~stable).sum())} not "
            f"stable in {cfg.max_iter} iterations ({int(high.sum())} of them with an image "
            f"above var(t))")


def crossing(d, etol: float, n: int | None = None):
    """What the climbing images of the first ``n`` stored bands (default all) are, or None
    for stores without it: a dict of their energies (``climb``), the drop across each band
    (``drop``, relunet.string_method.min_across), their dead hidden units (``dead``: off at
    every training point, their weights free directions at the same loss) and masks over
    the bands: ``below``
    (converged, peaking below var(t) by more than ``etol``), ``level`` (of those, the
    climbing image within 5e-3 of the spline level and with a teeth coefficient under 0.1:
    it computes the spline and almost none of the teeth) and ``falls`` (of those below,
    lower across the band by more than 1e-6)."""
    if "top_components" not in d:
        return None
    from ..kinks import preactivations
    n = len(d["energies"]) if n is None else n
    x, _ = wf_training_set()
    dead = np.all(preactivations(d["top_images"][:n], WF_ARCH, x) <= 0, axis=3).sum(axis=(1, 2))
    climb = d["energies"][:n, 1:-1].max(axis=1)
    drop = climb - d["across_energy"][:n]
    below = d["converged"][:n].astype(bool) & (climb < float(d["var_t"]) - etol)
    level = below & (np.abs(climb - float(d["spline_level"])) <= 5e-3) \
        & (np.abs(d["top_components"][:n, 1]) < 0.1)
    return dict(climb=climb, drop=drop, below=below, level=level,
                falls=below & (drop > 1e-6), dead=dead)


def _crossing(cfg: Config, d):
    """The row 'what the bands cross': (ours, verdict), or None where not stored. The
    climbing images' function in W_f's terms (relunet.geometry.components: the teeth
    coefficient is 1 at W_f, 0 for the spline alone), their energy against the spline
    level (the lowest loss of a function that computes the spline and none of the teeth),
    and the test across the band (:func:`crossing`)."""
    c = crossing(d, cfg.etol)
    if c is None or not c["below"].any():
        return None
    m, near, moved = c["below"], c["level"], c["falls"]
    level = float(d["spline_level"])
    row = (f"{int(m.sum())} converged bands peak below var(t); their climbing images: "
           f"teeth coefficient {_q(d['top_components'][m, 1])} (W_f: 1; the local minima at "
           f"the bands' far ends: {_q(d['end_components'][:, 1])}), spline coefficient "
           f"{_q(d['top_components'][m, 0])}; energy - spline level {fmt(level)}: "
           f"{_q((c['climb'] - level)[m])}; within 5e-3 of it with a teeth coefficient "
           f"under 0.1: {int(near.sum())}; gradient norm {_q(d['top_grad'][m])}; dead "
           f"hidden units (off at every training point) {_q(c['dead'][m])}, none in "
           f"{int(np.sum(c['dead'][m] == 0))}. Across "
           f"the band (relunet.string_method.min_across: {cfg.across_iter} BFGS steps in "
           f"the hyperplane perpendicular to it): lower by more than 1e-6 from "
           f"{int(moved.sum())} of {int(m.sum())}, by {_q(c['drop'][m])} after moving "
           f"{_q(d['across_distance'][m])}")
    sc = d["study_top_components"]
    if len(sc):
        row += (f". The convergence study's reruns (both kinds): climbing images' teeth "
                f"coefficient {_q(sc[:, 1])}")
    verdict = ("to leave W_f the paths give up its teeth: they cross near networks that "
               "compute the spline alone, at the spline level (the teeth coefficient falls "
               "from 1 to about 0 at the top and the minima rebuild part of it their own "
               "way)" if near.sum() >= 0.5 * m.sum() else "the tops are not at the spline level")
    verdict += ("; the climbing images are not saddles: across the band the loss still "
                f"falls from {int(moved.sum())} of {int(m.sum())} of them, so their energies "
                "are tops of paths (upper bounds), on a wide, nearly flat set where no saddle "
                "is isolated (the weights of dead units move freely at the same loss, as on "
                "the plateau of constant networks): the convergence study's ~1e-3 and the "
                "missing "
                "transition states come from there" if moved.sum() >= 0.5 * m.sum() else
                "; most climbing images are minima across their band")
    return row, verdict


def report(cfg: Config, ctx) -> str:
    d = ctx.results(NAME, cfg).load_array(RESULT)
    E, conv = d["energies"], d["converged"].astype(bool)
    n = len(E)
    img = d["images"].astype(np.float64)
    chord = np.linalg.norm(img[:, -1] - img[:, 0], axis=1)
    ratio = d["distance"][:, -1] / chord
    peak = d["peak_energy"]
    top = E.max(axis=1)                            # the climbing image: saddle estimate
    barrier = peak - E[:, -1]                      # climb from the local minimum
    ang = d["angles"]
    third = max(ang.shape[1] // 3, 1)
    turn_near = np.nanmean(ang[:, :third], axis=1)
    turn_far = np.nanmean(ang[:, -third:], axis=1)
    r_eu, r_arc, r_E = basin_radius(img, d["dense_distance"], d["dense_energies"], cfg.etol)
    r_half = half_energy_radius(d["distance"], E)
    in_shell = float(np.mean((chord >= 9.5) & (chord <= 10.5)))
    var_t = float(d["var_t"])
    # convergence study: two reruns of the same converged bands
    s_idx = d["study_index"].astype(int)
    s_ok = d["study_converged"].astype(bool) & conv[s_idx] if s_idx.size else np.zeros(0, bool)
    # the paths with the segments that rise above their band's highest image relaxed as
    # strings of their own (refine_segments; stores before it: None)
    sp = d["segment_peak"] if "segment_peak" in d else None
    study_row, verdict = _study(s_idx, "from the start", d["study_converged"],
                                d["study_top_energy"], d["study_peak_energy"], top, peak, conv,
                                d.get("study_segment_peak"), sp)
    if "refined_top_energy" in d:
        row2, verdict2 = _study(s_idx, "from the converged band (a midpoint inserted in "
                                "every segment, the images kept, the grid frozen)",
                                d["refined_converged"], d["refined_top_energy"],
                                d["refined_peak_energy"], top, peak, conv,
                                d.get("refined_segment_peak"), sp)
        if "refined_top_index" in d:
            row2 += _kept(s_idx, d["refined_converged"], d["refined_top_index"],
                          d["refined_top_energy"], E, conv)
        study_row += ". " + row2
        verdict = f"from the start: {verdict}; from the converged band: {verdict2}"
    # bands above the constant predictor's MSE. The plateau path caps every barrier at
    # max(E_ends, var(t)) (relunet.plateau), and the bands start on it: what rises above
    # var(t) after the relaxation belongs to the band, not to the landscape
    cap = np.maximum(np.maximum(E[:, 0], E[:, -1]), var_t)
    pl = d["plateau_max"]
    capped = bool(np.all(pl <= cap * (1 + 1e-12)))
    end_high = E[:, -1] >= var_t - 1e-9           # the minimum itself predicts the mean
    high = peak > var_t
    between = high & ~end_high & (top <= var_t)   # only the segments between images rise above
    seg_txt = ""
    if sp is not None:
        nseg, nb = d["segment_bands"].size, np.unique(d["segment_bands"]).size
        seg_txt = (f"; relaxing every segment that rises above its band's highest image as a "
                   f"string of its own (relunet.string_method.refine_segments: {nseg} segments "
                   f"of {nb} bands, {cfg.refine_images} images, at most {cfg.refine_iter} "
                   f"iterations, {int(d['segment_converged'].sum())} converged) leaves "
                   f"{int((between & (sp > var_t)).sum())} of them above var(t) (their path "
                   f"maximum drops by {_q((peak - sp)[between])})")
    above = high & ~end_high & (top > var_t)
    s_between = between[s_idx] & s_ok if s_idx.size else np.zeros(0, bool)
    drop = (peak[s_idx] - d["study_peak_energy"])[s_between] if s_idx.size else np.zeros(0)
    explain = (f"The plateau path (relunet.plateau: shrink W_f's output layer onto the "
               f"constant mean(t), cross the plateau of constant networks, grow the "
               f"minimum's output layer) reaches at most max(E_ends, var(t)) on every band "
               f"(measured: {fmt(float(np.max(pl - cap)))} above it at most, rounding): no "
               f"barrier between two networks with E <= var(t) is higher than var(t), so "
               f"every excess counted next belongs to a band, not to the landscape. "
               + ("The bands start on it. " if cfg.start == "plateau" else "")
               + f"After the relaxation {int(high.sum())} of {n} bands peak above var(t) = "
               f"{fmt(var_t)}: {int((high & end_high).sum())} at a minimum that itself "
               f"predicts the mean (E_end = var(t)), {int(between.sum())} only between images "
               f"(their climbing image stays below, median {_q(top[between])}: straight "
               f"segments between relaxed images cutting across a ridge, the band's "
               f"resolution" + seg_txt
               + (f"; doubling the images lowered the path maximum of {drop.size} such "
                  f"bands by {_q(drop)}" if drop.size else "") + "), "
               f"{int(above.sum())} with the highest image above it "
               f"({int((above & conv).sum())} converged"
               + (f", within {_q(top[above & conv] - var_t)} of var(t)"
                  if (above & conv).any() else "") + "). For comparison the straight "
               f"segments W_f -> minimum peak at {_q(d['straight_max'])}")
    if capped:
        above_verdict = ("explained: every barrier is capped at var(t) by the plateau path"
                         + (f"; {int(high.sum())} relaxed bands still peak above it "
                            + (f"({int((high & (sp > var_t)).sum())} once their rising "
                               f"segments are relaxed: resolution, or not relaxed)"
                               if sp is not None else "(resolution, or not relaxed)")
                            if high.any() else ""))
    else:
        above_verdict = (f"{int((above & ~conv).sum())} unresolved" if (above & ~conv).any()
                         else "explained")
    what = "climbing image energy" if cfg.watch == "image" else "path maximum"
    crit = (f"{what} moved <= {cfg.etol:g} over {cfg.window} checks x {cfg.check_every} "
            f"iterations on the frozen grid AND sampled min-norm gradient at the climbing image "
            f"(radius {cfg.gs_radius:g}, {cfg.gs_samples} samples) <= {cfg.gs_tol:g}")
    t_main, t_study = d["seconds"][:2]
    t_seg = d["seconds"][2] if d["seconds"].size > 2 else 0.0
    p_ratio = d["plateau_length"] / chord
    other = _start_study(cfg, d, conv, chord, top)
    short = _shortening(cfg, d, conv, chord)
    cross = _crossing(cfg, d)
    return "\n".join([
        f"## {TITLE}", "", "![fig4](fig4_neb.png)", "",
        f"{n} bands of {cfg.n_images} images ({cfg.dtype} energies and forces), string "
        f"method with climbing image ({cfg.climb}), started on the "
        + ("plateau path (two images on its corners)" if cfg.start == "plateau"
           else "straight line")
        + f", at most {cfg.max_iter} iterations; convergence: {crit}. Wall time {t_main:.0f} s, "
        f"segment refinement {t_seg:.0f} s, convergence study {t_study:.0f} s"
        + (f", start study {d['seconds'][3]:.0f} s" if other else "")
        + (f", shortening rounds {d['seconds'][4]:.0f} s" if d["seconds"].size > 4 else "")
        + (f", test across the bands {d['seconds'][5]:.0f} s" if d["seconds"].size > 5 else "")
        + ". Values: median "
        "[10%, 90%] over bands.", "",
        *claims(
            ("bands converged",
             f"{conv.mean():.0%} ({int(conv.sum())} of {n}); iterations "
             f"{_q(d['iterations'])}; "
             f"barrier change over the window {_q(d['barrier_change'])}; sampled min-norm at "
             f"the climbing image {_q(d['peak_measure'])}" + _by_endpoint(cfg, ctx, conv, chord)
             + _unconverged(cfg, d, conv, var_t),
             "not stated",
             "target (90%) met" if conv.mean() >= 0.9 else "below the 90% target"),
            ("path length / chord",
             f"{_q(ratio)}, max {fmt(ratio.max())}; <= 1.5: {np.mean(ratio <= 1.5):.0%} "
             f"(the plateau path itself: {_q(p_ratio)})" + _long(cfg, d, ratio, conv, var_t),
             "not stated",
             "target (95% <= 1.5) met" if np.mean(ratio <= 1.5) >= 0.95 else
             ("target missed: the bands start on the plateau path, whose legs through the "
              "constant networks add the two output layers to the chord, and relax to paths "
              "of about its length"
              + (" until the shortening rounds (next row) cut their corners where that finds "
                 "no higher pass" if short else "") + (other[2] if other else "")
              if cfg.start == "plateau" else "target missed")),
            *([("shortening rounds", short[0], "not done", short[1])] if short else []),
            *([("start study: the same bands from the straight line", other[0], "not done",
                other[1])] if other else
              [("start study: the same bands from the straight line",
                "not run at this scale (start_study off; run_all.py --scale large runs it, "
                "the module docstring gives the last default-scale result)", "not done",
                "-")] if not cfg.start_study else []),
            ("convergence study: images and iterations doubled", study_row, "not done",
             f"target < 1e-4: {verdict}"),
            *([("what the bands cross: the climbing images", cross[0], "not stated",
                cross[1])] if cross else []),
            ("bands above the constant predictor's MSE", explain, "not stated", above_verdict),
            ("barrier from the local minimum",
             f"climbing image - E_end: all {_q(top - E[:, -1])}, converged "
             f"{_q((top - E[:, -1])[conv])}; path maximum - E_end: all {_q(barrier)}, "
             f"converged {_q(barrier[conv])}"
             + (f"; path maximum with the rising segments relaxed - E_end: all "
                f"{_q(sp - E[:, -1])}, converged {_q((sp - E[:, -1])[conv])}"
                if sp is not None else "")
             + (f"; upper bound min(path maximum, plateau path maximum) - E_end: all "
                f"{_q(np.minimum(peak if sp is None else sp, pl) - E[:, -1])}"
                if pl is not None else ""),
             "'flat and slightly bumpy'",
             "reproduced: bumps are small against the drop"
             if np.median(top - E[:, -1]) < 0.5 * np.median(E[:, -1]) else
             "differs: sizeable barriers"),
            ("distance W_f -> local minimum (canonical)",
             f"{_q(chord)}; in [9.5, 10.5]: {in_shell:.0%}", "most in the shell 9.5-10.5",
             "reproduced" if in_shell >= 0.5 else "differs (our minima sit elsewhere)"),
            ("basin radius: distance from W_f of the first ridge (local max) on converged paths",
             f"{_q(r_eu[conv])} (energy there {_q(r_E[conv])}; along the path "
             f"{_q(r_arc[conv])}); paper's half-energy reading: {_q(r_half)}", "about 2",
             ("reproduced in the median (within 1-3), with a wide spread: the first ridge "
              "depends on which path the band found (the shortening rounds move it)")
             if conv.any() and 1.0 <= np.median(r_eu[conv]) <= 3.0 else
             "differs (median outside 1-3)"),
            ("energy at the local minima (MSE)", _q(E[:, -1]), "not stated", "unknown"),
            ("the path twists near W_f, then runs straight (Fig. 4d)",
             f"mean angle between successive steps, first third {_q(turn_near)} rad, last "
             f"third {_q(turn_far)} rad", "qualitative",
             "reproduced: the path turns most near W_f"
             if np.nanmedian(turn_near) > 1.5 * np.nanmedian(turn_far) else
             "differs: the path does not turn clearly more near W_f (the medians of the "
             "two thirds within a factor 1.5)"),
            header=("quantity", "ours", "paper", "verdict"))])


def numbers(cfg: Config, ctx) -> list:
    """Band convergence, barriers and the basin radius (the float32 report's comparison)."""
    d = ctx.results(NAME, cfg).load_array(RESULT)
    E, conv = d["energies"], d["converged"].astype(bool)
    img = d["images"].astype(np.float64)
    top = E.max(axis=1)
    r_eu = basin_radius(img, d["dense_distance"], d["dense_energies"], cfg.etol)[0]
    med = lambda v: float(np.median(v)) if np.size(v) else float("nan")  # noqa: E731
    extra = ([("median teeth coefficient of the climbing images (converged)",
               med(d["top_components"][conv, 1]))] if "top_components" in d else [])
    return [("bands converged", int(conv.sum())), *extra,
            ("median iterations", med(d["iterations"])),
            ("median climbing image - E_end", med(top - E[:, -1])),
            ("median path maximum - E_end", med(d["peak_energy"] - E[:, -1])),
            ("median path maximum", med(d["peak_energy"])),
            ("median basin radius (first ridge, converged bands)", med(r_eu[conv])),
            ("median distance W_f -> minimum",
             med(np.linalg.norm(img[:, -1] - img[:, 0], axis=1)))]
