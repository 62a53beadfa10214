"""A plain one-configuration-at-a-time PyTorch reference: ``nn.Module`` + autograd + ``torch.optim``.

This is how LoRA training loops are usually written. It shares nothing with the batched engine
except the frozen tensors and the initial factors, so agreement between the two (tests/test_engine.py)
checks the engine's hand-written gradients, its batching and its optimiser code at once. The
benchmark (``lora-theory bench``) times it against the engine.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .models import Frozen


class LoraAdapter(nn.Module):
    """The trainable adapter s·B·A on a frozen layer input: ``forward(Z) = s · Z Aᵀ Bᵀ``."""

    def __init__(self, A0: torch.Tensor, B0: torch.Tensor, s: float):
        super().__init__()
        self.A = nn.Parameter(A0.clone())  # (r, n)
        self.B = nn.Parameter(B0.clone())  # (n, r)
        self.s = s

    def forward(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ZA = Z @ self.A.T  # (N, r)
        return ZA, self.s * ZA @ self.B.T  # (N, r), (N, n)


class SignSGDOptimizer(torch.optim.Optimizer):
    """W ← W − η·sign(∇W)."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(torch.sign(p.grad), alpha=-group["lr"])


def seed_slice(fz: Frozen, i: int) -> Frozen:
    """The frozen tensors of seed index ``i`` (leading axis dropped)."""
    return Frozen(*(None if x is None else x[i] for x in (fz.Z, fz.base, fz.target, fz.w_out, fz.Z_test,
                                                          fz.base_test, fz.target_test)))


def loss_fn(setting: str, fz: Frozen, lora: torch.Tensor, test: bool = False) -> torch.Tensor:
    """Loss of one configuration, written directly from the definitions (docs/theory.md §1.2, §1.3)."""
    if setting == "layer":
        return 0.5 * (fz.base + lora - fz.target).square().sum(dim=-1).mean()
    base, y = (fz.base_test, fz.target_test) if test else (fz.base, fz.target)
    f = torch.relu(base + lora) @ fz.w_out  # (N,)
    return 0.5 * (f - y).square().mean()


def make_torch_optimizer(name: str, model: LoraAdapter, lr: float, lr_b: float, beta1=0.9, beta2=0.999,
                         eps=1e-8) -> torch.optim.Optimizer:
    """torch.optim optimiser with one param group per LoRA factor (LoRA+ style learning rates)."""
    groups = [{"params": [model.A], "lr": lr}, {"params": [model.B], "lr": lr_b}]
    factories = {
        "adam": lambda: torch.optim.Adam(groups, lr=lr, betas=(beta1, beta2), eps=eps),
        "sgd": lambda: torch.optim.SGD(groups, lr=lr),
        "signsgd": lambda: SignSGDOptimizer(groups, lr=lr),
    }
    return factories[name]()


def reference_run(setting: str, fz: Frozen, A0: torch.Tensor, B0: torch.Tensor, s: float, optimizer: str,
                  lr: float, lr_b: float, steps: int, **adam_kw) -> dict[str, np.ndarray]:
    """Train one configuration for ``steps`` updates; per-step loss and RMS statistics (steps + 1 rows)."""
    model = LoraAdapter(A0, B0, s)
    opt = make_torch_optimizer(optimizer, model, lr, lr_b, **adam_kw)
    out = {"loss": [], "z_a_rms": [], "z_b_rms": [], "b_shift_rms": []}
    for t in range(steps + 1):
        opt.zero_grad()
        ZA, lora = model(fz.Z)
        loss = loss_fn(setting, fz, lora)
        with torch.no_grad():
            out["loss"].append(loss.item())
            out["z_a_rms"].append(ZA.square().mean().sqrt().item())
            out["z_b_rms"].append(lora.square().mean().sqrt().item())
            out["b_shift_rms"].append((model.B - B0).square().mean().sqrt().item())
        if t < steps:
            loss.backward()
            opt.step()
    return {k: np.array(v) for k, v in out.items()}
