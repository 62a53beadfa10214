"""The statistics a simulation records: one registry, ``STATS``, says for each what it is, how it is
computed, what the γ-calculus predicts for its width exponent, and how a plot labels it.

Every statistic is an RMS per entry (docs/theory.md §4.3: the RMS of an n-vector with Θ(n^γ) entries is
Θ(n^γ), whatever n is), computed from rank-r factors so that no (N, n) tensor beyond the forward pass
is formed. With Z (S, N, n) the layer input, A (S, L, r, n), B (S, L, n, r), s the multiplier and
ΔA_t, ΔB_t the last update:

    Z_A = Z Aᵀ,  Z_B = s·Z_A Bᵀ,  δ¹ = s·ΔZ_A B_{t−1}ᵀ,  δ² = s·Z_A^{t−1} ΔBᵀ,  δ³ = s·ΔZ_A ΔBᵀ,
    ΔZ_B = δ¹ + δ² + δ³ = s·[Z_A^t, −Z_A^{t−1}] [B_t, B_{t−1}]ᵀ.

``Stat.theory`` names the column of :func:`lora_theory.theory.exponents` that holds the statistic's
exponent at each step (``None``: the calculus makes no prediction, e.g. the loss, whose size depends
on the setting); :func:`lora_theory.theory.theory_exponent` reads it.

>>> STATS["dz_b_rms"].theory, STATS["z_b_rms"].label
('dz_b', 'RMS(Z_B)')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .models import za

__all__ = ["STATS", "Stat", "delta_stats", "rms", "shift_stats", "z_b_rms"]


@dataclass(frozen=True, slots=True)
class Stat:
    """One recorded statistic: its definition, the theory column of its exponent, and its plot label."""

    definition: str
    theory: str | None
    label: str


STATS: dict[str, Stat] = {
    "loss": Stat("training loss (½ mean squared error over the N samples)", None, "train loss"),
    "test_loss": Stat("held-out loss (toy only; NaN in the layer setting)", None, "test loss"),
    "z_a_rms": Stat("RMS of Z_A = A·Z, the LoRA bottleneck features", "z_a", "RMS(Z_A)"),
    "z_b_rms": Stat("RMS of Z_B = s·B·A·Z, the adapter's output (s·B_0A_0Z included)", "z_b_total",
                    "RMS(Z_B)"),
    "dz_b_rms": Stat("RMS of the feature update ΔZ_B = Z_B^t − Z_B^{t−1} = δ¹ + δ² + δ³", "dz_b",
                     "RMS(ΔZ_B)"),
    "delta1_rms": Stat("RMS of δ¹ = s·B_{t−1}ΔA_tZ (A's update through the old B)", "delta1", "RMS(δ¹)"),
    "delta2_rms": Stat("RMS of δ² = s·ΔB_tA_{t−1}Z (B's update on the old features)", "delta2", "RMS(δ²)"),
    "delta3_rms": Stat("RMS of δ³ = s·ΔB_tΔA_tZ (the second-order term)", "delta3", "RMS(δ³)"),
    "b_shift_rms": Stat("RMS of the entries of B_t − B_0 (how far B has moved)", "b_shift", "RMS(B − B_0)"),
    "a_shift_rms": Stat("RMS of the entries of A_t − A_0 (how far A has moved)", "a_shift", "RMS(A − A_0)"),
}
DELTAS = ("delta1_rms", "delta2_rms", "delta3_rms", "dz_b_rms")


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over all but the two leading (S, L) axes (one pass, no temporary)."""
    dims = tuple(range(2, x.dim()))
    return torch.linalg.vector_norm(x, dim=dims) / math.sqrt(math.prod(x.shape[2:]))


def z_b_rms(ZA: torch.Tensor, B: torch.Tensor, s: float) -> torch.Tensor:
    """RMS of s·Z_A Bᵀ without forming it: ‖Z_B‖² = s² Σ_k Z_A,k ᵀ (BᵀB) Z_A,k, (S, L).

    Works for any low-rank product: Z_A (S, L, N, k) and B (S, L, n, k).
    """
    N, n = ZA.shape[2], B.shape[2]
    gram = B.transpose(-1, -2) @ B  # (S, L, k, k)
    sq = ((ZA @ gram) * ZA).sum(dim=(2, 3))
    return (s * s * sq.clamp(min=0) / (N * n)).sqrt()


def shift_stats(A, B, A0, B0) -> dict[str, torch.Tensor]:
    """``b_shift_rms`` and ``a_shift_rms`` of A, B (S, L, ·, ·) against A0, B0 (S, ·, ·)."""
    return {"b_shift_rms": rms(B - B0[:, None]), "a_shift_rms": rms(A - A0[:, None])}


def delta_stats(Z, ZA, B, dA, dB, s, like) -> dict[str, torch.Tensor]:
    """RMS of δ¹, δ², δ³ and ΔZ_B at the current step (NaN before the first update), from rank-r factors."""
    if dA is None:
        return {k: torch.full_like(like, float("nan")) for k in DELTAS}
    dZA = za(Z, dA)  # ΔZ_A = Z ΔAᵀ, (S, L, N, r)
    ZA_prev, B_prev = ZA - dZA, B - dB
    # ΔZ_B = s·(ΔZ_A B_tᵀ + Z_A^{t−1} ΔBᵀ): the difference of the two products taken exactly, with no
    # cancellation of Z_B^t against Z_B^{t−1} (which loses precision when ΔZ_B ≪ Z_B)
    return {"delta1_rms": z_b_rms(dZA, B_prev, s), "delta2_rms": z_b_rms(ZA_prev, dB, s),
            "delta3_rms": z_b_rms(dZA, dB, s),
            "dz_b_rms": z_b_rms(torch.cat([dZA, ZA_prev], dim=-1), torch.cat([B, dB], dim=-1), s)}
