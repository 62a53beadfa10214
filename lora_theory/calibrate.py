"""The coverage study of ``fit_exponent``'s intervals: ``lora-theory calibrate`` (resumable).

For each case (setting, init, c, statistic, step) one large sweep of many seeds is run once (cached). Its
**reference** is the pooled least-squares slope over every seed: the slope of E[log stat] against log n at
those widths, which is what an interval from a few seeds is meant to cover (not the n → ∞ exponent:
that is the finite-width bias, estimated separately by ``fit_exponent(correction=True)``). The seeds are
then cut into disjoint groups of k = 2, 3 and 6; each group gets an interval from each method, and the
coverage is the fraction of groups whose interval contains the reference, with a Wilson 95% interval for
that fraction. The corrected exponent's interval (methods ``seed+corrected``, ``width+corrected``) is checked
the same way against the pooled corrected exponent of all seeds.

Results: ``<out>/coverage.csv`` (one row per case × k × method), ``<out>/groups.csv.gz`` (every group's
interval) and ``<out>/calibration.png``; ``results/calibration`` holds the committed full run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as st

from .config import ModelConfig, TrainConfig
from .fit import METHODS, fit_exponent
from .simulate import simulate

__all__ = ["CASES", "Case", "coverage_table", "main", "run_case"]

GROUP_SIZES = (2, 3, 6)
LEVEL = 0.95


@dataclass(frozen=True)
class Case:
    """One calibration case: a statistic at one step of one (setting, init, c) sweep over ``widths``."""

    name: str
    setting: str
    init: str
    lr_exponent: float
    stat: str
    step: int
    widths: tuple[int, ...]
    n_seeds: int  # full run; quick runs use a tenth

    def sweep(self, quick: bool, cache_dir) -> pd.DataFrame:
        n_seeds = self.n_seeds // 10 if quick else self.n_seeds
        model = ModelConfig(setting=self.setting,
                            **({"n_train": 32, "n_test": 1} if self.setting == "toy" else {}))
        return simulate(widths=list(self.widths), inits=self.init, lr_exponent=self.lr_exponent, lrs=1.0,
                        seeds=list(range(100_000, 100_000 + n_seeds)), model=model,
                        train_cfg=TrainConfig(steps=self.step), cache_dir=cache_dir, progress=False)


LAYER_WIDTHS = tuple(2 ** k for k in range(7, 12))
CASES = (
    Case("A_z_a", "layer", "A", -0.5, "z_a_rms", 4, LAYER_WIDTHS, 2400),
    Case("A_b_shift", "layer", "A", -0.5, "b_shift_rms", 4, LAYER_WIDTHS, 2400),
    Case("B_b_shift", "layer", "B", -1.0, "b_shift_rms", 4, LAYER_WIDTHS, 2400),
    Case("B_delta1", "layer", "B", -1.0, "delta1_rms", 4, LAYER_WIDTHS, 2400),
    Case("toy_A_z_a", "toy", "A", -0.5, "z_a_rms", 4, (64, 128, 256, 512), 1200),
)


def run_case(case: Case, quick: bool = False, cache_dir=None) -> pd.DataFrame:
    """Every group's interval for ``case``: columns
    ``case, k, method, group, slope, lo, hi, reference, covers``."""
    df = case.sweep(quick, cache_dir)
    sel = df[df.step == case.step][["width", "seed", case.stat]]
    with_correction = len(case.widths) >= 4  # the corrected fit needs 4 widths
    pooled = fit_exponent(sel, case.stat, method="seed", correction=with_correction)
    reference, reference_corrected = pooled.slope, pooled.corrected
    seeds = np.sort(sel.seed.unique())
    rows = []
    for k in GROUP_SIZES:
        for g in range(len(seeds) // k):
            part = sel[sel.seed.isin(seeds[g * k:(g + 1) * k])]
            for method in METHODS:
                corrected = with_correction and method != "bootstrap"  # for the t-interval methods
                e = fit_exponent(part, case.stat, method=method, n_boot=400, seed=g, correction=corrected)
                rows.append({"case": case.name, "k": k, "method": method, "group": g, "slope": e.slope,
                             "lo": e.lo, "hi": e.hi, "reference": reference,
                             "covers": e.lo <= reference <= e.hi})
                if corrected:  # against the pooled corrected exponent of the same widths
                    rows.append({"case": case.name, "k": k, "method": f"{method}+corrected", "group": g,
                                 "slope": e.corrected, "lo": e.corrected_lo, "hi": e.corrected_hi,
                                 "reference": reference_corrected,
                                 "covers": e.corrected_lo <= reference_corrected <= e.corrected_hi})
    return pd.DataFrame(rows)


def coverage_table(groups: pd.DataFrame) -> pd.DataFrame:
    """Coverage per (case, k, method) with a Wilson 95% interval and the median interval width."""
    rows = []
    for (case, k, method), g in groups.groupby(["case", "k", "method"], sort=False):
        n, hits = len(g), int(g.covers.sum())
        lo, hi = _wilson(hits, n)
        rows.append({"case": case, "k": k, "method": method, "groups": n, "coverage": hits / n,
                     "coverage_lo": lo, "coverage_hi": hi, "median_width": float((g.hi - g.lo).median()),
                     "reference": float(g.reference.iloc[0])})
    return pd.DataFrame(rows)


def main(out="results/calibration", quick: bool = False, cache_dir=".lora_theory_cache",
         cases=None) -> pd.DataFrame:
    """Run (or resume) every case, write ``coverage.csv``, ``groups.csv.gz``, ``cases.json``
    and the figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [c for c in CASES if cases is None or c.name in cases]
    groups = pd.concat([run_case(c, quick, cache_dir) for c in chosen], ignore_index=True)
    table = coverage_table(groups)
    groups.to_csv(out / "groups.csv.gz", index=False)
    table.to_csv(out / "coverage.csv", index=False)
    (out / "cases.json").write_text(json.dumps({"quick": quick, "level": LEVEL, "group_sizes": GROUP_SIZES,
                                                "cases": [asdict(c) for c in chosen]}, indent=1))
    figure(table).savefig(out / "calibration.png", dpi=130)
    return table


def figure(table: pd.DataFrame) -> Figure:
    """Coverage (with Wilson intervals) per case, one panel per method, against the nominal 95%."""
    methods = list(dict.fromkeys(table.method))
    fig = Figure(figsize=(4 * len(methods), 3.4))
    for ax, method in zip(fig.subplots(1, len(methods), sharey=True, squeeze=False)[0], methods):
        t = table[table.method == method]
        for j, (case, g) in enumerate(t.groupby("case", sort=False)):
            x = np.arange(len(g)) + 0.12 * (j - 2)
            # round-off at 0 and 1
            err = np.clip([g.coverage - g.coverage_lo, g.coverage_hi - g.coverage], 0, None)
            ax.errorbar(x, g.coverage, yerr=err, fmt="o", ms=3,
                        capsize=2, label=case)
        ax.axhspan(0.92, 0.98, color="0.85", zorder=0)
        ax.axhline(LEVEL, color="k", lw=0.8)
        ax.set(xticks=range(len(GROUP_SIZES)), xticklabels=[f"k={k}" for k in GROUP_SIZES], title=method,
               xlabel="seeds per group", ylim=(0.4, 1.0))
    fig.axes[0].set_ylabel("coverage of the large-seed slope")
    fig.axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _wilson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    z = st.norm.ppf((1 + level) / 2)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)
