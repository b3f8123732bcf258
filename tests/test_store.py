"""The result store: atomic files, named arrays, chunked runs read while written."""
import hashlib
import json
import threading

import numpy as np
import pytest

from relunet.run import files as st
from relunet.run.files import atomic_write, config_diff, fingerprint
from relunet.run.store import MAX_CHUNKS, DamagedRunError, RunStore, Store


def _listing(d):
    return sorted(p.name for p in d.iterdir())


# -- atomic files ---------------------------------------------------------------
def test_atomic_write_failure_mid_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write(p, lambda f: f.write(b"old contents"))

    def half_then_fail(f):
        f.write(b"new, but only ha")
        raise KeyboardInterrupt          # e.g. Ctrl-C in the middle of np.savez

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, half_then_fail)
    assert p.read_bytes() == b"old contents"
    assert _listing(tmp_path) == ["a.bin"]   # the temporary file is gone


def test_atomic_write_failing_rename_leaves_nothing_new(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(st.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        st.atomic_save_npz(tmp_path / "x.npz", {"a": np.arange(3)})
    assert _listing(tmp_path) == []


def test_fingerprint_is_sha256_of_canonical_json():
    # canonical form written out by hand: sorted keys, no spaces, repr floats
    expected = hashlib.sha256(b'{"a":1,"b":{"lr":0.001,"rho":0.95},"c":[1.5,2]}').hexdigest()
    assert fingerprint({"c": [1.5, 2], "b": {"rho": 0.95, "lr": 1e-3}, "a": 1}) == expected
    assert fingerprint({"a": 1}) != fingerprint({"a": 1.0000000000000002})


def test_config_diff_names_nested_fields_with_both_values():
    old = {"steps": 100, "hyper": {"lr": 1.0, "rho": 0.95}, "K": 5}
    new = {"steps": 200, "hyper": {"lr": 1.0, "rho": 0.9}, "K": 5, "extra": "x"}
    assert config_diff(old, new) == [
        "extra: '<absent>' (stored) vs 'x' (new)",
        "hyper.rho: 0.95 (stored) vs 0.9 (new)",
        "steps: 100 (stored) vs 200 (new)"]


# -- named arrays ---------------------------------------------------------------
def test_store_round_trip_exact(tmp_path, rng):
    s = Store(tmp_path / "results")
    a = rng.standard_normal((3, 4))
    b = np.arange(5, dtype=np.int8)
    assert not s.has("fig3/losses")
    s.save_array("fig3/losses", a=a, b=b)
    assert s.has("fig3/losses")
    got = s.load_array("fig3/losses")
    assert sorted(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"], a)
    assert got["b"].dtype == np.int8 and np.array_equal(got["b"], b)
    s.save_json("fig3/config", {"n": 3, "lr": 0.5})
    assert s.load_json("fig3/config") == {"n": 3, "lr": 0.5}
    assert _listing(tmp_path / "results" / "fig3") == ["config.json", "losses.npz"]


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a b", ""])
def test_store_rejects_bad_names(tmp_path, bad):
    with pytest.raises(ValueError, match="name must be"):
        Store(tmp_path).save_array(bad, a=np.zeros(1))


def test_store_missing_name_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no stored arrays named 'nope'"):
        Store(tmp_path).load_array("nope")


# -- chunked runs ---------------------------------------------------------------
CFG = {"steps": 100, "hyper": {"lr": 0.5}, "seed": 0}


def _chunk(start, stop):
    """Arrays of a fake chunk whose values encode the item numbers."""
    i = np.arange(start, stop)
    return {"W": np.stack([i, 2 * i], axis=1).astype(float), "status": (i % 3 == 0).astype(np.int8)}


def test_run_layout_round_trip_and_manifest(tmp_path):
    with RunStore(tmp_path / "r").open_writer(CFG, n_items=10, chunk_size=4) as w:
        # 10 items in chunks of 4: [0,4) [4,8) [8,10)
        assert [w.chunk_range(i) for i in range(w.n_chunks)] == [(0, 4), (4, 8), (8, 10)]
        assert w.todo() == [0, 1, 2]
        for i in (2, 0, 1):                       # out of order, as futures complete
            w.write_chunk(i, _chunk(*w.chunk_range(i)), {"seconds": 1.5})
    run = RunStore(tmp_path / "r")
    m = run.manifest()
    assert m["fingerprint"] == fingerprint(CFG) and m["config"] == CFG
    assert m["chunks"]["2"]["seconds"] == 1.5 and m["chunks"]["2"]["file"] == "chunk-00002.npz"
    assert set(m["versions"]) == {"relunet", "numpy", "numba", "vector_bits"}
    assert m["versions"]["vector_bits"] in (256, 512)
    snap = run.load()
    assert snap.complete and snap.n_done == 10 and snap.chunks_done == [0, 1, 2]
    np.testing.assert_array_equal(snap.index, np.arange(10))
    np.testing.assert_array_equal(snap.arrays["W"], _chunk(0, 10)["W"])
    np.testing.assert_array_equal(snap.arrays["status"], _chunk(0, 10)["status"])
    assert "__fingerprint__" not in snap.arrays
    assert _listing(tmp_path / "r") == [".lock", "chunk-00000.npz", "chunk-00001.npz",
                                        "chunk-00002.npz", "manifest.json"]


def test_different_config_is_refused_naming_fields(tmp_path):
    RunStore(tmp_path).open_writer(CFG, n_items=10, chunk_size=4).close()
    new = {**CFG, "hyper": {"lr": 0.25}}
    with pytest.raises(ValueError, match=r"hyper\.lr: 0\.5 \(stored\) vs 0\.25 \(new\)"):
        RunStore(tmp_path).open_writer(new, n_items=10)
    with pytest.raises(ValueError, match="n_items=10, got 12"):
        RunStore(tmp_path).open_writer(CFG, n_items=12)


def test_resume_keeps_done_chunks_and_layout(tmp_path):
    with RunStore(tmp_path).open_writer(CFG, n_items=10, chunk_size=4) as w:
        w.write_chunk(1, _chunk(4, 8))
    with pytest.warns(UserWarning, match="chunk_size=4; keeping it"):
        w = RunStore(tmp_path).open_writer(CFG, n_items=10, chunk_size=2)
    with w:
        assert w.chunk_size == 4 and w.done() == [1] and w.todo() == [0, 2]


def test_one_writer_at_a_time(tmp_path):
    with RunStore(tmp_path).open_writer(CFG, n_items=4, chunk_size=2):
        with pytest.raises(RuntimeError, match="another process is writing"):
            RunStore(tmp_path).open_writer(CFG, n_items=4)
    RunStore(tmp_path).open_writer(CFG, n_items=4).close()   # free again


def test_write_chunk_checks_rows(tmp_path):
    with RunStore(tmp_path).open_writer(CFG, n_items=10, chunk_size=4) as w:
        with pytest.raises(ValueError, match="must have 2 rows"):
            w.write_chunk(2, {"W": np.zeros((4, 2))})


def test_reader_sees_only_listed_chunks_and_writer_adopts_orphans(tmp_path):
    with RunStore(tmp_path).open_writer(CFG, n_items=10, chunk_size=4) as w:
        w.write_chunk(2, _chunk(8, 10))
        # a kill between "chunk file written" and "manifest updated":
        st.atomic_save_npz(tmp_path / "chunk-00000.npz",
                           {**_chunk(0, 4), "__fingerprint__": w.fingerprint, "__chunk__": 0})
        (tmp_path / "chunk-00001.npz").write_bytes(b"garbage")      # not ours
        (tmp_path / ".chunk-00001.npz.abc.tmp").write_bytes(b"partial")
    snap = RunStore(tmp_path).load()
    assert snap.n_done == 2 and snap.n_total == 10 and not snap.complete
    np.testing.assert_array_equal(snap.index, [8, 9])
    np.testing.assert_array_equal(snap.arrays["W"], _chunk(8, 10)["W"])
    with RunStore(tmp_path).open_writer(CFG, n_items=10) as w:
        assert w.done() == [0, 2] and w.manifest["chunks"]["0"]["adopted"] is True
    assert _listing(tmp_path) == [".lock", "chunk-00000.npz", "chunk-00002.npz",
                                  "manifest.json"]
    np.testing.assert_array_equal(RunStore(tmp_path).load().index, [0, 1, 2, 3, 8, 9])


def test_concurrent_reader_always_sees_a_consistent_run(tmp_path):
    n_items, cs = 60, 3
    w = RunStore(tmp_path).open_writer(CFG, n_items=n_items, chunk_size=cs)
    seen, errors = [], []

    def read():
        while not seen or seen[-1] < n_items:
            try:
                snap = RunStore(tmp_path).load()
                if snap.n_done == 0:
                    assert snap.arrays == {} and snap.index.size == 0
                    continue
                # values encode the item numbers: consistent iff they match the index
                assert snap.arrays["W"].shape[0] == snap.index.size == snap.n_done
                np.testing.assert_array_equal(snap.arrays["W"][:, 0], snap.index)
                seen.append(snap.n_done)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
                return

    t = threading.Thread(target=read)
    t.start()
    with w:
        for i in reversed(range(w.n_chunks)):
            w.write_chunk(i, _chunk(*w.chunk_range(i)))
    t.join(timeout=30)
    assert not errors, errors[0]
    assert seen[-1] == n_items and len(seen) >= 2
    assert seen == sorted(seen)               # progress never goes backwards


def test_manifest_is_valid_json_on_disk(tmp_path):
    RunStore(tmp_path).open_writer(CFG, n_items=3, chunk_size=2).close()
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["format"] == "relunet-run/1" and m["n_chunks"] == 2 and m["chunks"] == {}


# -- verification of what is read back -----------------------------------------------
def test_chunk_files_carry_their_identity_and_the_manifest_their_hash(tmp_path):
    with RunStore(tmp_path).open_writer(CFG, n_items=10, chunk_size=4) as w:
        w.write_chunk(1, _chunk(4, 8))
    z = np.load(tmp_path / "chunk-00001.npz")
    assert str(z["__fingerprint__"]) == fingerprint(CFG) and int(z["__chunk__"]) == 1
    assert (int(z["__start__"]), int(z["__stop__"])) == (4, 8)
    assert json.loads(str(z["__config__"])) == CFG
    entry = RunStore(tmp_path).manifest()["chunks"]["1"]
    assert entry["sha256"] == hashlib.sha256((tmp_path / "chunk-00001.npz").read_bytes()
                                             ).hexdigest()


def test_writer_quarantines_a_damaged_chunk_and_records_why(tmp_path):
    with RunStore(tmp_path).open_writer(CFG, n_items=10, chunk_size=4) as w:
        for i in range(3):
            w.write_chunk(i, _chunk(*w.chunk_range(i)))
    (tmp_path / "chunk-00002.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DamagedRunError, match=r"chunk 2 was modified or replaced"):
        RunStore(tmp_path).load()
    snap = RunStore(tmp_path).load(on_damaged="skip")
    assert snap.chunks_done == [0, 1] and list(snap.damaged) == [2] and snap.n_done == 8
    with pytest.warns(UserWarning, match="1 damaged chunk"):
        w = RunStore(tmp_path).open_writer(CFG, n_items=10)
    with w:
        assert w.todo() == [2] and w.quarantined == {2: snap.damaged[2]}
        w.write_chunk(2, _chunk(8, 10))
    m = RunStore(tmp_path).manifest()
    (q,) = m["quarantined"]
    assert q["chunk"] == 2 and (tmp_path / q["file"]).read_bytes() == b"PK\x03\x04 truncated"
    np.testing.assert_array_equal(RunStore(tmp_path).load().arrays["W"], _chunk(0, 10)["W"])


def test_too_many_chunks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="use chunks of at least 11"):
        RunStore(tmp_path).open_writer(CFG, n_items=MAX_CHUNKS * 10 + 1, chunk_size=1)
