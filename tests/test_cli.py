"""The command line: train/status, kills and resumes, clean errors.

Kills are made reliable by waiting until the manifest lists a first finished
chunk, and each test checks that the kill really landed mid-run.
"""
import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from relunet.net import init_stack
from relunet.run import TrainConfig, load_run, network_seeds, teacher_data
from relunet.run.cli import main

STEPS = 100_000     # about 0.3 s per chunk of two 2x3 networks here: a wide kill window
ARGS = ["--K", "2", "--N", "3", "--optimizer", "momentum", "--models", "16",
        "--chunk-size", "2", "--steps", str(STEPS), "--record-every", "10000", "--quiet"]
CFG = TrainConfig(K=2, N=3, optimizer="momentum", n_models=16, steps=STEPS,
                  record_every=10_000)
N_CHUNKS = 8


@functools.lru_cache(maxsize=1)
def reference_W():
    """Weights of all 16 networks from one direct train_stack call."""
    from relunet.train import train_stack
    x, t = teacher_data(CFG)
    W0 = init_stack(CFG.arch, network_seeds(CFG.seed, 0, CFG.n_models))
    return train_stack(W0, CFG.arch, x, t, CFG.make_optimizer(), CFG.steps,
                       record_every=CFG.record_every).W


def start_and_wait_for_first_chunk(run_dir):
    proc = subprocess.Popen([sys.executable, "-m", "relunet.run.cli", "train", "--run",
                             str(run_dir)] + ARGS, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    manifest = run_dir / "manifest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text())["chunks"]:
            return proc
        time.sleep(0.02)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"no chunk finished within 60 s (rc {proc.returncode}): {err[-2000:]}")


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(tmp_path):
    run = tmp_path / "run"
    proc = start_and_wait_for_first_chunk(run)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = load_run(run).chunks_done
    assert 1 <= len(done) < N_CHUNKS, "the kill must land mid-run"
    # re-run with nothing but the run directory: the stored config is used
    assert main(["train", "--run", str(run), "--quiet"]) == 0
    r = load_run(run)
    assert r.complete and r.config == CFG
    np.testing.assert_array_equal(r.W, reference_W())


def test_sigterm_exits_143_with_resume_command_and_a_resumable_store(tmp_path, capsys):
    run = tmp_path / "run"
    proc = start_and_wait_for_first_chunk(run)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert f"resume with: relunet train --run {run}\n" in err
    k = len(load_run(run).chunks_done)
    assert 1 <= k < N_CHUNKS
    assert main(["status", str(run)]) == 0
    assert f"progress     {k}/{N_CHUNKS} chunks, {2 * k}/16 networks" in capsys.readouterr().out
    assert main(["train", "--run", str(run), "--quiet"]) == 0
    np.testing.assert_array_equal(load_run(run).W, reference_W())


def test_status_reports_progress_and_loss_quantiles(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--K", "2", "--N", "3", "--optimizer", "momentum", "--models", "6",
            "--chunk-size", "4", "--steps", "50", "--record-every", "10", "--quiet"]
    assert main(["train", "--run", str(run)] + args) == 0
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    loss = load_run(run).loss
    assert "progress     2/2 chunks, 6/6 networks (100.0%)" in out
    assert (f"over 6 networks (0 diverged, excluded): min {loss.min():.6g}" in out
            and f"median {np.median(loss):.6g}" in out and f"max {loss.max():.6g}" in out)
    assert main(["status", str(run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_done"] == 6 and s["chunks_done"] == 2 and s["n_diverged"] == 0
    assert s["quantiles"]["0.5"] == pytest.approx(np.median(loss), rel=1e-15)
    # a different config on the same run directory: one line naming the field
    assert main(["train", "--run", str(run), "--steps", "51", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps: 50 (stored) vs 51 (new)" in err[0]


@pytest.mark.parametrize("argv, code, message", [
    (["train", "--optimizer", "momentum", "--rho", "0.9"], 2,
     "--rho does not apply to optimizer momentum (it takes --lr, --momentum)"),
    (["train", "--models", "0"], 2, "n_models must be an integer >= 1"),
    (["train", "--heights", "0,1"], 2, "heights must be 4 finite numbers"),
    (["status", "does-not-exist"], 1, "is not a run directory"),
])
def test_bad_arguments_are_one_line_errors(argv, code, message, capsys, tmp_path,
                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("relunet: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []          # nothing was created


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--optimizer", "sgd"])
    assert e.value.code == 2 and "invalid choice: 'sgd'" in capsys.readouterr().err


def test_unreachable_scheduler_is_one_line_not_a_traceback(tmp_path, capsys):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    rc = main(["train", "--run", str(tmp_path / "r"), "--models", "2", "--steps", "5",
               "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1"])
    assert rc == 1 and time.perf_counter() - t0 < 8
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"relunet: error: cannot reach the dask scheduler at "
                           f"tcp://127.0.0.1:{port}")
    assert "Traceback" not in err
