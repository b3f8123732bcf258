"""``run_all.py``: compute, plot and report every experiment, resumably.

Each experiment computes only what its store does not hold yet
(:func:`relunet.experiments.frame.ensure`; training runs resume chunk by
chunk), then plots from the store and writes its section of
``figures/REPORT.md``. Interrupting and re-running picks up where it stopped.
The store is the one of ``relunet train`` (``--store``, default ``results``
or ``$RELUNET_STORE``), and the engine flags are the same, read off
:class:`relunet.run.config.EngineOptions`.

The report always holds every experiment whose results are stored for the
scale, in figure order, so ``--only NAME`` refreshes one section and keeps the
others. Its timing table shows, per experiment, the wall time of the run that
computed it (kept in ``<store>/timings-<scale>.json``), not of a later re-plot;
when a computation was interrupted and resumed, the sum of its attempts (an
interrupt records the time spent so far under ``"_partial"``).

Two lanes (``--lanes 2``, the default): most instruments (quench, bands,
saddles) are single-threaded Python and NumPy between kernel calls, so a
sequential run leaves about a third of two cores idle. The experiments that
read no other experiment's results and whose results no other one reads (the
``NEEDS`` of :mod:`relunet.experiments.frame`: Fig. 1, Fig. 5, the sensitivity
study, the high-frequency teacher) therefore run in a second process, started
first at the lowest priority (nice 19), which takes the idle core without slowing the
main sequence. Results are the same bits either way (every experiment is
deterministic whatever else runs); only the wall times in the report overlap.
The second lane prints its own progress lines, dies with the run (Linux:
PR_SET_PDEATHSIG) and is stopped with it on Ctrl-C; its one-line error, if
any, comes before the run's.

Precision: ``--dtype float32`` runs every experiment that computes in a
precision in float32 (training, the quench's descent, the bands; what stays
float64 and why: :mod:`relunet.experiments.precision`), into store entries of
its own, and writes figures and REPORT.md to ``figures/float32/`` unless
``--figures`` is given; its report opens with each main number beside the
float64 one from the same store, when that is stored. Its timings are kept in
``<store>/timings-<scale>-float32.json``.

Ctrl-C (or SIGTERM) stops within about a second even inside a numba kernel:
the experiments run in a worker thread while the main thread waits for the
signal; everything stored is complete (atomic files), so the process prints
one line with the resume command and leaves (exit 130). Expected failures are
one line ``run_all.py: error: ...`` with the fix (exit 1; 2 for bad usage).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..experiments import names, registry
from ..experiments.frame import DTYPES, SCALES, Context, ensure, is_stored
from ..experiments.precision import comparison
from ..experiments.tables import table
from .cluster import silence_logs
from .config import DEFAULT_STORE, EngineOptions
from .faults import (
    EngineError,
    NumbaCacheError,
    numba_cache_files,
    run_interruptibly,
    self_repairing,
)
from .files import atomic_write_json, try_lock, versions
from .flags import add_flags, given
from .store import DamagedRunError, ManifestError


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error naming the flag (exit code 2, as argparse's own)."""

    def error(self, message):
        self.exit(2, f"run_all.py: error: {message} (see run_all.py --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="run_all.py",
        description="Regenerate every figure of Gamst & Walker (2017) and figures/REPORT.md.")
    p.add_argument("--scale", choices=SCALES, default="default",
                   help="smoke: seconds; default: every figure, minutes on 2 cores (README); "
                        "large: 16,384 students per optimizer, about an hour on 2 cores; "
                        "paper: the paper's full scale (use a cluster)")
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help=f"run only this experiment (repeatable); one of {', '.join(names())}")
    p.add_argument("--plot-only", action="store_true",
                   help="re-plot and re-report from the store, compute nothing")
    p.add_argument("--force", action="store_true",
                   help="recompute the selected experiments even when stored (the training "
                        "runs they read are kept: they are keyed by their config)")
    p.add_argument("--store", default=DEFAULT_STORE, metavar="ROOT",
                   help="store root: training runs and results (default: %(default)s, or "
                        "$RELUNET_STORE)")
    p.add_argument("--dtype", choices=DTYPES, default="float64",
                   help="precision of training, quench and bands: float64 (default) or "
                        "float32, the paper's Keras default (relunet/experiments/precision.py); "
                        "float32 results are stored apart, and compared with float64's in "
                        "their report")
    p.add_argument("--figures", default=None,
                   help="output folder (default: figures, or figures/float32 with --dtype "
                        "float32)")
    p.add_argument("--lanes", type=int, choices=(1, 2), default=2,
                   help="2 (default): the experiments that need no other's results and that "
                        "none needs run in a second, low-priority process beside the others "
                        "(the same results, the idle core used); 1: one after the other")
    p.add_argument("--lane-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lane-only", default="", help=argparse.SUPPRESS)
    p.add_argument("--lane-report", default=None, help=argparse.SUPPRESS)
    add_flags(p, EngineOptions, "how training runs are computed (never changes the results)")
    return p


LANE_NICE = 19          #: niceness of the second lane: it takes what the main lane leaves
try:
    import fcntl as _fcntl  # noqa: F401
    _CAN_CLAIM = True       #: the main lane may take the second lane's experiments
except ImportError:
    _CAN_CLAIM = False


class LaneError(RuntimeError):
    """The second lane stopped with an error (its own one-line message came first)."""


def split_lanes(mods) -> tuple[list, list]:
    """(main lane, second lane) of the selected experiments, each in figure order.

    The second lane holds the experiments that read no other's results
    (empty ``NEEDS``) and that no selected experiment reads, so the two lanes
    never wait for, or compute, each other's results. If that would leave the
    main lane empty, its first experiment moves there.
    """
    needed = {n for m in mods for n in getattr(m, "NEEDS", ())}
    side = [m for m in mods if not getattr(m, "NEEDS", ()) and m.NAME not in needed]
    main = [m for m in mods if m not in side]
    if not main and side:
        main, side = side[:1], side[1:]
    # the experiments that declare LANE_FIRST (long, with single-threaded stretches that
    # fit into the main lane's) first: the main lane, once done, takes the second lane's
    # experiments from its end (:func:`claim`)
    side.sort(key=lambda m: not getattr(m, "LANE_FIRST", False))
    return main, side


def claim(ctx: Context, scale: str, name: str):
    """Take this process's claim on computing experiment ``name`` in this store, or
    None if the other lane holds it. A claim is an exclusive ``flock`` held until the
    returned file is closed or the process ends (a lane that dies frees its claims).
    The second lane claims each of its experiments before running it and holds every
    claim until it exits; the main lane, done with its own, claims the second lane's
    experiments from the end and runs those it gets. Without ``fcntl`` (not POSIX)
    every claim succeeds and the main lane does not take any (see :func:`main`)."""
    return try_lock(ctx.store / f".lane-{scale}-{ctx.dtype}-{name}.lock")


def _start_lane(argv: list[str], names: list[str], report: Path) -> subprocess.Popen:
    """The second lane: this run's own command line, restricted to ``names``."""
    cmd = [sys.executable, "-c",
           "import sys; from relunet.run.runner import main; sys.exit(main())",
           *argv, "--lane-child", "--lane-only", ",".join(names),
           "--lane-report", str(report), "--no-progress"]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)


def _become_lane() -> None:
    """In the second lane's process: low priority, and die with the parent (Linux)."""
    with contextlib.suppress(OSError):
        os.nice(LANE_NICE)
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    if os.getppid() != parent:          # the parent died before prctl: nobody to report to
        os._exit(130)


LANE_GRACE = 1.0        #: seconds the second lane gets to exit on its own when stopped


def _stop_lane(lane) -> None:
    """Stop the second lane: SIGTERM (it saves the timing of its experiment in progress
    and exits at once), and if it has not exited within ``LANE_GRACE`` seconds, SIGKILL
    it and the processes it started. It runs at niceness ``LANE_NICE``: on a busy
    machine its few milliseconds of exit took over 3 s of wall time (seen in CI, with
    two test workers on two cores), and a Ctrl-C must be quick. What it computed is in
    the crash-safe store either way; only that timing record can be lost."""
    if lane is None or lane.poll() is not None:
        return
    family = []
    with contextlib.suppress(Exception):
        import psutil
        family = psutil.Process(lane.pid).children(recursive=True)
    lane.terminate()
    try:
        lane.wait(timeout=LANE_GRACE)
    except subprocess.TimeoutExpired:
        for p in family:
            with contextlib.suppress(Exception):
                p.kill()
        lane.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            lane.wait(timeout=5)


def _select(only):
    mods = registry()
    if not only:
        return mods
    wanted = [n for o in only for n in o.split(",") if n]
    unknown = sorted(set(wanted) - set(names()))
    if unknown:
        raise SystemExit(f"run_all.py: error: unknown experiment(s) {unknown}; "
                         f"choose from {names()}")
    return [m for m in mods if m.NAME in wanted]


def _config(mod, scale: str, dtype: str):
    """The experiment's config of a scale and precision (``config(scale)`` for float64,
    the default of every experiment's config)."""
    return mod.config(scale) if dtype == "float64" else mod.config(scale, dtype)


def _timings_path(ctx: Context, scale: str) -> Path:
    tail = "" if ctx.dtype == "float64" else f"-{ctx.dtype}"
    return ctx.store / f"timings-{scale}{tail}.json"


def _load_timing_file(ctx: Context, scale: str) -> dict:
    try:
        t = json.loads(_timings_path(ctx, scale).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return t if isinstance(t, dict) else {}


def load_timings(ctx: Context, scale: str) -> dict:
    """{experiment: seconds} of the runs that computed them."""
    return {k: v for k, v in _load_timing_file(ctx, scale).items()
            if not k.startswith("_") and isinstance(v, (int, float))}


def _write_timings(ctx: Context, scale: str, t: dict) -> None:
    ctx.store.mkdir(parents=True, exist_ok=True)
    atomic_write_json(_timings_path(ctx, scale), t)


@contextlib.contextmanager
def _timings_lock(ctx: Context):
    """Hold the store's timings lock (both lanes update the same file)."""
    with try_lock(ctx.store / ".timings.lock", block=True):
        yield


def save_timing(ctx: Context, scale: str, name: str, seconds: float,
                second_lane: bool = False) -> None:
    """Record ``name``'s wall time, adding what interrupted attempts spent, and
    whether the second lane computed it (its time then overlaps the others')."""
    with _timings_lock(ctx):
        _save_timing(ctx, scale, name, seconds, second_lane)


def _save_timing(ctx: Context, scale: str, name: str, seconds: float,
                 second_lane: bool) -> None:
    t = _load_timing_file(ctx, scale)
    partial = t.get("_partial", {}) if isinstance(t.get("_partial"), dict) else {}
    t[name] = round(float(seconds) + float(partial.pop(name, 0.0)), 1)
    t["_partial"] = partial
    lane = set(t.get("_second_lane", []) if isinstance(t.get("_second_lane"), list) else [])
    (lane.add if second_lane else lane.discard)(name)
    t.pop("_second_lane", None)
    if lane:
        t["_second_lane"] = sorted(lane)
    _write_timings(ctx, scale, t)


def save_partial_timing(ctx: Context, scale: str, name: str, seconds: float) -> None:
    """An interrupted attempt at ``name`` spent ``seconds``: counted when it finishes."""
    with _timings_lock(ctx):
        _save_partial_timing(ctx, scale, name, seconds)


def _save_partial_timing(ctx: Context, scale: str, name: str, seconds: float) -> None:
    t = _load_timing_file(ctx, scale)
    partial = t.get("_partial", {}) if isinstance(t.get("_partial"), dict) else {}
    partial[name] = round(float(partial.get(name, 0.0)) + float(seconds), 1)
    t["_partial"] = partial
    _write_timings(ctx, scale, t)


def _pending_timing(ctx: Context, scale: str, name: str) -> bool:
    """Results of ``name`` were computed by an attempt whose time is not recorded yet."""
    t = _load_timing_file(ctx, scale)
    return name not in t and name in (t.get("_partial") or {})


def report_sections(ctx: Context, scale: str, fresh: dict) -> list[str]:
    """Sections of every experiment with stored results, in figure order.

    Every section is written again from the store once all experiments have run,
    so a section that cites a later experiment (the distance shell and the basin
    cite ext_sensitivity) sees what this invocation computed; ``fresh`` (the
    sections written during the run) stands in where that fails."""
    sections = []
    for mod in registry():
        try:
            sections.append(mod.report(_config(mod, scale, ctx.dtype), ctx))
        except (FileNotFoundError, KeyError):
            if mod.NAME in fresh:
                sections.append(fresh[mod.NAME])
            # else: not computed at this scale yet
    return sections


def write_report(ctx: Context, scale: str, sections: list[str], timings: dict) -> Path:
    f32 = ctx.dtype != "float64"
    lines = [
        "# relunet report: the energy landscape of a simple neural network"
        + (f", in {ctx.dtype}" if f32 else ""),
        "",
        f"Written by `run_all.py --scale {scale}" + (f" --dtype {ctx.dtype}" if f32 else "")
        + f"` on {time.strftime('%Y-%m-%d %H:%M')}. "
        "Every number below was computed by this run (or read from its store); beside "
        "each stands what Gamst & Walker (2017) state and a verdict: *reproduced*, "
        "*differs* (and how), or *unknown in the paper*.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        *table(("experiment", "wall time of the run that computed it (s)"),
               [(m.NAME, f"{timings[m.NAME]:.1f}") for m in registry() if m.NAME in timings]),
        "",
    ]
    in_lane = set(_load_timing_file(ctx, scale).get("_second_lane", []))
    lane = [m.NAME for m in registry() if m.NAME in in_lane and m.NAME in timings]
    if lane:
        lines += [f"Computed beside the other lane (`run_all.py --lanes 2`, the default: the "
                  f"experiments that need no other's results run in a second process at low "
                  f"priority, and the main lane takes those not started when it is done with "
                  f"its own): {', '.join(lane)}; their wall times overlap the others'.", ""]
    if f32:
        lines.append(comparison(scale, ctx, registry()))
    path = ctx.figures / "REPORT.md"
    ctx.figures.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines + sections) + "\n")
    os.replace(tmp, path)
    return path


def _failure(e: BaseException, resume: str) -> tuple[str, int] | None:
    """(one-line message with the fix, exit code) for an expected failure, else None."""
    import errno
    files = numba_cache_files(e)
    if files:
        folder = os.path.dirname(files[0])
        return (f"numba's cache is corrupt ({type(e).__name__} reading {files[0]}): clear "
                f"the numba cache at {folder} (rm -r it), then resume with: {resume}", 1)
    if isinstance(e, (EngineError, NumbaCacheError)):
        return f"{e}; resume with: {resume}", 1
    if isinstance(e, (DamagedRunError, ManifestError)):
        return f"{e}; then resume with: {resume}", 1
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {e.filename or 'the store'} (read-only): make the store "
                f"writable or pass another --store, then resume with: {resume}", 1)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", 0)):
        return (f"the disk is full (writing {e.filename or 'the store'}): free space, then "
                f"resume with: {resume}", 1)
    return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        engine = EngineOptions(**given(args, EngineOptions))
    except ValueError as e:
        print(f"run_all.py: error: {e}", file=sys.stderr)
        return 2
    figures = args.figures or ("figures" if args.dtype == "float64" else f"figures/{args.dtype}")
    ctx = Context(store=Path(args.store), figures=Path(figures), engine=engine,
                  force=args.force, dtype=args.dtype)
    argv = list(argv if argv is not None else sys.argv[1:])
    mods = _select(args.only)
    position = {m.NAME: i for i, m in enumerate(mods, 1)}
    total = len(mods)
    child = args.lane_child
    # the command to resume with: the user's (a second lane's own flags come last)
    mine = argv[:argv.index("--lane-child")] if "--lane-child" in argv else argv
    resume = " ".join(["python run_all.py"] + mine)
    lane, lane_mods, lane_report = None, [], None
    if child:
        _become_lane()
        order = args.lane_only.split(",")    # the main lane's order (:func:`split_lanes`)
        mods = sorted((m for m in mods if m.NAME in order), key=lambda m: order.index(m.NAME))
    elif args.lanes > 1 and not args.plot_only:
        main_mods, side = split_lanes(mods)
        if any(args.force or not is_stored(m, _config(m, args.scale, ctx.dtype), ctx)
               for m in side):
            mods, lane_mods = main_mods, side

    def _term(signum, frame):
        raise KeyboardInterrupt
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {signal.SIGTERM: signal.signal(signal.SIGTERM, _term),
               signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN if child else
                                            signal.default_int_handler)}
        # a terminal's Ctrl-C reaches both lanes; the second leaves it to the main one,
        # which stops it with ONE signal (SIGTERM): a second signal during its exit made
        # dask's teardown print warnings

    fresh, files = {}, []
    current = {}                 # the experiment running now: name, t0, whether it computes
    t_all = time.perf_counter()

    held = []                    # this process's claims (:func:`claim`), closed at the end

    def work():
        for mod in mods:
            if child:
                c = claim(ctx, args.scale, mod.NAME)
                if c is None:
                    print(f"      {mod.NAME}: taken by the main lane", flush=True)
                    continue
                held.append(c)
            run_one(mod, "second lane" if child else "")
        if lane is not None:
            # done with ours: take the second lane's experiments it has not started, from
            # its end (it runs them in order), while it runs
            busy = []
            for mod in reversed(lane_mods if _CAN_CLAIM else []):
                c = claim(ctx, args.scale, mod.NAME)
                if c is None:
                    busy.append(mod)          # running or done there
                    continue
                held.append(c)
                if lane_done():               # it ran (or reports) the rest
                    break
                run_one(mod, "taken from the second lane")
            # then help with the parts of what it still runs, where an experiment has an
            # ``assist`` (ext_sensitivity: its variants, each claimed on its own)
            for mod in reversed(busy):
                if not lane_done() and hasattr(mod, "assist") and not args.force:
                    n = mod.assist(_config(mod, args.scale, ctx.dtype), ctx)
                    print(f"      {mod.NAME}: {n} part(s) computed in the main lane",
                          flush=True)
            rc = lane.wait()
            if rc != 0:
                raise LaneError(f"the second lane ({', '.join(m.NAME for m in lane_mods)}) "
                                f"stopped with exit code {rc} (its message is above)")
            got = json.loads(lane_report.read_text())
            files.extend(got["files"])
            fresh.update(got["fresh"])
        if child and args.lane_report:
            atomic_write_json(Path(args.lane_report), {"files": files, "fresh": fresh})

    def lane_done() -> bool:
        """The second lane has finished its work: it has written its report (it still
        holds its claims until then; they go while its interpreter shuts down, which
        can take a while after), or it has exited."""
        return lane.poll() is not None or lane_report.stat().st_size > 0

    def run_one(mod, where: str):
        cfg = _config(mod, args.scale, ctx.dtype)
        tag = f" ({where})" if where else ""
        print(f"[{position[mod.NAME]}/{total}] {mod.TITLE}{tag}", flush=True)
        t0 = time.perf_counter()
        computes = not args.plot_only and (args.force or not is_stored(mod, cfg, ctx))
        current.update(name=mod.NAME, t0=t0, computes=computes)
        if not args.plot_only:
            # a corrupt numba cache file is deleted and the (resumable) compute
            # run again; the message names the folder if that does not help
            _, repaired = self_repairing(lambda: ensure(mod, cfg, ctx, force=args.force))
            if repaired:
                print(f"      repaired numba's cache: deleted {', '.join(repaired)}",
                      flush=True)
        current["computed"] = True
        files.extend(mod.plot(cfg, ctx))
        fresh[mod.NAME] = mod.report(cfg, ctx)
        dt = time.perf_counter() - t0
        if computes or (not args.plot_only and _pending_timing(ctx, args.scale, mod.NAME)):
            save_timing(ctx, args.scale, mod.NAME, dt, second_lane=bool(where))
        current.clear()
        print(f"      {mod.NAME} done in {dt:.1f} s" if child or lane_mods else
              f"      done in {dt:.1f} s", flush=True)

    def on_interrupt() -> int:
        silence_logs()                        # exiting: no dask traceback after the message
        if current.get("computes") or (current and _pending_timing(ctx, args.scale,
                                                                  current["name"])):
            with contextlib.suppress(Exception):
                save_partial_timing(ctx, args.scale, current["name"],
                                    time.perf_counter() - current["t0"])
        _stop_lane(lane)
        if child:                             # the main lane says what to do
            return 130
        print(f"\ninterrupted: everything finished so far is saved in {ctx.store}/.\n"
              f"resume with: {resume}", file=sys.stderr)
        return 130

    if lane_mods:
        import tempfile
        ctx.store.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".lane-", suffix=".json", dir=ctx.store)
        os.close(fd)
        lane_report = Path(name)
        lane = _start_lane(argv, [m.NAME for m in lane_mods], lane_report)
    try:
        run_interruptibly(work, on_interrupt)
    except KeyboardInterrupt:                 # not in the main thread: no hard exit
        on_interrupt()
        return 130
    except FileNotFoundError as e:
        if args.plot_only:
            print(f"run_all.py: --plot-only needs computed results: {e}", file=sys.stderr)
            return 2
        raise
    except Exception as e:  # noqa: BLE001 -- expected failures become one line
        fail = _failure(e, resume)
        if fail is None:
            raise
        print(f"run_all.py: error: {' '.join(fail[0].split())}", file=sys.stderr)
        return fail[1]
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        _stop_lane(lane)                      # only an error leaves it running here
        for c in held:
            c.close()
        if lane_report is not None:
            with contextlib.suppress(OSError):
                lane_report.unlink()
    if child:
        return 0
    report = write_report(ctx, args.scale, report_sections(ctx, args.scale, fresh),
                          load_timings(ctx, args.scale))
    print(f"\nall done in {time.perf_counter() - t_all:.1f} s")
    print(f"figures: {len([f for f in files if f.endswith('.png')])} PNG + PDF in "
          f"{ctx.figures}/;  report: {report};  stored results: {ctx.store}/")
    return 0
