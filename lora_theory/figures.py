"""Every figure of the reproduction, from one command: ``lora-theory figures [--quick] [--only NAME]``.

Each ``fig_<slug>(quick=False, cache_dir=None)`` builds its data with ``simulate`` (cached on disk, so
figures that share a sweep share its runs), draws its panels with ``plotting``, and returns the
``Figure`` with the numbers it shows in ``fig.summary`` (a dict). ``main`` writes ``<slug>.png`` and
``<slug>.pdf`` for each entry of ``FIGURES`` plus ``summary.json``; it is the only function doing I/O.

Sweep sizes are data (``GRIDS``); ``quick=True`` uses small widths and few steps (seconds, for tests).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import plotting  # noqa: E402
from .analysis import (classify_regime, max_stable_lr, measured_slopes, optimal_lr,  # noqa: E402
                       optimal_lr_per_seed)
from .config import ModelConfig, TrainConfig  # noqa: E402
from .fit import fit_exponent  # noqa: E402
from .simulate import simulate  # noqa: E402
from .symbolic import exponents, max_stable_lr_exponent, regime  # noqa: E402

DEFAULT_CACHE = Path(".lora_theory_cache")
# committed per-run results of the full LLM sweep: in the source checkout, wherever the caller's working directory is
LLM_RUNS = Path(__file__).resolve().parent.parent / "results" / "llm" / "runs"
TAU = 10.0  # Z_B threshold of the feature-level criterion: RMS(Z_B) ten times the target scale
GRIDS = {  # (full, quick)
    "toy": ({"widths": [2 ** k for k in range(7, 14)], "lrs": [2.0 ** -k for k in range(2, 15)],
             "seeds": [0, 1, 2], "n_train": 256, "steps": 200},
            {"widths": [64, 128, 256], "lrs": [2.0 ** -k for k in range(2, 11, 2)], "seeds": [0, 1],
             "n_train": 32, "steps": 20}),
    "layer_lr": ({"widths": [2 ** k for k in range(7, 14)], "lrs": [2.0 ** (k / 4) for k in range(-80, 1)],
                  "seeds": [0, 1, 2], "steps": 10},
                 {"widths": [64, 128, 256, 512], "lrs": [2.0 ** (k / 2) for k in range(-30, 1)],
                  "seeds": [0, 1], "steps": 10}),
    "layer_coord": ({"widths": [2 ** k for k in range(7, 14)], "seeds": [0, 1, 2, 3, 4, 5], "steps": 6},
                    {"widths": [64, 128, 256, 512], "seeds": [0, 1], "steps": 4}),
    "regimes": ({"widths": [2 ** k for k in range(7, 13)], "seeds": [0, 1, 2], "steps": 6,
                 "c": [-1.5, -1.25, -1.0, -0.75, -0.5, -0.25, 0.0]},
                {"widths": [64, 128, 256, 512], "seeds": [0], "steps": 4, "c": [-1.5, -1.0, -0.5, 0.0]}),
}
COORD_STATS = ("z_a_rms", "z_b_rms", "delta1_rms", "delta2_rms", "delta3_rms")
_THEORY_KEY = {"z_a_rms": "z_a", "z_b_rms": "z_b", "delta1_rms": "delta1", "delta2_rms": "delta2",
               "delta3_rms": "delta3", "b_shift_rms": "b_shift"}


def fig_lr_scaling(quick: bool = False, cache_dir=None) -> plt.Figure:
    """Paper Fig. 2: loss-optimal η in the toy, and the feature-level maximal stable η in the layer setting."""
    toy, layer = toy_sweep(quick, cache_dir), layer_lr_sweep(quick, cache_dir)
    opt, fits_opt = _loss_optimal(toy)
    stab = max_stable_lr(layer, TAU)
    fits_stab = {i: fit_exponent(stab[stab.init == i], "lr_max") for i in ("A", "B")}
    with plotting.style():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        plotting.plot_lr_vs_width(opt, fits_opt, ax1, "lr_opt", title="loss-optimal η (toy, SP readout)")
        plotting.plot_lr_vs_width(stab, fits_stab, ax2, "lr_max",
                                  title=f"max stable η: max_t RMS(Z_B) ≤ {TAU:g} (layer, Adam)")
        fig.tight_layout()
    tau_sens = {str(tau): {i: _fit_dict(fit_exponent(s[s.init == i], "lr_max")) for i in ("A", "B")}
                for tau in (2.0, 5.0, 10.0, 100.0) for s in [max_stable_lr(layer, tau)]}
    fig.summary = {**toy_summary(toy, fits_opt), "max_stable_slope": {i: _fit_dict(f) for i, f in fits_stab.items()},
                   "max_stable_slope_by_tau": tau_sens}
    return fig


def fig_feature_norms(quick: bool = False, cache_dir=None) -> plt.Figure:
    """Paper Fig. 3: mean ‖Z_A‖ and ‖Z_B‖ against step at the smallest and largest width, optimal η."""
    toy = toy_sweep(quick, cache_dir)
    widths = sorted(toy.width.unique())
    return _norms_figure(toy, [widths[0], widths[-1]])


def fig_feature_norms_appendix(quick: bool = False, cache_dir=None) -> plt.Figure:
    """Appendix version of Fig. 3: every width of the toy sweep, seed means at the optimal η."""
    toy = toy_sweep(quick, cache_dir)
    return _norms_figure(toy, sorted(toy.width.unique()))


def fig_coord_check(quick: bool = False, cache_dir=None) -> plt.Figure:
    """RMS of Z_A, Z_B, δ¹, δ², δ³ against width at each step, per init at its maximal c, vs theory."""
    g = GRIDS["layer_coord"][quick]
    runs = {i: simulate(widths=g["widths"], inits=i, lr_exponent=float(max_stable_lr_exponent(i)), seeds=g["seeds"],
                        steps=g["steps"], progress=False, cache_dir=_cache(cache_dir)) for i in ("A", "B")}
    summary = {}
    with plotting.style():
        fig, axes = plt.subplots(2, len(COORD_STATS), figsize=(13, 5.2))
        for row, (init, df) in enumerate(runs.items()):
            c = max_stable_lr_exponent(init)
            theory = exponents(init, c, steps=g["steps"]).set_index("step")
            # fitted on steps ≥ 3, where the theory's exponents no longer change (PAPER.md §9, pitfall 2)
            slopes = measured_slopes(df, COORD_STATS + ("b_shift_rms",), first_step=3)
            summary[init] = {"c": str(c), **{s: {"measured": round(slopes[s], 3),
                                                 "theory": float(theory.loc[g["steps"], _THEORY_KEY[s]])}
                                            for s in slopes}}
            for col, stat in enumerate(COORD_STATS):
                pred = float(theory.loc[g["steps"], _THEORY_KEY[stat]])
                plotting.plot_coord_check(df[df.step >= 1], axes[row, col], stat, pred,
                                          title=f"Init[{init}], c={c}: {stat}\nfit {slopes[stat]:+.2f}, theory {pred:+g}")
        axes[0, 0].legend(fontsize=6)
        fig.tight_layout()
    fig.summary = summary
    return fig


def fig_regimes(quick: bool = False, cache_dir=None) -> plt.Figure:
    """Phase diagram over (c, init): theory regimes (cells) and regimes read off simulations (markers)."""
    g = GRIDS["regimes"][quick]
    inits = ["A", "B", "AB"]
    df = simulate(widths=g["widths"], inits=inits, lr_exponent=g["c"], seeds=g["seeds"], steps=g["steps"],
                  progress=False, cache_dir=_cache(cache_dir))
    theory, measured = [], []
    for init in inits:
        for c in g["c"]:
            r = regime(init, c, steps=g["steps"])
            theory.append({"init": init, "c": c, "regime": r.regime, "internally_unstable": r.internally_unstable})
            sel = df[(df.init == init) & (df.lr_exponent == c)]
            slopes = measured_slopes(sel, ("z_b_rms", "dz_b_rms", "delta1_rms", "delta2_rms", "z_a_rms"), first_step=3)
            reg, unstable = classify_regime(slopes)
            measured.append({"init": init, "c": c, "regime": reg, "internally_unstable": unstable})
    theory, measured = pd.DataFrame(theory), pd.DataFrame(measured)
    with plotting.style():
        fig, ax = plt.subplots(figsize=(8.5, 3.2))
        plotting.plot_regimes(theory, measured, ax)
        ax.set_title("regimes: cells = γ-calculus, markers = measured width exponents (layer, Adam)")
        fig.tight_layout()
    agree = (theory.regime == measured.regime) & (theory.internally_unstable == measured.internally_unstable)
    fig.summary = {"agreement": f"{int(agree.sum())}/{len(agree)}",
                   "disagreements": theory[~agree].assign(measured=measured.regime[~agree]).to_dict("records")}
    return fig


def fig_loss_heatmap(quick: bool = False, cache_dir=None) -> plt.Figure:
    """Final train loss (seed mean) over (learning rate, width), one panel per init (toy sweep)."""
    toy = toy_sweep(quick, cache_dir)
    last = toy[toy.step == toy.step.max()].assign(loss=lambda d: d.loss.where(~d.diverged, np.inf))
    tables = {i: last[last.init == i].pivot_table(index="width", columns="lr", values="loss", aggfunc="mean")
              for i in ("A", "B")}
    finite = np.concatenate([t.to_numpy(float).ravel() for t in tables.values()])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    with plotting.style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, (init, table) in zip(axes, tables.items()):
            plotting.plot_heatmap(table, ax, title=f"Init[{init}] (toy, SP readout)",
                                  vlim=(finite.min(), finite.max()) if finite.size else None)
        fig.tight_layout()
    fig.summary = {}
    return fig


def fig_llm_lr_sweep(quick: bool = False, cache_dir=None) -> plt.Figure:
    """Paper §5 at CPU scale: test accuracy vs η on MiniLM + tweets (Init[A] vs Init[B]), and the RMS of
    A·x at each init's best η during training (internal instability on a real network).

    Full fidelity reads the committed runs in ``results/llm/runs`` (training only the missing ones, about
    2 minutes each on one core); ``quick`` trains two learning rates for 20 steps. Needs the ``llm`` extra.
    """
    from . import llm  # the llm extra: transformers, peft and the model/data packages

    out = Path(_cache(cache_dir)) / "llm" if quick else LLM_RUNS
    df = llm.llm_sweep(quick=quick, out_dir=out)
    table = llm.lr_table(df)
    best = table.loc[table.groupby("init")["mean"].idxmax()].set_index("init")
    with plotting.style():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        llm.plot_lr_sweep(df, ax1)
        ax1.set_title("MiniLM-L6 + LoRA r=8 (q, v), tweets: test accuracy (seed mean, min–max)")
        for init, row in best.iterrows():
            run = df[(df.init == init) & (df.lr == row["lr"])]
            m = run.groupby("step")["z_a_rms"].mean()
            ax2.plot(m.index, m.values, color=plotting.INIT_COLOURS.get(init), label=f"Init[{init}], η={row['lr']:.1e}")
        ax2.set(xlabel="step", ylabel="RMS of A·x (mean over LoRA modules)", yscale="log",
                title="internal feature size at each init's best η")
        ax2.legend()
        fig.tight_layout()
    fig.summary = {"best": {i: {"lr": float(r["lr"]), "test_accuracy": round(float(r["mean"]), 4)}
                            for i, r in best.iterrows()},
                   "accuracy_by_lr": {i: {f"{lr:.1e}": round(float(a), 4) for lr, a in zip(g.lr, g["mean"])}
                                      for i, g in table.groupby("init")}}
    return fig


FIGURES = {"lr_scaling": fig_lr_scaling, "feature_norms": fig_feature_norms,
           "feature_norms_appendix": fig_feature_norms_appendix, "coord_check": fig_coord_check,
           "regimes": fig_regimes, "loss_heatmap": fig_loss_heatmap, "llm_lr_sweep": fig_llm_lr_sweep}


def main(out="figures", only=None, quick: bool = False, cache_dir=DEFAULT_CACHE) -> dict:
    """Build the figures named in ``only`` (default: all), write PNG + PDF and ``summary.json`` into ``out``."""
    names = list(FIGURES) if not only else list(only)
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        raise ValueError(f"only must name figures among {sorted(FIGURES)}, got {unknown}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in names:
        t0 = time.perf_counter()
        try:
            fig = FIGURES[name](quick=quick, cache_dir=cache_dir)
        except ImportError as err:  # an optional extra is missing: say so, build the others
            print(f"{name}: skipped ({err}; install it with: pip install -e '.[llm]')", flush=True)
            continue
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{name}.{ext}")
        plt.close(fig)
        summary[name] = {"seconds": round(time.perf_counter() - t0, 1), "quick": quick, **fig.summary}
        print(f"{name}: {summary[name]['seconds']} s -> {out / name}.png/.pdf", flush=True)
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def toy_sweep(quick: bool = False, cache_dir=None) -> pd.DataFrame:
    """The toy learning-rate sweep shared by lr_scaling, feature_norms and loss_heatmap (SP readout)."""
    g = GRIDS["toy"][quick]
    model = ModelConfig(setting="toy", n_train=g["n_train"], readout="sp")
    cfg = TrainConfig(steps=g["steps"], record_every=max(1, g["steps"] // 10))
    return simulate(widths=g["widths"], lrs=g["lrs"], lr_exponent=None, inits=["A", "B"], seeds=g["seeds"],
                    model=model, train_cfg=cfg, cache_dir=_cache(cache_dir))


def toy_summary(toy: pd.DataFrame, fits=None) -> dict:
    """Fig. 2 numbers of a toy sweep: loss-optimal slopes (seed bootstrap; ``fits`` if already fitted),
    η*_A/η*_B and best loss per width."""
    fits = fits or _loss_optimal(toy)[1]
    mean_opt = optimal_lr(toy)
    ratio = mean_opt.pivot(index="width", columns="init", values="lr_opt")
    best = mean_opt.pivot(index="width", columns="init", values="loss")
    return {"loss_optimal_slope": {i: _fit_dict(f) for i, f in fits.items()},
            "lr_opt_log2": {i: {int(n): float(np.log2(v)) for n, v in ratio[i].items()} for i in ("A", "B")},
            "lr_opt_ratio_A_over_B": {int(n): float(v) for n, v in (ratio["A"] / ratio["B"]).items()},
            "best_loss": {i: {int(n): round(float(v), 5) for n, v in best[i].items()} for i in ("A", "B")}}


def toy_config_summary(n_train: int = 256, steps: int = 200, seeds=(0, 1, 2), readout: str = "sp",
                       widths=None, lrs=None, cache_dir=None) -> dict:
    """:func:`toy_summary` of the toy sweep with another configuration (the search in paper_repro.md)."""
    full = GRIDS["toy"][0]
    df = simulate(widths=widths or full["widths"], lrs=lrs or full["lrs"], lr_exponent=None, inits=["A", "B"],
                  seeds=list(seeds), model=ModelConfig(setting="toy", n_train=n_train, readout=readout),
                  train_cfg=TrainConfig(steps=steps, record_every=max(1, steps // 10)), cache_dir=_cache(cache_dir))
    return toy_summary(df)


def layer_lr_sweep(quick: bool = False, cache_dir=None) -> pd.DataFrame:
    """Fine absolute learning-rate grid in the layer setting, for the feature-level maximal stable η."""
    g = GRIDS["layer_lr"][quick]
    return simulate(widths=g["widths"], lrs=g["lrs"], lr_exponent=None, inits=["A", "B"], seeds=g["seeds"],
                    steps=g["steps"], cache_dir=_cache(cache_dir))


def _norms_figure(toy: pd.DataFrame, widths: list[int]) -> plt.Figure:
    opt = optimal_lr(toy).set_index(["init", "width"])
    summary = {}
    with plotting.style():
        fig, axes = plt.subplots(2, len(widths), figsize=(3.2 * len(widths), 5.4), squeeze=False)
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
        za = {int(n): float(toy[(toy.init == init) & (toy.width == n) & (toy.lr == opt.loc[(init, n), "lr_opt"])]
                            .z_a_rms.max()) for n in widths}
        summary[f"max_z_a_rms_{init}"] = za
    fig.summary = summary
    return fig


def _loss_optimal(toy: pd.DataFrame):
    """Per-seed loss-optimal η and its fitted width exponent per init."""
    opt = optimal_lr_per_seed(toy)
    return opt, {i: fit_exponent(opt[opt.init == i], "lr_opt") for i in ("A", "B")}


def _cache(cache_dir):
    return DEFAULT_CACHE if cache_dir is None else cache_dir


def _fit_dict(e) -> dict:
    return {"slope": round(e.slope, 3), "ci95": [round(e.lo, 3), round(e.hi, 3)]}


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(quick="--quick" in sys.argv)
