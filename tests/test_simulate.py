"""simulate(): schema, scalar-or-list arguments, clear errors for bad input, and the command line."""

import math

import pandas as pd
import pytest

from lora_theory import COLUMNS, ModelConfig, TrainConfig, simulate
from lora_theory.cli import main


def test_default_call_runs_the_four_theory_cases():
    df = simulate(widths=[64, 128], steps=2)  # the defaults, narrowed for speed
    assert list(df.columns) == list(COLUMNS)
    cases = set(map(tuple, df[["init", "lr_exponent"]].drop_duplicates().to_numpy()))
    assert cases == {("A", -0.5), ("A", -1.0), ("B", -0.5), ("B", -1.0)}
    assert len(df) == 2 * 2 * 2 * 2 * 3  # widths × inits × lr rules × seeds × recorded steps


def test_scalars_and_lists_are_equivalent():
    a = simulate(widths=64, lrs=0.5, inits="A", seeds=0, optimizers="adam", ranks=2, steps=2)
    b = simulate(widths=[64], lrs=[0.5], inits=["A"], seeds=[0], optimizers=["adam"], ranks=[2], steps=2)
    pd.testing.assert_frame_equal(a, b)


def test_absolute_learning_rates_and_record_every():
    df = simulate(widths=[64, 128], lrs=0.01, lr_exponent=None, inits="A", seeds=0,
                  train_cfg=TrainConfig(steps=10, record_every=4))
    assert (df.lr == 0.01).all() and df.lr_exponent.isna().all()
    assert sorted(df.step.unique()) == [0, 4, 8, 10]


def test_toy_has_test_loss_and_layer_does_not():
    toy = simulate(widths=32, seeds=0, steps=2, model=ModelConfig(setting="toy", n_train=8, n_test=4))
    assert toy.test_loss.notna().all()
    assert simulate(widths=32, seeds=0, steps=2).test_loss.isna().all()


def test_shortcuts_that_conflict_with_the_configs_are_errors():
    """``setting``/``steps`` next to a config that says otherwise used to override it silently."""
    with pytest.raises(ValueError, match="setting='toy' conflicts with model.setting='layer'"):
        simulate(widths=32, setting="toy", model=ModelConfig(n_train=8))
    assert simulate(widths=32, seeds=0, steps=3, train_cfg=TrainConfig(steps=5)).step.max() == 3  # documented
    agreed = simulate(widths=32, seeds=0, setting="toy", steps=2, model=ModelConfig(setting="toy", n_train=8),
                      train_cfg=TrainConfig(steps=2))
    assert agreed.step.max() == 2 and agreed.setting.eq("toy").all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=0), "widths must be integers >= 1"),
    (dict(widths=[64, 2.5]), "widths must be integers >= 1"),
    (dict(widths=[]), "widths must not be empty"),
    (dict(ranks=128, widths=64), "ranks must be <= every width"),
    (dict(lrs=0.0), "lrs must be finite positive"),
    (dict(lrs=-1.0), "lrs must be finite positive"),
    (dict(lrs=math.inf), "lrs must be finite positive"),
    (dict(lrs=math.nan), "lrs must be finite positive"),
    (dict(lr_exponent=math.nan), "lr_exponent must be finite"),
    (dict(inits="C"), "inits must be one of"),
    (dict(optimizers="rmsprop"), "optimizers must be one of"),
    (dict(seeds=-1), "seeds must be integers >= 0"),
    (dict(seeds=[]), "seeds must not be empty"),
    (dict(setting="deep"), "setting must be one of"),
    (dict(steps=0), "steps must be an integer >= 1"),
])
def test_bad_input_names_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(**{"widths": 64, **kwargs})


@pytest.mark.parametrize("cls, kwargs, match", [
    (ModelConfig, dict(readout="ntk"), r"readout must be one of \['sp', 'mup'\]"),
    (ModelConfig, dict(alpha=-1.0), "alpha must be a finite positive"),
    (ModelConfig, dict(n_train=0), "n_train must be an integer >= 1"),
    (TrainConfig, dict(beta1=1.0), r"beta1 must be in \[0, 1\)"),
    (TrainConfig, dict(eps=0.0), "eps must be a finite positive"),
    (TrainConfig, dict(dtype="float16"), "dtype must be one of"),
    (TrainConfig, dict(device="tpu"), "device must be"),
])
def test_config_validation(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_cli_simulate_writes_csv(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["simulate", "--widths", "32", "64", "--seeds", "0", "--steps", "2", "--setting", "toy",
                 "--n-train", "8", "--n-test", "4", "--readout", "mup", "--out", str(out),
                 "--no-progress"]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == list(COLUMNS) and set(df.width) == {32, 64} and (df.setting == "toy").all()
    assert "wrote" in capsys.readouterr().out


def test_cli_bad_input_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--widths", "0", "--out", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
    assert "widths must be integers >= 1" in capsys.readouterr().err


def test_cli_bench_quick_json(capsys):
    import json

    assert main(["bench", "--quick", "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(case["same_numbers"] for case in out["cases"])  # the engine and the loop agree to round-off
    for case in out["cases"]:  # the reported figures are consistent with each other (not timed: no bound)
        assert case["speedup"] == pytest.approx(case["engine_config_steps_per_s"]
                                                / case["loop_config_steps_per_s"])
        assert case["configs"] == 8 * 4 and case["max_rel_diff_final_loss"] < 1e-8
    headline = next(c for c in out["cases"] if c["case"] == "toy_n256")
    assert out["speedup"] == headline["speedup"]


def test_cli_derive_prints_both_inits(capsys):
    assert main(["derive", "--inits", "A", "B"]) == 0
    out = capsys.readouterr().out
    assert "c* = -1/2" in out and "c* = -1 " in out


def test_cli_rejects_unknown_output_format(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--widths", "32", "--out", str(tmp_path / "x.xlsx")])
    assert "--out must end in .csv or .parquet" in capsys.readouterr().err


def test_cli_slopes_prints_measured_and_theory(capsys):
    assert main(["slopes", "--widths", "64", "128", "256", "--seeds", "0", "1", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "theory" in out and "b_shift_rms" in out and out.count("\n") >= 12
