"""Configuration of the LLM experiment: :class:`LlmConfig`, the sweep presets and the table schemas."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..checks import check_int, check_positive, is_real, lookup
from .data import DATASETS

LLM_COLUMNS = ("setting", "dataset", "init", "optimizer", "width", "rank", "lr", "seed", "step", "loss",
               "test_loss", "test_accuracy", "z_a_rms", "z_b_rms", "diverged", "wall_s")
MODULE_COLUMNS = ("init", "lr", "seed", "module", "step", "z_a_rms", "z_b_rms")
PRESETS = {  # grids of llm_sweep; "full" is the committed results/llm sweep
    "full": {"lrs": tuple(float(f"{x:.1e}") for x in np.logspace(-4, -2, 8)), "seeds": (0, 1), "steps": 200,
             "n_eval": 1000},
    "quick": {"lrs": (1e-3, 3e-3), "seeds": (0,), "steps": 20, "n_eval": 200},
}
SCHEDULES = {"linear": lambda t, T: 1.0 - t / T, "constant": lambda t, T: 1.0}
MAX_LEN = 512  # MiniLM's max_position_embeddings: a longer input has no position embedding
LINEAR_NAMES = ("query", "key", "value", "dense")  # the nn.Linear layers of MiniLM's encoder (LoRA targets)


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

    def __post_init__(self) -> None:
        lookup(DATASETS, self.dataset, "dataset")
        lookup(SCHEDULES, self.schedule, "schedule")
        for name in ("rank", "steps", "batch_size", "max_len", "n_eval", "record_every", "threads"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=1))
        if self.max_len > MAX_LEN:
            raise ValueError(f"max_len must be <= {MAX_LEN} (MiniLM's position embeddings), got "
                             f"{self.max_len}")
        check_positive("alpha", self.alpha)
        if not (is_real(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "targets", check_targets(self.targets))


def check_targets(targets) -> tuple[str, ...] | str:
    """``targets`` as PEFT's ``target_modules``: "all-linear", or a non-empty sequence of names of MiniLM's
    linear layers (last component in ``LINEAR_NAMES``, e.g. "query" or "attention.output.dense").

    >>> check_targets(["query", "value"])
    ('query', 'value')
    """
    names = () if isinstance(targets, str) or not isinstance(targets, Iterable) else tuple(targets)
    if targets == "all-linear":
        return targets
    if not names or not all(isinstance(t, str) and t.rsplit(".", 1)[-1] in LINEAR_NAMES for t in names):
        raise ValueError(f"targets must be 'all-linear' or a non-empty sequence of MiniLM linear layer names "
                         f"(ending in one of {list(LINEAR_NAMES)}), got {targets!r}")
    return names
