"""Benchmark: batched band methods between canonical W_f and many 5x5 minima (G&W Fig. 4).

Runs ``relunet.neb.neb`` (NEB: improved tangent, FIRE, optional climbing image)
and ``relunet.string_method.string_method`` (string method with the nonsmooth
convergence criterion, climbing image) on Bn bands of B images (default
100 x 32, D = 136), with every movable image of every unfinished band in ONE
``kernels.loss_and_grad`` call per iteration, and prints for each the wall
time, the share of time spent in the kernel, iterations and the share of bands
converged (NEB: max force <= ``--fmax``; string: barrier stable to ``--etol``
over the window and sampled min-norm gradient <= ``--gs-tol`` at the climbing
image). ``--method`` picks one of them.

Endpoints: ``--endpoints FILE.npz`` with arrays 'start' (P,) or (Bn, P) and
'end' (Bn, P); otherwise stand-in minima are made here by full-batch gradient
descent with heavy-ball momentum (v <- mu v - lr g, w <- w + v; project
defaults lr 1e-3, mu 0.9) from ``init_stack`` seeds on the 341-point W_f
training set. Both ends are de-symmetrised with ``symmetry.canonicalize``
(the paper's procedure, Sec. 3.3) when that module is available.

Kernels (``--kernel``, default both, in the same run): 'fast', the generated
vector kernel of the training fast path without its update (what the package
uses), and 'plain', the numba loops of ``kernels.py`` (what the instruments
used before); the ratio of their wall times is printed, and the kernel's
GFLOP/s (network evaluations/s x 341 points x the flops per point of
``bench_train.flops_per_point``) against numpy's float64 matmul peak measured
in the same run. Both give the same bands to rounding.

    python benchmarks/bench_neb.py                      # default, several minutes
    python benchmarks/bench_neb.py --bands 10 --max-iter 200     # quick look
    python benchmarks/bench_neb.py --method string --bands 20
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from bench_train import flops_per_point, matmul_peak  # noqa: E402  (this folder)

from relunet import init_stack, kernels
from relunet.construct import WF_ARCH, build_wf
from relunet.data import wf_training_set
from relunet.neb import neb
from relunet.optim import Momentum
from relunet.string_method import string_method
from relunet.train import train_stack_ref


def stand_in_minima(n, x, t, steps, lr=1e-3, mu=0.9, seed0=0):
    """(n, P) networks after ``steps`` momentum GD steps from seeds seed0..seed0+n-1:
    the package's NumPy training reference, with the numba loss_and_grad for speed."""
    W = init_stack(WF_ARCH, np.arange(seed0, seed0 + n))
    return train_stack_ref(W, WF_ARCH, x, t, Momentum(lr=lr, momentum=mu), steps,
                           record_every=steps, loss_and_grad=kernels.loss_and_grad).W


def canonical(W):
    try:
        from relunet.symmetry import canonicalize
    except ImportError:
        print("relunet.symmetry not available: endpoints NOT de-symmetrised")
        return W
    return canonicalize(W, WF_ARCH)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoints", help=".npz with 'start' (P,)|(Bn,P) and 'end' (Bn,P)")
    p.add_argument("--bands", type=int, default=100)
    p.add_argument("--images", type=int, default=32, help="per band, endpoints included")
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--fmax", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=2000)
    p.add_argument("--kernel", choices=("both", "fast", "plain"), default="both")
    p.add_argument("--threads", type=int, default=2, help="for the matmul peak")
    p.add_argument("--k-spring", type=float, default=1.0)
    p.add_argument("--dt", type=float, default=0.1)
    p.add_argument("--dt-max", type=float, default=None)
    p.add_argument("--max-step", type=float, default=0.2)
    p.add_argument("--climb", action="store_true", help="NEB: climbing image")
    p.add_argument("--method", choices=("both", "neb", "string"), default="both")
    p.add_argument("--etol", type=float, default=1e-4, help="string: barrier change allowed")
    p.add_argument("--gs-tol", type=float, default=1e-2, help="string: sampled min-norm allowed")
    p.add_argument("--out", help="save the bands to this .npz")
    a = p.parse_args(argv)

    x, t = wf_training_set()
    t0 = time.perf_counter()
    if a.endpoints:
        f = np.load(a.endpoints)
        start, end = f["start"], f["end"][:a.bands]
        if start.ndim == 2:
            start = start[:a.bands]
        print(f"endpoints from {a.endpoints}: start {start.shape}, end {end.shape}")
    else:
        ends = stand_in_minima(a.bands, x, t, a.train_steps)
        start, end = canonical(build_wf()[None])[0], canonical(ends)
        print(f"stand-in minima: {a.bands} x {a.train_steps} momentum steps, "
              f"{time.perf_counter() - t0:.1f} s")
    L_end = kernels.loss(end, WF_ARCH, x, t)
    g_end = np.linalg.norm(kernels.loss_and_grad(end, WF_ARCH, x, t)[1], axis=1)
    print(f"end losses: median {np.median(L_end):.4g}, end |grad| median {np.median(g_end):.3g};"
          f" |end - start| median {np.median(np.linalg.norm(end - start, axis=-1)):.3g}")

    peak, _, blas = matmul_peak("float64", a.threads, 3)
    fpp = flops_per_point(WF_ARCH)
    print(f"numpy float64 matmul peak on {a.threads} threads: {peak:.0f} GFLOP/s (OpenBLAS "
          f"kernels: {blas}); a network evaluation (loss + gradient) at 341 points is "
          f"{fpp * x.size / 1e3:.0f} kflop")
    walls = {}
    for kern in (("fast", "plain") if a.kernel == "both" else (a.kernel,)):
        print(f"--- kernel '{kern}'")
        walls[kern] = run_methods(a, kern, start, end, x, t, fpp, peak)
    if len(walls) == 2:
        for name in walls["fast"]:
            print(f"{name}: fast kernel {walls['plain'][name] / walls['fast'][name]:.1f}x faster "
                  f"than the plain one in wall time ({walls['fast'][name]:.1f} s against "
                  f"{walls['plain'][name]:.1f} s)")


def run_methods(a, kern, start, end, x, t, fpp, peak):
    t_kernel, rows = [0.0], [0]

    def efun(X):
        tk = time.perf_counter()
        out = kernels.loss_and_grad(X, WF_ARCH, x, t, kernel=kern)
        t_kernel[0] += time.perf_counter() - tk
        rows[0] += len(X)
        return out

    def timing(name, wall, it):
        rate = rows[0] / t_kernel[0]
        gflops = rate * x.size * fpp / 1e9
        print(f"{name}: {len(it)} bands x {a.images} images, D = {WF_ARCH.P}: wall {wall:.1f} s, "
              f"kernel {t_kernel[0]:.1f} s ({100 * t_kernel[0] / wall:.0f}%), "
              f"{rate:.0f} network evaluations/s = {gflops:.1f} GFLOP/s in the kernel "
              f"({100 * gflops / peak:.0f}% of the matmul peak; whole run "
              f"{100 * gflops * t_kernel[0] / wall / peak:.0f}%)")
        print(f"  iterations: min {it.min()}, median {int(np.median(it))}, max {it.max()}; "
              f"{wall / max(it.max(), 1) * 1e3:.0f} ms per iteration at most")
        walls[name] = wall

    walls = {}
    chord = np.linalg.norm(np.atleast_2d(end) - np.atleast_2d(start), axis=-1)
    out = {}
    if a.method in ("both", "neb"):
        t0 = time.perf_counter()
        r = neb(efun, start, end, n_images=a.images, k_spring=a.k_spring, climb=a.climb,
                fmax=a.fmax, max_iter=a.max_iter, dt=a.dt, dt_max=a.dt_max, max_step=a.max_step)
        timing("NEB", time.perf_counter() - t0, r.iterations)
        q = np.quantile(r.fmax_final, [0.0, 0.5, 1.0])
        print(f"  converged at fmax {a.fmax:g}: {r.converged.mean():.0%} of bands; "
              f"final max force min/median/max {q[0]:.3g} / {q[1]:.3g} / {q[2]:.3g}")
        print(f"  highest image above W_f: median {np.median(r.barrier()):.4g}; "
              f"path/chord median {np.median(r.distance[:, -1] / chord):.3g}, "
              f"max {np.max(r.distance[:, -1] / chord):.3g}")
        out.update(neb_images=r.images, neb_energies=r.energies, neb_converged=r.converged,
                   neb_iterations=r.iterations, neb_fmax_final=r.fmax_final)
    if a.method in ("both", "string"):
        t_kernel[0], rows[0] = 0.0, 0
        t0 = time.perf_counter()
        # the settings of the fig4_neb experiment: climbing image watched, grid frozen at 200
        r = string_method(efun, start, end, n_images=a.images, max_iter=a.max_iter, climb=True,
                          watch="image", regrid_until=200, etol=a.etol, gs_tol=a.gs_tol)
        timing("string", time.perf_counter() - t0, r.iterations)
        conv = r.converged
        bc = r.barrier_change[np.isfinite(r.barrier_change)]
        print(f"  converged (climbing image energy stable to {a.etol:g} over 200 iterations and "
              f"sampled min-norm <= {a.gs_tol:g}): "
              f"{conv.mean():.0%} of bands; iterations of converged bands median "
              f"{int(np.median(r.iterations[conv])) if conv.any() else 0}")
        pm = (np.nanmedian(r.peak_measure) if np.isfinite(r.peak_measure).any()
              else np.nan)
        print(f"  barrier change over the window median "
              f"{np.median(bc) if bc.size else np.inf:.3g}; "
              f"sampled min-norm median {pm:.3g}")
        print(f"  path maximum above W_f: median {np.median(r.barrier()):.4g}; climbing image "
              f"median {np.median(r.energies.max(1) - r.energies[:, 0]):.4g}; "
              f"path/chord median {np.median(r.distance[:, -1] / chord):.3g}, "
              f"max {np.max(r.distance[:, -1] / chord):.3g}")
        out.update(string_images=r.images, string_energies=r.energies,
                   string_converged=r.converged, string_iterations=r.iterations,
                   string_peak_energy=r.peak_energy, string_barrier_change=r.barrier_change,
                   string_peak_measure=r.peak_measure)
    if a.out:
        np.savez(a.out.replace(".npz", f"_{kern}.npz"), **out)
    return walls


if __name__ == "__main__":
    main()
