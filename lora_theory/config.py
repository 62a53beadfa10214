"""Small, typed, immutable configuration for the LoRA width-scaling engine.

Two frozen dataclasses hold everything that is *not* swept:

* :class:`ModelConfig`: which setting (``"layer"``: the single LoRA layer of the theorems,
  docs/theory.md §1.2, §1.4; ``"toy"``: the teacher-student MLP of docs/theory.md §1.3), the LoRA multiplier
  (α/r or α/√r), data sizes and the readout scaling of the toy.
* :class:`TrainConfig`: steps, Adam's β1/β2/ε (ε may carry a width exponent), the LoRA+
  learning-rate ratio η_B/η_A (optionally a width exponent), recording and divergence policy.

What *is* swept (widths, learning rates, inits, seeds, optimisers, ranks) is passed to
:func:`lora_theory.simulate` as scalars or lists.

Glossary: n width, r rank, η learning rate, c = γ[η] its width exponent, α LoRA alpha.
Every field carries ``metadata["help"]``; the command line is generated from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

import numpy as np

from .checks import check_finite, check_int, check_positive, is_real

SettingName = Literal["layer", "toy"]
Scaling = Literal["lora", "rslora"]
Readout = Literal["sp", "mup"]
DType = Literal["float64", "float32"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The model a sweep trains (everything but the swept width and rank).

    Example:
        >>> ModelConfig(setting="toy", readout="mup").n_train
        256
        >>> ModelConfig(setting="layer").n_train
        1
    """

    setting: SettingName = field(default="layer", metadata={"help": "layer: one LoRA layer Z̄ = W*Z + s·BAZ, "
                             "loss ½‖Z̄−y‖² (the theorems); toy: teacher-student ReLU MLP, LoRA on W_h"})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha; default: alpha = r under 'lora' "
                                "scaling and √r under 'rslora', i.e. multiplier s = 1"})
    scaling: Scaling = field(default="lora", metadata={"help": "multiplier s = alpha/r ('lora') or "
                             "alpha/sqrt(r) ('rslora')"})
    n_train: int | None = field(default=None, metadata={"help": "training samples (default 1 for layer, "
                                "256 for toy)"})
    n_test: int = field(default=256, metadata={"help": "test samples (toy only)"})
    d_in: int = field(default=5, metadata={"help": "input dimension d of the toy"})
    teacher_width: int = field(default=1000, metadata={"help": "width of the toy's teacher"})
    teacher_rank: int = field(default=20, metadata={"help": "LoRA rank of the toy's teacher"})
    readout: Readout = field(default="sp", metadata={"help": "toy readout W_out variance: sp = 1/n, "
                             "mup = 1/n^2"})

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.n_train is None:
            object.__setattr__(self, "n_train", 1 if self.setting == "layer" else 256)
        for name in ("n_train", "n_test", "d_in", "teacher_width", "teacher_rank"):
            check_int(name, getattr(self, name), low=1)
        if self.teacher_rank > self.teacher_width:
            raise ValueError(f"teacher_rank must be <= teacher_width, got {self.teacher_rank} > "
                             f"{self.teacher_width}")
        if self.alpha is not None:
            check_positive("alpha", self.alpha)

    def multiplier(self, r: int) -> float:
        """The LoRA multiplier s in W = W* + s·B·A for rank ``r``.

        >>> ModelConfig(alpha=16.0).multiplier(8), ModelConfig(scaling="rslora", alpha=8.0).multiplier(4)
        (2.0, 4.0)
        """
        denom = r if self.scaling == "lora" else math.sqrt(r)
        return 1.0 if self.alpha is None else self.alpha / denom


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How each configuration is trained (full-batch; one update per step).

    The learning rate of A is the swept η; that of B is
    ``η_B = η · lr_ratio · n**lr_ratio_exponent`` (LoRA+ when the ratio > 1).
    Adam's ε is ``eps · n**eps_exponent``.

    Example:
        >>> TrainConfig(steps=5).steps
        5
    """

    steps: int = field(default=10, metadata={"help": "number of optimiser updates"})
    beta1: float = field(default=0.9, metadata={"help": "Adam β1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam β2"})
    eps: float = field(default=1e-8, metadata={"help": "Adam ε constant (ε = eps·n^eps_exponent)"})
    eps_exponent: float = field(default=0.0, metadata={"help": "width exponent of Adam's ε"})
    lr_ratio: float = field(default=1.0, metadata={"help": "LoRA+ ratio η_B/η_A constant"})
    lr_ratio_exponent: float = field(default=0.0, metadata={"help": "width exponent of η_B/η_A "
                                     "(LoRA+ theory: 1)"})
    record_every: int = field(default=1, metadata={"help": "record statistics every k steps "
                              "(step 0 and the last step are always recorded)"})
    diverge_threshold: float = field(default=1e6, metadata={"help": "τ: a run is diverged at the first "
                                     "step where its loss or z_b_rms is non-finite, z_b_rms > τ, or the loss "
                                     "exceeds τ both absolutely and relative to its initial value"})
    dtype: DType = field(default="float64", metadata={"help": "floating point type of the engine"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda"})

    def __post_init__(self) -> None:
        _check_literals(self)
        check_int("steps", self.steps, low=1)
        check_int("record_every", self.record_every, low=1)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (is_real(value) and 0.0 <= value < 1.0):  # numpy floats too; never a bool
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("eps", "lr_ratio", "diverge_threshold"):
            check_positive(name, getattr(self, name))
        for name in ("eps_exponent", "lr_ratio_exponent"):
            check_finite(name, getattr(self, name))
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:k]', got {self.device!r}")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"device={self.device!r} needs a CUDA build of torch and a GPU; this torch "
                                 "has none: use device='cpu'")

    def lr_b_factor(self, n: int) -> float:
        """η_B / η_A at width n: ``lr_ratio · n**lr_ratio_exponent``.

        >>> TrainConfig(lr_ratio=2.0, lr_ratio_exponent=1.0).lr_b_factor(8)
        16.0
        """
        return self.lr_ratio * n ** self.lr_ratio_exponent

    def lr_b(self, const, exponent, n: float):
        """η_B for η_A = ``const``·n^``exponent`` (``exponent`` NaN: the absolute η_A = ``const``), as the
        single power ``const · lr_ratio · n**(exponent + lr_ratio_exponent)``, so that it is also defined at
        n = ∞ (0 or ∞, where η_A · :meth:`lr_b_factor` would be 0·∞); numpy arrays broadcast.

        >>> float(TrainConfig(lr_ratio_exponent=0.5).lr_b(2.0, -1.0, 4.0))
        1.0
        >>> float(TrainConfig().lr_b(2.0, float("nan"), 4.0))  # absolute η_A = 2
        2.0
        >>> float(TrainConfig(lr_ratio_exponent=0.75).lr_b(1.0, -1.0, float("inf")))
        0.0
        """
        exponent = np.where(np.isnan(exponent), 0.0, exponent)
        return const * self.lr_ratio * np.float64(n) ** (exponent + self.lr_ratio_exponent)


def _check_literals(cfg: object) -> None:
    """Raise ValueError naming the field when a ``Literal`` field holds another value."""
    hints = {"setting": SettingName, "scaling": Scaling, "readout": Readout, "dtype": DType}
    for f in fields(cfg):
        if f.name in hints:
            allowed = get_args(hints[f.name])
            value = getattr(cfg, f.name)
            if value not in allowed:
                raise ValueError(f"{f.name} must be one of {list(allowed)}, got {value!r}")
