"""Solvers on the γ-recursion: per-step exponents, the maximal stable learning-rate exponent c*,
the regime of a run and the efficient region of the LoRA+ plane (docs/theory.md §4.5, §5, §7, §8).
Every solver but :func:`efficient_region` also takes the rank exponent ρ (r = Θ(n^ρ)) and the multiplier
convention s = α·r^{−γ_α} (docs/theory.md §13); ρ = 0, the default, is the paper's fixed rank.

>>> exponents("A", Rational(-1, 2)).loc[3, ["z_a", "b", "z_b", "delta2"]].tolist()
[1/2, -1/2, 0, 0]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd
import sympy
from sympy import And, Eq, Min, Or, Piecewise, Rational, oo  # noqa: F401 (Rational: doctests)

from ..checks import check_int, lookup
from ..stats import STATS
from .algebra import (
    c,
    c_A,
    c_B,
    exact,
    frontier,
    gamma_A,
    gamma_B,
    gamma_sum,
    max_c,
    pieces,
    reduce_on_box,
    rel,
    rho,
)
from .recursion import (
    COLUMNS,
    WINDOW,
    InitExponents,
    check_steps,
    init_exponents,
    lr_exponents,
    rank_scaling,
    trajectory,
    update_rule,
)

REGIMES = ("unstable", "stable_no_feature_learning", "feature_learning", "efficient_feature_learning")

__all__ = ["REGIMES", "Regime", "efficient_region", "exponents", "max_stable_lr_exponent",
           "max_stable_lr_exponent_symbolic", "regime", "theory_exponent"]


@dataclass(frozen=True, slots=True)
class Regime:
    """Verdict of :func:`regime`: one of ``REGIMES`` plus two flags (docs/theory.md §4)."""

    regime: str
    internally_unstable: bool  # Z_A grows with n at some step
    b_under_trained: bool  # B_0 ≠ 0 and γ[B_t − B_0] < γ[B_0] at the last step


def exponents(init, lr_exponent, optimizer="adam", steps=4, *, rank_exponent=0, scaling="lora",
              **sgd_kw) -> pd.DataFrame:
    """Per-step exponents x_t, y_t, z_t and γ[δ¹_t], γ[δ²_t], γ[δ³_t] (docs/theory.md §5).

    Args:
        init: a key of ``lora_theory.inits.INITS``, a pair (γ[A_0], γ[B_0]) or an :class:`InitExponents`.
        lr_exponent: c (shared) or (c_A, c_B); numbers or sympy symbols.
        optimizer: ``"adam"``/``"signsgd"`` (sign-like updates) or ``"sgd"``.
        steps: number of updates T ≥ 1.
        rank_exponent: ρ in r = Θ(n^ρ), a number in [0, 1) or a symbol (``algebra.rho``); 0: fixed rank.
        scaling: the multiplier s = α·r^{−γ_α}: ``"lora"`` (γ_α = 1), ``"rslora"`` (1/2), ``"constant"``
            (0) or any exponent γ_α (number or symbol); irrelevant at ρ = 0.
        **sgd_kw: for ``"sgd"`` only: ``g`` = γ[dZ̄] (default 0) and ``alignment`` of Bᵀ dZ̄:
            ``"aligned"`` (+1), ``"independent"`` (+1/2) or ``"mixed"`` (default: the B_0 part +1/2,
            the learned part B_t − B_0, built from updates ∝ dZ̄, +1).

    Returns:
        DataFrame with columns ``COLUMNS`` (``step, z_a, b, b_shift, z_b, delta1, delta2, delta3, dz_b,
        a_shift, z_b_total``; see :mod:`lora_theory.theory.recursion`), rows t = 0..T (δ = −oo at 0).

    >>> exponents("B", -1, steps=2)[["z_a", "b", "z_b", "delta1", "delta2"]].values.tolist()
    [[-oo, 0, -oo, -oo, -oo], [0, 0, 0, 0, -oo], [0, 0, 0, 0, -1]]
    >>> exponents("A", c, steps=3, rank_exponent=rho, scaling="constant").loc[3, "z_b"]  # μA's Init[A]
    Max(c + rho, 2*c + rho + 1)
    """
    rows = _rows(init, lr_exponents(lr_exponent), optimizer, steps, rank_exponent, scaling, sgd_kw)
    return pd.DataFrame(rows, columns=COLUMNS)


def max_stable_lr_exponent(init, optimizer="adam", steps=4, lr_ratio_exponent=0, *, rank_exponent=0,
                           scaling="lora", **sgd_kw):
    """Exact largest shared c with z_t ≤ 0 for t = 0..T; c_B = c + ``lr_ratio_exponent`` (LoRA+ ratio).

    Every z_t is a max of affine functions of c with slopes ≥ 0, so the stable set is (−∞, c*] with
    c* the smallest root −k/m of the pieces m·c + k (m > 0); −oo if a c-free piece is > 0 (the init
    itself is unstable) and oo if nothing ever moves (A_0 = B_0 = 0). Arguments as in :func:`exponents`;
    with a symbolic ρ the roots that never attain the minimum on 0 ≤ ρ ≤ 1 are dropped. The learning
    rate is then η = Θ(n^{c*}) with r = n^ρ: :func:`lora_theory.theory.lr_law` splits c* into its width
    and rank exponents.

    >>> max_stable_lr_exponent("A"), max_stable_lr_exponent("B"), max_stable_lr_exponent((-oo, -oo))
    (-1/2, -1, oo)
    >>> max_stable_lr_exponent("A", rank_exponent=rho, scaling="constant")  # μA: η = Θ(n^-1/2 r^-1/2)
    -rho/2 - 1/2
    >>> max_stable_lr_exponent("B", rank_exponent=rho, scaling="lora")  # α/r: η = Θ(min(r/n, n^-1/2))
    Min(-1/2, rho - 1)
    """
    ratio = exact(lr_ratio_exponent, "lr_ratio_exponent")
    rows = _rows(init, (c, c + ratio), optimizer, steps, rank_exponent, scaling, sgd_kw)
    cstar, unstable = max_c([row["z_b"] for row in rows])
    return reduce_on_box(Piecewise((-oo, unstable), (cstar, True)), {rho: (0, 1)})


def max_stable_lr_exponent_symbolic(optimizer="adam", steps=4, lr_ratio_exponent=0, **sgd_kw):
    """c* as a Piecewise in ``gamma_A``, ``gamma_B`` (schemes without subtraction), from the recursion.

    >>> pw = max_stable_lr_exponent_symbolic()
    >>> pw.subs({gamma_A: Rational(-1, 2), gamma_B: -oo}), pw.subs({gamma_A: -oo, gamma_B: 0})
    (-1/2, -1)
    >>> pw.args[-1].expr
    Min(-1/2, -gamma_A - 1/2, -gamma_B - 1)
    """
    cases = [(And(Eq(gamma_A, -oo), Eq(gamma_B, -oo)), -oo, -oo), (Eq(gamma_A, -oo), -oo, gamma_B),
             (Eq(gamma_B, -oo), gamma_A, -oo), (sympy.true, gamma_A, gamma_B)]
    pieces = []
    for cond, a, b in cases:
        pw = max_stable_lr_exponent(InitExponents(a, b), optimizer, steps, lr_ratio_exponent, **sgd_kw)
        pieces += [(e, And(cond, k)) for e, k in (pw.args if isinstance(pw, Piecewise) else [(pw, True)])]
    return Piecewise(*pieces)


def regime(init, lr_exponent, optimizer="adam", steps=4, *, rank_exponent=0, scaling="lora",
           **sgd_kw) -> Regime:
    """Classify a (numeric) run per docs/theory.md §4; FL and efficiency are checked on t = 3..T (T ≥ 3).
    Arguments as in :func:`exponents` (all numeric).

    >>> regime("A", Rational(-1, 2))
    Regime(regime='efficient_feature_learning', internally_unstable=True, b_under_trained=False)
    >>> regime("B", -1)
    Regime(regime='feature_learning', internally_unstable=False, b_under_trained=True)
    >>> regime("B", -1, rank_exponent=Rational(1, 2), scaling="rslora").regime  # s = r^-1/2 damps Z_B
    'stable_no_feature_learning'
    """
    check_steps(steps, low=WINDOW)
    rows = _rows(init, lr_exponents(lr_exponent), optimizer, steps, rank_exponent, scaling, sgd_kw)
    if any(sympy.sympify(v).free_symbols for row in rows for v in row.values()):
        raise ValueError("regime needs numeric exponents (init, lr_exponent, g), got symbols")
    window = rows[WINDOW:]
    fl = all(gamma_sum(r["delta1"], r["delta2"], r["delta3"]) == 0 for r in window)
    efficient = fl and all(r["delta1"] == 0 and r["delta2"] == 0 for r in window)
    verdict = ("unstable" if any(r["z_b"] > 0 for r in rows) else REGIMES[1 + fl + efficient])
    b0 = rows[0]["b"]
    return Regime(verdict, any(bool(r["z_a"] > 0) for r in rows),
                  bool(b0 != -oo and rows[-1]["b_shift"] < b0))


def efficient_region(init=None, optimizer="adam", steps=4, **sgd_kw):
    """Region of the (c_A, c_B) plane with stable, efficient learning, derived from the recursion.

    Stability is z_t ≤ 0 for every piece of every z_t; efficiency asks one piece of each δ¹_t, δ²_t
    (t = 3..T) to vanish. The union over those choices is pruned of empty and absorbed clauses.
    ``init=None`` keeps ``gamma_A``, ``gamma_B`` symbolic (no subtraction; −oo may be substituted).
    Other arguments as in :func:`exponents`. Under Adam this is the LoRA+ line c_A + c_B = −1 with
    γ[B_0] ≤ c_B and γ[A_0 Z] ≤ c_A + 1, i.e. Li et al.'s γ[A_0] ≤ c_A when their γ[A_0] means
    γ[A_0 Z] − 1 (= −1 for Kaiming A); the last inequality below is implied by the other two.

    >>> efficient_region("A")
    (c_B <= 0) & Eq(c_A + c_B, -1)
    >>> print(*efficient_region().args, sep="\\n")  # LoRA+ line, Li et al.'s conditions, off the saddle (§7)
    Eq(c_A + c_B, -1)
    c_A + gamma_B <= -1
    c_B + gamma_A <= -1/2
    gamma_A + gamma_B <= -1/2
    Ne(gamma_A, -oo) | Ne(gamma_B, -oo)
    """
    check_steps(steps, low=WINDOW)
    symbolic = init is None
    init = InitExponents(gamma_A, gamma_B) if symbolic else init_exponents(init)
    rows = trajectory(init, c_A, c_B, update_rule(optimizer, sgd_kw)[0], steps)
    stable = frontier(p for row in rows for p in pieces(row["z_b"]))
    choices = {tuple(frontier(pieces(r[k]))) for r in rows[WINDOW:] for k in ("delta1", "delta2")}
    clauses = {frozenset(pick) for pick in itertools.product(*choices)}
    solved = [s for s in (_solve_clause(cl, stable) for cl in clauses) if s is not None]
    kept = [s for s in solved if not any(o is not s and _absorbs(o, s) for o in solved)]
    region = Or(*[And(*[rel(Eq, e) for e in eqs], *[rel(sympy.Le, p) for p in left])
                  for eqs, _, left, _ in kept])
    if symbolic:  # A_0 = B_0 = 0 is the saddle where nothing moves: never efficient (docs/theory.md §7)
        region = And(region, Or(sympy.Ne(gamma_A, -oo), sympy.Ne(gamma_B, -oo)))
    return region




def theory_exponent(stat: str, init, lr_exponent, step: int, optimizer: str = "adam",
                    steps: int | None = None, *, rank_exponent=0, scaling="lora", **sgd_kw):
    """The width exponent the calculus predicts for the recorded statistic ``stat`` at ``step`` (exact; None
    when ``stats.STATS[stat].theory`` is None, e.g. the loss).

    Args:
        stat: a key of ``lora_theory.stats.STATS``.
        init, lr_exponent, optimizer, rank_exponent, scaling, **sgd_kw: as in :func:`exponents`.
        step: the step t ≥ 0.
        steps: length of the derived trajectory (default ``max(step, 1)``).

    >>> theory_exponent("dz_b_rms", "AB_raw", -2, step=4), theory_exponent("z_b_rms", "AB_raw", -2, step=4)
    (-3/2, -1/2)
    """
    spec = lookup(STATS, stat, "stat")
    step = check_int("step", step, low=0)
    if steps is not None and step > steps:
        raise ValueError(f"step must be <= steps = {steps!r}, got {step!r}")
    if spec.theory is None:
        return None
    table = exponents(init, lr_exponent, optimizer, steps=steps or max(step, 1), rank_exponent=rank_exponent,
                      scaling=scaling, **sgd_kw)
    return table.set_index("step").loc[step, spec.theory]


# ----------------------------------------------------------------------------------------- private

def _rows(init, lrs, optimizer, steps, rank_exponent, scaling, sgd_kw):
    """The recursion's rows for a validated (c_A, c_B), at rank exponent ρ and multiplier convention γ_α."""
    rank = rank_scaling(rank_exponent, scaling)
    return trajectory(init_exponents(init, rank.rho), *lrs, update_rule(optimizer, sgd_kw)[0], steps, rank)


def _solve_clause(eqs, stable):
    """Solve a clause's equalities for (c_A, c_B); drop satisfied constraints; None when empty."""
    sol = sympy.linsolve(list(eqs), [c_A, c_B])
    if not sol:
        return None
    subs = dict(zip((c_A, c_B), next(iter(sol))))
    reduced = {p: sympy.expand(p.subs(subs)) for p in stable}
    if any(q.is_number and q > 0 for q in reduced.values()):
        return None
    left = {p: q for p, q in reduced.items() if not q.is_number}
    free = set().union(*(q.free_symbols for q in left.values()))  # one free coordinate: an interval
    if len(free) == 1 and sympy.reduce_inequalities([q <= 0 for q in left.values()], free) is sympy.false:
        return None
    return eqs, subs, list(left), list(left.values())


def _absorbs(big, small) -> bool:
    """True when ``small`` (clause with more equalities) lies inside ``big``: its equalities hold there."""
    zero = set(small[3]) & {-q for q in small[3]}  # q ≤ 0 and −q ≤ 0 ⇒ q = 0
    return len(big[0]) < len(small[0]) and all((v := sympy.expand(e.subs(small[1]))) == 0 or v in zero
                                               for e in big[0])
