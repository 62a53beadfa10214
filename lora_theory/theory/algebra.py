"""The γ-operator's algebra: exact width exponents as max-plus expressions (docs/theory.md §3).

Every quantity is Θ(n^γ); γ is an exact ``sympy.Rational`` (or an expression in the exponent symbols)
and ``-oo`` marks an exact zero. The rules are small pure functions: product → sum, sum → max,
contraction over n → +1 (coherent) or +1/2 (independent, zero mean: CLT), contraction over r → +ρ
(coherent) or +ρ/2 (independent) when the rank grows as r = Θ(n^ρ) (ρ = 0, the default: fixed rank, +0;
docs/theory.md §3.3, §13). A max-plus expression is kept in a canonical form: a number, one affine
piece, or an unevaluated ``Max`` of affine pieces (:func:`pieces` lists them).

Glossary: n width, r rank, ρ = ``rho`` the rank exponent (r = Θ(n^ρ), 0 ≤ ρ < 1), ``gamma_alpha`` the
multiplier convention s = α·r^{−γ_α}, c / c_A / c_B learning-rate exponents, gamma_A / gamma_B the
entry exponents of A_0 / B_0 when left symbolic.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Literal

import sympy
from sympy import Max, Rational, oo  # noqa: F401 (Rational: doctests)

from ..checks import lookup

c, c_A, c_B = sympy.symbols("c c_A c_B", real=True)
gamma_A, gamma_B = sympy.symbols("gamma_A gamma_B", extended_real=True)  # γ[A_0], γ[B_0]; −oo = zero
rho = sympy.Symbol("rho", nonnegative=True)  # rank exponent: r = Θ(n^ρ), 0 ≤ ρ < 1
gamma_alpha = sympy.Symbol("gamma_alpha", real=True)  # multiplier convention: s = α·r^{−γ_α}
SCALINGS = {"lora": sympy.Integer(1), "rslora": sympy.Rational(1, 2), "constant": sympy.Integer(0)}  # γ_α

__all__ = ["SCALINGS", "c", "c_A", "c_B", "contract", "exact", "frontier", "gamma_A", "gamma_B",
           "gamma_alpha", "gamma_product", "gamma_sum", "max_c", "max_of", "pieces", "reduce_on_box", "rel",
           "rho", "scaling_exponent"]


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


def contract(gamma, over: Literal["n", "r"], coherent: bool = True, rank_exponent=0):
    """Exponent of a sum over an index: over n add 1 (aligned) or 1/2 (independent, CLT); over r
    (r = Θ(n^ρ), ρ = ``rank_exponent``) add ρ (aligned) or ρ/2 (independent): +0 at fixed rank.

    >>> contract(Rational(-1, 2), "n", coherent=False), contract(0, "n"), contract(c, "r")
    (0, 1, c)
    >>> contract(c, "r", rank_exponent=rho), contract(c, "r", coherent=False, rank_exponent=rho)
    (c + rho, c + rho/2)
    """
    size = lookup({"n": sympy.Integer(1), "r": sympy.sympify(rank_exponent)}, over, "over")  # log_n(range)
    return gamma_product(gamma, size if coherent else size / 2)


def scaling_exponent(scaling):
    """γ_α of the multiplier s = α·r^{−γ_α}: a name of ``SCALINGS`` (``"lora"`` α/r: 1, ``"rslora"`` α/√r:
    1/2, ``"constant"`` α: 0) or any exponent (number or symbol).

    >>> scaling_exponent("rslora"), scaling_exponent(0.25), scaling_exponent(gamma_alpha)
    (1/2, 1/4, gamma_alpha)
    """
    if isinstance(scaling, str):
        return lookup(SCALINGS, scaling, "scaling")
    return exact(scaling, "scaling")


def reduce_on_box(expr, box: dict):
    """Drop the arguments of every ``Min``/``Max`` in ``expr`` that never attain it on a box of symbols.

    ``box`` maps symbols to closed intervals (lo, hi). Arguments must be multilinear in the box's
    symbols (affine in each one separately, e.g. (1 − γ_α)·ρ), so a difference is ≥ 0 on the box iff it
    is ≥ 0 at the box's corners. What remains is exact on the box (an open end such as ρ < 1 is covered
    by its closure).

    >>> reduce_on_box(sympy.Min(gamma_alpha * rho - rho, (gamma_alpha * rho - rho - 1) / 2),
    ...               {rho: (0, 1), gamma_alpha: (0, 1)})
    gamma_alpha*rho/2 - rho/2 - 1/2
    """
    corners = [dict(zip(box, v)) for v in itertools.product(*box.values())]

    def below(p, q):  # p <= q everywhere on the box
        return all((v := sympy.sympify(q - p).subs(pt)).is_number and v >= 0 for pt in corners)

    def reduce(e):
        if isinstance(e, (sympy.Min, sympy.Max)):
            args = [reduce(a) for a in e.args]
            wins = below if isinstance(e, sympy.Min) else (lambda p, q: below(q, p))
            keep = [a for i, a in enumerate(args)  # drop a if some b always wins (first of equals stays)
                    if not any(j != i and wins(b, a) and (not wins(a, b) or j < i)
                               for j, b in enumerate(args))]
            return type(e)(*keep)
        return e.func(*map(reduce, e.args)) if e.args else e

    return reduce(sympy.sympify(expr))


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
    """Distinct pieces, without those below another piece by a positive constant or by a multiple of
    ``rho`` (≥ 0): such a piece is never the max."""
    items = list(dict.fromkeys(sympy.expand(i) for i in items))
    if not any(rho in p.free_symbols for p in items):
        # without ρ, q − p is a number exactly when q and p share their symbolic part: keep the largest
        # constant of each symbolic part, in order of first appearance (the same result, in O(k))
        best: dict = {}
        for p in items:
            k, rest = p.as_coeff_Add()
            if rest not in best or k > best[rest][0]:
                best[rest] = (k, p)
        return [p for p in items if best[p.as_coeff_Add()[1]][1] is p]
    return [p for p in items if not any(q is not p and _at_least(q - p) for q in items)]


def max_c(constraints):
    """(c*, condition that some c-free piece is > 0) for the constraints e ≤ 0 on max-plus expressions in
    ``c`` whose pieces m·c + k have m ≥ 0: c* = min over the pieces with m > 0 of −k/m (oo if none).

    >>> max_c([Max(c + 1, 2 * c), Rational(-1, 2)])
    (-1, False)
    """
    bounds, free = [], []
    for p in frontier(q for e in constraints for q in pieces(e)):
        m, k = p.diff(c), p.subs(c, 0)
        if not (m.is_number and m >= 0):
            raise ValueError(f"exponent piece {p} is not non-decreasing in c")
        if m:
            bounds.append(-k / m)
        elif k.free_symbols <= {rho} and k.subs(rho, 0) <= 0 and k.subs(rho, 1) <= 0:
            continue  # affine in ρ and ≤ 0 at both ends: never > 0 for 0 ≤ ρ < 1
        else:
            free.append(k > 0)
    return (sympy.Min(*bounds) if bounds else oo), sympy.Or(*free)


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


def _at_least(d) -> bool:
    """d ≥ 0 for every admissible ρ (d ≠ 0: the items are distinct); only numbers and ρ are decided."""
    return bool(d > 0) if d.is_number else (d.free_symbols == {rho} and d.is_nonnegative is True)
