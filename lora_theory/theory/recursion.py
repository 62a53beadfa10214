"""The one-step γ-recursion of LoRA training, folded over steps (docs/theory.md §5, §8).

One update (docs/theory.md §4) is

    ΔZ_B^t = B_{t−1}ΔZ_A^t + ΔB_t Z_A^{t−1} + ΔB_t ΔZ_A^t = δ¹_t + δ²_t + δ³_t,

and the partner of an exact zero gets no update under sign-like optimisers (sign(0) = 0: step 1 of
Init[A]/Init[B]). ``z_b`` is the exponent of the adapter's effect on the output,
s·(B_tA_t − B_0A_0·[B_0A_0 absorbed by W*])Z: z_t = max(z_{t−1}, δ¹, δ², δ³) from z_0 = x_0 + y_0, or
from −∞ when the scheme starts at the pretrained model. ``z_b_total`` is γ[s·B_tA_tZ] itself (what
the engine's ``z_b_rms`` measures; it differs from ``z_b`` only when W* absorbed a non-zero B_0A_0).

In the joint limit r = Θ(n^ρ) with multiplier s = α·r^{−γ_α} (:class:`RankScaling`, docs/theory.md §13),
γ[s] = −γ_α·ρ multiplies every term of the output, the init variances carry their r-exponents, and each
sum over the r columns of B adds ρ (aligned terms) or ρ/2 (independent): δ² and δ³ are aligned sums,
δ¹ = s·B_0ΔZ_A (independent: B_0 is random) + s·(B − B_0)ΔZ_A (aligned: learned along the update).

Glossary: a = γ[A_0 entries], b = γ[B_0 entries], x_t = γ[Z_A^t] (x_0 = a + 1/2), y_t = γ[B_t],
u_t = γ[B_t − B_0], v_t = γ[A_t − A_0] (entries), g = γ[dZ̄] (SGD only), c_A / c_B the learning-rate
exponents of A and B, ρ the rank exponent, γ_α the multiplier convention, γ[s] = γ[α] − γ_α·ρ.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import sympy
from sympy import Rational, oo  # noqa: F401 (Rational: doctests)

from ..checks import lookup
from ..inits import INITS
from .algebra import contract, exact, gamma_product, gamma_sum, scaling_exponent

_ZERO, _ONE = sympy.Integer(0), sympy.Integer(1)  # exact defaults of RankScaling
WINDOW = 3  # first step at which efficiency / feature learning is checked (docs/theory.md §4)
COLUMNS = ["step", "z_a", "b", "b_shift", "z_b", "delta1", "delta2", "delta3", "dz_b", "a_shift", "z_b_total"]

__all__ = ["ALIGNMENTS", "COLUMNS", "OPTIMISERS", "WINDOW", "InitExponents", "RankScaling", "check_steps",
           "init_exponents", "lr_exponents", "rank_scaling", "trajectory", "update_rule"]


@dataclass(frozen=True, slots=True)
class InitExponents:
    """Entry exponents of the initial factors: ``a`` = γ[A_0], ``b`` = γ[B_0] (``-oo`` for zero).

    ``starts_at_pretrained``: B_0A_0Z is absent from the output (W* absorbed it, or it is exactly 0);
    ``product_is_zero``: B_0A_0 = 0 exactly although neither factor is zero (orthogonal halves).
    """

    a: sympy.Expr
    b: sympy.Expr
    starts_at_pretrained: bool = False
    product_is_zero: bool = False


@dataclass(frozen=True, slots=True)
class RankScaling:
    """Rank and multiplier as exponents: r = Θ(n^``rho``), s = α·r^{−``gamma_alpha``}, α = Θ(n^``alpha``).

    The default (ρ = 0, fixed rank) is the paper's setting, where s = Θ(1) drops out. ``alpha`` is 0 in the
    theory (α a constant); a symbol there records how a bound depends on α (``solve.lr_law``).
    """

    rho: sympy.Expr = _ZERO
    gamma_alpha: sympy.Expr = _ONE
    alpha: sympy.Expr = _ZERO

    @property
    def s(self):
        """γ[s] = γ[α] − γ_α·ρ, the exponent of the multiplier."""
        return sympy.expand(self.alpha - self.gamma_alpha * self.rho)


def rank_scaling(rank_exponent=0, scaling="lora") -> RankScaling:
    """Validated :class:`RankScaling`: ρ a number in [0, 1) or a symbol; ``scaling`` as in
    :func:`~lora_theory.theory.algebra.scaling_exponent`.

    >>> rank_scaling(0.5, "rslora").s
    -1/4
    """
    rho = exact(rank_exponent, "rank_exponent")
    if rho.is_number and not 0 <= rho < 1:
        raise ValueError(f"rank_exponent must be in [0, 1) (r = n^rho with r < n), got {rank_exponent!r}")
    return RankScaling(rho, scaling_exponent(scaling))


def init_exponents(init, rank_exponent=0) -> InitExponents:
    """:class:`InitExponents` of a registered init name, a pair (γ[A_0], γ[B_0]) or an InitExponents.

    For a registered name the entry variance n^n_exp·r^r_exp gives γ = (n_exp + ρ·r_exp)/2, with
    ρ = ``rank_exponent``; a pair or an InitExponents is taken as given (exponents in n, may hold ρ).

    >>> init_exponents("B")
    InitExponents(a=-oo, b=0, starts_at_pretrained=False, product_is_zero=False)
    >>> init_exponents("B", Rational(1, 2)).b
    -1/4
    """
    if isinstance(init, str):
        spec = lookup(INITS, init, "init")
        e, rho = spec.exponents(), exact(rank_exponent, "rank_exponent")
        a, b = (exact(g, "init", True) + (0 if g == -math.inf else exact(d.r_exp, "init") * rho / 2)
                for g, d in ((e.a, spec.a), (e.b, spec.b)))
        return InitExponents(a, b, e.starts_at_pretrained and -oo not in (a, b), e.product_is_zero)
    if isinstance(init, InitExponents):
        a, b, pre, zero = init.a, init.b, init.starts_at_pretrained, init.product_is_zero
    elif isinstance(init, (tuple, list)) and len(init) == 2:
        (a, b), pre, zero = init, False, False
    else:
        raise ValueError(f"init must be one of {sorted(INITS)}, a pair (gamma_A0, gamma_B0) or "
                         f"InitExponents, got {init!r}")
    return InitExponents(exact(a, "init gamma_A0", True), exact(b, "init gamma_B0", True), bool(pre),
                         bool(zero))


def lr_exponents(lr_exponent) -> tuple:
    """(c_A, c_B) from a shared c or a pair, as exact exponents."""
    pair = lr_exponent if isinstance(lr_exponent, (tuple, list)) else (lr_exponent, lr_exponent)
    if len(pair) != 2:
        raise ValueError(f"lr_exponent must be c or a pair (c_A, c_B), got {lr_exponent!r}")
    return tuple(exact(v, "lr_exponent") for v in pair)


def trajectory(init: InitExponents, ca, cb, updates: Callable, steps,
               rank: RankScaling = RankScaling()) -> list[dict]:
    """Fold the one-step recursion over t = 1..steps; one dict per step (t = 0 included), keys ``COLUMNS``.

    ``rank`` (default: fixed rank) sets ρ and the multiplier exponent γ[s] (module docstring).
    """
    check_steps(steps)
    rho, gs = rank.rho, rank.s
    x, y, u, v = contract(init.a, "n", coherent=False), init.b, -oo, -oo  # A_0 Z: CLT over n
    # γ[s·B_0A_0Z]: B_0 and A_0Z independent, a CLT sum over the r columns
    z0 = -oo if init.product_is_zero else gamma_product(gs, contract(gamma_product(x, y), "r", False, rho))
    z = -oo if init.starts_at_pretrained else z0
    rows = [{"step": 0, "z_a": x, "b": y, "b_shift": u, "z_b": z, "delta1": -oo, "delta2": -oo, "delta3": -oo,
             "dz_b": -oo, "a_shift": v, "z_b_total": gamma_sum(z, z0)}]
    for t in range(1, steps + 1):
        dza, db, pair = updates(x, y, u, z, init, ca, cb, gs, v=v)
        # s·B_{t−1}ΔZ_A^t: random B_0 (independent of the update's signs, CLT) + learned B − B_0 (aligned)
        d1 = gamma_product(gs, dza, gamma_sum(contract(init.b, "r", False, rho), contract(u, "r", True, rho)))
        d2 = gamma_product(gs, contract(gamma_product(db, x), "r", True, rho))  # s·ΔB_t Z_A^{t−1} ∝ Σ|Z_A,i|
        # s·ΔB_t ΔZ_A^t: an aligned sum over the r columns of (ΔB_t)_{·k}(ΔZ_A^t)_k, whose exponent is
        # db + dza unless the update rule knows better (``pair``)
        d3 = gamma_product(gs, contract(gamma_product(db, dza) if pair is None else pair, "r", True, rho))
        # ΔA is a sum of rank-one terms (row vector)·Zᵀ, so ΔA·Z is a coherent contraction: entries dza − 1
        v = gamma_sum(v, gamma_product(dza, -1))
        x, y, u, z = gamma_sum(x, dza), gamma_sum(y, db), gamma_sum(u, db), gamma_sum(z, d1, d2, d3)
        rows.append({"step": t, "z_a": x, "b": y, "b_shift": u, "z_b": z, "delta1": d1, "delta2": d2,
                     "delta3": d3, "dz_b": gamma_sum(d1, d2, d3), "a_shift": v,
                     "z_b_total": gamma_sum(z, z0)})
    return rows


def sign_updates(x, y, u, z, init, ca, cb, gs=0, v=-oo):
    """Sign-like updates (Adam, SignSGD): (γ[ΔZ_A^t], γ[ΔB_t], None) from the previous step's exponents;
    the multiplier (exponent ``gs``) drops out of a sign; None: δ³'s terms are γ[ΔB_t] + γ[ΔZ_A^t]."""
    # g_A Z = sign(S) sign(Z)ᵀZ: coherent over n; g_B has ±1 entries. sign(0) = 0 for a zero partner.
    return (-oo if y == -oo else contract(ca, "n")), (-oo if x == -oo else cb), None


def sgd_updates(x, y, u, z, init, ca, cb, gs=0, v=-oo, *, g, alignment):
    """Plain SGD updates (docs/theory.md §8): (γ[ΔZ_A^t], γ[ΔB_t], pair) from the previous step's
    exponents (``v`` = γ[A_{t−1} − A_0] entries); ``pair``: γ of one term (ΔB_t)_{·k}(ΔZ_A^t)_k of δ³
    when it is not γ[ΔB_t] + γ[ΔZ_A^t] (None otherwise).

    ΔZ_A^t = −η_A s·(B_{t−1}ᵀ dZ̄) ‖Z‖² (coherent over n) and ΔB_t = −η_B s·dZ̄ (Z_A^{t−1})ᵀ, with
    dZ̄ = (W*Z − y) + D, D the adapter's output (exponent z_{t−1}), so γ[dZ̄] = max(g, z_{t−1}).
    ``alignment`` says how B_{t−1}ᵀ dZ̄ contracts over n (``ALIGNMENTS``); ``gs`` = γ[s] (0 at fixed rank).
    """
    S = ALIGNMENTS[alignment](x, y, u, z, init.b, g)  # γ[B_{t−1}ᵀ dZ̄], an r-vector
    dz_bar = gamma_sum(g, z) if alignment == "feedback" else g
    # ΔA Z ∝ s (Bᵀ dZ̄) ZᵀZ; ΔB = η s dZ̄ Z_Aᵀ
    dza, db = contract(gamma_product(ca, gs, S), "n"), gamma_product(cb, gs, dz_bar, x)
    if not init.product_is_zero:
        return dza, db, None
    # δ³ = s·ΔB ΔZ_A ∝ dZ̄·⟨Z_A, Bᵀ dZ̄⟩ (an r-sum). With B_0A_0 = 0 (orthogonal halves) the leading pair
    # ⟨A_0Z, B_0ᵀ dZ̄⟩ is exactly 0: what is left pairs A_0Z with (B − B_0)ᵀ dZ̄ (coherent over n, learned
    # along dZ̄) and (A − A_0)Z (exponent v + 1) with Bᵀ dZ̄ (docs/theory.md §8.8)
    ip = gamma_sum(gamma_product(contract(init.a, "n", coherent=False), u, dz_bar, 1),
                   gamma_product(v, 1, S))
    return dza, db, gamma_product(cb, gs, dz_bar, ca, gs, 1, ip)


HALF = sympy.Rational(1, 2)
ALIGNMENTS = {
    # the three parts of B_{t−1}ᵀ dZ̄ (docs/theory.md §8.2): B_0ᵀ(W*Z − y) random (+1/2); (B − B_0)ᵀ(W*Z − y),
    # learned along W*Z − y (+1); B_{t−1}ᵀD, the adapter's own output, in the span of B (coherent, +1)
    "feedback": lambda x, y, u, z, b0, g: gamma_sum(gamma_product(b0, g, HALF), gamma_product(u, g, 1),
                                                    gamma_product(y, z, 1)),
    # earlier rules, kept for comparison: they miss the feedback term (and "mixed" uses γ[dZ̄] = g)
    "mixed": lambda x, y, u, z, b0, g: gamma_sum(contract(gamma_product(b0, g), "n", coherent=False),
                                                 contract(gamma_product(u, g), "n")),
    "aligned": lambda x, y, u, z, b0, g: contract(gamma_product(y, g), "n"),
    "independent": lambda x, y, u, z, b0, g: contract(gamma_product(y, g), "n", coherent=False),
}


OPTIMISERS = {"adam": sign_updates, "signsgd": sign_updates, "sgd": sgd_updates}


def update_rule(name, sgd_kw) -> tuple[Callable, str]:
    """(update rule (x, y, u, z, init, c_A, c_B, γ[s]) → (γ[ΔZ_A^t], γ[ΔB_t]), its description)."""
    updates = lookup(OPTIMISERS, name, "optimizer")
    if updates is sign_updates:
        if sgd_kw:
            raise ValueError(f"{sorted(sgd_kw)} only apply to optimizer='sgd', got optimizer={name!r}")
        return updates, ("Rules: γ[ΔZ_A^t] = c_A + 1 if B_{t−1} ≠ 0 else −∞; "
                         "γ[ΔB_t] = c_B if Z_A^{t−1} ≠ 0 else −∞.")
    if set(sgd_kw) - {"g", "alignment"}:
        raise ValueError(f"sgd keyword arguments must be among ['alignment', 'g'], got {sorted(sgd_kw)}")
    alignment, g = sgd_kw.get("alignment", "feedback"), exact(sgd_kw.get("g", 0), "g")
    lookup(ALIGNMENTS, alignment, "alignment")
    return functools.partial(updates, g=g, alignment=alignment), (
        f"Rules (SGD, g = γ[W*Z − y] = {g}, {alignment} Bᵀ dZ̄): γ[ΔZ_A^t] = c_A + γ[B_{{t−1}}ᵀ dZ̄] + 1; "
        + ("γ[ΔB_t] = c_B + max(g, z_{t−1}) + x_{t−1}." if alignment == "feedback"
           else "γ[ΔB_t] = c_B + g + x_{t−1}."))


def check_steps(steps, low=1):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < low:
        raise ValueError(f"steps must be an integer >= {low}, got {steps!r}")
