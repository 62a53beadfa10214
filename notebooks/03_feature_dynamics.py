# %% [markdown]
# # Feature norms during training (the paper's Fig. 3)
#
# Claim: at each init's optimal learning rate, ‖Z_A‖ is far larger with Init[A] than with Init[B],
# increasingly so at large width (internal instability), yet Init[A] reaches the lower training loss.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
from lora_theory.figures import fig_feature_norms, fig_feature_norms_appendix

fig, summary = fig_feature_norms(quick=quick)
fig

# %%
summary

# %% [markdown]
# Every width of the sweep (the appendix version):

# %%
fig_feature_norms_appendix(quick=quick)[0]
