"""Benchmark: the stages of a quench (relunet.quench) on trained 5x5 students.

Trains ``--M`` momentum-GD students on W_f's 341 points (``--train-steps``
steps, so that they sit where the quench meets them: on slow descents), then
times

* stage 1, :func:`relunet.quench.descend` for ``--descent`` steps on all M
  students, with full BFGS (weak-Wolfe line search, the default) and with
  L-BFGS (backtracking): seconds, loss-and-gradient evaluations per second, the
  median MSE decrease, and the projected time for 1,024 students at that rate; the
  BFGS stage also with the batched driver (:func:`relunet.bfgs.bfgs`, the compiled
  per-network loop's reference): the ratio, and whether the bits agree;
* stage 2, the Newton iterations on the piecewise model, on ``--newton-nets``
  of the descended students for ``--newton-iter`` iterations: milliseconds
  per network-iteration (the per-network NumPy work: kink families, the
  BVLS dual, eigh, plus one batched exact-Hessian call per iteration);
* stage 3, the polish, on the networks stage 2 left uncertified: seconds per
  network and how many it certified;
* the classification of the certified ones (relunet.quench.classify, with the
  second-order test of creases flat to first order): seconds per network and the
  pieces that test enumerated;
* the whole quench of all M students with the default run's protocol
  (relunet.experiments.quench_minima: its descent steps, Newton iterations and
  polish steps; the Newton stage in worker processes, one per usable core):
  seconds, and how many it certified.

The issue's target is 1,024 students in about 2 minutes on 2 cores; the last
line measures it. Timings on a shared machine are noisy.

    python benchmarks/bench_quench.py [--M 1024] [--descent 2000] [--newton-nets 16] [--no-full]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from relunet import Momentum, init_stack, train_stack
from relunet.bfgs import bfgs
from relunet.construct import WF_ARCH
from relunet.data import wf_training_set
from relunet.experiments.quench_minima import config as quench_config
from relunet.kernels import loss, loss_and_grad_fn
from relunet.quench import classify, descend, quench


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--M", type=int, default=1024, help="students")
    ap.add_argument("--train-steps", type=int, default=20000, help="training steps first")
    ap.add_argument("--descent", type=int, default=2000, help="descent steps (stage 1)")
    ap.add_argument("--method", choices=("bfgs", "lbfgs", "both"), default="both",
                    help="stage 1's method(s) to time (bfgs: also the batched driver, the "
                         "compiled loop's reference, on the same students)")
    ap.add_argument("--newton-nets", type=int, default=16, help="networks for stage 2")
    ap.add_argument("--newton-iter", type=int, default=20, help="Newton iterations (stage 2)")
    ap.add_argument("--full", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the whole quench of all M students, default protocol")
    args = ap.parse_args(argv)
    x, t = wf_training_set()
    t0 = time.perf_counter()
    W0 = init_stack(WF_ARCH, seeds=range(args.M))
    r = train_stack(W0, WF_ARCH, x, t, Momentum(), steps=args.train_steps)
    W = r.W[r.status == 0].astype(np.float64)
    print(f"trained {len(W)} students x {args.train_steps} steps in "
          f"{time.perf_counter() - t0:.1f} s (not part of the quench)")
    L0 = loss(W, WF_ARCH, x, t)
    methods = ("bfgs", "lbfgs") if args.method == "both" else (args.method,)
    for method in methods:
        descend(W[:2], WF_ARCH, x, t, max_iter=3, method=method)      # compile
        t0 = time.perf_counter()
        d = descend(W, WF_ARCH, x, t, max_iter=args.descent, method=method)
        sec = time.perf_counter() - t0
        evals = int(d.evaluations.sum())
        print(f"stage 1 ({method}): {len(W)} students x <= {args.descent} steps: {sec:.1f} s, "
              f"{evals / sec:,.0f} network evaluations/s, median MSE decrease "
              f"{np.median(L0 - d.loss):.4f}; 1,024 students: ~{sec * 1024 / len(W):.0f} s")
        if method == "bfgs":
            # the peer: the batched driver (one step of every network per round of Python),
            # which descend() ran before the compiled per-network loop; the same bits
            efun = loss_and_grad_fn(WF_ARCH, x, t)
            t0 = time.perf_counter()
            b = bfgs(efun, W, max_iter=args.descent)
            sec_b = time.perf_counter() - t0
            same = np.array_equal(b.W, d.W) and np.array_equal(b.evaluations, d.evaluations)
            print(f"stage 1 (bfgs, batched driver): {sec_b:.1f} s, the compiled loop "
                  f"{sec_b / sec:.1f}x faster; the same bits: {bool(same)}")
    n = min(args.newton_nets, len(W))
    quench(d.W[:2], WF_ARCH, x, t, max_iter=1, descent_iter=0)    # compile
    t0 = time.perf_counter()
    q = quench(d.W[:n], WF_ARCH, x, t, max_iter=args.newton_iter, descent_iter=0,
               polish_iter=0)
    sec2 = time.perf_counter() - t0
    its = int(q.iterations.sum())
    per = 1e3 * sec2 / max(its, 1)
    cfg = quench_config("default")          # the default run's protocol
    print(f"stage 2 (Newton): {n} networks, {its} network-iterations in {sec2:.1f} s: "
          f"{per:.1f} ms per network-iteration; 1,024 students x {cfg.max_iter} "
          f"iterations (the default budget), one process: ~{per * 1024 * cfg.max_iter / 1e3:.0f} s")
    # stage 3 on what stage 2 left uncertified (one more Newton iteration comes with it)
    left = q.W[~q.certified]
    if len(left):
        t0 = time.perf_counter()
        p = quench(left, WF_ARCH, x, t, max_iter=1, descent_iter=0, polish_iter=30)
        sec3 = time.perf_counter() - t0
        print(f"stage 3 (polish, with 1 Newton iteration): {len(left)} uncertified networks in "
              f"{sec3:.1f} s ({1e3 * sec3 / len(left):.0f} ms each), "
              f"{int((p.polished >= 0).sum())} certified by it")
        Wd = np.concatenate([q.W[q.certified], p.W[p.certified]])
    else:
        Wd = q.W[q.certified]
    # the classification of what is certified: second-order tests, the flat creases' pieces
    if len(Wd):
        t0 = time.perf_counter()
        cl = classify(Wd, WF_ARCH, x, t)
        sec4 = time.perf_counter() - t0
        flat = cl["n_flat_creases"] > 0
        print(f"classification: {len(Wd)} certified networks in {sec4:.1f} s "
              f"({1e3 * sec4 / len(Wd):.0f} ms each); {int(flat.sum())} with creases flat "
              f"to first order, pieces tested: median "
              f"{np.median(cl['pieces'][flat]) if flat.any() else 0:.0f}, "
              f"max {cl['pieces'].max()}")
    if args.full:
        t0 = time.perf_counter()
        q = quench(W, WF_ARCH, x, t, descent_iter=cfg.descent_iter, max_iter=cfg.max_iter,
                   polish_iter=cfg.polish_iter, descent=cfg.descent)
        sec = time.perf_counter() - t0
        print(f"whole quench, the default protocol ({cfg.descent_iter:,} BFGS steps, "
              f"{cfg.max_iter} Newton iterations, {cfg.polish_iter} polish steps "
              f"at most): {len(W)} students in {sec:.0f} s ({sec / 60:.1f} min; 1,024: "
              f"~{sec * 1024 / len(W) / 60:.1f} min), {int(q.certified.sum())} certified; "
              f"the issue's target, 1,024 in about 2 minutes on 2 cores")


if __name__ == "__main__":
    main()
