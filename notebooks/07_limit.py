# %% [markdown]
# # The infinite-width limit of LoRA training
#
# Claim: the n → ∞ dynamics of the `layer` setting can be computed directly (a mean-field recursion,
# docs/theory.md §12), and finite widths converge to it: the rescaled statistics stat · n^−γ (γ from the
# γ-calculus) approach their limits at a rate close to n^−1/2 once the width is large enough.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
import math

import lora_theory as lt
from lora_theory.limit import fig_limit_convergence, loss_scan

# %% [markdown]
# `math.inf` is a width like any other: the limit comes back in the same table, with `<stat>_scaled` columns.

# %%
widths = [2 ** 8, 2 ** 12, math.inf] if quick else [2 ** 8, 2 ** 12, 2 ** 16, math.inf]
df = lt.simulate(widths=widths, inits="B", lr_exponent=-1.0, seeds=[0, 1], steps=4, progress=False)
df[df.step == 2].groupby("width")[["z_a_rms_scaled", "z_b_rms_scaled", "loss_scaled"]].mean()

# %% [markdown]
# Init[A] at c = −1/2 (C = 1/2, Adam, r = 4, one sample): rescaled Z_A, Z_B and loss per step for each
# width and for n = ∞, and the largest error against the width.

# %%
fig, summary = fig_limit_convergence(quick=quick)
fig

# %%
summary

# %% [markdown]
# The limit loss L∞(C) = lim loss/n at step 5 as a function of C in η = C·n^c*: Init[A] has an interior
# minimum; Init[B] at c* = −1 never goes below the pretrained loss (docs/theory.md §12.6).

# %%
consts = [2.0 ** (k / 2) for k in range(-8, 4)]
scan = {init: loss_scan(init, c, consts, step=5, seeds=[0, 1]).set_index("lr_const").loss
        for init, c in (("A", -0.5), ("B", -1.0))}
scan
