"""Onset widths of the validation matrix's slow cells (docs/theory.md §9.5). One thread, a few minutes.

    OMP_NUM_THREADS=1 python docs/scripts/onset_width.py

1. Init[A], Adam, c = -3/4, r = 4, one sample: the multiplier s = α/r = 4 against s = 1 (the table at width n
   with s = 4 against the table at n/16 with s = 1), and the s = 4 slopes over the widest widths.
2. LoRA+ Init[A] at (c_A, c_B) = (-1, -1/4), C = 1: the rescaled Z_B, Z_A at step 4 against their n → ∞ limit.
3. peft_orthogonal, Adam, c = -1: δ³ rescaled by n^{2c+1} per (seed, width) and step.
4. Init[AB], SGD, c = -9/8 (c*_4 - 1/4) at C = 1 and 1/4: per-step slopes, n = 2^7..2^13.
"""

import warnings

import numpy as np

from lora_theory import simulate
from lora_theory.config import ModelConfig, TrainConfig
from lora_theory.fit import FitWarning, fit_exponent
from lora_theory.limit.convergence import convergence_errors

warnings.simplefilter("ignore", FitWarning)
SEEDS, T = list(range(6)), 4


def multiplier():
    widths = [2 ** k for k in range(7, 17)]
    tables = {}
    for s in (1, 4):
        df = simulate(widths=widths, inits="A", lr_exponent=-0.75, optimizers="adam", ranks=4, seeds=SEEDS,
                      model=ModelConfig(alpha=4.0 * s, n_train=1), steps=T, progress=False)
        tables[s] = df[df.step == T]
    med = {s: t.groupby("width").z_b_rms.median() for s, t in tables.items()}
    print("median RMS(Z_B) at step 4; s = 4 at width n | s = 1 at width n/16")
    for n in widths[4:]:
        print(f"  n = 2^{int(np.log2(n))}: {med[4][n]:.3f} | {med[1][n // 16]:.3f}")
    wide = tables[4][tables[4].width >= 2 ** 13]
    for stat in ("z_b_rms", "dz_b_rms", "delta1_rms"):
        print(f"  s = 4, slope of {stat} over 2^13..2^16: {fit_exponent(wide, stat, method='width')}")


def lora_plus():
    widths = [2 ** k for k in range(8, 17, 2)]
    e = convergence_errors("A", -1.0, 1.0, "adam", widths, (0, 1, 2, 3), T, (T, T), ("z_a_rms", "z_b_rms"),
                           train_cfg=TrainConfig(steps=T, lr_ratio_exponent=0.75), coupled=False)
    for stat in ("z_b_rms", "z_a_rms"):
        sel = e[e.stat == stat]
        means = sel[np.isfinite(sel.width)].groupby("width").value.mean()
        print(f"rescaled {stat} at step 4, seed means: "
              + ", ".join(f"2^{int(np.log2(n))}: {v:.2f}" for n, v in means.items())
              + f"; limit {sel.limit.iloc[0]:.2f}")


def orthogonal_adam():
    c = -1.0
    df = simulate(widths=[2 ** k for k in range(7, 12)], inits="peft_orthogonal", lr_exponent=c,
                  optimizers="adam", seeds=list(range(12)), model=ModelConfig(n_train=1), steps=T,
                  progress=False)
    df = df.assign(scaled=df.delta3_rms / df.width ** (2 * c + 1))
    one = df[df.step == 1]
    zero = one.scaled < 1e-3  # the sign sum of two orthogonal r-vectors vanishes: only Adam's ε is left
    print(f"peft_orthogonal, Adam, c = -1, 12 seeds: δ³/n^(2c+1) at step 1 is below 1e-3 in "
          f"{int(zero.sum())} of {len(one)} runs; the others: "
          f"{one.scaled[~zero].min():.2f}..{one.scaled.max():.2f}")
    for step in range(1, T + 1):
        med = df[df.step == step].groupby("width").scaled.median()
        print(f"  step {step}, median δ³/n^(2c+1): " + ", ".join(f"{v:.3f}" for v in med))
    for step in range(2, T + 1):
        e = fit_exponent(df[df.step == step], "delta3_rms", method="width")
        print(f"  step {step}, slope of δ³: {e}")


def ab_sgd():
    stats = ("z_a_rms", "z_b_rms", "delta1_rms", "delta2_rms", "delta3_rms")
    for C in (1.0, 0.25):
        df = simulate(widths=[2 ** k for k in range(7, 14)], inits="AB", lr_exponent=-1.125, lrs=C,
                      optimizers="sgd", seeds=SEEDS, model=ModelConfig(n_train=1), steps=T, progress=False)
        for step in range(1, T + 1):
            d = df[df.step == step]
            print(f"AB, SGD, c = -9/8, C = {C}, step {step}: "
                  + " ".join(f"{s}: {fit_exponent(d, s, method='width').slope:+.3f}" for s in stats))


if __name__ == "__main__":
    multiplier()
    lora_plus()
    orthogonal_adam()
    ab_sgd()
