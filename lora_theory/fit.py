"""Width exponents from sweeps: log-log least squares with bootstrap confidence intervals.

``fit_exponent`` estimates γ in ``stat ≈ K · n^γ`` from a tidy ``simulate()`` table:
the slope of log(stat) against log(width), with a percentile bootstrap over seeds (rows of
the same seed are resampled together, so seed-to-seed variation sets the interval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Exponent:
    """A fitted width exponent with its bootstrap interval (``lo``, ``hi``) at level ``level``."""

    slope: float
    lo: float
    hi: float
    level: float
    n_points: int

    def __str__(self) -> str:
        return f"{self.slope:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"


def fit_exponent(df: pd.DataFrame, stat: str, x: str = "width", n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> Exponent:
    """Slope of log(``stat``) against log(``x``) over the rows of ``df``, with a seed bootstrap.

    Rows with a non-finite or non-positive value are dropped. Seeds are the resampling unit;
    with one seed the interval collapses to the point estimate.

    Args:
        df: tidy table (e.g. one init, one step, one learning-rate rule, several widths and seeds).
        stat: column to fit, e.g. ``"z_a_rms"``.
        x: the scale column (``"width"``).
        n_boot: bootstrap resamples.
        level: confidence level of the interval.
        seed: seed of the bootstrap's generator.

    Example:
        >>> d = pd.DataFrame({"width": [64, 128, 256] * 2, "seed": [0] * 3 + [1] * 3,
        ...                   "v": [1.0, 2.0, 4.0, 1.1, 2.2, 4.4]})
        >>> round(fit_exponent(d, "v").slope, 6)
        1.0
    """
    if stat not in df.columns or x not in df.columns:
        raise ValueError(f"stat and x must be columns of df, got stat={stat!r}, x={x!r}")
    d = df[np.isfinite(df[stat]) & (df[stat] > 0)]
    if d[x].nunique() < 2:
        raise ValueError(f"fit_exponent needs at least two distinct {x} values with finite positive {stat}")
    lx, ly = np.log(d[x].to_numpy(float)), np.log(d[stat].to_numpy(float))
    slope = _ols_slope(lx, ly)
    groups = d["seed"].to_numpy() if "seed" in d.columns else np.zeros(len(d))
    boots = _bootstrap(lx, ly, groups, n_boot, seed)
    if boots.size == 0:
        return Exponent(slope, slope, slope, level, len(d))
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Exponent(slope, float(lo), float(hi), level, len(d))


def fit_exponents(df: pd.DataFrame, stats: list[str], by: list[str], **kw) -> pd.DataFrame:
    """``fit_exponent`` for each group of ``by`` and each stat: columns ``by + [stat, slope, lo, hi]``.

    A group with fewer than two widths of finite positive values (e.g. an exactly zero quantity)
    gets NaN rather than an error.
    """
    rows = []
    for key, g in df.groupby(by, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for stat in stats:
            try:
                e = fit_exponent(g, stat, **kw)
                fit = {"slope": e.slope, "lo": e.lo, "hi": e.hi}
            except ValueError:
                fit = {"slope": np.nan, "lo": np.nan, "hi": np.nan}
            rows.append(dict(zip(by, key), stat=stat, **fit))
    return pd.DataFrame(rows)


def _ols_slope(lx: np.ndarray, ly: np.ndarray) -> float:
    lx0 = lx - lx.mean()
    return float((lx0 * (ly - ly.mean())).sum() / (lx0 ** 2).sum())


def _bootstrap(lx, ly, groups, n_boot: int, seed: int) -> np.ndarray:
    labels = np.unique(groups)
    if len(labels) < 2:
        return np.array([])
    rng = np.random.default_rng(seed)
    index = [np.flatnonzero(groups == g) for g in labels]
    out = []
    for _ in range(n_boot):
        take = np.concatenate([index[i] for i in rng.integers(0, len(labels), len(labels))])
        if np.ptp(lx[take]) > 0:
            out.append(_ols_slope(lx[take], ly[take]))
    return np.asarray(out)
