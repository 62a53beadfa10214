"""Configuration of the LLM experiment: :class:`LlmConfig`, the sweep presets and the table schemas.

A preset (``PRESETS``) is data: the grid (``lrs``, ``seeds``, ``inits``, ``steps``, ``n_eval``), overrides of
:class:`LlmConfig` (``config``), optional arms (``arms``: label → more overrides, each arm crossed with the
grid) and an optional follow-up (``followup``: more ``seeds`` at each (arm, init)'s ``top`` best η by
seed-mean test loss, chosen from the finished grid). ``out`` is the default output folder of
``python -m lora_theory.llm --preset NAME``. Costs are measured in results/llm/README.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..checks import check_int, check_positive, is_real, lookup
from .data import DATASETS
from .weights import MODELS

LLM_COLUMNS = ("setting", "dataset", "init", "optimizer", "width", "rank", "lr", "seed", "step", "loss",
               "test_loss", "test_accuracy", "z_a_rms", "z_b_rms", "diverged", "wall_s")
MODULE_COLUMNS = ("init", "lr", "seed", "module", "step", "z_a_rms", "z_b_rms")
EXAMPLE_COLUMNS = ("example", "label", "correct", "loss")  # per held-out example of a run
GRID_2X = tuple(round(1.25e-4 * 2 ** k, 10) for k in range(10))  # 1.25e-4, 2.5e-4, …, 6.4e-2 (2× steps)
FFN_DOWN = tuple(f"layer.{i}.output.dense" for i in range(6))  # MiniLM's down-projections (input 1536)
HEAD_LR = 2e-3  # the head's fixed η in the new presets: near both inits' optimum in the committed sweep
_NEW = {"dataset": "tweets_nd", "head_lr": HEAD_LR}  # every new preset: near duplicates out, head fixed
PRESETS = {  # grids of llm_sweep; "full" is the committed results/llm sweep
    "full": {"lrs": tuple(float(f"{x:.1e}") for x in np.logspace(-4, -2, 8)), "seeds": (0, 1), "steps": 200,
             "n_eval": 1000, "out": "results/llm"},
    "quick": {"lrs": (1e-3, 3e-3), "seeds": (0,), "steps": 20, "n_eval": 200, "out": "results/llm/quick"},
    # paper §5 at width 384, powered: PEFT's Init[A] vs Init[B] (+ the N(0, 1/n) arm), every held-out tweet
    "headline": {"lrs": GRID_2X, "seeds": (0, 1, 2), "inits": ("peft_true", "B", "A"), "steps": 300,
                 "n_eval": 2000, "config": _NEW, "followup": {"top": 3, "seeds": (3, 4)},
                 "out": "results/llm/headline"},
    # width inside the model, trained: LoRA on one module type, input width 384 vs 1536 (output 384 both)
    "width": {"lrs": GRID_2X, "seeds": (0, 1), "inits": ("peft_true", "B"), "steps": 300, "n_eval": 2000,
              "config": _NEW, "arms": {"attention.output.dense": {"targets": ("attention.output.dense",)},
                                       "output.dense": {"targets": FFN_DOWN}},
              "out": "results/llm/width_trained"},
    # a second width: all-mpnet-base-v2 (n = 768, 12 layers), LoRA on q and v; a reduced grid (≈ 17× the cost)
    "mpnet": {"lrs": GRID_2X[2:8], "seeds": (0, 1), "inits": ("peft_true", "B"), "steps": 300,
              "n_eval": 2000, "config": {**_NEW, "model": "mpnet", "targets": ("q", "v")},
              "out": "results/llm/mpnet"},
}
IDENTITY_DEFAULTS = {"head_lr": None, "model": "minilm"}  # fields added after the committed runs: left out
# of a run's identity (LlmRun.description) at these values, so the committed runs keep their keys
SCHEDULES = {"linear": lambda t, T: 1.0 - t / T, "constant": lambda t, T: 1.0}
MAX_LEN = 512  # MiniLM's and MPNet's usable positions: a longer input has no position embedding
LINEAR_NAMES = {"minilm": ("query", "key", "value", "dense"),  # the nn.Linear layers of each encoder
                "mpnet": ("q", "k", "v", "o", "dense")}         # (last name component; LoRA targets)


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """Everything about one LLM run except the swept init, learning rate and seed.

    >>> c = LlmConfig(); c.alpha / c.rank
    1.0
    """

    dataset: str = field(default="tweets", metadata={"help": "key of DATASETS"})
    rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=8.0, metadata={"help": "LoRA alpha; multiplier s = alpha/r"})
    targets: tuple[str, ...] | str = field(default=("query", "value"),
                                           metadata={"help": "PEFT target_modules, or 'all-linear'"})
    steps: int = field(default=200, metadata={"help": "optimiser updates"})
    batch_size: int = field(default=16, metadata={"help": "training batch size"})
    max_len: int = field(default=64, metadata={"help": "truncation length in tokens (dynamic padding)"})
    n_eval: int = field(default=1000, metadata={"help": "held-out examples evaluated at the end"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    schedule: Literal["linear", "constant"] = field(default="linear", metadata={"help": "LR schedule"})
    record_every: int = field(default=10, metadata={"help": "record loss and Z statistics every k steps"})
    threads: int = field(default=1, metadata={"help": "torch.set_num_threads during a run (not part of "
                                                      "a run's identity: it does not change the numbers)"})
    head_lr: float | None = field(default=None, metadata={"help": "fixed learning rate of the classifier "
                                                                  "head (None: the LoRA η, as before)"})
    model: str = field(default="minilm", metadata={"help": "pretrained encoder, key of MODELS"})

    def __post_init__(self) -> None:
        lookup(DATASETS, self.dataset, "dataset")
        lookup(MODELS, self.model, "model")
        lookup(SCHEDULES, self.schedule, "schedule")
        for name in ("rank", "steps", "batch_size", "max_len", "n_eval", "record_every", "threads"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=1))
        if self.max_len > MAX_LEN:
            raise ValueError(f"max_len must be <= {MAX_LEN} (the models' position embeddings), got "
                             f"{self.max_len}")
        check_positive("alpha", self.alpha)
        if not (is_real(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.head_lr is not None:
            object.__setattr__(self, "head_lr", check_positive("head_lr", self.head_lr))
        object.__setattr__(self, "targets", check_targets(self.targets, self.model))


def check_targets(targets, model: str = "minilm") -> tuple[str, ...] | str:
    """``targets`` as PEFT's ``target_modules``: "all-linear", or a non-empty sequence of names of the
    model's linear layers (last component in ``LINEAR_NAMES[model]``, e.g. "query" or
    "attention.output.dense" for MiniLM, "q" for MPNet). PEFT matches a name as a suffix at a dot:
    "output.dense" also matches "attention.output.dense"; "layer.0.output.dense" does not.

    >>> check_targets(["query", "value"])
    ('query', 'value')
    """
    allowed = lookup(LINEAR_NAMES, model, "model")
    names = () if isinstance(targets, str) or not isinstance(targets, Iterable) else tuple(targets)
    if targets == "all-linear":
        return targets
    if not names or not all(isinstance(t, str) and t.rsplit(".", 1)[-1] in allowed for t in names):
        raise ValueError(f"targets must be 'all-linear' or a non-empty sequence of {model} linear layer "
                         f"names (ending in one of {list(allowed)}), got {targets!r}")
    return names
