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
import json
from pathlib import Path

from lora_theory import llm
from lora_theory.experiments import DEFAULT_CACHE, LLM_RUNS
from lora_theory.figures import fig_llm_lr_sweep, fig_llm_width

fig, summary = fig_llm_lr_sweep(quick=quick)
fig

# %% [markdown]
# Read per seed (docs/theory.md §10.2): each seed's optimum of test loss (a parabola in log η through the
# best grid point and its neighbours), and Init[A] (A ~ N(0, 1/n)) minus Init[B] at each one's best η, paired
# by seed, with a bootstrap interval and the smallest difference this design could detect (`mde`).

# %%
df = llm.llm_sweep(quick=quick, out_dir=DEFAULT_CACHE / "llm" if quick else LLM_RUNS)
llm.seed_optima(df, "test_loss")

# %%
llm.paired_difference(df, "A", "B", "test_accuracy", n_eval=200 if quick else 1000)

# %% [markdown]
# The powered headline sweep (`results/llm/headline/`, 108 committed runs; `python -m lora_theory.llm --preset
# headline` reruns or resumes it): PEFT's own Init[A] (`peft_true`) against Init[B], η in 2× steps up to 6.4e-2,
# 3 seeds plus 2 at each init's three best η, all 2,000 near-duplicate-free test tweets, the head at a fixed η.
# Read from the committed records in both modes. Per seed, the test-loss optimum of Init[A] over Init[B] (with a
# t-interval over seeds), the largest η at which no seed collapses to the majority class, and the paired accuracy
# difference at each init's best η.

# %%
headline = Path(llm.__file__).resolve().parents[2] / "results" / "llm" / "headline"
verdict = json.loads((headline / "verdict.json").read_text())
head = llm.combine_runs(headline / "runs")
llm.optimum_ratio(head, "peft_true", "B", "test_loss")

# %%
llm.largest_stable_lr(head, verdict["chance"])

# %%
verdict["peft_true-B_test_accuracy"]

# %% [markdown]
# Width inside one model (docs/theory.md §10.1): with LoRA on every linear layer, the first Adam step moves
# A·x by a per-unit-η amount ∝ the module's input width under Init[B] (×4 from the attention projections,
# 384 inputs, to `output.dense`, 1536), while under Init[A] the first change of B·A·x does not depend on it.

# %%
fig, summary = fig_llm_width(quick=quick)
fig

# %%
summary
