"""The toy's loss-optimal learning-rate exponent, read at its output (docs/theory.md §1.3, §9.3).

The toy puts the LoRA module inside a network, f = W_out·φ(Y_h) with Y_h = base + s·BAZ, and the loss
sees the adapter only through f. Under sign-like updates (Adam, SignSGD) the hidden layer follows the
recursion of :mod:`.recursion` (x_t = γ[Z_A], u_t = γ[B_t − B_0], γ[ΔZ_A^t], γ[ΔB_t]); the readout, with
entries Θ(n^ω) (ω = −1/2: SP, −1: μP), turns each part of ΔY_h into an output change (the 0/1 factor φ′
drops out of every exponent):

* δ² = ΔB_t Z_A: the gradient of B is (W_out ⊙ φ′)·(e Z_A)ᵀ, so the rows of ΔB carry sign(W_out): the
  readout's sum over n is coherent, γ = ω + γ[ΔB_t] + x_{t−1} + 1;
* δ¹ = B_{t−1} ΔZ_A: the r-vector W_outᵀ(φ′ ⊙ B_{t−1}) is a CLT sum for the random B_0 (ω + b + 1/2) and a
  coherent one for the learned B − B_0 (ω + u + 1), times γ[ΔZ_A^t];
* δ³ = ΔB_t ΔZ_A: coherent, ω + γ[ΔB_t] + γ[ΔZ_A^t] + 1.

The output moves by Θ(n^{φ_t}) at step t, φ_t the max of the three; the drift f_t − f_0 has exponent
max_{τ ≤ t} φ_τ (plus the init's own output change ω + γ[s·B_0A_0Z] + 1/2 if it does not start at the
pretrained model). Training at η = Θ(n^c) makes Θ(1) progress on the loss when the output moves by Θ(1):
the loss-optimal exponent is the largest c with every φ_t ≤ 0, where the largest piece is exactly 0.

Glossary: ω = γ[W_out entries] (``omega`` when symbolic), φ_t the output-change exponent of step t, other
symbols as in :mod:`.recursion`. Fixed rank (ρ = 0), shared c for A and B.
"""

from __future__ import annotations

import pandas as pd
import sympy
from sympy import Rational, oo

from ..checks import lookup
from .algebra import c, contract, exact, gamma_product, gamma_sum, max_c
from .recursion import check_steps, init_exponents, trajectory, update_rule

omega = sympy.Symbol("omega", real=True)  # γ[W_out entries]
READOUTS = {"sp": Rational(-1, 2), "mup": sympy.Integer(-1)}  # W_out ~ N(0, 1/n) or N(0, 1/n²)
OUTPUT_COLUMNS = ["step", "z_a", "b_shift", "dz_a", "db", "out_delta1", "out_delta2", "out_delta3",
                  "out_step", "out_drift", "z_b"]

__all__ = ["OUTPUT_COLUMNS", "READOUTS", "loss_optimal_exponent", "omega", "output_exponents",
           "readout_exponent"]


def readout_exponent(readout):
    """ω = γ[W_out entries]: ``"sp"`` (−1/2), ``"mup"`` (−1), or any exponent (number or symbol).

    >>> readout_exponent("sp"), readout_exponent(-1), readout_exponent(omega)
    (-1/2, -1, omega)
    """
    if isinstance(readout, str):
        return lookup(READOUTS, readout, "readout")
    return exact(readout, "readout")


def output_exponents(init, lr_exponent=c, readout="sp", optimizer="adam", steps=4) -> pd.DataFrame:
    """Per-step exponents of the toy's output change (module docstring), next to the hidden layer's.

    Columns ``OUTPUT_COLUMNS``: ``z_a`` x_t, ``b_shift`` u_t, ``dz_a`` γ[ΔZ_A^t], ``db`` γ[ΔB_t], the output
    change of δ¹, δ², δ³ (``out_delta1..3``), of the whole step (``out_step``), the drift f_t − f_0
    (``out_drift``) and the feature exponent z_t (``z_b``).

    >>> table = output_exponents("A", Rational(-3, 4))  # Z_A grows from t = 2, so δ² reaches 0 at t = 3
    >>> table.loc[1:3, ["out_delta1", "out_delta2", "out_step"]].values.tolist()
    [[-oo, -1/4, -1/4], [0, -1/4, 0], [0, 0, 0]]
    """
    check_steps(steps)
    if optimizer == "sgd":
        raise ValueError("output_exponents models sign-like updates only: optimizer 'adam' or 'signsgd'")
    w, ie, ce = readout_exponent(readout), init_exponents(init), exact(lr_exponent, "lr_exponent")
    updates = update_rule(optimizer, {})[0]
    rows = trajectory(ie, ce, ce, updates, steps)
    drift = -oo if ie.starts_at_pretrained else gamma_product(w, contract(rows[0]["z_b_total"], "n", False))
    out = [{"step": 0, "z_a": rows[0]["z_a"], "b_shift": -oo, "dz_a": -oo, "db": -oo, "out_delta1": -oo,
            "out_delta2": -oo, "out_delta3": -oo, "out_step": -oo, "out_drift": drift, "z_b": rows[0]["z_b"]}]
    for prev, row in zip(rows, rows[1:]):
        dza, db, _ = updates(prev["z_a"], prev["b"], prev["b_shift"], prev["z_b"], ie, ce, ce, 0)
        # W_outᵀ(φ′ ⊙ B_{t−1}): B_0 independent of W_out (CLT), B − B_0 built from rows ∝ sign(W_out)
        read_b = gamma_sum(contract(gamma_product(w, ie.b), "n", False),
                           contract(gamma_product(w, prev["b_shift"]), "n"))
        d1 = gamma_product(dza, read_b)
        d2 = contract(gamma_product(w, db, prev["z_a"]), "n")  # ΔB rows carry sign(W_out): coherent
        d3 = contract(gamma_product(w, db, dza), "n")
        step = gamma_sum(d1, d2, d3)
        drift = gamma_sum(drift, step)
        out.append({"step": row["step"], "z_a": row["z_a"], "b_shift": row["b_shift"], "dz_a": dza, "db": db,
                    "out_delta1": d1, "out_delta2": d2, "out_delta3": d3, "out_step": step,
                    "out_drift": drift, "z_b": row["z_b"]})
    return pd.DataFrame(out, columns=OUTPUT_COLUMNS)


def loss_optimal_exponent(init, readout="sp", optimizer="adam", steps=4, stable_features=False):
    """Largest c with the toy's output drift O(1) at every step t ≤ ``steps``: the loss-optimal γ[η].

    Every piece of ``out_drift`` is affine in c with slope ≥ 0, so c* is the smallest root −k/m over the
    pieces m·c + k (m > 0); −oo if a c-free piece is > 0 (the init alone moves the output by a growing
    amount), oo if nothing moves. ``stable_features`` also asks Z_B = O(1) (z_t ≤ 0, the theorems'
    stability), which only the loss through a μP readout can ignore. ``readout`` may be a symbol (ω).

    >>> [loss_optimal_exponent(i, r) for r in ("sp", "mup") for i in ("A", "B")]
    [-3/4, -1, -1/2, -1/2]
    >>> loss_optimal_exponent("A", omega), loss_optimal_exponent("B", "mup", stable_features=True)
    (Min(-omega - 1, -omega/2 - 1), -1)
    """
    table = output_exponents(init, c, readout, optimizer, steps)
    constraints = list(table.out_drift) + (list(table.z_b) if stable_features else [])
    cstar, unstable = max_c(constraints)
    if unstable == sympy.true:  # a c-free piece > 0: the init alone moves the output by a growing amount
        return -oo
    if unstable != sympy.false:
        raise ValueError(f"the init's own output change ({unstable}) needs a numeric readout exponent")
    return cstar
