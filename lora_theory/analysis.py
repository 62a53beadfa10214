"""Pure functions from a tidy ``simulate()`` table to the quantities the paper plots.

* :func:`optimal_lr`: the loss-optimal learning rate per group (the paper's Fig. 2 criterion);
  :func:`interpolated_optimal_lr` refines it per seed with a quadratic in log2 η through the grid minimum.
* :func:`max_stable_lr`: the feature-level maximal stable learning rate, the largest η below the
  first η whose max_t RMS(Z_B) exceeds a threshold τ (Theorem 1/2's stability, Z_B = O(1)).
* :func:`classify_regime`: the regime of docs/theory.md §4 read off measured width exponents;
  :func:`regime_table` puts it next to the γ-calculus's verdict for a grid of (init, c).
* :func:`slope_table`: measured width exponents next to the theory's (``stats.STATS[...].theory``).

Glossary: η learning rate, n width, c = γ[η], τ the Z_B threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .checks import check_positive, check_table, is_real
from .fit import fit_exponent, fit_exponents

REGIME_TOLERANCE = 0.15  # |slope| below this counts as Θ(1) when reading a regime off measurements
REGIME_STATS = ("z_b_rms", "dz_b_rms", "delta1_rms", "delta2_rms", "z_a_rms")


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last recorded step of every configuration."""
    check_table(df, df=["step"])
    return df[df.step == df.step.max()]


def optimal_lr(df: pd.DataFrame, by=("init", "width"), metric: str = "loss") -> pd.DataFrame:
    """Loss-optimal learning rate per group: argmin over ``lr`` of the seed-mean final ``metric``.

    Diverged runs count as +inf. Returns one row per group with ``lr_opt`` and the best ``metric``.

    Example:
        >>> d = pd.DataFrame({"init": "A", "width": 64, "lr": [0.1, 0.2, 0.1, 0.2], "seed": [0, 0, 1, 1],
        ...                   "step": 5, "loss": [1.0, 0.5, 1.2, 0.7]})
        >>> optimal_lr(d)[["lr_opt", "loss"]].values.tolist()
        [[0.2, 0.6]]
    """
    check_table(df, by=list(by), metric=metric, df=["lr", "step"])
    last = final_rows(df).assign(**{metric: lambda d: d[metric].fillna(np.inf)})
    mean = last.groupby([*by, "lr"], as_index=False)[metric].mean()
    best = mean.loc[mean.groupby(list(by))[metric].idxmin()]
    return best.rename(columns={"lr": "lr_opt"}).reset_index(drop=True)


def optimal_lr_per_seed(df: pd.DataFrame, by=("init", "width"), metric: str = "loss") -> pd.DataFrame:
    """:func:`optimal_lr` within each seed (the unit the bootstrap of :func:`fit_exponent` resamples)."""
    check_table(df, df=["seed"])
    frames = [optimal_lr(g, by, metric).assign(seed=seed) for seed, g in df.groupby("seed")]
    return pd.concat(frames, ignore_index=True)


def interpolated_optimal_lr(df: pd.DataFrame, by=("init", "width", "seed"), metric: str = "loss",
                            log_metric: bool = True) -> pd.DataFrame:
    """Loss-optimal η per group, interpolated: the vertex of the parabola in log2 η through the final
    ``metric`` (its log if ``log_metric``) at the grid argmin and its two neighbours.

    Diverged runs count as +inf. The vertex lies between the neighbours (the middle point is the lowest);
    when the argmin is at an edge of the group's grid, a neighbour is not finite, or the three values are
    equal, ``lr_opt`` falls back to the argmin. Columns: ``by``, ``lr_opt``, ``lr_argmin``, ``metric`` (its
    value at the argmin), ``method`` (``"quadratic"``, ``"edge"``, ``"diverged_neighbour"`` or ``"flat"``),
    ``lr_lo``, ``lr_hi`` (the group's grid span).

    Example:
        >>> d = pd.DataFrame({"init": "A", "width": 64, "seed": 0, "step": 5, "lr": [0.25, 0.5, 1.0],
        ...                   "loss": 2.0 ** np.array([1.0, 0.0, 0.5])})  # log2 loss 1, 0, 1/2
        >>> r = interpolated_optimal_lr(d).iloc[0]
        >>> round(float(np.log2(r.lr_opt)), 4), r.method
        (-0.8333, 'quadratic')
    """
    check_table(df, by=list(by), metric=metric, df=["lr", "step"])
    last = final_rows(df).assign(**{metric: lambda d: d[metric].fillna(np.inf)})
    rows = []
    for key, g in last.groupby(list(by)):
        g = g.groupby("lr", as_index=False)[metric].mean().sort_values("lr")
        x, v = np.log2(g.lr.to_numpy(float)), g[metric].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(np.isfinite(v), np.log(v), np.inf) if log_metric else v
        i = int(np.argmin(y))
        xo, method = x[i], "quadratic"
        if i == 0 or i == len(x) - 1:
            method = "edge"
        elif not np.isfinite(y[i - 1:i + 2]).all():
            method = "diverged_neighbour"
        else:
            (x0, x1, x2), (y0, y1, y2) = x[i - 1:i + 2], y[i - 1:i + 2]
            curv = (y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)  # ∝ the parabola's curvature, ≥ 0
            if curv == 0:
                method = "flat"
            else:  # vertex of the parabola through the three points
                num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
                xo = x1 - 0.5 * num / ((x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0))
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "lr_opt": float(2.0 ** xo),
                     "lr_argmin": float(2.0 ** x[i]), metric: float(v[i]), "method": method,
                     "lr_lo": float(2.0 ** x[0]), "lr_hi": float(2.0 ** x[-1])})
    return pd.DataFrame(rows)


def max_stable_lr(df: pd.DataFrame, tau: float, by=("init", "width", "seed")) -> pd.DataFrame:
    """Largest η whose run, and every smaller η's run, keeps max_t RMS(Z_B) ≤ ``tau`` (per group).

    A diverged run counts as unstable. Groups whose smallest η is already unstable get NaN.
    """
    check_positive("tau", tau)
    check_table(df, by=list(by), df=["lr", "z_b_rms", "diverged"])
    peak = df.groupby([*by, "lr"], as_index=False).agg(z=("z_b_rms", "max"), diverged=("diverged", "any"))
    peak["bad"] = peak["diverged"] | ~(peak["z"] <= tau)
    rows = []
    for key, g in peak.groupby(list(by)):
        g = g.sort_values("lr")
        first_bad = g.lr[g.bad].min() if g.bad.any() else np.inf
        ok = g.lr[g.lr < first_bad]
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)),
                         lr_max=ok.max() if len(ok) else np.nan))
    return pd.DataFrame(rows)


def window_rms(df: pd.DataFrame, stats, first_step: int = 2, by=("init", "lr_exponent", "width", "seed")):
    """RMS over steps ≥ ``first_step`` of each statistic, per configuration
    (robust to oscillation)."""
    check_table(df, stats=list(stats), by=list(by), df=["step"])
    d = df[df.step >= first_step]
    return (d.groupby(list(by), dropna=False)[list(stats)]
            .agg(lambda x: np.sqrt(np.mean(np.square(x)))).reset_index())


def classify_regime(slopes: dict[str, float], tol: float = REGIME_TOLERANCE) -> tuple[str, bool]:
    """Regime (docs/theory.md §4) from measured width exponents of z_b, dz_b, δ¹, δ² and z_a.

    unstable if Z_B grows (slope > tol); else feature learning if ΔZ_B = Θ(1) (slope ≥ −tol), and
    efficient if moreover δ¹ and δ² are both Θ(1); otherwise stable without feature learning.
    The flag is internal instability: Z_A grows (slope > tol).

    >>> classify_regime({"z_b_rms": 0.0, "dz_b_rms": 0.0, "delta1_rms": 0.0, "delta2_rms": -1.0,
    ...                  "z_a_rms": 0.0})
    ('feature_learning', False)
    """
    if not isinstance(slopes, Mapping):
        raise TypeError(f"slopes must be a dict of statistic -> width exponent, got {slopes!r}")
    if not (is_real(tol) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    missing = sorted(k for k in REGIME_STATS if not np.isfinite(slopes.get(k, np.nan)))
    if missing:
        raise ValueError(f"classify_regime needs finite slopes of {list(REGIME_STATS)}; "
                         f"missing or NaN: {missing}")
    if slopes["z_b_rms"] > tol:
        regime = "unstable"
    elif slopes["dz_b_rms"] < -tol:
        regime = "stable_no_feature_learning"
    elif min(slopes["delta1_rms"], slopes["delta2_rms"]) >= -tol:
        regime = "efficient_feature_learning"
    else:
        regime = "feature_learning"
    return regime, bool(slopes["z_a_rms"] > tol)


def measured_slopes(df: pd.DataFrame, stats, first_step: int = 2) -> dict[str, float]:
    """Width exponent of the window RMS (steps ≥ ``first_step``) of each statistic in ``df``."""
    w = window_rms(df, stats, first_step, by=("width", "seed"))
    return {s: fit_exponent(w, s, n_boot=0).slope for s in stats}


def slope_table(df: pd.DataFrame, stats=("z_a_rms", "z_b_rms", "b_shift_rms"), first_step: int = 2,
                per_step: bool = False) -> pd.DataFrame:
    """Width exponents per (init, lr_exponent[, step]) with calibrated 95% intervals (``fit_exponent``'s
    per-seed t), next to the γ-calculus prediction of each statistic (``stats.STATS[stat].theory``; the window
    fit uses steps ≥ ``first_step`` and is compared with the theory at the last step). With ≥ 4 widths the
    finite-width-corrected exponent and its interval are added (``corrected, corrected_lo, corrected_hi``).

    Columns: ``init, lr_exponent, [step,] stat, slope, lo, hi,
    [corrected, corrected_lo, corrected_hi,] theory``.
    """
    from .theory import theory_exponent

    check_table(df, stats=list(stats), df=["init", "lr_exponent", "step", "width", "seed"])
    if df["width"].nunique() < 2:
        raise ValueError(f"df must hold at least two widths to fit width exponents, got "
                         f"{sorted(int(w) for w in df.width.unique())}")
    if not (df["step"] >= (1 if per_step else first_step)).any():
        raise ValueError(f"first_step={first_step} leaves no row to fit: the last step of df is "
                         f"{df.step.max()}")
    kw = {"correction": df["width"].nunique() >= 4}
    if per_step:
        table = fit_exponents(df[df.step >= 1], list(stats), ["init", "lr_exponent", "step"], **kw)
    else:
        table = fit_exponents(window_rms(df, stats, first_step), list(stats), ["init", "lr_exponent"], **kw)
    last = int(df.step.max())

    def theory(row):
        gamma = theory_exponent(row.stat, row.init, row.lr_exponent, int(row.step) if per_step else last,
                                steps=last)
        return np.nan if gamma is None else float(gamma)

    return table.assign(theory=table.apply(theory, axis=1))


def measured_regime(df: pd.DataFrame, first_step: int = 3) -> tuple[str, bool | None]:
    """(regime, internally unstable) of one (init, c) sweep: ``"unstable"`` and None (Z_A's growth is not
    measurable: NaN after divergence) if any run diverged, else :func:`classify_regime` of the window-RMS
    width exponents (steps ≥ ``first_step``); ValueError when a statistic is exactly zero (no slope)."""
    if df.diverged.any():
        return "unstable", None
    return classify_regime(measured_slopes(df, REGIME_STATS, first_step=first_step))


def regime_table(df: pd.DataFrame, steps: int, first_step: int = 3) -> pd.DataFrame:
    """Theory vs measured regime for every (init, lr_exponent) of a layer-setting sweep ``df``.

    The theory is :func:`lora_theory.theory.regime` at c; the measurement is :func:`classify_regime` of
    the window-RMS width exponents (steps ≥ ``first_step``); a cell with a diverged run is measured
    ``unstable`` and its internal (in)stability is not measured (None: Z_A is NaN after divergence).
    Columns: ``init, c, regime, internally_unstable, measured, measured_internally_unstable, agree``.
    """
    from .theory import regime

    check_table(df, df=["init", "lr_exponent", "width", "seed", "step", "diverged", "z_a_rms"])
    rows = []
    for (init, c), sel in df.groupby(["init", "lr_exponent"], sort=False):
        r = regime(init, float(c), steps=steps)
        measured, unstable = measured_regime(sel, first_step)
        rows.append({"init": init, "c": float(c), "regime": r.regime,
                     "internally_unstable": r.internally_unstable,
                     "measured": measured, "measured_internally_unstable": unstable,
                     "agree": measured == r.regime and unstable in (None, r.internally_unstable)})
    return pd.DataFrame(rows)
