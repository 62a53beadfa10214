"""Width exponents from sweeps: log-log least squares with intervals whose coverage is measured.

``fit_exponent`` estimates γ in ``stat ≈ K · n^γ`` from a tidy ``simulate()`` table: the slope of
log(stat) against log(width). Its interval is for the slope of E[log stat] against log n *at the widths
of the table* (the "large-seed slope"), not for the n → ∞ exponent; :func:`fit_exponent` with
``correction=True`` also fits a finite-width correction term and reports the extrapolated exponent.

Interval methods (``method``), their coverage measured by ``lora-theory calibrate`` (results/calibration):

* ``"seed"`` (default): one slope per seed, then a Student-t interval over seeds (k − 1 degrees of
  freedom). Valid whenever seeds are independent replicates, whatever the dependence across widths
  (in the toy a seed fixes the teacher at every width).
* ``"width"``: per-width means of log(stat) and their standard errors, combined into the slope's
  standard error with Welch–Satterthwaite degrees of freedom. Valid when draws at different widths
  are independent (the layer setting: every (seed, width) has its own random stream); more degrees of
  freedom than ``"seed"`` with 2–3 seeds.
* ``"bootstrap"``: the earlier percentile bootstrap over seeds; kept for comparison only (it
  under-covers with few seeds: see the calibration results).

Rows with a non-finite or non-positive value (diverged runs: NaN from the step they diverge) are
dropped, and a ``FitWarning`` names every width that lost all or some of its seeds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from .checks import check_int, check_table, is_real, lookup

__all__ = ["METHODS", "Exponent", "FitWarning", "fit_exponent", "fit_exponents"]


class FitWarning(UserWarning):
    """A fit used fewer widths or seeds than its table holds (diverged or zero values were dropped)."""


@dataclass(frozen=True)
class Exponent:
    """A fitted width exponent with its interval (``lo``, ``hi``) at level ``level``.

    ``corrected``/``corrected_lo``/``corrected_hi``: the exponent of the fit with a finite-width
    correction term (NaN unless ``correction=True``); ``bias`` = slope − corrected.
    """

    slope: float
    lo: float
    hi: float
    level: float
    n_points: int
    method: str = "seed"
    corrected: float = float("nan")
    corrected_lo: float = float("nan")
    corrected_hi: float = float("nan")

    @property
    def bias(self) -> float:
        """Estimated finite-width bias of the raw slope (raw − corrected)."""
        return self.slope - self.corrected

    def __str__(self) -> str:
        text = f"{self.slope:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"
        if np.isfinite(self.corrected):
            text += f" (corrected {self.corrected:+.3f} [{self.corrected_lo:+.3f}, {self.corrected_hi:+.3f}])"
        return text


def fit_exponent(df: pd.DataFrame, stat: str, x: str = "width", level: float = 0.95, method: str = "seed",
                 correction: bool = False, n_boot: int = 1000, seed: int = 0) -> Exponent:
    """Slope of log(``stat``) against log(``x``) over the rows of ``df``, with a calibrated interval.

    Args:
        df: tidy table (e.g. one init, one step, one learning-rate rule, several widths and seeds).
        stat: column to fit, e.g. ``"z_a_rms"``.
        x: the scale column (``"width"``).
        level: confidence level of the interval.
        method: ``"seed"``, ``"width"`` or ``"bootstrap"`` (see the module docstring); with a single
            seed every interval collapses to the point estimate.
        correction: also fit log stat = γ·log n + a + b·n^{-1/2} (needs ≥ 4 widths) and report its γ
            with an interval of the same method (``Exponent.corrected``).
        n_boot, seed: resamples and generator seed of ``method="bootstrap"``.

    Example:
        >>> d = pd.DataFrame({"width": [64, 128, 256] * 2, "seed": [0] * 3 + [1] * 3,
        ...                   "v": [1.0, 2.0, 4.0, 1.1, 2.2, 4.4]})
        >>> round(fit_exponent(d, "v").slope, 6)
        1.0
    """
    check_table(df, stat=stat, x=x)
    lookup(METHODS, method, "method")
    if not (is_real(level) and 0 < level < 1):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    check_int("n_boot", n_boot, low=0)
    check_int("seed", seed, low=0)
    scale = df[x].to_numpy(float)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"x column {x!r} must hold finite positive values (fitted on a log scale), got "
                         f"{sorted(set(scale.tolist()))[:5]}")
    d = _usable(df, stat, x)
    lx, ly = np.log(d[x].to_numpy(float)), np.log(d[stat].to_numpy(float))
    seeds = d["seed"].to_numpy() if "seed" in d.columns else np.zeros(len(d), dtype=int)
    slope = float(_ols(lx, ly)[0])
    lo, hi = METHODS[method](lx, ly, seeds, level, lambda a, b: _ols(a, b)[0], n_boot, seed)
    out = Exponent(slope, lo, hi, level, len(d), method)
    if correction:
        if len(np.unique(lx)) < 4:
            raise ValueError(f"correction=True needs at least 4 distinct {x} values, "
                             f"got {len(np.unique(lx))}")
        corr = lambda a, b: _ols(a, b, correction=True)[0]  # noqa: E731
        c_lo, c_hi = METHODS[method](lx, ly, seeds, level, corr, n_boot, seed)
        out = Exponent(slope, lo, hi, level, len(d), method, float(corr(lx, ly)), c_lo, c_hi)
    return out


def fit_exponents(df: pd.DataFrame, stats: list[str], by: list[str], **kw) -> pd.DataFrame:
    """``fit_exponent`` for each group of ``by`` and each stat: columns ``by + [stat, slope, lo, hi]``.

    A group with fewer than two widths of finite positive values (e.g. an exactly zero quantity)
    gets NaN rather than an error; an unknown stat is an error.
    """
    stats, by = [stats] if isinstance(stats, str) else list(stats), [by] if isinstance(by, str) else list(by)
    if not stats or not by:
        raise ValueError(f"stats and by must each name at least one column, got stats={stats}, by={by}")
    check_table(df, stats=stats, by=by)
    rows = []
    for key, g in df.groupby(by, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for stat in stats:
            try:
                e = fit_exponent(g, stat, **kw)
                fit = {"slope": e.slope, "lo": e.lo, "hi": e.hi}
                if kw.get("correction"):
                    fit.update(corrected=e.corrected, corrected_lo=e.corrected_lo,
                               corrected_hi=e.corrected_hi)
            except _TooFewWidths:
                fit = {"slope": np.nan, "lo": np.nan, "hi": np.nan}
            rows.append(dict(zip(by, key), stat=stat, **fit))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- private

class _TooFewWidths(ValueError):
    pass


def _usable(df: pd.DataFrame, stat: str, x: str) -> pd.DataFrame:
    """Rows with a finite positive ``stat``; a FitWarning names widths that lost all or some seeds."""
    ok = np.isfinite(df[stat].to_numpy(float)) & (df[stat].to_numpy(float) > 0)
    d = df[ok]
    if d[x].nunique() < 2:
        raise _TooFewWidths(f"fit_exponent needs at least two distinct {x} values with finite positive "
                            f"{stat}, got {sorted(d[x].unique().tolist())}")
    if not ok.all():
        total, kept = df.groupby(x).size(), d.groupby(x).size().reindex(df[x].unique(), fill_value=0)
        lost = sorted(int(w) for w in total.index if kept[w] == 0)
        partial = sorted(int(w) for w in total.index if 0 < kept[w] < total[w])
        parts = ([f"no finite positive value at {x} {lost} (those widths are dropped)"] if lost else []) + \
            ([f"fewer seeds at {x} {partial}"] if partial else [])
        warnings.warn(f"fit of {stat}: {'; '.join(parts)}: "
                      "non-finite (diverged) or zero values were left out",
                      FitWarning, stacklevel=3)
    return d


def _ols(lx: np.ndarray, ly: np.ndarray, correction: bool = False) -> np.ndarray:
    """Least-squares coefficients of ly on [lx, 1] (or [lx, 1, e^{-lx/2}] with the correction)."""
    cols = [lx, np.ones_like(lx)] + ([np.exp(-lx / 2)] if correction else [])
    return np.linalg.lstsq(np.stack(cols, axis=1), ly, rcond=None)[0]


def _per_seed(lx, ly, seeds, level, estimate, n_boot, seed) -> tuple[float, float]:
    """t-interval over per-seed estimates (each seed's rows form one replicate)."""
    need = min(4, len(np.unique(lx)))  # a seed needs enough widths for the estimate (4 with the correction)
    values = np.array([estimate(lx[seeds == s], ly[seeds == s]) for s in np.unique(seeds)
                       if len(np.unique(lx[seeds == s])) >= need])
    centre = estimate(lx, ly)
    if len(values) < 2:
        return float(centre), float(centre)
    half = st.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(centre - half), float(centre + half)


def _per_width(lx, ly, seeds, level, estimate, n_boot, seed) -> tuple[float, float]:
    """Welch–Satterthwaite t-interval from per-width means and variances (widths independent)."""
    xs = np.array([v for v in np.unique(lx) if (lx == v).sum() >= 2])  # a width's variance needs two seeds
    if len(xs) < 2:
        centre = estimate(lx, ly)
        return float(centre), float(centre)
    means = np.array([ly[lx == v].mean() for v in xs])
    k = np.array([(lx == v).sum() for v in xs])
    centre = estimate(xs, means)
    var = np.array([ly[lx == v].var(ddof=1) for v in xs]) / k  # variance of each width's mean
    # the estimate is linear in the means: its weights are its response to a unit change of each mean
    weights = np.array([estimate(xs, means + np.eye(len(xs))[i]) - centre for i in range(len(xs))])
    a = weights ** 2 * var
    se = np.sqrt(a.sum())
    dof = a.sum() ** 2 / np.sum(a ** 2 / (k - 1)) if se > 0 else np.inf
    half = st.t.ppf((1 + level) / 2, dof) * se
    return float(centre - half), float(centre + half)


def _bootstrap(lx, ly, seeds, level, estimate, n_boot, seed) -> tuple[float, float]:
    """Percentile bootstrap over seeds (kept for the calibration comparison; under-covers)."""
    labels = np.unique(seeds)
    centre = estimate(lx, ly)
    if len(labels) < 2 or n_boot == 0:
        return float(centre), float(centre)
    rng = np.random.default_rng(seed)
    index = [np.flatnonzero(seeds == g) for g in labels]
    out = []
    for _ in range(n_boot):
        take = np.concatenate([index[i] for i in rng.integers(0, len(labels), len(labels))])
        if len(np.unique(lx[take])) >= 2:
            out.append(estimate(lx[take], ly[take]))
    lo, hi = np.quantile(out, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


METHODS = {"seed": _per_seed, "width": _per_width, "bootstrap": _bootstrap}
