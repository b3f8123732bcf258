"""The README's Python examples run as written, and what their comments state holds.

Every ```python block of README.md is executed, in order, in one namespace (as
a reader pasting them into one session would). The comments that state a
value are then checked: exactly where the README gives an exact value (shapes,
counts, ``136 341 [0.]``), to the printed digits where it writes ``~``. The
training example (256 students, 5,000 Adadelta steps) takes a few seconds
once the fused kernel is compiled, so it runs in full here.
"""
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def block_with(blocks: list[str], code: str) -> int:
    """Index of the one block with a line containing ``code``."""
    hits = [i for i, b in enumerate(blocks) if code in b]
    assert len(hits) == 1, f"README: expected one block with {code!r}, found {len(hits)}"
    return hits[0]


def stated(blocks: list[str], code: str) -> str:
    """The comment on the README line that contains ``code`` (unique)."""
    hits = [ln for b in blocks for ln in b.splitlines() if code in ln.split("#")[0]]
    assert len(hits) == 1, f"README: expected one line with {code!r}, found {hits}"
    assert "#" in hits[0], f"README: no comment on {hits[0]!r}"
    return hits[0].split("#", 1)[1].strip()


@pytest.fixture(scope="module")
def blocks():
    found = python_blocks(README.read_text(encoding="utf-8"))
    assert found, "README.md has no ```python block"
    return found


def test_readme_examples_run_and_their_comments_hold(blocks, capsys):
    ns = {"__name__": "__readme__"}
    printed = []
    for i, src in enumerate(blocks, 1):
        exec(compile(src, f"README.md python block {i}", "exec"), ns)
        printed.append(capsys.readouterr().out)
    out = "".join(printed)

    # W_f, its training set and its loss of exactly zero
    w, x = ns["w"], ns["x"]
    assert stated(blocks, "w = build_wf()").startswith(f"{w.shape} ")
    assert stated(blocks, "x, t = wf_training_set()").startswith(f"{x.size} points")
    line = stated(blocks, "print(WF_ARCH.P")
    assert line == "136 341 [0.]"                    # what the README shows
    assert line in out.splitlines()                  # ... is what it prints
    assert np.all(ns["relunet"].loss(w, ns["WF_ARCH"], x, ns["t"], kernel="plain") == 0.0)

    # one kernel call for a stack of 1,000 networks: the shapes stated
    W, loss, grad = ns["W"], ns["loss"], ns["grad"]
    assert stated(blocks, "W = relunet.init_stack").startswith(f"{W.shape}, ")
    assert stated(blocks, "loss, grad = relunet.loss_and_grad") == f"{loss.shape}, {grad.shape}"

    # training 256 students: best MSE ~0.15 (to the digits shown), 0 diverged (exact)
    m = re.fullmatch(r"best MSE ~([0-9.]+) \(W_f has 0\); (\d+) diverged",
                     stated(blocks, "print(r.loss.min()"))
    assert m, "README: the training example's comment changed; update this test"
    approx, diverged = m.group(1), int(m.group(2))
    r = ns["r"]
    best, n_bad = printed[block_with(blocks, "print(r.loss.min()")].split()
    assert float(best) == r.loss.min() and int(n_bad) == r.status.sum()
    digits = len(approx.split(".")[1])
    assert abs(float(best) - float(approx)) <= 0.5 * 10.0 ** -digits, (best, approx)
    assert int(n_bad) == diverged
    assert len(r.loss) == 256
