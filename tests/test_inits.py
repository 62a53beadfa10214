"""Initialisation laws (Kolmogorov-Smirnov, as PEFT tests its inits), exact zeros, B·A = 0."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lora_theory import INITS, ModelConfig, simulate
from lora_theory.inits import sample_init

N_WIDTH, RANK = 2048, 8


def _ks_pvalue(x: torch.Tensor, law: str, var: float) -> float:
    x = x.flatten().numpy()
    if law == "normal":
        return stats.kstest(x, stats.norm(scale=math.sqrt(var)).cdf).pvalue
    half = math.sqrt(3 * var)
    return stats.kstest(x, stats.uniform(loc=-half, scale=2 * half).cdf).pvalue


@pytest.mark.parametrize("name", [k for k, v in INITS.items() if v.coupling == "independent"])
def test_entries_follow_the_registered_law(name, gen):
    A, B = sample_init(name, N_WIDTH, RANK, gen)
    assert A.shape == (RANK, N_WIDTH) and B.shape == (N_WIDTH, RANK)
    spec = INITS[name]
    for X, dist in ((A, spec.a), (B, spec.b)):
        if dist.law == "zero":
            assert bool((X == 0).all())
        else:
            assert _ks_pvalue(X, dist.law, dist.variance(N_WIDTH, RANK)) > 1e-3


def test_ks_detects_a_wrong_variance(gen):
    """The KS check above has power: the Init[A] draw is rejected against variance 2/n."""
    A, _ = sample_init("A", N_WIDTH, RANK, gen)
    assert _ks_pvalue(A, "normal", 2 / N_WIDTH) < 1e-6


@pytest.mark.parametrize("name", ["A", "B", "peft_true", "peft_gaussian", "peft_orthogonal"])
def test_product_is_zero_at_init(name, gen):
    A, B = sample_init(name, 512, RANK, gen)
    assert torch.linalg.matrix_norm(B @ A) < 1e-12 * max(1.0, torch.linalg.matrix_norm(B)
                                                         * torch.linalg.matrix_norm(A))


def test_orthogonal_matches_peft_scale_and_needs_even_rank(gen):
    A, B = sample_init("peft_orthogonal", 4096, RANK, gen)
    assert A.var().item() == pytest.approx(1 / 200, rel=0.1)
    assert B.var().item() == pytest.approx(1 / 200, rel=0.1)
    with pytest.raises(ValueError, match="even rank"):
        sample_init("peft_orthogonal", 64, 3, gen)


def test_unknown_init_names_the_parameter(gen):
    with pytest.raises(ValueError, match=r"init must be one of \[.*'A'.*\], got 'C'"):
        sample_init("C", 8, 2, gen)


def test_entry_exponents():
    assert INITS["A"].a.gamma == -0.5 and INITS["A"].b.gamma == -math.inf
    assert INITS["B"].b.gamma == 0.0 and INITS["B"].a.gamma == -math.inf


@pytest.mark.parametrize("setting", ["layer", "toy"])
def test_every_scheme_that_should_starts_at_the_pretrained_model(setting):
    """Step-0 loss of every init equals the pretrained model's (Init[A]'s), except AB_raw and peft_false."""
    model = ModelConfig(setting=setting, n_train=16, n_test=8)
    df = simulate(widths=64, inits=list(INITS), seeds=0, steps=1, lr_exponent=-1.0, model=model)
    loss0 = df[df.step == 0].set_index("init")["loss"]
    for name, spec in INITS.items():
        same = np.isclose(loss0[name], loss0["A"], rtol=1e-12)
        assert same == spec.starts_at_pretrained, name
