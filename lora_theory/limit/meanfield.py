"""The n → ∞ limit of LoRA training in the ``layer`` setting: a mean-field recursion (docs/theory.md §12).

Each coordinate of the width carries an i.i.d. state. An input coordinate j holds z_j ∈ R^N (column j of Z)
and the shift a_j = A_{:,j} − A_{0,:,j} ∈ R^r with its optimiser state; an output coordinate i holds the
pretrained residual ẽ_i = (W*Z − y)_{:,i} ∈ R^N, B_{0,i} ∈ R^r and the shift b_i = B_i − B_{0,i} with its
optimiser state. The coordinates interact only through N×r aggregates (docs/theory.md §12.2):

    Z_A = R_A + n·E[z aᵀ]                                       (12.1)
    H   = G·B = (1/N)·(R_H + n·E[ẽ bᵀ] + n·E[Z̄_B Bᵀ])            (12.2)
    Z̄_B,i = s·(Z_A B_iᵀ − [absorbed]·Z_A^0 B_{0,i}ᵀ),   g_{B,i} = (s/N)·Z_Aᵀ(ẽ_i + Z̄_B,i),   g_{A,j} = s·Hᵀz_j

R_A = Σ_j z_j A_{0,j}ᵀ and R_H = Σ_i ẽ_i B_{0,i}ᵀ are the only sums with zero mean: finite-dimensional
Gaussians, drawn once per seed. Every other sum is coherent, n times an expectation over the coordinate law,
estimated with M deterministic particles (a quantile grid for a one-dimensional law, else scrambled Sobol
points), whitened so that their second moments are exact. The recursion is evaluated at the width
n_∞ = 2^K (``LimitConfig.log2_width``, K = 128 by default), where every term that vanishes as n → ∞ is
2^{−K·gap} below the leading ones; exact cancellations (SignSGD's period 2) stay exact (docs/theory.md §12.3).
Adam is taken with ε → 0 (its sign-like regime, docs/theory.md §1.4).

Shapes: S seeds, L learning rates, M particles, N samples, r rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..checks import check_int, check_positive

DTYPE = torch.float64  # n_∞ = 2^128 needs float64's range

__all__ = ["LimitConfig", "LimitState", "LimitSystem", "coordinate_law", "init_state", "statistics", "step"]


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """How the limit is evaluated: particles per side and the width n_∞ = 2^``log2_width``.

    >>> LimitConfig().particles, LimitConfig(log2_width=64).width == 2.0 ** 64
    (16384, True)
    """

    particles: int = 2 ** 14  # M particles per side (input and output coordinates)
    log2_width: float = 128.0  # K: the recursion is evaluated at n_∞ = 2^K
    particle_seed: int = 0  # scrambling of the Sobol points (the particles do not depend on the run's seed)

    def __post_init__(self) -> None:
        check_int("particles", self.particles, low=16)
        check_positive("log2_width", self.log2_width)
        if self.log2_width > 250:
            raise ValueError(f"log2_width must be <= 250 (float64 range: Adam squares gradients up to n^2), "
                             f"got {self.log2_width!r}")
        check_int("particle_seed", self.particle_seed, low=0)

    @property
    def width(self) -> float:
        return 2.0 ** self.log2_width


@dataclass(frozen=True)
class LimitSystem:
    """Everything fixed during a run: the coordinate law, the random parts and the learning rates."""

    z: torch.Tensor  # (M, N) input coordinates z_j ~ N(0, I_N)
    e: torch.Tensor  # (M, N) output residuals ẽ_i ~ N(0, 2·I_N) at the pretrained model
    b0: torch.Tensor  # (M, r) rows of B_0 at n_∞ (zero for B_0 = 0)
    za0: torch.Tensor  # (S, 1, N, r) R_A = A_0 Z at n_∞
    rh: torch.Tensor  # (S, 1, N, r) R_H = Σ_i ẽ_i B_{0,i}ᵀ at n_∞
    lr_a: torch.Tensor  # (S, L, 1, 1) η_A at n_∞
    lr_b: torch.Tensor  # (S, L, 1, 1) η_B at n_∞
    n: float  # n_∞
    s: float  # LoRA multiplier
    optimizer: str  # "adam", "signsgd" or "sgd"
    subtract: bool  # W* absorbed −s·B_0A_0 (Init[AB])
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class LimitState:
    """State after ``t`` updates: per-particle shifts of A and B, their last updates and optimiser states."""

    t: int
    a: torch.Tensor  # (S, L, M, r) A_t − A_0 per input particle
    b: torch.Tensor  # (S, L, M, r) B_t − B_0 per output particle
    da: torch.Tensor | None = None  # (S, L, M, r) the update of step t (None at t = 0)
    db: torch.Tensor | None = None
    opt: tuple = ()  # Adam: (m_A, v_A, m_B, v_B), each (S, L, M, r)


def coordinate_law(N: int, r: int, b_law: str, M: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Particles of the input law z ~ N(0, I_N) and of the output law (ẽ ~ N(0, 2I_N), β), each (M, ·).

    β (M, r) has i.i.d. unit-variance entries of law ``b_law`` ("normal", "uniform"; "zero": all 0).
    A one-dimensional law uses the quantile grid Φ⁻¹((k + ½)/M); otherwise scrambled Sobol points. Each
    block is centred and whitened, so its empirical mean is 0 and its second moments exact.

    >>> z, e, beta = coordinate_law(1, 4, "zero", 64)
    >>> z.shape, e.shape, round(float(e.square().mean()), 12), bool((beta == 0).all())
    (torch.Size([64, 1]), torch.Size([64, 1]), 2.0, True)
    """
    z = _whiten(_gaussian(_uniforms(M, N, seed)))  # (M, N)
    d_out = N + (0 if b_law == "zero" else r)
    u = _uniforms(M, d_out, seed + 1)
    out = torch.cat([_gaussian(u[:, :N]), _beta(u[:, N:], b_law)], dim=1)
    out = _whiten(out)
    e = math.sqrt(2.0) * out[:, :N]
    beta = out[:, N:] if b_law != "zero" else torch.zeros((M, r), dtype=DTYPE)
    return z, e, beta


def init_state(system: LimitSystem) -> LimitState:
    """The state at t = 0: no shifts, zero optimiser states."""
    S, L = system.lr_a.shape[:2]
    zeros = torch.zeros((S, L, system.z.shape[0], system.b0.shape[1]), dtype=DTYPE)
    opt = (zeros,) * 4 if system.optimizer == "adam" else ()
    return LimitState(0, zeros, zeros.clone(), opt=opt)


def step(state: LimitState, system: LimitSystem) -> LimitState:
    """One full-batch update of every particle (equations (12.1)–(12.2)); pure: returns a new state."""
    ZA, Zb = forward(state, system)  # (S, L, N, r), (S, L, M, N)
    N, n, s = system.e.shape[1], system.n, system.s
    B = system.b0 + state.b  # (S, L, M, r)
    G = (system.e + Zb) / N  # (S, L, M, N) ∂loss/∂Z̄ per output coordinate
    gB = s * G @ ZA  # (S, L, M, r)
    # H = Σ_i G_i B_iᵀ: the random part R_H plus coherent sums (n × particle means)
    M = system.e.shape[0]
    coherent = (system.e.T @ state.b + Zb.transpose(-1, -2) @ B) * (n / M)  # (S, L, N, r)
    H = (system.rh + coherent) / N
    gA = s * system.z @ H  # (S, L, M, r)
    t = state.t + 1
    if system.optimizer == "adam":
        m_a, v_a, m_b, v_b = state.opt
        da, m_a, v_a = _adam(gA, m_a, v_a, system.lr_a, t, system.betas)
        db, m_b, v_b = _adam(gB, m_b, v_b, system.lr_b, t, system.betas)
        opt = (m_a, v_a, m_b, v_b)
    elif system.optimizer == "signsgd":
        da, db, opt = -system.lr_a * torch.sign(gA), -system.lr_b * torch.sign(gB), ()
    else:
        da, db, opt = -system.lr_a * gA, -system.lr_b * gB, ()
    return LimitState(t, state.a + da, state.b + db, da, db, opt)


def forward(state: LimitState, system: LimitSystem) -> tuple[torch.Tensor, torch.Tensor]:
    """Z_A (S, L, N, r) by (12.1) and the adapter's output Z̄_B per output particle (S, L, M, N)."""
    ZA = system.za0 + (system.z.T @ state.a) * (system.n / system.z.shape[0])
    base = ZA - system.za0 if system.subtract else ZA  # (Z_A − Z_A^0) B_0ᵀ when W* absorbed s·B_0A_0
    Zb = system.s * (state.b @ ZA.transpose(-1, -2) + system.b0 @ base.transpose(-1, -2))
    return ZA, Zb


def statistics(prev: LimitState | None, state: LimitState, system: LimitSystem) -> dict[str, torch.Tensor]:
    """The recorded statistics (``stats.STATS``) at n_∞, each (S, L); δ's are NaN at t = 0.

    RMS over output coordinates is the root of a particle mean; the loss is n_∞·½E‖ẽ + Z̄_B‖²/N.
    """
    ZA, Zb = forward(state, system)
    N, s = ZA.shape[-2], system.s
    B = system.b0 + state.b
    out = {"loss": system.n * 0.5 * (system.e + Zb).square().sum(-1).mean(-1) / N,
           "z_a_rms": _rms(ZA, 2),
           "z_b_rms": _rms_out(s * B @ ZA.transpose(-1, -2)),
           "b_shift_rms": _rms(state.b, 2), "a_shift_rms": _rms(state.a, 2)}
    out["test_loss"] = torch.full_like(out["loss"], math.nan)
    if prev is None or state.da is None:
        nan = torch.full_like(out["loss"], math.nan)
        return {**out, "dz_b_rms": nan, "delta1_rms": nan, "delta2_rms": nan, "delta3_rms": nan}
    ZA_prev = forward(prev, system)[0]
    dZA = (system.z.T @ state.da) * (system.n / system.z.shape[0])  # ΔZ_A = n·E[z Δaᵀ] (S, L, N, r)
    B_prev = system.b0 + prev.b
    d1 = s * B_prev @ dZA.transpose(-1, -2)  # (S, L, M, N) δ¹ per output particle
    d2 = s * state.db @ ZA_prev.transpose(-1, -2)
    d3 = s * state.db @ dZA.transpose(-1, -2)
    return {**out, "delta1_rms": _rms_out(d1), "delta2_rms": _rms_out(d2), "delta3_rms": _rms_out(d3),
            "dz_b_rms": _rms_out(d1 + d2 + d3)}


def with_learning_rates(system: LimitSystem, lr_a: torch.Tensor, lr_b: torch.Tensor) -> LimitSystem:
    """The same system with other learning rates (S, L, 1, 1)."""
    return replace(system, lr_a=lr_a, lr_b=lr_b)


# ----------------------------------------------------------------------------------------- private

def _adam(g, m, v, lr, t, betas):
    """Adam (bias-corrected) with ε = 0 and 0/0 := 0: returns (update, m, v), new tensors (the in-place
    operations act on this function's own temporaries only)."""
    b1, b2 = betas
    m = torch.lerp(m, g, 1 - b1)  # β1 m + (1 − β1) g
    v = torch.addcmul(v * b2, g, g, value=1 - b2)
    update = torch.div(m, v.sqrt()).nan_to_num_(nan=0.0)  # v = 0 only where every gradient so far was 0
    return update.mul_(-lr * (math.sqrt(1 - b2 ** t) / (1 - b1 ** t))), m, v


def _rms_out(x: torch.Tensor) -> torch.Tensor:
    """RMS over output coordinates (particle mean) and samples of (S, L, M, N): (S, L)."""
    return _rms(x, 2)


def _rms(x: torch.Tensor, lead: int) -> torch.Tensor:
    """RMS over all but the ``lead`` leading axes, scaled by the largest entry first: entries of size n_∞^{−3}
    would underflow when squared."""
    dims = tuple(range(lead, x.dim()))
    big = x.abs().amax(dim=dims, keepdim=True)
    safe = torch.where(big > 0, big, 1.0)
    return (x / safe).square().mean(dim=dims).sqrt() * safe.reshape(safe.shape[:lead])


def _uniforms(M: int, d: int, seed: int) -> torch.Tensor:
    """(M, d) points in (0, 1): the midpoint grid when d = 1, else scrambled Sobol points."""
    if d == 0:
        return torch.zeros((M, 0), dtype=DTYPE)
    if d == 1:
        return ((torch.arange(M, dtype=DTYPE) + 0.5) / M)[:, None]
    u = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(M, dtype=DTYPE)
    return u.clamp(1e-12, 1 - 1e-12)


def _gaussian(u: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtri(u)


def _beta(u: torch.Tensor, law: str) -> torch.Tensor:
    """Unit-variance entries of B_0's law from uniforms: normal, or uniform on [−√3, √3]."""
    return _gaussian(u) if law == "normal" else (2 * u - 1) * math.sqrt(3.0)


def _whiten(x: torch.Tensor) -> torch.Tensor:
    """Centre and whiten (M, d) so that the empirical mean is 0 and the second moments are the identity."""
    if x.shape[1] == 0:
        return x
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / x.shape[0])
    return torch.linalg.solve_triangular(chol, x.T, upper=False).T
