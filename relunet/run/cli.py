"""Command line of relunet: ``relunet SUBCOMMAND ...`` (``python -m relunet.run.cli``).

Subcommands live in :data:`COMMANDS` (name -> (help, add_arguments, run));
add one by writing those two small functions and a line in the table.

* ``relunet train``: train students of the paper's teacher W_f (Gamst & Walker
  2017, Sec. 3) into a run directory, resumably
  (``relunet.run.engine.run_training``); its flags are read off
  ``TrainConfig`` and ``EngineOptions`` (:mod:`relunet.run.flags`).
  Ctrl-C or SIGTERM stops within about a second (with the embedded engine
  and with local worker processes), prints the command
  that resumes, and exits with 130 (SIGINT) or 143 (SIGTERM). Every finished
  chunk is already stored; chunks in flight are abandoned. A numba call cannot
  be interrupted, so every command runs in a worker thread while the main
  thread waits for the signal, then stops local worker processes and leaves
  at once (``relunet.run.faults.hard_exit``); the store's atomic writes make that safe.
* ``relunet status RUN``: progress and a final-loss summary of a run (also
  while it is being written), and any damaged or quarantined chunks.
* ``relunet verify RUN [--repair]``: check every chunk of a run (file hash,
  fingerprint, item range, seeds); ``--repair`` moves damaged chunks to
  ``RUN/quarantine/`` so that ``train`` computes them again.

Every expected failure is one line ``relunet: error: <cause>: <fix>`` (with
the resume command where there is something to resume), never a traceback.
Exit codes (:data:`EXIT_CODES`):

* 0: done;
* 1: the environment failed: cluster unreachable or lost, a worker killed, a
  chunk raised, disk full, a read-only run directory, a corrupt numba cache;
* 2: bad arguments or a run that does not match them (argparse's code too);
* 3: ``status``/``verify``: the run has damaged chunks (``train`` retrains
  them);
* 130 / 143: stopped by SIGINT (Ctrl-C) / SIGTERM within about a second; all
  finished chunks are saved and the resume command is printed;
* 141: standard output was closed early (e.g. ``relunet status RUN | head``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path

from ..optim import make_optimizer
from .cluster import quiet_logs
from .config import DEFAULT_STORE, HYPER, EngineOptions, TrainConfig
from .config import run_dir as run_dir_of
from .engine import chunk_validator, run_training
from .faults import EngineError, NumbaCacheError, run_interruptibly
from .flags import add_flags, given
from .rundata import load_run
from .store import ManifestError, RunStore

__all__ = ["main", "COMMANDS", "EXIT_CODES"]

EXIT_CODES = {"ok": 0, "failed": 1, "usage": 2, "damaged": 3, "SIGINT": 130,
              "broken pipe": 141, "SIGTERM": 143}


class CommandError(Exception):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# =============================================================================
# relunet train
# =============================================================================
def _add_train(p: argparse.ArgumentParser) -> None:
    g = add_flags(p, TrainConfig, "what to train (default: the stored config of --run, "
                                  "else the defaults shown)")
    for name in HYPER:                          # the optimizers' own defaults, per optimizer
        defaults = ", ".join(f"{o} {h[name]:g}" for o in ("adadelta", "momentum")
                             for h in [make_optimizer(o).as_dict()] if name in h)
        g.add_argument(f"--{name}", type=float, help=f"optimizer hyper-parameter {name} "
                                                     f"(default {defaults})")
    w = p.add_argument_group("where").add_mutually_exclusive_group()
    w.add_argument("--store", metavar="ROOT",
                   help=f"store root: the run goes to ROOT/runs/<teacher>-<optimizer>-<K>x<N>-"
                        f"<key> (default {DEFAULT_STORE}, or $RELUNET_STORE)")
    w.add_argument("--run", metavar="DIR", help="this run directory (resumes it if it exists)")
    add_flags(p, EngineOptions, "how (never changes the results)")


def _config_from_args(args) -> TrainConfig:
    """Stored config of --run (if any) or the defaults, with the given flags applied."""
    base = TrainConfig()
    if args.run and RunStore(args.run).exists():
        base = TrainConfig.from_dict(RunStore(args.run).manifest()["config"])
    over = given(args, TrainConfig)
    # fields that belong to another field's value start from scratch when it changes
    for name, dependent in (("teacher", "heights"), ("init", "init_radius")):
        if name in over and over[name] != getattr(base, name):
            over.setdefault(dependent, None)
    optimizer = over.get("optimizer", base.optimizer)
    hyper = dict(base.hyper) if optimizer == base.optimizer else {}
    takes = [k for k in make_optimizer(optimizer).as_dict() if k != "name"]
    for name in HYPER:
        v = getattr(args, name)
        if v is not None:
            if name not in takes:
                raise ValueError(f"--{name} does not apply to optimizer {optimizer} "
                                 f"(it takes {', '.join('--' + k for k in takes)})")
            hyper[name] = v
    return dataclasses.replace(base, **over, hyper=tuple(hyper.items()))


def _resume_command(run_dir, engine: EngineOptions) -> str:
    return shlex.join(["relunet", "train", "--run", str(run_dir)] + engine.flags())


def _saved(run_dir: Path) -> str:
    """'k/n chunks (i/N networks)' from the manifest alone (fast, no verification)."""
    try:
        m = RunStore(run_dir).manifest()
    except Exception:  # noqa: BLE001 -- nothing (readable) saved
        return "nothing"
    done = sum(c["stop"] - c["start"] for c in m["chunks"].values())
    return f"{len(m['chunks'])}/{m['n_chunks']} chunks ({done}/{m['n_items']} networks)"


def _os_error(e: OSError, run_dir: Path, resume: str) -> CommandError:
    where = e.filename or run_dir
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CommandError(f"the run directory {run_dir} is read-only (cannot write "
                            f"{where}): make it writable (chmod -R u+w {run_dir}) or copy it "
                            f"elsewhere, then resume with: {resume}")
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return CommandError(f"the disk is full (writing {where}); finished chunks are "
                            f"saved: free some space, then resume with: {resume}")
    return CommandError(f"{e.strerror or type(e).__name__}: {where}; resume with: {resume}")


def _train(args) -> int:
    cfg = _config_from_args(args)
    engine = EngineOptions(**given(args, EngineOptions))
    run_dir = Path(args.run) if args.run else run_dir_of(args.store or DEFAULT_STORE, cfg)
    if RunStore(run_dir).exists():
        RunStore(run_dir).check_config(cfg.to_dict())
    print(f"relunet: run {run_dir}: {cfg.describe()}", file=sys.stderr)
    resume = _resume_command(run_dir, engine)

    def on_interrupt() -> int:
        signum = _Signals.received or signal.SIGINT
        print(f"\nrelunet: stopped by {signal.Signals(signum).name}: {_saved(run_dir)} saved "
              f"in {run_dir}. Chunks in flight were abandoned (a running numba call cannot "
              f"be interrupted mid-chunk; their work is lost).\nresume with: {resume}",
              file=sys.stderr)
        return 128 + int(signum)

    def work():
        run_training(cfg, run_dir, **engine.kwargs())

    _Signals.on_interrupt = on_interrupt      # main() waits in the main thread
    try:
        with quiet_logs():
            work()
    except (EngineError, NumbaCacheError) as e:
        done = _saved(run_dir)
        raise CommandError(f"{e}; {done} saved; resume with: {resume}"
                           if RunStore(run_dir).exists() else str(e)) from None
    except OSError as e:
        raise _os_error(e, run_dir, resume) from None
    _print_status(run_dir)
    return 0


# =============================================================================
# relunet status / verify
# =============================================================================
def _add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _status(args) -> int:
    r = _print_status(Path(args.run), as_json=args.json)
    return EXIT_CODES["damaged"] if r.damaged else 0


def _finite_or_none(obj):
    """JSON has no NaN: map non-finite floats to null, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def _print_status(run_dir: Path, as_json: bool = False):
    r = load_run(run_dir, on_damaged="skip")
    s = r.loss_summary()
    quarantined = RunStore(run_dir).manifest().get("quarantined", [])
    if as_json:
        print(json.dumps(_finite_or_none({
            "run": str(run_dir), "fingerprint": r.fingerprint, "config": r.config.to_dict(),
            "chunks_done": len(r.chunks_done), "n_chunks": r.n_chunks,
            "damaged": {str(i): why for i, why in r.damaged.items()},
            "quarantined": quarantined, **s}), indent=1, allow_nan=False))
        return r
    print(f"run          {run_dir}")
    print(f"config       {r.config.describe()}")
    print(f"fingerprint  {r.fingerprint}")
    print(f"progress     {len(r.chunks_done)}/{r.n_chunks} chunks, {r.n_done}/{r.n_total} "
          f"networks ({100.0 * r.n_done / r.n_total:.1f}%)")
    if r.damaged:
        print(f"damaged      {len(r.damaged)} chunk(s) left out, trained again by "
              f"`relunet train --run {run_dir}`: "
              + "; ".join(f"chunk {i} {why}" for i, why in sorted(r.damaged.items())))
    for q in quarantined:
        print(f"quarantined  chunk {q['chunk']} on {q['when']} ({q['reason']}), "
              f"moved to {q['file'] or 'nowhere (file missing)'}, trained again")
    if r.n_done == 0:
        print("final loss   no finished networks yet")
        return r
    q = s["quantiles"]
    names = {0.0: "min", 0.5: "median", 1.0: "max"}
    qs = "  ".join(f"{names.get(k, f'q{100 * k:g}')} {v:.6g}" for k, v in q.items())
    grew = f", {s['n_grew']} of them ended above their start" if s["n_grew"] else ""
    print(f"final loss   over {s['n_used']} networks ({s['n_diverged']} diverged{grew}, "
          f"excluded): {qs}  mean {s['mean']:.6g}")
    return r


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--repair", action="store_true",
                   help="move damaged chunks to RUN/quarantine/ so that `relunet train` "
                        "computes them again")


def _verify(args) -> int:
    run = RunStore(args.run)
    m = run.manifest()
    validate = chunk_validator(TrainConfig.from_dict(m["config"])) \
        if m.get("kind") == "train" else None
    bad = run.verify(validate)
    n = len(m["chunks"])
    if not bad:
        print(f"{args.run}: all {n} finished chunks intact ({n}/{m['n_chunks']} done)")
        return 0
    for i, why in sorted(bad.items()):
        print(f"{args.run}: chunk {i} {why}")
    if args.repair:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run.open_writer(m["config"], m["n_items"], kind=m.get("kind", "run"),
                            validate=validate).close()
        print(f"{args.run}: {len(bad)} damaged chunk(s) moved to {run.path / 'quarantine'}; "
              f"`relunet train --run {args.run}` trains them again")
        return 0
    print(f"{args.run}: {len(bad)} of {n} chunks damaged: `relunet train --run {args.run}` "
          f"(or `relunet verify {args.run} --repair`) quarantines and recomputes them")
    return EXIT_CODES["damaged"]


# =============================================================================
# Entry point
# =============================================================================
COMMANDS = {
    "train": ("train students of a teacher into a resumable run directory",
              _add_train, _train),
    "status": ("progress and loss summary of a run", _add_status, _status),
    "verify": ("check every chunk of a run; --repair quarantines damaged ones",
               _add_verify, _verify),
}


class _Signals:
    """SIGTERM raises KeyboardInterrupt (like SIGINT); remembers which came."""

    received = None
    on_interrupt = None     # a command's own message; returns the exit code

    @classmethod
    def handler(cls, signum, frame):
        cls.received = signum
        raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"relunet: warning: {message}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit code 2, as argparse's own)."""

    def error(self, message):
        self.exit(2, f"relunet: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relunet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(func=run)
    return parser


def _error(message: str, code: int) -> int:
    print(f"relunet: error: {' '.join(message.split()) or 'unknown error'}", file=sys.stderr)
    return code


def _interrupted() -> int:
    if _Signals.on_interrupt is not None:
        return _Signals.on_interrupt()
    return 128 + int(_Signals.received or signal.SIGINT)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _Signals.received = _Signals.on_interrupt = None
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, _Signals.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return run_interruptibly(lambda: args.func(args), _interrupted)
    except KeyboardInterrupt:     # only when not run from the main thread
        return 128 + int(_Signals.received or signal.SIGINT)
    except BrokenPipeError:       # `relunet status RUN | head`: the reader left
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CODES["broken pipe"]
    except CommandError as e:
        return _error(str(e), e.code)
    except (ValueError, ManifestError) as e:      # DamagedRunError is a ValueError
        return _error(str(e), EXIT_CODES["usage"])
    except (EngineError, NumbaCacheError, FileNotFoundError, RuntimeError) as e:
        return _error(str(e), EXIT_CODES["failed"])
    except OSError as e:
        return _error(f"{e.strerror or e}: {e.filename or ''}", EXIT_CODES["failed"])
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
