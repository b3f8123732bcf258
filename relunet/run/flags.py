"""Command-line flags read off the config types, so that no flag or default is copied by hand.

A field of a config dataclass (:class:`relunet.run.config.TrainConfig`,
:class:`relunet.run.config.EngineOptions`) that is made with :func:`flag`
carries its flag's name, help text and parser. :func:`add_flags` turns those
fields into argparse arguments, their help ending with the field's own
default; :func:`given` reads back the flags that were given. Both command
lines (``relunet train`` and ``run_all.py``) take their engine flags from
``EngineOptions`` this way, and ``relunet train`` its training flags from
``TrainConfig``.

Every flag's argparse default is None, so that "not given" can be told from
"given the default" (``relunet train --run DIR`` starts from the stored config
of DIR, not from the defaults).
"""
from __future__ import annotations

import argparse
import dataclasses
import math

__all__ = ["flag", "add_flags", "given", "count", "floats", "retry_count", "seconds"]


def flag(default, help: str, name=None, default_help=None, exclusive=None, **argparse_kw):
    """A dataclass field with a command-line flag.

    ``name``: the flag (a string or a tuple of spellings; default
    ``--field-name``); ``default_help``: what the help says the default is
    (default: the field's default, unless it is None); ``exclusive``: the
    name of a group of mutually exclusive flags; ``argparse_kw``: type,
    choices, metavar, action.
    """
    return dataclasses.field(default=default, metadata={
        "flag": name, "help": help, "default_help": default_help, "exclusive": exclusive,
        "argparse": argparse_kw})


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(v) for v in value)
    return str(value)


def add_flags(parser, cls, title: str | None = None):
    """Add a flag for every field of dataclass ``cls`` made with :func:`flag`
    (to a new argument group ``title``, or to ``parser`` itself); returns
    the group."""
    group = parser.add_argument_group(title) if title else parser
    exclusive = {}
    for f in dataclasses.fields(cls):
        md = f.metadata
        if "help" not in md:
            continue
        names = md["flag"] or "--" + f.name.replace("_", "-")
        names = (names,) if isinstance(names, str) else tuple(names)
        shown = md["default_help"] if md["default_help"] is not None else (
            None if f.default is None or md["argparse"].get("action") else _shown(f.default))
        text = md["help"] + (f" (default {shown})" if shown is not None else "")
        target = group
        if md["exclusive"]:
            if md["exclusive"] not in exclusive:
                exclusive[md["exclusive"]] = group.add_mutually_exclusive_group()
            target = exclusive[md["exclusive"]]
        target.add_argument(*names, dest=f.name, default=None, help=text, **md["argparse"])
    return group


def given(args, cls) -> dict:
    """{field: value} of the flags of ``cls`` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if "help" in f.metadata and getattr(args, f.name, None) is not None}


# -----------------------------------------------------------------------------
# Parsers: a bad value is argparse's one-line error naming the flag
# -----------------------------------------------------------------------------
def count(text: str) -> int:
    """A whole number, also written like 1e6 (exactly integral)."""
    try:
        v = float(text) if any(c in text.lower() for c in ".e") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(v)          # the range is checked with the config (one message)


def retry_count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number in 0..100, got {text!r}")
    return v


def seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {text!r}")
    return v


def floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
