"""The committed numbers of ``results/limit/``: ``python -m lora_theory.limit.report [--quick] [--out DIR]``.

Writes ``convergence.csv`` (each supported case: errors of finite widths against the coupled limit, and the
fitted rate), ``reference.json`` (the issue's case to n = 2^20), ``init_b_step2.json`` (question (i)),
``slope_bias.json`` (question (ii)) and ``loss_constant.csv`` / ``loss_constant.json`` (question (iii));
docs/theory.md §12.6 and results/limit/README.md quote them.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import TrainConfig
from ..fit import fit_exponent
from ..simulate import simulate
from .convergence import convergence_errors, convergence_rate, loss_scan
from .run import rescale

__all__ = ["CASES", "main"]

CASES = [  # init, c, C, optimiser, N, LoRA+ exponent of η_B/η_A, rank
    ("A", -0.5, 0.5, "adam", 1, 0.0, 4), ("A", -0.5, 0.5, "signsgd", 1, 0.0, 4),
    ("A", -0.5, 0.5, "adam", 4, 0.0, 4), ("A", -0.5, 0.5, "adam", 1, 0.0, 1),
    ("B", -1.0, 1.0, "adam", 1, 0.0, 4), ("B", -1.0, 1.0, "signsgd", 4, 0.0, 4),
    ("AB", -0.5, 0.5, "adam", 1, 0.0, 4), ("A", -0.75, 1.0, "adam", 1, 0.0, 4),
    ("B", -1.5, 1.0, "adam", 1, 0.0, 4), ("A", -1.0, 0.25, "sgd", 1, 0.0, 4),
    ("B", -2.0, 1.0, "sgd", 1, 0.0, 4), ("AB", -1.0, 1.0, "sgd", 1, 0.0, 4),
    ("A", -1.0, 1.0, "adam", 1, 1.0, 4), ("B", -1.0, 1.0, "adam", 1, 1.0, 4),
    ("peft_true", -0.5, 0.5, "adam", 1, 0.0, 4), ("peft_gaussian", -0.5, 0.5, "adam", 1, 0.0, 4),
    ("peft_false", -1.0, 1.0, "adam", 1, 0.0, 4),
]
STATS = ("z_a_rms", "z_b_rms", "loss", "delta2_rms", "b_shift_rms")


def main(out: str | Path = "results/limit", quick: bool = False, cache_dir=None) -> dict:
    """Run every experiment of ``results/limit`` (quick: small widths, two cases) and write the files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"convergence": _cases, "reference": _reference, "init_b_step2": _init_b_step2,
             "slope_bias": _slope_bias, "loss_constant": _loss_constant}
    return {name: fn(out, quick, cache_dir) for name, fn in parts.items()}


def _cases(out: Path, quick: bool, cache_dir) -> list[dict]:
    widths = [2 ** k for k in ((6, 8, 10) if quick else (8, 10, 12, 14, 16))]
    rows = []
    for case in CASES[:2] if quick else CASES:
        init, c, C, opt, N, rho, rank = case
        e = convergence_errors(init, c, C, opt, widths, seeds=range(2 if quick else 8), steps=6,
                               window=(2, 6), stats=STATS, rank=rank, n_train=N,
                               train_cfg=TrainConfig(lr_ratio_exponent=rho), cache_dir=cache_dir)
        r = convergence_rate(e, min_width=widths[-3])
        rows.append({"init": init, "c": c, "C": C, "optimizer": opt, "n_train": N, "rank": rank,
                     "lr_ratio_exponent": rho, **{f"err_{w}": r["max_error_any_seed"][w] for w in widths},
                     "rate": r["rate"], "rate_lo": r["rate_lo"], "rate_hi": r["rate_hi"],
                     "rate_widths": f"{widths[-3]}..{widths[-1]}"})
    pd.DataFrame(rows).to_csv(out / "convergence.csv", index=False)
    return rows


def _reference(out: Path, quick: bool, cache_dir) -> dict:
    """Init[A], c = −1/2, C = 1/2, r = 4, N = 1, steps 2–6, Adam and SignSGD: errors to n = 2^20."""
    widths = [2 ** k for k in ((6, 8, 10) if quick else (8, 10, 12, 14, 16, 18, 20))]
    result = {}
    for opt in ("adam", "signsgd"):
        e = convergence_errors("A", -0.5, 0.5, opt, widths, seeds=range(4), steps=6, window=(2, 6),
                               cache_dir=cache_dir)
        rates = {f"{widths[i]}..{widths[-1]}": convergence_rate(e, min_width=widths[i])["rate"]
                 for i in range(len(widths) - 1)}
        full = convergence_rate(e, min_width=widths[-4] if len(widths) >= 4 else widths[0])
        result[opt] = {"max_error_of_mean": full["max_error_of_mean"],
                       "max_error_any_seed": full["max_error_any_seed"],
                       "rate": full["rate"], "rate_ci95": [full["rate_lo"], full["rate_hi"]],
                       "rate_widths": full["fit_widths"], "rate_from_width": rates}
    (out / "reference.json").write_text(json.dumps(result, indent=1))
    return result


def _init_b_step2(out: Path, quick: bool, cache_dir) -> dict:
    """Question (i): Init[B], c = −1, C = 1, Adam: the step-2 Z_B, its limit, finite-width slope and rate."""
    widths = [2 ** k for k in ((6, 8, 10) if quick else (7, 8, 9, 10, 11, 12, 14, 16, 18))]
    e = convergence_errors("B", -1.0, 1.0, "adam", widths, seeds=range(6), steps=4, window=(2, 2),
                           stats=("z_b_rms", "delta1_rms", "z_a_rms"), cache_dir=cache_dir)
    cfg = TrainConfig()
    closed = (1 - math.sqrt(1 + cfg.beta2) / (1 + cfg.beta1)) * math.sqrt(2 / math.pi)
    fin = e[np.isfinite(e.width) & (e.stat == "z_b_rms")].rename(columns={"value": "z_b_rms_scaled"})
    slopes = {}
    for lo, hi in ((widths[0], min(widths[-1], 4096)), (widths[-3], widths[-1])):
        sel = fin[(fin.width >= lo) & (fin.width <= hi)].assign(z_b_rms=lambda d: d.z_b_rms_scaled)
        slopes[f"{lo}..{hi}"] = str(fit_exponent(sel, "z_b_rms"))
    rate = convergence_rate(e[e.stat == "z_b_rms"], min_width=widths[-4] if not quick else widths[0])
    limit = float(e[np.isinf(e.width) & (e.stat == "z_b_rms")].value.mean())
    result = {"limit_z_b_rms_step2": round(limit, 4),
              "closed_form": round(closed, 4), "mean_by_width": {int(w): round(float(v), 4) for w, v in
                                                                 fin.groupby("width").z_b_rms_scaled.mean().items()},
              "slope_of_z_b_rms_step2": slopes, "error_rate": rate["rate"],
              "error_rate_ci95": [rate["rate_lo"], rate["rate_hi"]], "error_rate_widths": rate["fit_widths"],
              "max_error_any_seed": rate["max_error_any_seed"]}
    (out / "init_b_step2.json").write_text(json.dumps(result, indent=1))
    return result


def _slope_bias(out: Path, quick: bool, cache_dir) -> dict:
    """Question (ii): Init[A], c = −1/2 (C = 1), Adam, z_a_rms at step 4: fitted slopes over width windows."""
    widths = [2 ** k for k in (range(6, 11) if quick else range(7, 21))]
    df = rescale(simulate(widths=widths + [math.inf], inits="A", lr_exponent=-0.5, seeds=range(6), steps=4,
                          progress=False, cache_dir=cache_dir))
    step4 = df[df.step == 4]
    fin, lim = step4[np.isfinite(step4.width)], float(step4[np.isinf(step4.width)].z_a_rms_scaled.mean())
    windows = [(widths[i], widths[i + 4]) for i in range(0, len(widths) - 4, 3 if not quick else 1)]
    fits = {}
    for lo, hi in windows:
        f = fit_exponent(fin[(fin.width >= lo) & (fin.width <= hi)], "z_a_rms", correction=True)
        fits[f"{lo}..{hi}"] = {"slope": str(f), "bias": round(f.slope - 0.5, 3)}
    ratio = fin.groupby("width").z_a_rms_scaled.mean() / lim
    result = {"limit_z_a_rms_scaled_step4": round(lim, 4), "theory_slope": 0.5, "fits": fits,
              "scaled_over_limit": {int(w): round(float(v), 4) for w, v in ratio.items()}}
    (out / "slope_bias.json").write_text(json.dumps(result, indent=1))
    return result


def _loss_constant(out: Path, quick: bool, cache_dir) -> dict:
    """Question (iii): L∞(C) at c = c* (Adam, steps 5 and 10) per init; C* and the finite-width optima."""
    consts = [2.0 ** (k / 4) for k in range(-32 if not quick else -8, 9, 1 if not quick else 4)]
    cases = [("A", -0.5), ("B", -1.0), ("AB", -0.5), ("peft_false", -1.0)]
    steps = (5, 10) if not quick else (2,)
    scan = pd.concat([loss_scan(i, c, consts, t, seeds=range(8 if not quick else 2))
                      .assign(init=i, c=c, step=t) for i, c in cases for t in steps])
    scan.to_csv(out / "loss_constant.csv", index=False)
    best = {f"{i}@step{t}": _argmin(g) for (i, t), g in scan.groupby(["init", "step"])}
    widths = [2 ** k for k in ((6, 8) if quick else (8, 10, 12, 14))]
    finite = {}
    for init, c in cases[:2]:
        df = simulate(widths=widths, inits=init, lr_exponent=c, lrs=consts, seeds=range(4), steps=steps[-1],
                      progress=False, cache_dir=cache_dir)
        last = df[df.step == steps[-1]]
        d = (last.loss / last.width).groupby([last.width, last.lr_const]).mean().rename("loss")
        finite[init] = {int(w): _argmin(g.reset_index()) for w, g in d.groupby("width")}
    result = {"limit": best, "finite_widths": finite, "step": steps[-1]}
    (out / "loss_constant.json").write_text(json.dumps(result, indent=1))
    return result


def _argmin(g: pd.DataFrame) -> dict:
    """C* (grid argmin of the loss), L(C*), and whether the minimum is interior to the grid."""
    g = g.sort_values("lr_const").reset_index(drop=True)
    k = int(g.loss.idxmin())
    return {"C_star": round(float(g.lr_const[k]), 4), "loss": round(float(g.loss[k]), 4),
            "interior": bool(0 < k < len(g) - 1), "loss_at_smallest_C": round(float(g.loss.iloc[0]), 4)}


if __name__ == "__main__":  # pragma: no cover
    quick = "--quick" in sys.argv
    target = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "results/limit"
    print(json.dumps(main(target, quick=quick, cache_dir=".lora_theory_cache"), indent=1, default=str))
