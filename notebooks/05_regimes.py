# %% [markdown]
# # Regimes: theory cells and measured markers
#
# Claim: each (init, c) falls in one regime: unstable, stable without feature learning, feature
# learning, or efficient feature learning (both A and B contribute), with or without internal
# instability. The cells come from the γ-calculus; the markers are read off width exponents of
# simulated runs. The heatmap shows the final toy loss over (η, n) for both inits.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
from lora_theory.figures import fig_loss_heatmap, fig_regimes

fig, summary = fig_regimes(quick=quick)
fig

# %%
summary

# %%
fig_loss_heatmap(quick=quick)[0]
