"""Verdicts from LLM sweeps: optimal and largest stable η per init, paired differences, power, width ratios.

Pure functions of the tidy run tables (``LLM_COLUMNS``; only each run's last row, which holds the test
metrics, is read) and of the per-example tables of :func:`.sweep.combine_examples`. A curve is one metric
against η on the grid, for one ``GROUP`` (dataset, width, init) and one seed, or averaged over seeds.

* **Optimum** (:func:`parabola_optimum`): the grid's best η and, when both grid neighbours exist, the vertex
  of the parabola in log η through the three points (descriptive: it interpolates, it does not test).
* **Stability** (:func:`largest_stable_lr`): a run *collapsed* when it diverged or its test accuracy is at
  most ``chance + margin`` (a collapsed classifier predicts the majority class). Scanning up the grid from
  the seed-mean optimum, the largest stable η is the last one at which no seed collapsed.
* **Paired differences** (:func:`paired_difference`): arm a minus arm b at each arm's best grid η, paired by
  seed (a seed sets the head, the batch order and dropout in both arms); a percentile bootstrap over seeds,
  and over test examples when per-example results are given (the same examples for both arms).
* **Optimum ratio** (:func:`optimum_ratio`): η*_a/η*_b from the seed optima, paired by seed; the mean of the
  log ratios with a t-interval over seeds (n − 1 degrees of freedom), edge optima left out.
* **Power** (:func:`detectable_difference`): the smallest true difference a two-sided test at level α
  detects with probability ``power``, (q_{1−α/2} + q_power)·SE.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..checks import check_int, check_table, lookup

GROUP = ("dataset", "width", "init")
MAXIMISE = {"test_loss": False, "test_accuracy": True, "loss": False, "correct": True}

__all__ = ["GROUP", "best_lrs", "detectable_difference", "largest_stable_lr", "mean_optimum", "optimum_ratio",
           "paired_difference", "parabola_optimum", "seed_optima", "width_ratios"]


def parabola_optimum(lrs, values, maximise: bool = False) -> tuple[float, float, bool]:
    """The best grid point of ``values`` against ``lrs`` and the parabola vertex in log η through it and its
    two neighbours.

    Non-finite values (diverged runs) are never best. Returns ``(lr, value, edge)``: the vertex (η, value)
    when the best point has two finite neighbours and the three points are strictly convex (concave when
    ``maximise``); else the grid point, with ``edge=True`` (the optimum is not bracketed by the grid).

    >>> lr, v, edge = parabola_optimum([1e-3, 2e-3, 4e-3], [3.0, 2.0, 3.0]); round(lr, 6), round(v, 9), edge
    (0.002, 2.0, False)
    """
    lrs, y = np.asarray(lrs, float), np.asarray(values, float)
    order = np.argsort(lrs)
    lrs, y = lrs[order], (-y if maximise else y)[order]
    y = np.where(np.isfinite(y), y, np.inf)
    if not np.isfinite(y).any():
        return math.nan, math.nan, True
    k = int(np.argmin(y))
    sign = -1.0 if maximise else 1.0
    if k == 0 or k == len(y) - 1 or not np.isfinite(y[[k - 1, k + 1]]).all():
        return float(lrs[k]), sign * float(y[k]), True
    x = np.log(lrs[k - 1:k + 2])
    a, b, c = np.polyfit(x, y[k - 1:k + 2], 2)
    if a <= 0:
        return float(lrs[k]), sign * float(y[k]), True
    xv = -b / (2 * a)
    return float(np.exp(xv)), sign * float(c - b * b / (4 * a)), False


def seed_optima(df: pd.DataFrame, metric: str = "test_loss") -> pd.DataFrame:
    """Per (``GROUP``, seed): the grid-best η of the seed's own curve (``lr_grid``), the parabola optimum
    (``lr_star``, ``value_star``) and ``edge`` (see :func:`parabola_optimum`)."""
    final, maximise = _final(df, metric), lookup(MAXIMISE, metric, "metric")
    rows = []
    for key, g in final.groupby([*GROUP, "seed"]):
        g = g.sort_values("lr")
        lr, v, edge = parabola_optimum(g["lr"], g[metric], maximise)
        best = g[metric].idxmax() if maximise else g[metric].idxmin()
        rows.append(dict(zip([*GROUP, "seed"], key), lr_grid=final.loc[best, "lr"], lr_star=lr, value_star=v,
                         edge=edge))
    return pd.DataFrame(rows)


def optimum_ratio(df: pd.DataFrame, a: str, b: str, metric: str = "test_loss",
                  level: float = 0.95) -> pd.DataFrame:
    """Per (dataset, width): η*_a/η*_b paired by seed from :func:`seed_optima` (seeds where neither optimum
    sits on an edge of its grid): ``ratios`` (per seed), ``ratio`` = exp(mean log ratio) and its t-interval
    ``lo, hi`` over the seeds (NaN with fewer than 2 seeds).

    >>> d = pd.DataFrame({"dataset": "x", "width": 8, "init": ["a"] * 6 + ["b"] * 6, "step": 1,
    ...                   "diverged": False, "seed": [0, 0, 0, 1, 1, 1] * 2,
    ...                   "lr": [1, 2, 4] * 2 + [0.5, 1, 2] * 2, "test_loss": [3, 1, 3] * 4})
    >>> r = optimum_ratio(d, "a", "b").iloc[0]; int(r.seeds), round(float(r.ratio), 6), round(float(r.lo), 6)
    (2, 2.0, 2.0)
    """
    opt = seed_optima(df, metric)
    opt = opt[~opt["edge"]]
    rows = []
    for (ds, w), g in opt.groupby(["dataset", "width"]):
        pa, pb = (g[g["init"] == i].set_index("seed")["lr_star"] for i in (a, b))
        logs = np.log(pa / pb).dropna()
        n, m = len(logs), float(logs.mean()) if len(logs) else math.nan
        half = stats.t.ppf(0.5 + level / 2, n - 1) * logs.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        rows.append(dict(dataset=ds, width=w, a=a, b=b, seeds=n, ratio=math.exp(m), lo=math.exp(m - half),
                         hi=math.exp(m + half), ratios=[round(float(x), 4) for x in np.exp(logs)]))
    return pd.DataFrame(rows)


def mean_optimum(df: pd.DataFrame, metric: str = "test_loss") -> pd.DataFrame:
    """Per ``GROUP``: the optimum of the seed-mean curve (mean over the seeds run at each η): ``lr_grid``,
    ``value_grid`` (the best seed-mean), ``lr_star``, ``value_star``, ``edge`` and ``seeds`` (at lr_grid)."""
    final, maximise = _final(df, metric), lookup(MAXIMISE, metric, "metric")
    rows = []
    for key, g in final.groupby(list(GROUP)):
        curve = g.groupby("lr")[metric].agg(["mean", "count"])
        lr, v, edge = parabola_optimum(curve.index, curve["mean"], maximise)
        best = curve["mean"].fillna(-np.inf if maximise else np.inf)
        best = best.idxmax() if maximise else best.idxmin()
        rows.append(dict(zip(GROUP, key), lr_grid=best, value_grid=curve.loc[best, "mean"], lr_star=lr,
                         value_star=v, edge=edge, seeds=int(curve.loc[best, "count"])))
    return pd.DataFrame(rows)


def best_lrs(df: pd.DataFrame, top: int = 3, metric: str = "test_loss") -> dict[tuple, tuple[float, ...]]:
    """The ``top`` grid η with the best seed-mean ``metric`` per ``GROUP`` (diverged runs count as worst),
    as ``{(dataset, width, init): (η, ...)}`` sorted by η."""
    check_int("top", top)
    final, maximise = _final(df, metric), lookup(MAXIMISE, metric, "metric")
    out = {}
    for key, g in final.groupby(list(GROUP)):
        m = g.groupby("lr")[metric].apply(lambda v: v.mean() if np.isfinite(v).all() else np.nan)
        m = m.fillna(-np.inf if maximise else np.inf).sort_values(ascending=not maximise)
        out[key] = tuple(sorted(float(x) for x in m.index[:top]))
    return out


def largest_stable_lr(df: pd.DataFrame, chance: float, margin: float = 0.02) -> pd.DataFrame:
    """Per ``GROUP``: ``lr_opt`` (the seed-mean test-loss grid optimum), ``lr_max_stable`` (the largest grid η
    ≥ lr_opt up to which no seed collapsed) and ``lr_collapse`` (the next grid η, where some seed collapsed;
    NaN when none did: the grid does not reach the collapse). A run collapsed when it diverged or its test
    accuracy ≤ ``chance + margin`` (``chance``: the majority-class rate of the test set)."""
    final = _final(df, "test_accuracy")
    rows = []
    for key, g in final.groupby(list(GROUP)):
        lrs, loss, collapsed = _cell(g, chance, margin)
        i, j = _stable_scan(_nanmean(loss), collapsed.any(0))
        rows.append(dict(zip(GROUP, key), lr_opt=lrs[i], lr_max_stable=lrs[j],
                         lr_collapse=lrs[j + 1] if j + 1 < len(lrs) else math.nan))
    return pd.DataFrame(rows)


def paired_difference(df: pd.DataFrame, a: str, b: str, metric: str = "test_accuracy", examples=None,
                      n_eval: int | None = None, n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Arm ``a`` minus arm ``b`` (inits) at each arm's best grid η (seed-mean ``metric``), paired by seed.

    Args:
        df: run tables of both arms (one dataset and width per row of the result).
        a, b: the inits compared.
        metric: ``"test_accuracy"`` or ``"test_loss"``.
        examples: per-example results (:func:`.sweep.combine_examples`) of those runs, or None. Given, the
            bootstrap resamples seeds and test examples together and SE includes the test-set sampling
            (conservatively: the seed × example interaction enters twice, at most √2 on SE).
        n_eval: without examples and for accuracy, the test size: the test-set sampling then enters SE as the
            unpaired binomial bound 2p(1 − p)/n_eval (pairing on one test set can only shrink it).
        n_boot, seed: bootstrap replicates and their seed.

    Returns:
        Per (dataset, width): ``lr_a, lr_b, seeds, diff`` (mean of the paired differences), ``lo, hi`` (95%
        percentile bootstrap), ``sd_seed``, ``se`` and ``mde`` (:func:`detectable_difference`, 80% power,
        t quantiles with seeds − 1 degrees of freedom).
    """
    final = _final(df, metric)
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in final.groupby(["dataset", "width"]):
        best = mean_optimum(g[g["init"].isin([a, b])], metric).set_index("init")["lr_grid"]
        if not {a, b} <= set(best.index):
            raise ValueError(f"paired_difference needs runs of both inits {a!r} and {b!r}; dataset/width "
                             f"{key} has {sorted(best.index)}")
        va, vb = (g[(g["init"] == i) & (g["lr"] == best[i])].set_index("seed")[metric] for i in (a, b))
        seeds = sorted(set(va.index) & set(vb.index))
        d = (va[seeds] - vb[seeds]).to_numpy(float)
        if examples is not None:
            boot = _boot_examples(examples, key, (a, best[a]), (b, best[b]), seeds, metric, n_boot, rng)
            se = float(boot.std(ddof=1))
        else:
            boot = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
            p = float(np.mean([va[seeds].mean(), vb[seeds].mean()]))
            test_var = 2 * p * (1 - p) / n_eval if (n_eval and metric == "test_accuracy") else 0.0
            se = math.sqrt((d.var(ddof=1) / len(d) if len(d) > 1 else math.inf) + test_var)
        rows.append(dict(dataset=key[0], width=key[1], lr_a=best[a], lr_b=best[b], seeds=len(seeds),
                         diff=float(d.mean()), lo=float(np.quantile(boot, 0.025)),
                         hi=float(np.quantile(boot, 0.975)), sd_seed=float(d.std(ddof=1)) if len(d) > 1
                         else math.nan, se=se, mde=detectable_difference(se, dof=len(seeds) - 1)))
    return pd.DataFrame(rows)


def detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8,
                          dof: int | None = None) -> float:
    """The smallest true difference detected with probability ``power`` by a two-sided level-``alpha`` test
    whose estimate has standard error ``se``: (q_{1−α/2} + q_power)·se, q normal or Student-t with ``dof``.

    >>> round(detectable_difference(0.01), 4)
    0.028
    """
    if dof is not None and dof < 1:
        return math.inf
    q = stats.norm.ppf if dof is None else (lambda p: stats.t.ppf(p, dof))
    return float((q(1 - alpha / 2) + q(power)) * se)


def width_ratios(df: pd.DataFrame, a: str, b: str, chance: float, margin: float = 0.02, n_boot: int = 2000,
                 seed: int = 0) -> pd.DataFrame:
    """η*_a/η*_b (parabola optima of seed-mean test loss) and the ratio of largest stable η at each width, and
    the same ratios divided by those at the smallest width ("ratio of ratios"; theory for Adam: η*_A ∝
    n^-1/2, η*_B ∝ n^-1, so the ratio grows as n^1/2: ×2 from 384 to 1536). Intervals: 95% percentile
    bootstrap, seeds resampled within each (width, init) cell. ``bracketed``: both inits collapse inside
    the grid at that width (else their largest stable η is the grid's top and the stable ratio a bound).
    One dataset; rows per width."""
    final = _final(df, "test_accuracy")
    rng = np.random.default_rng(seed)
    cells = {(w, i): _cell(final[(final["width"] == w) & (final["init"] == i)], chance, margin)
             for w in sorted(final["width"].unique()) for i in (a, b)}
    widths = sorted({w for w, _ in cells})

    def ratios(pick):  # pick(cell) -> row indices of the seeds used; returns {(stat, width): log ratio}
        out = {}
        for w in widths:
            opt, stab = {}, {}
            for i in (a, b):
                lrs, loss, collapsed = cells[w, i]
                rows = pick(len(loss))
                mean = _nanmean(loss[rows])
                opt[i] = parabola_optimum(lrs, mean)[0]
                stab[i] = lrs[_stable_scan(mean, collapsed[rows].any(0))[1]]
            out["opt", w], out["stable", w] = np.log(opt[a] / opt[b]), np.log(stab[a] / stab[b])
        return out

    point = ratios(lambda s: np.arange(s))
    boot = [ratios(lambda s: rng.integers(0, s, s)) for _ in range(n_boot)]
    rows = []
    for w in widths:  # bracketed: both inits collapse inside the grid (else the stable ratio is a bound)
        row = {"width": w, "bracketed": all(cells[w, i][2].any(0)[np.argmin(_nanmean(cells[w, i][1])):].any()
                                            for i in (a, b))}
        for stat in ("opt", "stable"):
            for name, f in ((f"{stat}_ratio", lambda r, s=stat, w=w: r[s, w]),
                            (f"{stat}_ratio_of_ratios", lambda r, s=stat, w=w: r[s, w] - r[s, widths[0]])):
                vals = np.array([f(r) for r in boot])
                row[name] = float(np.exp(f(point)))
                row[f"{name}_lo"], row[f"{name}_hi"] = np.exp(np.nanquantile(vals, [0.025, 0.975]))
        rows.append(row)
    return pd.DataFrame(rows)


def _final(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The last row of every run (the one with the test metrics); diverged runs get NaN metrics."""
    check_table(df, df=[*GROUP, "lr", "seed", "step", "diverged", metric])
    return df.loc[df.groupby([*GROUP, "lr", "seed"])["step"].idxmax()].reset_index(drop=True)


def _cell(g: pd.DataFrame, chance: float, margin: float):
    """``(lrs (L,), test loss (S, L): +inf where diverged, NaN where not run, collapsed (S, L))``."""
    t = g.set_index(["seed", "lr"])[["test_loss", "test_accuracy", "diverged"]].unstack("lr")
    t = t.sort_index(axis=1)
    ran = t["diverged"].notna().to_numpy()
    loss, acc = t["test_loss"].to_numpy(float), t["test_accuracy"].to_numpy(float)
    collapsed = ran & ~(np.nan_to_num(acc, nan=-1.0) > chance + margin)
    return t["test_loss"].columns.to_numpy(float), np.where(ran & ~np.isfinite(loss), np.inf, loss), collapsed


def _stable_scan(mean_loss: np.ndarray, collapsed: np.ndarray) -> tuple[int, int]:
    """(index of the lowest mean loss, index of the last η from there up before a collapse)."""
    i = int(np.argmin(np.where(np.isfinite(mean_loss), mean_loss, np.inf)))
    j = i
    while j + 1 < len(collapsed) and not collapsed[j + 1]:
        j += 1
    return i, j


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Column means over the seeds that ran (NaN where none did), without numpy's empty-slice warning."""
    n = (~np.isnan(x)).sum(0)
    return np.where(n > 0, np.where(np.isnan(x), 0.0, x).sum(0) / np.maximum(n, 1), np.nan)


def _boot_examples(examples, key, arm_a, arm_b, seeds, metric, n_boot, rng) -> np.ndarray:
    """Bootstrap of the paired mean difference resampling seeds (S) and test examples (E) together."""
    col = {"test_accuracy": "correct", "test_loss": "loss"}[metric]
    ex = examples[(examples["dataset"] == key[0]) & (examples["width"] == key[1])]

    def matrix(init, lr):  # (S, E)
        sel = ex[(ex["init"] == init) & (ex["lr"] == lr) & ex["seed"].isin(seeds)]
        return sel.pivot(index="seed", columns="example", values=col).loc[seeds].to_numpy(float)

    D = matrix(*arm_a) - matrix(*arm_b)  # (S, E)
    S, E = D.shape
    v = rng.multinomial(S, np.full(S, 1 / S), size=n_boot)  # (n_boot, S) seed counts
    out = np.empty(n_boot)
    for k in range(0, n_boot, 500):  # (500, E) example counts at a time
        w = rng.multinomial(E, np.full(E, 1 / E), size=min(500, n_boot - k))
        out[k:k + len(w)] = np.einsum("bs,se,be->b", v[k:k + len(w)], D, w) / (S * E)
    return out
