"""The batched training loop: all seeds × learning rates of one (width, rank, init, optimiser) at once.

A and B carry a leading configuration axis: A (S, L, r, n), B (S, L, n, r), S seeds (one frozen
model each) × L learning rates. Every matmul is batched; no Python loop runs over configurations.

Forward at step t (weights after t updates), for inputs Z (S, N, n):
    Z_A = Z Aᵀ                     (S, L, N, r)
    Z_B = s · Z_A Bᵀ               (S, L, N, n)   the LoRA feature s·BAZ (formed inside the setting)
Gradients, with G = ∂loss/∂Z_B (never stored by the toy; see models.ToySetting.grads):
    ∂loss/∂A = s · (G B)ᵀ Z        (S, L, r, n)
    ∂loss/∂B = s · Gᵀ Z_A          (S, L, n, r)
RMS(Z_B) is read off the r×r Gram matrix BᵀB each step (``z_b_rms``), for the divergence check.
Feature-update decomposition at step t (PAPER.md §2.1), with ΔA_t, ΔB_t the last update:
    δ¹ = s·B_{t−1} ΔA_t Z,  δ² = s·ΔB_t A_{t−1} Z,  δ³ = s·ΔB_t ΔA_t Z,  ΔZ_B = δ¹ + δ² + δ³.

Statistics are RMS per entry (PAPER.md §9 pitfall 3). A configuration whose loss, Z_B RMS or
loss/initial-loss ratio becomes non-finite or exceeds the threshold is marked diverged at that
step; its weights are zeroed and frozen, so it can never spoil another configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import TrainConfig
from .models import Frozen

STATS = ("loss", "test_loss", "z_a_rms", "z_b_rms", "dz_b_rms", "delta1_rms", "delta2_rms",
         "delta3_rms", "b_shift_rms", "a_shift_rms")


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
    record = _record_steps(cfg)
    out = {k: [] for k in STATS}
    div = []
    work = torch.empty((S, L, fz.Z.shape[1], fz.Z.shape[2]), dtype=A.dtype, device=A.device)  # (S, L, N, n)
    for t in range(cfg.steps + 1):
        ZA, loss, ctx = forward(setting, fz, A, B, s, grad=t < cfg.steps, out=work)
        zb = z_b_rms(ZA, B, s)
        loss0 = loss.detach().clone() if loss0 is None else loss0
        bad = alive & _diverging(loss, loss0, zb, cfg.diverge_threshold)
        if t in record:
            vals = {"loss": loss, "z_a_rms": _rms(ZA), "z_b_rms": zb}
            vals.update(_shift_stats(A, B, A0, B0))
            vals.update(_delta_stats(fz.Z, ZA, B, dA, dB, s, like=loss))
            vals["test_loss"] = _test_loss(setting, fz, A, B, s) if fz.has_test else torch.full_like(loss, float("nan"))
            for k in STATS:  # configurations that died before this step report NaN
                out[k].append(torch.where(alive, vals[k], torch.nan).cpu().numpy())
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

    ``out`` is the (S, L, N, n) work buffer the setting writes into (allocated once per run).
    """
    ZA = _za(fz.Z, A)  # (S, L, N, r)
    loss, ctx = setting.loss(fz, ZA, B, s, grad=grad, out=out)
    return ZA, loss, ctx


def z_b_rms(ZA: torch.Tensor, B: torch.Tensor, s: float) -> torch.Tensor:
    """RMS of Z_B = s·Z_A Bᵀ without forming it: ‖Z_B‖² = s² Σ_k Z_A,k ᵀ (BᵀB) Z_A,k, (S, L).

    Works for any low-rank product: Z_A (S, L, N, k) and B (S, L, n, k).
    """
    N, n = ZA.shape[2], B.shape[2]
    gram = B.transpose(-1, -2) @ B  # (S, L, r, r)
    sq = ((ZA @ gram) * ZA).sum(dim=(2, 3))
    return (s * s * sq.clamp(min=0) / (N * n)).sqrt()


def _record_steps(cfg: TrainConfig) -> set[int]:
    return set(range(0, cfg.steps + 1, cfg.record_every)) | {cfg.steps}


def _za(Z: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Z Aᵀ for Z (S, N, n) and A (S, L, r, n) as one matmul per seed: (S, L, N, r)."""
    S, L, r, n = A.shape
    ZA = Z @ A.reshape(S, L * r, n).transpose(-1, -2)  # (S, N, L·r)
    return ZA.reshape(S, -1, L, r).permute(0, 2, 1, 3)


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over all but the two leading (S, L) axes (one pass, no temporary)."""
    dims = tuple(range(2, x.dim()))
    return torch.linalg.vector_norm(x, dim=dims) / math.sqrt(math.prod(x.shape[2:]))


def _diverging(loss, loss0, zb, threshold: float) -> torch.Tensor:
    ratio = loss / torch.clamp(loss0, min=torch.finfo(loss.dtype).tiny)
    finite = torch.isfinite(loss) & torch.isfinite(zb)
    return ~finite | (loss > threshold) & (ratio > threshold) | (zb > threshold)


def _kill(x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Zero the configurations marked ``dead`` (S, L) in a (S, L, ...) tensor."""
    if not bool(dead.any()):
        return x
    return torch.where(dead.reshape(dead.shape + (1,) * (x.dim() - 2)), 0.0, x)


def _shift_stats(A, B, A0, B0) -> dict[str, torch.Tensor]:
    return {"b_shift_rms": _rms(B - B0[:, None]), "a_shift_rms": _rms(A - A0[:, None])}


def _delta_stats(Z, ZA, B, dA, dB, s, like) -> dict[str, torch.Tensor]:
    """RMS of δ¹, δ², δ³ and ΔZ_B at the current step (NaN at step 0), all from rank-r factors.

    δ¹ = s·ΔZ_A B_{t−1}ᵀ, δ² = s·Z_A^{t−1} ΔBᵀ, δ³ = s·ΔZ_A ΔBᵀ and
    ΔZ_B = s·[Z_A^t, −Z_A^{t−1}] [B_t, B_{t−1}]ᵀ, so no (N, n) tensor is formed.
    """
    keys = ("delta1_rms", "delta2_rms", "delta3_rms", "dz_b_rms")
    if dA is None:
        return {k: torch.full_like(like, float("nan")) for k in keys}
    dZA = _za(Z, dA)  # ΔZ_A = Z ΔAᵀ, (S, L, N, r)
    ZA_prev, B_prev = ZA - dZA, B - dB
    return {"delta1_rms": z_b_rms(dZA, B_prev, s), "delta2_rms": z_b_rms(ZA_prev, dB, s),
            "delta3_rms": z_b_rms(dZA, dB, s),
            "dz_b_rms": z_b_rms(torch.cat([ZA, -ZA_prev], dim=-1), torch.cat([B, B_prev], dim=-1), s)}


def _test_loss(setting, fz: Frozen, A, B, s) -> torch.Tensor:
    return setting.loss(fz, _za(fz.Z_test, A), B, s, test=True, grad=False)[0]
