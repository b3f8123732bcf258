"""Fault injection: each defect of issue 11 reproduced at small size.

Shared clusters, tampered stores, failing environments, interrupts and
unbounded requests must give the right result or one line naming the cause
and the fix (never a traceback), and damaged runs must repair themselves.
Tests that start processes or clusters for many seconds are marked ``slow``;
each has a smoke variant here that always runs.
"""
import errno
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from relunet.net import init_stack
from relunet.run import (
    EngineError,
    NumbaCacheError,
    RunData,
    TrainConfig,
    engine,
    faults,
    files,
    load_run,
    network_seeds,
    run_training,
    teacher_data,
    writer,
)
from relunet.run.cli import main
from relunet.run.store import DamagedRunError, ManifestError, RunStore

CFG = TrainConfig(K=2, N=3, optimizer="momentum", n_models=8, steps=40, record_every=20)
ARGS = ["--K", "2", "--N", "3", "--optimizer", "momentum", "--models", "8", "--steps", "40",
        "--record-every", "20", "--quiet"]


@functools.lru_cache(maxsize=None)
def reference(cfg=CFG):
    from relunet.train import train_stack
    x, t = teacher_data(cfg)
    W0 = init_stack(cfg.arch, network_seeds(cfg.seed, 0, cfg.n_models), cfg.dtype)
    return train_stack(W0, cfg.arch, x, t, cfg.make_optimizer(), cfg.steps,
                       record_every=cfg.record_every, dtype=cfg.dtype)


def assert_reference(run_dir, cfg=CFG):
    r = load_run(run_dir)
    ref = reference(cfg)
    assert r.complete
    np.testing.assert_array_equal(r.index, np.arange(cfg.n_models))
    np.testing.assert_array_equal(r.seeds, network_seeds(cfg.seed, 0, cfg.n_models))
    for name in ("W", "loss", "history", "status", "steps_done"):
        assert np.array_equal(getattr(r, name), getattr(ref, name), equal_nan=True), name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run of CFG in chunks of 2 (4 chunks); copy it before damaging it."""
    d = tmp_path_factory.mktemp("trained") / "run"
    run_training(CFG, d, chunk_size=2, progress=False)
    return d


@pytest.fixture
def run(trained, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(trained, d)
    return d


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("relunet: run ")]
    assert len(lines) == 1 and lines[0].startswith("relunet: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# =============================================================================
# 1. Shared cluster: task keys and cancellation
# =============================================================================
def test_task_keys_name_the_run_and_networks_and_are_unique_per_call(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster
    keys = []
    submit = Client.submit

    def spy(self, fn, *args, key=None, **kw):
        keys.append(key)
        return submit(self, fn, *args, key=key, **kw)

    monkeypatch.setattr(Client, "submit", spy)
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                      dashboard_address="127.0.0.1:0") as cluster:
        # the case that collided: one config, chunk sizes 2 and 4, one cluster
        run_training(CFG, tmp_path / "a", chunk_size=2, scheduler=cluster.scheduler_address,
                     progress=False)
        run_training(CFG, tmp_path / "b", chunk_size=4, scheduler=cluster.scheduler_address,
                     progress=False)
    fp = CFG.fingerprint[:16]
    assert len(keys) == 6 and len(set(keys)) == 6
    assert all(k.startswith(f"relunet-train-{fp}-") for k in keys)
    assert [k.split("-nets-")[1] for k in keys] == ["0-2", "2-4", "4-6", "6-8", "0-4", "4-8"]
    assert len({k.split("-")[3] for k in keys[:4]} | {k.split("-")[3] for k in keys[4:]}) == 2
    assert_reference(tmp_path / "a")
    assert_reference(tmp_path / "b")


_SHARED_CLUSTER = textwrap.dedent("""
    import sys, time
    from distributed import LocalCluster
    if __name__ == "__main__":
        c = LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                         protocol="tcp", host="127.0.0.1", dashboard_address="127.0.0.1:0")
        print(c.scheduler_address, flush=True)
        sys.stdin.read()
""")


@pytest.mark.slow
def test_two_clients_of_one_cluster_with_different_chunk_sizes_and_a_ctrl_c(tmp_path):
    """Two concurrent `relunet train` of one config on one cluster (chunks of 2
    and 4) both end bit-identical; a third client's Ctrl-C cancels nothing of theirs."""
    cfg = TrainConfig(K=2, N=3, optimizer="momentum", n_models=16, steps=100_000,
                      record_every=10_000)
    args = ["--K", "2", "--N", "3", "--optimizer", "momentum", "--models", "16", "--steps",
            "100000", "--record-every", "10000", "--quiet"]
    sched = subprocess.Popen([sys.executable, "-c", _SHARED_CLUSTER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        addr = sched.stdout.readline().strip()
        procs = [subprocess.Popen([sys.executable, "-m", "relunet.run.cli", "train", "--run",
                                   str(tmp_path / n), "--chunk-size", cs, "--scheduler", addr]
                                  + args, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
                 for n, cs in (("a", "2"), ("b", "4"), ("c", "2"))]
        manifest = tmp_path / "c" / "manifest.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                manifest.is_file() and json.loads(manifest.read_text())["chunks"]):
            time.sleep(0.02)
        procs[2].send_signal(signal.SIGINT)         # c's Ctrl-C, mid-run
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        sched.stdin.close()
        sched.wait(timeout=30)
    assert [p.returncode for p in procs] == [0, 0, 130], errs
    assert 1 <= len(RunStore(tmp_path / "c").manifest()["chunks"]) < 8
    assert_reference(tmp_path / "a", cfg)
    assert_reference(tmp_path / "b", cfg)


@pytest.mark.slow
def test_scheduler_lost_mid_run_is_one_line_with_resume(tmp_path):
    run = tmp_path / "run"
    sched = subprocess.Popen([sys.executable, "-c", _SHARED_CLUSTER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    addr = sched.stdout.readline().strip()
    proc = subprocess.Popen([sys.executable, "-m", "relunet.run.cli", "train", "--run", str(run),
                             "--scheduler", addr, "--chunk-size", "2", "--K", "2", "--N", "3",
                             "--optimizer", "momentum", "--models", "16", "--steps",
                             "1000000", "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (
            (run / "manifest.json").is_file()
            and json.loads((run / "manifest.json").read_text())["chunks"]):
        time.sleep(0.05)
    sched.kill()
    sched.wait()
    err = proc.communicate(timeout=60)[1]
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("relunet: run ")]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"relunet: error: lost the dask scheduler at {addr}")
    assert f"resume with: relunet train --run {run} --scheduler {addr}" in lines[0]


# =============================================================================
# 2-3. Tampered or damaged chunks: detected, reported, quarantined, recomputed
# =============================================================================
def _flip_a_byte(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x40
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("damage, reason", [
    (lambda d: shutil.copy(d / "chunk-00002.npz", d / "chunk-00003.npz"),
     "is a copy of chunk 2"),
    (lambda d: (d / "chunk-00001.npz").write_bytes((d / "chunk-00001.npz").read_bytes()[:900]),
     "(SHA-256 differs from the manifest)"),
    (lambda d: (d / "chunk-00001.npz").write_bytes(b""), "is empty"),
    (lambda d: _flip_a_byte(d / "chunk-00001.npz"), "was modified or replaced"),
    (lambda d: (d / "chunk-00001.npz").unlink(), "is missing"),
])
def test_damaged_chunk_is_reported_then_quarantined_and_recomputed(run, damage, reason,
                                                                   capsys):
    damage(run)
    with pytest.raises(DamagedRunError, match="damaged chunk") as e:
        load_run(run)
    assert reason in str(e.value) and "\n" not in str(e.value)
    assert "relunet train --run" in str(e.value)
    # status says what and why (exit 3), without a traceback
    assert main(["status", str(run)]) == 3
    out = capsys.readouterr().out
    assert "progress     3/4 chunks, 6/8 networks" in out
    assert "damaged      1 chunk(s) left out" in out and reason in out
    assert main(["verify", str(run)]) == 3
    assert reason in capsys.readouterr().out
    # train quarantines the chunk and trains it again: the run is bit-identical
    assert main(["train", "--run", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "damaged chunk(s) moved to" in err and "Traceback" not in err
    assert_reference(run)
    m = RunStore(run).manifest()
    assert [q["chunk"] for q in m["quarantined"]] in ([1], [3])
    assert reason in m["quarantined"][0]["reason"]
    assert main(["verify", str(run)]) == 0
    assert main(["status", str(run)]) == 0
    assert "quarantined  chunk" in capsys.readouterr().out


def test_verify_repair_quarantines_without_training(run, capsys):
    shutil.copy(run / "chunk-00000.npz", run / "chunk-00002.npz")
    assert main(["verify", str(run)]) == 3
    out = capsys.readouterr().out
    assert f"{run}: chunk 2 is a copy of chunk 0" in out and "--repair" in out
    assert main(["verify", str(run), "--repair"]) == 0
    assert "1 damaged chunk(s) moved to" in capsys.readouterr().out
    assert not (run / "chunk-00002.npz").exists()
    assert len(list((run / "quarantine").iterdir())) == 1
    assert main(["verify", str(run)]) == 0
    assert "all 3 finished chunks intact (3/4 done)" in capsys.readouterr().out
    assert load_run(run).chunks_done == [0, 1, 3]


def test_chunk_of_another_run_is_foreign(run, tmp_path):
    other = tmp_path / "other"
    cfg = TrainConfig(**{**CFG.to_dict(), "seed": 1})
    run_training(cfg, other, chunk_size=2, progress=False)
    shutil.copy(other / "chunk-00000.npz", run / "chunk-00000.npz")
    with pytest.raises(DamagedRunError, match=r"chunk 0 (belongs to another run|was modif)"):
        load_run(run)
    # also when the manifest's hash is updated to match (a deliberate forgery):
    # the embedded fingerprint and the seeds still tell
    m = json.loads((run / "manifest.json").read_text())
    m["chunks"]["0"]["sha256"] = files._sha256_file(run / "chunk-00000.npz")
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DamagedRunError, match="chunk 0 belongs to another run"):
        load_run(run)
    with pytest.warns(UserWarning, match="chunk 0 belongs to another run"):
        run_training(CFG, run, progress=False)
    assert_reference(run)


def test_copied_chunk_without_hash_is_caught_by_its_content(run):
    """Manifests written before hashes were recorded: the chunk's own number,
    range and seeds are checked."""
    m = json.loads((run / "manifest.json").read_text())
    for c in m["chunks"].values():
        del c["sha256"]
    (run / "manifest.json").write_text(json.dumps(m))
    shutil.copy(run / "chunk-00002.npz", run / "chunk-00003.npz")
    with pytest.raises(DamagedRunError, match="chunk 3 is a copy of chunk 2"):
        load_run(run)
    snap = load_run(run, on_damaged="skip")
    assert snap.damaged == {3: "is a copy of chunk 2"} and snap.n_done == 6
    assert len(set(snap.seeds.tolist())) == 6          # no duplicated networks


def test_validator_rejects_wrong_seeds_before_storing(run):
    bad = dict(np.load(run / "chunk-00001.npz"))
    arrays = {k: v for k, v in bad.items() if not k.startswith("__")}
    arrays["seeds"] = network_seeds(0, 6, 8)
    validate = engine.chunk_validator(CFG)
    assert "not those of networks 2..3" in validate(1, 2, 4, arrays)
    with RunStore(run).open_writer(CFG.to_dict(), 8, validate=validate) as w:
        with pytest.raises(ValueError, match="refusing to store chunk 1"):
            w.write_chunk(1, arrays)


def test_edited_manifest_config_is_refused_naming_the_field(run, capsys):
    m = json.loads((run / "manifest.json").read_text())
    m["config"]["steps"] = 41
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"was edited \(steps: 40 \(chunks\) vs 41 "
                                            r"\(manifest\)\)"):
        load_run(run)
    assert main(["status", str(run)]) == 2
    one_line_error(capsys, "its config does not match its fingerprint", "steps: 40")
    assert main(["train", "--run", str(run), "--quiet"]) == 2
    one_line_error(capsys, "was edited")


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "holds a JSON list, not a run manifest"),
    ("{not json", "is not valid JSON"),
    ('{"format": "relunet-run/1"}', "has no valid 'config' field"),
])
def test_broken_manifest_is_one_line(run, text, message, capsys):
    (run / "manifest.json").write_text(text)
    assert main(["status", str(run)]) == 2
    one_line_error(capsys, message, "restore it")


# =============================================================================
# 5. One-line errors with the fix, no traceback
# =============================================================================
def _boom(config, start, stop, threads, bits=None):
    if start >= 4:
        raise RuntimeError("boom in the kernel")
    return engine._train_chunk(config, start, stop, threads, bits)


def test_exception_inside_a_chunk_is_one_line_with_resume(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(engine, "_chunk_task", _boom)
    run = tmp_path / "run"
    assert main(["train", "--run", str(run), "--chunk-size", "2", "--retries", "0"]
                + ARGS) == 1
    err = capfd.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("relunet: run ")]
    assert len(lines) == 1, err                     # no worker logs, no traceback
    assert lines[0].startswith("relunet: error: chunk 2 (networks 4..5) failed: "
                               "RuntimeError: boom in the kernel")
    assert f"resume with: relunet train --run {run}" in lines[0]
    assert load_run(run).chunks_done == [0, 1]


def test_failure_mapping_of_lost_workers_and_schedulers():
    from concurrent.futures import CancelledError

    from distributed.scheduler import KilledWorker
    e = faults.chunk_failure(KilledWorker("k", "w", 3), 3, 6, 8, "tcp://h:1", 2)
    assert isinstance(e, EngineError) and "chunk 3 (networks 6..7) killed its worker 3" in str(e)
    assert "lower --chunk-size" in str(e)
    e = faults.chunk_failure(CancelledError("k"), 0, 0, 2, "tcp://h:1", 2)
    assert "lost the dask scheduler at tcp://h:1" in str(e)
    e = faults.chunk_failure(ValueError("x\ny"), 0, 0, 2, "local", 2)
    assert str(e) == "chunk 0 (networks 0..1) failed: ValueError: x y"


@pytest.mark.slow
def test_killed_worker_is_one_line(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(engine, "_chunk_task", _die)
    assert main(["train", "--run", str(tmp_path / "r"), "--chunk-size", "4",
                 "--local-processes", "1", "--retries", "1"] + ARGS) == 1
    one_line_error(capfd, "(networks ", "killed its worker 2 or more times",
                   "lower --chunk-size")
    assert not (tmp_path / "r").exists()          # nothing trained: nothing left behind


def _die(config, start, stop, threads, bits=None):
    os._exit(3)


def test_scheduler_file_that_is_not_json(tmp_path, capsys):
    f = tmp_path / "sched.json"
    f.write_text("this is not json")
    assert main(["train", "--run", str(tmp_path / "r"), "--scheduler-file", str(f)]
                + ARGS) == 1
    one_line_error(capsys, "is not a dask scheduler file (not JSON")
    assert not (tmp_path / "r").exists()


def test_run_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["train", "--run", str(f)] + ARGS) == 2
    one_line_error(capsys, "is a file, not a run directory")
    assert main(["status", str(f)]) == 2
    one_line_error(capsys, "is a file, not a run directory")


def test_read_only_run(run, tmp_path, monkeypatch, capsys):
    # a finished run needs no writing at all
    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(run / ".lock"))
    monkeypatch.setattr(writer.RunWriter, "__init__", refuse)
    assert main(["train", "--run", str(run), "--quiet"]) == 0
    assert "progress     4/4 chunks" in capsys.readouterr().out
    monkeypatch.undo()
    # an unfinished one: one line with the fix and the resume command
    m = json.loads((run / "manifest.json").read_text())
    del m["chunks"]["3"]
    (run / "manifest.json").write_text(json.dumps(m))
    (run / "chunk-00003.npz").unlink()
    monkeypatch.setattr(engine.os, "access", lambda *a, **k: False)
    assert main(["train", "--run", str(run), "--quiet"]) == 1
    one_line_error(capsys, f"the run directory {run} is read-only", "chmod",
                   f"resume with: relunet train --run {run}")
    monkeypatch.undo()
    # the write itself fails (read-only file system found late)
    def no_tmp(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(run))
    monkeypatch.setattr(files.tempfile, "mkstemp", no_tmp)
    assert main(["train", "--run", str(run), "--quiet"]) == 1
    one_line_error(capsys, "is read-only", "resume with:")


def test_full_disk_is_one_line_with_resume(run, monkeypatch, capsys):
    m = json.loads((run / "manifest.json").read_text())
    del m["chunks"]["3"]
    (run / "manifest.json").write_text(json.dumps(m))
    (run / "chunk-00003.npz").unlink()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "x.tmp"))
    monkeypatch.setattr(files.tempfile, "mkstemp", full)
    assert main(["train", "--run", str(run), "--quiet"]) == 1
    one_line_error(capsys, "the disk is full", f"resume with: relunet train --run {run}")


def test_status_into_a_closed_pipe_is_quiet(trained):
    p = subprocess.run(f"{sys.executable} -m relunet.run.cli status {trained} | head -c 10",
                       shell=True, capture_output=True, text=True, timeout=60,
                       executable="/bin/bash")
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.stdout == "run       "


# -- a corrupt numba cache repairs itself ------------------------------------------
_CACHED = "from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x + 1.5\n"


def _import_fresh(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("suffix", [".nbi", ".nbc"])
def test_corrupt_numba_cache_file_is_deleted_and_recompiled(tmp_path, monkeypatch, suffix):
    import numba
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "cached_mod.py"
    src.write_text(_CACHED)
    assert _import_fresh(src, "cached_mod_a").f(1.0) == 2.5       # compiles, writes cache
    files = [p for p in (tmp_path / "cache").rglob(f"*{suffix}")]
    assert files
    for p in files:
        p.write_bytes(p.read_bytes()[:7])                          # truncated
    f = _import_fresh(src, "cached_mod_b").f
    with pytest.raises(Exception) as e:                            # numba itself fails
        f(1.0)
    bad = faults.numba_cache_files(e.value)
    assert bad and all(os.path.dirname(b) == os.path.dirname(str(files[0])) for b in bad)
    for p in files:
        p.write_bytes(p.read_bytes()[:7])
    f = _import_fresh(src, "cached_mod_c").f
    value, repaired = faults.self_repairing(lambda: f(1.0))
    assert value == 2.5 and repaired
    assert _import_fresh(src, "cached_mod_d").f(2.0) == 3.5        # the cache works again


@pytest.mark.slow
def test_corrupt_kernel_cache_repairs_itself_in_a_real_run(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "nc")}
    cmd = [sys.executable, "-m", "relunet.run.cli", "train", "--chunk-size", "4"] + ARGS
    p = subprocess.run(cmd + ["--run", str(tmp_path / "a")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    cache = sorted((tmp_path / "nc").rglob("*.nb[ic]"))
    assert any("relunet_fused" in f.name for f in cache)
    for f in cache[::2]:                               # garble every other cache file
        f.write_bytes(f.read_bytes()[:40])
    p = subprocess.run(cmd + ["--run", str(tmp_path / "b")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    chunks = RunStore(tmp_path / "b").manifest()["chunks"]
    assert chunks["0"]["repaired_numba_cache"]
    np.testing.assert_array_equal(load_run(tmp_path / "b").W, load_run(tmp_path / "a").W)


def test_unrepairable_numba_cache_is_one_line_naming_the_folder(tmp_path):
    class Index:
        _index_path = str(tmp_path / "k.nbi")
        _cache_path = str(tmp_path)

    def fail():
        def _load_index(self):        # a frame "in numba/core/caching.py"
            raise EOFError("Ran out of input")
        code = _load_index.__code__.replace(co_filename="/x/numba/core/caching.py")
        type(_load_index)(code, {})(Index())

    with pytest.raises(NumbaCacheError) as e:
        faults.self_repairing(fail)
    msg = str(e.value)
    assert f"clear the numba cache at {tmp_path}" in msg and "\n" not in msg


def _fake_cache_failure(index_path):
    """Raise EOFError from a frame that looks like numba's cache loader."""
    class Index:
        _index_path = str(index_path)
        _cache_path = os.path.dirname(str(index_path))

    def _load_index(self):
        raise EOFError("Ran out of input")
    code = _load_index.__code__.replace(co_filename="/x/numba/core/caching.py")
    type(_load_index)(code, {})(Index())


@pytest.mark.parametrize("failures", [1, 99])
def test_run_all_repairs_a_corrupt_numba_cache_or_says_what_to_clear(tmp_path, monkeypatch,
                                                                     capsys, failures):
    import dataclasses
    import types

    from relunet.run import runner

    @dataclasses.dataclass(frozen=True)
    class FakeConfig:
        scale: str

    bad = tmp_path / "nc" / "k.nbi"
    bad.parent.mkdir()
    calls = []

    def compute(cfg, ctx):
        calls.append(1)
        if len(calls) <= failures:
            bad.write_bytes(b"garbage")
            _fake_cache_failure(bad)
        return {"x": np.zeros(1)}

    mod = types.SimpleNamespace(NAME="fake", TITLE="a fake experiment", RESULT="fake",
                                config=FakeConfig,
                                compute=compute, plot=lambda cfg, ctx: [],
                                report=lambda cfg, ctx: "## fake\n")
    monkeypatch.setattr(runner, "registry", lambda: [mod])
    monkeypatch.setattr(runner, "_select", lambda only: [mod])
    monkeypatch.setattr(runner, "report_sections", lambda ctx, scale, fresh: [])
    rc = runner.main(["--scale", "smoke", "--store", str(tmp_path / "s"), "--figures",
                      str(tmp_path / "f"), "--no-progress"])
    out, err = capsys.readouterr()
    if failures == 1:
        assert rc == 0 and len(calls) == 2 and not bad.exists()
        assert f"repaired numba's cache: deleted {bad}" in out
    else:
        assert rc == 1 and len(calls) == 2
        (line,) = err.strip().splitlines()
        assert line.startswith("run_all.py: error: numba's cache is corrupt")
        assert f"clear the numba cache at {bad.parent}" in line
        assert "resume with: python run_all.py --scale smoke" in line


# =============================================================================
# 4. Ctrl-C: about a second, one line, the resume command
# =============================================================================
def _interrupt_after(cmd, wait_for, env=None):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 90
    while not wait_for() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)             # like a terminal: the whole group
    out, err = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - t0, out, err


def test_ctrl_c_of_run_all_inside_a_numba_kernel(tmp_path):
    store_dir = tmp_path / "store"
    cmd = [sys.executable, "run_all.py", "--scale", "smoke", "--only", "wide_10x10",
           "--store", str(store_dir), "--figures", str(tmp_path / "fig"), "--no-progress"]
    runs = store_dir / "runs"
    rc, dt, out, err = _interrupt_after(
        cmd, lambda: runs.is_dir() and any(runs.rglob("manifest.json")))
    assert rc == 130 and dt < 2.0, (rc, dt, err)
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"interrupted: everything finished so far is saved in {store_dir}/.",
        "resume with: python run_all.py " + " ".join(cmd[2:])]
    t = json.loads((store_dir / "timings-smoke.json").read_text())
    assert t["_partial"]["wide_10x10"] > 0        # the attempt's time is kept


def _processes_naming(text):
    """pids of the live processes whose command line contains ``text``."""
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the second lane")
def test_ctrl_c_stops_both_lanes_with_one_message(tmp_path):
    """ext_sensitivity needs nothing and nothing selected needs it: it runs in the second
    lane while wide_10x10 trains in the main one; Ctrl-C stops both at once, only the main
    lane speaks, and no process of the run is left behind."""
    store_dir = tmp_path / "store"
    cmd = [sys.executable, "run_all.py", "--scale", "smoke", "--only", "wide_10x10",
           "--only", "ext_sensitivity", "--store", str(store_dir), "--figures",
           str(tmp_path / "fig"), "--no-progress"]
    runs = store_dir / "runs"
    lane = store_dir / "ext_sensitivity" / "variants"      # the second lane's own stores
    rc, dt, out, err = _interrupt_after(
        cmd, lambda: lane.is_dir() and runs.is_dir() and any(runs.rglob("manifest.json")))
    assert rc == 130 and dt < 3.0, (rc, dt, err)
    assert "(second lane)" in out                   # it did run beside the main lane
    assert err.strip().splitlines() == [
        f"interrupted: everything finished so far is saved in {store_dir}/.",
        "resume with: python run_all.py " + " ".join(cmd[2:])], (out, err)
    deadline = time.monotonic() + 5
    while _processes_naming(str(store_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_naming(str(store_dir)) == []


@pytest.mark.slow
def test_ctrl_c_with_local_processes_is_quick_and_quiet(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "relunet.run.cli", "train", "--run", str(run),
           "--local-processes", "2", "--K", "2", "--N", "3", "--optimizer", "momentum",
           "--models", "8", "--chunk-size", "1", "--steps", "300000", "--quiet"]

    def first_chunk():
        m = run / "manifest.json"
        return m.is_file() and json.loads(m.read_text())["chunks"]
    rc, dt, out, err = _interrupt_after(cmd, first_chunk)
    assert rc == 130 and dt < 2.0, (rc, dt, err)
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert "Traceback" not in err and len(lines) == 3, err       # run line + 2 lines
    assert 1 <= len(RunStore(run).manifest()["chunks"]) < 8
    assert f"resume with: relunet train --run {run} --local-processes 2" in err


def test_timing_of_an_interrupted_experiment_is_not_lost(tmp_path):
    from relunet.experiments.frame import Context
    from relunet.run import runner
    ctx = Context(store=tmp_path, figures=tmp_path)
    runner.save_partial_timing(ctx, "smoke", "fig1_wf", 3.0)
    runner.save_partial_timing(ctx, "smoke", "fig1_wf", 1.5)
    assert runner.load_timings(ctx, "smoke") == {}
    assert runner._pending_timing(ctx, "smoke", "fig1_wf")
    # results were saved but the time was not: the next run records the sum
    assert runner.main(["--scale", "smoke", "--only", "fig1_wf", "--store", str(tmp_path),
                        "--figures", str(tmp_path / "fig"), "--no-progress"]) == 0
    t = runner.load_timings(ctx, "smoke")["fig1_wf"]
    assert t >= 4.5
    assert not runner._pending_timing(ctx, "smoke", "fig1_wf")
    assert "| fig1_wf | " in (tmp_path / "fig" / "REPORT.md").read_text()


# =============================================================================
# 6. Unbounded requests are refused up front, before any directory exists
# =============================================================================
@pytest.mark.parametrize("argv, message", [
    (["--steps", "1e15"], "steps must be at most 1e12"),
    (["--steps", "1e11", "--record-every", "1"], "would need"),
    (["--steps", "1000000000000"], "raise --record-every"),
    (["--models", "1e11"], "n_models must be at most 1e10"),
    (["--models", "1e9"], "use --chunk-size 10000 or more"),
    (["--models", "1e9", "--chunk-size", "10000"], "TiB on disk"),
    (["--models", "1e6", "--chunk-size", "100000", "--steps", "1e5", "--record-every", "1"],
     "lower --chunk-size to"),
    (["--retries", "-1"], "argument --retries"),
    (["--connect-timeout", "-1"], "argument --connect-timeout"),
    (["--scheduler", "tcp://127.0.0.1:99999"], "port '99999'"),
    (["--steps", "2.5"], "expected a whole number"),
])
def test_unbounded_or_bad_requests_are_one_line_and_create_nothing(argv, message, tmp_path,
                                                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    try:
        rc = main(["train", "--run", "r", "--quiet"] + argv)
    except SystemExit as e:                       # argparse: one line too
        rc = e.code
    assert rc == 2 and time.perf_counter() - t0 < 5
    one_line_error(capsys, message)
    assert os.listdir(tmp_path) == []


def test_disk_estimate_refuses_a_run_that_cannot_fit(tmp_path, monkeypatch):
    class Usage:
        free = 1000
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(ValueError, match=r"needs about .* on disk, only 1000 B free"):
        run_training(CFG, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_chunks_are_streamed_with_a_bounded_number_in_flight(tmp_path, monkeypatch):
    from distributed import Client
    submitted, stored, worst = [], [], []
    submit = Client.submit

    def spy(self, *a, **k):
        submitted.append(1)
        worst.append(len(submitted) - len(stored))
        return submit(self, *a, **k)

    write = writer.RunWriter.write_chunk

    def count(self, *a, **k):
        stored.append(1)
        return write(self, *a, **k)

    monkeypatch.setattr(Client, "submit", spy)
    monkeypatch.setattr(writer.RunWriter, "write_chunk", count)
    run_training(CFG, tmp_path, chunk_size=1, max_in_flight=3, progress=False)
    assert len(submitted) == 8 and max(worst) == 3
    assert_reference(tmp_path)


def test_failed_command_leaves_no_run_directory(tmp_path, capsys):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["train", "--run", str(tmp_path / "r"), "--scheduler",
                 f"tcp://127.0.0.1:{port}", "--connect-timeout", "0.5"] + ARGS) == 1
    one_line_error(capsys, "cannot reach the dask scheduler")
    assert not (tmp_path / "r").exists()


# =============================================================================
# 7. Smaller items
# =============================================================================
def test_status_json_is_strict_json(tmp_path, capsys):
    RunStore(tmp_path).open_writer(CFG.to_dict(), 8, chunk_size=4, kind="train").close()
    assert main(["status", str(tmp_path), "--json"]) == 0

    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    s = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert s["n_done"] == 0 and s["mean"] is None and s["quantiles"]["0.5"] is None


@pytest.mark.parametrize("opt, match", [
    ("Momentum(lr=1e39)", r"lr=1e\+39 rounds to inf"),
    ("Adadelta(eps=1e-50)", "eps=1e-50 rounds to 0.0"),
    ("Adadelta(rho=0.99999999999)", "rho=0.99999999999 rounds to 1.0"),
])
def test_hyper_parameters_are_checked_in_float32(opt, match):
    from relunet import optim
    from relunet.train import train_stack
    o = eval(opt, vars(optim))
    x, t = teacher_data(CFG)
    W0 = init_stack(CFG.arch, network_seeds(0, 0, 2))
    with pytest.raises(ValueError, match=match):
        train_stack(W0, CFG.arch, x, t, o, 5, dtype="float32")
    train_stack(W0, CFG.arch, x, t, o, 1, dtype="float64")   # valid in float64
    name, hyper = o.name, {k: v for k, v in o.as_dict().items() if k != "name"}
    with pytest.raises(ValueError, match=match):
        TrainConfig(optimizer=name, hyper=hyper, dtype="float32")


def test_train_stack_bad_dtype_is_a_value_error():
    from relunet.optim import Momentum
    from relunet.train import train_stack
    x, t = teacher_data(CFG)
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got 'foo'"):
        train_stack(init_stack(CFG.arch, network_seeds(0, 0, 1)), CFG.arch, x, t,
                    Momentum(), 5, dtype="foo")


def test_a_loss_grown_ten_billion_fold_counts_as_diverged():
    loss = np.array([0.1, 1e9, 0.2])
    history = np.array([[1.0, 0.5], [0.1, 1e5], [1.0, 0.4]])     # network 1 started at 0.1
    r = RunData(path=None, config=CFG, fingerprint="", index=np.arange(3), seeds=None,
                W=None, loss=loss, history=history, status=np.zeros(3, np.int8),
                steps_done=None, n_done=3, n_total=3)
    s = r.loss_summary(quantiles=(0.0, 1.0))
    assert s["n_diverged"] == 1 and s["n_grew"] == 1 and s["n_used"] == 2
    assert s["quantiles"] == {0.0: 0.1, 1.0: 0.2}


def test_every_chunk_is_trained_at_the_runs_width(tmp_path, monkeypatch):
    """A run records its vector width at creation; a chunk recomputed by a process (or
    a worker of a mixed cluster) whose own default differs uses the run's width, so
    the run stays bit-identical to one trained at that width throughout."""
    from relunet import fast
    from relunet.train import train_stack
    if fast.native_bits() != 512:
        pytest.skip("needs a CPU with both widths (AVX-512)")
    monkeypatch.setenv("RELUNET_VECTOR_BITS", "256")
    d = tmp_path / "run"
    run_training(CFG, d, chunk_size=2, progress=False)
    assert RunStore(d).manifest()["versions"]["vector_bits"] == 256
    (d / "chunk-00001.npz").unlink()
    monkeypatch.setenv("RELUNET_VECTOR_BITS", "512")      # this process now defaults to 512
    with pytest.warns(UserWarning, match="damaged chunk") as w:
        run_training(CFG, d, progress=False)
    assert not any("last bits" in str(x.message) for x in w)   # the width is the run's
    m = RunStore(d).manifest()
    assert m["chunks"]["1"]["vector_bits"] == 256
    x, t = teacher_data(CFG)
    W0 = init_stack(CFG.arch, network_seeds(CFG.seed, 0, CFG.n_models), CFG.dtype)
    ref = {b: train_stack(W0, CFG.arch, x, t, CFG.make_optimizer(), CFG.steps,
                          record_every=CFG.record_every, vector_bits=b) for b in (256, 512)}
    assert not np.array_equal(ref[256].W, ref[512].W)          # the widths differ here
    np.testing.assert_array_equal(load_run(d).W, ref[256].W)


def test_asyncio_orphaned_future_records_are_dropped_after_connect(caplog):
    """A Ctrl-C that tears down the dask cluster can leave futures whose exception
    asyncio logs as "Future exception was never retrieved" from the loop's thread, at
    times before the one-line interrupt message (the flake of the Ctrl-C test above):
    after connect() that record is dropped, and any other asyncio error still shows."""
    import logging

    from relunet.run.cluster import connect
    with connect():
        pass
    lg = logging.getLogger("asyncio")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        lg.error("Future exception was never retrieved\nfuture: <Future finished "
                 "exception=TimeoutError('Timeout')>")
        lg.error("Task was destroyed but it is pending!")
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == [
        "Task was destroyed but it is pending!"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the processes")
def test_a_second_lane_slow_to_exit_is_killed_after_its_grace(tmp_path):
    """runner._stop_lane: a lane that does not exit within LANE_GRACE of its SIGTERM (at
    low priority on a busy machine its exit took over 3 s in CI) is killed, with the
    processes it started, so that a Ctrl-C stays quick and leaves nothing behind."""
    from relunet.run import runner
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
            f"'{tmp_path}']); print('ready', flush=True); time.sleep(60)")
    lane = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert lane.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10                # the child may still be starting
    while len(_processes_naming(str(tmp_path))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_processes_naming(str(tmp_path))) == 2
    t0 = time.monotonic()
    runner._stop_lane(lane)
    dt = time.monotonic() - t0
    assert lane.returncode == -signal.SIGKILL
    assert runner.LANE_GRACE <= dt < runner.LANE_GRACE + 2.0, dt
    deadline = time.monotonic() + 5
    while _processes_naming(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_naming(str(tmp_path)) == []
