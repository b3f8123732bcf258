"""Training throughput of relunet's fused kernel against NumPy and the matmul peak.

Workload: full-batch steps (forward + backward + update) of K x N ReLU
networks on the 341-point W_f training set (G&W Sec. 3.1), 5 x 5 by default.
A "model-step" is one such step of one network.

Flop count per training point and step (multiply-add = 2 flops; ReLU,
masks and the optimizer update not counted):

    forward  2 (N n_in + (K-1) N^2 + n_out N)          weights
    grads    2 (N n_in + (K-1) N^2 + n_out N) + K N + n_out    weights + biases
    deltas   2 ((K-1) N^2 + n_out N)                   back to layer 1
    loss     3 n_out                                    r = y - t, sum r^2

which is 679 flops per point for 5 x 5 (about 232 kflop per model-step on 341
points). GFLOP/s = model-steps/s x S x flops-per-point.

Before timing, the fast path is validated against the package's NumPy training
reference (``train.train_stack_ref``: ``kernels.loss_and_grad_ref`` + the
``optim.py`` rules): 8 networks x 30 steps of each optimizer, float64 within
rtol 1e-10 (weights) and 1e-11 (loss history), float32 within rtol 1e-4 and 1e-5 of the
float64 reference; the script stops with an error if they differ by more. The
NumPy row of the table times that same reference (momentum).

The peak is numpy's 4096 x 4096 matmul (best of a few) in a subprocess, run
with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from its environment (they
may be set on this machine and slow OpenBLAS down) and OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS set to the thread count; the script prints what it removed.

Run:  python benchmarks/bench_train.py [--models 128] [--steps 100] [--rounds 15] [--quick]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from relunet.data import wf_training_set
from relunet.fast.simd import vadd, vfma, vhsum, vload
from relunet.net import Arch, init_stack
from relunet.optim import Adadelta, Momentum
from relunet.train import train_stack, train_stack_ref

PEAK_SNIPPET = """
import sys, time
import numpy as np
n, dt, reps = 4096, np.dtype(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).random((n, n)).astype(dt)
b = a.copy()
a @ b
best = float("inf")
for _ in range(reps):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
print(2 * n ** 3 / best / 1e9)
"""


def flops_per_point(arch: Arch) -> int:
    K, N, i, o = arch.K, arch.N, arch.n_in, arch.n_out
    fwd = 2 * (N * i + (K - 1) * N * N + o * N)
    grads = fwd + K * N + o
    deltas = 2 * ((K - 1) * N * N + o * N)
    return fwd + grads + deltas + 3 * o


def matmul_peak(dtype: str, threads: int, reps: int) -> tuple[float, list[str]]:
    env = dict(os.environ)
    removed = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if env.pop(k, None) is not None]
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, dtype, str(reps)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip()), removed


def best_rates(jobs: dict, rounds: int) -> dict:
    """Best rate of each job over ``rounds`` rounds; every round runs every job
    once, interleaved, so that all of them get the quiet moments of a shared
    machine. ``jobs``: name -> (fn, work per call)."""
    best = {name: 0.0 for name in jobs}
    for _ in range(rounds):
        for name, (fn, work) in jobs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = max(best[name], work / (time.perf_counter() - t0))
    return best


def numpy_step_fn(W0, arch, x, t, steps: int):
    """The same full-batch momentum steps by the NumPy reference, batched over
    the stack with matmul (``train.train_stack_ref``)."""
    def run():
        train_stack_ref(W0, arch, x, t, Momentum(), steps, record_every=steps)
    return run


# tolerances of the validation (module docstring): the fast path sums in
# another order than NumPy, so they agree to rounding, amplified by the steps
VALIDATE = {"float64": dict(rtol=1e-10, atol=1e-12, hist_rtol=1e-11),
            "float32": dict(rtol=1e-4, atol=1e-5, hist_rtol=1e-5)}


def validate(arch, x, t, models: int = 8, steps: int = 30) -> None:
    """Stop with an error unless train_stack equals the NumPy reference."""
    W0 = init_stack(arch, np.arange(models))
    for opt in (Momentum(), Adadelta()):
        ref = train_stack_ref(W0, arch, x, t, opt, steps)
        for dt, tol in VALIDATE.items():
            got = train_stack(W0, arch, x, t, opt, steps, record_every=1, dtype=dt)
            err_w = float(np.max(np.abs(got.W - ref.W) / (tol["atol"] + np.abs(ref.W))))
            err_h = float(np.max(np.abs(got.history - ref.history) / np.abs(ref.history)))
            ok = (np.allclose(got.W, ref.W, rtol=tol["rtol"], atol=tol["atol"])
                  and np.allclose(got.history, ref.history, rtol=tol["hist_rtol"], atol=0)
                  and not got.status.any())
            print(f"    {opt.name:8s} {dt}: max relative difference weights {err_w:.1e}, "
                  f"loss history {err_h:.1e}  {'ok' if ok else 'FAILED'}")
            if not ok:
                raise SystemExit(f"bench_train: the fast path ({opt.name}, {dt}) differs from "
                                 f"the NumPy reference beyond rtol {tol['rtol']:g} (weights) / "
                                 f"{tol['hist_rtol']:g} (loss): fix the kernel before timing it")


@njit(nogil=True)
def _fma_loop(a, reps):
    """10 independent FMA chains in registers: the core's FMA issue rate."""
    x = vload(a, 0)
    y = vload(a, 4)
    c0, c1, c2, c3, c4 = vload(a, 8), vload(a, 12), vload(a, 16), vload(a, 20), vload(a, 24)
    c5, c6, c7, c8, c9 = vload(a, 28), vload(a, 32), vload(a, 36), vload(a, 40), vload(a, 44)
    for _ in range(reps):
        c0, c1, c2, c3, c4 = (vfma(x, y, c0), vfma(x, y, c1), vfma(x, y, c2),
                              vfma(x, y, c3), vfma(x, y, c4))
        c5, c6, c7, c8, c9 = (vfma(x, y, c5), vfma(x, y, c6), vfma(x, y, c7),
                              vfma(x, y, c8), vfma(x, y, c9))
    s = vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(c4, c5), vadd(vadd(c6, c7), vadd(c8, c9))))
    return vhsum(s)


def fma_peak(threads: int, reps: int = 5) -> float:
    """GFLOP/s of the register-only FMA loop (float64) on ``threads`` threads."""
    a = np.full(48, 1e-3)
    n = 20_000_000
    _fma_loop(a, 10)
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: _fma_loop(a, n), range(threads)))
        best = min(best, time.perf_counter() - t0)
    return threads * n * 10 * 8 / best / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=128, help="networks per stack")
    ap.add_argument("--steps", type=int, default=100, help="steps per timing")
    ap.add_argument("--rounds", type=int, default=15,
                    help="interleaved rounds; each rate is the best over the rounds")
    ap.add_argument("--quick", action="store_true", help="fewer models, steps and rounds")
    args = ap.parse_args(argv)
    M, steps, reps = args.models, args.steps, args.rounds
    if args.quick:
        M, steps, reps = min(M, 32), min(steps, 50), min(reps, 3)

    arch = Arch(5, 5)
    x, t = wf_training_set()
    S = x.shape[0]
    fpp = flops_per_point(arch)
    W0 = init_stack(arch, np.arange(M))
    max_threads = numba.config.NUMBA_NUM_THREADS
    print(f"relunet training benchmark: {arch} networks, S = {S} points, {M} models x "
          f"{steps} steps per timing, best of {reps} interleaved rounds; "
          f"{os.cpu_count()} CPUs")
    print(f"flops per point and step = {fpp} (formula in the docstring) -> "
          f"{fpp * S / 1e3:.0f} kflop per model-step")

    print("validation against the NumPy reference (train_stack_ref), 8 models x 30 steps:")
    validate(arch, x, t)

    peaks, removed = {}, []
    for dt in ("float64", "float32"):
        for th in sorted({1, min(2, max_threads)}):
            peaks[dt, th], removed = matmul_peak(dt, th, 3 if args.quick else 5)
    print(f"matmul peak (numpy 4096^2 in a subprocess; removed from its env: "
          f"{removed or 'nothing (neither OPENBLAS_CORETYPE nor OPENBLAS_L2_SIZE was set)'}):")
    for (dt, th), p in peaks.items():
        print(f"    {dt} {th} thread(s): {p:6.1f} GFLOP/s")

    fma = {th: fma_peak(th) for th in sorted({1, min(2, max_threads)})}
    print("float64 FMA issue rate (10 register-only vfmadd231pd chains per thread): " +
          ", ".join(f"{th} thread(s) {p:.1f} GFLOP/s" for th, p in fma.items()))

    jobs = {}
    for dt in (np.float64, np.float32):
        for opt in (Momentum(), Adadelta()):
            train_stack(W0[:2], arch, x, t, opt, 2, dtype=dt)          # compile / load
            for th in sorted({1, min(2, max_threads)}):
                def fn(dt=dt, opt=opt, th=th):
                    train_stack(W0, arch, x, t, opt, steps, dtype=dt, record_every=100,
                                threads=th)
                jobs[f"relunet fused {np.dtype(dt).name} {opt.name}", th] = (fn, M * steps)
    Mn, steps_np = min(M, 256), max(2, steps // 10)
    jobs["numpy batched matmul float64 momentum", "numpy"] = (
        numpy_step_fn(W0[:Mn], arch, x, t, steps_np), Mn * steps_np)
    rates = best_rates(jobs, reps)

    print(f"\n{'implementation':40s} {'threads':>7s} {'model-steps/s':>14s} {'GFLOP/s':>8s} "
          f"{'of matmul':>10s} {'of FMA':>7s}")
    for (name, th), rate in rates.items():
        gf = rate * S * fpp / 1e9
        dt = "float32" if "float32" in name else "float64"
        nth = min(2, max_threads) if th == "numpy" else th
        fma_col = f"{gf / fma[nth]:7.1%}" if dt == "float64" else f"{gf / (2 * fma[nth]):7.1%}"
        print(f"{name:40s} {th!s:>7s} {rate:14,.0f} {gf:8.1f} {gf / peaks[dt, nth]:10.1%} "
              f"{fma_col}")
    print("(of matmul: against numpy's matmul peak of the same dtype and thread count; "
          "of FMA: against the FMA issue rate, x2 for float32)")


if __name__ == "__main__":
    main()
