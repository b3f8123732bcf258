"""Benchmark: exact Hessians and eigenvalues of 1,000 5x5 networks (P = 136).

Acceptance target: Hessians + eigenvalues of 1,000 networks on W_f's 341-point
training set in under a minute on 2 cores. Prints the time of the Hessian
kernel (R-operator HVPs along all 136 unit vectors; the generated vector
kernel, then the plain numba loops, in the same run), of scipy.linalg.eigh on
the 1,000 matrices, their total, and the NumPy twin's speed on a subset.
Timings on a shared machine are noisy: each is the best of ``--repeats``.

    python benchmarks/bench_hessian.py [--M 1000] [--repeats 3] [--subset 10]
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from relunet import hessian as hs
from relunet.construct import WF_ARCH
from relunet.data import wf_training_set
from relunet.net import init_stack


def best_of(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--M", type=int, default=1000, help="networks")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--subset", type=int, default=10, help="networks for the NumPy twin")
    args = ap.parse_args(argv)

    arch = WF_ARCH
    x, t = wf_training_set()
    W = init_stack(arch, np.arange(args.M))            # (M, 136) Glorot students
    P, S = arch.P, x.size
    try:
        import threadpoolctl  # noqa: F401
        blas = "threadpoolctl: BLAS limited to 1 thread inside eigen()"
    except ImportError:
        blas = "threadpoolctl missing: eigh runs with OpenBLAS's default threads"
    print(f"{args.M} networks {arch} (P = {P}), S = {S} points, "
          f"{numba.get_num_threads()} numba threads; {blas}")

    hs.hessian(W[:2], arch, x, t)                       # compile / load from cache
    hs.eigen(np.eye(P))
    t_h, (H, asym) = best_of(lambda: hs.hessian(W, arch, x, t, return_asymmetry=True),
                             args.repeats)
    t_e, ev = best_of(lambda: hs.eigen(H), args.repeats)
    n_hvp = args.M * P
    print(f"Hessians : {t_h:7.2f} s  ({1e6 * t_h / n_hvp:.1f} us per HVP, "
          f"{1e3 * t_h / args.M:.2f} ms per network; the vector kernel, kernel='auto'); "
          f"max asymmetry {asym.max():.1e}")
    hs.hessian(W[:2], arch, x, t, kernel="plain")
    t_p, Hp = best_of(lambda: hs.hessian(W, arch, x, t, kernel="plain"), args.repeats)
    print(f"  plain  : {t_p:7.2f} s  ({1e6 * t_p / n_hvp:.1f} us per HVP; the numba loops of "
          f"hvp_kernels.rop_kernel): the vector kernel is {t_p / t_h:.1f}x faster in this run; "
          f"max rel. difference {np.abs(Hp - H).max() / np.abs(Hp).max():.1e}")
    print(f"eigh     : {t_e:7.2f} s  ({1e3 * t_e / args.M:.2f} ms per {P}x{P} matrix)")
    print(f"total    : {t_h + t_e:7.2f} s  (target < 60 s)")

    sub = W[:args.subset]
    t_r, Hr = best_of(lambda: hs.hessian_ref(sub, arch, x, t), max(1, args.repeats - 1))
    err = np.abs(Hr - hs.hessian(sub, arch, x, t, symmetrize=False)).max() / np.abs(Hr).max()
    per_k, per_r = t_h / args.M, t_r / args.subset
    print(f"NumPy twin on {args.subset}: {t_r:.2f} s = {1e3 * per_r:.1f} ms per network "
          f"(kernel {1e3 * per_k:.2f} ms: {per_r / per_k:.1f}x faster); "
          f"max rel. difference {err:.1e}")
    s = hs.spectrum_summary(ev)
    print(f"spectra  : median n_neg {np.median(s['n_neg']):.0f}, n_zero "
          f"{np.median(s['n_zero']):.0f}, n_pos {np.median(s['n_pos']):.0f}; "
          f"max eigenvalue median {np.median(s['max']):.3g}")


if __name__ == "__main__":
    main()
