"""Running the limit and rescaling: the rows of ``simulate(widths=[..., math.inf])`` (docs/theory.md §12).

A statistic with width exponent γ (the γ-calculus's, ``stats.STATS[stat].theory``; the layer loss is Θ(n),
docs/theory.md §1.2) has a finite limit once rescaled: ``<stat>_scaled`` = stat · n^{−γ}. :func:`rescale` adds
these columns to any ``simulate()`` table; the limit rows hold them directly, and their unscaled columns hold
the n → ∞ limit of the statistic itself: the rescaled value where γ = 0, 0 where γ < 0, ∞ where γ > 0.

>>> import math
>>> from lora_theory import simulate
>>> df = simulate(widths=[64, math.inf], inits="A", lr_exponent=-0.5, seeds=0, steps=2)
>>> sorted(df.width.unique().tolist()), "z_a_rms_scaled" in df.columns
([64.0, inf], True)
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import torch

from ..config import ModelConfig, TrainConfig
from ..engine import Trace, record_steps
from ..inits import get_init
from ..models import generator
from ..stats import STATS
from ..theory import exponents
from .meanfield import DTYPE, LimitConfig, LimitSystem, coordinate_law, init_state, statistics, step

__all__ = ["LOSS_EXPONENT", "SCALED", "build_system", "check_limit", "check_limit_unit", "limit_trace",
           "rescale", "run_limit", "scale_exponents"]

LOSS_EXPONENT = {"layer": 1}  # the layer loss sums n squared Θ(1) entries (docs/theory.md §1.2, §6)
SCALED = tuple(f"{k}_scaled" for k in STATS)
_TAG_LIMIT = 11  # random stream of the limit's random parts R_A, R_H (models.generator tags 1-3 are taken)


def run_limit(init: str, lr_exponent: float, lrs=(1.0,), seeds=(0,), optimizer: str = "adam", rank: int = 4,
              model: ModelConfig | None = None, train_cfg: TrainConfig | None = None,
              cfg: LimitConfig | None = None, xi: torch.Tensor | None = None) -> Trace:
    """Fold :func:`~lora_theory.limit.meanfield.step` over ``train_cfg.steps`` updates; rescaled statistics.

    Args:
        init: a key of ``INITS`` (every one but ``peft_orthogonal``).
        lr_exponent: c of η_A = C·n^c (η_B = η_A·lr_ratio·n^{lr_ratio_exponent}); c ≤ c* of the calculus.
        lrs: constants C; seeds: seeds of the random parts R_A, R_H.
        optimizer, rank, model, train_cfg: as in :func:`lora_theory.simulate` (``layer`` setting only).
        cfg: particles and n_∞ (:class:`LimitConfig`).
        xi: the random parts as standard Gaussians (S, 2, N, r): R_A/(σ_A√n) and R_H/(σ_B√(2n)); default:
            drawn from each seed. A finite run's own (``convergence.random_parts``) couples the limit to it.

    Returns:
        A ``Trace`` whose ``values`` hold, per stat, the limit of the statistic and ``<stat>_scaled``, each
        (T_rec, S, L).

    >>> tr = run_limit("A", -0.5, lrs=[0.5], train_cfg=TrainConfig(steps=2), cfg=LimitConfig(particles=256))
    >>> round(float(tr.values["z_b_rms_scaled"][-1, 0, 0]), 2) > 0, float(tr.values["loss_scaled"][0, 0, 0])
    (True, 1.0)
    """
    model, train_cfg, cfg = model or ModelConfig(), train_cfg or TrainConfig(), cfg or LimitConfig()
    check_limit(model, init, lr_exponent, optimizer, train_cfg)
    system = build_system(init, model, train_cfg, rank, optimizer, tuple(seeds), tuple(lrs), lr_exponent, cfg,
                          xi)
    gammas = scale_exponents(init, lr_exponent, lr_exponent + train_cfg.lr_ratio_exponent, optimizer,
                             train_cfg.steps)
    record, prev, state = record_steps(train_cfg), None, init_state(system)
    rows, steps = [], sorted(record)
    for t in range(train_cfg.steps + 1):
        if t in record:
            rows.append({k: v.numpy() for k, v in statistics(prev, state, system).items()})
        if t < train_cfg.steps:
            prev, state = state, step(state, system)
    return _scaled_trace(np.array(steps), rows, gammas, system.n)


def limit_trace(unit, cfg: LimitConfig | None = None) -> tuple[Trace, np.ndarray]:
    """The limit's :class:`Trace` of a ``simulate.Unit`` at width ``math.inf``, and its η_A (their limits)."""
    exps = {lr.exponent for lr in check_limit_unit(unit).lrs}
    parts = [run_limit(unit.init, c, [lr.const for lr in unit.lrs if lr.exponent == c], unit.seeds,
                       unit.optimizer, unit.rank, unit.model, unit.train, cfg) for c in sorted(exps)]
    # learning rates are planned in the order (C, c); regroup the per-c runs into that order
    order = [(c, i) for c in sorted(exps) for i, lr in enumerate(unit.lrs) if lr.exponent == c]
    pos = np.argsort([i for _, i in order])
    values = {k: np.concatenate([p.values[k] for p in parts], axis=2)[:, :, pos] for k in parts[0].values}
    div = np.concatenate([p.diverged for p in parts], axis=2)[:, :, pos]
    eta = np.array([lr.const * math.inf ** lr.exponent for lr in unit.lrs])
    return Trace(parts[0].steps, values, div), eta


def check_limit_unit(unit):
    """``unit`` (a ``simulate.Unit`` at width ``math.inf``) when :func:`check_limit` accepts each of its
    learning-rate exponents; else the ValueError, before anything runs."""
    for c in dict.fromkeys(lr.exponent for lr in unit.lrs):
        check_limit(unit.model, unit.init, c, unit.optimizer, unit.train)
    return unit


def check_limit(model: ModelConfig, init: str, lr_exponent, optimizer: str, train_cfg: TrainConfig) -> None:
    """ValueError unless the limit is derived for this case (docs/theory.md §12.5): layer setting, an init
    with independent factors, and c ≤ c* (z_t ≤ 0 for every t ≤ T, so every rescaled statistic is finite)."""
    if model.setting != "layer":
        raise ValueError(f"width math.inf needs setting='layer', got setting={model.setting!r}: the toy's "
                         "limit is not derived (no γ-calculus for its exponents; docs/theory.md §12.5)")
    if lr_exponent is None:
        raise ValueError("lr_exponent must be a width exponent c (not None) for width math.inf: an absolute "
                         "learning rate has no n → ∞ limit")
    if get_init(init).coupling != "independent":
        raise ValueError(f"init {init!r} is not supported at width math.inf (A_0 and B_0 are coupled through "
                         "a random r×r rotation; docs/theory.md §12.5)")
    zb = scale_exponents(init, lr_exponent, lr_exponent + train_cfg.lr_ratio_exponent, optimizer,
                         train_cfg.steps)["z_b"]
    if max(zb) > 0:
        raise ValueError(f"lr_exponent={lr_exponent} is unstable for init {init!r} with {optimizer} over "
                         f"{train_cfg.steps} steps (the adapter's output grows like n^{max(zb):g}); width "
                         "math.inf needs c <= c* (theory.max_stable_lr_exponent)")


def build_system(init: str, model: ModelConfig, train_cfg: TrainConfig, rank: int, optimizer: str,
                 seeds: tuple, lrs: tuple, lr_exponent: float, cfg: LimitConfig,
                 xi: torch.Tensor | None = None) -> LimitSystem:
    """The :class:`LimitSystem` of one (init, optimiser, rank, c) for ``seeds`` × ``lrs`` at n_∞."""
    spec, n, N, r = get_init(init), cfg.width, model.n_train, rank
    z, e, beta = coordinate_law(N, r, spec.b.law, cfg.particles, cfg.particle_seed)
    sd_a, sd_b = math.sqrt(spec.a.variance(n, r)), math.sqrt(spec.b.variance(n, r))
    if xi is None:
        xi = torch.stack([torch.randn((2, N, r), generator=generator(seed, _TAG_LIMIT, 0, r), dtype=DTYPE)
                          for seed in seeds])
    if tuple(xi.shape) != (len(seeds), 2, N, r):
        raise ValueError(f"xi must have shape (seeds, 2, N, r) = {(len(seeds), 2, N, r)}, "
                         f"got {tuple(xi.shape)}")
    xi = xi.to(DTYPE)[:, :, None]  # (S, 2, 1, N, r)
    eta = torch.tensor([C * n ** lr_exponent for C in lrs], dtype=DTYPE)
    lr_a = eta.expand(len(seeds), -1)[..., None, None]  # (S, L, 1, 1)
    za0 = sd_a * math.sqrt(n) * xi[:, 0]  # A_0 Z: variance n·σ_A² per entry
    rh = sd_b * math.sqrt(2 * n) * xi[:, 1]  # Σ_i ẽ_i B_{0,i}ᵀ: Var ẽ = 2, variance 2n·σ_B² per entry
    return LimitSystem(z, e, sd_b * beta, za0, rh, lr_a, lr_a * train_cfg.lr_b_factor(n), n,
                       model.multiplier(r), optimizer, spec.subtract, (train_cfg.beta1, train_cfg.beta2))


@functools.lru_cache(maxsize=256)
def scale_exponents(init: str, c_a: float, c_b: float, optimizer: str, steps: int) -> dict[str, tuple]:
    """Width exponent (float, −inf for an exact zero) of each statistic at t = 0..steps, plus ``z_b`` (the
    adapter's effect); the layer loss has exponent 1.

    >>> scale_exponents("A", -0.5, -0.5, "adam", 3)["z_a_rms"]
    (0.0, 0.0, 0.5, 0.5)
    """
    table = exponents(init, (c_a, c_b), optimizer, steps=steps)
    out = {k: tuple(float(v) for v in table[s.theory]) for k, s in STATS.items() if s.theory is not None}
    out["loss"] = (float(LOSS_EXPONENT["layer"]),) * (steps + 1)
    out["test_loss"] = (math.nan,) * (steps + 1)
    out["z_b"] = tuple(float(v) for v in table["z_b"])
    return out


def rescale(df: pd.DataFrame, lr_ratio_exponent: float = 0.0) -> pd.DataFrame:
    """A copy of a ``simulate()`` table with ``<stat>_scaled`` = stat · n^{−γ} (γ from the γ-calculus at the
    row's init, c, step and optimiser; c_B = c + ``lr_ratio_exponent``). Rows that already hold a value
    (the limit's) keep it; rows without a width exponent c, or of the toy, get NaN.

    >>> d = pd.DataFrame({"setting": "layer", "init": "A", "optimizer": "adam", "width": [4.0, 16.0],
    ...                   "lr_exponent": -0.5, "step": 2, "z_a_rms": [2.0, 4.0]})
    >>> rescale(d)["z_a_rms_scaled"].tolist()
    [1.0, 1.0]
    """
    out = df.copy()
    stats = [k for k in STATS if k in out.columns]
    for k in stats:
        if f"{k}_scaled" not in out.columns:
            out[f"{k}_scaled"] = np.nan
    ok = (out["setting"] == "layer") & out["lr_exponent"].notna() & np.isfinite(out["width"].astype(float))
    for (init, opt, c), g in out[ok].groupby(["init", "optimizer", "lr_exponent"]):
        gam = scale_exponents(init, float(c), float(c) + lr_ratio_exponent, opt, max(1, int(g.step.max())))
        width, step_idx = g["width"].to_numpy(float), g["step"].to_numpy(int)
        for k in stats:
            gamma = np.array(gam[k])[step_idx]
            with np.errstate(all="ignore"):
                val = np.where(np.isneginf(gamma), np.where(g[k] == 0, 0.0, np.nan),
                               g[k].to_numpy(float) * width ** -np.where(np.isneginf(gamma), 0.0, gamma))
            col = f"{k}_scaled"
            out.loc[g.index, col] = np.where(out.loc[g.index, col].isna(), val, out.loc[g.index, col])
    return out


# ----------------------------------------------------------------------------------------- private

def _scaled_trace(steps: np.ndarray, rows: list[dict], gammas: dict, n: float) -> Trace:
    """Rescale the statistics at n_∞ (stat · n_∞^{−γ}) and write their n → ∞ limits; mark non-finite runs."""
    values = {}
    for k in STATS:
        raw = np.stack([row[k] for row in rows])  # (T_rec, S, L)
        gamma = np.array(gammas[k])[steps][:, None, None]
        with np.errstate(all="ignore"):
            scaled = np.where(np.isneginf(gamma), np.where(raw == 0, 0.0, np.nan),
                              raw * n ** -np.where(np.isneginf(gamma), 0.0, gamma))
            limit = np.where(np.isnan(scaled), np.nan,
                             np.where(gamma > 0, np.inf, np.where(gamma == 0, scaled, 0.0)))
        values[k], values[f"{k}_scaled"] = limit, scaled
    bad = ~np.isfinite(values["loss_scaled"]) | ~np.isfinite(values["z_b_rms_scaled"])
    diverged = np.logical_or.accumulate(bad, axis=0)
    for k in values:
        values[k] = np.where(diverged, np.nan, values[k])
    return Trace(steps, values, diverged)
