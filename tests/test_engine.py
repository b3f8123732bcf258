"""Training runs on dask: seeds, determinism, resume, engines, errors.

The reference for every run is one direct call of ``train.train_stack`` on the
whole stack, initialised from ``network_seeds``: a run must reproduce it bit
for bit whatever the chunking, thread count, resume history or engine.
"""
import functools
import socket
import time

import numpy as np
import pytest

from relunet.net import init_stack
from relunet.run import (
    EngineError,
    RunData,
    TrainConfig,
    engine,
    load_run,
    network_seeds,
    run_training,
    teacher_data,
)
from relunet.run.store import RunStore

# tiny: 2x3 students, 10 networks, 60 steps (history every 20)
CFG = TrainConfig(K=2, N=3, optimizer="momentum", n_models=10, steps=60, record_every=20)
FIELDS = ("W", "loss", "history", "status", "steps_done")


@functools.lru_cache(maxsize=None)
def reference(cfg: TrainConfig = CFG):
    """All networks in one direct train_stack call."""
    from relunet.train import train_stack
    x, t = teacher_data(cfg)
    W0 = init_stack(cfg.arch, network_seeds(cfg.seed, 0, cfg.n_models), cfg.dtype)
    return train_stack(W0, cfg.arch, x, t, cfg.make_optimizer(), cfg.steps,
                       record_every=cfg.record_every, dtype=cfg.dtype)


def assert_same_as_reference(run: RunData, cfg: TrainConfig = CFG):
    ref = reference(cfg)
    assert run.complete and run.n_done == cfg.n_models
    np.testing.assert_array_equal(run.index, np.arange(cfg.n_models))
    for name in FIELDS:
        assert np.array_equal(getattr(run, name), getattr(ref, name), equal_nan=True), name
    np.testing.assert_array_equal(run.seeds, network_seeds(cfg.seed, 0, cfg.n_models))


# -- seeds and config -------------------------------------------------------------
def test_network_seeds_are_spawned_seed_sequences_independent_of_chunking():
    kids = np.random.SeedSequence(7).spawn(5)
    expected = [k.generate_state(1, np.uint64)[0] for k in kids]
    np.testing.assert_array_equal(network_seeds(7, 0, 5), expected)
    np.testing.assert_array_equal(network_seeds(7, 3, 5), expected[3:])
    assert len(set(network_seeds(0, 0, 100)) | set(network_seeds(1, 0, 100))) == 200


def test_config_fills_defaults_and_round_trips():
    from relunet.construct import default_heights
    c = TrainConfig()
    assert dict(c.hyper) == {"lr": 1.0, "rho": 0.95, "eps": 1e-8}   # Keras 2.0 Adadelta
    np.testing.assert_array_equal(c.heights, default_heights())
    assert TrainConfig.from_dict(c.to_dict()) == c
    explicit = TrainConfig(hyper={"lr": 1.0}, heights=tuple(default_heights()))
    assert explicit.fingerprint == c.fingerprint
    assert TrainConfig(steps=49_999).fingerprint != c.fingerprint


@pytest.mark.parametrize("kw, match", [
    ({"K": 0}, "K must be an integer >= 1"),
    ({"dtype": "float16"}, r"dtype must be one of \('float64', 'float32'\)"),
    ({"heights": (0, 1, 2)}, "heights must be 4 finite numbers"),
    ({"teacher": "sine"}, "teacher must be one of"),
    ({"optimizer": "momentum", "hyper": {"rho": 0.9}},
     r"unknown hyper-parameter\(s\) \['rho'\]"),
    ({"optimizer": "sgd"}, "unknown optimizer 'sgd'"),
    ({"hyper": {"lr": -1.0}}, "lr must be a finite number > 0"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"teacher": "hf", "heights": (0, 1, 1, 0)}, "heights apply to teacher 'wf' only"),
    ({"init": "perturb", "K": 2}, "needs the teacher's architecture 5x5"),
    ({"init": "perturb", "init_radius": (2, 1)}, "0 <= lo <= hi"),
    ({"init_radius": (0, 1)}, "applies to init='perturb' only"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


# -- determinism ----------------------------------------------------------------
def test_chunk_size_and_thread_count_do_not_change_a_single_bit(tmp_path):
    run_training(CFG, tmp_path / "a", chunk_size=2, numba_threads=1, progress=False)
    run_training(CFG, tmp_path / "b", chunk_size=4, numba_threads=2, progress=False)
    a, b = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert a.n_chunks == 5 and b.n_chunks == 3
    assert_same_as_reference(a)
    assert_same_as_reference(b)
    chunks = RunStore(tmp_path / "a").manifest()["chunks"]
    assert {c["numba_threads"] for c in chunks.values()} == {1}


def test_local_processes_engine_gives_identical_results(tmp_path):
    run_training(CFG, tmp_path, chunk_size=3, local_processes=2, progress=False)
    assert_same_as_reference(load_run(tmp_path))
    chunks = RunStore(tmp_path).manifest()["chunks"]
    assert {c["numba_threads"] for c in chunks.values()} == {1}   # NUMBA_NUM_THREADS=1
    assert len({c["worker"] for c in chunks.values()}) >= 1


# -- resume ---------------------------------------------------------------------
def _counting_task(log, fail_from, config, start, stop, threads, bits=None):
    """_train_chunk that logs each call to a file (works across pickling)."""
    with open(log, "a") as f:
        f.write(f"{start}\n")
    if fail_from is not None and start >= fail_from:
        raise RuntimeError(f"simulated crash at chunk starting {start}")
    return engine._train_chunk(config, start, stop, threads, bits)


def test_resume_after_failure_computes_only_missing_chunks(tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    run = tmp_path / "run"
    # first attempt: chunks of 2; the one starting at network 4 fails (no retry)
    monkeypatch.setattr(engine, "_chunk_task", functools.partial(_counting_task, log, 4))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(CFG, run, chunk_size=2, retries=0, progress=False)
    part = load_run(run)
    assert part.chunks_done == [0, 1] and part.n_done == 4 and not part.complete
    np.testing.assert_array_equal(part.W, reference().W[:4])     # readers see a partial run
    log.write_text("")
    monkeypatch.setattr(engine, "_chunk_task", functools.partial(_counting_task, log, None))
    run_training(CFG, run, progress=False)
    assert sorted(int(s) for s in log.read_text().split()) == [4, 6, 8]
    assert_same_as_reference(load_run(run))
    log.write_text("")
    run_training(CFG, run, progress=False)                       # complete: nothing to do
    assert log.read_text() == ""


def test_other_config_on_existing_run_is_refused(tmp_path):
    run_training(CFG, tmp_path, chunk_size=5, progress=False)
    other = TrainConfig(**{**CFG.to_dict(), "hyper": {"lr": 2e-3, "momentum": 0.9}})
    with pytest.raises(ValueError, match=r"hyper\.lr: 0\.001 \(stored\) vs 0\.002 \(new\)"):
        run_training(other, tmp_path, progress=False)


# -- engines: errors --------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_a_quick_one_line_error(tmp_path):
    addr = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(EngineError) as e:
        run_training(CFG, tmp_path, scheduler=addr, connect_timeout=1, progress=False)
    assert time.perf_counter() - t0 < 8
    msg = str(e.value)
    assert addr in msg and "\n" not in msg
    with pytest.raises(EngineError, match="scheduler file .*nope.json does not exist"):
        run_training(CFG, tmp_path, scheduler_file=tmp_path / "nope.json", progress=False)
    with pytest.raises(ValueError, match="at most one of"):
        run_training(CFG, tmp_path, scheduler=addr, local_processes=2, progress=False)


# -- reading --------------------------------------------------------------------
def test_loss_summary_excludes_diverged_networks():
    # 5 networks, the 3rd diverged (NaN loss) and the 5th diverged with a finite loss
    loss = np.array([0.4, 0.1, np.nan, 0.2, 9.0])
    status = np.array([0, 0, 1, 0, 1], dtype=np.int8)
    r = RunData(path=None, config=CFG, fingerprint="", index=np.arange(5), seeds=None, W=None,
                loss=loss, history=None, status=status, steps_done=None, n_done=5,
                n_total=8)
    s = r.loss_summary(quantiles=(0.0, 0.5, 1.0))
    # used: 0.4, 0.1, 0.2 -> min 0.1, median 0.2, max 0.4, mean 0.7/3
    assert s["n_used"] == 3 and s["n_diverged"] == 2 and s["n_total"] == 8
    assert s["quantiles"] == {0.0: 0.1, 0.5: 0.2, 1.0: 0.4}
    assert s["mean"] == pytest.approx(0.7 / 3, rel=1e-15)


def test_perturbed_starts_around_the_canonical_teacher(tmp_path):
    from relunet.construct import WF_ARCH, build_wf
    from relunet.net import perturbed_stack
    from relunet.symmetry import canonicalize
    cfg = TrainConfig(optimizer="momentum", n_models=4, steps=20, record_every=10,
                      init="perturb", init_radius=(0.5, 1.0), seed=3)
    run_training(cfg, tmp_path, chunk_size=3, progress=False)
    r = load_run(tmp_path)
    center = canonicalize(build_wf()[None, :], WF_ARCH)[0]
    W0, radii = perturbed_stack(center, network_seeds(3, 0, 4), (0.5, 1.0))
    np.testing.assert_array_equal(r.init_radius, radii)
    assert np.all((radii >= 0.5) & (radii <= 1.0))
    from relunet.train import train_stack
    x, t = teacher_data(cfg)
    ref = train_stack(W0, WF_ARCH, x, t, cfg.make_optimizer(), 20, record_every=10)
    np.testing.assert_array_equal(r.W, ref.W)
