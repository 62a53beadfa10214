"""The γ-calculus written out: a step-by-step derivation of one initialisation, as markdown or LaTeX.

The exponents come from :mod:`lora_theory.theory.recursion`; this module only lays them out (``lora-theory
derive`` prints it).
"""

from __future__ import annotations

import sympy
from sympy import Rational, oo  # noqa: F401 (Rational: doctests)

from ..checks import lookup
from ..inits import INITS
from .recursion import WINDOW, init_exponents, lr_exponents, rank_scaling, trajectory, update_rule
from .solve import max_stable_lr_exponent, regime

TABLE = ["step", "z_a", "b", "b_shift", "z_b", "delta1", "delta2", "delta3"]  # exponents shown per step


def derivation(init, lr_exponent=None, optimizer="adam", steps=4, fmt="markdown", *, rank_exponent=0,
               scaling="lora", **sgd_kw) -> str:
    """Step-by-step derivation for one init as a markdown table (``fmt="latex"``: LaTeX tabular).

    The header gives c* (used when ``lr_exponent`` is None); the footer gives the :func:`regime` verdict
    (numeric exponents only); in LaTeX both are ``%`` comments. Arguments as in :func:`exponents`; a
    rank exponent ρ ≠ 0 adds a line on the rank, the multiplier and the sums over r (docs/theory.md §13).

    >>> print(derivation("B", steps=3).splitlines()[2])
    Maximal stable shared exponent c* = -1 (optimiser adam); here c_A = -1, c_B = -1.
    >>> print(derivation("A", rank_exponent=Rational(1, 2), scaling="constant").splitlines()[2])
    Maximal stable shared exponent c* = -3/4 (optimiser adam); here c_A = -3/4, c_B = -3/4.
    """
    cols = lookup({"markdown": _MD, "latex": _TEX}, fmt, "fmt")  # table header
    rank, tex = rank_scaling(rank_exponent, scaling), fmt == "latex"
    spec = init_exponents(init, rank.rho)
    updates, rules = update_rule(optimizer, sgd_kw)
    cstar = max_stable_lr_exponent(spec, optimizer, steps, rank_exponent=rank.rho, scaling=rank.gamma_alpha,
                                   **sgd_kw)
    if lr_exponent is None and (cstar in (oo, -oo) or isinstance(cstar, sympy.Piecewise)):
        raise ValueError(f"init {init!r} has no finite maximal exponent (c* = {cstar}); pass lr_exponent")
    ca, cb = lr_exponents(cstar if lr_exponent is None else lr_exponent)
    rows = trajectory(spec, ca, cb, updates, steps, rank)
    name = INITS[init].description if isinstance(init, str) else f"γ[A_0] = {spec.a}, γ[B_0] = {spec.b}"
    head = [(f"{name}; x_0 = γ[A_0 Z] = γ[A_0] + 1/2 = {_plain(rows[0]['z_a'])}, "
             f"y_0 = γ[B_0] = {_plain(spec.b)}."),
            (f"Maximal stable shared exponent c* = {_plain(cstar)} (optimiser {optimizer}); "
             f"here c_A = {_plain(ca)}, c_B = {_plain(cb)}."), rules,
            *(_rank_rules(rank) if rank.rho != 0 else
              [("δ¹ = y_{t−1} + γ[ΔZ_A^t], δ² = γ[ΔB_t] + x_{t−1}, δ³ = γ[ΔB_t] + γ[ΔZ_A^t], "
                "z_t = max(z_{t−1}, δ¹, δ², δ³).")])]
    show = (lambda v: f"${sympy.latex(v)}$") if tex else _plain  # table cells
    body = [[str(r["step"])] + ["" if r["step"] == 0 and k[0] == "d" else show(r[k]) for k in TABLE[1:]]
            for r in rows]
    table = (["\\begin{tabular}{" + "r" * len(cols) + "}", " & ".join(cols) + " \\\\ \\hline",
              *[" & ".join(b) + " \\\\" for b in body], "\\end{tabular}"] if tex else
             ["| " + " | ".join(x) + " |" for x in [cols, ["---"] * len(cols), *body]])
    numeric = not any(sympy.sympify(x).free_symbols for r in rows for x in r.values())
    v = (regime(spec, (ca, cb), optimizer, steps, rank_exponent=rank.rho, scaling=rank.gamma_alpha, **sgd_kw)
         if steps >= WINDOW and numeric else None)
    foot = ("Verdict (t ≥ 3): needs steps >= 3 and numeric exponents." if v is None else
            f"Verdict (t ≥ 3): {v.regime}; internally {'un' if v.internally_unstable else ''}stable; "
            f"B {'' if v.b_under_trained else 'not '}under-trained.")
    note = "% " if tex else ""  # in LaTeX the text lines are comments around the tabular
    return "\n".join([note + "### Derivation", *(note + h for h in head), "", *table, "", note + foot])


_MD = ["t", "γ[Z_A]", "γ[B]", "γ[B−B_0]", "γ[Z_B]", "γ[δ¹]", "γ[δ²]", "γ[δ³]"]
_TEX = ["$t$"] + [rf"$\gamma[{v}]$" for v in ("Z_A", "B", "B-B_0", "Z_B", *(rf"\delta^{i}" for i in "123"))]


def _rank_rules(rank) -> list[str]:  # the header lines of a growing rank
    return [(f"Rank r = n^ρ with ρ = {rank.rho}; multiplier s = α·r^(−γ_α) with γ_α = {rank.gamma_alpha}, "
             f"so γ[s] = {rank.s}. Sums over r add ρ when aligned, ρ/2 when independent "
             "(docs/theory.md §13)."),
            ("δ¹ = γ[s] + γ[ΔZ_A^t] + max(γ[B_0] + ρ/2, u_{t−1} + ρ), δ² = γ[s] + γ[ΔB_t] + x_{t−1} + ρ, "
             "δ³ = γ[s] + γ[ΔB_t] + γ[ΔZ_A^t] + ρ, z_t = max(z_{t−1}, δ¹, δ², δ³).")]


def _plain(v) -> str:  # one exponent as text
    return "-∞" if v == -oo else str(v)
