"""Learning-rate transfer across width, rank and α, and the sweeps that test it (docs/theory.md §13).

* :func:`transfer_lr`: a tuned η at one (width, rank[, α]) → the predicted η at another, from the law
  η_max = Θ(min_i n^{w_i}·r^{k_i}·α^{a_i}) (:func:`lora_theory.theory.lr_law`), with the exponents and why.
* :func:`rank_sweep` → :func:`rank_fits` → :func:`fig_rank_scaling`: the layer setting's maximal stable η
  against the rank at a fixed width, per (init, multiplier convention), fitted against the calculus.
* :func:`transfer_check`: the toy's loss-optimal η tuned at one (n, r), predicted and measured at others.
  :func:`main` writes results/rank.

Glossary: n width, r rank, α LoRA alpha, s multiplier (α/r or α/√r), η learning rate, τ the Z_B threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .checks import check_int, check_positive
from .config import ModelConfig, TrainConfig
from .simulate import simulate

if TYPE_CHECKING:  # sympy (theory), scipy (fit), matplotlib: imported where used, so lora_theory loads fast
    from .theory import LearningRateLaw

__all__ = ["CASES", "RANK_GRIDS", "Transfer", "fig_rank_scaling", "main", "parse_shape", "rank_fits",
           "rank_sweep", "transfer_check", "transfer_lr"]

TRANSFER_OPTIMIZERS = {"adam": "Adam", "signsgd": "SignSGD"}  # sign-like: c* does not depend on the horizon
CASES = (("A", "lora"), ("A", "rslora"), ("B", "lora"), ("B", "rslora"))  # (init, multiplier convention)
RANK_GRIDS = {  # (full, quick)
    "layer": ({"width": 4096, "ranks": [2 ** k for k in range(8)],
               "lrs": [2.0 ** (k / 4) for k in range(-64, 9)], "seeds": [0, 1, 2], "steps": 10, "small": 16},
              {"width": 256, "ranks": [1, 2, 4, 8, 16], "lrs": [2.0 ** (k / 2) for k in range(-24, 5)],
               "seeds": [0, 1], "steps": 6, "small": 4}),
    "toy": ({"source": (256, 4),
             "targets": [(1024, 4), (4096, 4), (8192, 8), (256, 32), (1024, 16), (2048, 64), (4096, 32)],
             "lrs": [2.0 ** (k / 2) for k in range(-24, 1)], "window": 3, "seeds": [0, 1], "steps": 100,
             "n_train": 256},
            {"source": (64, 2), "targets": [(128, 2), (64, 8)],
             "lrs": [2.0 ** (k / 2) for k in range(-16, 1)], "window": 2, "seeds": [0], "steps": 10,
             "n_train": 32}),
}


@dataclass(frozen=True)
class Transfer:
    """Result of :func:`transfer_lr`: the predicted ``lr`` = source η × ``factor``, the ``law`` it came
    from, the exponents (width, rank, α) of the constraint binding at the target, and the ``explanation``."""

    lr: float
    factor: float
    source: dict
    target: dict
    law: LearningRateLaw
    exponents: tuple
    explanation: str

    def __str__(self) -> str:
        return self.explanation


def transfer_lr(lr, source: dict, target: dict, init="A", scaling="lora", optimizer="adam") -> Transfer:
    """Predict the learning rate at ``target`` from one tuned at ``source`` (docs/theory.md §13).

    The calculus gives η_max = Θ(min_i n^{w_i} r^{k_i} α^{a_i}); with every constant taken as 1,
    η_target = η_source · law(target) / law(source). Exact when one constraint binds at both shapes.

    Args:
        lr: the tuned learning rate at ``source`` (> 0).
        source, target: dicts with ``width`` and ``rank`` (integers, rank ≤ width) and optionally
            ``alpha`` (LoRA alpha, > 0; a missing alpha equals the other shape's, i.e. α is unchanged).
        init: a registered init (``lora_theory.INITS``) or a pair of entry exponents.
        scaling: ``"lora"`` (s = α/r), ``"rslora"`` (α/√r), ``"constant"`` (α) or a number γ_α.
        optimizer: ``"adam"`` or ``"signsgd"`` (under SGD, c* depends on the horizon: docs/theory.md §8.4).

    >>> t = transfer_lr(2e-4, dict(width=768, rank=8), dict(width=4096, rank=64), init="A", scaling="lora")
    >>> round(t.lr, 8), t.exponents
    (8.66e-05, (-1/2, 0, -1/2))
    >>> round(transfer_lr(1e-3, dict(width=1024, rank=4), dict(width=1024, rank=64), "A", "constant").lr, 6)
    0.00025
    """
    from .theory import lr_law

    lr = check_positive("lr", lr)
    src, tgt = parse_shape(source, "source"), parse_shape(target, "target")
    src.setdefault("alpha", tgt.get("alpha", 1.0))
    tgt.setdefault("alpha", src["alpha"])
    if optimizer not in TRANSFER_OPTIMIZERS:  # SGD's c* depends on the horizon (docs/theory.md §8.4)
        raise ValueError(f"optimizer must be one of {sorted(TRANSFER_OPTIMIZERS)}, got {optimizer!r}")
    law, opt_name = lr_law(init, scaling, optimizer), TRANSFER_OPTIMIZERS[optimizer]
    (v_src, b_src), (v_tgt, b_tgt) = ((law.value(**x), law.binding(**x)) for x in (src, tgt))
    factor = v_tgt / v_src
    lines = [f"Maximal stable η = {law} for init {init!r}, multiplier s = α·r^(−{law.scaling}), {opt_name} "
             f"(γ-calculus in width and rank, docs/theory.md §13).",
             f"Binding at the source {_shape_text(src)}: {_term(b_src)}; at the target {_shape_text(tgt)}: "
             f"{_term(b_tgt)}."]
    if b_src == b_tgt:
        ratios = [f"({t:g}/{s:g})^({e})" for e, s, t in zip(b_tgt, src.values(), tgt.values()) if e != 0
                  and s != t]
        lines.append(f"η_target = η_source · {' · '.join(ratios) or '1'} = {lr:.4g} · {factor:.4g} = "
                     f"{lr * factor:.4g}.")
    else:
        lines.append(f"The binding constraint changes between the shapes; with unit constants, η_target = "
                     f"η_source · {v_tgt:.4g} / {v_src:.4g} = {lr:.4g} · {factor:.4g} = {lr * factor:.4g} "
                     "(less certain: the true crossover depends on the constants).")
    return Transfer(lr * factor, factor, src, tgt, law, tuple(b_tgt), "\n".join(lines))


def parse_shape(shape, name: str = "shape") -> dict:
    """A shape ``{"width", "rank"[, "alpha"]}`` from a dict or a string ``"width=768,rank=8"``.

    >>> parse_shape("width=768,rank=8,alpha=16")
    {'width': 768, 'rank': 8, 'alpha': 16.0}
    """
    if isinstance(shape, str):
        try:
            pairs = (part.split("=") for part in shape.split(",") if part.strip())
            shape = {k.strip(): float(v) for k, v in pairs}
        except ValueError:
            raise ValueError(f"{name} must look like 'width=768,rank=8[,alpha=16]', got {shape!r}") from None
        shape = {k: int(v) if k != "alpha" and v == int(v) else v for k, v in shape.items()}
    if not isinstance(shape, dict) or not {"width", "rank"} <= set(shape) <= {"width", "rank", "alpha"}:
        raise ValueError(f"{name} must give width and rank (and optionally alpha), got {shape!r}")
    out = {key: check_int(f"{name} {key}", shape[key]) for key in ("width", "rank")}
    if out["rank"] > out["width"]:
        raise ValueError(f"{name} rank must be <= its width, got rank={out['rank']} > width={out['width']}")
    if "alpha" in shape:
        out["alpha"] = check_positive(f"{name} alpha", shape["alpha"])
    return out


def rank_sweep(quick: bool = False, cache_dir=None) -> pd.DataFrame:
    """Layer-setting runs over ranks × the learning-rate grid at one width, α = 1, for every case of ``CASES``
    (a ``scaling`` column says which multiplier convention)."""
    g = RANK_GRIDS["layer"][quick]
    frames = []
    for init, scaling in CASES:
        for r in g["ranks"]:
            # ~1 GB per batch: the planner budgets (N, n) tensors; A, B and Adam's moments add ~12·r·n per run
            budget = max(1, int(2 ** 30 * 6 / (6 + 12 * r)))
            df = simulate(widths=g["width"], ranks=r, lrs=g["lrs"], lr_exponent=None, inits=init,
                          seeds=g["seeds"], steps=g["steps"], model=ModelConfig(alpha=1.0, scaling=scaling),
                          max_batch_bytes=budget, progress=False, cache_dir=_cache(cache_dir))
            frames.append(df.assign(scaling=scaling))
    return pd.concat(frames, ignore_index=True)


def rank_fits(lr_max: pd.DataFrame, log2_step: float, max_rank: int | None = None) -> pd.DataFrame:
    """Fitted rank exponent of ``lr_max`` per (init, scaling), next to the calculus's.

    Args:
        lr_max: columns ``init, scaling, width, rank, seed, lr_max`` (:func:`max_stable_lr` of a sweep).
        log2_step: the learning-rate grid's step in log2: the largest stable η on the grid is the true
            threshold rounded down by less than one step, which bounds the slope (``grid_lo``, ``grid_hi``).
        max_rank: fit only ranks ≤ this (e.g. the first piece of a two-piece law).

    Returns:
        Columns ``init, scaling, width, max_rank, slope, lo, hi`` (95% seed interval: a point when the seeds
        agree), ``grid_lo, grid_hi``, ``law``, ``theory`` (slope of log law(n, r) against log r over the
        same ranks, unit constants) and ``theory_in_ci`` (in the union of both intervals).
    """
    from .fit import fit_exponent
    from .theory import lr_law

    rows = []
    sel = lr_max if max_rank is None else lr_max[lr_max["rank"] <= max_rank]
    for (init, scaling, n), g in sel.groupby(["init", "scaling", "width"], sort=False):
        e, law = fit_exponent(g, "lr_max", x="rank"), lr_law(init, scaling)
        x = np.log2(g["rank"].to_numpy(float))
        w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)  # the least-squares slope is Σ w_i·log2 η_i
        grid = (e.slope + log2_step * w[w < 0].sum(), e.slope + log2_step * w[w > 0].sum())
        ranks = np.array(sorted(g["rank"].unique()), dtype=float)
        theory = round(float(np.polyfit(np.log(ranks), np.log([law.value(n, r) for r in ranks]), 1)[0]), 4)
        rows.append({"init": init, "scaling": scaling, "width": int(n), "max_rank": int(ranks.max()),
                     "slope": e.slope, "lo": e.lo, "hi": e.hi, "grid_lo": grid[0], "grid_hi": grid[1],
                     "law": str(law), "theory": theory,
                     "theory_in_ci": bool(min(e.lo, grid[0]) <= theory <= max(e.hi, grid[1]))})
    return pd.DataFrame(rows)


def fig_rank_scaling(quick: bool = False, cache_dir=None):
    """Maximal stable η (layer, Adam, max_t RMS(Z_B) ≤ τ) against rank at fixed width, for α/r and α/√r,
    with the calculus's law (dashed, constant fitted); returns ``(Figure, summary)``."""
    from matplotlib.figure import Figure

    from . import plotting
    from .analysis import max_stable_lr
    from .experiments import TAU
    from .inits import colours
    from .theory import lr_law

    grid = RANK_GRIDS["layer"][quick]
    lr_max = max_stable_lr(rank_sweep(quick, cache_dir), TAU, by=("init", "scaling", "width", "rank", "seed"))
    step = math.log2(grid["lrs"][1] / grid["lrs"][0])
    fits, small = rank_fits(lr_max, step), rank_fits(lr_max, step, max_rank=grid["small"])
    with plotting.style():
        fig = Figure(figsize=(10, 5.2))
        for ax, scaling in zip(fig.subplots(1, 2), ("lora", "rslora")):
            for _, f in fits[fits.scaling == scaling].iterrows():
                g = lr_max[(lr_max.init == f.init) & (lr_max.scaling == scaling)].dropna(subset=["lr_max"])
                geo = np.exp(np.log(g.lr_max).groupby(g["rank"]).mean())
                law = lr_law(f.init, scaling)
                curve = np.array([law.value(f.width, r) for r in geo.index])
                colour = colours()[f.init]  # measured: seed geometric mean; calculus: its constant fitted
                ax.plot(geo.index, geo.values, "o-", color=colour,
                        label=f"Init[{f.init}]: {f.slope:+.2f} (grid [{f.grid_lo:+.2f}, {f.grid_hi:+.2f}])")
                ax.plot(geo.index, curve * np.exp(np.mean(np.log(geo.values / curve))), "--", color=colour,
                        alpha=0.6, zorder=3, label=f"calculus {f.law} (slope {f.theory:+.2f})")
            ax.set(xscale="log", yscale="log", xlabel="rank r", ylabel="max stable η",
                   title=f"s = α/{'r' if scaling == 'lora' else '√r'}, α = 1, n = {int(fits.width.iloc[0])}")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16))
        fig.tight_layout()
    summary = {"width": int(fits.width.iloc[0]), "tau": TAU, "quick": quick, "log2_lr_step": step,
               **{key: {f"{f.init}/{f.scaling}": {
                   "slope": round(f.slope, 3), "ci95": [round(f.lo, 3), round(f.hi, 3)],
                   "grid": [round(f.grid_lo, 3), round(f.grid_hi, 3)], "theory": f.theory, "law": f.law,
                   "theory_in_ci": f.theory_in_ci} for _, f in table.iterrows()}
                  for key, table in (("fits", fits), (f"fits_rank_le_{grid['small']}", small))}}
    return fig, summary


def transfer_check(quick: bool = False, cache_dir=None) -> pd.DataFrame:
    """Toy (SP readout, Adam): loss-optimal η tuned at the source shape, predicted by :func:`transfer_lr` at
    each target, and measured there on the 2^{1/2} grid around the prediction (widened while the optimum
    sits on an edge). α is fixed at its source value s = 1 (α = r_0 for α/r, √r_0 for α/√r).

    Columns: ``init, scaling, width, rank, lr_source, lr_pred, lr_meas, log2_error`` (log2 of
    measured/predicted), ``log2_error_same_lr`` (the error of keeping the source η) and
    ``within_one_step`` (|log2_error| ≤ 1/2).
    """
    g = RANK_GRIDS["toy"][quick]
    (n0, r0), rows = g["source"], []
    for init, scaling in CASES:
        alpha = float(r0) if scaling == "lora" else math.sqrt(r0)
        run = _toy_runner(init, ModelConfig(setting="toy", n_train=g["n_train"], readout="sp", alpha=alpha,
                                            scaling=scaling), g, cache_dir)
        lr0 = run(n0, r0, g["lrs"])
        for n, r in g["targets"]:
            pred = transfer_lr(lr0, {"width": n0, "rank": r0}, {"width": n, "rank": r}, init, scaling).lr
            k = round(2 * math.log2(pred))  # nearest point of the 2^{1/2} lattice
            meas = run(n, r, [2.0 ** ((k + j) / 2) for j in range(-g["window"], g["window"] + 1)], widen=True)
            rows.append({"init": init, "scaling": scaling, "width": n, "rank": r, "lr_source": lr0,
                         "lr_pred": pred, "lr_meas": meas, "log2_error": math.log2(meas / pred),
                         "log2_error_same_lr": math.log2(meas / lr0)})
    out = pd.DataFrame(rows)
    return out.assign(within_one_step=out.log2_error.abs() <= 0.5 + 1e-9)  # one step, up to round-off


def main(out="results/rank", quick: bool = False, cache_dir=None) -> dict:
    """Write the committed results: ``rank_scaling.png``, ``rank_lr_max.csv``, ``rank_fits.csv``,
    ``transfer.csv`` and ``summary.json`` (with the wall time of each part) into ``out``."""
    import json
    import time
    from pathlib import Path

    from .analysis import max_stable_lr
    from .experiments import TAU

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fig, summary = fig_rank_scaling(quick, cache_dir)
    fig.savefig(out / "rank_scaling.png", dpi=150)
    lr_max = max_stable_lr(rank_sweep(quick, cache_dir), TAU, by=("init", "scaling", "width", "rank", "seed"))
    lr_max.to_csv(out / "rank_lr_max.csv", index=False)
    step, small = summary["log2_lr_step"], RANK_GRIDS["layer"][quick]["small"]
    fits = pd.concat([rank_fits(lr_max, step), rank_fits(lr_max, step, small)])
    fits.round(4).to_csv(out / "rank_fits.csv", index=False)
    t1, table = time.perf_counter(), transfer_check(quick, cache_dir)
    table.to_csv(out / "transfer.csv", index=False)
    summary.update(rank_seconds=round(t1 - t0), transfer_seconds=round(time.perf_counter() - t1),
                   transfer_within_one_step=f"{int(table.within_one_step.sum())}/{len(table)}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


# ----------------------------------------------------------------------------------------- private

def _toy_runner(init, model, g, cache_dir):
    """run(n, r, lrs, widen) → loss-optimal η at (n, r); with ``widen``, extend the grid by 2^{±1} steps
    while the optimum is on its edge (at most 4 times)."""
    from .analysis import optimal_lr

    cfg = TrainConfig(steps=g["steps"], record_every=g["steps"])

    def sweep(n, r, lrs):
        return simulate(widths=n, ranks=r, lrs=lrs, lr_exponent=None, inits=init, seeds=g["seeds"],
                        model=model, train_cfg=cfg, progress=False, cache_dir=_cache(cache_dir))

    def run(n, r, lrs, widen=False):
        df = sweep(n, r, lrs)
        for _ in range(4 if widen else 0):
            best = optimal_lr(df, by=("init", "width", "rank")).lr_opt.iloc[0]
            grid = sorted(df.lr.unique())
            if grid[0] < best < grid[-1]:
                break
            step = 2.0 ** (1 / 2)
            extra = [best * step ** j for j in ((1, 2) if best == grid[-1] else (-1, -2))]
            df = pd.concat([df, sweep(n, r, extra)], ignore_index=True)
        return float(optimal_lr(df, by=("init", "width", "rank")).lr_opt.iloc[0])

    return run


def _shape_text(shape: dict) -> str:
    return ", ".join(f"{ {'width': 'n', 'rank': 'r', 'alpha': 'α'}[k]} = {v:g}" for k, v in shape.items())


def _term(piece) -> str:
    return "·".join(f"{s}^({e})" for s, e in zip("nrα", piece) if e != 0) or "1"


def _cache(cache_dir):
    from .experiments import DEFAULT_CACHE

    return DEFAULT_CACHE if cache_dir is None else cache_dir
