"""Command line of relunet: ``relunet SUBCOMMAND ...`` (``python -m relunet.cli``).

Subcommands live in :data:`COMMANDS` (name -> (help, add_arguments, run));
add one by writing those two small functions and a line in the table.

* ``relunet train``: train students of the paper's teacher W_f (Gamst & Walker
  2017, Sec. 3) into a run directory, resumably (``engine.run_training``).
  Ctrl-C or SIGTERM stops after saving every finished chunk, prints the
  command that resumes, and exits with 130 (SIGINT) or 143 (SIGTERM). Chunks
  in flight are abandoned: a numba call cannot be interrupted, so with the
  embedded engine the process exits at once (``os._exit``) rather than wait
  for the chunk still running in its worker thread.
* ``relunet status RUN``: progress and a final-loss summary of a run (also
  while it is being written).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path

from .engine import EngineError, TrainConfig, load_run, run_training
from .optim import make_optimizer
from .store import RunStore

__all__ = ["main", "COMMANDS"]

DEFAULT_STORE = os.environ.get("RELUNET_RUNS", "runs")
HYPER = ("lr", "momentum", "rho", "eps")


# =============================================================================
# relunet train
# =============================================================================
def _add_train(p: argparse.ArgumentParser) -> None:
    d = TrainConfig.__dataclass_fields__
    g = p.add_argument_group("what to train (default: the stored config of --run, "
                             "else the defaults shown)")
    g.add_argument("--teacher", choices=["wf", "hf"],
                   help="teacher: W_f or the high-frequency one (default wf)")
    g.add_argument("--heights", type=_floats, metavar="H0,H1,H2,H3",
                   help="W_f's spline heights at knots -1,-1/3,1/3,1 (default: seed-0 draw)")
    g.add_argument("--variant", choices=["distinct", "authors350"],
                   help="training set: 341 distinct points or the authors' 350 rows")
    g.add_argument("--optimizer", choices=["adadelta", "momentum"],
                   help=f"default {d['optimizer'].default}")
    g.add_argument("--lr", type=float, help="learning rate (adadelta 1.0, momentum 1e-3)")
    g.add_argument("--momentum", type=float, help="momentum coefficient (default 0.9)")
    g.add_argument("--rho", type=float, help="Adadelta decay (default 0.95)")
    g.add_argument("--eps", type=float, help="Adadelta epsilon (default 1e-8)")
    g.add_argument("--K", type=int, help=f"hidden layers (default {d['K'].default})")
    g.add_argument("--N", type=int, help=f"units per layer (default {d['N'].default})")
    g.add_argument("--models", type=int, help=f"students (default {d['n_models'].default})")
    g.add_argument("--steps", type=int, help=f"steps each (default {d['steps'].default})")
    g.add_argument("--seed", type=int, help="base seed (default 0)")
    g.add_argument("--record-every", type=int, help="loss history interval (default 1000)")
    g.add_argument("--dtype", choices=["float64", "float32"], help="default float64")
    g.add_argument("--init", choices=["glorot", "perturb"],
                   help="Glorot-uniform starts, or the teacher plus noise (default glorot)")
    g.add_argument("--init-radius", type=_floats, metavar="LO,HI",
                   help="--init perturb: noise norm ~ U(LO, HI) (default 0,2)")
    w = p.add_argument_group("where").add_mutually_exclusive_group()
    w.add_argument("--store", metavar="ROOT",
                   help=f"store root: the run goes to ROOT/<optimizer>-<K>x<N>-<fingerprint> "
                        f"(default {DEFAULT_STORE}, or $RELUNET_RUNS)")
    w.add_argument("--run", metavar="DIR", help="this run directory (resumes it if it exists)")
    e = p.add_argument_group("how")
    e.add_argument("--chunk-size", type=int, help="networks per task (new runs: 256)")
    x = e.add_mutually_exclusive_group()
    x.add_argument("--scheduler", metavar="ADDR", help="dask scheduler address")
    x.add_argument("--scheduler-file", metavar="FILE", help="dask scheduler file")
    x.add_argument("--local-processes", type=int, metavar="N",
                   help="N single-threaded local worker processes (default: in-process)")
    e.add_argument("--threads", type=int, help="numba threads per worker (default all)")
    e.add_argument("--retries", type=int, default=2, help="retries of a lost chunk")
    e.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def _floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _config_from_args(args) -> TrainConfig:
    """Stored config of --run (if any) or the defaults, with the given flags applied."""
    base = TrainConfig()
    if args.run and RunStore(args.run).exists():
        base = TrainConfig.from_dict(RunStore(args.run).manifest()["config"])
    over = {name: getattr(args, flag) for name, flag in (
        ("teacher", "teacher"), ("heights", "heights"), ("variant", "variant"),
        ("optimizer", "optimizer"), ("K", "K"), ("N", "N"), ("n_models", "models"),
        ("steps", "steps"), ("seed", "seed"), ("record_every", "record_every"),
        ("dtype", "dtype"), ("init", "init"), ("init_radius", "init_radius"))
        if getattr(args, flag) is not None}
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


def _engine_flags(args) -> list[str]:
    out = []
    for flag in ("scheduler", "scheduler_file", "local_processes", "threads"):
        v = getattr(args, flag)
        if v is not None:
            out += ["--" + flag.replace("_", "-"), str(v)]
    return out


def _train(args) -> int:
    cfg = _config_from_args(args)
    run_dir = Path(args.run) if args.run else (
        Path(args.store or DEFAULT_STORE) / f"{cfg.optimizer}-{cfg.arch}-{cfg.fingerprint[:12]}")
    if RunStore(run_dir).exists():
        RunStore(run_dir).check_config(cfg.to_dict())
    print(f"relunet: run {run_dir}: {cfg.describe()}", file=sys.stderr)
    try:
        run_training(cfg, run_dir, chunk_size=args.chunk_size, scheduler=args.scheduler,
                     scheduler_file=args.scheduler_file, local_processes=args.local_processes,
                     numba_threads=args.threads, retries=args.retries,
                     connect_timeout=args.connect_timeout, progress=not args.quiet)
    except KeyboardInterrupt:
        signum = _Signals.received or signal.SIGINT
        resume = shlex.join(["relunet", "train", "--run", str(run_dir)] + _engine_flags(args))
        saved = "nothing"
        if RunStore(run_dir).exists():
            r = load_run(run_dir)
            saved = (f"{len(r.chunks_done)}/{r.n_chunks} chunks ({r.n_done}/{r.n_total} "
                     f"networks)")
        print(f"\nrelunet: stopped by {signal.Signals(signum).name}: {saved} saved in "
              f"{run_dir}. Chunks in flight were abandoned (a running numba call cannot be "
              f"interrupted mid-chunk; their work is lost).\nresume with: {resume}",
              file=sys.stderr)
        embedded = all(v is None for v in (args.scheduler, args.scheduler_file,
                                           args.local_processes))
        if embedded:
            # the in-process worker thread may still be inside a numba call, and the
            # interpreter would wait for it at exit: everything is saved, leave now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + int(signum))
        return 128 + int(signum)
    _print_status(run_dir)
    return 0


# =============================================================================
# relunet status
# =============================================================================
def _add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _status(args) -> int:
    _print_status(Path(args.run), as_json=args.json)
    return 0


def _print_status(run_dir: Path, as_json: bool = False) -> None:
    r = load_run(run_dir)
    s = r.loss_summary()
    if as_json:
        print(json.dumps({"run": str(run_dir), "fingerprint": r.fingerprint,
                          "config": r.config.to_dict(), "chunks_done": len(r.chunks_done),
                          "n_chunks": r.n_chunks, **s}, indent=1))
        return
    print(f"run          {run_dir}")
    print(f"config       {r.config.describe()}")
    print(f"fingerprint  {r.fingerprint}")
    print(f"progress     {len(r.chunks_done)}/{r.n_chunks} chunks, {r.n_done}/{r.n_total} "
          f"networks ({100.0 * r.n_done / r.n_total:.1f}%)")
    if r.n_done == 0:
        print("final loss   no finished networks yet")
        return
    q = s["quantiles"]
    names = {0.0: "min", 0.5: "median", 1.0: "max"}
    qs = "  ".join(f"{names.get(k, f'q{100 * k:g}')} {v:.6g}" for k, v in q.items())
    print(f"final loss   over {s['n_used']} networks ({s['n_diverged']} diverged, "
          f"excluded): {qs}  mean {s['mean']:.6g}")


# =============================================================================
# Entry point
# =============================================================================
COMMANDS = {
    "train": ("train students of a teacher into a resumable run directory",
              _add_train, _train),
    "status": ("progress and loss summary of a run", _add_status, _status),
}


class _Signals:
    """SIGTERM raises KeyboardInterrupt (like SIGINT); remembers which came."""

    received = None

    @classmethod
    def handler(cls, signum, frame):
        cls.received = signum
        raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"relunet: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relunet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _Signals.received = None
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, _Signals.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except KeyboardInterrupt:     # outside a run: nothing to save
        return 128 + int(_Signals.received or signal.SIGINT)
    except (ValueError, EngineError, FileNotFoundError, RuntimeError) as e:
        print(f"relunet: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
