"""The sweep grid of :func:`lora_theory.simulate`, checked before anything runs.

* :class:`LearningRate`: η = C·n^c (or an absolute η) for one point of the learning-rate grid.
* :func:`validated_grid`: the sweepable arguments as lists of plain values (numpy scalars accepted, repeats
  rejected, width ``math.inf`` = the n → ∞ limit); every error names the argument.
* :func:`merge_configs`: the ``setting``/``steps`` shortcuts merged with the config dataclasses.
* :func:`check_derived_rates`: η_A, η_B and Adam's ε finite and > 0 at every width.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from .checks import as_list, check_unique, is_int, is_real, lookup
from .config import ModelConfig, TrainConfig
from .inits import INITS, get_init
from .optim import OPTIMIZERS

__all__ = ["LearningRate", "check_derived_rates", "merge_configs", "validated_grid"]


class LearningRate(NamedTuple):
    """η = ``const`` · n^``exponent`` (``exponent`` None: η = ``const`` at every width)."""

    const: float
    exponent: float | None

    def at(self, n: int) -> float:
        """η at width n."""
        return self.const if self.exponent is None else self.const * n ** self.exponent


def validated_grid(widths, lrs, lr_exponent, inits, seeds, optimizers, ranks) -> dict[str, list]:
    """The sweep grid as lists of plain Python values; ValueError naming the first bad argument."""
    grid = {"widths": as_list(widths, "widths"), "lrs": as_list(lrs, "lrs"),
            "lr_exponent": as_list(lr_exponent, "lr_exponent"), "inits": as_list(inits, "inits"),
            "seeds": as_list(seeds, "seeds"), "optimizers": as_list(optimizers, "optimizers"),
            "ranks": as_list(ranks, "ranks")}
    for name, low in (("widths", 1), ("ranks", 1), ("seeds", 0)):
        for v in grid[name]:  # width math.inf: the n → ∞ limit (lora_theory.limit)
            if not (is_int(v) and v >= low or name == "widths" and is_real(v) and v == math.inf):
                raise ValueError(f"{name} must be integers >= {low}{' or math.inf' * (name == 'widths')}, "
                                 f"got {v!r}")
        grid[name] = [v if v == math.inf else int(v) for v in grid[name]]
    if max(grid["ranks"]) > min(grid["widths"]):
        raise ValueError(f"ranks must be <= every width, got rank {max(grid['ranks'])} > width "
                         f"{min(grid['widths'])}")
    for v in grid["lrs"]:
        if not is_real(v) or not np.isfinite(v) or v <= 0:
            raise ValueError(f"lrs must be finite positive numbers, got {v!r}")
    for v in grid["lr_exponent"]:
        if v is not None and (not is_real(v) or not np.isfinite(v)):
            raise ValueError(f"lr_exponent must be finite numbers or None, got {v!r}")
    grid["lrs"] = [float(v) for v in grid["lrs"]]
    grid["lr_exponent"] = [None if v is None else float(v) for v in grid["lr_exponent"]]
    for v in grid["inits"]:
        lookup(INITS, v, "inits")
    for v in grid["optimizers"]:
        lookup(OPTIMIZERS, v, "optimizers")
    for name, values in grid.items():
        check_unique(name, values)
    if any(r % 2 for r in grid["ranks"]) and any(get_init(i).coupling == "orthogonal" for i in grid["inits"]):
        raise ValueError(f"ranks must be even with init 'peft_orthogonal', got ranks={grid['ranks']}")
    return grid


def merge_configs(setting, steps, model, train_cfg) -> tuple[ModelConfig, TrainConfig]:
    """Merge the shortcuts with the configs. ``steps`` sets ``train_cfg.steps``; ``setting`` next to a
    ``model`` of another setting is an error (switching setting would silently reset n_train)."""
    if model is not None and not isinstance(model, ModelConfig):
        raise ValueError(f"model must be a ModelConfig or None, got {type(model).__name__}")
    if train_cfg is not None and not isinstance(train_cfg, TrainConfig):
        raise ValueError(f"train_cfg must be a TrainConfig or None, got {type(train_cfg).__name__}")
    if setting is not None and model is not None and model.setting != setting:
        raise ValueError(f"setting={setting!r} conflicts with model.setting={model.setting!r}; "
                         f"pass ModelConfig(setting={setting!r}, ...) alone")
    model = model or ModelConfig(**({} if setting is None else {"setting": setting}))
    train_cfg = train_cfg or TrainConfig()
    if steps is not None:
        train_cfg = replace(train_cfg, steps=steps)
    return model, train_cfg


def check_derived_rates(lrs: list[LearningRate], widths: list[int], cfg: TrainConfig) -> None:
    """η_A, η_B and Adam's ε must be finite and > 0 at every width (C·n^c can over- or underflow); in numpy
    float64, where an overflow gives inf (Python's ``n ** c`` raises OverflowError)."""
    bad = "{} at width {}; it must be finite and > 0"
    with np.errstate(all="ignore"):
        for n in widths:
            w = np.float64(n)
            ratio = np.float64(cfg.lr_ratio) * w ** np.float64(cfg.lr_ratio_exponent)  # η_B / η_A
            for lr in lrs:
                eta = np.float64(lr.const) * (1.0 if lr.exponent is None else w ** np.float64(lr.exponent))
                if not (np.isfinite(eta) and eta > 0):
                    raise ValueError(bad.format(f"lrs/lr_exponent give η_A = C·n^c = {float(eta)!r} "
                                                f"(C={lr.const}, c={lr.exponent})", n))
                if not (np.isfinite(eta * ratio) and eta * ratio > 0):
                    raise ValueError(bad.format(f"η_B = η_A·lr_ratio·n^lr_ratio_exponent = "
                                                f"{float(eta * ratio)!r} (η_A={float(eta)!r}, TrainConfig "
                                                f"lr_ratio={cfg.lr_ratio}, "
                                                f"lr_ratio_exponent={cfg.lr_ratio_exponent})", n))
            eps = np.float64(cfg.eps) * w ** np.float64(cfg.eps_exponent)
            if not (np.isfinite(eps) and eps > 0):
                raise ValueError(bad.format(f"TrainConfig eps·n^eps_exponent = {float(eps)!r} "
                                            f"(eps={cfg.eps}, eps_exponent={cfg.eps_exponent})", n))
