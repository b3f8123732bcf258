"""Run machinery: configs, the dask engine, the crash-safe store, the command lines.

Nothing here is needed to read the science (``relunet.kernels``,
``relunet.train``, ...); it is what lets 320,000 trainings survive a kill.

==============  ==============================================================
``config``      the two config types: :class:`TrainConfig` (what is trained:
                its fingerprint names the run) and :class:`EngineOptions`
                (how); seeds; the store root and the run-directory rule
``flags``       command-line flags read off those config types (both CLIs)
``engine``      :func:`run_training`: chunks of networks as dask tasks
``cluster``     a dask client for the chosen engine
``faults``      one-line failures, numba-cache repair, interrupts in a second
``files``       atomic files; fingerprints; the one naming rule
``store``       named arrays (:class:`Store`) and chunked runs (:class:`RunStore`)
``writer``      the single writer of a run (lock, manifest, quarantine)
``rundata``     :func:`load_run`: a run's networks, verified
``cli``         ``relunet train | status | verify``
``runner``      ``run_all.py``: every experiment, resumably
==============  ==============================================================
"""
from .config import DEFAULT_STORE, EngineOptions, TrainConfig, network_seeds, run_dir, teacher_data
from .engine import run_training
from .faults import EngineError, NumbaCacheError
from .rundata import RunData, load_run
from .store import DamagedRunError, ManifestError, RunStore, Store

__all__ = ["TrainConfig", "EngineOptions", "DEFAULT_STORE", "run_dir", "network_seeds",
           "teacher_data", "run_training", "load_run", "RunData", "Store", "RunStore",
           "EngineError", "NumbaCacheError", "DamagedRunError", "ManifestError"]
