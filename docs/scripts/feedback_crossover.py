"""The coherent feedback B_0ᵀB_0·ΔZ_A under sign-like updates (docs/theory.md §9.6). One thread, ≈ 5 min.

    OMP_NUM_THREADS=1 python docs/scripts/feedback_crossover.py [PART ...]

1. The crossover ratio, from its definition: for an init with B_0 ≠ 0, A's step-2 gradient is
   s·B_0ᵀ(W*Z − y) + s²·B_0ᵀB_0·ΔZ_A^1 + …, and under sign updates ΔZ_A^1 = −η·sign(S_0)·‖Z‖₁; the median
   |feedback|/|initial| per coordinate and the fraction of coordinates whose gradient sign flips.
2. Init[B], Adam, c = −5/4, r = 4: rescaled δ² and Z_A at step 4 over n = 2^9..2^21 against the n → ∞
   limit; slopes over sliding windows; the coupled error of δ² to the limit over 2^8..2^20 and its rate.
3. peft_orthogonal, Adam, c = −1: δ³ slopes at steps 2–4, split by whether the draw's step-1 sign sum
   Σ_k sign(Z_A^0)_k·sign(B_0ᵀdZ̄)_k vanishes (δ³/n^{2c+1} < 1e-3 at step 1).
4. peft_orthogonal, Adam, c = −5/4: A's accumulated shift ‖A_t − A_0‖/n^c per step and width (Adam's
   steps cancel once the feedback leads) and the slopes of ΔZ_B, δ¹, δ³ over the widest windows.
5. LoRA+ Init[B], Adam, (c_A, c_B) = (−1, −1/4): rescaled statistics at step 4 over n = 2^7..2^21 and their
   n → ∞ limit (a dip near 2^13, then a monotone approach).
6. Init[B], SGD, c*_4 = −15/8: Z_A at step 4 to 2^22 against the limit and a scalar gradient-descent model
   (the SGD form of the same feedback: loop gain ηκ = C·n^{c+2}/r).
7. peft_false, Adam, c = −5/4: Z_A at step 4 relative to Z_A^0 = A_0Z, n = 2^8..2^22 (the regime cell).
8. Init[AB], SGD, c = −9/8 (c*_4 − 1/4), C = 1: the excess Z_A^4/Z_A^0 − 1 against the A→B→A loop term
   T(T−1)·C²·n^{2c+2} (ΔB ∝ e·(A_0Z)ᵀ returns through ΔBᵀe ∝ ‖e‖²·A_0Z).
9. peft_orthogonal, SignSGD (8 samples), c = −1 and −5/4: slopes of the matrix's disagreeing statistics over
   sliding windows to 2^19.
"""

import math
import warnings

import numpy as np
import pandas as pd
import torch

from lora_theory import simulate
from lora_theory.config import ModelConfig, TrainConfig
from lora_theory.fit import FitWarning, fit_exponent
from lora_theory.inits import sample_init
from lora_theory.limit.convergence import convergence_errors, convergence_rate

warnings.simplefilter("ignore", FitWarning)
T = 4
ONE = ModelConfig(n_train=1)


def crossover_ratio():
    print("1. |s²·B_0ᵀB_0·ΔZ_A^1| / |s·B_0ᵀ(W*Z − y)| per coordinate (median over 16 draws × r), and the "
          "fraction of flipped gradient signs; C = 1, s = 1, r = 4")
    for init, c in (("B", -1.25), ("B", -1.0), ("peft_orthogonal", -1.25), ("peft_orthogonal", -1.0)):
        cells = []
        for k in range(8, 21, 2):
            n, ratios, flips = 2 ** k, [], []
            for seed in range(16):
                g = torch.Generator().manual_seed(seed)
                _, b0 = sample_init(init, n, 4, g)
                z = torch.randn(n, generator=g, dtype=torch.float64)
                e = math.sqrt(2.0) * torch.randn(n, generator=g, dtype=torch.float64)  # W*Z − y, N(0, 2)
                s0 = b0.T @ e
                dza = -(n ** c) * torch.sign(s0) * z.abs().sum()
                fb = b0.T @ (b0 @ dza)
                ratios.append((fb.abs() / s0.abs()).numpy())
                flips.append((torch.sign(s0 + fb) != torch.sign(s0)).double().numpy())
            cells.append(f"2^{k}: {np.median(np.concatenate(ratios)):.2f} ({np.mean(flips):.2f})")
        print(f"  {init}, c = {c}: " + ", ".join(cells))


def _windows(df, stat, widths, size=3, last=None):
    out = []
    starts = range(len(widths) - size + 1)
    for a in (starts if last is None else starts[-last:]):
        e = fit_exponent(df[df.width.isin(widths[a:a + size])], stat)
        out.append(f"2^{int(math.log2(widths[a]))}..2^{int(math.log2(widths[a + size - 1]))}: "
                   f"{e.slope:+.3f} [{e.lo:+.3f}, {e.hi:+.3f}]")
    return "; ".join(out)


def init_b_adam():
    c, widths = -1.25, [2 ** k for k in range(9, 22, 2)]
    df = simulate(widths=widths + [math.inf], inits="B", lr_exponent=c, optimizers="adam", seeds=range(8),
                  model=ONE, steps=T, progress=False)
    d = df[df.step == T]
    print(f"2. Init[B], Adam, c = {c}, step {T}, 8 seeds: medians of the rescaled statistics (limit last)")
    for stat in ("delta2_rms", "z_a_rms"):
        med = d.groupby("width")[stat + "_scaled"].median()
        print(f"  {stat}·n^-γ: " + ", ".join(f"{'∞' if math.isinf(n) else f'2^{int(math.log2(n))}'}: {v:.3f}"
                                                for n, v in med.items()))
        print(f"  slopes of {stat}: " + _windows(d[np.isfinite(d.width)], stat, widths))
    e = convergence_errors("B", c, 1.0, "adam", [2 ** k for k in range(8, 21, 2)], (0, 1, 2, 3), T, (T, T),
                           ("delta2_rms",), 4)
    rate = convergence_rate(e, method="width")
    print("  coupled error of δ² to the limit (seed means): "
          + ", ".join(f"2^{int(math.log2(n))}: {v:.3f}" for n, v in rate["max_error_of_mean"].items())
          + f"; rate {rate['rate']:+.3f} [{rate['rate_lo']:+.3f}, {rate['rate_hi']:+.3f}]")


def orthogonal_adam_split():
    c = -1.0
    df = simulate(widths=[2 ** k for k in range(7, 16, 2)], inits="peft_orthogonal", lr_exponent=c,
                  optimizers="adam", seeds=range(24), model=ONE, steps=T, progress=False)
    one = df[df.step == 1]
    zero = (one.delta3_rms / one.width ** (2 * c + 1) < 1e-3).rename("cancels")
    zero.index = pd.MultiIndex.from_frame(one[["width", "seed"]])
    df = df.join(zero, on=["width", "seed"])
    print(f"3. peft_orthogonal, Adam, c = {c}, 24 seeds, n = 2^7..2^15: the step-1 sign sum vanishes in "
          f"{int(zero.sum())} of {len(zero)} draws; δ³ slopes (theory 2c + 1 = {2 * c + 1:+.0f})")
    for step in range(2, T + 1):
        d = df[df.step == step]
        split = (("all", d), ("non-cancelling", d[~d.cancels]), ("cancelling", d[d.cancels]))
        parts = [f"{name} {fit_exponent(sel, 'delta3_rms', method='width')}" for name, sel in split]
        print(f"  step {step}: " + "; ".join(parts))


def orthogonal_adam_shift():
    c, widths = -1.25, [2 ** k for k in range(7, 20, 2)]
    df = simulate(widths=widths, inits="peft_orthogonal", lr_exponent=c, optimizers="adam", seeds=range(8),
                  model=ONE, steps=6, progress=False)
    df = df.assign(a_moved=df.a_shift_rms / df.width ** c)
    print(f"4. peft_orthogonal, Adam, c = {c}, 8 seeds: median RMS(A_t − A_0)/n^c (1 step of Adam = 1)")
    for step in (2, 4, 6):
        med = df[df.step == step].groupby("width").a_moved.median()
        print(f"  step {step}: " + ", ".join(f"2^{int(math.log2(n))}: {v:.2f}" for n, v in med.items()))
    d = df[df.step == T]
    for stat in ("dz_b_rms", "delta1_rms", "delta3_rms"):
        print(f"  slopes of {stat} at step {T}: " + _windows(d, stat, widths, last=2))


def lora_plus_init_b():
    widths = [2 ** k for k in range(7, 22, 2)]
    df = simulate(widths=widths + [math.inf], inits="B", lr_exponent=-1.0, optimizers="adam", seeds=range(8),
                  train_cfg=TrainConfig(steps=T, lr_ratio_exponent=0.75), model=ONE, steps=T, progress=False)
    d = df[df.step == T]
    print(f"5. LoRA+ Init[B], Adam, (c_A, c_B) = (-1, -1/4), step {T}, 8 seeds: medians of the rescaled "
          "statistics at n = 2^7, 2^9, ..., 2^21 | limit")
    for stat in ("z_a_rms", "z_b_rms", "delta1_rms", "delta2_rms"):
        med = d.groupby("width")[stat + "_scaled"].median()
        print(f"  {stat}: " + ", ".join(f"{v:.3f}" for v in med.values[:-1]) + f" | {med.values[-1]:.3f}")


def sgd_init_b_at_cstar():
    c, widths = -1.875, [2 ** k for k in range(8, 23, 2)]
    df = simulate(widths=widths + [math.inf], inits="B", lr_exponent=c, optimizers="sgd", seeds=range(4),
                  model=ONE, steps=T, progress=False)
    d = df[df.step == T]
    med = d.groupby("width").z_a_rms_scaled.mean()
    gain = np.array([n ** (c + 2) / 4 for n in widths])  # η·‖Z‖²·λ(B_0ᵀB_0) = C·n^(c+2)/r, C = 1, r = 4
    model = np.array(widths) ** -0.5 * np.abs(1 - (1 - gain) ** T)  # x_T = x*·(1 − (1 − ηκ)^T), x* ∝ n^(-1/2)
    print(f"6. Init[B], SGD, c*_4 = {c}, step {T}, 4 seeds: seed-mean Z_A·n^0 at n = 2^8, ..., 2^22 | limit")
    print("  measured: " + ", ".join(f"{v:.4f}" for v in med.values[:-1]) + f" | {med.values[-1]:.4f}")
    print("  loop gain ηκ = n^(1/8)/4: " + ", ".join(f"{g:.2f}" for g in gain))
    ratio = med.values[:-1] / model
    print("  measured / (n^(-1/2)·|1 − (1 − ηκ)^T|), scalar gradient-descent model: "
          + ", ".join(f"{v:.2f}" for v in ratio))


def peft_false_adam():
    widths = [2 ** k for k in range(8, 23, 2)]
    df = simulate(widths=widths, inits="peft_false", lr_exponent=-1.25, optimizers="adam", seeds=range(6),
                  model=ONE, steps=T, progress=False)
    z = df.pivot_table(index=["width", "seed"], columns="step", values="z_a_rms")
    ratio = (z[T] / z[0]).groupby("width").median()
    print(f"7. peft_false, Adam, c = -5/4, 6 seeds: median RMS(Z_A^{T}) / RMS(Z_A^0) at n = 2^8, ..., 2^22: "
          + ", ".join(f"{v:.2f}" for v in ratio.values))
    d = df[df.step == T]
    print("  slope of z_a_rms: " + _windows(d, "z_a_rms", widths))


def ab_sgd():
    c, widths = -1.125, [2 ** k for k in range(7, 16, 2)]
    df = simulate(widths=widths, inits="AB", lr_exponent=c, optimizers="sgd", seeds=range(6, 30), model=ONE,
                  steps=T, progress=False)
    z = df.pivot_table(index=["width", "seed"], columns="step", values="z_a_rms")
    excess = (z[T] / z[0] - 1).rename("excess").reset_index()
    pred = [T * (T - 1) * 1.0 * n ** (2 * c + 2) for n in widths]  # t(t−1)·C²·(‖e‖²/2n)(‖Z‖²/n)·n^(2c+2)
    print(f"8. AB, SGD, c = {c}, C = 1, seeds 6-29: median Z_A^{T}/Z_A^0 − 1 at n = 2^7, ..., 2^15: "
          + ", ".join(f"{v:.2f}" for v in excess.groupby("width").excess.median().values)
          + "; the A→B→A term T(T−1)·C²·n^(2c+2): " + ", ".join(f"{v:.2f}" for v in pred))
    print(f"  slope of the excess: {fit_exponent(excess[excess.excess > 0], 'excess', method='width')} "
          f"(theory 2c + 2 = {2 * c + 2:+.2f})")


def orthogonal_signsgd():
    widths = [2 ** k for k in range(7, 20, 2)]
    cases = ((-1.0, ("z_b_rms", "dz_b_rms", "delta1_rms", "delta2_rms", "delta3_rms")), (-1.25, ("z_b_rms",)))
    for c, stats in cases:
        df = simulate(widths=widths, inits="peft_orthogonal", lr_exponent=c, optimizers="signsgd",
                      seeds=range(8), model=ModelConfig(n_train=8), steps=T, progress=False)
        d = df[df.step == T]
        print(f"9. peft_orthogonal, SignSGD (8 samples, as in the matrix), c = {c}, step {T}, 8 seeds:")
        for stat in stats:
            print(f"  slopes of {stat}: " + _windows(d, stat, widths))


PARTS = (crossover_ratio, init_b_adam, orthogonal_adam_split, orthogonal_adam_shift, lora_plus_init_b,
         sgd_init_b_at_cstar, peft_false_adam, ab_sgd, orthogonal_signsgd)

if __name__ == "__main__":
    import sys

    for k in [int(a) for a in sys.argv[1:]] or range(1, len(PARTS) + 1):  # e.g. `... 3 4` runs parts 3, 4
        PARTS[k - 1]()
