"""First scaling checks of the theorems in the `layer` setting (docs/theory.md §5).

Single sample, Adam(0.9, 0.999), r = 4, n = 2^7..2^12, 6 seeds. The fitted quantity is the RMS over
steps t = 2..4 of each statistic (the theory gives every t ≥ 2 the same exponent, and the window
averages out Adam's finite-width oscillation); per-step slopes are checked where they are clean.
"""

import numpy as np
import pandas as pd
import pytest

from lora_theory import simulate
from lora_theory.config import ModelConfig
from lora_theory.fit import fit_exponent
from lora_theory.theory import exponents, max_stable_lr_exponent

WIDTHS = [2 ** k for k in range(7, 13)]
STATS = ("z_a_rms", "z_b_rms", "b_shift_rms")
CASES = [("A", -0.5), ("B", -1.0), ("A", -1.0)]


def _theory(init: str, c: float, step: int) -> tuple[float, float, float]:
    """Exponents of (Z_A, Z_B, B_t − B_0) at ``step`` from the sympy γ-calculus
    (issue: symbolic = measured)."""
    row = exponents(init, c, steps=4).set_index("step").loc[step]
    return float(row.z_a), float(row.z_b), float(row.b_shift)


THEORY = {case: _theory(*case, step=2) for case in CASES}


def test_theory_is_constant_over_the_window():
    """The window fit below is valid because the theory gives t = 2, 3, 4 the same exponents."""
    for case in CASES + [("B", -0.5)]:
        assert {_theory(*case, step=t) for t in (2, 3, 4)} == {_theory(*case, step=2)}


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    cases = CASES + [("B", -0.5)]
    return pd.concat([simulate(widths=WIDTHS, inits=i, lr_exponent=c, seeds=range(6), steps=4, progress=False)
                      for i, c in cases])


def _window(df: pd.DataFrame) -> pd.DataFrame:
    key = ["init", "lr_exponent", "width", "seed"]
    return df[df.step >= 2].groupby(key)[list(STATS)].agg(lambda x: np.sqrt(np.mean(x ** 2))).reset_index()


@pytest.mark.parametrize("case", CASES)
def test_window_slopes_match_theory(runs, case):
    w = _window(runs)
    sel = w[(w.init == case[0]) & (w.lr_exponent == case[1])]
    for stat, expected in zip(STATS, THEORY[case]):
        assert fit_exponent(sel, stat).slope == pytest.approx(expected, abs=0.1), stat


@pytest.mark.parametrize("step", [2, 3, 4])
def test_init_a_per_step_slopes(runs, step):
    """Init[A] at η = n^-1/2: Z_A = Θ(n^1/2) (internal instability), Z_B = Θ(1), B moves Θ(n^-1/2)."""
    sel = runs[(runs.init == "A") & (runs.lr_exponent == -0.5) & (runs.step == step)]
    for stat, expected in zip(STATS, THEORY[("A", -0.5)]):
        assert fit_exponent(sel, stat).slope == pytest.approx(expected, abs=0.1), stat


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_init_b_moves_b_by_n_to_the_minus_one(runs, step):
    """Init[B] at η = n^-1: B_t − B_0 = Θ(n^-1) (B under-trained); exactly zero at t = 1 (Z_A^0 = 0)."""
    sel = runs[(runs.init == "B") & (runs.lr_exponent == -1.0) & (runs.step == step)]
    if step == 1:
        assert (sel.b_shift_rms == 0).all()
    else:
        assert fit_exponent(sel, "b_shift_rms").slope == pytest.approx(-1.0, abs=0.1)


def test_first_step_of_init_a_is_vanishing(runs):
    """t = 1 under Init[A]: only B moves, Z_B^1 = Θ(n^-1/2) (docs/theory.md §5)."""
    sel = runs[(runs.init == "A") & (runs.lr_exponent == -0.5) & (runs.step == 1)]
    assert fit_exponent(sel, "z_b_rms").slope == pytest.approx(-0.5, abs=0.1)


def test_init_b_above_its_maximal_rate_is_unstable(runs):
    """Init[B] at η = n^-1/2 (c* + 1/2): Z_A and Z_B grow (theory n^1/2 each; Z_B measured steeper, ~0.6)."""
    w = _window(runs)
    sel = w[(w.init == "B") & (w.lr_exponent == -0.5)]
    z_a, z_b, b_shift = _theory("B", -0.5, step=2)
    assert fit_exponent(sel, "z_a_rms").slope == pytest.approx(z_a, abs=0.1)
    assert fit_exponent(sel, "b_shift_rms").slope == pytest.approx(b_shift, abs=0.1)
    assert z_b == 0.5 and fit_exponent(sel, "z_b_rms").slope > 0.4


@pytest.mark.xfail(strict=True, reason="Known finite-width disagreement: at t = 2 Adam's second step nearly "
                   "cancels the first under Init[B] (the optimum in span(B0) is O(n^-1/2)), and the "
                   "cancellation ratio converges slowly in n; the step-2 slope is about -0.2 at n <= 4096 "
                   "(and +0.15 at step 4).")
def test_init_b_per_step_feature_slopes_at_step_2(runs):
    sel = runs[(runs.init == "B") & (runs.lr_exponent == -1.0) & (runs.step == 2)]
    assert fit_exponent(sel, "z_b_rms").slope == pytest.approx(0.0, abs=0.1)


def test_feature_level_maximal_stable_rate_scales_as_theory():
    """Largest η with max_t RMS(Z_B) ≤ 10 (Adam, 10 steps): slope −1/2 for Init[A], −1 for Init[B] (±0.1)."""
    from lora_theory.analysis import max_stable_lr

    df = simulate(widths=[2 ** k for k in range(7, 12)], lrs=[2.0 ** (k / 4) for k in range(-60, 1)],
                  lr_exponent=None, inits=["A", "B"], seeds=[0, 1], steps=10, progress=False)
    stab = max_stable_lr(df, tau=10.0)
    assert fit_exponent(stab[stab.init == "A"], "lr_max").slope == pytest.approx(-0.5, abs=0.1)
    assert fit_exponent(stab[stab.init == "B"], "lr_max").slope == pytest.approx(-1.0, abs=0.1)


LARGE = [2 ** k for k in range(10, 15)]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_window_slopes_at_large_width(case):
    """The window slopes of the test above, at n = 2^10..2^14 (8 seeds): closer to the theory (±0.05)."""
    df = simulate(widths=LARGE, inits=case[0], lr_exponent=case[1], seeds=range(8), steps=4, progress=False)
    w = _window(df)
    for stat, expected in zip(STATS, THEORY[case]):
        assert fit_exponent(w, stat).slope == pytest.approx(expected, abs=0.05), stat


@pytest.fixture(scope="module")
def sgd_b():
    """Init[B] under plain SGD at the old rule's c* = -3/2 and at -2 (docs/theory.md §8.5-§8.6)."""
    return simulate(widths=[2 ** k for k in range(7, 12)], inits="B", lr_exponent=[-1.5, -2.0],
                    optimizers="sgd", seeds=range(6), steps=3, progress=False)


def test_sgd_init_b_feedback_term_blows_up_at_minus_three_halves(sgd_b):
    """The coherent B_0ᵀB_0·Z_A term: at c = -3/2, Z_B grows like n^((t-1)/2) (the old "mixed" rule
    said Θ(1), i.e. stable); the symbolic rule now predicts the growth and places c* below -3/2."""
    assert max_stable_lr_exponent("B", optimizer="sgd", steps=3) < -1.5
    # old verdict
    assert float(max_stable_lr_exponent("B", optimizer="sgd", steps=3, alignment="mixed")) == -1.5
    new = exponents("B", -1.5, optimizer="sgd", steps=3).set_index("step").z_b
    old = exponents("B", -1.5, optimizer="sgd", steps=3, alignment="mixed").set_index("step").z_b
    slopes = [fit_exponent(sgd_b[(sgd_b.lr_exponent == -1.5) & (sgd_b.step == t)], "z_b_rms").slope
              for t in (2, 3)]
    assert 0.25 < slopes[0] < slopes[1]  # Z_B grows with n, faster at each step: unstable
    # nearer the new rule (1/2, 1) than the old (0, 0); at n = 2^7..2^11 the
    for t, slope in zip((2, 3), slopes):
        # slopes run above the new rule's (about +0.8 and +1.3; docs/theory.md §8.6: +0.71, +1.18 up to 2^13)
        assert abs(slope - float(new[t])) < abs(slope - float(old[t])), (t, slope)


def test_sgd_init_b_is_stable_at_minus_two(sgd_b):
    """At c = -2 only the random B_0ᵀ(W*Z - y) drives A: Z_B = Θ(n^-1/2) at every step, as predicted."""
    predicted = exponents("B", -2, optimizer="sgd", steps=3).set_index("step").z_b
    for step in (1, 2, 3):
        sel = sgd_b[(sgd_b.lr_exponent == -2.0) & (sgd_b.step == step)]
        assert fit_exponent(sel, "z_b_rms").slope == pytest.approx(float(predicted[step]), abs=0.1), step


def test_sgd_orthogonal_init_delta3_loses_its_leading_pair():
    """PEFT's orthogonal init has B_0A_0 = 0, so ⟨A_0Z, B_0ᵀdZ̄⟩ = 0 and δ³ = s·ΔBΔZ_A is exactly 0 at
    step 1 and n^{c+1} below the generic estimate afterwards (docs/theory.md §8.8); the generic rule
    (2c + 2 = -9/4 at c = -17/8) is 1.1 above the measured slope."""
    c = -2.125
    df = simulate(widths=[2 ** k for k in range(7, 12)], inits="peft_orthogonal", lr_exponent=c,
                  optimizers="sgd", seeds=range(6), steps=3, model=ModelConfig(n_train=1), progress=False)
    theory = exponents("peft_orthogonal", c, optimizer="sgd", steps=3).set_index("step").delta3
    assert theory[1] == -np.inf and float(theory[2]) == float(theory[3]) == 3 * c + 3
    assert df[df.step == 1].delta3_rms.abs().max() < 1e-12  # round-off of the QR only
    for step in (2, 3):
        e = fit_exponent(df[df.step == step], "delta3_rms", method="width")
        assert e.lo <= 3 * c + 3 <= e.hi, (step, e)
        assert e.hi < 2 * c + 2, (step, e)  # the generic estimate is excluded
