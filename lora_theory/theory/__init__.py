"""The γ-calculus of LoRA training at large width, exact in sympy (docs/theory.md §3–§8).

Layers, bottom to top: :mod:`.algebra` (the γ-operator's rules as max-plus expressions),
:mod:`.recursion` (one update step folded over steps, per optimiser), :mod:`.solve` (c*, regimes,
the efficient region of the LoRA+ plane) and :mod:`.derivation` (the recursion written out as a table).

>>> from lora_theory.theory import max_stable_lr_exponent, regime
>>> max_stable_lr_exponent("A"), regime("B", -1).regime
(-1/2, 'feature_learning')
"""

from .algebra import c, c_A, c_B, contract, gamma_A, gamma_B, gamma_product, gamma_sum
from .derivation import derivation
from .recursion import COLUMNS, WINDOW, InitExponents, init_exponents
from .solve import (REGIMES, Regime, efficient_region, exponents, max_stable_lr_exponent,
                    max_stable_lr_exponent_symbolic, regime, theory_exponent)

__all__ = ["COLUMNS", "REGIMES", "WINDOW", "InitExponents", "Regime", "c", "c_A", "c_B", "contract", "derivation",
           "efficient_region", "exponents", "gamma_A", "gamma_B", "gamma_product", "gamma_sum", "init_exponents",
           "max_stable_lr_exponent", "max_stable_lr_exponent_symbolic", "regime", "theory_exponent"]
