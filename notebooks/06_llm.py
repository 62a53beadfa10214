# %% [markdown]
# # A real pretrained model: Init[A] vs Init[B] on MiniLM
#
# Claim (paper §5): on real models Init[A] performs better and tolerates larger learning rates than Init[B].
# Here: all-MiniLM-L6-v2 (width 384) with LoRA r = 8 on query and value, finetuned on labelled tweets,
# offline on the CPU. The full run reads the committed sweep in `results/llm/` (run from the repository root);
# `quick = True` trains two learning rates for 20 steps. Needs the `llm` extra.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
from lora_theory.figures import fig_llm_lr_sweep

fig, summary = fig_llm_lr_sweep(quick=quick)
fig

# %%
summary["best"]
