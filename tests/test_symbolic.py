"""The γ-recursions of docs/theory.md §5: summary table, theorems, LoRA+, and an independent oracle."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from sympy import Max, Rational, oo

from lora_theory.checks import RegistryKeyError
from lora_theory.theory import (
    COLUMNS,
    InitExponents,
    Regime,
    c,
    c_A,
    c_B,
    contract,
    derivation,
    efficient_region,
    exponents,
    gamma_A,
    gamma_B,
    gamma_product,
    gamma_sum,
    loss_optimal_exponent,
    max_stable_lr_exponent,
    max_stable_lr_exponent_symbolic,
    output_exponents,
    regime,
)

H = Rational(1, 2)
NEG = -math.inf
SETTINGS = settings(deadline=None, derandomize=True, max_examples=50)


# ------------------------------------------------------------------ oracle: plain numbers, written apart
def brute(a, b, ca, cb, opt=("adam",), steps=4, pretrained=False):
    """Rows (x, y, z, δ¹, δ², δ³, u) for t = 0..steps with Fractions and -inf (exact, no sympy)."""
    half = Fraction(1, 2)
    x, y, u = a + half, b, NEG
    z = NEG if pretrained else x + y
    rows = [(x, y, z, NEG, NEG, NEG, u)]
    for _ in range(steps):
        if opt[0] == "sgd":
            g, alignment = opt[1], opt[2]
            s = {"aligned": y + g + 1, "independent": y + g + half, "mixed": max(b + g + half, u + g + 1),
                 "feedback": max(b + g + half, u + g + 1, y + z + 1)}[alignment]
            dza, db = ca + s + 1, cb + (max(g, z) if alignment == "feedback" else g) + x
        else:
            dza = ca + 1 if y > NEG else NEG
            db = cb if x > NEG else NEG
        d1, d2, d3 = y + dza, db + x, db + dza
        x, y, u, z = max(x, dza), max(y, db), max(u, db), max(z, d1, d2, d3)
        rows.append((x, y, z, d1, d2, d3, u))
    return rows


def frac(v):
    """sympy exponent → Fraction (or -inf)."""
    return NEG if v == -oo else Fraction(int(v.p), int(v.q))


def kw(opt):
    return {} if opt[0] != "sgd" else {"g": Rational(opt[1]), "alignment": opt[2]}


quarters = st.integers(-12, 8).map(lambda k: Fraction(k, 4))
init_exp = st.one_of(st.just(NEG), quarters)
sgd_g = st.sampled_from([Fraction(-1), Fraction(-1, 2), Fraction(0)])
optimisers = st.one_of(st.sampled_from([("adam",), ("signsgd",)]),
                       st.tuples(st.just("sgd"), sgd_g,
                                 st.sampled_from(["aligned", "independent", "mixed", "feedback"])))


def sym(v):
    return -oo if v == NEG else Rational(v.numerator, v.denominator)


# ------------------------------------------------------------------ docs/theory.md §5 summary table
# (init, c, Z_A, B, Z_B for t >= 2, δ¹, δ², δ³ for t >= 3, verdict, internally unstable, B under-trained)
TABLE = [
    *[("A", cc, cc + 1, cc, 2 * cc + 1, 2 * cc + 1, 2 * cc + 1, 2 * cc + 1, "unstable", True, False)
      for cc in (Rational(-1, 4), Rational(0), H)],
    ("A", -H, H, -H, 0, 0, 0, 0, "efficient_feature_learning", True, False),
    ("A", Rational(-1), 0, -1, -1, -1, -1, -1, "stable_no_feature_learning", False, False),
    ("B", -H, H, 0, H, H, 0, 0, "unstable", True, True),  # B moves by n^{-1/2} only
    ("B", Rational(-1), 0, 0, 0, 0, -1, -1, "feature_learning", False, True),
]


@pytest.mark.parametrize("init, cc, za, b, zb, d1, d2, d3, verdict, internal, under", TABLE)
def test_summary_table(init, cc, za, b, zb, d1, d2, d3, verdict, internal, under):
    df = exponents(init, cc)
    assert list(df.columns) == COLUMNS and list(df.step) == [0, 1, 2, 3, 4]
    for t in (2, 3, 4):
        assert (df.z_a[t], df.b[t], df.z_b[t]) == (za, b, zb)
    for t in (3, 4):
        assert (df.delta1[t], df.delta2[t], df.delta3[t]) == (d1, d2, d3)
    assert regime(init, cc) == Regime(verdict, internal, under)


def test_first_steps_freeze_the_partner_of_a_zero_factor():
    a, b = exponents("A", -H), exponents("B", -1)
    assert (a.z_a[1], a.b[1], a.z_b[1], a.delta1[1], a.delta3[1]) == (0, -H, -H, -oo, -oo)
    assert a.delta2[2] == -H  # δ² = c + x_1 = -1/2 at t = 2: Init[A] is efficient only from t = 3
    assert (b.z_a[1], b.b[1], b.z_b[1], b.delta2[1]) == (0, 0, 0, -oo)
    assert all(v == -oo for v in a.loc[0, ["delta1", "delta2", "delta3"]])


def test_theorems_maximal_exponents():
    assert max_stable_lr_exponent("A") == Rational(-1, 2) and max_stable_lr_exponent("B") == -1
    expected = {"A": -H, "B": -1, "AB": -H, "AB_raw": -H, "peft_true": -H, "peft_gaussian": -H,
                "peft_false": -1, "peft_orthogonal": -1}
    assert {k: max_stable_lr_exponent(k) for k in expected} == expected
    assert max_stable_lr_exponent((-oo, -oo)) == oo  # the saddle: nothing ever moves
    assert max_stable_lr_exponent((0, H)) == -oo  # B_0A_0Z = n^{1} already at init
    assert max_stable_lr_exponent("B", lr_ratio_exponent=1) == -1  # LoRA+: c_A = c* = -1, c_B = 0


@pytest.mark.parametrize("init", ["A", "B"])
def test_lora_plus_is_efficient_and_internally_stable(init):
    assert regime(init, (-1, 0)) == Regime("efficient_feature_learning", False, False)


def test_symbolic_exponents_and_closed_forms():
    df = exponents("A", c)
    assert df.z_a[3] == Max(0, c + 1) and df.z_b[3] == Max(c, 2 * c + 1) and df.delta3[3] == 2 * c + 1
    assert max_stable_lr_exponent_symbolic().args[-1].expr == sympy.Min(-H, -gamma_A - H, -gamma_B - 1)
    assert efficient_region("A") == sympy.And(sympy.Eq(c_A + c_B, -1), c_B <= 0)
    assert efficient_region("B") == sympy.And(sympy.Eq(c_A + c_B, -1), c_A <= -1)


def test_gamma_rules():
    assert gamma_product(H, c, -1) == c - H and gamma_product(c, -oo) == -oo
    assert gamma_sum(-oo, -oo) == -oo and gamma_sum(c, c + 1, -oo) == c + 1
    assert contract(-H, "n", coherent=False) == 0 and contract(c, "n") == c + 1 and contract(-oo, "n") == -oo
    with pytest.raises(ValueError, match="over must be one of"):
        contract(0, "m")


def test_derivation_text():
    text = derivation("A")
    assert "c* = -1/2" in text and "| 3 | 1/2 | -1/2 | -1/2 | 0 | 0 | 0 | 0 |" in text
    assert "efficient_feature_learning; internally unstable" in text
    assert "feature_learning; internally stable; B under-trained" in derivation("B")
    tex = derivation("B", lr_exponent=(-1, 0), fmt="latex")
    assert "\\begin{tabular}" in tex and "\\end{tabular}" in tex and "$-\\infty$" in tex
    assert "% Maximal stable shared exponent c* = -1 (optimiser adam); here c_A = -1, c_B = 0." in tex
    assert "needs steps >= 3" in derivation("A", steps=2)


# ------------------------------------------------------------------ properties
@SETTINGS
@given(a=init_exp, b=init_exp, ca=quarters, cb=quarters, opt=optimisers, pretrained=st.booleans())
def test_recursion_matches_brute_force(a, b, ca, cb, opt, pretrained):
    init = InitExponents(sym(a), sym(b), pretrained)
    df = exponents(init, (sym(ca), sym(cb)), opt[0], steps=4, **kw(opt))
    ref = brute(a, b, ca, cb, opt, 4, pretrained)
    got = [tuple(frac(df[k][t]) for k in ("z_a", "b", "z_b", "delta1", "delta2", "delta3")) for t in range(5)]
    assert got == [r[:6] for r in ref]
    for t, r in enumerate(ref):  # the columns the statistics registry reads, against the oracle
        assert frac(df.dz_b[t]) == (max(r[3:6]) if t else NEG)  # γ[ΔZ_B] = max(δ¹, δ², δ³), not z_t
        assert frac(df.z_b_total[t]) == max(r[2], ref[0][0] + ref[0][1])  # s·B_tA_tZ, B_0A_0 included
        if not pretrained:  # z_t = x_t + y_t: the library's max-plus algebra distributes
            assert frac(df.z_b[t]) == frac(df.z_a[t]) + frac(df.b[t])


@SETTINGS
@given(a=init_exp, b=init_exp, opt=optimisers, eps=st.integers(1, 64).map(lambda k: Fraction(k, 64)))
def test_maximal_exponent_is_tight(a, b, opt, eps):
    cstar = max_stable_lr_exponent((sym(a), sym(b)), opt[0], steps=4, **kw(opt))

    def stable(cc):
        return max(r[2] for r in brute(a, b, cc, cc, opt, 4)) <= 0

    if a == b == NEG:
        assert cstar == oo
    elif cstar == -oo:
        assert a + Fraction(1, 2) + b > 0  # unstable at init, whatever the LR
    else:
        cs = frac(cstar)
        assert stable(cs) and stable(cs - eps) and not stable(cs + eps)


@functools.lru_cache(maxsize=None)
def _piecewise(opt):
    return max_stable_lr_exponent_symbolic(opt[0], steps=4, **kw(opt))


@SETTINGS
@given(a=init_exp, b=init_exp, opt=st.sampled_from([("adam",), ("sgd", Fraction(-1, 2), "mixed")]))
def test_symbolic_piecewise_matches_solver(a, b, opt):
    numeric = max_stable_lr_exponent((sym(a), sym(b)), opt[0], steps=4, **kw(opt))
    assert _piecewise(opt).subs({gamma_A: sym(a), gamma_B: sym(b)}) == numeric


@functools.lru_cache(maxsize=None)
def _region(a, b, opt):
    return efficient_region((sym(a), sym(b)), opt[0], steps=4, **kw(opt))


@SETTINGS
@given(a=init_exp, b=init_exp, ca=quarters, cb=quarters, on_line=st.booleans(),
       opt=st.sampled_from([("adam",), ("adam",), ("sgd", Fraction(-1), "aligned")]))
def test_efficient_region_matches_regime(a, b, ca, cb, on_line, opt):
    cb = -1 - ca if on_line else cb
    point = {c_A: sym(ca), c_B: sym(cb)}
    verdict = regime((sym(a), sym(b)), (sym(ca), sym(cb)), opt[0], steps=4, **kw(opt))
    rows = brute(a, b, ca, cb, opt, 4)  # the oracle: stable at every step, δ¹ = δ² = Θ(1) from t = 3 on
    oracle = all(r[2] <= 0 for r in rows) and all(r[3] == 0 and r[4] == 0 for r in rows[3:])
    assert (verdict.regime == "efficient_feature_learning") == oracle
    assert bool(_region(a, b, opt).subs(point)) == oracle
    # Li et al. (docs/theory.md §7), with γ_Li[A_0] := γ[A_0 Z] − 1
    if opt == ("adam",) and not a == b == NEG:
        li = ca + cb == -1 and a + Fraction(1, 2) - 1 <= ca and b <= cb
        assert li == (verdict.regime == "efficient_feature_learning")
        assert bool(efficient_region().subs({**point, gamma_A: sym(a), gamma_B: sym(b)})) == li


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, message", [
    (lambda: exponents("C", -1), "init must be one of"),
    (lambda: exponents([1, 2, 3], -1), "init must be one of"),
    (lambda: exponents("A", -1, optimizer="rmsprop"), "optimizer must be one of"),
    (lambda: exponents("A", -1, steps=0), "steps must be an integer >= 1"),
    (lambda: exponents("A", -1, steps=2.0), "steps must be an integer >= 1"),
    (lambda: exponents("A", math.nan), "lr_exponent must be a finite exponent"),
    (lambda: exponents("A", math.inf), "lr_exponent must be a finite exponent"),
    (lambda: exponents("A", -oo), "lr_exponent must be a finite exponent"),
    (lambda: exponents("A", (-1, 0, 1)), "lr_exponent must be c or a pair"),
    (lambda: exponents((math.nan, 0), -1), "init gamma_A0 must be a finite exponent or -oo"),
    (lambda: exponents((0, oo), -1), "init gamma_B0 must be a finite exponent or -oo"),
    (lambda: exponents("A", -1, g=0), "only apply to optimizer='sgd'"),
    (lambda: exponents("A", -1, "sgd", alignment="sideways"), "alignment must be one of"),
    (lambda: exponents("A", -1, "sgd", beta=1), "sgd keyword arguments must be among"),
    (lambda: exponents("A", -1, "sgd", g=math.inf), "g must be a finite exponent"),
    (lambda: max_stable_lr_exponent("A", lr_ratio_exponent=math.nan), "lr_ratio_exponent must be"),
    (lambda: regime("A", c), "regime needs numeric exponents"),
    (lambda: regime("A", -1, steps=2), "steps must be an integer >= 3"),
    (lambda: efficient_region("A", steps=1), "steps must be an integer >= 3"),
    (lambda: derivation("A", fmt="html"), "fmt must be one of"),
    (lambda: derivation((-oo, -oo)), "no finite maximal exponent"),
])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_unknown_init_is_also_a_key_error():
    with pytest.raises(KeyError) as info:
        max_stable_lr_exponent("Init[A]")
    assert isinstance(info.value, RegistryKeyError) and "'A'" in str(info.value)


# ------------------------------------------------------------------ the toy's readout (docs/theory.md §9.3)
def toy_drift(a, b, cc, w, steps=4):
    """max_t γ[f_t − f_0] of the toy started at the pretrained model, readout entries Θ(n^w), written apart
    from the library with Fractions and -inf: ΔA·Z is coherent over n and needs B ≠ 0, ΔB has ±η entries
    and needs Z_A ≠ 0; the readout sums ΔB's rows (∝ sign W_out) coherently, the random B_0 by the CLT."""
    half = Fraction(1, 2)
    x, y, u, drift = a + half, b, NEG, NEG
    for _ in range(steps):
        dza = cc + 1 if y > NEG else NEG
        db = cc if x > NEG else NEG
        read_b = max(w + b + half, w + u + 1)  # W_outᵀ(φ′ ⊙ B): B_0 part (CLT), learned part (aligned)
        drift = max(drift, dza + read_b, w + db + x + 1, w + db + dza + 1)
        x, y, u = max(x, dza), max(y, db), max(u, db)
    return drift


def test_toy_loss_optimal_exponents_by_hand():
    # SP (w = −1/2), Init[A]: step 1 moves f by c + 1/2 (B only); from t = 2 the A-path (c + 1) + (w + c + 1)
    # = 2c + 3/2 dominates, so c* = −3/4. Init[B]: step 1, A through B_0: c + 1 + (w + 1/2) = c + 1 → c* = −1.
    # μP (w = −1): Init[A] 2c + 1 → −1/2; Init[B] max(c + 1/2, 2c + 1) → −1/2.
    hand = {("A", "sp"): Rational(-3, 4), ("B", "sp"): Rational(-1), ("A", "mup"): -H, ("B", "mup"): -H}
    for (init, readout), value in hand.items():
        assert loss_optimal_exponent(init, readout) == value
        a, b = (Fraction(-1, 2), NEG) if init == "A" else (NEG, Fraction(0))
        w = Fraction(-1, 2) if readout == "sp" else Fraction(-1)
        grid = [Fraction(k, 24) for k in range(-72, 25)]  # brute force over c on a 1/24 grid
        assert max(cc for cc in grid if toy_drift(a, b, cc, w) <= 0) == frac(value)
    assert loss_optimal_exponent("B", "mup", stable_features=True) == -1  # Z_B = n^{c+1} also bounded
    assert output_exponents("A", Rational(-3, 4)).out_drift.iloc[-1] == 0  # Θ(1) output moves at c*


@SETTINGS
@given(a=init_exp, b=init_exp, w=st.integers(-8, 0).map(lambda k: Fraction(k, 4)),
       eps=st.integers(1, 64).map(lambda k: Fraction(k, 64)))
def test_toy_loss_optimal_exponent_is_tight(a, b, w, eps):
    cstar = loss_optimal_exponent(InitExponents(sym(a), sym(b), True), sym(w))
    if a == b == NEG:
        assert cstar == oo
        return
    cs = frac(cstar)
    ok = lambda cc: toy_drift(a, b, cc, w) <= 0  # noqa: E731
    assert ok(cs) and ok(cs - eps) and not ok(cs + eps)
