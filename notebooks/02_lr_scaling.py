# %% [markdown]
# # Learning rate against width (the paper's Fig. 2)
#
# Claim: the maximal stable learning rate scales as n^-1/2 for Init[A] and n^-1 for Init[B], so the
# optimal learning rate of Init[A] grows relative to Init[B]'s as width grows. Left: the loss-optimal η of
# the teacher-student toy. Right: the feature-level maximal stable η (largest η with max_t RMS(Z_B) ≤ τ)
# in the single-layer setting of the theorems.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
from lora_theory.figures import fig_lr_scaling

fig, summary = fig_lr_scaling(quick=quick)
fig

# %%
summary["loss_optimal_slope"], summary["max_stable_slope"]

# %% [markdown]
# Robustness of the feature-level exponent to the threshold τ:

# %%
summary["max_stable_slope_by_tau"]
