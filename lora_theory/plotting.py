"""Plot functions: each takes tidy DataFrames and an ``ax``, draws, and returns the ``ax``.

No global state: the house style is applied by the :func:`style` context manager, never at import.
"""

from __future__ import annotations

import contextlib

import matplotlib as mpl
import numpy as np
import pandas as pd

from .fit import Exponent
from .inits import colours

INIT_COLOURS = colours()  # init name → colour, from the INITS registry
REGIME_COLOURS = {"unstable": "#d62728", "stable_no_feature_learning": "#c7c7c7",
                  "feature_learning": "#ffbb78", "efficient_feature_learning": "#98df8a"}


@contextlib.contextmanager
def style():
    """The figures' rc settings, applied only inside the ``with`` block."""
    with mpl.rc_context({"figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3, "legend.fontsize": 7, "axes.titlesize": 9}):
        yield


def plot_lr_vs_width(opt: pd.DataFrame, fits: dict[str, Exponent], ax, y: str = "lr_opt",
                     refs=((-0.5, "A"), (-1.0, "B")), title: str = ""):
    """Optimal or maximal learning rate against width (log-log), per init, with fitted slopes and
    reference lines ∝ n^c anchored at the smallest width of the named init. Points are geometric means
    over seeds, bars the seed min–max."""
    for init, g in opt.groupby("init"):
        stats = g.groupby("width")[y].agg(["min", "max"])
        stats["mean"] = np.exp(np.log(g[y]).groupby(g.width).mean())
        fit = fits.get(init)
        label = f"Init[{init}]" + (f": slope {fit}" if fit is not None else "")
        err = [np.maximum(stats["mean"] - stats["min"], 0), np.maximum(stats["max"] - stats["mean"], 0)]
        ax.errorbar(stats.index, stats["mean"], yerr=err,
                     marker="o", ms=4, capsize=2, color=INIT_COLOURS.get(init), label=label)
    for c, init in refs:
        g = opt[opt.init == init]
        if len(g):
            n0 = g.width.min()
            y0 = np.exp(np.log(g[g.width == n0][y]).mean())
            n = np.array(sorted(g.width.unique()), dtype=float)
            ax.plot(n, y0 * (n / n0) ** c, "--", color=INIT_COLOURS.get(init), alpha=0.5, label=f"∝ n^{c:g}")
    ax.set(xlabel="width n", ylabel=y.replace("_", " "), title=title)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.legend()
    return ax


def plot_feature_norms(df: pd.DataFrame, ax, stat: str, scale: float, label_fmt: str = "{init}"):
    """Seed-mean of ``scale · stat`` against step, one line per init (e.g. ‖Z_A‖ = √r · RMS(Z_A))."""
    for init, g in df.groupby("init"):
        m = g.groupby("step")[stat].mean() * scale
        m = m[m > 0]  # a factor starting at exactly zero has no point on a log axis
        ax.plot(m.index, m.values, color=INIT_COLOURS.get(init), label=label_fmt.format(init=init))
    ax.set(xlabel="step", yscale="log")
    return ax


def plot_coord_check(slopes_df: pd.DataFrame, ax, stat: str, predicted: float | None = None, title: str = ""):
    """``stat`` (seed mean) against width, one line per step, with a reference slope from the theory."""
    cmap = mpl.colormaps["viridis"]
    steps = sorted(slopes_df.step.unique())
    for i, step in enumerate(steps):
        m = slopes_df[slopes_df.step == step].groupby("width")[stat].mean()
        ax.plot(m.index, m.values, "o-", ms=3, color=cmap(i / max(1, len(steps) - 1)), label=f"t={step}")
    if predicted is not None and np.isfinite(predicted):
        m = slopes_df[slopes_df.step == steps[-1]].groupby("width")[stat].mean()
        n = m.index.to_numpy(float)
        ax.plot(n, m.iloc[0] * (n / n[0]) ** predicted, "k--", lw=1, label=f"theory n^{predicted:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="width n", title=title)
    return ax


def plot_regimes(theory: pd.DataFrame, measured: pd.DataFrame, ax, y: str = "init"):
    """Phase diagram: theory regime as coloured cells over (c, ``y``), measured regime as markers.

    ``theory`` and ``measured`` have columns ``c, <y>, regime, internally_unstable``.
    """
    ys = list(dict.fromkeys(theory[y]))
    cs = np.sort(theory.c.unique())
    width = np.diff(cs).min() if len(cs) > 1 else 0.25
    for _, row in theory.iterrows():
        ax.add_patch(mpl.patches.Rectangle((row.c - width / 2, ys.index(row[y]) - 0.5), width, 1,
                                           color=REGIME_COLOURS[row.regime], alpha=0.8, lw=0))
    markers = {True: "^", False: "o", None: "s"}  # None: a run diverged, Z_A's growth not measured
    for _, row in measured.iterrows():
        flag = (None if row.internally_unstable is None or pd.isna(row.internally_unstable)
                else bool(row.internally_unstable))
        ax.plot(row.c, ys.index(row[y]) + 0.2, markers[flag], ms=5, mec="k",
                color=REGIME_COLOURS[row.regime])
    handles = [mpl.patches.Patch(color=col, label=name.replace("_", " "))
               for name, col in REGIME_COLOURS.items()]
    handles += [mpl.lines.Line2D([], [], marker=m, ls="", color="w", mec="k", label=lab)
                for m, lab in (("o", "measured"), ("^", "measured, Z_A grows"),
                               ("s", "measured, a run diverged"))]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6)
    ax.set(xlim=(cs[0] - width / 2, cs[-1] + width / 2), ylim=(-0.5, len(ys) - 0.5 + 0.6),
           yticks=range(len(ys)), yticklabels=[str(v) for v in ys],
           xlabel="learning-rate exponent c (η = n^c)")
    ax.grid(False)
    return ax


def plot_heatmap(table: pd.DataFrame, ax, title: str = "", label: str = "final train loss", vlim=None):
    """A (width × learning rate) table of values as a log-colour heatmap; NaN/inf (diverged) in grey.

    ``vlim`` = (vmin, vmax) shares one colour scale between panels (default: this table's range).
    """
    vals = table.to_numpy(float)
    masked = np.ma.masked_invalid(np.where(np.isfinite(vals), vals, np.nan))
    cmap = mpl.colormaps["magma_r"].with_extremes(bad="0.75")
    pos = masked.compressed()
    lo, hi = vlim if vlim is not None else ((pos.min(), pos.max()) if pos.size else (1e-6, 1.0))
    norm = mpl.colors.LogNorm(vmin=max(lo, 1e-6), vmax=hi) if lo > 0 else None
    im = ax.imshow(masked, aspect="auto", origin="lower", cmap=cmap, norm=norm)
    ax.set_xticks(range(len(table.columns)), [f"{np.log2(v):.0f}" for v in table.columns], fontsize=6)
    ax.set_yticks(range(len(table.index)), [str(v) for v in table.index])
    ax.set(xlabel="log2 learning rate", ylabel="width n", title=title)
    ax.grid(False)
    ax.figure.colorbar(im, ax=ax, label=label)
    return ax
