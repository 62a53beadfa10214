"""fit_exponent: interval methods, the finite-width correction and the handling of diverged rows."""

import warnings

import numpy as np
import pandas as pd
import pytest

from lora_theory import simulate
from lora_theory.fit import METHODS, FitWarning, fit_exponent, fit_exponents


def _synthetic(gamma=0.5, kappa=0.0, seeds=4, noise=0.05, widths=(64, 128, 256, 512, 1024, 2048), seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"width": n, "seed": s,
             "v": n ** gamma * (1 + kappa * n ** -0.5) * np.exp(noise * rng.standard_normal())}
            for n in widths for s in range(seeds)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_brackets_a_noisy_power_law(method):
    e = fit_exponent(_synthetic(), "v", method=method)
    assert e.lo < e.slope < e.hi and e.lo < 0.5 < e.hi and e.method == method


def test_correction_recovers_the_exponent_under_an_n_to_the_minus_half_term():
    d = _synthetic(gamma=0.5, kappa=3.0, noise=0.01, seeds=6)
    e = fit_exponent(d, "v", correction=True)
    assert e.slope < 0.45  # the raw slope is biased by the correction term
    assert e.corrected_lo < 0.5 < e.corrected_hi and abs(e.bias) > 0.05


def test_diverged_rows_are_left_out_with_a_warning_naming_the_widths():
    """The issue's example: at step 2 the widths 128 and 256 have diverged; their values are NaN
    (not huge)."""
    df = simulate(widths=[32, 64, 128, 256], inits="A", lr_exponent=0.0, lrs=4, seeds=[0, 1], steps=4)
    sel = df[(df.lr == 4) & (df.step == 2)]
    assert sel[sel.diverged].z_b_rms.isna().all() and sel.diverged.any()
    with pytest.warns(FitWarning, match=r"width \[128, 256\]"):
        e = fit_exponent(sel, "z_b_rms")
    assert e.n_points == 4


def test_bad_arguments_are_clear_errors():
    d = _synthetic()
    with pytest.raises(ValueError, match="method must be one of"):
        fit_exponent(d, "v", method="jackknife")
    with pytest.raises(ValueError, match="level must be"):
        fit_exponent(d, "v", level=95)
    with pytest.raises(ValueError, match="stats must name columns"):
        fit_exponents(d, ["nope"], by=["seed"])
    with pytest.raises(ValueError, match="at least 4 distinct width"):
        fit_exponent(d[d.width <= 256], "v", correction=True)


def test_fit_exponents_gives_nan_for_an_exact_zero_and_no_warning_for_clean_data():
    d = _synthetic().assign(zero=0.0, g="x")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        table = fit_exponents(d.drop(columns="zero"), ["v"], by=["g"])
    assert np.isfinite(table.slope).all()
    zero = fit_exponents(d, ["zero"], by=["g"])  # an exactly zero quantity has no exponent: NaN, not an error
    assert zero.slope.isna().all()
