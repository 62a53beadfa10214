# %% [markdown]
# # Rank, α and learning-rate transfer
#
# Claim: with the rank growing as r = n^ρ and the multiplier s = α·r^(−γ_α), the γ-calculus gives the
# maximal stable learning rate as a power law in width, rank and α (docs/theory.md §13). It reproduces the
# μA rows (Init[A]: η ∝ n^(−1/2)·r^(−(1−γ_α)/2); Init[B] with α_eff = 1: η ∝ n^(−1)), predicts how η must
# follow r under α/r and α/√r, and turns a tuned η into a prediction at another width and rank.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import Markdown, display

from lora_theory import transfer_lr
from lora_theory.llm import explain
from lora_theory.theory import gamma_alpha, lr_law, max_stable_lr_exponent, reduce_on_box, rho
from lora_theory.transfer import fig_rank_scaling, transfer_check

corollary = reduce_on_box(max_stable_lr_exponent("A", rank_exponent=rho, scaling=gamma_alpha),
                          {rho: (0, 1), gamma_alpha: (0, 1)})
display(Markdown(f"Init[A], s = α·r^(−γ_α), r = n^ρ: c* = ${corollary}$"))
pd.DataFrame([{"init": i, "scaling": s, "maximal stable η": str(lr_law(i, s))}
              for i in ("A", "B") for s in ("lora", "rslora", "constant")])

# %%
print(transfer_lr(2e-4, dict(width=768, rank=8), dict(width=4096, rank=64), init="A", scaling="lora"))
print()
print(explain({"r": 64, "lora_alpha": 8, "init_lora_weights": True}, width=4096))

# %% [markdown]
# The layer setting at fixed width: maximal stable η (max_t RMS(Z_B) ≤ 10) against the rank, with the
# calculus's law (dashed; its constant fitted).

# %%
fig, summary = fig_rank_scaling(quick=quick)
fig

# %% [markdown]
# The toy: η tuned at one (n, r), predicted at held-out (n', r'), measured there (log2 errors; one grid step
# is 1/2).

# %%
transfer_check(quick=quick)
