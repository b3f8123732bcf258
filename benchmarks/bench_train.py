"""Training throughput of relunet's fused kernel against NumPy, the matmul peak and peers.

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

Vector width: the fused kernel is timed at every width this CPU supports
(256 bits = 4 float64 / 8 float32 lanes; 512 bits = 8 / 16 lanes where it has
AVX-512), or at the one ``--bits`` names; the width relunet uses by default
(``relunet.fast.vector_bits()``) is marked. The FMA probe (10 independent
register-only FMA chains per thread) runs at each timed width: it is the issue
rate of that width, and the "of FMA" column compares each row with the probe of
its own width.

Before timing, the fast path is validated against the package's NumPy training
reference (``train.train_stack_ref``: ``kernels.loss_and_grad_ref`` + the
``optim.py`` rules), at each timed width: 8 networks x 30 steps of each optimizer, float64 within
rtol 1e-10 (weights) and 1e-11 (loss history), float32 within rtol 1e-4 and 1e-5 of the
float64 reference; the script stops with an error if they differ by more. The
NumPy row of the table times that same reference (momentum).

The peak is numpy's 4096 x 4096 matmul (best of a few) in a subprocess, run
with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from its environment (they
may be set on this machine and slow OpenBLAS down) and OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS set to the thread count; the script prints what it removed and
which kernels OpenBLAS picked (threadpoolctl's "architecture", when installed).
The machine's load average is printed before and after: on a shared machine
compare the ratios of one run, never the rates of two.

``--peers`` also times the same workload in JAX and PyTorch when they are
installed (``pip install -e ".[bench]"``; each is skipped with a message
otherwise) and prints relunet's ratio to each; ``benchmarks/peers.py`` says how
each peer is written and run (JAX: vmap + jit + fori_loop; PyTorch: batched
baddbmm + autograd, torch.compile when it compiles), and validates it against
``train_stack_ref`` first, and each line says how the peer ran (jax.jit,
torch.compile, or eager and why). Both were run on the machine of the README's
table (JAX 0.10.2; PyTorch 2.13.0 from a CPU wheel: ``pip install torch==2.13.0``
before the extra, so that pip does not fetch a CUDA build).

Run:  python benchmarks/bench_train.py [--models 128] [--steps 100] [--rounds 15] [--quick]
          [--bits 256|512] [--peers]
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

from relunet import fast
from relunet.data import wf_training_set
from relunet.fast.simd import vadd, vfma, vhsum, vload, vload512
from relunet.net import Arch, init_stack
from relunet.optim import Adadelta, Momentum
from relunet.train import train_stack, train_stack_ref

PEAK_SNIPPET = """
import sys, time
import numpy as np
try:
    from threadpoolctl import threadpool_info
    arch = ",".join(sorted({str(i.get("architecture")) for i in threadpool_info()
                            if i.get("internal_api") == "openblas"})) or "?"
except ImportError:
    arch = "?"
n, dt, reps = 4096, np.dtype(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).random((n, n)).astype(dt)
b = a.copy()
a @ b
best = float("inf")
for _ in range(reps):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
print(2 * n ** 3 / best / 1e9, arch)
"""


def flops_per_point(arch: Arch) -> int:
    K, N, i, o = arch.K, arch.N, arch.n_in, arch.n_out
    fwd = 2 * (N * i + (K - 1) * N * N + o * N)
    grads = fwd + K * N + o
    deltas = 2 * ((K - 1) * N * N + o * N)
    return fwd + grads + deltas + 3 * o


def matmul_peak(dtype: str, threads: int, reps: int) -> tuple[float, list[str], str]:
    """GFLOP/s of numpy's 4096^2 matmul, what was removed from its environment,
    and the kernels OpenBLAS picked (threadpoolctl's architecture, or '?')."""
    env = dict(os.environ)
    removed = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if env.pop(k, None) is not None]
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, dtype, str(reps)], env=env,
                         capture_output=True, text=True, check=True)
    rate, arch = out.stdout.split()
    return float(rate), removed, arch


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


def validate(arch, x, t, bits: int, models: int = 8, steps: int = 30) -> None:
    """Stop with an error unless train_stack at this width equals the NumPy reference."""
    W0 = init_stack(arch, np.arange(models))
    for opt in (Momentum(), Adadelta()):
        ref = train_stack_ref(W0, arch, x, t, opt, steps)
        for dt, tol in VALIDATE.items():
            got = train_stack(W0, arch, x, t, opt, steps, record_every=1, dtype=dt,
                              vector_bits=bits)
            err_w = float(np.max(np.abs(got.W - ref.W) / (tol["atol"] + np.abs(ref.W))))
            err_h = float(np.max(np.abs(got.history - ref.history) / np.abs(ref.history)))
            ok = (np.allclose(got.W, ref.W, rtol=tol["rtol"], atol=tol["atol"])
                  and np.allclose(got.history, ref.history, rtol=tol["hist_rtol"], atol=0)
                  and not got.status.any())
            print(f"    {bits} bits {opt.name:8s} {dt}: max relative difference weights "
                  f"{err_w:.1e}, loss history {err_h:.1e}  {'ok' if ok else 'FAILED'}")
            if not ok:
                raise SystemExit(f"bench_train: the fast path ({opt.name}, {dt}, {bits} bits) "
                                 f"differs from the NumPy reference beyond rtol "
                                 f"{tol['rtol']:g} (weights) / {tol['hist_rtol']:g} (loss): "
                                 "fix the kernel before timing it")


def _make_fma_loop(load, L):
    @njit(nogil=True)
    def fma_loop(a, reps):
        """10 independent FMA chains in registers: the core's FMA issue rate."""
        x = load(a, 0)
        y = load(a, L)
        c0, c1, c2, c3, c4 = (load(a, 2 * L), load(a, 3 * L), load(a, 4 * L), load(a, 5 * L),
                              load(a, 6 * L))
        c5, c6, c7, c8, c9 = (load(a, 7 * L), load(a, 8 * L), load(a, 9 * L), load(a, 10 * L),
                              load(a, 11 * L))
        for _ in range(reps):
            c0, c1, c2, c3, c4 = (vfma(x, y, c0), vfma(x, y, c1), vfma(x, y, c2),
                                  vfma(x, y, c3), vfma(x, y, c4))
            c5, c6, c7, c8, c9 = (vfma(x, y, c5), vfma(x, y, c6), vfma(x, y, c7),
                                  vfma(x, y, c8), vfma(x, y, c9))
        s = vadd(vadd(vadd(c0, c1), vadd(c2, c3)),
                 vadd(vadd(c4, c5), vadd(vadd(c6, c7), vadd(c8, c9))))
        return vhsum(s)
    return fma_loop


FMA_LOOPS = {256: (_make_fma_loop(vload, 4), 4), 512: (_make_fma_loop(vload512, 8), 8)}


def fma_peak(threads: int, bits: int, reps: int = 5) -> float:
    """GFLOP/s of the register-only FMA loop (float64 vectors of ``bits`` bits)
    on ``threads`` threads."""
    loop, L = FMA_LOOPS[bits]
    a = np.full(12 * L, 1e-3)
    n = 20_000_000
    loop(a, 10)
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: loop(a, n), range(threads)))
        best = min(best, time.perf_counter() - t0)
    return threads * n * 10 * 2 * L / best / 1e9


def _load() -> str:
    try:
        return "load average %.2f %.2f %.2f (1, 5, 15 min)" % os.getloadavg()
    except OSError:
        return "load average unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=128, help="networks per stack")
    ap.add_argument("--steps", type=int, default=100, help="steps per timing")
    ap.add_argument("--rounds", type=int, default=15,
                    help="interleaved rounds; each rate is the best over the rounds")
    ap.add_argument("--quick", action="store_true", help="fewer models, steps and rounds")
    ap.add_argument("--bits", type=int, choices=fast.BITS, default=None,
                    help="time only this vector width (default: every width this CPU supports)")
    ap.add_argument("--peers", action="store_true",
                    help="also time JAX and PyTorch on the same workload (when installed)")
    args = ap.parse_args(argv)
    M, steps, reps = args.models, args.steps, args.rounds
    if args.quick:
        M, steps, reps = min(M, 32), min(steps, 50), min(reps, 3)
    default_bits = fast.vector_bits()
    widths = [args.bits] if args.bits else \
        sorted({256, fast.native_bits(), default_bits})

    arch = Arch(5, 5)
    x, t = wf_training_set()
    S = x.shape[0]
    fpp = flops_per_point(arch)
    W0 = init_stack(arch, np.arange(M))
    max_threads = numba.config.NUMBA_NUM_THREADS
    thread_counts = sorted({1, min(2, max_threads)})
    print(f"relunet training benchmark: {arch} networks, S = {S} points, {M} models x "
          f"{steps} steps per timing, best of {reps} interleaved rounds; "
          f"{os.cpu_count()} CPUs; {_load()}")
    print(f"vector width: relunet uses {default_bits} bits by default here (CPU: "
          f"{fast.native_bits()} bits native; {fast.simd.ENV}="
          f"{os.environ.get(fast.simd.ENV, 'unset')}); timing "
          + ", ".join(f"{b} bits ({b // 64} float64 / {b // 32} float32 lanes)" for b in widths))
    print(f"flops per point and step = {fpp} (formula in the docstring) -> "
          f"{fpp * S / 1e3:.0f} kflop per model-step")

    print("validation against the NumPy reference (train_stack_ref), 8 models x 30 steps:")
    for b in widths:
        validate(arch, x, t, b)

    peaks, removed, blas = {}, [], "?"
    for dt in ("float64", "float32"):
        for th in thread_counts:
            peaks[dt, th], removed, blas = matmul_peak(dt, th, 3 if args.quick else 5)
    gone = removed or "nothing (neither OPENBLAS_CORETYPE nor OPENBLAS_L2_SIZE was set)"
    print(f"matmul peak (numpy 4096^2 in a subprocess, OpenBLAS kernels: {blas}; removed from "
          f"its env: {gone}):")
    for (dt, th), p in peaks.items():
        print(f"    {dt} {th} thread(s): {p:6.1f} GFLOP/s")

    fma = {(b, th): fma_peak(th, b) for b in widths for th in thread_counts}
    for b in widths:
        print(f"float64 FMA issue rate at {b} bits (10 register-only {b}-bit FMA chains per "
              "thread): " + ", ".join(f"{th} thread(s) {fma[b, th]:.1f} GFLOP/s"
                                      for th in thread_counts))

    jobs = {}
    for dt in (np.float64, np.float32):
        for opt in (Momentum(), Adadelta()):
            for b in widths:
                train_stack(W0[:2], arch, x, t, opt, 2, dtype=dt, vector_bits=b)  # compile/load
                for th in thread_counts:
                    def fn(dt=dt, opt=opt, th=th, b=b):
                        train_stack(W0, arch, x, t, opt, steps, dtype=dt, record_every=100,
                                    threads=th, vector_bits=b)
                    jobs[f"relunet {b}-bit {np.dtype(dt).name} {opt.name}", th, b] = \
                        (fn, M * steps)
    Mn, steps_np = min(M, 256), max(2, steps // 10)
    jobs["numpy batched matmul float64 momentum", "numpy", None] = (
        numpy_step_fn(W0[:Mn], arch, x, t, steps_np), Mn * steps_np)
    rates = best_rates(jobs, reps)

    print(f"\n{'implementation':40s} {'threads':>7s} {'model-steps/s':>14s} {'GFLOP/s':>8s} "
          f"{'of matmul':>10s} {'of FMA':>7s}")
    for (name, th, b), rate in rates.items():
        gf = rate * S * fpp / 1e9
        dt = "float32" if "float32" in name else "float64"
        nth = min(2, max_threads) if th == "numpy" else th
        fb = b or default_bits
        fma_col = f"{gf / fma[fb, nth]:7.1%}" if dt == "float64" else \
            f"{gf / (2 * fma[fb, nth]):7.1%}"
        mark = " *" if b == default_bits and len(widths) > 1 else ""
        print(f"{name + mark:40s} {th!s:>7s} {rate:14,.0f} {gf:8.1f} {gf / peaks[dt, nth]:10.1%} "
              f"{fma_col}")
    print("(of matmul: against numpy's matmul peak of the same dtype and thread count; "
          "of FMA: against the FMA issue rate of the row's width, x2 for float32"
          + ("; *: the width relunet uses by default here)" if len(widths) > 1 else ")"))
    print(_load())

    if args.peers:
        run_peers(rates, default_bits, thread_counts[-1], M, steps, reps, args.quick)


def run_peers(rates, bits, threads, M, steps, reps, quick):
    """Time the same momentum workload in JAX and PyTorch (benchmarks/peers.py)
    and print relunet's ratio to each (relunet at its default width)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peers
    print(f"\npeers (same workload: {M} models x {steps} momentum steps, 5x5, 341 points; "
          f"how each runs: benchmarks/peers.py), {_load()}:")
    for name in peers.PEERS:
        why = peers.available(name)
        if why is not None:
            print(f"    {name}: skipped: {why}")
            continue
        for dt in ("float64", "float32"):
            ours = rates[f"relunet {bits}-bit {dt} momentum", threads, bits]
            for procs in sorted({1, threads}):
                how = ("1 process, the framework's own threads" if procs == 1 else
                       f"{procs} processes x 1 thread, pinned")
                try:
                    rate, err, mode = peers.peer_rate(name, dt, M, steps, max(2, reps // 3),
                                                      procs)
                except RuntimeError as exc:
                    print(f"    {name} {dt} ({how}): not timed: {exc}")
                    continue
                print(f"    {name:5s} {dt} ({how}; {mode}): {rate:12,.0f} model-steps/s "
                      f"(validated: max relative difference {err:.1e}); relunet "
                      f"{bits}-bit on {threads} thread(s) is {ours / rate:.1f}x faster")
    print(_load())


if __name__ == "__main__":
    main()
