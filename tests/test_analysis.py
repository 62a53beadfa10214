"""Pure analysis functions on hand-made tables with known answers."""

import numpy as np
import pandas as pd
import pytest

from lora_theory.analysis import classify_regime, interpolated_optimal_lr, max_stable_lr, optimal_lr


def _table(z_by_lr: dict[float, float], diverged=()):
    return pd.DataFrame([{"init": "A", "width": 64, "seed": 0, "lr": lr, "step": t, "z_b_rms": z * t,
                          "diverged": lr in diverged and t == 2, "loss": 1.0 / (1 + lr)}
                         for lr, z in z_by_lr.items() for t in (0, 1, 2)])


def test_max_stable_lr_is_the_last_stable_rate_before_the_first_unstable_one():
    d = _table({0.01: 1.0, 0.02: 2.0, 0.04: 8.0, 0.08: 3.0})  # max_t z = 2z; 0.04 crosses τ = 10
    assert max_stable_lr(d, tau=10.0).lr_max.item() == 0.02
    assert np.isnan(max_stable_lr(d, tau=0.5).lr_max.item())


def test_a_diverged_run_is_unstable():
    d = _table({0.01: 1.0, 0.02: 1.0, 0.04: 1.0}, diverged=(0.02,))
    assert max_stable_lr(d, tau=10.0).lr_max.item() == 0.01


def test_optimal_lr_treats_divergence_as_infinite_loss():
    d = _table({0.01: 1.0, 0.02: 1.0})
    d.loc[d.lr == 0.02, "loss"] = np.nan
    assert optimal_lr(d).lr_opt.item() == 0.01


@pytest.mark.parametrize("slopes, expected", [
    ({"z_b_rms": 0.5, "dz_b_rms": 0.5, "delta1_rms": 0.5, "delta2_rms": 0.0, "z_a_rms": 0.5},
     ("unstable", True)),
    ({"z_b_rms": -1.0, "dz_b_rms": -1.0, "delta1_rms": -1.0, "delta2_rms": -1.0, "z_a_rms": 0.0},
     ("stable_no_feature_learning", False)),
    ({"z_b_rms": 0.0, "dz_b_rms": 0.0, "delta1_rms": 0.0, "delta2_rms": 0.0, "z_a_rms": 0.5},
     ("efficient_feature_learning", True)),
])
def test_classify_regime(slopes, expected):
    assert classify_regime(slopes) == expected


def _curve(x_opt, lrs_log2, diverged=()):
    """Final loss exp((log2 η − x_opt)²) of one seed on a grid of log2 η (a parabola in log loss)."""
    return pd.DataFrame([{"init": "A", "width": 64, "seed": 0, "step": 9, "lr": 2.0 ** x,
                          "loss": np.nan if x in diverged else float(np.exp((x - x_opt) ** 2))}
                         for x in lrs_log2])


def test_interpolated_optimal_lr_recovers_an_off_grid_vertex():
    grid = [-9 + k / 4 for k in range(9)]
    r = interpolated_optimal_lr(_curve(-7.6, grid)).iloc[0]
    assert r.method == "quadratic" and np.log2(r.lr_opt) == pytest.approx(-7.6)
    assert np.log2(r.lr_argmin) == -7.5 and r.lr_lo <= r.lr_opt <= r.lr_hi


def test_interpolated_optimal_lr_falls_back_to_the_argmin():
    grid = [-9 + k / 4 for k in range(9)]
    edge = interpolated_optimal_lr(_curve(-5.0, grid)).iloc[0]  # minimum beyond the grid's upper end
    assert edge.method == "edge" and edge.lr_opt == edge.lr_argmin == edge.lr_hi
    bad = interpolated_optimal_lr(_curve(-8.0, grid, diverged=(-7.75,))).iloc[0]
    assert bad.method == "diverged_neighbour" and np.log2(bad.lr_opt) == -8.0
