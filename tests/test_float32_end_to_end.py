"""``run_all.py --dtype float32`` end to end at smoke scale, and its pieces.

One float32 run of every experiment into a temporary store, beside a float64
run of fig2_fits alone, so that the float32 report's comparison has one
experiment with both precisions and the rest with float32 only.
"""
import json
import re

import numpy as np
import pytest

import relunet
from relunet.construct import WF_ARCH
from relunet.data import wf_training_set
from relunet.experiments import fig2_fits, quench_minima, registry
from relunet.experiments.frame import Context, is_stored
from relunet.experiments.precision import energy, loss_in, quench_float32
from relunet.experiments.tables import fmt
from relunet.kernels import loss, loss_and_grad
from relunet.quench import certify
from relunet.run.rundata import load_run
from relunet.run.runner import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("f32")
    store, figs = root / "store", root / "figs32"
    common = ["--scale", "smoke", "--store", str(store), "--no-progress"]
    assert main(common + ["--figures", str(root / "figs64"), "--only", "fig2_fits"]) == 0
    assert main(common + ["--dtype", "float32", "--figures", str(figs)]) == 0
    return store, figs


def _ctx(store):
    return Context(store=store, figures=store / "unused")


def _has_dtype(mod):
    return "dtype" in mod.Config.__dataclass_fields__


def test_float32_runs_end_to_end_into_its_own_entries(runs):
    store, figs = runs
    ctx = _ctx(store)
    for name in ("fig2_mean_fit", "ext_quench", "fig4_neb", "fig5_basin", "ext_hessian_spectra",
                 "ext_disconnectivity", "ext_wide_10x10"):
        assert (figs / f"{name}.png").stat().st_size > 1000, name
    report = (figs / "REPORT.md").read_text()
    assert report.startswith("# relunet report: the energy landscape of a simple neural "
                             "network, in float32")
    for mod in registry():
        c32, c64 = mod.config("smoke", "float32"), mod.config("smoke", "float64")
        assert f"## {mod.TITLE}" in report
        assert is_stored(mod, c32, ctx), mod.NAME
        if _has_dtype(mod):       # its own entry; float64 computed only for fig2_fits
            assert c32.dtype == "float32" and c64.dtype == "float64"
            assert ctx.results(mod.NAME, c32).root != ctx.results(mod.NAME, c64).root
            assert is_stored(mod, c64, ctx) == (mod.NAME == "fig2_fits"), mod.NAME
        else:                     # W_f and the sensitivity study: one entry for both
            assert c32 == c64 and mod.NAME in ("fig1_wf", "ext_sensitivity")
    # the float32 run kept its timings apart from float64's
    t32 = json.loads((store / "timings-smoke-float32.json").read_text())
    t64 = json.loads((store / "timings-smoke.json").read_text())
    assert "quench_minima" in t32 and set(t64) - {"_partial"} == {"fig2_fits"}


def test_trained_weights_are_float32_and_those_of_train_stack(runs):
    store, _ = runs
    ctx = _ctx(store)
    cfg = fig2_fits.config("smoke", "float32")
    from relunet.run.config import run_dir
    x, t = wf_training_set(dtype=np.float32)         # W_f's float32 outputs, as trained on
    for opt, tc in fig2_fits.train_configs(cfg).items():
        run = load_run(run_dir(store, tc))
        assert tc.dtype == "float32" and run.W.dtype == np.float32
        seeds = [np.random.SeedSequence(cfg.seed, spawn_key=(i,)).generate_state(1, np.uint64)[0]
                 for i in range(cfg.n_models)]
        W0 = relunet.init_stack(WF_ARCH, seeds, dtype="float32")
        opt_ = relunet.Momentum(lr=1e-3, momentum=0.9) if opt == "momentum" else \
            relunet.Adadelta()
        ref = relunet.train_stack(W0, WF_ARCH, x, t, opt_, cfg.steps, dtype="float32")
        np.testing.assert_array_equal(run.W, ref.W)
        # and the float64 students of the same seeds are others
        run64 = load_run(run_dir(store, fig2_fits.train_configs(
            fig2_fits.config("smoke"))[opt]))
        assert run64.W.dtype == np.float64 and not np.array_equal(run64.W, run.W)
    # the quench started from exactly those students
    q = ctx.results(quench_minima.NAME, quench_minima.config("smoke", "float32")).load_array(
        quench_minima.RESULT)
    run = load_run(run_dir(store, fig2_fits.train_configs(cfg)["momentum"]))
    np.testing.assert_array_equal(q["momentum_W0"], run.W[:len(q["momentum_W0"])])


def _rows(report, experiment):
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in report.splitlines() if line.startswith(f"| {experiment} |")]


def test_the_comparison_shows_both_precisions_where_both_were_computed(runs):
    store, figs = runs
    report = (figs / "REPORT.md").read_text()
    section = report.split("## float32 against float64")[1].split("\n## ")[0]
    ctx = _ctx(store)
    best = {}
    for dtype in ("float32", "float64"):
        d = ctx.results(fig2_fits.NAME, fig2_fits.config("smoke", dtype)).load_array("summary")
        loss_ = d["adadelta_loss"][d["adadelta_status"] == 0]
        best[dtype] = float(loss_.min())
    row = next(r for r in _rows(section, "fig2_fits") if r[1] == "adadelta: best MSE")
    assert row[2:4] == [fmt(best["float32"]), fmt(best["float64"])]
    assert float(re.match(r"[+-][0-9.e+-]+", row[4]).group()) == pytest.approx(
        best["float32"] - best["float64"], rel=1e-2)
    q = _rows(section, "quench_minima")
    assert q and all(r[3] == "float64 not computed" for r in q)
    assert "float64 not computed at this scale for: quench_minima" in section
    assert not _rows(section, "fig1_wf") and not _rows(section, "ext_sensitivity")


def test_the_float32_quench_descends_in_float32_and_is_certified_in_float64(runs):
    store, _ = runs
    x, t = wf_training_set()
    d = _ctx(store).results(quench_minima.NAME, quench_minima.config("smoke", "float32")) \
        .load_array(quench_minima.RESULT)
    W0 = d["adadelta_W0"][:2]
    x32, t32 = wf_training_set(dtype=np.float32)
    q = quench_float32(W0, WF_ARCH, x, t, descent_iter=20, gtol=1e-9, eps_on=1e-10, gap=1e-6,
                       data32=(x32, t32))
    W = q["W"]
    np.testing.assert_array_equal(W, W.astype(np.float32))          # a float32 point
    l32 = loss(W.astype(np.float32), WF_ARCH, x32, t32)
    np.testing.assert_array_equal(q["loss"], l32)                   # its float32 loss
    assert np.all(q["loss"] <= q["loss0"]) and np.all(q["loss"] < q["loss0"])
    np.testing.assert_array_equal(q["loss64"], loss(W, WF_ARCH, x, t))
    cert = certify(W, WF_ARCH, x, t)
    np.testing.assert_array_equal(q["certified"], cert["certified"])
    np.testing.assert_array_equal(q["measure"], cert["measure"])
    np.testing.assert_array_equal(q["moved"], np.linalg.norm(W - W0, axis=1))
    assert all("float32 BFGS" in r for r, c in zip(q["reason"], q["certified"]) if not c)


def test_energy_in_a_precision():
    x, t = wf_training_set()
    X = relunet.init_stack(WF_ARCH, seeds=range(3))
    E, G = energy(WF_ARCH, x, t, "float32")(X)
    E32, G32 = loss_and_grad(X.astype(np.float32), WF_ARCH, x, t)
    assert E.dtype == G.dtype == np.float64
    np.testing.assert_array_equal(E, E32)
    np.testing.assert_array_equal(G, G32)
    E64, G64 = energy(WF_ARCH, x, t, "float64")(X)
    np.testing.assert_array_equal(E64, loss_and_grad(X, WF_ARCH, x, t)[0])
    assert 0 < np.max(np.abs(E - E64) / E64) < 1e-5                 # float32 rounding
    np.testing.assert_array_equal(loss_in(X, WF_ARCH, x, t, "float32"), E32)
    with pytest.raises(ValueError, match="dtype must be one of"):
        energy(WF_ARCH, x, t, "float16")


def test_float32_figures_go_to_their_own_folder_by_default(runs, tmp_path, monkeypatch):
    store, _ = runs
    monkeypatch.chdir(tmp_path)
    assert main(["--scale", "smoke", "--store", str(store), "--dtype", "float32",
                 "--plot-only", "--only", "fig2_fits"]) == 0
    assert (tmp_path / "figures" / "float32" / "fig2_mean_fit.png").is_file()
    assert not (tmp_path / "figures" / "fig2_mean_fit.png").exists()


def test_a_bad_dtype_is_a_one_line_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--scale", "smoke", "--dtype", "float16"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("run_all.py: error: argument --dtype: invalid choice: 'float16'")
    with pytest.raises(ValueError, match="dtype must be one of"):
        fig2_fits.config("smoke", "float16")
