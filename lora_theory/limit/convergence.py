"""Finite widths against the limit: errors, their rate, the ``limit_convergence`` figure and the limit's
loss as a function of the learning-rate constant (docs/theory.md §12.4, §12.6).

For a statistic x with rescaled value x_s(n) at width n and seed s, and its limit x_∞ (by default the
limit of the same run's random parts R_A, R_H, "coupled"; the limit is random unless those enter only
through signs, as for Init[A] or Init[B] with N = 1), the error at a step is
|x_s(n) − x_∞| / max(|x_∞|, m/10), with m the mean of |x_∞| over the window's steps: a relative error,
except where the limit is below a tenth of the statistic's typical size (SignSGD's exactly cancelled
steps). A width's error is the largest over the window's steps and the statistics; its rate is the
slope of log error against log n (``fit.fit_exponent``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..config import ModelConfig, TrainConfig
from ..fit import fit_exponent
from ..inits import get_init, sample_init
from ..models import init_generator
from ..plotting import style
from ..simulate import frozen_parts, simulate
from .meanfield import LimitConfig
from .run import run_limit

__all__ = ["CASE", "QUICK_CASE", "convergence_errors", "convergence_rate", "fig_limit_convergence",
           "loss_scan", "random_parts"]

FIGURE_STATS = ("z_a_rms", "z_b_rms", "loss")
CASE = dict(init="A", lr_exponent=-0.5, lr=0.5, optimizer="adam", widths=[2 ** k for k in range(8, 19, 2)],
            seeds=[0, 1, 2, 3], steps=6, window=(2, 6))  # the reference case (r = 4, N = 1)
QUICK_CASE = dict(CASE, widths=[2 ** k for k in range(6, 11, 2)], seeds=[0, 1], steps=4, window=(2, 4))


def convergence_errors(init: str = "A", lr_exponent: float = -0.5, lr: float = 0.5, optimizer: str = "adam",
                       widths=(256, 1024, 4096), seeds=(0, 1), steps: int = 6, window=(2, 6),
                       stats=FIGURE_STATS, rank: int = 4, n_train: int = 1,
                       train_cfg: TrainConfig | None = None, coupled: bool = True,
                       cache_dir=None, model: ModelConfig | None = None) -> pd.DataFrame:
    """Per (width, seed, step, stat): the rescaled value, the limit and the error (module docstring).

    The finite widths and the limit come from one ``simulate(widths=[..., math.inf])`` call (cached in
    ``cache_dir``); ``train_cfg`` (e.g. a LoRA+ ``lr_ratio_exponent``) is passed on, with ``steps``. With
    ``coupled`` each finite run is compared with the limit of its own random parts R_A, R_H
    (:func:`random_parts`), so the error vanishes even where the limit is random; otherwise with the mean of
    the limit over ``seeds``. ``model`` (e.g. a multiplier ``alpha``) replaces
    ``ModelConfig(n_train=n_train)``. Returns columns ``width, seed, step, stat, value, limit, scale,
    error`` (the width ∞ rows hold the uncoupled limit; ``scale`` is the error's denominator).

    >>> e = convergence_errors(widths=[64, 256], seeds=[0], steps=2, window=(2, 2))
    >>> sorted(e.stat.unique()), bool((e[e.width == 256].error >= 0).all())
    (['loss', 'z_a_rms', 'z_b_rms'], True)
    """
    model = ModelConfig(n_train=n_train) if model is None else model
    df = simulate(widths=list(widths) + [math.inf], inits=init, lr_exponent=lr_exponent, lrs=lr,
                  seeds=list(seeds), optimizers=optimizer, ranks=rank, steps=steps, train_cfg=train_cfg,
                  model=model, progress=False, cache_dir=cache_dir)
    long = _long(df[(df.step >= window[0]) & (df.step <= window[1])], stats)
    inf = np.isinf(long.width)
    mean = long[inf].groupby(["stat", "step"])["value"].mean().rename("limit").reset_index()
    if coupled:
        cfg = TrainConfig(steps=steps) if train_cfg is None else replace(train_cfg, steps=steps)
        lim = pd.concat([_long(_coupled(init, lr_exponent, lr, optimizer, n, seeds, rank, model, cfg), stats)
                         .rename(columns={"value": "limit"}) for n in widths])
        out = pd.concat([long[~inf].merge(lim, on=["width", "seed", "step", "stat"]),
                         long[inf].merge(mean, on=["stat", "step"])])
    else:
        out = long.merge(mean, on=["stat", "step"])
    size = mean.assign(a=mean.limit.abs()).groupby("stat")["a"].mean().rename("size")
    out = out.merge(size, on="stat")
    out["scale"] = np.maximum(out.limit.abs(), 0.1 * out["size"])  # floored relative error (module doc)
    out["error"] = (out.value - out.limit).abs() / out.scale
    return out.drop(columns="size").sort_values(["stat", "width", "seed", "step"], ignore_index=True)


def random_parts(init: str, width: int, seeds, rank: int = 4, n_train: int = 1) -> torch.Tensor:
    """The random parts of the finite runs at ``width`` as standard Gaussians (S, 2, N, r):
    R_A = Z A_0ᵀ / (σ_A √n) and R_H = (W*Z − y) B_0 / (σ_B √(2n)) (zero where a factor starts at zero).

    >>> random_parts("A", 64, [0, 1]).shape
    torch.Size([2, 2, 1, 4])
    """
    spec, model = get_init(init), ModelConfig(n_train=n_train)
    fz = frozen_parts(model, width, tuple(seeds), "float64", "cpu")  # W*Z before any absorption
    sd_a, sd_b = (math.sqrt(d.variance(width, rank)) for d in (spec.a, spec.b))
    out = []
    for i, seed in enumerate(seeds):
        A0, B0 = sample_init(init, width, rank, init_generator(seed, width, rank))  # (r, n), (n, r)
        zero = torch.zeros((n_train, rank), dtype=torch.float64)
        ra = fz.Z[i] @ A0.T / (sd_a * math.sqrt(width)) if sd_a > 0 else zero
        rh = (fz.base[i] - fz.target[i]) @ B0 / (sd_b * math.sqrt(2 * width)) if sd_b > 0 else zero
        out.append(torch.stack([ra, rh]))
    return torch.stack(out).double()


def convergence_rate(errors: pd.DataFrame, min_width: float = 0, method: str = "seed") -> dict:
    """Per width: the largest error of the seed mean and of any seed; the fitted rate of the per-seed maximal
    error over widths ≥ ``min_width`` (``fit_exponent``, 95% interval of ``method``).

    >>> e = pd.DataFrame({"width": [4.0, 16.0] * 2, "seed": [0, 0, 1, 1], "step": 2, "stat": "z_a_rms",
    ...                   "value": [1.5, 1.25, 1.5, 1.25], "limit": 1.0, "scale": 1.0,
    ...                   "error": [0.5, 0.25, 0.5, 0.25]})
    >>> convergence_rate(e)["rate"]
    -0.5
    """
    fin = errors[np.isfinite(errors.width)]
    mean = fin.groupby(["width", "stat", "step"])[["value", "limit", "scale"]].mean()
    mean_err = ((mean.value - mean.limit).abs() / mean.scale).groupby("width").max()
    per_seed = fin.groupby(["width", "seed"])["error"].max().rename("max_error").reset_index()
    fit = fit_exponent(per_seed[per_seed.width >= min_width], "max_error", method=method)
    any_seed = per_seed.groupby("width").max_error.max()
    return {"max_error_of_mean": {int(w): round(float(v), 4) for w, v in mean_err.items()},
            "max_error_any_seed": {int(w): round(float(v), 4) for w, v in any_seed.items()},
            "rate": round(float(fit.slope), 3), "rate_lo": round(float(fit.lo), 3),
            "rate_hi": round(float(fit.hi), 3),
            "fit_widths": [int(w) for w in sorted(per_seed.width.unique()) if w >= min_width]}


def loss_scan(init: str, lr_exponent: float, consts, step: int, optimizer: str = "adam", seeds=(0,),
              rank: int = 4, n_train: int = 1, cfg: LimitConfig | None = None) -> pd.DataFrame:
    """The limit loss L∞(C) = lim loss/n at ``step`` for η = C·n^c, per constant C (seed mean).

    >>> d = loss_scan("A", -0.5, [0.25, 0.5], step=2, cfg=LimitConfig(particles=512))
    >>> d.columns.tolist(), bool((d.loss < 1).all())
    (['lr_const', 'loss'], True)
    """
    tr = run_limit(init, lr_exponent, list(consts), seeds, optimizer, rank, ModelConfig(n_train=n_train),
                   TrainConfig(steps=step), cfg)
    return pd.DataFrame({"lr_const": list(consts), "loss": tr.values["loss_scaled"][-1].mean(axis=0)})


def fig_limit_convergence(quick: bool = False, cache_dir=None) -> tuple[Figure, dict]:
    """Rescaled Z_A, Z_B and loss per step for each width and the limit (Init[A], c = −1/2, C = 1/2, Adam,
    r = 4, N = 1), and the maximal error against the width with its fitted rate."""
    case = QUICK_CASE if quick else CASE
    errs = convergence_errors(case["init"], case["lr_exponent"], case["lr"], case["optimizer"],
                              case["widths"], case["seeds"], case["steps"], (1, case["steps"]),
                              cache_dir=cache_dir)
    lo, hi = case["window"]
    window = errs[(errs.step >= lo) & (errs.step <= hi)]
    rate = convergence_rate(window, min_width=case["widths"][-3])
    widths = sorted(errs.width.unique())
    with style():
        fig = Figure(figsize=(13, 3.4))
        axes = fig.subplots(1, 4)
        cmap = [f"C{i}" for i in range(len(widths))]
        for ax, stat in zip(axes, FIGURE_STATS):
            m = errs[errs.stat == stat].groupby(["width", "step"])["value"].mean()
            for w, colour in zip(widths, cmap):
                inf = np.isinf(w)
                ax.plot(m.loc[w].index, m.loc[w].values, "--" if inf else "-", color="k" if inf else colour,
                        marker="o", ms=3, label="n = ∞" if inf else f"n = 2^{int(math.log2(w))}")
            ax.set(xlabel="step", title=f"{stat} · n^(−γ)")
        axes[0].legend(fontsize=6)
        per = rate["max_error_any_seed"]
        axes[3].loglog(list(per), list(per.values()), "o-", label="max over seeds")
        axes[3].loglog(list(rate["max_error_of_mean"]), list(rate["max_error_of_mean"].values()), "s--",
                       label="seed mean")
        axes[3].set(xlabel="width n", ylabel=f"max relative error, steps {lo}–{hi}",
                    title=f"rate {rate['rate']:+.2f} [{rate['rate_lo']:+.2f}, {rate['rate_hi']:+.2f}]")
        axes[3].legend(fontsize=6)
        fig.suptitle(f"Init[{case['init']}], c = {case['lr_exponent']}, C = {case['lr']}, "
                     f"{case['optimizer']}, r = 4, N = 1: finite widths against the n → ∞ limit", fontsize=9)
        fig.tight_layout()
    limit = errs[np.isinf(errs.width)].groupby(["stat", "step"])["value"].mean()
    return fig, {**rate, "limit": {s: [round(float(v), 4) for v in limit.loc[s].values]
                                   for s in FIGURE_STATS}}


# ----------------------------------------------------------------------------------------- private

def _long(df: pd.DataFrame, stats) -> pd.DataFrame:
    """Rescaled statistics in long form: ``width, seed, step, stat, value``."""
    long = df.melt(id_vars=["width", "seed", "step"], value_vars=[f"{k}_scaled" for k in stats],
                   var_name="stat", value_name="value")
    long["stat"] = long["stat"].str.removesuffix("_scaled")
    return long


def _coupled(init, lr_exponent, lr, optimizer, n, seeds, rank, model, cfg) -> pd.DataFrame:
    """The limit of each seed's run at width ``n``, from that run's random parts, as rows of width ``n``."""
    tr = run_limit(init, lr_exponent, [lr], seeds, optimizer, rank, model, cfg,
                   xi=random_parts(init, n, seeds, rank, model.n_train))
    T, S = tr.diverged.shape[:2]
    rows = {"width": float(n), "seed": np.repeat(list(seeds), T), "step": np.tile(tr.steps, S)}
    rows.update({k: v[:, :, 0].T.ravel() for k, v in tr.values.items() if k.endswith("_scaled")})
    return pd.DataFrame(rows)
