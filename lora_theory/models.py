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

Everything frozen is computed once per width for S seeds at once, always drawn in float64 (a float32
run casts the same draws); the n×n matrices W* and W_h are never stored: only their action on the data,
``Z W_hᵀ``, is drawn (``gaussian_matmul``). Shapes: S seeds, L configurations per seed, N samples.
A setting maps Z_A = Z Aᵀ (S, L, N, r) and B to the per-configuration loss (S, L) (``loss``) and
then to the gradients of A and B (``grads``): the only setting-specific parts of the engine. Its
``workspace`` is the buffer ``loss`` writes into: (S, L, N, n) for the layer, a cache-sized tile of
samples for the toy, which never writes an (S, L, N, n) tensor.
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
# the toy's tile of samples × all configurations of a step: 8 MiB, kept in the last-level cache; smaller tiles
# mean more, smaller calls, which a machine shared with other jobs punishes (threads wait at every call)
TILE_BYTES = 2 ** 23
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
        """Frozen tensors of width ``n`` for each seed, stacked on a leading axis (drawn in float64, then
        cast to ``dtype``: a float32 run simulates the same model as a float64 one)."""
        ...

    def workspace(self, fz: Frozen, L: int) -> torch.Tensor:
        """A work buffer for :meth:`loss` (``out``) with L configurations per seed, allocated once per run."""
        ...

    def loss(self, fz: Frozen, ZA: torch.Tensor, B: torch.Tensor, s: float, test: bool = False,
             grad: bool = True, out: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """Per-configuration loss (S, L) from Z_A (S, L, N, r) and B (S, L, n, r), and the context of
        :meth:`grads` (None when ``grad`` is False); ``test`` uses the held-out data."""
        ...

    def grads(self, fz: Frozen, ctx: Any, ZA: torch.Tensor, B: torch.Tensor,
              s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """∂loss/∂A (S, L, r, n) and ∂loss/∂B (S, L, n, r)."""
        ...


class LayerSetting:
    """Single LoRA layer with squared loss on its output (the theorems' setting)."""

    name = "layer"

    def build(self, n: int, seeds: list[int], cfg: ModelConfig, dtype: torch.dtype) -> Frozen:
        Zs, bases, ys = [], [], []
        for seed in seeds:  # drawn in float64 whatever ``dtype`` is, so float32 runs the same model
            g = generator(seed, _TAG_FROZEN, n)
            Z = torch.randn((cfg.n_train, n), generator=g, dtype=torch.float64)  # (N, n)
            y = torch.randn((cfg.n_train, n), generator=g, dtype=torch.float64)  # (N, n)
            Zs.append(Z), ys.append(y), bases.append(gaussian_matmul(Z, n, 1 / math.sqrt(n), g))
        return Frozen(*(torch.stack(x).to(dtype) for x in (Zs, bases, ys)))

    def workspace(self, fz: Frozen, L: int) -> torch.Tensor:
        """The reusable (S, L, N, n) buffer of one step (one sample by default: small)."""
        S, N, n = fz.Z.shape
        return fz.Z.new_empty((S, L, N, n))

    def loss(self, fz: Frozen, ZA: torch.Tensor, B: torch.Tensor, s: float, test: bool = False,
             grad: bool = True, out: torch.Tensor | None = None):
        """Loss (S, L) from Z_A (S, L, N, r) and B (S, L, n, r); context for :meth:`grads` if ``grad``.

        ``out`` is an optional (S, L, N, n) work buffer, reused across steps by the engine. The layer
        setting has no held-out data: ``test=True`` is an error.
        """
        if test:
            raise ValueError("test=True: the layer setting has no held-out data "
                             "(only the toy has a test split)")
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
    """Teacher-student residual ReLU MLP with LoRA on the hidden weight (docs/theory.md §1.3).

    A step never writes an (S, L, N, n) tensor. The samples go through in tiles of a few rows, all
    configurations at once (about ``TILE_BYTES``, so that a tile stays in cache); a sample's output f_i sums
    over the whole width, so it is complete within its tile, and so are its residual e_i and its share of
    both gradient factors. Forward and backward are therefore one pass: nothing is stored for a backward
    pass and nothing is recomputed.
    """

    name = "toy"

    def build(self, n: int, seeds: list[int], cfg: ModelConfig, dtype: torch.dtype) -> Frozen:
        parts = [self._build_one(n, seed, cfg) for seed in seeds]  # drawn in float64, then cast
        return Frozen(*(torch.stack(p).to(dtype) for p in zip(*parts)))

    def workspace(self, fz: Frozen, L: int) -> torch.Tensor:
        """The reusable tile buffer of one step: (S, L, rows, n), about ``TILE_BYTES`` (at least one row)."""
        S, N, n = fz.Z.shape
        N = max(N, 0 if fz.Z_test is None else fz.Z_test.shape[1])
        rows = max(1, min(N, TILE_BYTES // (S * L * n * fz.Z.element_size())))
        return fz.Z.new_empty((S, L, rows, n))

    def loss(self, fz: Frozen, ZA: torch.Tensor, B: torch.Tensor, s: float, test: bool = False,
             grad: bool = True, out: torch.Tensor | None = None):
        """Loss (S, L) from Z_A (S, L, N, r) and B (S, L, n, r); context for :meth:`grads` if ``grad``.

        Per tile of rows I (``out``: the tile buffer of :meth:`workspace`, made here when None):
        H = φ(base_I + s·Z_A,I Bᵀ), f_I = H w; with ``grad``, M = 1[Y_h > 0] (in place, 0/1 floats),
        e_I = (f_I − y_I)/N, the rows P_I = M (w ⊙ B) of G B / (s e) and the sum Σ_I (s e_I ⊙ Z_A,I)ᵀ M
        of (Gᵀ Z_A)ᵀ / w, where G = ∂loss/∂Y_h = e wᵀ ⊙ M is never formed (see :meth:`grads`).
        """
        base, y = (fz.base_test, fz.target_test) if test else (fz.base, fz.target)
        S, L, N, r = ZA.shape
        n = B.shape[2]
        if (out is None or out.shape[:2] != (S, L) or out.shape[3] != n or out.dtype != ZA.dtype
                or not out.is_contiguous()):
            out = self.workspace(fz, L)
        # (S, L, N, r), (S, L, r, n), (S, n); Bᵀ and (w ⊙ B)ᵀ contiguous: MKL's fast layout for these shapes
        sZA, Bt, w = s * ZA, B.transpose(-1, -2).contiguous(), fz.w_out
        f = ZA.new_empty((S, L, N))
        if grad:
            wB = (Bt * w[:, None, None, :]).transpose(-1, -2)  # (S, L, n, r), view of an (S, L, r, n) tensor
            P = torch.empty_like(ZA)  # M (w ⊙ B), (S, L, N, r)
            gBt = ZA.new_zeros((S * L, r, n))  # Σ over tiles of (s e ⊙ Z_A)ᵀ M
        for i0 in range(0, N, out.shape[2]):
            i1 = min(N, i0 + out.shape[2])
            H = _lora_rows(sZA[:, :, i0:i1], Bt, _prefix(out, (S, L, i1 - i0, n)))  # (S, L, rows, n)
            H.add_(base[:, None, i0:i1]).clamp_(min=0)  # φ(Y_h) of these rows
            for k in range(S):  # one GEMV per seed (a batched matmul against (S, n, 1) is slower on CPU)
                f[k, :, i0:i1] = H[k].reshape(-1, n).mv(w[k]).view(L, i1 - i0)
            if grad:
                M = H.sign_()  # 1[Y_h > 0] as 0/1 floats
                P[:, :, i0:i1] = M @ wB
                se = s * ((f[:, :, i0:i1] - y[:, None, i0:i1]) / N)  # (S, L, rows)
                gBt.baddbmm_((se[..., None] * ZA[:, :, i0:i1]).transpose(-1, -2).reshape(S * L, r, i1 - i0),
                             M.view(S * L, i1 - i0, n))
        err = f - y[:, None]
        loss = 0.5 * err.square().mean(dim=2)
        if not grad:
            return loss, None
        return loss, (P, err / N, gBt.view(S, L, r, n))

    def grads(self, fz: Frozen, ctx, ZA: torch.Tensor, B: torch.Tensor, s: float):
        """With G = e wᵀ ⊙ M: G B = s e ⊙ P and Gᵀ Z_A = w ⊙ (Mᵀ (s e ⊙ Z_A)), both accumulated by
        :meth:`loss` (called with the same s); ∂loss/∂A = (G B)ᵀ Z, one matmul per seed."""
        P, e, gBt = ctx
        GB = P.mul_((s * e)[..., None])  # (S, L, N, r)
        return _t_matmul_z(GB, fz.Z), gBt.transpose(-1, -2) * fz.w_out[:, None, :, None]

    def _build_one(self, n: int, seed: int, cfg: ModelConfig):
        X, y = teacher_data(seed, cfg, torch.float64)  # (N + N_test, d), (N + N_test,)
        N, dtype = cfg.n_train, torch.float64
        g = generator(seed, _TAG_FROZEN, n)
        W_in = torch.randn((n, cfg.d_in), generator=g, dtype=dtype) / math.sqrt(cfg.d_in)  # (n, d)
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


def _lora_rows(sZA: torch.Tensor, Bt: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """s·Z_A Bᵀ for some rows, into ``out``; a fresh tensor when autograd records (the tests' oracle)."""
    if torch.is_grad_enabled() and (sZA.requires_grad or Bt.requires_grad):
        return torch.matmul(sZA, Bt)
    return torch.matmul(sZA, Bt, out=out)


def _prefix(buf: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A contiguous tensor of ``shape`` on the first elements of ``buf`` (a shorter last tile)."""
    return buf.view(-1)[:math.prod(shape)].view(shape)


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
