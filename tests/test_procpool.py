"""relunet.procpool: tasks in worker processes, results in task order, errors named."""
import math
import os

import numpy as np
import pytest

from relunet.procpool import run_tasks


def test_results_in_task_order_from_separate_processes():
    seen = []
    out = run_tasks(math.pow, [(2.0, k) for k in range(7)], 2, on_done=seen.append)
    assert out == [2.0 ** k for k in range(7)]
    assert sorted(seen) == list(range(7))
    pids = run_tasks(os.getpid, [()] * 4, 2)
    assert os.getpid() not in pids and 1 <= len(set(pids)) <= 2
    big = run_tasks(np.cumsum, [(np.arange(100_000.0),)], 1)[0]   # arrays of MBs travel
    np.testing.assert_array_equal(big, np.cumsum(np.arange(100_000.0)))


def test_errors_name_the_task():
    with pytest.raises(RuntimeError, match="task 1 of sqrt: ValueError: math domain error"):
        run_tasks(math.sqrt, [(4.0,), (-1.0,)], 1)
    with pytest.raises(ValueError, match="workers"):
        run_tasks(math.sqrt, [(4.0,)], 0)
    assert run_tasks(math.sqrt, [], 2) == []
