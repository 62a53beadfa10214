"""The theory-vs-measurement matrix: ``lora-theory validate`` (resumable; ``--quick`` for tests).

Cells: every registered init × optimiser (adam, signsgd, sgd) × c ∈ {c* − 1/2, c* − 1/4, c*, c* + 1/4} at
rank 4 (c* from the γ-calculus at the run's horizon T), the same at ranks 1 and 16 and with a non-unit
multiplier (α/r = 4, and rsLoRA) for Init[A] and Init[B] under Adam, and a 3 × 3 grid of the LoRA+ plane
(c_A, c_B) for Init[A] and Init[B]. All in the layer setting (the theorems'), one sample, T = 4 steps.

Per cell and statistic (``STATS`` entries with a theory column) the measured width exponent at step T
(``fit_exponent``, per-width Welch 95% interval; n = 2^7..2^11, 6 seeds) is compared with the calculus's:

* **agree**: the theory lies in the interval (**zero**: the theory says an exact zero and every value is 0);
* **trend**: it does not, but the same cell at n = 2^10..2^14 gives a slope significantly nearer the
  theory (the distance shrinks by more than twice its standard error) or an interval containing it: a
  measured finite-width trend toward the theory;
* **limit**: neither, but the cell's n → ∞ limit is derived (docs/theory.md §12.5) and the finite widths
  approach it: the error of the rescaled statistic stat·n^−γ at step T against the limit computed from each
  run's own random parts falls with n over n = 2^8..2^20 (4 seeds; fitted rate with its 95% interval below
  0) and is below :data:`LIMIT_CLOSE` at the widest width (a statistic vanishing faster than n^γ would also
  have a falling error, but toward 1). Had the exponent been wrong, the rescaled statistic would grow or
  vanish and its error would not fall to 0: the measured slope is the approach to a limit with the theory's
  exponent (and a constant large enough to delay it);
* **disagree**: none of these.

Exponents are compared only in cells the calculus calls stable (beyond the first unstable step its
exponents are upper bounds); every cell's regime is compared too (and again at the large widths when it
disagrees). SignSGD cells use 8 samples: with one sample sign descent oscillates with period 2 and Z_A
returns exactly to 0 at even steps under Init[B] (docs/theory.md §9.2).
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .analysis import REGIME_TOLERANCE, measured_regime
from .config import ModelConfig, TrainConfig
from .fit import FitWarning, fit_exponent
from .inits import INITS
from .limit.convergence import convergence_errors, convergence_rate
from .limit.run import check_limit
from .simulate import simulate
from .stats import STATS
from .theory import exponents, max_stable_lr_exponent, regime

__all__ = ["Cell", "cells", "cstar_of", "main", "run_cell"]

STEPS = 4
WIDTHS = {False: tuple(2 ** k for k in range(7, 12)), True: (64, 128, 256, 512)}
LARGE = {False: tuple(2 ** k for k in range(10, 15)), True: (256, 512, 1024, 2048)}
SEEDS = {False: tuple(range(6)), True: (0, 1, 2)}
OFFSETS = (-0.5, -0.25, 0.0, 0.25)
LIMIT_WIDTHS = {False: tuple(2 ** k for k in range(8, 21, 2)), True: (64, 256, 1024)}  # to 2^20: the
# feedback crossovers of docs/theory.md §9.5 settle only past 2^13
LIMIT_SEEDS = {False: (0, 1, 2, 3), True: (0, 1)}
LIMIT_CLOSE = 0.5  # largest relative error of the seed mean at the widest width for the status "limit"
COMPARED = tuple(k for k, s in STATS.items() if s.theory is not None and k != "a_shift_rms")


@dataclass(frozen=True)
class Cell:
    """One (init, optimiser, c_A, c_B, rank, multiplier) of the matrix; ``label`` names it in tables."""

    init: str
    optimizer: str
    c_a: float
    c_b: float
    rank: int = 4
    alpha: float | None = None
    scaling: str = "lora"
    group: str = "main"

    @property
    def label(self) -> str:
        extra = "" if self.alpha is None else f", {self.scaling} α={self.alpha:g}"
        lr = (f"c={self.c_a:+.3f}" if self.c_a == self.c_b
              else f"(c_A, c_B)=({self.c_a:+.2f}, {self.c_b:+.2f})")
        return f"{self.init}/{self.optimizer}/r{self.rank}{extra}/{lr}"


def cells(quick: bool = False) -> list[Cell]:
    """The matrix's cells (``quick``: the first init of each kind and fewer offsets)."""
    inits = ["A", "B", "AB"] if quick else list(INITS)
    out = []
    for init in inits:
        for opt in ("adam", "signsgd", "sgd"):
            cstar = cstar_of(init, opt)
            for dc in (OFFSETS[1:3] if quick else OFFSETS):
                out.append(Cell(init, opt, cstar + dc, cstar + dc))
    if not quick:
        for init in ("A", "B"):
            cstar = cstar_of(init, "adam")
            for dc in (-0.25, 0.0):
                out += [Cell(init, "adam", cstar + dc, cstar + dc, rank=r, group="rank") for r in (1, 16)]
                out += [Cell(init, "adam", cstar + dc, cstar + dc, alpha=16.0, group="multiplier"),
                        Cell(init, "adam", cstar + dc, cstar + dc, alpha=8.0, scaling="rslora",
                             group="multiplier")]
            for ca in (-1.0, -0.75, -0.5):
                out += [Cell(init, "adam", ca, cb, group="lora_plus") for cb in (-0.5, -0.25, 0.0)]
    return list({cell.label: cell for cell in reversed(out)}.values())[::-1]  # a cell twice: keep the first


@functools.lru_cache(maxsize=None)
def cstar_of(init: str, optimizer: str) -> float:
    """c* of ``init`` under ``optimizer`` at the matrix's horizon T (SGD's depends on it:
    docs/theory.md §8.4)."""
    return float(max_stable_lr_exponent(init, optimizer, steps=STEPS))


def run_cell(cell: Cell, quick: bool = False, cache_dir=None) -> tuple[pd.DataFrame, dict]:
    """(per-statistic comparison rows, regime row) of one cell."""
    df = _sweep(cell, WIDTHS[quick], quick, cache_dir)
    theory = exponents(cell.init, (cell.c_a, cell.c_b), cell.optimizer, steps=STEPS).set_index("step")
    verdict = regime(cell.init, (cell.c_a, cell.c_b), cell.optimizer, steps=STEPS)
    stable = bool(all(theory.z_b <= 0))
    large = None  # the same cell at larger widths, run only when something disagrees
    limit = None  # the cell's finite widths against its n → ∞ limit, likewise
    rows = []
    for stat in COMPARED:
        gamma = float(theory.loc[STEPS, STATS[stat].theory])
        row = _compare(df[df.step == STEPS], stat, gamma, stable)
        if row["status"] == "disagree" and gamma != -np.inf:
            large = _sweep(cell, LARGE[quick], quick, cache_dir) if large is None else large
            row = _trend(row, large[large.step == STEPS], stat, gamma)
        if row["status"] == "disagree" and gamma != -np.inf:
            limit = _limit_errors(cell, quick, cache_dir) if limit is None else limit
            row = _approach(row, limit, stat)
        rows.append({"cell": cell.label, "group": cell.group, "init": cell.init, "optimizer": cell.optimizer,
                     "c_a": cell.c_a, "c_b": cell.c_b, "rank": cell.rank, "stat": stat, "theory": gamma,
                     **row})
    measured = _measured_regime(df)
    status = "agree" if measured["measured"] == verdict.regime else "disagree"
    if status == "disagree":
        large = _sweep(cell, LARGE[quick], quick, cache_dir) if large is None else large
        measured["measured_large"] = _measured_regime(large)["measured"]
        status = "trend" if measured["measured_large"] == verdict.regime else "disagree"
    return pd.DataFrame(rows), {"cell": cell.label, "group": cell.group, "theory": verdict.regime,
                                "theory_internally_unstable": verdict.internally_unstable, **measured,
                                "status": status, "agree": status == "agree"}


def main(out="results/validation", quick: bool = False, cache_dir=".lora_theory_cache") -> dict:
    """Run (or resume) every cell; write ``matrix.csv``, ``regimes.csv``, ``summary.json`` and the figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts, regimes = [], []
    for cell in cells(quick):
        rows, reg = run_cell(cell, quick, cache_dir)
        parts.append(rows)
        regimes.append(reg)
    matrix, regimes = pd.concat(parts, ignore_index=True), pd.DataFrame(regimes)
    matrix.to_csv(out / "matrix.csv", index=False)
    regimes.to_csv(out / "regimes.csv", index=False)
    summary = summarise(matrix, regimes)
    summary["quick"] = quick
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    figure(matrix, regimes).savefig(out / "validation_matrix.png", dpi=120)
    return summary


def summarise(matrix: pd.DataFrame, regimes: pd.DataFrame) -> dict:
    """Counts of each status (exponents in stable cells; regimes in all cells) and the disagreements."""
    compared = matrix[matrix.status != "skipped"]
    return {"exponents": compared.status.value_counts().to_dict(), "exponent_cells": len(compared),
            "regimes_agree": f"{int(regimes.agree.sum())}/{len(regimes)}",
            "exponent_disagreements": compared[compared.status == "disagree"][
                ["cell", "stat", "theory", "slope", "lo", "hi", "slope_large", "lo_large", "hi_large"]
            ].round(3).to_dict("records"),
            "regimes": regimes.status.value_counts().to_dict(),
            "regime_disagreements": regimes[regimes.status != "agree"][
                ["cell", "theory", "measured", "measured_large", "status"]].to_dict("records")}


def figure(matrix: pd.DataFrame, regimes: pd.DataFrame) -> Figure:
    """Cells × statistics coloured by status, with the regime verdict as the last column."""
    colours = {"agree": 0, "zero": 0, "trend": 1, "limit": 1, "disagree": 2, "skipped": 3}
    table = matrix.pivot_table(index="cell", columns="stat", values="status", aggfunc="first", sort=False)
    table["regime"] = regimes.set_index("cell").status
    codes = table.apply(lambda col: col.map(colours)).to_numpy(float)
    fig = Figure(figsize=(7, 0.16 * len(table) + 1.5))
    ax = fig.subplots()
    from matplotlib.colors import ListedColormap

    ax.imshow(codes, aspect="auto", cmap=ListedColormap(["#98df8a", "#ffbb78", "#d62728", "#dddddd"]),
              vmin=0, vmax=3, interpolation="nearest")
    ax.set_xticks(range(table.shape[1]), [c.replace("_rms", "") for c in table.columns], rotation=45,
                  fontsize=6)
    ax.set_yticks(range(len(table)), table.index, fontsize=4)
    ax.set_title("γ-calculus vs measured exponent at t = 4 (green agree, orange finite-width trend or "
                 "approach to the limit, red disagree, grey not compared: unstable cell)", fontsize=6)
    fig.tight_layout()
    return fig


def _configs(cell: Cell) -> tuple[ModelConfig, TrainConfig]:
    """The cell's model (multiplier; 8 samples for SignSGD, whose one-sample steps oscillate) and training."""
    model = ModelConfig(alpha=cell.alpha, scaling=cell.scaling,
                        n_train=8 if cell.optimizer == "signsgd" else 1)
    return model, TrainConfig(steps=STEPS, lr_ratio_exponent=cell.c_b - cell.c_a)


def _sweep(cell: Cell, widths, quick: bool, cache_dir) -> pd.DataFrame:
    model, cfg = _configs(cell)
    return simulate(widths=list(widths), inits=cell.init, lr_exponent=cell.c_a, optimizers=cell.optimizer,
                    ranks=cell.rank, seeds=list(SEEDS[quick]), model=model, train_cfg=cfg,
                    cache_dir=cache_dir, progress=False)


def _fit(last: pd.DataFrame, stat: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        try:
            return fit_exponent(last, stat, method="width")
        except ValueError:  # fewer than two widths with finite positive values
            return None


def _compare(last: pd.DataFrame, stat: str, gamma: float, stable: bool) -> dict:
    empty = {"slope": np.nan, "lo": np.nan, "hi": np.nan}
    if not stable:
        return {**empty, "status": "skipped"}
    if gamma == -np.inf:
        return {**empty, "status": "zero" if np.all(last[stat].to_numpy(float) == 0) else "disagree"}
    e = _fit(last, stat)
    if e is None:
        return {**empty, "status": "disagree"}
    return {"slope": e.slope, "lo": e.lo, "hi": e.hi,
            "status": "agree" if e.lo <= gamma <= e.hi else "disagree"}


def _trend(row: dict, last_large: pd.DataFrame, stat: str, gamma: float) -> dict:
    """Re-judge a disagreement with the slope over larger widths (a trend toward the theory or not)."""
    e = _fit(last_large, stat)
    if e is None or not np.isfinite(row["slope"]):
        return {**row, "slope_large": np.nan, "lo_large": np.nan, "hi_large": np.nan}
    se = np.hypot(row["hi"] - row["lo"], e.hi - e.lo) / (2 * 1.96)  # standard error of the difference
    nearer = abs(row["slope"] - gamma) - abs(e.slope - gamma) > 2 * se
    status = "trend" if (e.lo <= gamma <= e.hi or nearer) else "disagree"
    return {**row, "slope_large": e.slope, "lo_large": e.lo, "hi_large": e.hi, "status": status}


def _limit_errors(cell: Cell, quick: bool, cache_dir) -> pd.DataFrame | None:
    """The coupled errors (``limit.convergence_errors``) of every compared statistic at step T, or None
    where the cell's limit is not derived."""
    model, cfg = _configs(cell)
    try:
        check_limit(model, cell.init, cell.c_a, cell.optimizer, cfg)
    except ValueError:
        return None
    return convergence_errors(cell.init, cell.c_a, 1.0, cell.optimizer, LIMIT_WIDTHS[quick],
                              LIMIT_SEEDS[quick], STEPS, (STEPS, STEPS), COMPARED, cell.rank,
                              train_cfg=cfg, coupled=True, cache_dir=cache_dir, model=model)


def _approach(row: dict, errors: pd.DataFrame | None, stat: str) -> dict:
    """Re-judge a disagreement by the approach to the limit: "limit" when the error's fitted rate over
    :data:`LIMIT_WIDTHS` has its 95% interval below 0 and the error at the widest is below LIMIT_CLOSE."""
    if errors is None:
        return row
    sel = errors[errors.stat == stat]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        try:
            rate = convergence_rate(sel, method="width")
        except ValueError:  # the error is 0 (or not finite) at all but one width
            return row
    widest = max(rate["max_error_of_mean"])
    out = {**row, "limit_rate": rate["rate"], "limit_rate_lo": rate["rate_lo"],
           "limit_rate_hi": rate["rate_hi"], "limit_error_widest": rate["max_error_of_mean"][widest]}
    close = out["limit_error_widest"] < LIMIT_CLOSE
    return {**out, "status": "limit"} if rate["rate_hi"] < 0 and close else out


def _measured_regime(df: pd.DataFrame) -> dict:
    """:func:`analysis.measured_regime` plus the number of diverged runs ("undetermined": a zero stat)."""
    diverged = int(df.groupby(["width", "seed"]).diverged.any().sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        try:
            reg, internal = measured_regime(df, first_step=3)
        except ValueError:  # an exactly zero statistic: no slope
            return {"measured": "undetermined", "diverged_runs": diverged}
    return {"measured": reg, "measured_internally_unstable": internal, "diverged_runs": diverged,
            "tolerance": REGIME_TOLERANCE}
