"""Update rules (hand-worked steps), optimizer configs, and the numba update."""
import numpy as np
import pytest

from relunet.optim import (
    OPT_CODES,
    Adadelta,
    Momentum,
    adadelta_step,
    apply_update,
    make_optimizer,
    momentum_step,
)


# =============================================================================
# Hand-worked single steps
# =============================================================================
def test_momentum_step_hand_worked():
    w = np.array([1.0, -2.0, 0.5])
    g = np.array([0.5, 1.0, -2.0])
    v = np.array([0.1, 0.0, -0.2])
    momentum_step(w, g, v, lr=0.1, mu=0.9)
    # v <- 0.9 v - 0.1 g = [0.09 - 0.05, 0 - 0.1, -0.18 + 0.2] = [0.04, -0.1, 0.02]
    # w <- w + v         = [1.04, -2.1, 0.52]
    np.testing.assert_allclose(v, [0.04, -0.1, 0.02], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w, [1.04, -2.1, 0.52], rtol=0, atol=1e-15)


def test_plain_gradient_descent_is_momentum_zero():
    w = np.array([3.0, -1.0])
    v = np.zeros(2)
    momentum_step(w, np.array([2.0, -4.0]), v, lr=0.25, mu=0.0)
    # w <- w - 0.25 g = [3 - 0.5, -1 + 1] = [2.5, 0]
    np.testing.assert_array_equal(w, [2.5, 0.0])


def test_adadelta_step_hand_worked_keras_order():
    # rho = 1/2, eps = 1, lr = 1/2; numbers chosen so every square root is exact.
    w = np.array([1.0, 1.0, -1.0])
    g = np.array([2.0, -4.0, 0.0])
    a = np.array([2.0, 0.0, 6.0])      # E[g^2] before
    d = np.array([3.0, 8.0, 2.0])      # E[dx^2] before
    adadelta_step(w, g, a, d, lr=0.5, rho=0.5, eps=1.0)
    # a  <- a/2 + g^2/2                   = [1 + 2, 0 + 8, 3 + 0]     = [3, 8, 3]
    # dx <- g sqrt(d_old + 1) / sqrt(a_new + 1)
    #     = [2 * 2 / 2, -4 * 3 / 3, 0]                               = [2, -4, 0]
    #   (with the OLD a, element 0 would be 2 * 2 / sqrt(3): the order matters)
    # w  <- w - 0.5 dx                    = [0, 3, -1]
    # d  <- d/2 + dx^2/2                  = [1.5 + 2, 4 + 8, 1 + 0]   = [3.5, 12, 1]
    np.testing.assert_array_equal(a, [3.0, 8.0, 3.0])
    np.testing.assert_array_equal(w, [0.0, 3.0, -1.0])
    np.testing.assert_array_equal(d, [3.5, 12.0, 1.0])


def test_adadelta_first_step_from_zero_state_keras_defaults():
    # From zero state: a = (1 - rho) g^2, dx = g sqrt(eps) / sqrt(a + eps).
    # g = 0.1, rho = 0.95: a = 0.05 * 0.01 = 5e-4; dx = 0.1 * 1e-4 / sqrt(5e-4 + 1e-8)
    #   = 1e-5 / 0.02236090... = 4.47209...e-4; w = 1 - dx.
    w, g, a, d = np.array([1.0]), np.array([0.1]), np.zeros(1), np.zeros(1)
    adadelta_step(w, g, a, d, lr=1.0, rho=0.95, eps=1e-8)
    dx = 0.1 * 1e-4 / np.sqrt(5e-4 + 1e-8)
    np.testing.assert_allclose(a, [5e-4], rtol=1e-14)       # 1 - 0.95 is not exact
    np.testing.assert_allclose(w, [1.0 - dx], rtol=1e-14)
    np.testing.assert_allclose(d, [0.05 * dx * dx], rtol=1e-14)
    assert abs(dx - 4.47209e-4) < 1e-9


# =============================================================================
# The numba update inside the kernels equals the NumPy rules
# =============================================================================
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-15), (np.float32, 1e-6)])
def test_apply_update_matches_reference_rules(rng, dtype, rtol):
    P = 37
    w0 = rng.normal(size=P).astype(dtype)
    g = rng.normal(size=P).astype(dtype)
    s0 = np.abs(rng.normal(size=(2, P))).astype(dtype)
    c = dtype
    # momentum
    w, v = w0.copy(), s0[0].copy()
    assert apply_update(w, g, v, np.zeros(0, dtype), OPT_CODES["momentum"],
                        c(0.01), c(0.9), c(0), c(0))
    wr, vr = w0.copy(), s0[0].copy()
    momentum_step(wr, g, vr, 0.01, 0.9)
    np.testing.assert_allclose(v, vr, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(w, wr, rtol=rtol)
    # Adadelta
    w, a, d = w0.copy(), s0[0].copy(), s0[1].copy()
    assert apply_update(w, g, a, d, OPT_CODES["adadelta"], c(1.0), c(0.95), c(1e-8),
                        c(1 - 0.95))
    wr, ar, dr = w0.copy(), s0[0].copy(), s0[1].copy()
    adadelta_step(wr, g, ar, dr, 1.0, 0.95, 1e-8)
    for got, want in ((w, wr), (a, ar), (d, dr)):
        np.testing.assert_allclose(got, want, rtol=4 * rtol)


def test_apply_update_reports_non_finite_weights():
    w = np.array([1.0, 2.0])
    g = np.array([1e308, 0.0])
    # lr * g = 1e308 * 10 overflows to inf in w[0]
    ok = apply_update(w, g, np.zeros(2), np.zeros(0), 0, 10.0, 0.0, 0.0, 0.0)
    assert not ok and np.isinf(w[0])
    w = np.array([1e300, 2.0])       # huge but finite weights are not flagged
    assert apply_update(w, np.zeros(2), np.zeros(2), np.zeros(0), 0, 1.0, 0.0, 0.0, 0.0)


# =============================================================================
# Configs
# =============================================================================
def test_optimizer_defaults_and_metadata():
    m, a = Momentum(), Adadelta()
    assert (m.lr, m.momentum, m.name, m.n_state) == (1e-3, 0.9, "momentum", 1)
    assert (a.lr, a.rho, a.eps, a.name, a.n_state) == (1.0, 0.95, 1e-8, "adadelta", 2)
    assert m.as_dict() == {"name": "momentum", "lr": 1e-3, "momentum": 0.9}
    assert a.as_dict() == {"name": "adadelta", "lr": 1.0, "rho": 0.95, "eps": 1e-8}
    assert make_optimizer("Adadelta", rho=0.9) == Adadelta(rho=0.9)
    assert make_optimizer("momentum", lr=0.01, momentum=0.0) == Momentum(0.01, 0.0)
    with pytest.raises(Exception):
        m.lr = 1.0                     # frozen


@pytest.mark.parametrize("make, field", [
    (lambda: Momentum(lr=0), "lr"), (lambda: Momentum(lr=-1e-3), "lr"),
    (lambda: Momentum(lr=float("nan")), "lr"), (lambda: Momentum(lr=float("inf")), "lr"),
    (lambda: Momentum(momentum=1.0), "momentum"), (lambda: Momentum(momentum=-0.1), "momentum"),
    (lambda: Adadelta(lr=0.0), "lr"), (lambda: Adadelta(rho=1.0), "rho"),
    (lambda: Adadelta(rho=0.0), "rho"), (lambda: Adadelta(eps=0.0), "eps"),
    (lambda: Adadelta(eps=float("nan")), "eps"), (lambda: Momentum(lr="0.1"), "lr"),
])
def test_bad_hyper_parameters_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_make_optimizer_rejects_unknown_names_and_keys():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        make_optimizer("adam")
    with pytest.raises(ValueError, match="beta"):
        make_optimizer("adadelta", beta=0.9)
    with pytest.raises(ValueError, match="rho"):
        make_optimizer("momentum", rho=0.9)


@pytest.mark.parametrize("opt, match", [
    (Momentum(lr=1e39), r"lr=1e\+39 rounds to inf"),
    (Momentum(momentum=0.999999999), "momentum=0.999999999 rounds to 1.0"),
    (Adadelta(eps=1e-50), "eps=1e-50 rounds to 0.0"),
    (Adadelta(rho=1 - 1e-10), "rho=0.9999999999 rounds to 1.0"),
])
def test_hyper_parameters_must_survive_rounding_to_float32(opt, match):
    from relunet.optim import check_dtype
    check_dtype(opt, np.float64)                      # fine where they were checked
    with pytest.raises(ValueError, match=f"in float32, {match}.*use float64"):
        check_dtype(opt, np.float32)
    check_dtype(Adadelta(), "float32")                # the defaults survive
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        check_dtype(Adadelta(), "float16")
