"""LoRA initialisations as data: the ``INITS`` registry.

Each scheme gives, for A ∈ R^{r×n} and B ∈ R^{n×r}, the law of the entries and their variance as
``coef · n**n_exp · r**r_exp`` (or an exact zero), docs/theory.md §2. The entry exponent
γ[A_0] = n_exp/2 (−∞ for a zero) is what the symbolic module reads.

| name                | A_0                            | B_0           | remark                          |
|---------------------|--------------------------------|---------------|---------------------------------|
| ``A``               | N(0, 1/n)                      | 0             | Init[A] (paper)                 |
| ``B``               | 0                              | N(0, 1/r)     | Init[B] (paper)                 |
| ``AB``              | N(0, 1/n)                      | N(0, 1/n)     | Init[AB], W* ← W* − s·B0A0      |
| ``AB_raw``          | N(0, 1/n)                      | N(0, 1/n)     | Init[AB], no subtraction        |
| ``peft_true``       | U, var 1/(3n) (Kaiming, a=√5)  | 0             | PEFT ``init_lora_weights=True`` |
| ``peft_gaussian``   | N(0, 1/r²)                     | 0             | PEFT ``"gaussian"``             |
| ``peft_false``      | U, var 1/(3n)                  | U, var 1/(3r) | PEFT ``False`` (nn.Linear)      |
| ``peft_orthogonal`` | orthogonal halves, var ≈ 1/200 | same          | PEFT ``"orthogonal"``, BA = 0   |

PEFT's ``"orthogonal"``: draw Q from the QR of an r×r Gaussian; A = (G_A Q_odd)ᵀ/10 and
B = G_Bᵀ Q_even/10 with G Gaussian, so the rows of Q used by A and B are orthogonal and BA = 0
exactly; each entry has variance (r/2)/r · 1/100 = 1/200 on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from .checks import lookup

Law = Literal["zero", "normal", "uniform"]


@dataclass(frozen=True, slots=True)
class Dist:
    """Law of one matrix's entries: variance = ``coef · n**n_exp · r**r_exp`` (``law="zero"``: exactly 0)."""

    law: Law = "zero"
    coef: float = 1.0
    n_exp: float = 0.0
    r_exp: float = 0.0

    def variance(self, n: int, r: int) -> float:
        return 0.0 if self.law == "zero" else self.coef * n ** self.n_exp * r ** self.r_exp

    @property
    def gamma(self) -> float:
        """Width exponent of the entries, γ = n_exp/2; ``-inf`` for an exact zero."""
        return -math.inf if self.law == "zero" else self.n_exp / 2


ZERO = Dist("zero")


@dataclass(frozen=True, slots=True)
class InitSpec:
    """One initialisation scheme: laws of A_0 and B_0, and whether W* absorbs −s·B0A0."""

    a: Dist
    b: Dist
    subtract: bool = False  # W* ← W* − s·B0·A0, so training starts exactly at the pretrained model
    coupling: Literal["independent", "orthogonal"] = "independent"
    description: str = field(default="", compare=False)

    colour: str = field(default="tab:gray", compare=False)  # one colour per init in every figure

    @property
    def starts_at_pretrained(self) -> bool:
        """True when the adapted layer equals the pretrained one at t = 0 (s·B0A0 absent or removed)."""
        return self.subtract or self.coupling == "orthogonal" or "zero" in (self.a.law, self.b.law)

    def exponents(self) -> "Exponents":
        """The width exponents the γ-calculus reads (:mod:`lora_theory.theory.recursion`).

        >>> INITS["A"].exponents()
        Exponents(a=-0.5, b=-inf, starts_at_pretrained=True, product_is_zero=False)
        """
        return Exponents(self.a.gamma, self.b.gamma, self.starts_at_pretrained, self.coupling == "orthogonal")


class Exponents(NamedTuple):
    """γ[A_0 entries], γ[B_0 entries] (−inf: exact zero), and whether s·B_0A_0 is absent from the output
    at t = 0 (absorbed by W*, or zero) or exactly zero although both factors are non-zero."""

    a: float
    b: float
    starts_at_pretrained: bool
    product_is_zero: bool


INITS: dict[str, InitSpec] = {
    "A": InitSpec(Dist("normal", 1.0, -1.0), ZERO, description="Init[A]: A ~ N(0, 1/n), B = 0",
                  colour="tab:blue"),
    "B": InitSpec(ZERO, Dist("normal", 1.0, 0.0, -1.0), description="Init[B]: A = 0, B ~ N(0, 1/r)",
                  colour="tab:red"),
    "AB": InitSpec(Dist("normal", 1.0, -1.0), Dist("normal", 1.0, -1.0), subtract=True,
                   description="Init[AB]: A, B ~ N(0, 1/n), W* <- W* - s B0 A0", colour="tab:green"),
    "AB_raw": InitSpec(Dist("normal", 1.0, -1.0), Dist("normal", 1.0, -1.0),
                       description="Init[AB] without subtraction: the model starts off the pretrained one",
                       colour="tab:olive"),
    "peft_true": InitSpec(Dist("uniform", 1 / 3, -1.0), ZERO, colour="tab:purple",
                          description="PEFT init_lora_weights=True: A Kaiming-uniform (var 1/(3n)), B = 0"),
    "peft_gaussian": InitSpec(Dist("normal", 1.0, 0.0, -2.0), ZERO, colour="tab:brown",
                              description="PEFT 'gaussian': A ~ N(0, 1/r^2), B = 0"),
    "peft_false": InitSpec(Dist("uniform", 1 / 3, -1.0), Dist("uniform", 1 / 3, 0.0, -1.0), colour="tab:gray",
                           description="PEFT False: nn.Linear defaults, A var 1/(3n), B var 1/(3r)"),
    "peft_orthogonal": InitSpec(Dist("normal", 1 / 200), Dist("normal", 1 / 200), coupling="orthogonal",
                                colour="tab:cyan",
                                description="PEFT 'orthogonal': A, B from orthogonal halves of a QR, BA = 0"),
}


def get_init(name: str) -> InitSpec:
    """The registered :class:`InitSpec` called ``name`` (ValueError/KeyError listing the valid names)."""
    return lookup(INITS, name, "init")


def sample_init(name: str, n: int, r: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
                n_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (A_0, B_0) for one configuration.

    Args:
        name: key of ``INITS``.
        n: width (A is r×n, B is n×r).
        r: rank.
        generator: CPU ``torch.Generator``; the only source of randomness.
        dtype: floating point type of the result.
        n_out: rows of B for a non-square layer (default n): B is n_out×r with its law read at n_out, A
            keeps n (its fan-in), as PEFT's own inits draw a non-square layer (one shared Q for
            ``peft_orthogonal``, so BA = 0 still holds).

    Returns:
        ``A`` of shape (r, n) and ``B`` of shape (n_out, r).

    >>> g = torch.Generator().manual_seed(0)
    >>> A, B = sample_init("A", 64, 4, g)
    >>> A.shape, B.shape, bool((B == 0).all())
    (torch.Size([4, 64]), torch.Size([64, 4]), True)
    """
    spec = get_init(name)
    n_out = n if n_out is None else n_out
    if spec.coupling == "orthogonal":
        return _sample_orthogonal(spec, n, r, generator, dtype, n_out)
    A = _draw(spec.a, (r, n), n, r, generator, dtype)  # (r, n)
    B = _draw(spec.b, (n_out, r), n_out, r, generator, dtype)  # (n_out, r)
    return A, B


def absorb_initial_product(name: str, base: torch.Tensor, A0: torch.Tensor, B0: torch.Tensor, s: float,
                           Z: torch.Tensor | None = None) -> torch.Tensor:
    """The pretrained part after the init ``name``: ``base − s·B0A0`` when the scheme subtracts,
    else ``base``.

    This is the one place that says what "W* ← W* − s·B0A0" means. With ``Z`` = None, ``base`` is a weight
    W* (n_out, n_in) and A0 (r, n_in), B0 (n_out, r) (the PEFT path); with inputs ``Z`` (..., N, n_in),
    ``base`` is the action Z W*ᵀ (..., N, n_out) and the product s·(Z A0ᵀ) B0ᵀ is formed without any
    n×n matrix (the simulator). Leading batch axes broadcast.

    >>> g = torch.Generator().manual_seed(0)
    >>> A0, B0 = sample_init("AB", 8, 2, g)
    >>> W = torch.eye(8, dtype=torch.float64)
    >>> torch.allclose(absorb_initial_product("AB", W, A0, B0, 1.0) + B0 @ A0, W)
    True
    """
    if not get_init(name).subtract:
        return base
    if Z is None:
        return base - (s * (B0 @ A0)).to(base.dtype)
    return base - s * (Z @ A0.transpose(-1, -2)) @ B0.transpose(-1, -2)


def colours() -> dict[str, str]:
    """Init name → plot colour, read off the registry."""
    return {name: spec.colour for name, spec in INITS.items()}


def _draw(dist: Dist, shape: tuple[int, int], n: int, r: int, generator: torch.Generator,
          dtype: torch.dtype) -> torch.Tensor:
    std = math.sqrt(dist.variance(n, r))
    if dist.law == "zero":
        return torch.zeros(shape, dtype=dtype)
    if dist.law == "normal":
        return torch.randn(shape, generator=generator, dtype=dtype) * std
    # uniform on [−√3·std, √3·std] has variance std²
    return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * (math.sqrt(3) * std)


def _sample_orthogonal(spec: InitSpec, n: int, r: int, generator: torch.Generator,
                       dtype: torch.dtype, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    if r % 2:
        raise ValueError(f"init 'peft_orthogonal' needs an even rank, got rank={r}")
    Q, _ = torch.linalg.qr(torch.randn((r, r), generator=generator, dtype=dtype))
    q_odd, q_even = Q[0::2], Q[1::2]  # (r/2, r) each, mutually orthogonal rows
    # entry variance of G @ q_half is (r/2)/r = 1/2 on average, so scale by sqrt(2·coef)
    scale_a, scale_b = math.sqrt(2 * spec.a.variance(n, r)), math.sqrt(2 * spec.b.variance(n_out, r))
    A = (torch.randn((n, r // 2), generator=generator, dtype=dtype) @ q_odd).T * scale_a  # (r, n)
    B = torch.randn((r // 2, n_out), generator=generator, dtype=dtype).T @ q_even * scale_b  # (n_out, r)
    return A.contiguous(), B.contiguous()
