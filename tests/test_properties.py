"""Hypothesis properties of the scaling laws: measured width exponents follow the γ-calculus.

Drawn: rank, seed, optimiser (Adam with one sample; SignSGD with several samples, since one sample
makes pure sign descent oscillate with period 2, docs/theory.md §9.2) and init. Layer setting, n = 2^7..2^11,
three seeds, 4 steps. Each statistic is fitted on its RMS over the steps where the theory gives it the
same exponent as at the last step (e.g. t = 1..4 for Z_A under Init[B], t = 2..4 under Init[A]).
Tolerance 0.2: the finite-width bias of slopes at these modest widths (docs/theory.md §9.1). Draws are
derandomized so CI sees the same examples every run.

The ±0.2 bound holds for most draws, not all. It is a fit over 3 seeds, and at rank 2 the seed noise
is large. A 300-example random run (session 2) found init AB, rank 2, Adam, seeds 1530–1532 with a
B_t − B_0 slope of −0.74 (theory −1/2). Neighbouring seed groups average −0.53, so this is noise, not
bias. paper_repro.md gives the commands that reproduce it.
"""

import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_theory import ModelConfig, TrainConfig, simulate, validate
from lora_theory.analysis import window_rms
from lora_theory.fit import FitWarning, fit_exponent
from lora_theory.theory import exponents, max_stable_lr_exponent

WIDTHS = [2 ** k for k in range(7, 12)]
STATS = ("z_a_rms", "z_b_rms", "b_shift_rms")
KEYS = ("z_a", "z_b", "b_shift")
TOL = 0.2

cases = st.fixed_dictionaries({
    "rank": st.sampled_from([2, 4, 8]),
    "seed": st.integers(0, 10_000),
    "optimizer": st.sampled_from(["adam", "signsgd"]),
    "init": st.sampled_from(["A", "B", "AB", "peft_true"]),
})


def _slopes(case: dict, c) -> dict[str, float]:
    df = simulate(widths=WIDTHS, inits=case["init"], lr_exponent=float(c),
                  seeds=[case["seed"] + k for k in range(3)], steps=4, ranks=case["rank"],
                  optimizers=case["optimizer"], progress=False,
                  model=ModelConfig(n_train=4 if case["optimizer"] == "signsgd" else 1))
    theory = exponents(case["init"], c, steps=4).set_index("step")
    out = {}
    for stat, key in zip(STATS, KEYS):
        constant = theory[key] == theory[key].iloc[-1]
        first = int(constant[::-1].cummin()[::-1].idxmax())  # start of the final constant stretch
        out[stat] = fit_exponent(window_rms(df, [stat], first_step=max(first, 1)), stat, n_boot=0).slope
    return out


def _check_exponents(case):
    c = max_stable_lr_exponent(case["init"])
    theory = exponents(case["init"], c, steps=4).set_index("step").loc[3]
    measured = _slopes(case, c)
    for stat, key in zip(STATS, KEYS):
        assert measured[stat] == pytest.approx(float(theory[key]), abs=TOL), (stat, measured)


def _check_blow_up(case):
    c = max_stable_lr_exponent(case["init"]) + sympy_half()
    theory = exponents(case["init"], c, steps=4).set_index("step").loc[3]
    assert float(theory["z_b"]) > 0  # the theory predicts instability here ...
    assert _slopes(case, c)["z_b_rms"] > 0.25  # ... and Z_B measurably grows with n


@settings(max_examples=8, deadline=None, derandomize=True)  # the same draws on every run (CI)
@given(case=cases)
def test_exponents_at_the_maximal_stable_rate_match_the_symbolic_prediction(case):
    _check_exponents(case)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(case=cases)
def test_half_a_unit_above_the_maximal_rate_the_output_features_blow_up(case):
    _check_blow_up(case)


def sympy_half():
    import sympy

    return sympy.Rational(1, 2)


MATRIX = pd.read_csv(Path(__file__).parent.parent / "results" / "validation" / "matrix.csv")
AGREED = MATRIX[(MATRIX.group == "main") & (MATRIX.status == "agree")].reset_index(drop=True)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(i=st.integers(0, len(AGREED) - 1), seed=st.integers(10_000, 20_000))
def test_the_validation_matrix_agreements_hold_for_fresh_seeds(i, seed):
    """Draw any (init, optimiser incl. SGD, c, statistic) the committed matrix found in agreement with the
    calculus; six fresh seeds (same widths, step T = 4) are consistent with the theory: it lies inside their
    99.9% per-width interval (a 95% one would fail one draw in twenty by design)."""
    row = AGREED.iloc[i]
    df = simulate(widths=list(validate.WIDTHS[False]), inits=row.init, lr_exponent=float(row.c_a),
                  optimizers=row.optimizer, seeds=[seed + k for k in range(6)], steps=validate.STEPS,
                  progress=False, model=ModelConfig(n_train=8 if row.optimizer == "signsgd" else 1),
                  train_cfg=TrainConfig(steps=validate.STEPS, lr_ratio_exponent=float(row.c_b - row.c_a)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        e = fit_exponent(df[df.step == validate.STEPS], row.stat, method="width", level=0.999)
    assert e.lo <= row.theory <= e.hi, (row.cell, row.stat, str(e))
