"""The γ-operator's algebra: exact width exponents as max-plus expressions (docs/theory.md §3).

Every quantity is Θ(n^γ); γ is an exact ``sympy.Rational`` (or an expression in the exponent symbols)
and ``-oo`` marks an exact zero. The rules are small pure functions: product → sum, sum → max,
contraction over n → +1 (coherent) or +1/2 (independent, zero mean: CLT), contraction over r → +0.
A max-plus expression is kept in a canonical form: a number, one affine piece, or an unevaluated
``Max`` of affine pieces (:func:`pieces` lists them).

Glossary: n width, r rank (fixed), c / c_A / c_B learning-rate exponents, gamma_A / gamma_B the
entry exponents of A_0 / B_0 when left symbolic.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Literal

import sympy
from sympy import Max, Rational, oo

from ..checks import lookup

c, c_A, c_B = sympy.symbols("c c_A c_B", real=True)
gamma_A, gamma_B = sympy.symbols("gamma_A gamma_B", extended_real=True)  # γ[A_0], γ[B_0]; −oo = zero

__all__ = ["c", "c_A", "c_B", "contract", "exact", "frontier", "gamma_A", "gamma_B", "gamma_product",
           "gamma_sum", "max_of", "pieces", "rel"]


def gamma_product(*gammas):
    """γ[v·v'] = γ[v] + γ[v'], with an exact zero absorbing: ``gamma_product(-oo, c) == -oo``.

    >>> gamma_product(c, 1), gamma_product(-oo, c)
    (c + 1, -oo)
    """
    if any(g == -oo for g in gammas):
        return -oo
    return max_of(sympy.Add(*combo) for combo in itertools.product(*map(pieces, gammas)))


def gamma_sum(*gammas):
    """γ[v + v'] = max(γ[v], γ[v']) (no exact cancellation); exact zeros drop out.

    >>> gamma_sum(-oo, c), gamma_sum(Rational(-1, 2), 0), gamma_sum(-oo)
    (c, 0, -oo)
    """
    return max_of(p for g in gammas for p in pieces(g))


def contract(gamma, over: Literal["n", "r"], coherent: bool = True):
    """Exponent of a sum over an index: over n add 1 (aligned) or 1/2 (independent, CLT); over r add 0.

    >>> contract(Rational(-1, 2), "n", coherent=False), contract(0, "n"), contract(c, "r")
    (0, 1, c)
    """
    return gamma_product(gamma, lookup({"n": 1 if coherent else Rational(1, 2), "r": 0}, over, "over"))


def pieces(expr) -> list:
    """Affine pieces of a max-plus expression: Max → union of its arguments, Add → all sums."""
    if expr == -oo:
        return []
    if isinstance(expr, Max):
        return [p for arg in expr.args for p in pieces(arg)]
    if isinstance(expr, sympy.Add):
        return [sympy.Add(*combo) for combo in itertools.product(*map(pieces, expr.args))]
    return [sympy.sympify(expr)]


def max_of(pieces):
    """Canonical max-plus form: a number, one affine piece, or an unevaluated Max of affine pieces."""
    pieces = frontier(pieces)  # comparing offsets here is much cheaper than sympy's Max evaluation
    return -oo if not pieces else pieces[0] if len(pieces) == 1 else Max(*pieces, evaluate=False)


def frontier(items) -> list:
    """Distinct pieces, without those below another piece by a positive constant (never the max)."""
    items = list(dict.fromkeys(sympy.expand(i) for i in items))
    return [p for p in items if not any((d := q - p).is_number and d > 0 for q in items)]


def rel(op, expr):
    """``expr op 0`` written as ``variables op −constant``."""
    k, rest = sympy.expand(expr).as_coeff_Add()
    return op(rest, -k)


def exact(value, name, zero_ok=False):
    """Exact sympy exponent; floats become the nearest fraction with denominator ≤ 10⁶."""
    if isinstance(value, float) and math.isfinite(value):
        value = Fraction(value).limit_denominator(10**6)
    try:
        v = sympy.Rational(value) if isinstance(value, Fraction) else sympy.sympify(value, strict=True)
    except (sympy.SympifyError, TypeError):  # reported below
        v = sympy.nan
    if not (isinstance(v, sympy.Expr) and v is not sympy.nan and v.is_extended_real is not False
            and (v.is_finite is not False or (zero_ok and v == -oo))):
        raise ValueError(f"{name} must be a finite exponent{' or -oo (exact zero)' if zero_ok else ''}, "
                         f"got {value!r}")
    return v
