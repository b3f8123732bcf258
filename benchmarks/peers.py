"""The training workload of ``bench_train.py`` in JAX and PyTorch (``--peers``).

The same workload as relunet's row of the table: M independent K x N ReLU
networks (5 x 5, one input, one output; relunet's flat weight layout, from
``net.init_stack``), full-batch momentum gradient descent (``optim.Momentum``'s
defaults: v <- mu v - lr g, w <- w + v) on the 341 points of
``relunet.data.wf_training_set``, the mean squared error as loss, in the
benchmark's dtype. Before it is timed, each peer trains 4 networks for 30
steps and is compared with relunet's NumPy reference ``train.train_stack_ref``
(weights within rtol 1e-9 in float64, 1e-3 in float32); a peer that differs is
not timed.

How each peer runs (its best configuration we know of for this workload):

* JAX: the loss of ONE network written with ``jax.numpy``, ``jax.grad`` of it,
  ``jax.vmap`` over the M networks, and the ``steps`` steps inside one
  ``jax.lax.fori_loop``, all under one ``jax.jit`` (one XLA computation per
  call). float64 needs ``jax_enable_x64``.
* PyTorch: the M networks batched as (M, N, N) weight tensors, each layer a
  ``torch.baddbmm``; gradients by autograd of the summed loss (the networks are
  independent, so that is every network's own gradient); the update under
  ``torch.no_grad``. ``torch.compile`` of the step is tried and kept when it
  compiles; otherwise eager.

Each is run in two configurations, and the faster is reported: one process
with the framework's own threads (as many as ``--threads``), and
``--threads`` processes of one thread each, pinned to one CPU each, every
process training its share of the M networks at the same time (the models are
independent, so this is the same work). A worker process builds and warms up
(compiles) its function, says ready, and times ``rounds`` calls once every
worker is ready; the rate is the sum over processes of networks x steps /
best time.

This file is also the worker: ``python peers.py NAME DTYPE M STEPS ROUNDS
CPU`` (CPU: the CPU to pin to, or -1). Neither JAX nor PyTorch is a
dependency of relunet: ``pip install -e ".[bench]"`` installs them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

PEERS = ("jax", "torch")
VALIDATE_RTOL = {"float64": 1e-9, "float32": 1e-3}


def available(name: str) -> str | None:
    """None if the peer can be imported, else why not (one line)."""
    module = {"jax": "jax", "torch": "torch"}[name]
    try:
        __import__(module)
    except Exception as exc:          # ImportError, or a broken install
        return (f"{module} is not installed ({type(exc).__name__}: {exc}); "
                f"pip install -e \".[bench]\" to time it")
    return None


# =============================================================================
# The workload, per framework: make(arch, x, t, lr, mu, dtype) -> train(W0, steps) -> W
# =============================================================================
def _blocks(arch):
    """(weight slice, weight shape, bias slice) of each affine map, in order."""
    out = []
    for layer in range(1, arch.K + 2):
        wname, bname = arch.layer_blocks(layer)
        shapes = {n: s for n, s, _ in arch.table}
        wo, bo = arch.offset(wname), arch.offset(bname)
        ws = shapes[wname]
        out.append((slice(wo, wo + ws[0] * ws[1]), ws, slice(bo, bo + ws[0])))
    return out


def make_jax(arch, x, t, lr, mu, dtype):
    if dtype == "float64":
        import jax
        jax.config.update("jax_enable_x64", True)
    import jax
    import jax.numpy as jnp
    blocks = _blocks(arch)
    X = jnp.asarray(np.asarray(x, dtype).reshape(len(x), -1))        # (S, n_in)
    T = jnp.asarray(np.asarray(t, dtype).reshape(len(t), -1))        # (S, n_out)

    def loss(w):
        h = X
        for k, (ws, shape, bs) in enumerate(blocks):
            z = h @ w[ws].reshape(shape).T + w[bs]
            # ReLU with derivative 0 at the kink, as relunet (jnp.maximum's is 1/2
            # there, and the W_f set has x = 0 with zero biases at the start)
            h = z if k == len(blocks) - 1 else jnp.where(z > 0, z, 0)
        return jnp.mean((h - T) ** 2)

    grads = jax.vmap(jax.grad(loss))

    def train(W, steps):
        def step(_, state):
            W, V = state
            V = mu * V - lr * grads(W)
            return W + V, V
        return jax.lax.fori_loop(0, steps, step, (W, jnp.zeros_like(W)))[0]

    train = jax.jit(train, static_argnums=1)

    def run(W0, steps):
        return np.asarray(jax.block_until_ready(train(jnp.asarray(W0, dtype), steps)))
    run.mode = "jax.jit"
    return run


def make_torch(arch, x, t, lr, mu, dtype):
    import torch
    tdt = getattr(torch, dtype)
    blocks = _blocks(arch)
    X = torch.as_tensor(np.asarray(x, dtype).reshape(len(x), -1))     # (S, n_in)
    T = torch.as_tensor(np.asarray(t, dtype).reshape(len(t), -1))     # (S, n_out)
    S, n_out = T.shape

    def loss_sum(W):
        """Sum over the networks of each one's mean squared error."""
        M = W.shape[0]
        h = X.T.expand(M, -1, -1)                                     # (M, n_in, S)
        for k, (ws, shape, bs) in enumerate(blocks):
            z = torch.baddbmm(W[:, bs].unsqueeze(2), W[:, ws].reshape(M, *shape), h)
            h = z if k == len(blocks) - 1 else torch.relu(z)       # relu'(0) = 0
        return ((h - T.T) ** 2).sum() / (S * n_out)

    def step(W, V):
        W = W.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_sum(W), W)
        with torch.no_grad():
            V = mu * V - lr * g
            return W.detach() + V, V

    compiled, mode = step, "torch.compile"
    try:
        compiled = torch.compile(step)
        w = torch.zeros((2, arch.P), dtype=tdt)
        compiled(w, torch.zeros_like(w))
    except Exception as exc:            # no compiler toolchain: eager
        compiled, mode = step, f"eager (torch.compile failed: {type(exc).__name__})"

    def run(W0, steps):
        W = torch.as_tensor(np.asarray(W0, dtype))
        V = torch.zeros_like(W)
        for _ in range(steps):
            W, V = compiled(W, V)
        return W.numpy()
    run.mode = mode
    return run


MAKERS = {"jax": make_jax, "torch": make_torch}


# =============================================================================
# Worker (a subprocess) and driver
# =============================================================================
def _worker(name, dtype, M, steps, rounds, cpu):
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    from relunet.data import wf_training_set
    from relunet.net import Arch, init_stack
    from relunet.optim import Momentum
    from relunet.train import train_stack_ref
    arch, opt = Arch(5, 5), Momentum()
    x, t = wf_training_set()
    run = MAKERS[name](arch, x, t, opt.lr, opt.momentum, dtype)
    W4 = init_stack(arch, np.arange(4))
    got = run(W4, 30)
    ref = train_stack_ref(W4, arch, x, t, opt, 30).W
    err = float(np.max(np.abs(got - ref) / (1e-12 + np.abs(ref))))
    ok = np.allclose(got, ref, rtol=VALIDATE_RTOL[dtype], atol=1e-12)
    W0 = init_stack(arch, np.arange(M))
    run(W0, steps)                                   # compile for this shape
    print(f"ready {err:.2e} {'ok' if ok else 'FAILED'} {run.mode}", flush=True)
    sys.stdin.readline()                             # go
    best = np.inf
    for _ in range(rounds if ok else 0):
        t0 = time.perf_counter()
        run(W0, steps)
        best = min(best, time.perf_counter() - t0)
    print(f"best {best!r}", flush=True)


def peer_rate(name, dtype, M, steps, rounds, procs):
    """Model-steps/s of peer ``name`` in ``procs`` processes (1: the framework's
    own threads; more: 1 thread each, pinned), the validation error, and how the
    step ran (jax.jit, torch.compile, or eager and why).
    Raises RuntimeError if the peer disagrees with the reference."""
    here = os.path.abspath(__file__)
    env = dict(os.environ)
    if procs > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    shares = [M // procs + (i < M % procs) for i in range(procs)]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    workers = [subprocess.Popen(
        [sys.executable, here, name, dtype, str(m), str(steps), str(rounds),
         str(cpus[i % len(cpus)] if procs > 1 and cpus else -1)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for i, m in
        enumerate(shares)]
    errs, modes = [], []
    try:
        for w in workers:
            line = w.stdout.readline().split()
            if not line or line[0] != "ready":
                raise RuntimeError(f"{name} worker failed to start (exit {w.wait()})")
            errs.append(float(line[1]))
            modes.append(" ".join(line[3:]))
            if line[2] != "ok":
                raise RuntimeError(f"{name} {dtype} differs from train_stack_ref: max relative "
                                   f"difference of the weights after 30 steps {line[1]}")
        for w in workers:
            w.stdin.write("go\n")
            w.stdin.flush()
        best = [float(w.stdout.readline().split()[1]) for w in workers]
    finally:
        for w in workers:
            w.stdin.close()
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    return sum(m * steps / b for m, b in zip(shares, best)), max(errs), modes[0]


if __name__ == "__main__":
    n, d, m, s, r, c = sys.argv[1:7]
    _worker(n, d, int(m), int(s), int(r), int(c))
