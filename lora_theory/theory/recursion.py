"""The one-step γ-recursion of LoRA training, folded over steps (docs/theory.md §5, §8).

One update (docs/theory.md §4) is

    ΔZ_B^t = B_{t−1}ΔZ_A^t + ΔB_t Z_A^{t−1} + ΔB_t ΔZ_A^t = δ¹_t + δ²_t + δ³_t,

and the partner of an exact zero gets no update under sign-like optimisers (sign(0) = 0: step 1 of
Init[A]/Init[B]). ``z_b`` is the exponent of the adapter's effect on the output,
s·(B_tA_t − B_0A_0·[B_0A_0 absorbed by W*])Z: z_t = max(z_{t−1}, δ¹, δ², δ³) from z_0 = x_0 + y_0, or
from −∞ when the scheme starts at the pretrained model. ``z_b_total`` is γ[s·B_tA_tZ] itself (what
the engine's ``z_b_rms`` measures; it differs from ``z_b`` only when W* absorbed a non-zero B_0A_0).

Glossary: a = γ[A_0 entries], b = γ[B_0 entries], x_t = γ[Z_A^t] (x_0 = a + 1/2), y_t = γ[B_t],
u_t = γ[B_t − B_0], v_t = γ[A_t − A_0] (entries), g = γ[dZ̄] (SGD only), c_A / c_B the learning-rate
exponents of A and B.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import sympy
from sympy import oo

from ..checks import lookup
from ..inits import INITS
from .algebra import contract, exact, gamma_product, gamma_sum

WINDOW = 3  # first step at which efficiency / feature learning is checked (docs/theory.md §4)
COLUMNS = ["step", "z_a", "b", "b_shift", "z_b", "delta1", "delta2", "delta3", "dz_b", "a_shift", "z_b_total"]

__all__ = ["ALIGNMENTS", "COLUMNS", "InitExponents", "OPTIMISERS", "WINDOW", "check_steps", "init_exponents",
           "lr_exponents", "trajectory", "update_rule"]


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


def init_exponents(init) -> InitExponents:
    """:class:`InitExponents` of a registered init name, a pair (γ[A_0], γ[B_0]) or an InitExponents.

    >>> init_exponents("B")
    InitExponents(a=-oo, b=0, starts_at_pretrained=False, product_is_zero=False)
    """
    if isinstance(init, str):
        e = lookup(INITS, init, "init").exponents()
        a, b = exact(e.a, "init", True), exact(e.b, "init", True)
        return InitExponents(a, b, e.starts_at_pretrained and -oo not in (a, b), e.product_is_zero)
    if isinstance(init, InitExponents):
        a, b, pre, zero = init.a, init.b, init.starts_at_pretrained, init.product_is_zero
    elif isinstance(init, (tuple, list)) and len(init) == 2:
        (a, b), pre, zero = init, False, False
    else:
        raise ValueError(f"init must be one of {sorted(INITS)}, a pair (gamma_A0, gamma_B0) or "
                         f"InitExponents, got {init!r}")
    return InitExponents(exact(a, "init gamma_A0", True), exact(b, "init gamma_B0", True), bool(pre), bool(zero))


def lr_exponents(lr_exponent) -> tuple:
    """(c_A, c_B) from a shared c or a pair, as exact exponents."""
    pair = lr_exponent if isinstance(lr_exponent, (tuple, list)) else (lr_exponent, lr_exponent)
    if len(pair) != 2:
        raise ValueError(f"lr_exponent must be c or a pair (c_A, c_B), got {lr_exponent!r}")
    return tuple(exact(v, "lr_exponent") for v in pair)


def trajectory(init: InitExponents, ca, cb, updates: Callable, steps) -> list[dict]:
    """Fold the one-step recursion over t = 1..steps; one dict per step (t = 0 included), keys ``COLUMNS``."""
    check_steps(steps)
    x, y, u, v = contract(init.a, "n", coherent=False), init.b, -oo, -oo  # A_0 Z: CLT over n
    z0 = -oo if init.product_is_zero else gamma_product(x, y)  # γ[s·B_0A_0Z]
    z = -oo if init.starts_at_pretrained else z0
    rows = [dict(step=0, z_a=x, b=y, b_shift=u, z_b=z, delta1=-oo, delta2=-oo, delta3=-oo, dz_b=-oo,
                 a_shift=v, z_b_total=gamma_sum(z, z0))]
    for t in range(1, steps + 1):
        dza, db = updates(x, y, u, z, init, ca, cb)
        d1 = contract(gamma_product(y, dza), "r")  # B_{t−1} ΔZ_A^t
        d2 = contract(gamma_product(db, x), "r")  # ΔB_t Z_A^{t−1}
        d3 = contract(gamma_product(db, dza), "r")  # ΔB_t ΔZ_A^t
        # ΔA is a sum of rank-one terms (row vector)·Zᵀ, so ΔA·Z is a coherent contraction: entries dza − 1
        v = gamma_sum(v, gamma_product(dza, -1))
        x, y, u, z = gamma_sum(x, dza), gamma_sum(y, db), gamma_sum(u, db), gamma_sum(z, d1, d2, d3)
        rows.append(dict(step=t, z_a=x, b=y, b_shift=u, z_b=z, delta1=d1, delta2=d2, delta3=d3,
                         dz_b=gamma_sum(d1, d2, d3), a_shift=v, z_b_total=gamma_sum(z, z0)))
    return rows


def sign_updates(x, y, u, z, init, ca, cb):
    """Sign-like updates (Adam, SignSGD): (γ[ΔZ_A^t], γ[ΔB_t]) from the previous step's exponents."""
    # g_A Z = sign(S) sign(Z)ᵀZ: coherent over n; g_B has ±1 entries. sign(0) = 0 for a zero partner.
    return (-oo if y == -oo else contract(ca, "n")), (-oo if x == -oo else cb)


def sgd_updates(x, y, u, z, init, ca, cb, g, alignment):
    """Plain SGD updates (docs/theory.md §8): (γ[ΔZ_A^t], γ[ΔB_t]) from the previous step's exponents.

    ΔZ_A^t = −η_A s·(B_{t−1}ᵀ dZ̄) ‖Z‖² (coherent over n) and ΔB_t = −η_B s·dZ̄ (Z_A^{t−1})ᵀ, with
    dZ̄ = (W*Z − y) + D, D the adapter's output (exponent z_{t−1}), so γ[dZ̄] = max(g, z_{t−1}).
    ``alignment`` says how B_{t−1}ᵀ dZ̄ contracts over n (``ALIGNMENTS``).
    """
    s = ALIGNMENTS[alignment](x, y, u, z, init.b, g)  # γ[B_{t−1}ᵀ dZ̄], an r-vector
    dz_bar = gamma_sum(g, z) if alignment == "feedback" else g
    return contract(gamma_product(ca, s), "n"), gamma_product(cb, dz_bar, x)  # ΔA Z ∝ s ZᵀZ; ΔB = η dZ̄ Z_Aᵀ


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
    """(update rule (x, y, u, z, init, c_A, c_B) → (γ[ΔZ_A^t], γ[ΔB_t]), its description)."""
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
        + ("γ[ΔB_t] = c_B + max(g, z_{t−1}) + x_{t−1}." if alignment == "feedback" else "γ[ΔB_t] = c_B + g + x_{t−1}."))


def check_steps(steps, low=1):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < low:
        raise ValueError(f"steps must be an integer >= {low}, got {steps!r}")
