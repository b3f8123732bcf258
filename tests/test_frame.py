"""The frame shared by both command lines and every experiment: one config type for the
engine flags, one store, one naming rule, compute-once."""
import dataclasses
import types

import numpy as np
import pytest

from relunet.experiments.frame import Context, ensure, is_stored, preset, stored
from relunet.run import TrainConfig, load_run, run_dir
from relunet.run.cli import build_parser as relunet_parser
from relunet.run.cli import main as relunet_main
from relunet.run.config import EngineOptions
from relunet.run.files import fingerprint, keyed_path
from relunet.run.runner import build_parser as run_all_parser


def _flags(parser) -> dict:
    """{option string: help} of every optional argument of ``parser`` (and subparsers)."""
    out = {}
    for a in parser._actions:
        if a.choices and isinstance(a.choices, dict):           # subparsers
            for sub in a.choices.values():
                out.update(_flags(sub))
        for s in a.option_strings:
            out[s] = a.help
    return out


def test_both_command_lines_take_the_engine_flags_from_engine_options():
    train = _flags(relunet_parser())
    run_all = _flags(run_all_parser())
    engine = {s for f in dataclasses.fields(EngineOptions)
              for s in ([f.metadata["flag"]] if isinstance(f.metadata["flag"], str) else
                        f.metadata["flag"] or ["--" + f.name.replace("_", "-")])}
    assert engine == {"--chunk-size", "--scheduler", "--scheduler-file", "--local-processes",
                      "--threads", "--retries", "--connect-timeout", "--quiet", "--no-progress"}
    for s in engine:
        assert train[s] == run_all[s], s                       # the same help text
    assert "(default 2)" in train["--retries"] and "(default 10)" in train["--connect-timeout"]


def test_train_flags_and_their_defaults_come_from_train_config():
    flags = _flags(relunet_parser())
    for f in dataclasses.fields(TrainConfig):
        if "help" in f.metadata and f.default is not None:
            name = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            assert flags[name].endswith(f"(default {shown})"), (name, flags[name])
    assert "adadelta 1" in flags["--lr"] and "momentum 0.001" in flags["--lr"]


def test_relunet_train_and_the_experiments_share_one_store_and_naming_rule(tmp_path):
    cfg = TrainConfig(K=2, N=3, optimizer="momentum", n_models=4, steps=20, record_every=10)
    assert relunet_main(["train", "--store", str(tmp_path), "--K", "2", "--N", "3",
                         "--optimizer", "momentum", "--models", "4", "--steps", "20",
                         "--record-every", "10", "--quiet"]) == 0
    path = run_dir(tmp_path, cfg)
    assert path == tmp_path / "runs" / f"wf-momentum-2x3-{cfg.fingerprint[:12]}"
    assert load_run(path).complete
    # the experiments train into the same place: the run is found, not trained again
    from relunet.experiments.students import train
    stamp = (path / "manifest.json").stat().st_mtime_ns
    ctx = Context(store=tmp_path, figures=tmp_path, engine=EngineOptions(progress=False))
    np.testing.assert_array_equal(train(cfg, ctx).W, load_run(path).W)
    assert (path / "manifest.json").stat().st_mtime_ns == stamp
    # experiment results follow the same rule
    Cfg = dataclasses.make_dataclass("Cfg", [("scale", str), ("n", int, 3)], frozen=True)
    c = Cfg("smoke")
    assert ctx.results("exp", c).root == keyed_path(tmp_path, "exp", "smoke",
                                                    dataclasses.asdict(c))
    key = fingerprint({"scale": "smoke", "n": 3})[:12]
    assert ctx.results("exp", c).root.name == f"smoke-{key}"


@dataclasses.dataclass(frozen=True)
class _Cfg:
    scale: str = "default"
    n: int = 5


def test_preset_fills_the_scale_and_its_overrides():
    config = preset(_Cfg, {"smoke": dict(n=2)})
    assert config("smoke") == _Cfg("smoke", 2) and config("paper") == _Cfg("paper", 5)
    with pytest.raises(ValueError, match="scale must be one of"):
        config("huge")


def test_the_frame_computes_once_and_stores_with_the_config(tmp_path):
    calls, forced = [], []

    def compute(cfg, ctx):
        calls.append(cfg)
        forced.append(ctx.force)             # true only while recomputed on request
        return {"x": np.arange(cfg.n) * len(calls)}
    mod = types.SimpleNamespace(NAME="exp", RESULT="data", compute=compute)
    ctx = Context(store=tmp_path, figures=tmp_path)
    cfg = _Cfg("smoke", 3)
    assert not is_stored(mod, cfg, ctx)
    assert ensure(mod, cfg, ctx) is True and is_stored(mod, cfg, ctx)
    assert ensure(mod, cfg, ctx) is False and len(calls) == 1        # stored: skipped
    np.testing.assert_array_equal(stored(mod, cfg, ctx)["x"], [0, 1, 2])
    assert ctx.results("exp", cfg).load_json("config") == {"scale": "smoke", "n": 3}
    assert ensure(mod, cfg, ctx, force=True) is True and len(calls) == 2
    assert forced == [False, True]
    np.testing.assert_array_equal(stored(mod, cfg, ctx)["x"], [0, 2, 4])
    assert not is_stored(mod, _Cfg("smoke", 4), ctx)                 # another config


def test_large_scale_lies_between_default_and_paper():
    """Every experiment has a 'large' config: its integer settings between the default's
    and the paper's, and what its preset does not name equal to the default's."""
    from relunet.experiments import registry
    from relunet.experiments.frame import SCALES
    assert SCALES.index("default") < SCALES.index("large") < SCALES.index("paper")
    for mod in registry():
        d, big, p = (mod.config(s) for s in ("default", "large", "paper"))
        named = getattr(mod, "PRESETS", {}).get("large", {})
        for f in dataclasses.fields(d):
            a, b, c = (getattr(x, f.name) for x in (d, big, p))
            if f.name == "scale":
                assert b == "large"
            elif f.name not in named:
                assert b == a, (mod.NAME, f.name)
            if isinstance(a, int) and not isinstance(a, bool):
                assert min(a, c) <= b <= max(a, c), (mod.NAME, f.name, a, b, c)
    from relunet.experiments import fig2_fits
    assert fig2_fits.config("large").n_models == 16 * fig2_fits.config("default").n_models
