"""The maximal stable learning rate as a law in width, rank and α (docs/theory.md §13).

With r = Θ(n^ρ) and s = α·r^{−γ_α}, every stability constraint z_t ≤ 0 of the recursion is affine in
(c, ρ, γ[α]), so c* = min_i (w_i + k_i·ρ + a_i·γ[α]) and

    η_max = Θ( min_i n^{w_i} · r^{k_i} · α^{a_i} ),

one power law per constraint that can bind for some 0 ≤ ρ < 1 (at constant α). :func:`lr_law` derives
the pieces from :mod:`.recursion`; :class:`LearningRateLaw` evaluates them with unit constants, which is
what a transfer rule needs (ratios of η at two shapes; lora_theory.transfer).

Glossary: n width, r rank, ρ rank exponent, α LoRA alpha, γ_α the multiplier convention, η learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy
from sympy import Rational  # noqa: F401 (doctests)

from ..checks import check_positive
from .algebra import c, exact, frontier, pieces, rho, scaling_exponent
from .recursion import RankScaling, init_exponents, trajectory, update_rule

ALPHA = sympy.Symbol("alpha_exponent", real=True)  # γ[α]: 0 in the theory, a symbol to read off α powers

__all__ = ["ALPHA", "LearningRateLaw", "lr_law"]


@dataclass(frozen=True)
class LearningRateLaw:
    """η_max = Θ(min_i n^{w_i} r^{k_i} α^{a_i}) for one (init, multiplier convention, optimiser).

    ``pieces`` holds the exponent triples (w_i, k_i, a_i) as exact rationals, in the order the
    recursion produced them; a piece that never binds for 0 ≤ ρ ≤ 1 is left out (pieces equal in n and
    r but not in α are all kept: α = Θ(1) only changes which one binds).
    """

    init: str
    scaling: sympy.Expr  # γ_α
    optimizer: str
    pieces: tuple[tuple[sympy.Expr, sympy.Expr, sympy.Expr], ...]

    def exponent(self, rank_exponent=rho):
        """c*(ρ) = min_i (w_i + k_i ρ): η_max = Θ(n^{c*}) when r = n^ρ (exact; ρ a number or ``rho``).

        >>> lr_law("B", "lora").exponent(Rational(1, 4))
        -3/4
        """
        rank = exact(rank_exponent, "rank_exponent")
        return sympy.Min(*(w + k * rank for w, k, _ in self.pieces))

    def value(self, width, rank, alpha=1.0) -> float:
        """min_i n^{w_i} r^{k_i} α^{a_i}: η_max at (n, r, α) up to one constant per piece, taken as 1.

        >>> round(lr_law("B", "lora").value(4096, 8), 6)  # r/n, below n^-1/2 = 0.015625
        0.001953
        """
        return min(self._terms(width, rank, alpha))

    def binding(self, width, rank, alpha=1.0) -> tuple:
        """The piece (w, k, a) that attains :meth:`value` at (n, r, α)."""
        terms = self._terms(width, rank, alpha)
        return self.pieces[terms.index(min(terms))]

    def __str__(self) -> str:
        parts = [_monomial(p) for p in self.pieces]
        return f"Θ({parts[0]})" if len(parts) == 1 else f"Θ(min({', '.join(parts)}))"

    def _terms(self, width, rank, alpha) -> list[float]:
        n, r = check_positive("width", width), check_positive("rank", rank)
        a = check_positive("alpha", alpha)
        return [n ** float(w) * r ** float(k) * a ** float(e) for w, k, e in self.pieces]


def lr_law(init, scaling="lora", optimizer="adam", steps=4, **sgd_kw) -> LearningRateLaw:
    """The maximal stable learning rate of ``init`` as a power law in width, rank and α.

    Args:
        init: as in :func:`lora_theory.theory.exponents` (a registered name reads its r-exponents).
        scaling: ``"lora"`` (s = α/r), ``"rslora"`` (α/√r), ``"constant"`` (α) or a number γ_α.
        optimizer, steps, **sgd_kw: as in :func:`lora_theory.theory.exponents` (under SGD, c* depends
            on the horizon ``steps``: docs/theory.md §8.4).

    Returns:
        A :class:`LearningRateLaw`. ValueError if the init is unstable at initialisation for some
        0 ≤ ρ < 1, or if nothing ever moves (A_0 = B_0 = 0).

    >>> str(lr_law("A", "lora")), str(lr_law("A", "constant")), str(lr_law("B", "constant"))
    ('Θ(n^(-1/2)·α^(-1/2))', 'Θ(n^(-1/2)·r^(-1/2)·α^(-1/2))', 'Θ(n^(-1)·α^(-1))')
    >>> str(lr_law("B", "lora"))  # α/r damps Init[B]'s first step: η can grow with r, up to n^-1/2
    'Θ(min(n^(-1)·r·α^(-1), n^(-1/2)·α^(-1/2)))'
    """
    gamma = scaling_exponent(scaling)
    if not gamma.is_number:
        raise ValueError(f"scaling must be a name or a number for lr_law, got {scaling!r}")
    rank = RankScaling(rho, gamma, ALPHA)
    rows = trajectory(init_exponents(init, rho), c, c, update_rule(optimizer, sgd_kw)[0], steps, rank)
    bounds = []
    for p in frontier(q for row in rows for q in pieces(row["z_b"])):
        m, k = p.diff(c), p.subs(c, 0)  # constraint m·c + k ≤ 0
        if m == 0:
            if any(k.subs({ALPHA: 0, rho: v}) > 0 for v in (0, 1)):
                raise ValueError(f"init {init!r} is unstable at initialisation (γ[Z_B^0] = {k} > 0 for "
                                 "some ρ)")
            continue
        b = sympy.expand(-k / m)
        bounds.append((b.subs({rho: 0, ALPHA: 0}), b.coeff(rho), b.coeff(ALPHA)))
    if not bounds:
        raise ValueError(f"init {init!r} never moves (A_0 = B_0 = 0): no maximal learning rate")
    # a piece never binds if another is ≤ it on 0 ≤ ρ ≤ 1; of equal pieces keep one per α power
    keep = [p for i, p in enumerate(bounds)
            if not any(_below(q, p) and (not _below(p, q) or (q[2] == p[2] and j < i))
                       for j, q in enumerate(bounds) if j != i)]
    return LearningRateLaw(init if isinstance(init, str) else repr(init), gamma, optimizer, tuple(keep))


# ----------------------------------------------------------------------------------------- private

def _below(q, p) -> bool:
    """Piece q is ≤ piece p at ρ = 0 and ρ = 1 (hence on the whole interval; α constant)."""
    return all(q[0] + q[1] * v <= p[0] + p[1] * v for v in (0, 1))


def _monomial(piece) -> str:
    out = []
    for name, e in zip(("n", "r", "α"), piece):
        if e != 0:
            out.append(name if e == 1 else f"{name}^({e})")
    return "·".join(out) or "1"
