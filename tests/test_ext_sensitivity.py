"""The sensitivity experiment: end to end at smoke scale, its store, and its pieces."""
import json
import math

import numpy as np
import pytest

from relunet.construct import default_heights
from relunet.experiments import ext_sensitivity as es
from relunet.experiments import fig5_basin, minima_geometry
from relunet.experiments.frame import Context, config_dict, ensure
from relunet.experiments.students import main_config
from relunet.optim import momentum_step
from relunet.run.config import EngineOptions, run_dir
from relunet.run.files import KEY_DIGITS, fingerprint
from relunet.stats import logistic_fit


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """fig5_basin alone, then ext_sensitivity, into one temporary store."""
    root = tmp_path_factory.mktemp("sens")
    ctx = Context(store=root / "store", figures=root / "figs",
                  engine=EngineOptions(progress=False))
    f5 = fig5_basin.config("smoke")
    ensure(fig5_basin, f5, ctx)
    before = fig5_basin.report(f5, ctx)
    cfg = es.config("smoke")
    ensure(es, cfg, ctx)
    files = es.plot(cfg, ctx)
    return ctx, cfg, files, before


def test_runs_end_to_end_and_writes_figure_and_section(smoke):
    ctx, cfg, files, _ = smoke
    for ext in ("png", "pdf"):
        p = ctx.figures / f"ext_sensitivity.{ext}"
        assert str(p) in files and p.stat().st_size > 1000
    sec = es.report(cfg, ctx)
    assert sec.startswith(f"## {es.TITLE}") and "nan |" not in sec
    vs = es.variants(cfg)
    for v in vs:                                # one table row per variant
        assert f"| {v.label} |" in sec
    for claim in ("no student finds the global minimum", "shell 9.5-10.5",
                  "GD returns to W_f for small noise"):
        assert claim in sec
    # the table's numbers are those of the stored arrays
    rows = es.table(cfg, ctx)
    d = es.variant_store(ctx, cfg, vs[0]).load_array("summary")
    ok = d["status"] == 0
    assert rows[0]["best"] == d["loss"][ok].min()
    assert rows[0]["q_n"] == cfg.n_quench
    assert rows[0]["raw_n"] == ok.sum() == cfg.n_students


def test_rerun_recomputes_nothing(smoke, monkeypatch):
    ctx, cfg, _, _ = smoke
    stamps = {p: p.stat().st_mtime_ns for p in (ctx.store / es.NAME / "variants").rglob("*.npz")}
    assert len(stamps) == len(es.variants(cfg))

    def boom(*a, **k):
        raise AssertionError("recomputed a stored variant")
    monkeypatch.setattr(es, "compute_variant", boom)
    monkeypatch.setattr(es, "train", boom)
    es.compute(cfg, ctx)
    assert {p: p.stat().st_mtime_ns
            for p in (ctx.store / es.NAME / "variants").rglob("*.npz")} == stamps


def test_variants_are_distinct_store_entries(smoke):
    ctx, cfg, _, _ = smoke
    vs = es.variants(cfg)
    assert len(vs) == 1 + 9 + 3 + 4 + 2 + 4
    dirs = {es.variant_store(ctx, cfg, v).root for v in vs}
    assert len(dirs) == len(vs) and all((d / "summary.npz").is_file() for d in dirs)
    assert len({es.train_config(cfg, v).fingerprint for v in vs}) == len(vs)
    basins = [es.basin_config(cfg, v) for v in vs if v.is_gd]
    assert len({b.fingerprint for b in basins}) == len(basins) == 19
    # each training run is a run of its own in the shared runs folder
    runs = {run_dir(ctx.store, es.train_config(cfg, v)) for v in vs}
    runs |= {run_dir(ctx.store, b) for b in basins}
    assert len(runs) == len(vs) + len(basins) and all(r.is_dir() for r in runs)
    # a changed setting that a variant depends on moves it to a new entry
    other = es.Config(**{**config_dict(cfg), "quench_iter": cfg.quench_iter + 1})
    assert es.variant_store(ctx, other, vs[0]).root != es.variant_store(ctx, cfg, vs[0]).root


def test_variants_change_one_factor_of_the_project_defaults():
    cfg = es.config("default")
    vs = {v.key: v for v in es.variants(cfg)}
    base = es.train_config(cfg, vs["baseline"])
    # the baseline is the main run's config (project defaults), at reduced size
    assert base.fingerprint == main_config("momentum", cfg.n_students, cfg.steps, cfg.seed,
                                           cfg.record_every).fingerprint
    assert dict(base.hyper) == {"lr": 1e-3, "momentum": 0.9}
    np.testing.assert_array_equal(es.train_config(cfg, vs["heights-seed3"]).heights,
                                  default_heights(3))
    fields = ("heights", "variant", "optimizer", "hyper", "dtype")
    for key, v in vs.items():
        if key == "baseline" or v.optimizer == "adadelta":
            continue
        tc = es.train_config(cfg, v)
        changed = [f for f in fields if getattr(tc, f) != getattr(base, f)]
        assert len(changed) == 1, (key, changed)
    assert es.train_config(cfg, vs["gd-lr0.01"]).hyper == (("lr", 0.01), ("momentum", 0.0))


def test_verdicts_cite_the_sensitivity_results_only_when_stored(smoke, tmp_path):
    ctx, cfg, _, before = smoke
    assert "has not been run" in before and "Sensitivity" not in before
    after = fig5_basin.report(fig5_basin.config("smoke"), ctx)
    assert "Sensitivity (ext_sensitivity, 19 gradient-descent variants" in after
    assert es.basin_note("smoke", ctx) in after
    note = es.shell_note("smoke", ctx)
    assert note.startswith("Sensitivity (ext_sensitivity, 23 variants")
    empty = Context(store=tmp_path / "none", figures=tmp_path / "f",
                    engine=EngineOptions(progress=False))
    assert es.shell_note("smoke", empty) == "" == es.basin_note("smoke", empty)
    # the geometry section carries the sentence (its own results are computed elsewhere)
    assert "shell_note" in minima_geometry.report.__code__.co_names


# -----------------------------------------------------------------------------
# the pieces, against independent computations
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
def test_stable_lr_is_the_heavy_ball_bound_on_a_quadratic(mu):
    lam = 1718.0
    bound = es.stable_lr(lam, mu)
    for factor, stable in ((0.98, True), (1.02, False)):
        w, v = np.array([1.0]), np.array([0.0])
        for _ in range(20_000):
            momentum_step(w, lam * w, v, factor * bound, mu)      # gradient of lam w^2 / 2
            if abs(w[0]) > 1e6:
                break
        assert (abs(w[0]) < 1e-3) == stable, (factor, w)
    with pytest.raises(ValueError, match="momentum"):
        es.stable_lr(lam, 1.0)
    with pytest.raises(ValueError, match="lmax"):
        es.stable_lr(0.0)


def test_typical_heights_have_the_recipes_typical_size():
    h = np.array(es.typical_heights())
    assert h[0] == h[3] == 0.0
    assert math.isclose(np.sqrt(np.mean(h[1:3] ** 2)), math.sqrt(2.0), rel_tol=1e-12)
    d = default_heights(0)
    np.testing.assert_allclose(h[1:3] / d[1:3], h[1] / d[1], rtol=1e-12)   # same shape
    # the recipe's inner heights z_i - z_0 have variance 2 (4,000 draws: se ~0.045)
    draws = np.array([default_heights(s)[1:3] for s in range(4000)])
    np.testing.assert_allclose(np.mean(draws ** 2, axis=0), 2.0, atol=0.15)
    with pytest.raises(ValueError, match="rms"):
        es.typical_heights(-1.0)


def test_loss_numbers_by_hand():
    loss = np.array([0.3, 5e-5, np.inf, 0.1, 2e-4, 0.2, np.nan])
    status = np.array([0, 0, 1, 0, 0, 1, 0])
    n = es.loss_numbers(loss, status, 1e-4)
    used = np.array([0.3, 5e-5, 0.1, 2e-4])          # status 0 and finite
    assert n == dict(n_used=4, n_diverged=3, share=0.25, best=5e-5,
                     median=float(np.median(used)))
    assert np.isnan(es.loss_numbers([np.inf], [1], 1e-4)["share"])


def test_shell_share_by_hand():
    d = np.array([9.4, 9.5, 10.0, 10.5, 10.6, 12.0, 13.0, 8.0])
    assert es.shell_share(d) == 3 / 8
    assert es.shell_share(d, 9.0, 11.0) == 5 / 8
    assert np.isnan(es.shell_share([]))


def test_x_half_se_matches_the_fits_covariance_and_the_sampling_spread():
    rng = np.random.default_rng(7)
    b0, b1, n = 3.0, -9.0, 300                      # 50% point at 1/3
    x = rng.uniform(0, 2, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(b0 + b1 * x)))).astype(float)
    fit = logistic_fit(x, y)
    se = es.x_half_se(x, fit)
    # the inverse Fisher information built by hand (its diagonal: the fit's own standard
    # errors, computed on standardised x) and the gradient of -b0/b1 by differences
    p = 1 / (1 + np.exp(-(fit.coef[0] + fit.coef[1] * x)))
    info = np.array([[np.sum(p * (1 - p)), np.sum(p * (1 - p) * x)],
                     [np.sum(p * (1 - p) * x), np.sum(p * (1 - p) * x * x)]])
    cov = np.linalg.inv(info)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), fit.stderr, rtol=1e-6)
    h = 1e-6
    f = lambda c: -c[0] / c[1]  # noqa: E731
    grad = np.array([(f(fit.coef + [h, 0]) - f(fit.coef - [h, 0])) / (2 * h),
                     (f(fit.coef + [0, h]) - f(fit.coef - [0, h])) / (2 * h)])
    assert math.isclose(se, float(np.sqrt(grad @ cov @ grad)), rel_tol=1e-6)
    # ... and it is the spread of the 50% point over repeated experiments
    halves, ses = [], []
    for _ in range(300):
        xx = rng.uniform(0, 2, n)
        yy = (rng.uniform(size=n) < 1 / (1 + np.exp(-(b0 + b1 * xx)))).astype(float)
        ff = logistic_fit(xx, yy)
        halves.append(ff.x_half)
        ses.append(es.x_half_se(xx, ff))
    assert abs(np.std(halves) / np.median(ses) - 1) < 0.2
    const = logistic_fit(x, np.zeros(n))
    assert np.isnan(es.x_half_se(x, const))


def test_variant_spec_is_what_the_store_key_hashes(smoke):
    ctx, cfg, _, _ = smoke
    v = es.variants(cfg)[0]
    root = es.variant_store(ctx, cfg, v).root
    assert root.name == f"{v.key}-{fingerprint(es.variant_spec(cfg, v))[:KEY_DIGITS]}"
    spec = json.loads(json.dumps(es.variant_spec(cfg, v)))
    assert es.variant_store(ctx, cfg, v).load_json("spec") == spec


def test_assist_and_compute_share_the_variants(smoke, tmp_path):
    """run_all's main lane computes the unclaimed variants (assist) while compute runs
    elsewhere: a claimed variant is left to its holder, compute waits for it and computes
    it itself when the holder let go without storing it; every summary is the one a
    plain compute gives, bit for bit."""
    import shutil
    import threading
    import time
    ctx0, cfg, _, _ = smoke
    ctx = Context(store=tmp_path / "store", figures=tmp_path / "figs",
                  engine=EngineOptions(progress=False))
    shutil.copytree(ctx0.store / "runs", ctx.store / "runs")      # the trained runs
    vs = es.variants(cfg)
    held = es._variant_claim(ctx, cfg, vs[0], block=False)        # "another process"
    assert held is not None and es._variant_claim(ctx, cfg, vs[0], block=False) is None
    assert es.assist(cfg, ctx) == len(vs) - 1
    assert not es.variant_store(ctx, cfg, vs[0]).has("summary")
    done = []
    t = threading.Thread(target=lambda: done.append(es.compute(cfg, ctx)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive() and not done                  # waiting for the held variant
    held.close()                                      # its holder stops without storing it
    t.join(timeout=120)
    assert done and list(done[0]["keys"]) == [v.key for v in vs]
    for v in vs:
        a = es.variant_store(ctx, cfg, v).load_array("summary")
        b = es.variant_store(ctx0, cfg, v).load_array("summary")
        assert a.keys() == b.keys()
        for k in a:
            if k != "seconds":
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{v.key} {k}")
    assert es.assist(cfg, ctx) == 0                   # nothing left
