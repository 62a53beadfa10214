"""The γ-calculus of LoRA training at large width, exact in sympy (docs/theory.md §3–§8, §13).

Layers, bottom to top: :mod:`.algebra` (the γ-operator's rules as max-plus expressions),
:mod:`.recursion` (one update step folded over steps, per optimiser), :mod:`.solve` (c*, regimes,
the efficient region of the LoRA+ plane), :mod:`.law` (η_max as a power law in width, rank and α),
:mod:`.toy` (the toy's loss-optimal η, read at its readout) and :mod:`.writeup` (``derivation``: the
recursion written out as a table). The rank may grow with the width,
r = Θ(n^``rho``), under any multiplier convention s = α·r^{−γ_α} (``SCALINGS``).

>>> from lora_theory.theory import max_stable_lr_exponent, regime
>>> max_stable_lr_exponent("A"), regime("B", -1).regime
(-1/2, 'feature_learning')
"""

from .algebra import (
    SCALINGS,
    c,
    c_A,
    c_B,
    contract,
    gamma_A,
    gamma_alpha,
    gamma_B,
    gamma_product,
    gamma_sum,
    reduce_on_box,
    rho,
    scaling_exponent,
)
from .law import LearningRateLaw, lr_law
from .recursion import COLUMNS, WINDOW, InitExponents, RankScaling, init_exponents, rank_scaling
from .solve import (
    REGIMES,
    Regime,
    efficient_region,
    exponents,
    max_stable_lr_exponent,
    max_stable_lr_exponent_symbolic,
    regime,
    theory_exponent,
)
from .toy import READOUTS, loss_optimal_exponent, omega, output_exponents, readout_exponent
from .writeup import derivation

__all__ = ["COLUMNS", "READOUTS", "REGIMES", "SCALINGS", "WINDOW", "InitExponents", "LearningRateLaw",
           "RankScaling", "Regime", "c", "c_A", "c_B", "contract", "derivation", "efficient_region",
           "exponents", "gamma_A", "gamma_B", "gamma_alpha", "gamma_product", "gamma_sum", "init_exponents",
           "loss_optimal_exponent", "lr_law", "max_stable_lr_exponent", "max_stable_lr_exponent_symbolic",
           "omega", "output_exponents", "rank_scaling", "readout_exponent", "reduce_on_box", "regime", "rho",
           "scaling_exponent", "theory_exponent"]
