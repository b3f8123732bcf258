"""Random test networks and inputs away from their kinks, shared by the kernel
and Hessian tests, Rosenbrock's valley for the descents, and a small quenched case
for the quench and saddle tests (a plain module: pytest puts tests/ on sys.path)."""
import numpy as np

from relunet.net import init_stack


def random_stack(arch, M, rng):
    """M Glorot networks plus N(0, 0.3^2) noise on every entry, so that biases are
    nonzero and their gradients are exercised away from the zero initialisation."""
    W = init_stack(arch, rng.integers(0, 2**31, M))
    return W + 0.3 * rng.standard_normal(W.shape)


def data_off_kinks(W, arch, S, rng, margin=1e-4, oversample=4):
    """S inputs in [-1, 1] where every network of W has all pre-activations farther
    than ``margin`` from 0 (so +-eps steps never straddle a kink), and noisy targets
    sin(3x) + 0.1 N(0, 1)."""
    x = rng.uniform(-1, 1, oversample * S)
    v = arch.unpack(W)
    ok = np.ones(x.size, bool)
    h = np.broadcast_to(x[None, None, :], (W.shape[0], 1, x.size))
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        z = v[wn] @ h + v[bn][:, :, None]
        ok &= np.all(np.abs(z) > margin, axis=(0, 1))
        h = np.maximum(z, 0)
    x = x[ok][:S]
    assert x.size == S, "too few inputs away from the kinks; raise oversample"
    return x, np.sin(3 * x) + 0.1 * rng.standard_normal(S)


def rosenbrock(X):
    """Rosenbrock's valley for a stack of 2-D points, (E, G); minimum 0 at (1, 1)."""
    x, y = X[:, 0], X[:, 1]
    E = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    G = np.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], axis=1)
    return E, G


def tiny_quench_case():
    """Twelve 1x3 students quenched (150 Newton iterations) on 20 noisy points of
    sin(3x): several end certified on kinks. Returns (arch, x, t, W0, q, rng), rng
    after drawing the noise (the callers draw their displacements from it)."""
    from relunet import Arch
    from relunet.quench import quench
    rng = np.random.default_rng(7)
    arch = Arch(1, 3)
    x = np.linspace(-1, 1, 20)
    t = np.sin(3 * x) + 0.1 * rng.standard_normal(20)
    W0 = init_stack(arch, range(12))
    return arch, x, t, W0, quench(W0, arch, x, t, max_iter=150), rng
