"""Regenerate every figure of Gamst & Walker (2017) and figures/REPORT.md.

    python run_all.py                      # default scale, embedded engine
    python run_all.py --scale smoke        # seconds
    python run_all.py --scale paper --scheduler tcp://HOST:8786

See ``python run_all.py --help`` and relunet/run/runner.py.
"""
import sys

from relunet.run.runner import main

if __name__ == "__main__":
    sys.exit(main())
