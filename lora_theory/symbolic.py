"""Exact width exponents of one LoRA layer: the γ-recursions of PAPER.md §3.1, solved with sympy.

Every quantity is Θ(n^γ); γ is an exact ``sympy.Rational`` (or a sympy expression when exponents are
left as symbols) and ``-oo`` marks an exact zero. The rules (PAPER.md §1.3) are small pure functions:
product → sum, sum → max, contraction over n → +1 (coherent) or +1/2 (independent, zero mean, CLT),
contraction over r → +0. One update (PAPER.md §2.1) is

    ΔZ_B^t = B_{t−1}ΔZ_A^t + ΔB_t Z_A^{t−1} + ΔB_t ΔZ_A^t = δ¹_t + δ²_t + δ³_t,

and the partner of an exact zero gets no update (sign(0) = 0: step 1 of Init[A]/Init[B]). z_t is the
exponent of the adapter's output s·(B_tA_t − B_0A_0·[B_0A_0 subtracted])Z: z_t = max(z_{t−1}, δ¹, δ², δ³)
from z_0 = x_0 + y_0, or from −∞ when a scheme with both factors non-zero starts at the pretrained model
(W* absorbs B_0A_0, or orthogonal halves give B_0A_0 = 0). Otherwise z_t = x_t + y_t = γ[Z_B^t], the
paper's Z_B. Regimes: PAPER.md §2.2, with efficiency and feature learning checked on t ≥ 3 (§9, pitfall 2).

Glossary: n width, r rank (fixed), η_A = Θ(n^{c_A}), η_B = Θ(n^{c_B}) learning rates (c shared),
a = γ[A_0 entries], b = γ[B_0 entries], x_t = γ[Z_A^t] (x_0 = a + 1/2), y_t = γ[B_t],
u_t = γ[B_t − B_0], z_t as above, g = γ[dZ̄] (SGD only), c* maximal stable exponent.

>>> exponents("A", Rational(-1, 2)).loc[3, ["z_a", "b", "z_b", "delta2"]].tolist()
[1/2, -1/2, 0, 0]
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Literal

import pandas as pd
import sympy
from sympy import And, Eq, Max, Min, Or, Piecewise, Rational, oo

from .config import lookup
from .inits import INITS

c, c_A, c_B = sympy.symbols("c c_A c_B", real=True)
gamma_A, gamma_B = sympy.symbols("gamma_A gamma_B", extended_real=True)  # γ[A_0], γ[B_0]; −oo = zero
WINDOW = 3  # first step at which efficiency / feature learning is checked
REGIMES = ("unstable", "stable_no_feature_learning", "feature_learning", "efficient_feature_learning")
COLUMNS = ["step", "z_a", "b", "b_shift", "z_b", "delta1", "delta2", "delta3"]


def gamma_product(*gammas):
    """γ[v·v'] = γ[v] + γ[v'], with an exact zero absorbing: ``gamma_product(-oo, c) == -oo``.

    >>> gamma_product(c, 1), gamma_product(-oo, c)
    (c + 1, -oo)
    """
    if any(g == -oo for g in gammas):
        return -oo
    return _max_of(sympy.Add(*combo) for combo in itertools.product(*map(_pieces, gammas)))


def gamma_sum(*gammas):
    """γ[v + v'] = max(γ[v], γ[v']) (no exact cancellation); exact zeros drop out.

    >>> gamma_sum(-oo, c), gamma_sum(Rational(-1, 2), 0), gamma_sum(-oo)
    (c, 0, -oo)
    """
    return _max_of(p for g in gammas for p in _pieces(g))


def contract(gamma, over: Literal["n", "r"], coherent: bool = True):
    """Exponent of a sum over an index: over n add 1 (aligned) or 1/2 (independent, CLT); over r add 0.

    >>> contract(Rational(-1, 2), "n", coherent=False), contract(0, "n"), contract(c, "r")
    (0, 1, c)
    """
    return gamma_product(gamma, lookup({"n": 1 if coherent else Rational(1, 2), "r": 0}, over, "over"))


@dataclass(frozen=True, slots=True)
class InitExponents:
    """Entry exponents of the initial factors: ``a`` = γ[A_0], ``b`` = γ[B_0] (``-oo`` for zero)."""

    a: sympy.Expr
    b: sympy.Expr
    starts_at_pretrained: bool = False  # B_0A_0Z absent from the output (subtracted or exactly 0)


@dataclass(frozen=True, slots=True)
class Regime:
    """Verdict of :func:`regime`: one of ``REGIMES`` plus two flags (PAPER.md §2.2)."""

    regime: str
    internally_unstable: bool  # Z_A grows with n at some step
    b_under_trained: bool  # B_0 ≠ 0 and γ[B_t − B_0] < γ[B_0] at the last step


def exponents(init, lr_exponent, optimizer="adam", steps=4, **sgd_kw) -> pd.DataFrame:
    """Per-step exponents x_t, y_t, z_t and γ[δ¹_t], γ[δ²_t], γ[δ³_t] (PAPER.md §3.1).

    Args:
        init: a key of ``lora_theory.inits.INITS``, a pair (γ[A_0], γ[B_0]) or an :class:`InitExponents`.
        lr_exponent: c (shared) or (c_A, c_B); numbers or sympy symbols.
        optimizer: ``"adam"``/``"signsgd"`` (sign-like updates) or ``"sgd"``.
        steps: number of updates T ≥ 1.
        **sgd_kw: for ``"sgd"`` only: ``g`` = γ[dZ̄] (default 0) and ``alignment`` of Bᵀ dZ̄:
            ``"aligned"`` (+1), ``"independent"`` (+1/2) or ``"mixed"`` (default: the B_0 part +1/2,
            the learned part B_t − B_0, built from updates ∝ dZ̄, +1).

    Returns:
        DataFrame with columns ``step, z_a, b, b_shift, z_b, delta1, delta2, delta3`` (``b_shift`` =
        γ[B_t − B_0]), rows t = 0..T (δ = −oo at 0).

    >>> exponents("B", -1, steps=2)[["z_a", "b", "z_b", "delta1", "delta2"]].values.tolist()
    [[-oo, 0, -oo, -oo, -oo], [0, 0, 0, 0, -oo], [0, 0, 0, 0, -1]]
    """
    rows = _trajectory(_as_init(init), *_lr_pair(lr_exponent), _optimiser(optimizer, sgd_kw)[0], steps)
    return pd.DataFrame(rows, columns=COLUMNS)


def max_stable_lr_exponent(init, optimizer="adam", steps=4, lr_ratio_exponent=0, **sgd_kw):
    """Exact largest shared c with z_t ≤ 0 for t = 0..T; c_B = c + ``lr_ratio_exponent`` (LoRA+ ratio).

    Every z_t is a max of affine functions of c with slopes ≥ 0, so the stable set is (−∞, c*] with
    c* the smallest root −k/m of the pieces m·c + k (m > 0); −oo if a c-free piece is > 0 (the init
    itself is unstable) and oo if nothing ever moves (A_0 = B_0 = 0). Arguments as in :func:`exponents`.

    >>> max_stable_lr_exponent("A"), max_stable_lr_exponent("B"), max_stable_lr_exponent((-oo, -oo))
    (-1/2, -1, oo)
    """
    rho = _exact(lr_ratio_exponent, "lr_ratio_exponent")
    rows = _trajectory(_as_init(init), c, c + rho, _optimiser(optimizer, sgd_kw)[0], steps)
    cstar, unstable = _solve_max_c([row["z_b"] for row in rows])
    return Piecewise((-oo, unstable), (cstar, True))


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


def regime(init, lr_exponent, optimizer="adam", steps=4, **sgd_kw) -> Regime:
    """Classify a (numeric) run per PAPER.md §2.2; FL and efficiency are checked on t = 3..T (T ≥ 3).

    >>> regime("A", Rational(-1, 2))
    Regime(regime='efficient_feature_learning', internally_unstable=True, b_under_trained=False)
    >>> regime("B", -1)
    Regime(regime='feature_learning', internally_unstable=False, b_under_trained=True)
    """
    _check_steps(steps, low=WINDOW)
    rows = _trajectory(_as_init(init), *_lr_pair(lr_exponent), _optimiser(optimizer, sgd_kw)[0], steps)
    if any(sympy.sympify(v).free_symbols for row in rows for v in row.values()):
        raise ValueError("regime needs numeric exponents (init, lr_exponent, g), got symbols")
    window = rows[WINDOW:]
    fl = all(gamma_sum(r["delta1"], r["delta2"], r["delta3"]) == 0 for r in window)
    efficient = fl and all(r["delta1"] == 0 and r["delta2"] == 0 for r in window)
    verdict = ("unstable" if any(r["z_b"] > 0 for r in rows) else REGIMES[1 + fl + efficient])
    b0 = rows[0]["b"]
    return Regime(verdict, any(bool(r["z_a"] > 0) for r in rows), bool(b0 != -oo and rows[-1]["b_shift"] < b0))


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
    >>> efficient_region()  # LoRA+ line with the conditions of Li et al. (PAPER.md §8)
    Eq(c_A + c_B, -1) & (c_A + gamma_B <= -1) & (c_B + gamma_A <= -1/2) & (gamma_A + gamma_B <= -1/2)
    """
    _check_steps(steps, low=WINDOW)
    init = InitExponents(gamma_A, gamma_B) if init is None else _as_init(init)
    rows = _trajectory(init, c_A, c_B, _optimiser(optimizer, sgd_kw)[0], steps)
    stable = _frontier(p for row in rows for p in _pieces(row["z_b"]))
    choices = {tuple(_frontier(_pieces(r[k]))) for r in rows[WINDOW:] for k in ("delta1", "delta2")}
    clauses = {frozenset(pick) for pick in itertools.product(*choices)}
    solved = [s for s in (_solve_clause(cl, stable) for cl in clauses) if s is not None]
    kept = [s for s in solved if not any(o is not s and _absorbs(o, s) for o in solved)]
    return Or(*[And(*[_rel(Eq, e) for e in eqs], *[_rel(sympy.Le, p) for p in left])
                for eqs, _, left, _ in kept])


# ----------------------------------------------------------------------------------------- private

def _sign_updates(x, y, u, init, ca, cb):
    # g_A Z = sign(S) sign(Z)ᵀZ: coherent over n; g_B has ±1 entries. sign(0) = 0 for a zero partner.
    return (-oo if y == -oo else contract(ca, "n")), (-oo if x == -oo else cb)


def _sgd_updates(x, y, u, init, ca, cb, g, alignment):
    s = ALIGNMENTS[alignment](y, u, init.b, g)  # γ[B_{t−1}ᵀ dZ̄], an r-vector
    return contract(gamma_product(ca, s), "n"), gamma_product(cb, g, x)  # ΔA Z ∝ s ZᵀZ; ΔB = η dZ̄ Z_Aᵀ


ALIGNMENTS = {
    "aligned": lambda y, u, b0, g: contract(gamma_product(y, g), "n"),
    "independent": lambda y, u, b0, g: contract(gamma_product(y, g), "n", coherent=False),
    "mixed": lambda y, u, b0, g: gamma_sum(contract(gamma_product(b0, g), "n", coherent=False),
                                           contract(gamma_product(u, g), "n")),
}
OPTIMISERS = {"adam": _sign_updates, "signsgd": _sign_updates, "sgd": _sgd_updates}


def _optimiser(name, sgd_kw) -> tuple[Callable, str]:
    """(update rule (x, y, u, init, c_A, c_B) → (γ[ΔZ_A^t], γ[ΔB_t]), its description)."""
    updates = lookup(OPTIMISERS, name, "optimizer")
    if updates is _sign_updates:
        if sgd_kw:
            raise ValueError(f"{sorted(sgd_kw)} only apply to optimizer='sgd', got optimizer={name!r}")
        return updates, ("Rules: γ[ΔZ_A^t] = c_A + 1 if B_{t−1} ≠ 0 else −∞; "
                         "γ[ΔB_t] = c_B if Z_A^{t−1} ≠ 0 else −∞.")
    if set(sgd_kw) - {"g", "alignment"}:
        raise ValueError(f"sgd keyword arguments must be among ['alignment', 'g'], got {sorted(sgd_kw)}")
    alignment, g = sgd_kw.get("alignment", "mixed"), _exact(sgd_kw.get("g", 0), "g")
    lookup(ALIGNMENTS, alignment, "alignment")
    return functools.partial(updates, g=g, alignment=alignment), (
        f"Rules (SGD, g = γ[dZ̄] = {g}, {alignment} Bᵀ dZ̄): γ[ΔZ_A^t] = c_A + γ[B_{{t−1}}ᵀ dZ̄] + 1; "
        "γ[ΔB_t] = c_B + g + x_{t−1}.")


def _trajectory(init: InitExponents, ca, cb, updates: Callable, steps) -> list[dict]:
    """Fold the one-step recursion over t = 1..steps; one dict per step (t = 0 included)."""
    _check_steps(steps)
    x, y, u = contract(init.a, "n", coherent=False), init.b, -oo  # A_0 Z: CLT over n
    z = -oo if init.starts_at_pretrained else gamma_product(x, y)
    rows = [dict(step=0, z_a=x, b=y, z_b=z, delta1=-oo, delta2=-oo, delta3=-oo, b_shift=u)]
    for t in range(1, steps + 1):
        dza, db = updates(x, y, u, init, ca, cb)
        d1 = contract(gamma_product(y, dza), "r")  # B_{t−1} ΔZ_A^t
        d2 = contract(gamma_product(db, x), "r")  # ΔB_t Z_A^{t−1}
        d3 = contract(gamma_product(db, dza), "r")  # ΔB_t ΔZ_A^t
        x, y, u, z = gamma_sum(x, dza), gamma_sum(y, db), gamma_sum(u, db), gamma_sum(z, d1, d2, d3)
        rows.append(dict(step=t, z_a=x, b=y, z_b=z, delta1=d1, delta2=d2, delta3=d3, b_shift=u))
    return rows


def _pieces(expr) -> list:
    """Affine pieces of a max-plus expression: Max → union of its arguments, Add → all sums."""
    if expr == -oo:
        return []
    if isinstance(expr, Max):
        return [p for arg in expr.args for p in _pieces(arg)]
    if isinstance(expr, sympy.Add):
        return [sympy.Add(*combo) for combo in itertools.product(*map(_pieces, expr.args))]
    return [sympy.sympify(expr)]


def _max_of(pieces):
    """Canonical max-plus form: a number, one affine piece, or an unevaluated Max of affine pieces."""
    pieces = _frontier(pieces)  # comparing offsets here is much cheaper than sympy's Max evaluation
    return -oo if not pieces else pieces[0] if len(pieces) == 1 else Max(*pieces, evaluate=False)


def _solve_max_c(zs):
    """(c*, condition that some c-free piece is > 0) for the constraints z ≤ 0."""
    bounds, free = [], []
    for p in _frontier(q for z in zs for q in _pieces(z)):
        m, k = p.diff(c), p.subs(c, 0)
        if not (m.is_number and m >= 0):
            raise ValueError(f"exponent piece {p} is not non-decreasing in c")
        if m:
            bounds.append(-k / m)
        else:
            free.append(k > 0)
    return (Min(*bounds) if bounds else oo), Or(*free)


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
    return len(big[0]) < len(small[0]) and all((v := sympy.expand(e.subs(small[1]))) == 0 or v in zero for e in big[0])


def _frontier(items) -> list:
    """Distinct pieces, without those below another piece by a positive constant (never the max)."""
    items = list(dict.fromkeys(sympy.expand(i) for i in items))
    return [p for p in items if not any((d := q - p).is_number and d > 0 for q in items)]


def _rel(op, expr):
    """``expr op 0`` written as ``variables op −constant``."""
    k, rest = sympy.expand(expr).as_coeff_Add()
    return op(rest, -k)


def _as_init(init) -> InitExponents:
    if isinstance(init, str):
        spec = lookup(INITS, init, "init")
        a, b = (_exact(d.gamma, "init", True) for d in (spec.a, spec.b))
        return InitExponents(a, b, spec.starts_at_pretrained and -oo not in (a, b))
    if isinstance(init, InitExponents):
        a, b, pre = init.a, init.b, init.starts_at_pretrained
    elif isinstance(init, (tuple, list)) and len(init) == 2:
        (a, b), pre = init, False
    else:
        raise ValueError(f"init must be one of {sorted(INITS)}, a pair (gamma_A0, gamma_B0) or "
                         f"InitExponents, got {init!r}")
    return InitExponents(_exact(a, "init gamma_A0", True), _exact(b, "init gamma_B0", True), bool(pre))


def _lr_pair(lr_exponent):
    pair = lr_exponent if isinstance(lr_exponent, (tuple, list)) else (lr_exponent, lr_exponent)
    if len(pair) != 2:
        raise ValueError(f"lr_exponent must be c or a pair (c_A, c_B), got {lr_exponent!r}")
    return tuple(_exact(v, "lr_exponent") for v in pair)


def _exact(value, name, zero_ok=False):
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


def _check_steps(steps, low=1):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < low:
        raise ValueError(f"steps must be an integer >= {low}, got {steps!r}")
