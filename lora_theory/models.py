"""The two width-scaled settings: frozen parts and loss heads, batched over seeds and configurations.

Both settings share one LoRA layer acting on an input Z ∈ R^n (Θ(1) entries) with output
``Z̄ = W* Z + s·B A Z``, A ∈ R^{r×n}, B ∈ R^{n×r}, s = α/r or α/√r (docs/theory.md §1.1). Only A and B train.

* ``layer`` (docs/theory.md §1.2, §1.4, the theorems): Z, y ~ N(0, I_n), W* ~ N(0, 1/n) entries,
  loss ``½ · mean_i ‖Z̄_i − y_i‖²`` over N samples (N = 1 by default).
* ``toy`` (docs/theory.md §1.3, teacher-student): ``Y_in = W_in x``, ``Z = φ(Y_in)``,
  ``Y_h = Y_in + (W_h + s·BA) Z``, ``f = W_out φ(Y_h)``, φ = ReLU, x ~ N(0, I_d);
  W_in ~ N(0, 1/d), W_h ~ N(0, 1/n), W_out ~ N(0, 1/n) (SP) or N(0, 1/n²) (μP).
  Labels come from a teacher of the same shape (width 1000, rank 20, all variances 1/fan-in),
  standardised with the training mean and std. Loss ``½ · mean_i (f_i − y_i)²``.

Everything frozen is computed once per width for S seeds at once; the n×n matrices W* and W_h
are never stored: only their action on the data, ``Z W_hᵀ``, is drawn (``gaussian_matmul``). Shapes: S seeds, L configurations per seed, N samples.
A setting maps Z_A = Z Aᵀ (S, L, N, r) and B to the per-configuration loss (S, L) (``loss``) and
then to the gradients of A and B (``grads``): the only setting-specific parts of the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .checks import lookup
from .config import ModelConfig

_BLOCK = 1024  # rows of a frozen n×n matrix drawn at once (fixed: it is part of the random stream)
_TAG_FROZEN, _TAG_DATA, _TAG_INIT = 1, 2, 3


@dataclass(frozen=True)
class Frozen:
    """Frozen tensors of one setting at one width, stacked over S seeds (the leading axis)."""

    Z: torch.Tensor  # (S, N, n) input of the LoRA layer
    base: torch.Tensor  # (S, N, n) pretrained pre-activation W*Z (layer) or Y_in + W_h Z (toy)
    target: torch.Tensor  # (S, N, n) layer targets y; (S, N) toy labels
    w_out: torch.Tensor | None = None  # (S, n) toy readout
    Z_test: torch.Tensor | None = None  # (S, N_test, n)
    base_test: torch.Tensor | None = None
    target_test: torch.Tensor | None = None

    @property
    def has_test(self) -> bool:
        return self.Z_test is not None


class Setting(Protocol):
    """What the engine needs of a setting: its frozen parts, its loss and the gradients of A and B."""

    name: str

    def build(self, n: int, seeds: list[int], cfg: ModelConfig, dtype: torch.dtype) -> Frozen:
        """Frozen tensors of width ``n`` for each seed, stacked on a leading axis."""
        ...

    def loss(self, fz: Frozen, ZA: torch.Tensor, B: torch.Tensor, s: float, test: bool = False,
             grad: bool = True, out: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """Per-configuration loss (S, L) from Z_A (S, L, N, r) and B (S, L, n, r), and the context of
        :meth:`grads` (None when ``grad`` is False); ``test`` uses the held-out data."""
        ...

    def grads(self, fz: Frozen, ctx: Any, ZA: torch.Tensor, B: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """∂loss/∂A (S, L, r, n) and ∂loss/∂B (S, L, n, r)."""
        ...


class LayerSetting:
    """Single LoRA layer with squared loss on its output (the theorems' setting)."""

    name = "layer"

    def build(self, n: int, seeds: list[int], cfg: ModelConfig, dtype: torch.dtype) -> Frozen:
        Zs, bases, ys = [], [], []
        for seed in seeds:
            g = generator(seed, _TAG_FROZEN, n)
            Z = torch.randn((cfg.n_train, n), generator=g, dtype=dtype)  # (N, n)
            y = torch.randn((cfg.n_train, n), generator=g, dtype=dtype)  # (N, n)
            Zs.append(Z), ys.append(y), bases.append(gaussian_matmul(Z, n, 1 / math.sqrt(n), g))
        return Frozen(torch.stack(Zs), torch.stack(bases), torch.stack(ys))

    def loss(self, fz: Frozen, ZA: torch.Tensor, B: torch.Tensor, s: float, test: bool = False,
             grad: bool = True, out: torch.Tensor | None = None):
        """Loss (S, L) from Z_A (S, L, N, r) and B (S, L, n, r); context for :meth:`grads` if ``grad``.

        ``out`` is an optional (S, L, N, n) work buffer, reused across steps by the engine. The layer
        setting has no held-out data: ``test=True`` is an error.
        """
        if test:
            raise ValueError("test=True: the layer setting has no held-out data (only the toy has a test split)")
        err = _lora(ZA, B, s, out).add_((fz.base - fz.target)[:, None])  # (S, L, N, n)
        N = err.shape[2]
        loss = 0.5 * err.square().sum(dim=(2, 3)) / N
        return loss, (err.div_(N) if grad else None)  # G = ∂loss/∂(s·BAZ)

    def grads(self, fz: Frozen, G: torch.Tensor, ZA: torch.Tensor, B: torch.Tensor, s: float):
        """∂loss/∂A = s·(G B)ᵀ Z (S, L, r, n) and ∂loss/∂B = s·Gᵀ Z_A (S, L, n, r).

        s multiplies the small (S, L, N, r) factors, not the (S, L, ·, n) results (one pass fewer each).
        """
        return _t_matmul_z((G @ B).mul_(s), fz.Z), G.transpose(-1, -2) @ (s * ZA)


class ToySetting:
    """Teacher-student residual ReLU MLP with LoRA on the hidden weight (docs/theory.md §1.3)."""

    name = "toy"

    def build(self, n: int, seeds: list[int], cfg: ModelConfig, dtype: torch.dtype) -> Frozen:
        parts = [self._build_one(n, seed, cfg, dtype) for seed in seeds]
        return Frozen(*(torch.stack(p) for p in zip(*parts)))

    def loss(self, fz: Frozen, ZA: torch.Tensor, B: torch.Tensor, s: float, test: bool = False,
             grad: bool = True, out: torch.Tensor | None = None):
        """Loss (S, L) from Z_A (S, L, N, r) and B (S, L, n, r); context for :meth:`grads` if ``grad``.

        ``out`` is an optional (S, L, N, n) work buffer, reused across steps by the engine. Three passes over an (S, L, N, n) buffer: Y_h = base + s·Z_A Bᵀ, ReLU in place, readout.
        The backward pass needs only the ReLU mask M (as 0/1 floats, made in place) and
        e = (f − y)/N, since G = ∂loss/∂Y_h = e wᵀ ⊙ M is never formed (see :meth:`grads`).
        """
        base, y = (fz.base_test, fz.target_test) if test else (fz.base, fz.target)
        H = _lora(ZA, B, s, out).add_(base[:, None]).clamp_(min=0)  # φ(Y_h), (S, L, N, n)
        S, L, N, n = H.shape
        # one GEMV per seed (a batched (S, L·N, n) @ (S, n, 1) matmul is ~1.6× slower on CPU)
        f = torch.stack([H[i].reshape(L * N, n).mv(fz.w_out[i]) for i in range(S)]).reshape(S, L, N)
        err = f - y[:, None]
        loss = 0.5 * err.square().mean(dim=2)
        if not grad:
            return loss, None
        return loss, (H.sign_(), err / err.shape[2])  # M = 1[Y_h > 0], e

    def grads(self, fz: Frozen, ctx, ZA: torch.Tensor, B: torch.Tensor, s: float):
        """With G = e wᵀ ⊙ M: G B = e ⊙ (M (w ⊙ B)) and Gᵀ Z_A = w ⊙ (Mᵀ (e ⊙ Z_A)); two rank-r matmuls on M."""
        M, e = ctx
        se = (s * e)[..., None]  # (S, L, N, 1): s folded into the small factors
        w = fz.w_out[:, None, :, None]  # (S, 1, n, 1)
        GB = (M @ (w * B)).mul_(se)  # (S, L, N, r)
        gB = ((se * ZA).transpose(-1, -2) @ M).transpose(-1, -2) * w  # (S, L, n, r)
        return _t_matmul_z(GB, fz.Z), gB


    def _build_one(self, n: int, seed: int, cfg: ModelConfig, dtype: torch.dtype):
        X, y = teacher_data(seed, cfg, dtype)  # (N + N_test, d), (N + N_test,)
        N = cfg.n_train
        g = generator(seed, _TAG_FROZEN, n)
        W_in = torch.randn((n, cfg.d_in), generator=g, dtype=dtype) / math.sqrt(cfg.d_in)
        Y_in = X @ W_in.T  # (N + N_test, n)
        Z = torch.relu(Y_in)
        base = Y_in + gaussian_matmul(Z, n, 1 / math.sqrt(n), g)
        out_std = 1 / math.sqrt(n) if cfg.readout == "sp" else 1 / n
        w_out = torch.randn((n,), generator=g, dtype=dtype) * out_std
        return Z[:N], base[:N], y[:N], w_out, Z[N:], base[N:], y[N:]


SETTINGS: dict[str, Setting] = {"layer": LayerSetting(), "toy": ToySetting()}


def get_setting(name: str) -> Setting:
    """The registered setting called ``name`` (error lists the valid names)."""
    return lookup(SETTINGS, name, "setting")


def teacher_data(seed: int, cfg: ModelConfig, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x ~ N(0, I_d) and standardised teacher labels; train rows first, then test rows.

    The teacher depends on ``seed`` only, never on the student's width, so every width of a sweep
    learns the same task.
    """
    g = generator(seed, _TAG_DATA, 0)
    nT, rT, d = cfg.teacher_width, cfg.teacher_rank, cfg.d_in
    X = torch.randn((cfg.n_train + cfg.n_test, d), generator=g, dtype=dtype)
    Y_in = X @ (torch.randn((nT, d), generator=g, dtype=dtype) / math.sqrt(d)).T
    Z = torch.relu(Y_in)
    A = torch.randn((rT, nT), generator=g, dtype=dtype) / math.sqrt(nT)
    B = torch.randn((nT, rT), generator=g, dtype=dtype) / math.sqrt(rT)
    Yh = Y_in + gaussian_matmul(Z, nT, 1 / math.sqrt(nT), g) + (Z @ A.T) @ B.T
    y = torch.relu(Yh) @ (torch.randn((nT,), generator=g, dtype=dtype) / math.sqrt(nT))
    mean, std = y[: cfg.n_train].mean(), y[: cfg.n_train].std()
    return X, (y - mean) / (std if std > 0 else 1.0)


def gaussian_matmul(X: torch.Tensor, n_out: int, std: float, g: torch.Generator) -> torch.Tensor:
    """A draw of ``X @ Wᵀ`` for a fresh W ∈ R^{n_out × n_in} with i.i.d. N(0, std²) entries.

    W only ever acts on the rows of X, so W itself is never drawn when that is cheaper: the columns
    of X Wᵀ are i.i.d. N(0, std² X Xᵀ), sampled as U·diag(√λ)·ξ from the eigendecomposition of the
    N×N Gram matrix (exact in law; O(N² n_out) instead of O(N n_in n_out)). With N ≥ n_in, W is
    drawn in row blocks instead. Eigenvector signs are fixed, so the draw is deterministic.
    """
    N, n_in = X.shape
    if N >= n_in:
        blocks = []
        for start in range(0, n_out, _BLOCK):
            rows = min(_BLOCK, n_out - start)
            blocks.append(X @ (torch.randn((rows, n_in), generator=g, dtype=X.dtype) * std).T)
        return torch.cat(blocks, dim=-1)
    lam, U = torch.linalg.eigh(X @ X.T)  # (N,), (N, N)
    U = U * torch.sign(U[U.abs().argmax(dim=0), torch.arange(N)] + 0.5 * torch.finfo(X.dtype).tiny)
    xi = torch.randn((N, n_out), generator=g, dtype=X.dtype)
    return (U * (std * lam.clamp(min=0).sqrt())) @ xi


def za(Z: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Z_A = Z Aᵀ for Z (S, N, n) and A (S, L, r, n), as one matmul per seed: (S, L, N, r)."""
    S, L, r, n = A.shape
    ZA = Z @ A.reshape(S, L * r, n).transpose(-1, -2)  # (S, N, L·r)
    return ZA.reshape(S, -1, L, r).permute(0, 2, 1, 3)


def _lora(ZA: torch.Tensor, B: torch.Tensor, s: float, out: torch.Tensor | None) -> torch.Tensor:
    """s·Z_A Bᵀ (S, L, N, n), written into ``out`` when given (fresh large allocations page-fault)."""
    if out is None or out.shape != ZA.shape[:3] + (B.shape[2],):
        return torch.matmul(s * ZA, B.transpose(-1, -2))
    return torch.matmul(s * ZA, B.transpose(-1, -2), out=out)


def _t_matmul_z(X: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Xᵀ Z for X (S, L, N, r) and Z (S, N, n), as one matmul per seed: (S, L, r, n)."""
    S, L, N, r = X.shape
    out = X.permute(0, 1, 3, 2).reshape(S, L * r, N) @ Z  # (S, L·r, n)
    return out.reshape(S, L, r, -1)


def generator(seed: int, tag: int, n: int, r: int = 0) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, tag, n, r), via numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed), tag, int(n), int(r)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def init_generator(seed: int, n: int, r: int) -> torch.Generator:
    """The generator of the LoRA initialisation of configuration (seed, width n, rank r)."""
    return generator(seed, _TAG_INIT, n, r)
