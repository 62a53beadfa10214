"""The batched training loop: all seeds × learning rates of one (width, rank, init, optimiser) at once.

A and B carry a leading configuration axis: A (S, L, r, n), B (S, L, n, r), S seeds (one frozen
model each) × L learning rates. Every matmul is batched; no Python loop runs over configurations.

Forward at step t (weights after t updates), for inputs Z (S, N, n):
    Z_A = Z Aᵀ                     (S, L, N, r)
    Z_B = s · Z_A Bᵀ               (S, L, N, n)   the LoRA feature s·BAZ (formed inside the setting)
Gradients, with G = ∂loss/∂Z_B (never formed by the toy, which works in cache-sized tiles of samples and
never writes an (S, L, N, n) tensor; see models.ToySetting):
    ∂loss/∂A = s · (G B)ᵀ Z        (S, L, r, n)
    ∂loss/∂B = s · Gᵀ Z_A          (S, L, n, r)
The recorded statistics are those of :mod:`lora_theory.stats` (``STATS``: definitions, computation,
theory exponents). RMS(Z_B) is read off the r×r Gram matrix BᵀB every step, for the divergence check.

A configuration is marked diverged at the first step where its loss or RMS(Z_B) is non-finite, or
RMS(Z_B) exceeds ``TrainConfig.diverge_threshold`` τ, or the loss exceeds τ both in absolute value and
relative to its initial value (the layer loss is a sum over n entries, so an absolute test alone
would flag healthy runs at very large n). Its weights are then zeroed and frozen, so it can never
spoil another configuration; its statistics are NaN from that step on (so no diverged value can reach a fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import stats
from .config import TrainConfig
from .models import Frozen, za

STATS = tuple(stats.STATS)  # recorded columns, in the registry's order


@dataclass(frozen=True)
class Trace:
    """Recorded statistics: ``values[stat]`` has shape (T_rec, S, L); ``diverged`` likewise (bool)."""

    steps: np.ndarray  # (T_rec,)
    values: dict[str, np.ndarray]
    diverged: np.ndarray


def train(setting, fz: Frozen, A0: torch.Tensor, B0: torch.Tensor, lr_a: torch.Tensor,
          lr_b: torch.Tensor, rule, s: float, cfg: TrainConfig) -> Trace:
    """Train every configuration of one batch and return its :class:`Trace`.

    Args:
        setting: a ``models.SETTINGS`` entry (provides ``loss`` and ``grads``).
        fz: frozen tensors for S seeds (``fz.base`` already includes any −s·B0A0 Z subtraction).
        A0, B0: initial factors per seed, (S, r, n) and (S, n, r).
        lr_a, lr_b: learning rates of A and B, (S, L).
        rule: the update rule (``optim.make_rule``); stateless, its state lives per tensor.
        s: LoRA multiplier.
        cfg: steps, recording and divergence policy.
    """
    S, L = lr_a.shape
    A = A0[:, None].expand(S, L, *A0.shape[1:]).clone()  # (S, L, r, n)
    B = B0[:, None].expand(S, L, *B0.shape[1:]).clone()  # (S, L, n, r)
    st_a, st_b = rule.init(A), rule.init(B)
    alive = torch.ones((S, L), dtype=torch.bool, device=A.device)
    dA = dB = None
    loss0 = None
    record = record_steps(cfg)
    out = {k: [] for k in STATS}
    div = []
    work = setting.workspace(fz, L)  # the setting's buffer, reused every step (toy: a tile, not (S, L, N, n))
    for t in range(cfg.steps + 1):
        ZA, loss, ctx = forward(setting, fz, A, B, s, grad=t < cfg.steps, out=work)
        zb = stats.z_b_rms(ZA, B, s)
        loss0 = loss.detach().clone() if loss0 is None else loss0
        bad = alive & _diverging(loss, loss0, zb, cfg.diverge_threshold)
        if t in record:
            vals = {"loss": loss, "z_a_rms": stats.rms(ZA), "z_b_rms": zb}
            vals.update(stats.shift_stats(A, B, A0, B0))
            vals.update(stats.delta_stats(fz.Z, ZA, B, dA, dB, s, like=loss))
            vals["test_loss"] = (_test_loss(setting, fz, A, B, s, work) if fz.has_test
                                 else torch.full_like(loss, float("nan")))
            for k in STATS:  # configurations that diverge at this step or died before report NaN
                out[k].append(torch.where(alive & ~bad, vals[k], torch.nan).double().cpu().numpy())  # float64
            div.append((~alive | bad).cpu().numpy())
        alive = alive & ~bad
        if t == cfg.steps:
            break
        A, B = _kill(A, ~alive), _kill(B, ~alive)
        gA, gB = setting.grads(fz, ctx, ZA, B, s)  # dead configurations' updates are zeroed below
        dA = _kill(rule.update(st_a, gA, lr_a, t + 1), ~alive)
        dB = _kill(rule.update(st_b, gB, lr_b, t + 1), ~alive)
        A, B = A.add_(dA), B.add_(dB)  # A and B are this loop's own tensors (cloned or _kill's)
    return Trace(np.array(sorted(record)), {k: np.stack(v) for k, v in out.items()}, np.stack(div))


def forward(setting, fz: Frozen, A: torch.Tensor, B: torch.Tensor, s: float, grad: bool = True,
            out: torch.Tensor | None = None):
    """Z_A = Z Aᵀ (S, L, N, r), the loss (S, L) and the setting's context for its ``grads``.

    ``out`` is the setting's work buffer (``setting.workspace``, allocated once per run).
    """
    ZA = za(fz.Z, A)  # (S, L, N, r)
    loss, ctx = setting.loss(fz, ZA, B, s, grad=grad, out=out)
    return ZA, loss, ctx


def record_steps(cfg: TrainConfig) -> set[int]:
    return set(range(0, cfg.steps + 1, cfg.record_every)) | {cfg.steps}


def _diverging(loss, loss0, zb, threshold: float) -> torch.Tensor:
    """Non-finite loss or Z_B, or Z_B > τ, or the loss > τ both absolutely and relative to its start."""
    ratio = loss / torch.clamp(loss0, min=torch.finfo(loss.dtype).tiny)
    finite = torch.isfinite(loss) & torch.isfinite(zb)
    return ~finite | (loss > threshold) & (ratio > threshold) | (zb > threshold)


def _kill(x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Zero the configurations marked ``dead`` (S, L) in a (S, L, ...) tensor."""
    if not bool(dead.any()):
        return x
    return torch.where(dead.reshape(dead.shape + (1,) * (x.dim() - 2)), 0.0, x)


def _test_loss(setting, fz: Frozen, A, B, s, work=None) -> torch.Tensor:
    return setting.loss(fz, za(fz.Z_test, A), B, s, test=True, grad=False, out=work)[0]
