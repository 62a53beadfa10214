"""Batched update rules: SGD, SignSGD and Adam over a leading configuration axis.

A rule maps a gradient ``g`` of shape (S, L, ...) and per-configuration learning rates ``lr`` of
shape (S, L) to the update ΔW (the engine adds it). State lives in a plain dict per parameter.
Adam follows ``torch.optim.Adam`` operation for operation (bias corrections included), so the
engine and a per-configuration ``torch.optim`` loop agree to round-off:

    m ← β1 m + (1−β1) g,   v ← β2 v + (1−β2) g²,
    ΔW = −(η / (1−β1^t)) · m / (√v / √(1−β2^t) + ε),   ε = eps · n^{eps_exponent}.

SignSGD is Adam with β1 = β2 = 0 and ε → 0: ΔW = −η·sign(g) (docs/theory.md §1.2, §1.4).
Learning rates per role: η_A = η and η_B = η · ``TrainConfig.lr_b_factor(n)`` (LoRA+).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from .checks import lookup
from .config import TrainConfig


class UpdateRule(Protocol):
    """A stateless batched update rule; its state lives in the dict that :meth:`init` returns, per tensor."""

    def init(self, p: torch.Tensor) -> dict:
        """Fresh optimiser state for the parameter ``p`` (S, L, ...)."""
        ...

    def update(self, state: dict, g: torch.Tensor, lr: torch.Tensor, t: int) -> torch.Tensor:
        """The update ΔW for gradient ``g`` (S, L, ...), learning rates ``lr`` (S, L) at step ``t`` ≥ 1."""
        ...


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent: ΔW = −η g."""

    def init(self, p: torch.Tensor) -> dict:
        return {}

    def update(self, state: dict, g: torch.Tensor, lr: torch.Tensor, t: int) -> torch.Tensor:
        return -_expand(lr, g) * g


@dataclass(frozen=True)
class SignSGD:
    """Sign descent, the paper's model of Adam: ΔW = −η sign(g)."""

    def init(self, p: torch.Tensor) -> dict:
        return {}

    def update(self, state: dict, g: torch.Tensor, lr: torch.Tensor, t: int) -> torch.Tensor:
        return -_expand(lr, g) * torch.sign(g)


@dataclass(frozen=True)
class Adam:
    """Adam with bias correction (no weight decay); ``eps`` already includes its width factor."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, p: torch.Tensor) -> dict:
        return {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}

    def update(self, state: dict, g: torch.Tensor, lr: torch.Tensor, t: int) -> torch.Tensor:
        if _FUSED_ADAM is not None and g.dtype in (torch.float32, torch.float64):
            return self._fused(state, g, lr, t)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1 - self.beta1)  # m ← β1 m + (1−β1) g, as torch.optim.Adam does it
        v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        bc1, bc2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        denom = v.sqrt().div_(math.sqrt(bc2)).add_(self.eps)  # one temporary, then in place
        return torch.div(m, denom).mul_(_expand(lr, g) / -bc1)

    def _fused(self, state: dict, g: torch.Tensor, lr: torch.Tensor, t: int) -> torch.Tensor:
        """The same update in one pass, with torch's fused Adam kernel (``Adam(fused=True)``'s).

        The kernel takes one learning rate, so it runs with η = 1 on a zeroed buffer, which then
        holds −m̂/(√v̂ + ε); the per-configuration η multiplies it. Agrees with the op-by-op path
        to round-off (≈1e-15 relative per step).
        """
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=g.device)
        delta = torch.zeros_like(g)
        state["step"].fill_(t)
        _FUSED_ADAM([delta], [g], [state["m"]], [state["v"]], [], [state["step"]], lr=1.0, beta1=self.beta1,
                    beta2=self.beta2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
        return delta.mul_(_expand(lr, g))


_FUSED_ADAM = getattr(torch, "_fused_adam_", None)  # torch >= 2.4 on CPU (and CUDA); else op by op


OPTIMIZERS = {
    "sgd": lambda cfg, n: SGD(),
    "signsgd": lambda cfg, n: SignSGD(),
    "adam": lambda cfg, n: Adam(cfg.beta1, cfg.beta2, cfg.eps * n ** cfg.eps_exponent),
}


def make_rule(name: str, cfg: TrainConfig, n: int) -> UpdateRule:
    """The update rule ``name`` at width ``n`` (error lists the valid names).

    >>> make_rule("adam", TrainConfig(eps=1e-8, eps_exponent=-1.0), 100).eps
    1e-10
    """
    return lookup(OPTIMIZERS, name, "optimizer")(cfg, n)


def _expand(lr: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(S, L) learning rates broadcast against a (S, L, ...) gradient."""
    return lr.reshape(lr.shape + (1,) * (g.dim() - lr.dim()))
