"""Every figure of the reproduction, from one command: ``lora-theory figures [--quick] [--only NAME]``.

Each ``fig_<slug>(quick=False, cache_dir=None)`` gets its data from :mod:`lora_theory.experiments`
(cached sweeps, shared between figures), draws its panels with :mod:`lora_theory.plotting` and returns
``(figure, summary)``: a ``matplotlib.figure.Figure`` and a dict of the numbers it shows. ``main`` writes
``<slug>.png``/``<slug>.pdf`` for each entry of ``FIGURES`` plus ``summary.json``; it is the only function
doing I/O. Figures are built with matplotlib's object API (no pyplot, no backend switch at import).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plotting
from .analysis import max_stable_lr, optimal_lr, regime_table, window_rms
from .experiments import (
    COORD_STATS,
    DEFAULT_CACHE,
    GRIDS,
    LLM_RUNS,
    TAU,
    coord_sweeps,
    fit_dict,
    layer_lr_sweep,
    loss_optimal,
    loss_optimal_refined,
    parallel,
    regime_sweep,
    toy_refine_sweep,
    toy_summary,
    toy_sweep,
)
from .fit import fit_exponent
from .inits import colours
from .limit import fig_limit_convergence
from .llm.width import fig_llm_width
from .theory import loss_optimal_exponent, theory_exponent
from .transfer import fig_rank_scaling

__all__ = ["FIGURES", "fig_coord_check", "fig_feature_norms", "fig_feature_norms_appendix",
           "fig_llm_lr_sweep", "fig_loss_heatmap", "fig_lr_scaling", "fig_regimes", "main"]


def fig_lr_scaling(quick: bool = False, cache_dir=None) -> tuple[Figure, dict]:
    """Paper Fig. 2: loss-optimal η in the toy (per-seed optima interpolated on the refinement grid around
    the coarse sweep's optimum), and the feature-level maximal stable η in the layer setting.

    The summary's ``loss_optimal_slope`` is the refined fit; ``loss_optimal_slope_coarse`` the coarse
    sweep's grid argmin (3 seeds, 2× grid); ``loss_optimal_theory`` the whole-network exponent of
    :func:`lora_theory.theory.loss_optimal_exponent` (SP readout) and whether the interval contains it;
    ``lr_opt_log2``, ``lr_opt_ratio_A_over_B`` and ``best_loss`` stay the coarse sweep's seed-mean optima."""
    toy, layer = toy_sweep(quick, cache_dir), layer_lr_sweep(quick, cache_dir)
    fits_coarse = loss_optimal(toy)[1]
    opt, fits_opt = loss_optimal_refined(toy_refine_sweep(quick, cache_dir, coarse=toy))
    stab = max_stable_lr(layer, TAU)
    fits_stab = {i: fit_exponent(stab[stab.init == i], "lr_max") for i in ("A", "B")}
    ref = GRIDS["toy_refine"][quick]
    with plotting.style():
        fig = Figure(figsize=(10, 3.8))
        ax1, ax2 = fig.subplots(1, 2)
        plotting.plot_lr_vs_width(opt, fits_opt, ax1, "lr_opt", refs=((-0.5, "A"), (-1.0, "B"), (-0.75, "A")),
                                  title=f"loss-optimal η (toy, SP readout; {len(ref['seeds'])} seeds, "
                                        f"2^{ref['step']:g} grid, interpolated)")
        plotting.plot_lr_vs_width(stab, fits_stab, ax2, "lr_max",
                                  title=f"max stable η: max_t RMS(Z_B) ≤ {TAU:g} (layer, Adam)")
        fig.tight_layout()
    tau_sens = {str(tau): {i: fit_dict(fit_exponent(s[s.init == i], "lr_max")) for i in ("A", "B")}
                for tau in (2.0, 5.0, 10.0, 100.0) for s in [max_stable_lr(layer, tau)]}
    theory = {i: loss_optimal_exponent(i, "sp") for i in ("A", "B")}
    refined = {"seeds": len(ref["seeds"]), "grid_step_log2": ref["step"], "octaves": ref["octaves"],
               "methods": {str(k): int(v) for k, v in opt.method.value_counts().items()},
               "lr_opt_log2_median": {i: {int(n): round(float(np.median(np.log2(g.lr_opt))), 3)
                                          for n, g in opt[opt.init == i].groupby("width")}
                                      for i in ("A", "B")},
               "ci95_width": {i: round(f.hi - f.lo, 3) for i, f in fits_opt.items()},
               "ci95_width_coarse": {i: round(f.hi - f.lo, 3) for i, f in fits_coarse.items()}}
    return fig, {**toy_summary(toy, fits_opt),
                 "loss_optimal_slope_coarse": {i: fit_dict(f) for i, f in fits_coarse.items()},
                 "loss_optimal_refined": refined,
                 "loss_optimal_theory": {i: {"theory": str(t), "measured": round(fits_opt[i].slope, 3),
                                             "in_ci95": bool(fits_opt[i].lo <= float(t) <= fits_opt[i].hi)}
                                         for i, t in theory.items()},
                 "max_stable_slope": {i: fit_dict(f) for i, f in fits_stab.items()},
                 "max_stable_slope_by_tau": tau_sens}


def fig_feature_norms(quick: bool = False, cache_dir=None) -> tuple[Figure, dict]:
    """Paper Fig. 3: mean ‖Z_A‖ and ‖Z_B‖ against step at the smallest and largest width, optimal η."""
    toy = toy_sweep(quick, cache_dir)
    widths = sorted(toy.width.unique())
    return _norms_figure(toy, [widths[0], widths[-1]])


def fig_feature_norms_appendix(quick: bool = False, cache_dir=None) -> tuple[Figure, dict]:
    """Appendix version of Fig. 3: every width of the toy sweep, seed means at the optimal η."""
    toy = toy_sweep(quick, cache_dir)
    return _norms_figure(toy, sorted(toy.width.unique()))


def fig_coord_check(quick: bool = False, cache_dir=None) -> tuple[Figure, dict]:
    """RMS of Z_A, Z_B, δ¹, δ², δ³ against width at each step, per init at its maximal c, vs theory."""
    steps = GRIDS["layer_coord"][quick]["steps"]
    summary = {}
    with plotting.style():
        fig = Figure(figsize=(13, 5.2))
        axes = fig.subplots(2, len(COORD_STATS))
        for row, (init, (c, df)) in enumerate(coord_sweeps(quick, cache_dir).items()):
            # fitted on steps ≥ 3, where the theory's exponents no longer change (docs/theory.md §4.6); the
            # interval is the per-seed t-interval, "corrected" adds a n^-1/2 term (docs/theory.md §9.1)
            window = window_rms(df, COORD_STATS + ("b_shift_rms",), first_step=3, by=("width", "seed"))
            fits = {s: fit_exponent(window, s, correction=True) for s in COORD_STATS + ("b_shift_rms",)}
            slopes = {s: f.slope for s, f in fits.items()}
            pred = {s: float(theory_exponent(s, init, c, steps)) for s in slopes}
            summary[init] = {"c": str(c), **{s: {"measured": round(f.slope, 3),
                                                 "ci95": [round(f.lo, 3), round(f.hi, 3)],
                                                 "corrected": round(f.corrected, 3),
                                                 "corrected_ci95": [round(f.corrected_lo, 3),
                                                                    round(f.corrected_hi, 3)],
                                                 "theory": pred[s]} for s, f in fits.items()}}
            for col, stat in enumerate(COORD_STATS):
                plotting.plot_coord_check(df[df.step >= 1], axes[row, col], stat, pred[stat],
                                          title=f"Init[{init}], c={c}: {stat}\nfit {slopes[stat]:+.2f}, "
                                                f"theory {pred[stat]:+g}")
        axes[0, 0].legend(fontsize=6)
        fig.tight_layout()
    return fig, summary


def fig_regimes(quick: bool = False, cache_dir=None) -> tuple[Figure, dict]:
    """Phase diagram over (c, init): theory regimes (cells) and regimes read off simulations (markers)."""
    table = regime_table(regime_sweep(quick, cache_dir), steps=GRIDS["regimes"][quick]["steps"])
    measured = table[["init", "c", "measured", "measured_internally_unstable"]].rename(
        columns={"measured": "regime", "measured_internally_unstable": "internally_unstable"})
    with plotting.style():
        fig = Figure(figsize=(8.5, 3.2))
        ax = fig.subplots()
        plotting.plot_regimes(table[["init", "c", "regime", "internally_unstable"]], measured, ax)
        ax.set_title("regimes: cells = γ-calculus, markers = measured width exponents (layer, Adam)")
        fig.tight_layout()
    bad = table[~table.agree]
    return fig, {"agreement": f"{int(table.agree.sum())}/{len(table)}",
                 "disagreements": bad[["init", "c", "regime", "internally_unstable",
                                       "measured"]].to_dict("records")}


def fig_loss_heatmap(quick: bool = False, cache_dir=None) -> tuple[Figure, dict]:
    """Final train loss (seed mean) over (learning rate, width), one panel per init (toy sweep)."""
    toy = toy_sweep(quick, cache_dir)
    last = toy[toy.step == toy.step.max()].assign(loss=lambda d: d.loss.where(~d.diverged, np.inf))
    tables = {i: last[last.init == i].pivot_table(index="width", columns="lr", values="loss", aggfunc="mean")
              for i in ("A", "B")}
    finite = np.concatenate([t.to_numpy(float).ravel() for t in tables.values()])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    with plotting.style():
        fig = Figure(figsize=(10, 3.6))
        for ax, (init, table) in zip(fig.subplots(1, 2), tables.items()):
            plotting.plot_heatmap(table, ax, title=f"Init[{init}] (toy, SP readout)",
                                  vlim=(finite.min(), finite.max()) if finite.size else None)
        fig.tight_layout()
    best = {i: {int(n): round(float(np.nanmin(row.to_numpy(float))), 5) for n, row in t.iterrows()}
            for i, t in tables.items()}
    return fig, {"best_final_loss": best}


def fig_llm_lr_sweep(quick: bool = False, cache_dir=None, runs_dir=None) -> tuple[Figure, dict]:
    """Paper §5 at CPU scale: test accuracy vs η on MiniLM + tweets (Init[A] vs Init[B]), and the RMS of
    A·x at each init's best η during training (internal instability on a real network).

    Full fidelity reads the committed runs in ``runs_dir`` (default ``experiments.LLM_RUNS``, relative to
    the working directory: run from a checkout's root or pass the path; missing runs are trained, about
    2 minutes each on one core); ``quick`` trains two learning rates for 20 steps. Needs the ``llm`` extra.
    """
    from . import llm  # the llm extra: transformers, peft and the model/data packages

    if quick:
        out = Path(DEFAULT_CACHE if cache_dir is None else cache_dir) / "llm"
    else:
        out = Path(LLM_RUNS if runs_dir is None else runs_dir)
        if not out.is_dir():
            raise ValueError(f"runs_dir {str(out)!r} is not a directory: run from the repository root "
                             "(it holds results/llm/runs) or pass runs_dir / --llm-runs")
    df = llm.llm_sweep(quick=quick, out_dir=out)
    table = llm.lr_table(df)
    best = table.loc[table.groupby("init")["mean"].idxmax()].set_index("init")
    with plotting.style():
        fig = Figure(figsize=(10, 3.6))
        ax1, ax2 = fig.subplots(1, 2)
        llm.plot_lr_sweep(df, ax1)
        ax1.set_title("MiniLM-L6 + LoRA r=8 (q, v), tweets: test accuracy (seed mean, min–max)")
        for init, row in best.iterrows():
            m = df[(df.init == init) & (df.lr == row["lr"])].groupby("step")["z_a_rms"].mean()
            ax2.plot(m.index, m.values, color=colours().get(init), label=f"Init[{init}], η={row['lr']:.1e}")
        ax2.set(xlabel="step", ylabel="RMS of A·x (mean over LoRA modules)", yscale="log",
                title="internal feature size at each init's best η")
        ax2.legend()
        fig.tight_layout()
    return fig, {"best": {i: {"lr": float(r["lr"]), "test_accuracy": round(float(r["mean"]), 4)}
                          for i, r in best.iterrows()},
                 "accuracy_by_lr": {i: {f"{lr:.1e}": round(float(a), 4) for lr, a in zip(g.lr, g["mean"])}
                                    for i, g in table.groupby("init")}}


FIGURES = {"lr_scaling": fig_lr_scaling, "feature_norms": fig_feature_norms,
           "feature_norms_appendix": fig_feature_norms_appendix, "coord_check": fig_coord_check,
           "regimes": fig_regimes, "loss_heatmap": fig_loss_heatmap, "llm_lr_sweep": fig_llm_lr_sweep,
           "llm_width": fig_llm_width,
           "rank_scaling": fig_rank_scaling, "limit_convergence": fig_limit_convergence}


def main(out="figures", only=None, quick: bool = False, cache_dir=DEFAULT_CACHE, workers: int = 1) -> dict:
    """Build the figures named in ``only`` (default: all), write PNG + PDF and ``summary.json`` into ``out``;
    the sweeps run on ``workers`` processes (:func:`~lora_theory.experiments.parallel`).

    Each figure's files and summary entry are written as soon as it is built (``summary.json`` is
    replaced atomically), so an interrupted run keeps every finished figure.
    """
    names = list(FIGURES) if not only else list(only)
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        raise ValueError(f"only must name figures among {sorted(FIGURES)}, got {unknown}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    with parallel(workers):
        for name in names:
            t0 = time.perf_counter()
            try:
                fig, numbers = FIGURES[name](quick=quick, cache_dir=cache_dir)
            except ImportError as err:  # an optional extra is missing: say so, build the others
                print(f"{name}: skipped ({err}; install it with: pip install -e '.[llm]')", flush=True)
                continue
            for ext in ("png", "pdf"):
                _atomic_save(fig, out / f"{name}.{ext}")
            summary[name] = {"seconds": round(time.perf_counter() - t0, 1), "quick": quick, **numbers}
            tmp = summary_path.with_name(summary_path.name + ".part")
            tmp.write_text(json.dumps(summary, indent=2, default=str))
            tmp.replace(summary_path)
            print(f"{name}: {summary[name]['seconds']} s -> {out / name}.png/.pdf", flush=True)
    return summary


def _norms_figure(toy: pd.DataFrame, widths: list[int]) -> tuple[Figure, dict]:
    opt = optimal_lr(toy).set_index(["init", "width"])
    summary = {}
    with plotting.style():
        fig = Figure(figsize=(3.2 * len(widths), 5.4))
        axes = fig.subplots(2, len(widths), squeeze=False)
        for col, n in enumerate(widths):
            parts = []
            for init in ("A", "B"):
                lr, loss = opt.loc[(init, n), ["lr_opt", "loss"]]
                parts.append(toy[(toy.init == init) & (toy.width == n) & (toy.lr == lr)])
                summary[f"{init}@{n}"] = {"lr": float(lr), "final_loss": float(loss)}
            sel = pd.concat(parts)
            r = int(sel["rank"].iloc[0])
            plotting.plot_feature_norms(sel, axes[0, col], "z_a_rms", math.sqrt(r), "Init[{init}]")
            plotting.plot_feature_norms(sel, axes[1, col], "z_b_rms", math.sqrt(n), "Init[{init}]")
            text = ", ".join(f"{i}: η=2^{math.log2(summary[f'{i}@{n}']['lr']):.0f}, "
                             f"loss {summary[f'{i}@{n}']['final_loss']:.3f}" for i in ("A", "B"))
            axes[0, col].set_title(f"n = {n}\n{text}", fontsize=7)
            axes[0, col].set_ylabel("mean ‖Z_A‖")
            axes[1, col].set_ylabel("mean ‖Z_B‖")
        axes[0, 0].legend()
        fig.tight_layout()
    for init in ("A", "B"):
        za = {int(n): float(toy[(toy.init == init) & (toy.width == n)
                                & (toy.lr == opt.loc[(init, n), "lr_opt"])].z_a_rms.max()) for n in widths}
        summary[f"max_z_a_rms_{init}"] = za
    return fig, summary


def _atomic_save(fig: Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    fig.savefig(tmp)
    tmp.replace(path)


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(quick="--quick" in sys.argv)
