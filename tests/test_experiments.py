"""Every experiment end to end at smoke scale: files, report sections, resume, --plot-only."""
import subprocess
import sys
import time

import pytest

from relunet.experiments import names
from relunet.run.runner import main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    store, figs = root / "store", root / "figures"
    args = ["--scale", "smoke", "--store", str(store), "--figures", str(figs), "--no-progress"]
    t0 = time.perf_counter()
    assert main(args) == 0
    return store, figs, args, time.perf_counter() - t0


EXPECTED = ["fig1_wf", "fig2_mean_fit", "fig3_best_fits", "fig2c_loss_distribution",
            "ext_quench", "fig4_neb", "fig5_basin", "ext_hessian_spectra", "ext_minima_geometry",
            "ext_sensitivity", "ext_disconnectivity", "ext_wide_10x10", "ext_high_freq"]


def test_every_figure_and_report_section(smoke_run):
    store, figs, _, _ = smoke_run
    for name in EXPECTED:
        for ext in ("png", "pdf"):
            p = figs / f"{name}.{ext}"
            assert p.is_file() and p.stat().st_size > 1000, p
    report = (figs / "REPORT.md").read_text()
    from relunet.experiments import registry
    for mod in registry():
        assert f"## {mod.TITLE}" in report
    assert "| claim" in report and "nan |" not in report.split("## ")[1]
    # the experiments that need no other's results ran in the second lane, and it says so
    assert "the main lane takes those not started when it is done with its own): fig1_wf, " \
        "fig5_basin, ext_sensitivity, high_freq; their wall times overlap" in report
    # sections are written once every experiment ran: the distance shell and the basin
    # (before ext_sensitivity in figure order) cite its results from this same run
    for title in ("The organisation of the minima", "Fig. 5: the basin"):
        section = report.split(f"## {title}")[1].split("\n## ")[0]
        assert "Sensitivity (ext_sensitivity" in section, title


def test_rerun_does_not_recompute(smoke_run):
    store, figs, args, first = smoke_run
    stamps = {p: p.stat().st_mtime_ns for p in store.rglob("*.npz")}
    assert len(stamps) > 10
    timings = (store / "timings-smoke.json").read_text()
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*.npz")} == stamps
    # the report keeps the wall times of the run that computed, not of the re-run
    assert (store / "timings-smoke.json").read_text() == timings


def test_plot_only_replots_without_computing(smoke_run, tmp_path):
    store, _, _, _ = smoke_run
    stamps = {p: p.stat().st_mtime_ns for p in store.rglob("*.npz")}
    figs2 = tmp_path / "figs"
    assert main(["--scale", "smoke", "--store", str(store), "--figures", str(figs2),
                 "--plot-only", "--only", "fig1_wf", "--only", "fig5_basin"]) == 0
    assert (figs2 / "fig1_wf.png").is_file() and (figs2 / "fig5_basin.png").is_file()
    assert not (figs2 / "fig4_neb.png").exists()
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*.npz")} == stamps
    # --only refreshes its sections; the report still holds every stored experiment
    from relunet.experiments import registry
    report = (figs2 / "REPORT.md").read_text()
    for mod in registry():
        assert f"## {mod.TITLE}" in report
        assert f"| {mod.NAME} |" in report


def test_plot_only_without_results_is_a_clear_error(tmp_path, capsys):
    rc = main(["--scale", "smoke", "--store", str(tmp_path / "empty"), "--figures",
               str(tmp_path / "f"), "--plot-only", "--only", "fig1_wf"])
    assert rc == 2
    assert "--plot-only needs computed results" in capsys.readouterr().err


def test_unknown_experiment_is_refused():
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["--only", "nope"])
    assert "fig1_wf" in names()


def test_needs_names_every_read_and_the_lanes_keep_to_it():
    """NEEDS lists every experiment whose results compute() reads (found in the source:
    ``stored(<module>``, ``<module>.main_runs(``, ``<module>.quenched(``), so the second
    lane of run_all never holds an experiment that another selected one reads."""
    import inspect
    import re

    from relunet.experiments import registry
    from relunet.run.runner import split_lanes
    mods = registry()
    names = {m.NAME for m in mods}
    for m in mods:
        src = inspect.getsource(m)
        reads = {n for n in names - {m.NAME}
                 if re.search(rf"\b{n}\.(main_runs|quenched)\(|stored\({n}\b", src)}
        assert reads <= set(m.NEEDS) <= names, (m.NAME, reads, m.NEEDS)
    main, side = split_lanes(mods)
    # LANE_FIRST (the sensitivity study) first, then figure order
    assert [m.NAME for m in side] == ["ext_sensitivity", "fig1_wf", "fig5_basin", "high_freq"]
    assert not {n for m in main for n in m.NEEDS} & {m.NAME for m in side}
    # a selection with nothing but independent experiments keeps its first in the main lane
    only = [m for m in mods if m.NAME in ("fig5_basin", "high_freq")]
    assert [[m.NAME for m in lane] for lane in split_lanes(only)] == [["fig5_basin"],
                                                                       ["high_freq"]]


def test_a_claim_is_exclusive_and_dies_with_its_holder(tmp_path):
    from relunet.experiments.frame import Context
    from relunet.run.runner import claim
    ctx = Context(store=tmp_path, figures=tmp_path / "fig")
    c = claim(ctx, "smoke", "fig5_basin")
    assert c is not None and claim(ctx, "smoke", "fig5_basin") is None
    assert claim(ctx, "smoke", "high_freq") is not None         # one claim per experiment
    c.close()
    held = claim(ctx, "smoke", "fig5_basin")
    assert held is not None
    held.close()
    # a process that holds a claim and is killed frees it
    code = ("import sys, time; from pathlib import Path; "
            "from relunet.experiments.frame import Context; from relunet.run.runner import "
            f"claim; c = claim(Context(store=Path({str(tmp_path)!r}), figures=Path('f')), "
            "'smoke', 'fig1_wf'); print(c is not None, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "True"
        assert claim(ctx, "smoke", "fig1_wf") is None
    finally:
        proc.kill()
        proc.wait()
    assert claim(ctx, "smoke", "fig1_wf") is not None


def test_lanes_run_every_experiment_once(tmp_path, capfd):
    # fig1_wf in the main lane, fig5_basin and high_freq in the second: the main lane, done
    # first, takes what the second has not started; whoever runs it, each runs once and the
    # report has every section
    args = ["--scale", "smoke", "--store", str(tmp_path / "s"), "--figures",
            str(tmp_path / "f"), "--no-progress"]
    only = ["--only", "fig1_wf", "--only", "fig5_basin", "--only", "high_freq"]
    assert main(args + only) == 0
    out = capfd.readouterr().out
    for name in ("fig1_wf", "fig5_basin", "high_freq"):
        assert out.count(f"{name} done in") == 1, out
    report = (tmp_path / "f" / "REPORT.md").read_text()
    for title in ("Fig. 1:", "Fig. 5:", "higher frequency"):
        assert title in report


def test_transition_states_start_from_the_bands_full_precision_highest_images(smoke_run):
    """Fig. 4 keeps each band's highest movable image in float64 (its images are stored in
    float32): the loss there is, bit for bit, the energy the band reports for that image,
    which the float32 copy does not reproduce; the saddle search starts from it."""
    import numpy as np

    from relunet.construct import WF_ARCH
    from relunet.data import wf_training_set
    from relunet.experiments.precision import energy
    store = smoke_run[0]
    d = np.load(next((store / "fig4_neb").glob("smoke-*/bands.npz")))
    E = d["energies"]
    top = np.argmax(E[:, 1:-1], axis=1) + 1
    r = np.arange(len(E))
    assert d["top_images"].dtype == np.float64 and d["images"].dtype == np.float32
    x, t = wf_training_set()
    e_top = energy(WF_ARCH, x, t)(d["top_images"])[0]
    np.testing.assert_array_equal(e_top, E[r, top])
    e_32 = energy(WF_ARCH, x, t)(d["images"][r, top].astype(np.float64))[0]
    assert np.all(e_32 != E[r, top])
    np.testing.assert_allclose(d["top_images"], d["images"][r, top], rtol=1e-6, atol=1e-7)
    s = np.load(next((store / "transition_states").glob("smoke-*/saddles.npz")))
    n = len(s["moved"])
    np.testing.assert_array_equal(s["start_energy"], E[r, top][:n])
    np.testing.assert_allclose(np.linalg.norm(s["X"] - d["top_images"][:n], axis=1), s["moved"],
                               rtol=1e-12, atol=1e-14)                 # it started there
    # the kinks the band maxima sit on, recounted with a hand-written NumPy forward pass
    for k in range(n):
        v = WF_ARCH.unpack(d["top_images"][k])
        h, near = np.asarray(x, dtype=np.float64)[None, :], 0
        for layer in range(1, WF_ARCH.K + 1):
            wn, bn = WF_ARCH.layer_blocks(layer)
            z = v[wn] @ h + v[bn][:, None]
            near += int(np.sum(np.abs(z) <= 1e-6))
            h = np.maximum(z, 0.0)
        assert s["near_n"][k] == near
        assert s["near_vees"][k] + s["near_falls"][k] <= near


def test_fig4_start_study_is_the_same_bands_from_the_straight_line(smoke_run):
    """Fig. 4's start study relaxes the same ends with the same method from the straight
    line: band 0 rerun alone with the string method given no initial path gives the same
    bits (a band's result does not depend on its batch); its images start on the chord, so
    its length is at least the chord's; the report's row counts what the store holds."""
    import dataclasses

    import numpy as np

    from relunet.experiments import fig4_neb as F
    from relunet.experiments.frame import Context
    store, figs, _, _ = smoke_run
    d = np.load(next((store / "fig4_neb").glob("smoke-*/bands.npz")))
    cfg = F.config("smoke")
    wf, ends, _ = F.endpoints(cfg, Context(store=store, figures=figs))
    alone = F._relax(dataclasses.replace(cfg, start="straight"), wf, ends[:1], cfg.n_images,
                     cfg.max_iter)
    np.testing.assert_array_equal(alone.energies[0], d["straight_energies"][0])
    assert alone.converged[0] == d["straight_converged"][0]
    main = F._relax(cfg, wf, ends[:1], cfg.n_images, cfg.max_iter)   # the plateau start
    np.testing.assert_array_equal(main.energies[0], d["first_energies"][0])
    assert not np.array_equal(alone.energies[0], main.energies[0])
    chord = np.linalg.norm(ends - wf, axis=1)
    assert np.all(d["straight_length"] >= chord * (1 - 1e-12))
    row = next(r for r in (figs / "REPORT.md").read_text().splitlines()
               if r.startswith("| start study"))
    ok = d["straight_converged"].astype(bool)
    assert f"| {int(ok.sum())} of {len(ok)} converged (the first relaxation's method" in row
    assert f"converged from either: {int((ok | d['converged'].astype(bool)).sum())}" in row
    high = ok & (d["straight_energies"].max(axis=1) > d["plateau_max"])
    assert f"so not the lowest one): {int(high.sum())}" in row


def test_fig4_climbing_images_read_in_w_f_terms_and_tested_across(smoke_run):
    """Fig. 4's row 'what the bands cross': the stored teeth/spline coefficients are those
    of the stored climbing images (relunet.geometry.components recomputed), the descent
    across each band never ends above its climbing image and moves only where it went
    lower, the report's row counts the drops the store holds, and the dead hidden units it
    counts are those of a NumPy forward pass."""
    import numpy as np

    from relunet.construct import WF_ARCH
    from relunet.data import wf_training_set
    from relunet.experiments import fig4_neb as F
    from relunet.geometry import components, spline_level
    store, figs, _, _ = smoke_run
    d = np.load(next((store / "fig4_neb").glob("smoke-*/bands.npz")))
    x, _ = wf_training_set()
    np.testing.assert_array_equal(d["top_components"], components(d["top_images"], WF_ARCH,
                                                                   x)[0])
    assert float(d["spline_level"]) == spline_level(x)
    climb = d["energies"][:, 1:-1].max(axis=1)
    assert np.all(d["across_energy"] <= climb)
    assert np.all((d["across_distance"] > 0) == (d["across_energy"] < climb))
    cfg = F.config("smoke")
    conv = d["converged"].astype(bool)
    m = conv & (climb < float(d["var_t"]) - cfg.etol)
    rows = [r for r in (figs / "REPORT.md").read_text().splitlines()
            if r.startswith("| what the bands cross")]
    assert len(rows) == int(m.any())
    if m.any():
        drop = climb - d["across_energy"]
        assert f"lower by more than 1e-6 from {int((m & (drop > 1e-6)).sum())} of" in rows[0]
    # dead hidden units (off at every training point), counted by a NumPy forward pass
    dead = []
    for w in d["top_images"]:
        v, h, n_dead = WF_ARCH.unpack(w), x.reshape(-1, 1), 0
        for layer in range(1, WF_ARCH.K + 1):
            z = h @ v[f"W{layer}"].T + v[f"b{layer}"]
            n_dead += int(np.sum(np.all(z <= 0, axis=0)))
            h = np.maximum(z, 0.0)
        dead.append(n_dead)
    np.testing.assert_array_equal(F.crossing(d, cfg.etol)["dead"], dead)


def test_disconnectivity_shortening_keeps_a_band_only_over_a_path_maximum_no_higher(smoke_run):
    """The disconnectivity graph's bands go through Fig. 4's shortening rounds, judged by
    the path maximum: a band kept from the first relaxation has that relaxation's path
    maximum and flag; a replaced band converged, and its path maximum is no higher than the
    first's by more than etol where that had converged; the report's row counts them."""
    import numpy as np

    from relunet.data import wf_training_set
    from relunet.experiments import ext_disconnectivity as ed
    store, figs, _, _ = smoke_run
    d = np.load(next((store / "ext_disconnectivity").glob("smoke-*/graph.npz")))
    cfg = ed.config("smoke")
    kept = d["shorten_round"]
    assert kept.max() <= cfg.shorten_rounds + len(cfg.hold_widths) and kept.min() >= 0
    old = kept == 0
    np.testing.assert_array_equal(d["band_peak"][old], d["first_peak"][old])
    np.testing.assert_array_equal(d["band_converged"][old], d["first_converged"][old])
    new = ~old
    assert np.all(d["band_converged"][new])
    c0 = d["first_converged"].astype(bool)
    assert np.all((d["band_peak"] <= d["first_peak"] + cfg.etol)[new & c0])
    report = (figs / "REPORT.md").read_text().split("## " + ed.TITLE)[1].split("\n## ")[0]
    row = next(r for r in report.splitlines() if r.startswith("| shortening rounds"))
    assert f"{int(new.sum())} of {len(kept)} replaced" in row
    # the converged bands' highest points read in W_f's terms: the row counts what is stored
    ok = d["band_converged"].astype(bool)
    tops = [r for r in report.splitlines() if r.startswith("| highest points of the converged")]
    assert len(tops) == int(ok.any())
    if ok.any():
        const = float(np.var(wf_training_set()[1]))
        near = int(np.sum(np.abs(d["path_max"][ok] - const) <= 1e-3))
        assert f": {near}, within 5e-3 of the spline level" in tops[0]
        assert tops[0].endswith(f"of {int(ok.sum())} |")


def test_fig4_shortening_rounds_keep_a_band_only_over_a_pass_no_higher(smoke_run):
    """The shortening rounds: a band kept from the first relaxation is that relaxation's,
    bit for bit; a band kept from a round converged there, and its highest image (ends
    included) is no higher than the first relaxation's by more than etol (where that had
    converged); the
    round of band 0 recomputed alone (smooth its first band, relax again) gives the stored
    bits when it is kept."""
    import numpy as np

    from relunet.experiments import fig4_neb as F
    from relunet.experiments.frame import Context
    from relunet.string_method import smooth
    store, figs, _, _ = smoke_run
    d = np.load(next((store / "fig4_neb").glob("smoke-*/bands.npz")))
    cfg = F.config("smoke")
    assert cfg.shorten_rounds == 1
    kept = d["shorten_round"]
    first, conv, conv0 = d["first_energies"], d["converged"], d["first_converged"]
    np.testing.assert_array_equal(d["energies"][kept == 0], first[kept == 0])
    np.testing.assert_array_equal(conv[kept == 0], conv0[kept == 0])
    new = kept > 0
    assert np.all(conv[new])
    top, top0 = d["energies"].max(axis=1), first.max(axis=1)     # ends included
    assert np.all((top <= top0 + cfg.etol)[new & conv0])
    wf, ends, _ = F.endpoints(cfg, Context(store=store, figures=figs))
    f0 = F._relax(cfg, wf, ends[:1], cfg.n_images, cfg.max_iter)
    r1 = F._relax(cfg, wf, ends[:1], cfg.n_images, cfg.max_iter,
                  path=smooth(f0.images, cfg.shorten_sweeps),
                  fractions=np.linspace(0.0, 1.0, cfg.n_images))

    def better(r):
        return r.converged[0] and (not f0.converged[0] or r.energies[0].max()
                                   <= f0.energies[0].max() + cfg.etol)
    took = better(r1)
    assert (kept[0] == 1) == took
    if not took:       # the held round: the climbing image and its neighbours held
        assert cfg.hold_widths == (1,)
        c = int(np.argmax(f0.energies[0, 1:-1])) + 1
        hold = np.zeros((1, cfg.n_images), bool)
        hold[0, max(c - 1, 1):min(c + 2, cfg.n_images - 1)] = True
        r2 = F._relax(cfg, wf, ends[:1], cfg.n_images, cfg.max_iter,
                      path=smooth(f0.images, cfg.shorten_sweeps, hold=hold),
                      fractions=np.linspace(0.0, 1.0, cfg.n_images))
        assert (kept[0] == 2) == better(r2)
        r1 = r2 if better(r2) else f0
    np.testing.assert_array_equal(d["energies"][0], r1.energies[0])
    row = next(r for r in (figs / "REPORT.md").read_text().splitlines()
               if r.startswith("| shortening rounds"))
    assert f"{int(new.sum())} of {len(kept)} bands replaced" in row
