"""Print the generated training kernel: ``python -m relunet.fast N [--n-in 1]
[--n-out 1] [--dtype float64] [--bits 256]`` (the source ``train_stack`` compiles)."""
from __future__ import annotations

import argparse

from .codegen import NMAX, generate


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m relunet.fast", description=__doc__.split("\n")[0])
    ap.add_argument("N", type=int, help=f"units per hidden layer, 1..{NMAX}")
    ap.add_argument("--n-in", type=int, default=1, help="inputs (default 1)")
    ap.add_argument("--n-out", type=int, default=1, help="outputs (default 1)")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--bits", type=int, choices=(256, 512), default=256,
                    help="bits per vector (default 256, the width of the committed exhibit)")
    a = ap.parse_args(argv)
    for name, v, hi in (("N", a.N, NMAX), ("--n-in", a.n_in, None), ("--n-out", a.n_out, None)):
        if v < 1 or (hi is not None and v > hi):
            ap.error(f"{name} must be an integer in 1..{hi or 'any'}, got {v}")
    print(generate(a.N, a.n_in, a.n_out, a.dtype, a.bits), end="")


if __name__ == "__main__":
    main()
