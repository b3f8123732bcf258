"""Kinks, the Clarke certificate, the quench and the classification of stationary points.

References independent of relunet.kinks / relunet.quench: the numba kernels
(relunet.kernels), central differences, brute-force grids over the
subdifferential, gradient sampling with scipy's NNLS, and closed forms.
"""
import numpy as np
import pytest
from scipy.optimize import nnls

from relunet import Arch, init_stack, kernels
from relunet.construct import WF_ARCH, build_wf
from relunet.data import wf_training_set
from relunet.kinks import (
    clarke_measure,
    jumps,
    masked_loss_and_grad,
    preactivation_grads,
    preactivations,
)
from relunet.quench import certify, classify, near_stationarity, quench, symmetry_modes

from netcases import data_off_kinks, random_stack, tiny_quench_case


def onto_kink(w, arch, x, entry, iters=6):
    """Newton-project w onto the kink z_entry = 0 along the kink normal."""
    layer, j, s = entry
    for _ in range(iters):
        z = preactivations(w[None], arch, x)[0][layer - 1, j, s]
        n = preactivation_grads(w, arch, x, [entry])[0]
        w = w - z * n / (n @ n)
    return w


def test_masked_gradient_is_the_kernel_gradient(rng):
    arch = Arch(3, 4)
    W = random_stack(arch, 5, rng)
    x, t = data_off_kinks(W, arch, 40, rng)
    L, G = masked_loss_and_grad(W, arch, x, t)
    Lk, Gk = kernels.loss_and_grad(W, arch, x, t)
    np.testing.assert_allclose(L, Lk, rtol=1e-12)
    np.testing.assert_allclose(G, Gk, rtol=1e-10, atol=1e-13)


def test_preactivation_gradients_match_central_differences(rng):
    arch = Arch(3, 4)
    W = random_stack(arch, 1, rng)
    x, _ = data_off_kinks(W, arch, 30, rng)
    ent = np.array([[1, 0, 3], [2, 1, 5], [3, 2, 7], [3, 3, 1]])
    Nz = preactivation_grads(W[0], arch, x, ent)
    eps, fd = 1e-6, np.zeros_like(Nz)
    for p in range(arch.P):
        e = np.zeros(arch.P)
        e[p] = eps
        zp, zm = (preactivations(W[0] + sgn * e, arch, x)[0] for sgn in (1, -1))
        fd[:, p] = (zp[tuple((ent - [1, 0, 0]).T)] - zm[tuple((ent - [1, 0, 0]).T)]) / (2 * eps)
    np.testing.assert_allclose(Nz, fd, atol=1e-8)


def test_jump_is_the_gradient_difference_across_the_kink(rng):
    arch = Arch(3, 4)
    W = random_stack(arch, 1, rng)
    x, t = data_off_kinks(W, arch, 30, rng)
    Z = np.abs(preactivations(W, arch, x)[0])
    layer, j, s = np.unravel_index(np.argmin(Z), Z.shape)
    entry = (layer + 1, j, s)
    w = onto_kink(W[0], arch, x, entry)
    J, c, Nz = jumps(w, arch, x, t, [entry])
    n = Nz[0] / np.linalg.norm(Nz[0])
    d = 1e-7
    g_on = kernels.loss_and_grad(w + d * n, arch, x, t)[1][0]
    g_off = kernels.loss_and_grad(w - d * n, arch, x, t)[1][0]
    # gradients on either side differ by the jump plus O(d |H|)
    np.testing.assert_allclose(g_on - g_off, J[0], atol=1e-6 * max(1, np.abs(J).max()))
    assert np.abs(J).max() > 1e-4                 # a real jump, not a vacuous comparison


def test_clarke_measure_against_a_brute_force_grid(rng):
    arch = Arch(2, 3)
    W = random_stack(arch, 1, rng)
    x, t = data_off_kinks(W, arch, 25, rng)
    Z = np.abs(preactivations(W, arch, x)[0])
    order = np.argsort(Z.ravel())
    entries = []
    for i in order:                                # two kinks of one layer at two points
        layer, j, s = np.unravel_index(i, Z.shape)
        if all(e[2] != s for e in entries) and (not entries or entries[0][0] == layer + 1):
            entries.append((layer + 1, j, s))
        if len(entries) == 2:
            break
    w = W[0]
    for e in entries:
        w = onto_kink(w, arch, x, e)
    cm = clarke_measure(w, arch, x, t, entries)
    assert not cm.coupled and cm.rank == 2
    grid = np.linspace(0, 1, 201)
    best = min(np.linalg.norm(cm.g_off + a * cm.V[0] + b * cm.V[1]) for a in grid for b in grid)
    assert cm.measure <= best + 1e-12
    assert cm.measure >= best - 0.01 * np.linalg.norm(cm.V, axis=1).sum()
    # the nearest point of the hull is itself a combination of the one-sided gradients
    np.testing.assert_allclose(cm.g_min, cm.g_off + cm.u @ cm.V, atol=1e-14)


def _gradient_sampling_measure(w, arch, x, t, radius, n_samples, rng):
    """Min-norm element of the hull of kernel gradients at random points within ``radius``
    (Burke, Lewis & Overton 2005): min |G^T u| over the simplex, by NNLS with a heavy
    row enforcing sum(u) = 1."""
    U = rng.standard_normal((n_samples, w.size))
    U *= radius * rng.uniform(0, 1, (n_samples, 1)) / np.linalg.norm(U, axis=1, keepdims=True)
    G = kernels.loss_and_grad(w + U, arch, x, t)[1]
    big = 1e3
    A = np.vstack([G.T, big * np.ones(n_samples)])
    b = np.concatenate([np.zeros(w.size), [big]])
    u, _ = nnls(A, b, maxiter=50 * n_samples)
    return np.linalg.norm(G.T @ u)


@pytest.fixture(scope="module")
def tiny_quench():
    return tiny_quench_case()[:5]


def test_quench_never_increases_the_loss_and_certifies(tiny_quench):
    arch, x, t, W0, q = tiny_quench
    L = kernels.loss(q.W, arch, x, t)
    np.testing.assert_allclose(L, q.loss, rtol=1e-12)
    assert np.all(q.loss <= q.loss0 * (1 + 1e-15))
    assert np.all(q.loss < q.loss0 - 1e-3)            # every network really descended
    assert q.certified.mean() >= 0.75
    np.testing.assert_allclose(q.moved, np.linalg.norm(q.W - W0, axis=1))
    assert set(q.kind) <= {"smooth", "kink", "uncertified"}
    assert all(r == "" for r in q.reason[q.certified])
    assert all(r != "" for r in q.reason[~q.certified])


def test_smooth_certificate_checked_with_the_kernels(tiny_quench):
    arch, x, t, _, q = tiny_quench
    sm = np.flatnonzero(q.kind == "smooth")
    assert sm.size >= 3
    g = kernels.loss_and_grad(q.W[sm], arch, x, t)[1]
    assert np.all(np.linalg.norm(g, axis=1) <= 1e-8)
    z = np.abs(preactivations(q.W[sm], arch, x)).reshape(sm.size, -1)
    assert np.all(z.min(axis=1) > 1e-6)


def test_kink_certificate_checked_by_gradient_sampling(tiny_quench, rng):
    arch, x, t, _, q = tiny_quench
    kk = np.flatnonzero(q.kind == "kink")
    assert kk.size >= 1
    for m in kk:
        w = q.W[m]
        g_one = np.linalg.norm(kernels.loss_and_grad(w, arch, x, t)[1])
        gs = _gradient_sampling_measure(w, arch, x, t, 1e-8, 60, rng)
        # one autodiff gradient at a kink is not small; the hull of nearby gradients is
        assert gs <= 1e-6 and gs < 0.01 * max(g_one, 1e-4)


def test_classification_of_smooth_points_against_finite_differences(tiny_quench):
    arch, x, t, _, q = tiny_quench
    cert = certify(q.W, arch, x, t)
    cl = classify(q.W, arch, x, t, cert)
    sm = np.flatnonzero(q.kind == "smooth")
    for m in sm:
        w = q.W[m]
        # a step that cannot reach a kink: |dz| <= eps * |dz/dw| stays below min |z|
        zmin = np.abs(preactivations(w[None], arch, x)).min()
        nmax = np.linalg.norm(preactivation_grads(
            w, arch, x, np.argwhere(np.ones((arch.K, arch.N, x.size))) + [1, 0, 0]), axis=1).max()
        eps = min(1e-5, 0.1 * zmin / nmax)
        Hfd = np.empty((arch.P, arch.P))
        for p in range(arch.P):
            e = np.zeros(arch.P)
            e[p] = eps
            Hfd[:, p] = (kernels.loss_and_grad(w + e, arch, x, t)[1][0]
                         - kernels.loss_and_grad(w - e, arch, x, t)[1][0]) / (2 * eps)
        R = symmetry_modes(w, arch)
        _, sv, Vt = np.linalg.svd(R)
        Q = Vt[int(np.sum(sv > 1e-10 * sv.max())):].T
        ev = np.linalg.eigvalsh(Q.T @ (0.5 * (Hfd + Hfd.T)) @ Q)
        tol = 1e-6 * np.abs(ev).max()
        assert cl["index"][m] == int(np.sum(ev < -tol))
        assert cl["type"][m] == ("minimum" if cl["index"][m] == 0 else "saddle")
    assert set(cl["type"][q.kind == "kink"]) <= {"kink-minimum", "kink-saddle",
                                                "degenerate-kink"}


def test_dead_network_is_a_flat_minimum_with_curvature_two():
    """All hidden units off (negative biases), output bias = mean(t): the loss
    is mean((b - t)^2) near w, so the only curvature is d2L/db2 = 2 and every other
    direction is flat or a rescaling."""
    arch = Arch(2, 3)
    x = np.linspace(-1, 1, 15)
    t = np.cos(2 * x)
    w = np.zeros(arch.P)
    blocks = arch.unpack(w)
    blocks["W1"][:] = 0.5
    blocks["b1"][:] = -2.0
    blocks["W2"][:] = 0.3
    blocks["b2"][:] = -1.0
    blocks["Wout"][:] = 0.7
    blocks["bout"][:] = t.mean()
    cert = certify(w[None], arch, x, t)
    assert cert["kind"][0] == "smooth" and cert["measure"][0] <= 1e-15
    cl = classify(w[None], arch, x, t, cert, tol_rel=1e-10)
    assert cl["type"][0] == "minimum" and cl["index"][0] == 0
    assert cl["n_flat"][0] + cl["n_sym"][0] == arch.P - 1
    H = __import__("relunet.hessian", fromlist=["hessian"]).hessian(w, arch, x, t)[0]
    assert np.isclose(np.linalg.eigvalsh(H)[-1], 2.0, rtol=1e-12)


def test_wf_is_certified_as_the_global_minimum():
    x, t = wf_training_set()
    w = build_wf()
    cert = certify(w[None], WF_ARCH, x, t)
    assert cert["kind"][0] == "zero-loss" and cert["n_kinks"][0] == 1426
    assert classify(w[None], WF_ARCH, x, t, cert)["type"][0] == "global-minimum"
    q = quench(w[None], WF_ARCH, x, t, max_iter=3)
    assert q.certified[0] and q.moved[0] == 0.0 and q.loss[0] < 1e-30   # 0 to rounding


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_iter=0), "max_iter"), (dict(gtol=-1.0), "gtol"),
    (dict(gap=1e-12), "gap must be larger"), (dict(delta=float("nan")), "delta"),
    (dict(polish_iter=-1), "polish_iter"), (dict(polish_iter=2.5), "polish_iter")])
def test_bad_input(kwargs, match):
    arch = Arch(1, 2)
    x = np.linspace(-1, 1, 5)
    with pytest.raises(ValueError, match=match):
        quench(init_stack(arch, [0]), arch, x, x, **kwargs)
    with pytest.raises(ValueError, match="non-finite"):
        quench(np.full((1, arch.P), np.nan), arch, x, x)


def test_worker_processes_change_no_bit():
    """The Newton stage in 2 worker processes (relunet.procpool), chunk by chunk, gives
    exactly the networks and certificates of the in-process loop."""
    x, t = wf_training_set()
    W0 = init_stack(WF_ARCH, range(4))
    one = quench(W0, WF_ARCH, x, t, max_iter=4, descent_iter=30, workers=1)
    two = quench(W0, WF_ARCH, x, t, max_iter=4, descent_iter=30, workers=2)
    assert np.all(one.iterations == 4)                # every network took Newton steps
    for f in ("W", "loss", "iterations", "certified", "kind", "measure", "reason"):
        np.testing.assert_array_equal(getattr(one, f), getattr(two, f))
    with pytest.raises(ValueError, match="workers"):
        quench(W0, WF_ARCH, x, t, workers=0)


def test_near_stationarity_agrees_with_the_certificate_and_classification(tiny_quench):
    """Counting more pre-activations as on their kinks can only grow the hull: the
    coarse measure is at most the certificate's; off every kink it is |grad|; and the
    ridges it finds are the creases classify() counts in the index of kink points."""
    arch, x, t, _, q = tiny_quench
    cert = certify(q.W, arch, x, t)
    near = near_stationarity(q.W, arch, x, t)
    cl = classify(q.W, arch, x, t, cert)
    ok = cert["certified"]
    assert np.all(near["measure"][ok] <= cert["measure"][ok] + 1e-15)
    smooth = np.flatnonzero(q.kind == "smooth")
    g = np.linalg.norm(kernels.loss_and_grad(q.W[smooth], arch, x, t)[1], axis=1)
    far = near["n_near"][smooth] == 0
    assert far.any()
    np.testing.assert_allclose(near["measure"][smooth][far], g[far], rtol=1e-10, atol=1e-14)
    for m in np.flatnonzero(q.kind == "kink"):
        if cl["type"][m] in ("kink-minimum", "degenerate-kink"):
            assert near["ridges"][m] == 0 and near["falls"][m] == 0
        if cl["type"][m] == "kink-minimum":
            assert near["vees"][m] >= 1                 # a kink minimum sits in a V
        assert near["ridges"][m] <= near["falls"][m] <= cl["index"][m]


def test_a_ridge_needs_both_downhill_slopes_above_the_certificate_tolerance():
    """Hand-worked: with weight lam and jump c < 0 the loss falls by (1 - lam) |c| and
    lam |c| per unit length on the two sides; below gtol = 1e-9 that is flat."""
    from relunet.quench import _ridges
    lam = np.array([0.5, 0.5, 0.5, 1e-3, 1.0, 0.3])
    c = np.array([-1.0, -1e-12, 2.0, -1e-6, -1.0, -4e-9])
    np.testing.assert_array_equal(_ridges(lam, c, 1e-9),
                                  [True, False, False, False, False, True])
    np.testing.assert_array_equal(_ridges(lam, c, 2e-9)[-1], False)   # 0.3 * 4e-9 < 2e-9


def _weakly_active(tiny_quench, m, zz):
    """Smooth minimum m of the tiny problem plus one training point at which the first
    unit of layer 1 has pre-activation zz and whose target is the network's own output
    there (zero residual): (arch, w, x2, t2)."""
    arch, x, t, _, q = tiny_quench
    w = q.W[m]
    v = arch.unpack(w)
    x2 = np.append(x, (zz - v["b1"][0]) / v["W1"][0, 0])
    return arch, w, x2, np.append(t, kernels.forward(w[None], arch, x2)[0, -1])


@pytest.mark.parametrize("m, zz", [(1, 5e-10), (2, 5e-10), (2, 3e-9), (3, 3e-9)])
def test_polish_puts_a_minimum_onto_a_kink_it_touches(tiny_quench, m, zz, rng):
    """A weakly active kink, built by hand: a smooth minimum of the tiny problem, and
    one more training point at which a first-layer unit's pre-activation is zz (between
    the certificate's eps_on 1e-10 and gap 1e-6) and whose target is the network's own
    output there (zero residual, so the point stays a minimum and the kink carries no
    gradient jump). The certificate's gap rule rejects it; the polish (stage 3) must
    put the unit onto its kink and certify, moving the point by about zz and not
    raising the loss. Checked with the kernels, a hand-computed pre-activation and
    gradient sampling."""
    assert tiny_quench[4].kind[m] == "smooth"
    arch, w, x2, t2 = _weakly_active(tiny_quench, m, zz)
    v = arch.unpack(w)
    z_new = v["W1"][0, 0] * x2[-1] + v["b1"][0]             # first layer by hand
    assert 1e-10 < z_new < 1e-6
    assert "from its kink" in certify(w[None], arch, x2, t2)["reason"][0]
    r = quench(w, arch, x2, t2, max_iter=30, descent_iter=0, polish_iter=30)
    assert r.certified[0] and r.kind[0] == "kink"
    wp = r.W[0]
    vp = arch.unpack(wp)
    assert abs(vp["W1"][0, 0] * x2[-1] + vp["b1"][0]) <= 1e-10     # on its kink now
    assert np.linalg.norm(wp - w) <= 1e-6
    L0, L1 = kernels.loss(np.stack([w, wp]), arch, x2, t2)
    assert L1 <= L0 * (1 + 1e-14)
    gs = _gradient_sampling_measure(wp, arch, x2, t2, 1e-8, 60, rng)
    assert gs <= 1e-6


def test_the_polish_certifies_what_the_newton_stage_leaves(tiny_quench):
    """Same construction: without the polish the 30 Newton iterations do not certify
    these points; the result records which stage did."""
    for m, zz in [(1, 5e-10), (2, 3e-9)]:
        arch, w, x2, t2 = _weakly_active(tiny_quench, m, zz)
        r0 = quench(w, arch, x2, t2, max_iter=30, descent_iter=0, polish_iter=0)
        r1 = quench(w, arch, x2, t2, max_iter=30, descent_iter=0, polish_iter=30)
        assert not r0.certified[0] and r0.polished[0] == -1
        assert r1.certified[0] and r1.polished[0] >= 0


def test_the_polish_also_takes_networks_the_newton_stage_calls_stalled(tiny_quench,
                                                                       monkeypatch):
    """A network whose model steps are all refused is 'stalled', and most nearly
    stationary points end that way (no model step can lower a loss that is already
    stationary to 1e-10): the polish must still try them. With the damping capped
    low the Newton stage stalls on the hand-built weakly active kinks at once."""
    import relunet.quench as rq
    monkeypatch.setattr(rq, "MU_MAX", 1e-6)
    for m, zz in [(1, 5e-10), (2, 3e-9)]:
        arch, w, x2, t2 = _weakly_active(tiny_quench, m, zz)
        r0 = quench(w, arch, x2, t2, max_iter=30, descent_iter=0, polish_iter=0)
        assert r0.reason[0].startswith("stalled")
        r1 = quench(w, arch, x2, t2, max_iter=30, descent_iter=0, polish_iter=30)
        assert r1.certified[0] and r1.polished[0] >= 0


@pytest.mark.parametrize("delta, expected", [(-0.1, "kink-saddle"), (0.1, "kink-minimum")])
def test_a_crease_that_falls_on_one_side_makes_a_kink_saddle(delta, expected):
    """Hand-worked: one hidden unit, y = v relu(a x + b) + c with a = v = 1, b = c = 0,
    data x = -2, -1, 0, 1, 2. At x = 0 the unit sits exactly on its kink; targets
    t = (delta/2, delta/2, -delta, 1, 2) give residuals (-delta/2, -delta/2, delta, 0, 0),
    so the piece with the unit off at x = 0 is exactly stationary (sum of residuals 0,
    the 'on' points fit), and the kink's jump is c_a = 2 delta v / 5 along dz/db = 1.
    For delta < 0 switching the unit on at x = 0 lowers the loss at slope 2 delta / 5:
    a direction of descent, so the certified point is not a minimum (kink-saddle,
    index >= 1); for delta > 0 the 'on' side rises and the 'off' side is flat to
    first order, and the second-order test settles it: on the 'off' piece the fitted
    points x = 1, 2 (residual 0) and the constant output at x <= 0 (whose best constant
    is c = 0) make the loss a sum of squares no lower than here, so a kink minimum.
    The slope is checked by pushing b off the kink."""
    arch = Arch(1, 1)
    w = arch.pack({"W1": [[1.0]], "b1": [0.0], "Wout": [[1.0]], "bout": [0.0]})
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    t = np.array([delta / 2, delta / 2, -delta, 1.0, 2.0])
    cert = certify(w[None], arch, x, t)
    assert cert["certified"][0] and cert["kind"][0] == "kink" and cert["n_kinks"][0] == 1
    cl = classify(w[None], arch, x, t, cert)
    assert cl["type"][0] == expected
    assert (cl["index"][0] >= 1) == (delta < 0)
    near = near_stationarity(w[None], arch, x, t)
    assert near["falls"][0] == (delta < 0) and near["ridges"][0] == 0 and near["vees"][0] == 0
    # the slope into the 'on' side, pushing b to h > 0: the x = 0 residual goes from
    # delta to delta + h, the fitted x = 1, 2 residuals from 0 to h, so the mean of the
    # squares changes by (2 delta h + 3 h^2) / 5
    h = 1e-4
    wb = w.copy()
    arch.unpack(wb)["b1"][0] = h
    L = kernels.loss(np.stack([w, wb]), arch, x, t)
    np.testing.assert_allclose(L[1] - L[0], 2 * delta * h / 5 + 3 * h * h / 5, rtol=1e-6)


@pytest.mark.parametrize("t0, expected", [(-1.0, "kink-saddle"), (0.0, "kink-minimum")])
def test_a_crease_flat_on_both_sides_is_settled_at_second_order(t0, expected):
    """Hand-worked: y = v relu(a x + b) + c at a = 1, b = v = c = 0 (the unit's output
    weight is zero), data x = -2..2, targets (1, -1 - t0, t0, 0, 0) (mean 0, so c = 0
    is the best constant; the points x = 1, 2, where the unit is on, are fitted, so
    dL/dv = 0). The unit sits on its kink at x = 0 with c_a = dL/dh = 2 r_0 v / 5 = 0:
    the crease is flat to first order on both sides, and only the pieces' Hessians can
    say what the point is. On (b, v, c) (the rescaling mode along a removed) the 'off'
    piece's Hessian has d2L/db dv = (2/5)(r_1 + r_2) = 0, the 'on' piece adds the
    point x = 0: d2L/db dv = (2/5) r_0 with r_0 = -t0, while d2L/db2 = 0. For t0 = -1
    that makes the 'on' piece indefinite along a direction with b > 0, inside its own
    side: stepping b = h, v = -h/5 lowers the loss by 0.04 h^2 (worked out: 5 L goes
    from 2 to 2 - 2 h^2/5 + h^2/5 + O(h^3)) and the point is a kink saddle, though the
    first-order certificate and the 'off' piece alone see nothing. For t0 = 0 the loss
    is (c - 1)^2/5 + (c + 1)^2/5 + (the unit's squared outputs)/5 >= 2/5 = L: a kink
    minimum."""
    arch = Arch(1, 1)
    w = arch.pack({"W1": [[1.0]], "b1": [0.0], "Wout": [[0.0]], "bout": [0.0]})
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    t = np.array([1.0, -1.0 - t0, t0, 0.0, 0.0])
    cert = certify(w[None], arch, x, t)
    assert cert["certified"][0] and cert["kind"][0] == "kink" and cert["n_kinks"][0] == 1
    np.testing.assert_allclose(cert["c"][0], [0.0], atol=1e-15)
    cl = classify(w[None], arch, x, t, cert)
    assert cl["type"][0] == expected and cl["n_flat_creases"][0] == 1
    assert cl["index"][0] == (expected == "kink-saddle")
    h = 1e-3
    steps = np.repeat(w[None], 3, axis=0)
    v = arch.unpack(steps)
    v["b1"][1:, 0] = [h, -h]                   # into the 'on' side, then the 'off' side
    v["Wout"][1:, 0, 0] = -h / 5
    L = kernels.loss(steps, arch, x, t)
    if expected == "kink-saddle":
        np.testing.assert_allclose(L[1] - L[0], -0.04 * h * h, rtol=1e-2)
        assert L[2] > L[0]                     # the 'off' side does not descend
    else:
        pert = w + 1e-3 * np.random.default_rng(1).standard_normal((2000, arch.P))
        assert np.all(kernels.loss(pert, arch, x, t) >= L[0] - 1e-15)


def _two_flat_units():
    """Two units with zero output weights on their kinks at x = 0 and x = 1: (arch, w, x,
    t). c = 0 is the best constant (mean of t 0); dL/dv_j = 0: unit 1 is on at x = 1, 2, 3
    (h = 1, 2, 3), unit 2 at x = 2, 3 (h = 1, 2), so t_2 = -2 t_3, t_1 = -2 t_2 - 3 t_3;
    the points on the kinks, x = 0 and x = 1, keep nonzero residuals."""
    arch = Arch(1, 2)
    w = arch.pack({"W1": [[1.0], [1.0]], "b1": [0.0, -1.0], "Wout": [[0.0, 0.0]],
                   "bout": [0.0]})
    return (arch, w, np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]),
            np.array([-0.5, 0.0, 0.5, 0.1, -0.2, 0.1]))


def test_too_many_pieces_leave_a_flat_crease_point_open(monkeypatch):
    """Two units with zero output weights on their kinks at x = 0 and x = 1 (data
    residuals nonzero there): two flat creases at different points, 2 x 2 pieces, and
    the 'on' piece of each is indefinite inside its side (as in the one-unit case), so
    the point is a kink saddle; with the enumeration capped below 4 pieces it is left
    open ('degenerate-kink'), not called anything it was not shown to be."""
    import relunet.quench as rq
    arch, w, x, t = _two_flat_units()
    cert = certify(w[None], arch, x, t)
    assert cert["certified"][0] and cert["n_kinks"][0] == 2
    assert classify(w[None], arch, x, t, cert)["type"][0] == "kink-saddle"
    # the descent: b1 = h switches unit 1 on at x = 0 (residual -0.5), v1 = k h; the
    # loss changes by (-k / 6 + 14 k^2 / 6) h^2 (sum of unit 1's h^2 on x = 0..3: 14),
    # while on the 'off' side (b1 = -h) only the k^2 term is left
    h, k = 1e-3, 0.03
    steps = np.repeat(w[None], 3, axis=0)
    v = arch.unpack(steps)
    v["b1"][1:, 0] = [h, -h]
    v["Wout"][1:, 0, 0] = k * h
    L = kernels.loss(steps, arch, x, t)
    np.testing.assert_allclose(L[1] - L[0], (-k / 6 + 14 * k * k / 6) * h * h, rtol=1e-2)
    assert L[2] > L[0]
    monkeypatch.setattr(rq, "MAX_FLAT_PIECES", 3)
    cl = classify(w[None], arch, x, t, cert)
    assert cl["type"][0] == "degenerate-kink" and cl["n_flat_creases"][0] == 2


@pytest.mark.parametrize("across, expected", [(1.0, "kink-saddle"), (-1.0, "degenerate-kink")])
def test_a_negative_piece_counts_only_inside_its_own_orthant(monkeypatch, across, expected):
    """The decision of quench._flat_sides, on pieces whose Hessians are given: the two-unit
    point of the test above (two flat creases, normals n1 = e_b1[0] and
    n2 = (e_W1[1] + e_b1[1]) / sqrt 2), with every piece's Hessian I - 0.6 m1 v v^T
    - 0.6 m2 v v^T (m the creases' masks; additive over the two points, as real pieces
    are). Only the piece with both creases on has a negative curvature, -0.2 along v.
    With v = (n1 + n2) / sqrt 2 that direction lies in its own orthant (both 'on'
    sides): a descent, kink saddle. With v = (n1 - n2) / sqrt 2 it points into the
    (on, off) orthant, whose piece is positive definite: no descent is shown, and the
    point is left open ('degenerate-kink'), not called a saddle."""
    import relunet.quench as rq
    arch, w, x, t = _two_flat_units()
    cert = certify(w[None], arch, x, t)
    off = {n: o for n, _, o in arch.table}
    n1, n2 = np.zeros(arch.P), np.zeros(arch.P)
    n1[off["b1"]] = 1.0
    n2[[off["W1"] + 1, off["b1"] + 1]] = 1.0 / np.sqrt(2.0)
    v = (n1 + across * n2) / np.sqrt(2.0)

    def given(w_, arch_, x_, t_, masks, Q, fd_step, cache=None):
        on = masks[0, 0, 2] + masks[0, 1, 3]          # unit 1 at x = 0, unit 2 at x = 1
        return Q.T @ (np.eye(arch.P) - 0.6 * on * np.outer(v, v)) @ Q
    monkeypatch.setattr(rq, "_lagrangian_hessian", given)
    cl = classify(w[None], arch, x, t, cert)
    assert cl["type"][0] == expected and cl["pieces"][0] == 4


def test_random_probes_find_the_hidden_saddle_and_not_the_minimum():
    """quench.probe on the two hand-worked one-unit points of the second-order test:
    at the saddle (t0 = -1) the descent b = h, v = -h/5 fills a cone, and 200 random
    directions in the 4 weights find a lower loss at radius 1e-3; at the minimum
    (t0 = 0), where the loss is >= 2/5 = L everywhere (worked out there), none does at
    any radius. Bad input."""
    from relunet.quench import probe
    arch = Arch(1, 1)
    w = arch.pack({"W1": [[1.0]], "b1": [0.0], "Wout": [[0.0]], "bout": [0.0]})
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    saddle, minimum = np.array([1.0, 0.0, -1.0, 0.0, 0.0]), np.array([1.0, -1.0, 0.0, 0.0, 0.0])
    assert probe(w, arch, x, saddle, radii=(1e-3,))[0, 0] < -1e-8
    assert np.all(probe(w, arch, x, minimum, radii=(1e-6, 1e-3, 1e-1)) >= -1e-15)
    # the same numbers whatever the stack holds (directions seeded per network)
    two = probe(np.stack([w, w]), arch, x, saddle, radii=(1e-3,))
    assert two[0, 0] == probe(w, arch, x, saddle, radii=(1e-3,))[0, 0]
    with pytest.raises(ValueError, match="radii"):
        probe(w, arch, x, saddle, radii=(0.0,))
    with pytest.raises(ValueError, match="n_probes"):
        probe(w, arch, x, saddle, n_probes=0)


def test_pieces_of_creases_at_different_points_add_up():
    """The premise of the second-order test's enumeration (quench._flat_sides): the
    loss is a sum over training points, so the Hessian of the piece with two creases
    of different points switched on is H_0 plus each one's change. Two units with
    zero output weights, on their kinks at x = 0 and x = 1; every piece computed
    directly, to rounding."""
    from relunet.quench import _lagrangian_hessian
    arch = Arch(1, 2)
    w = arch.pack({"W1": [[1.0], [1.0]], "b1": [0.0, -1.0], "Wout": [[0.0, 0.0]],
                   "bout": [0.3]})
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    t = np.array([1.0, 0.5, -1.0, 0.2, 0.7])
    base = (preactivations(w[None], arch, x)[0] > 0).astype(float)
    assert base[0, 0, 2] == 0 and base[0, 1, 3] == 0          # both on their kinks

    def H(on):
        m = base.copy()
        for j, s in on:
            m[0, j, s] = 1.0
        return _lagrangian_hessian(w, arch, x, t, m, np.eye(arch.P), 1e-5)
    H0, H1, H2, H12 = H([]), H([(0, 2)]), H([(1, 3)]), H([(0, 2), (1, 3)])
    assert np.abs(H1 - H0).max() > 0.01 and np.abs(H2 - H0).max() > 0.01
    np.testing.assert_allclose(H12, H0 + (H1 - H0) + (H2 - H0), atol=1e-9)


@pytest.mark.parametrize("descent_iter", [0, 200])
def test_quench_lands_on_a_hand_worked_kink_minimum(descent_iter):
    """A network whose minimum sits on a kink, worked out by hand. One hidden unit,
    y = v relu(a x + b) + c, data x = -2..2; at a = v = 1, b = c = 0 the unit's kink
    lies on the data point x = 0. Residuals r = (-0.025, -0.025, 0.1, -0.1, 0.05) at
    x = -2..2 (r_x below) make it a V-shaped crease with weight exactly 1/2: with the
    unit off at x = 0 the gradient is 0 except along b, where it is
    (2/5)(r_1 + r_2) = -0.02, and switching the unit on adds (2/5) r_0 = +0.04 there, so
    0 = g_off + lam J at lam = 1/2; on the crease (b = 0) the loss is a convex quadratic
    in (p = v a, c) whose minimum (sum r = 0, r_1 + 2 r_2 = 0) is p = 1, c = 0. From
    starts 1e-2 away the quench must certify that point: b = 0, p = 1, c = 0 and the
    loss mean(r^2), classified a kink minimum."""
    arch = Arch(1, 1)
    w = arch.pack({"W1": [[1.0]], "b1": [0.0], "Wout": [[1.0]], "bout": [0.0]})
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    r = np.array([-0.025, -0.025, 0.1, -0.1, 0.05])
    t = np.array([0.0, 0.0, 0.0, 1.0, 2.0]) - r
    cert = certify(w[None], arch, x, t)
    assert cert["certified"][0] and cert["kind"][0] == "kink"
    np.testing.assert_allclose(cert["lam"][0], [0.5], atol=1e-12)
    W0 = w + 1e-2 * np.random.default_rng(0).standard_normal((4, arch.P))
    q = quench(W0, arch, x, t, max_iter=50, descent_iter=descent_iter)
    assert np.all(q.certified) and np.all(q.kind == "kink")
    assert np.all(classify(q.W, arch, x, t)["type"] == "kink-minimum")
    v = arch.unpack(q.W)
    np.testing.assert_allclose(v["b1"][:, 0], 0.0, atol=1e-10)             # on the kink
    np.testing.assert_allclose(v["W1"][:, 0, 0] * v["Wout"][:, 0, 0], 1.0, atol=1e-12)
    np.testing.assert_allclose(v["bout"][:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(q.loss, np.mean(r ** 2), rtol=1e-12)


def test_masked_sums_of_complementary_points_add_up_to_the_whole():
    """kinks.masked_sums gives a subset of the points' share of the masked loss and
    gradient: the shares of two complementary subsets add up to masked_loss_and_grad's
    loss and gradient (random real masks, so every point's piece is its own), and the
    share of all points is it exactly."""
    from relunet.kernels import check_data
    from relunet.kinks import masked_loss_and_grad, masked_sums
    arch = Arch(2, 3)
    rng = np.random.default_rng(5)
    x = np.linspace(-1, 1, 11)
    t = np.cos(2 * x)
    W = init_stack(arch, range(3))
    masks = rng.uniform(0.0, 1.0, (3, arch.K, arch.N, x.size))
    L, G = masked_loss_and_grad(W, arch, x, t, masks)
    X, T = check_data(arch, x, t)
    a = np.array([0, 3, 4, 9])
    b = np.setdiff1d(np.arange(x.size), a)
    La, Ga = masked_sums(W, arch, X[:, a], T[:, a], masks[..., a], x.size)
    Lb, Gb = masked_sums(W, arch, X[:, b], T[:, b], masks[..., b], x.size)
    np.testing.assert_allclose(La + Lb, L, rtol=1e-13)
    np.testing.assert_allclose(Ga + Gb, G, rtol=1e-12, atol=1e-15)
    L1, G1 = masked_sums(W, arch, X, T, masks, x.size)
    assert np.array_equal(L1, L) and np.array_equal(G1, G)


@pytest.mark.parametrize("ratio, expected, margin", [(-3e-8, "kink-saddle", True),
                                                     (-1e-6, "kink-saddle", False),
                                                     (-3e-9, "kink-minimum", True),
                                                     (-3e-10, "kink-minimum", False)])
def test_a_type_resting_on_a_curvature_near_the_tolerance_is_flagged(monkeypatch, ratio,
                                                                     expected, margin):
    """classify's ``margin``, on given reduced Hessians diag(ratio, 1, ..., 1) at the
    hand-worked one-unit kink point (t0 = 0: one crease flat on both sides, nothing
    falling across it). With the zero tolerance 1e-8 of the largest curvature, -3e-8
    is negative (a kink saddle) but would not be at a 10x looser tolerance, and -3e-9
    is zero (a kink minimum, every piece positive semidefinite to the tolerance) but
    would be negative at a 10x tighter one: both flagged; -1e-6 and -3e-10 are clear."""
    import relunet.quench as rq
    arch = Arch(1, 1)
    w = arch.pack({"W1": [[1.0]], "b1": [0.0], "Wout": [[0.0]], "bout": [0.0]})
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    t = np.array([1.0, -1.0, 0.0, 0.0, 0.0])
    cert = certify(w[None], arch, x, t)

    def given(w_, arch_, x_, t_, masks, Q, fd_step, cache=None):
        return np.diag(np.r_[ratio, np.ones(Q.shape[1] - 1)])
    monkeypatch.setattr(rq, "_lagrangian_hessian", given)
    cl = classify(w[None], arch, x, t, cert)
    assert cl["type"][0] == expected and bool(cl["margin"][0]) is margin


def test_a_failed_model_step_keeps_the_damping_its_tries_reached(tiny_quench):
    """A model that never predicts the loss (here: the gradient given with its sign
    flipped, so every step d of the model climbs to first order, g.d > 0) fails at every
    damping; the sampling step then lowers the loss, and the damping is returned where
    the failed tries left it (mu 10, tries at 10 and 40: 160), not reset to the bottom of
    the ramp, so that the next iteration does not pay the same failed tries again."""
    from relunet.hessian import hessian
    from relunet.kinks import preactivations
    from relunet.quench import _quench_one

    arch, x, t, W0, q = tiny_quench
    w = W0[0]                                         # a network with a real gradient
    L, g = (a[0] for a in kernels.loss_and_grad(w[None], arch, x, t))
    H = hessian(w[None], arch, x, t)[0]
    z = preactivations(w[None], arch, x)[0]
    w2, L2, mu, ok = _quench_one(w, L, -g, H, z, arch, x, t, 10.0, delta=0.0, max_tries=2)
    assert ok and L2 < L                              # the sampling step descended
    assert L2 == pytest.approx(kernels.loss(w2[None], arch, x, t)[0], rel=1e-12)
    assert mu == 160.0
    # a model given the true gradient succeeds at once, and shrinks or keeps its damping
    _, L3, mu3, ok3 = _quench_one(w, L, g, H, z, arch, x, t, 10.0, delta=0.0, max_tries=2)
    assert ok3 and L3 < L and mu3 <= 20.0
