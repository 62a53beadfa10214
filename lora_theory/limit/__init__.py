"""The n → ∞ limit of LoRA training (layer setting), computed directly (docs/theory.md §12).

:mod:`.meanfield` (the mean-field state and its pure ``step``) → :mod:`.run` (the fold, rescaled statistics,
the rows of ``simulate(widths=[..., math.inf])``) → :mod:`.convergence` (finite widths against the limit, the
``limit_convergence`` figure, the limit's loss as a function of the learning-rate constant).

>>> from lora_theory.limit import run_limit
>>> tr = run_limit("B", -1.0, lrs=[1.0], train_cfg=TrainConfig(steps=2), cfg=LimitConfig(particles=1024))
>>> round(float(tr.values["z_b_rms_scaled"][-1, 0, 0]), 3)  # (1 − √(1+β₂)/(1+β₁))·√(2/π) (§12.6)
0.204
"""

from ..config import TrainConfig  # noqa: F401 (doctest)
from .convergence import convergence_errors, convergence_rate, fig_limit_convergence, loss_scan, random_parts
from .meanfield import LimitConfig, LimitState, LimitSystem, coordinate_law, init_state, statistics, step
from .run import (
    SCALED,
    build_system,
    check_limit,
    check_limit_unit,
    limit_trace,
    rescale,
    run_limit,
    scale_exponents,
)

__all__ = ["SCALED", "LimitConfig", "LimitState", "LimitSystem", "build_system", "check_limit",
           "check_limit_unit", "convergence_errors", "convergence_rate", "coordinate_law",
           "fig_limit_convergence", "init_state", "limit_trace", "loss_scan", "random_parts", "rescale",
           "run_limit", "scale_exponents", "statistics", "step"]
