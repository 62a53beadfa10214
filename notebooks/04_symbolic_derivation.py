# %% [markdown]
# # The γ-calculus, step by step
#
# Claim: the exponents follow from bookkeeping with the rules γ[xy] = γ[x] + γ[y], γ[x + y] = max, and
# +1 for an aligned sum over n. The maximal stable exponent is c* = −1/2 for Init[A] and −1 for Init[B];
# LoRA+ learning rates (c_A, c_B) = (−1, 0) are efficient and internally stable for both.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from lora_theory import theory
from lora_theory.figures import fig_coord_check

display(Markdown(theory.derivation("A")))
display(Markdown(theory.derivation("B")))

# %% [markdown]
# The maximal stable exponent for a general init (γ[A_0], γ[B_0]) and the efficient region of LoRA+:

# %%
theory.max_stable_lr_exponent_symbolic(), theory.efficient_region("A"), theory.regime("B", (-1, 0))

# %% [markdown]
# The same exponents measured: RMS against width at each step, with the theory's slope dashed.

# %%
fig_coord_check(quick=quick)[0]
